"""An agent run's figures on the task: ``lattice show``, and the one-line summary."""

from __future__ import annotations

from pathlib import Path

from lattice_workers.store import Board
from lattice_workers.store._runs import agent_summary, process_runs
from tests.cli.test_board_bad_input import lattice

AGENT = {
    "engine": "claude",
    "model": "claude-sonnet-4-5",
    "session_id": "5f0c9a1e",
    "turns": 3,
    "input_tokens": 4100,
    "output_tokens": 180,
    "cache_read_tokens": 2600,
    "cost_usd": 0.0421,
    "final_message": "Verdict: approve",
    "error_kind": None,
    "error": None,
}


def test_agent_summary_reads_any_tools_values() -> None:
    assert agent_summary(AGENT) == (
        "claude-sonnet-4-5, 3 turns, 4100 in / 180 out tokens, 2600 cached, $0.0421"
    )
    assert agent_summary({"engine": "codex", "turns": 1, "error_kind": "network"}) == (
        "codex, 1 turn, error_kind network"
    )
    assert agent_summary({"turns": "many", "cost_usd": True}) == "agent"
    assert agent_summary(None) == ""


def test_lattice_show_has_the_agents_figures_and_its_error(tmp_path: Path) -> None:
    board = Board.init(tmp_path, project_code="T", default_actor="human:ana")
    task_id = str(board.create_task("t", actor="human:ana")["id"])
    started = board.append(
        task_id,
        "process_started",
        {"process_type": "Review", "run_id": "run_1", "commit_sha": "abc"},
        actor="agent:review",
        hooks=False,
    ).event
    failed: dict[str, object] = {
        **AGENT, "error_kind": "auth", "error": "claude is not logged in: run `claude login`"
    }
    ended = board.append(
        task_id,
        "process_failed",
        {"process_type": "Review", "started_event_id": started["id"], "run_id": "run_1",
         "reason": "exit_nonzero", "error": "the worker exited with code 1", "exit_code": 1,
         "agent": failed},
        actor="agent:review",
        hooks=False,
    ).event
    [run] = process_runs([started, ended])
    assert run["agent"]["error_kind"] == "auth"
    proc = lattice("show", "T-1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "agent: claude-sonnet-4-5, 3 turns, 4100 in / 180 out tokens" in proc.stdout
    assert "error_kind auth" in proc.stdout
    assert "agent error: claude is not logged in: run `claude login`" in proc.stdout
