"""``python -m lattice_workers.engines run``: one agent CLI, unattended, through its adapter.

Real processes: the stand-in CLIs (tests/engines/standin/agent.py) replaying recorded
streams, run by the real runner; what a script such as CodeReviewHeavy relies on is
checked from the outside (its stdout summary, its stderr transcript, its exit code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_agent_budgets import install_standins

STREAMS = Path(__file__).resolve().parent / "streams"


def run(
    tmp_path: Path, engine: str, *args: str, prompt: str = "Review it.\n", **env: str
) -> tuple[int, dict[str, Any] | None, str]:
    """(exit code, the summary or None, stderr) of one runner call."""
    bin_dir = install_standins(tmp_path / "bin")
    proc = subprocess.run(
        [sys.executable, "-m", "lattice_workers.engines", "run", engine,
         "--output-dir", str(tmp_path / "out"), *args],
        input=prompt,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "STANDIN_RECORD": str(tmp_path / "calls"),
            **env,
        },
    )
    summary = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, summary, proc.stderr


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "calls").iterdir())]


@pytest.mark.parametrize("engine", ["claude", "codex", "gemini"])
def test_a_success_gives_the_answer_the_figures_and_a_live_transcript(
    tmp_path: Path, engine: str
) -> None:
    code, summary, stderr = run(tmp_path, engine, "--label", f"{engine} (standard)")

    assert code == 0, stderr
    assert summary is not None
    assert summary["engine"] == engine and summary["exit_code"] == 0
    assert summary["stopped"] is None
    assert summary["answer"].startswith("Verdict: approve")
    agent = summary["agent"]
    assert agent["error_kind"] is None and agent["session_id"]
    assert agent["input_tokens"] and agent["output_tokens"]
    assert (agent["cost_usd"] is not None) == (engine == "claude")  # only claude reports it
    lines = stderr.splitlines()
    assert lines and all(line.startswith(f"[{engine} (standard)] ") for line in lines)
    assert f"[{engine} (standard)] Verdict: approve" in lines
    # The prompt went to stdin, never into argv.
    [call] = calls(tmp_path)
    assert call["stdin"] == "Review it.\n"
    assert not any("Review it" in a for a in call["argv"])


def test_a_failure_is_classified_with_what_to_do(tmp_path: Path) -> None:
    code, summary, _ = run(
        tmp_path, "claude", STANDIN_STREAM=str(STREAMS / "claude-auth.jsonl"), STANDIN_EXIT="1"
    )
    assert code == 1
    assert summary is not None and summary["exit_code"] == 1
    assert summary["agent"]["error_kind"] == "auth"
    assert "set ANTHROPIC_API_KEY or run `claude login`" in summary["agent"]["error"]


def test_network_retries_only_are_stopped_at_the_bound(tmp_path: Path) -> None:
    code, summary, stderr = run(
        tmp_path, "codex", "--network-seconds", "1", "--kill-grace", "1",
        STANDIN_STREAM=str(STREAMS / "codex-network.jsonl"), STANDIN_HANG_AFTER="1",
    )
    assert code == 1, stderr
    assert summary is not None
    assert summary["stopped"] == "network" and summary["exit_code"] is None
    assert summary["agent"]["error_kind"] == "network"
    assert "could not reach its API" in summary["agent"]["error"]
    assert summary["agent"]["error"].endswith("or raise --network-seconds")
    assert "Reconnecting" in stderr
    [call] = calls(tmp_path)
    assert not Path(f"/proc/{call['pid']}").exists() or _zombie(call["pid"])


def test_past_the_time_limit_it_is_stopped_and_says_so(tmp_path: Path) -> None:
    code, summary, _ = run(
        tmp_path, "gemini", "--timeout", "1", "--kill-grace", "1", STANDIN_HANG_AFTER="1"
    )
    assert code == 1
    assert summary is not None and summary["stopped"] == "timeout"
    assert summary["agent"]["error_kind"] == "agent_error"
    assert "no answer within its time limit of 1 s" in summary["agent"]["error"]


def test_an_agent_that_exits_leaving_a_child_on_its_output_is_done_at_its_exit(
    tmp_path: Path,
) -> None:
    # The CLI answered and exited; a child it left holds the pipe open for 40 s. The
    # answer counts: the runner is done soon after the exit (its drain bound), not
    # when the pipe closes or the time limit strikes (a "timeout" without answer).
    code, summary, stderr = run(tmp_path, "claude", "--timeout", "30", STANDIN_DAEMON="40")
    assert code == 0, stderr
    assert summary is not None and summary["stopped"] is None and summary["exit_code"] == 0
    assert summary["answer"].startswith("Verdict: approve")


def test_bad_usage_starts_nothing(tmp_path: Path) -> None:
    code, summary, stderr = run(tmp_path, "llama")
    assert code == 2 and summary is None and "unknown engine 'llama'" in stderr
    code, summary, stderr = run(tmp_path, "claude", "--args", "--output-format text")
    assert code == 2 and summary is None
    assert "--output-format, which the claude adapter sets itself" in stderr
    assert not (tmp_path / "calls").exists()


def test_a_cli_that_is_not_installed_says_how_to_install_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lattice_workers.engines", "run", "gemini",
         "--output-dir", str(tmp_path / "out")],
        input="hi", capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": str(tmp_path)},
    )
    assert proc.returncode == 1
    agent = json.loads(proc.stdout)["agent"]
    assert agent["error_kind"] == "agent_error"
    assert "npm install -g @google/gemini-cli" in agent["error"]


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat.rsplit(b")", 1)[1].split()[0] == b"Z"
