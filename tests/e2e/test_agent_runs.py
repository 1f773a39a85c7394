"""Agent workers through the real supervisor, with stand-in CLIs replaying real streams.

The stand-ins (tests/engines/standin/agent.py, installed as ``claude``, ``codex`` and
``gemini``) record how they were called and replay a stream recorded from the real CLI
or written from its source (tests/engines/streams/). Each test checks what a user
sees: the log's transcript, the terminal event's ``agent`` object and sentence, the
attachments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Project
from tests.e2e.test_agent_budgets import install_standins

STREAMS = Path(__file__).resolve().parent.parent / "engines" / "streams"
PROMPT = "Review the change. Write your report into $LATTICE_OUTPUT_DIR.\n"


def setup(
    project: Project, tmp_path: Path, engine: str = "claude", **fields: Any
) -> tuple[str, Path]:
    """A stand-in ``engine`` on the clients' PATH, a worker ``Agent``, and a task."""
    bin_dir = install_standins(tmp_path / "bin")
    calls = tmp_path / "calls"
    project.env = {
        **project.env,
        "PATH": f"{bin_dir}{os.pathsep}{project.env['PATH']}",
        "STANDIN_RECORD": str(calls),
    }
    (project.root / "prompt.md").write_text(PROMPT)
    project.write_worker("Agent", engine=engine, prompt_file="prompt.md", **fields)
    return project.create_task(), calls


def run_agent(project: Project, task: str, *args: str, **env: str) -> dict[str, Any]:
    """``worker run Agent TASK --wait`` with the stand-in's variables; the run."""
    saved = project.env
    project.env = {**saved, **env}
    try:
        proc = project.cli("worker", "run", "Agent", task, *args, "--wait", "--json",
                           check=False, timeout=120)
    finally:
        project.env = saved
    out = json.loads(proc.stdout)
    assert out["ok"], proc.stdout + proc.stderr
    run: dict[str, Any] = out["data"][0]
    run["exit"] = proc.returncode
    return run


def terminal(project: Project, task: str) -> dict[str, Any]:
    events = project.process_events(task)
    assert events[0]["type"] == "process_started" and len(events) == 2, events
    return events[1]


def attached(project: Project, task: str) -> list[tuple[str | None, str]]:
    """(role, payload text) of every attachment of the task."""
    out = []
    for event in project.events(task):
        if event["type"] == "artifact_attached":
            art = event["data"]["artifact_id"]
            [payload] = (project.root / ".lattice" / "artifacts" / "payload").glob(f"{art}*")
            out.append((event["data"].get("role"), payload.read_text()))
    return out


def test_a_successful_agent_run_is_streamed_measured_and_its_report_attached(
    project: Project, tmp_path: Path
) -> None:
    task, calls = setup(project, tmp_path, artifact_role="review", max_turns=5)
    run = run_agent(project, task, STANDIN_REPORT="# Review\nVerdict: approve\n")

    assert run["state"] == "completed", run
    [call] = [json.loads(p.read_text()) for p in calls.iterdir()]
    assert call["stdin"] == PROMPT, "the prompt goes to stdin"
    assert not any("Review the change" in a for a in call["argv"]), "never into argv"
    assert call["argv"][:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    assert "--max-turns" in call["argv"] and call["output_dir"] in call["argv"]
    assert Path(call["output_dir"]).parent.parent.name == "outputs"

    end = terminal(project, task)
    agent = end["data"]["agent"]
    assert {k: agent[k] for k in ("engine", "model", "turns", "cost_usd", "error_kind")} == {
        "engine": "claude",
        "model": "claude-sonnet-4-5-20250929",
        "turns": 3,
        "cost_usd": 0.0421,
        "error_kind": None,
    }
    assert agent["session_id"] == "5f0c9a1e-2b7d-4c1e-9a55-0e8c1d2f3a4b"
    assert (agent["input_tokens"], agent["output_tokens"], agent["cache_read_tokens"]) == (
        4100, 180, 2600,
    )
    assert agent["final_message"].startswith("Verdict: approve")
    assert end["agent_meta"]["model"] == "claude-sonnet-4-5-20250929"
    assert attached(project, task) == [("review", "# Review\nVerdict: approve\n")]
    assert not Path(call["output_dir"]).exists(), "attached, then removed"

    log = project.cli("worker", "logs", run["run_id"]).stdout
    assert "-> Bash: git diff --stat" in log and "[claude] done: 3 turns" in log
    assert '"type":' not in log, "the log is a transcript, not the raw stream"
    raw = Path(end["data"]["log_path"]).with_suffix(".jsonl")
    if not raw.is_absolute():
        raw = project.root / raw
    assert raw.read_bytes() == (STREAMS / "claude-success.jsonl").read_bytes()

    shown = project.cli("show", task).stdout
    assert "agent: claude-sonnet-4-5-20250929, 3 turns, 4100 in / 180 out tokens" in shown
    assert "$0.0421" in shown
    # The day's total, as the supervisor published it at the run's end.
    assert "(agents spent $0.04 today (UTC))" in shown
    assert "agents spent $0.04 today (UTC)" in project.cli("worker", "ps").stdout
    assert json.loads((project.root / ".lattice/run/spend.json").read_text())["spent_usd"] == 0.0421
    detail = project.cli("worker", "show", run["run_id"]).stdout
    assert "claude-sonnet-4-5-20250929, 3 turns" in detail


def test_with_no_report_the_final_answer_is_attached_as_answer(
    project: Project, tmp_path: Path
) -> None:
    task, _ = setup(project, tmp_path, engine="gemini", artifact_role="review")
    run = run_agent(project, task)
    assert run["state"] == "completed", run
    assert attached(project, task) == [("answer", "Verdict: approve\n\nLooks right.\n")]
    agent = terminal(project, task)["data"]["agent"]
    assert agent["model"] == "gemini-2.5-pro" and agent["cost_usd"] is None


def test_claude_not_logged_in_fails_with_what_to_do(project: Project, tmp_path: Path) -> None:
    task, _ = setup(project, tmp_path)
    run = run_agent(
        project, task, STANDIN_STREAM=str(STREAMS / "claude-auth.jsonl"), STANDIN_EXIT="1"
    )
    assert run["exit"] == 8 and run["state"] == "failed"
    end = terminal(project, task)
    assert end["data"]["reason"] == "exit_nonzero"
    assert end["data"]["agent"]["error_kind"] == "auth"
    assert end["data"]["error"].startswith("claude is not logged in")
    assert "set ANTHROPIC_API_KEY or run `claude login`" in end["data"]["error"]
    assert attached(project, task) == [], "a failure's last words are not an answer"
    assert end["agent_meta"]["model"] == "claude-opus-4-8[1m]"  # from init, not "<synthetic>"


def test_network_retries_only_stop_the_agent_at_the_bound(
    project: Project, tmp_path: Path
) -> None:
    task, _ = setup(project, tmp_path, engine="codex", network_timeout_seconds=1)
    run = run_agent(
        project,
        task,
        STANDIN_STREAM=str(STREAMS / "codex-network.jsonl"),
        STANDIN_DELAY="0.3",
        STANDIN_HANG_AFTER="1",
    )
    assert run["state"] == "failed"
    end = terminal(project, task)
    assert end["data"]["reason"] == "timeout"
    assert end["data"]["agent"]["error_kind"] == "network"
    assert "could not reach its API" in end["data"]["error"]
    assert end["data"]["duration_seconds"] < 30, "stopped at its bound, not its deadline"


def test_a_run_past_max_cost_is_stopped_as_budget_exceeded(
    project: Project, tmp_path: Path
) -> None:
    task, _ = setup(project, tmp_path, engine="claude")
    run = run_agent(
        project, task, "--max-cost", "0.01", STANDIN_HANG_AFTER="1"
    )
    assert run["state"] == "failed"
    end = terminal(project, task)
    assert end["data"]["reason"] == "budget_exceeded"
    assert end["data"]["agent"]["error_kind"] == "budget"


def test_the_log_follows_the_agent_as_it_works(project: Project, tmp_path: Path) -> None:
    task, _ = setup(project, tmp_path)
    project.env = {**project.env, "STANDIN_DELAY": "0.5", "STANDIN_HANG_AFTER": "1"}
    run_id = project.json("worker", "run", "Agent", task)["data"]["run_id"]
    follow = subprocess.Popen(
        [sys.executable, "-m", "lattice_workers", "worker", "logs", run_id, "--follow"],
        cwd=project.root, env=project.env, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert follow.stdout is not None
        seen = []
        for line in follow.stdout:
            seen.append(line)
            if line.startswith("-> Bash"):
                break
        # The run is still going (its CLI sleeps after its stream): the line came live.
        state = project.json("worker", "show", run_id)["data"]["state"]
        assert state == "running", seen
        project.cli("worker", "cancel", run_id)
    finally:
        follow.kill()
        follow.wait()
    assert seen[0].startswith("[claude] session 5f0c9a1e")


def test_continue_resumes_the_session_at_the_kept_work_with_a_message(
    project: Project, tmp_path: Path
) -> None:
    task, calls = setup(project, tmp_path)
    project.env = {**project.env, "CLAUDE_CONFIG_DIR": str(tmp_path / "claude")}
    first = run_agent(project, task, STANDIN_TOUCH="notes.txt")
    assert first["state"] == "completed", first

    second = run_agent(
        project, task, "--continue", first["run_id"], "--message", "Now fix the nit."
    )

    assert second["state"] == "completed", second
    assert second["run_id"] != first["run_id"]
    resumed = [
        c for c in (json.loads(p.read_text()) for p in calls.iterdir()) if "--resume" in c["argv"]
    ]
    [call] = resumed
    assert call["argv"][call["argv"].index("--resume") + 1] == (
        "5f0c9a1e-2b7d-4c1e-9a55-0e8c1d2f3a4b"
    )
    assert call["stdin"] == "Now fix the nit."
    assert call["cwd"] != first["worktree_path"]  # a new worktree...
    kept = project.git("show", f"{second['commit_sha']}:notes.txt")
    assert kept.startswith("written by claude"), "...at the first run's kept work"


@pytest.mark.parametrize("engine", ["claude", "codex", "gemini"])
def test_continue_resumes_each_engines_session_from_a_new_worktree(
    project: Project, tmp_path: Path, engine: str
) -> None:
    # Each CLI keeps its sessions where the *worker's* environment says: claude under
    # CLAUDE_CONFIG_DIR per working folder, codex under CODEX_HOME, gemini under
    # GEMINI_CLI_HOME per working folder; here the definition sets them, away from
    # the supervisor's HOME, and every attempt has a new worktree.
    homes = {
        "claude": {"CLAUDE_CONFIG_DIR": str(tmp_path / "claude")},
        "codex": {"CODEX_HOME": str(tmp_path / "codex")},
        "gemini": {"GEMINI_CLI_HOME": str(tmp_path / "gemini")},
    }
    task, calls = setup(project, tmp_path, engine, env=homes[engine])
    first = run_agent(project, task, STANDIN_SESSIONS="1")
    assert first["state"] == "completed", first
    session = terminal(project, task)["data"]["agent"]["session_id"]
    assert session

    second = run_agent(
        project, task, "--continue", first["run_id"], "--message", "Go on.",
        STANDIN_SESSIONS="1",
    )

    assert second["state"] == "completed", project.cli(
        "worker", "logs", second["run_id"]
    ).stdout
    made = [json.loads(p.read_text()) for p in calls.iterdir()]
    resumed = [c for c in made if c["stdin"] == "Go on."]
    [started] = [c for c in made if c["stdin"] != "Go on."]
    assert len(resumed) == 1 and resumed[0]["cwd"] != started["cwd"], made
    argv = resumed[0]["argv"]
    if engine == "claude":
        assert argv[argv.index("--resume") + 1] == session
    elif engine == "codex":
        assert argv[:3] == ["exec", "resume", session]
    else:
        named = Path(argv[argv.index("--session-file") + 1])
        assert named.is_relative_to(tmp_path / "gemini" / ".gemini"), named
    # The stand-in refused any session it could not find: the agent object is the
    # second run's own, and it ended well.
    events = project.process_events(task)
    assert events[-1]["type"] == "process_completed"
    assert events[-1]["data"]["agent"]["error_kind"] is None


def test_continue_refuses_what_it_cannot_continue(project: Project, tmp_path: Path) -> None:
    task, _ = setup(project, tmp_path)
    unknown = project.cli("worker", "run", "Agent", task, "--continue", "run_nope", check=False)
    assert unknown.returncode == 3 and "no finished run run_nope" in unknown.stderr
    both = project.cli(
        "worker", "run", "Agent", task, "--continue", "run_x", "--commit", "HEAD", check=False
    )
    assert both.returncode == 2 and "leave out --commit" in both.stderr
    alone = project.cli("worker", "run", "Agent", task, "--message", "hi", check=False)
    assert alone.returncode == 2 and "--message goes with --continue" in alone.stderr
    assert not project.process_events(task)


def test_the_shipped_implement_worker_commits_and_its_work_is_kept(
    project: Project, tmp_path: Path
) -> None:
    # The shipped Implement definition and prompt (worker init), a stand-in claude
    # that replays an implementing session in claude's stream-json and really commits
    # in its worktree, as the prompt asks.
    project.cli("worker", "init")
    (project.root / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "calc, and the shipped workers")
    task = project.create_task("Fix add")
    bin_dir = install_standins(tmp_path / "bin")
    calls = tmp_path / "calls"
    project.env = {
        **project.env,
        "PATH": f"{bin_dir}{os.pathsep}{project.env['PATH']}",
        "STANDIN_RECORD": str(calls),
        "STANDIN_STREAM": str(STREAMS / "claude-implement.jsonl"),
        "STANDIN_EDIT": "calc.py=def add(a, b):\\n    return a + b\\n",
        "STANDIN_COMMIT": "T-1: add adds",
    }

    run = project.json("worker", "run", "Implement", task, "--wait")["data"][0]

    assert run["state"] == "completed", project.cli("worker", "logs", run["run_id"]).stdout
    [call] = [json.loads(p.read_text()) for p in calls.iterdir()]
    assert call["argv"][:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    assert call["argv"][-2:] == ["--allowedTools", "Bash,Read,Grep,Glob,Write,Edit,MultiEdit"]
    assert call["stdin"] == (project.root / "prompts/workers/implement.md").read_text()
    assert call["cwd"] == run["worktree_path"]
    # Its commit is kept under refs/lattice/runs/<run>/1, on top of the run's commit.
    end = terminal(project, task)
    changes = end["data"]["changes"]
    ref = f"refs/lattice/runs/{run['run_id']}/1"
    assert changes["ref"] == ref and changes["base_sha"] == run["commit_sha"]
    assert changes["commits"] == 1 and changes["files_changed"] == 1
    # The ref is the snapshot (the run's marks) on top of the agent's own commit.
    head = changes["head_sha"]
    assert project.git("rev-parse", f"{ref}^") == head != run["commit_sha"]
    assert project.git("log", "-1", "--format=%s", head) == "T-1: add adds"
    assert project.git("rev-parse", f"{head}^") == run["commit_sha"]
    assert project.git("show", f"{ref}:calc.py") == "def add(a, b):\n    return a + b"
    assert "return a - b" in (project.root / "calc.py").read_text()  # the user's tree
    # What the agent did, on the record; its answer attached (it wrote no report).
    agent = end["data"]["agent"]
    assert {k: agent[k] for k in ("engine", "model", "turns", "cost_usd", "error_kind")} == {
        "engine": "claude",
        "model": "claude-sonnet-4-5-20250929",
        "turns": 4,
        "cost_usd": 0.0687,
        "error_kind": None,
    }
    assert agent["session_id"] == "8a2d4f60-1c3b-4e5a-9f7e-2b6c0d1e3f45"
    assert (agent["input_tokens"], agent["output_tokens"]) == (9800, 260)
    answer = 'Fixed `add` in calc.py (it subtracted) and committed it as "T-1: add adds".'
    assert agent["final_message"] == answer
    roles = attached(project, task)
    assert ("answer", answer + "\n") in roles, roles
    assert [role for role, _ in roles].count("diff") == 1  # the kept work's patch
    log = project.cli("worker", "logs", run["run_id"]).stdout
    assert "-> Edit: /work/wt/calc.py" in log
    assert '-> Bash: git add -A && git commit -m "T-1: add adds"' in log
    diff = project.cli("worker", "diff", run["run_id"]).stdout
    assert "+    return a + b" in diff
