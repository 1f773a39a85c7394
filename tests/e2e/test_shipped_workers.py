"""The shipped workers, end to end: real supervisor, real worktrees, real scripts.

The AI engines are stand-ins: one bash script, installed as ``claude``, ``codex`` and
``gemini`` in a folder put first on the supervisor's PATH. As CodeReviewLite's agent
it *executes the commands its prompt gives* (``lattice show``, the ``git diff``, the
report path, ``lattice attach``), so a prompt that names the wrong path or diffs the
wrong commits fails here. As a CodeReviewHeavy reviewer it prints a review; given the
merge prompt it merges what it reads on stdin. Every call is recorded for the asserts.
The supervisor's PATH holds only the stand-ins and the folders of git, bash and this
Python, so a real engine installed on the machine is never called.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Project, processes_with_root

ENGINES = ("claude", "codex", "gemini")

STANDIN = r"""#!/bin/bash
# A stand-in for an AI engine, called as each engine adapter calls its CLI (the prompt
# on stdin): claude -p --output-format stream-json ..., codex exec --json ... -,
# gemini --output-format stream-json ... -p "". It answers in the CLI's stream format.
set -euo pipefail
engine=$(basename "$0")
case "$engine" in
  claude) [ "$1" = -p ] || { echo "claude: expected -p, got $1" >&2; exit 64; }; shift;;
  codex) [ "$1" = exec ] || { echo "codex: expected exec, got $1" >&2; exit 64; }; shift;;
  gemini) [ "${*: -2:1}" = -p ] && [ -z "${*: -1}" ] || { echo "gemini: no -p ''" >&2; exit 64; };;
esac
prompt=$(cat; echo x); prompt=${prompt%x}
record=$(mktemp "$STANDIN_DIR/$engine.XXXXXX")
{ printf 'pgid %s\n' "$(cut -d' ' -f5 /proc/$$/stat)"
  printf 'runner_pgid %s\n' "$(cut -d' ' -f5 /proc/$PPID/stat)"
  printf 'args %s\n' "$*"
  printf 'cwd %s\n' "$PWD"; } > "$record"
printf '%s' "$prompt" > "$record.prompt"
# The first line of the prompt that matches $1, to be run as the prompt says.
line() { grep -m1 -E -- "$1" <<<"$prompt" || { echo "no line ~ $1 in prompt" >&2; exit 65; }; }
# Print stdin as this engine's final answer, in its stream format.
say() { "$STANDIN_PY" "$STANDIN_SAY" "$engine"; }

case "$prompt" in
*"Merge several code reviews"*)
  echo merge >> "$record"
  if [ "${STANDIN_MERGE_FAILS:-}" = 1 ]; then
    echo "merge refused by stand-in" | STANDIN_ERROR=1 say; exit 3
  fi
  n=$(printf '%s\n' "$prompt" | grep -c '^=== REVIEW: ' || true)
  { printf 'Verdict: request_changes\n\n## Summary\nStand-in %s merged %s reviews.\n' "$engine" "$n"
    printf '\n## Findings\n### important\n- calc.py:2: merged finding (claude/critical)\n'; } | say
  ;;
*"Code review (lite)"*)
  echo lite >> "$record"
  eval "$(line '^lattice show ')" > "$record.show"
  eval "$(line '^git diff "\$LATTICE_MERGE_BASE" "\$LATTICE_COMMIT_SHA"$')" > "$record.diff"
  eval "$(line '^REPORT=')"
  eval "$(line '^mkdir -p ')"
  { echo "# Code review: stand-in"
    echo "- Verdict: request_changes"
    echo "## Findings"
    echo "### important"
    echo "- calc.py:2: stand-in finding"
    echo "## Diff seen"
    grep '^+++ ' "$record.diff" || true; } > "$REPORT"
  eval "$(line '^lattice attach ')"
  printf '{"verdict": "request_changes", "important": 1, "report": "%s"}' "$REPORT" \
    > "$LATTICE_RESULT_FILE"
  echo "report: $REPORT"
  ;;
*)
  pass=unknown
  case "$prompt" in
    *"Your pass: critical"*) pass=critical;;
    *"Your pass: standard"*) pass=standard;;
  esac
  echo "review $pass" >> "$record"
  [ "${STANDIN_HANG:-}" = 1 ] && exec sleep 600
  [ "${STANDIN_HANG_ENGINE:-}" = "$engine" ] && exec sleep 600
  if [ "${STANDIN_OFFLINE_ENGINE:-}" = "$engine" ]; then
    # As codex with no network: retries, without end.
    while :; do
      printf '{"type":"error","message":"Reconnecting... 2/5 (stream disconnected %s"}\n' \
        'before completion: error sending request for url (https://api.openai.com/v1/responses))'
      sleep 0.2
    done
  fi
  if [ "${STANDIN_FAIL:-}" = 1 ]; then
    # As each CLI without credentials: claude's stream says authentication_failed and
    # exits 1, codex's says 401, gemini prints a coloured line on stderr and exits 41.
    case "$engine" in
      claude) echo "Not logged in · Please run /login" | STANDIN_ERROR=auth say; exit 1;;
      codex) echo "unexpected status 401 Unauthorized: Missing bearer authentication" \
               | STANDIN_ERROR=1 say; exit 1;;
      gemini) printf '\033[31mPlease set an Auth method in your settings.json (%s)\033[0m\n' \
                "$engine" >&2; exit 41;;
    esac
  fi
  [ "${STANDIN_NO_VERDICT:-}" = 1 ] && { echo "I looked and have opinions." | say; exit 0; }
  stat=$(eval "$(line '^git diff --stat ')" | tail -n 1)
  verdict=approve_with_nits; [ "$pass" = critical ] && verdict=request_changes
  { printf 'Verdict: %s\n\n## Summary\n' "$verdict"
    printf 'Stand-in %s (%s pass) read:%s\n' "$engine" "$pass" "$stat"
    printf '\n## Findings\n- [important] calc.py:2: found by %s/%s\n' "$engine" "$pass"; } | say
  ;;
esac
"""

#: What ``say`` runs: the answer on stdin printed as ``argv[1]``'s stream (the shapes
#: of tests/engines/streams/*-success.jsonl), a failure with STANDIN_ERROR set.
SAY = r"""
import json, os, sys
engine, text, error = sys.argv[1], sys.stdin.read(), os.environ.get("STANDIN_ERROR")
def out(obj): print(json.dumps(obj), flush=True)
if engine == "claude":
    out({"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-standin"})
    message = {"model": "claude-standin", "content": [{"type": "text", "text": text}]}
    if error == "auth":
        out({"type": "assistant", "session_id": "s-1", "message": message,
             "error": "authentication_failed"})
    else:
        out({"type": "assistant", "session_id": "s-1", "message": message})
    out({"type": "result", "subtype": "error_during_execution" if error else "success",
         "is_error": bool(error), "num_turns": 1, "result": text, "session_id": "s-1",
         "total_cost_usd": 0.0 if error else 0.01,
         "usage": {"input_tokens": 100, "output_tokens": 10}})
elif engine == "codex":
    out({"type": "thread.started", "thread_id": "t-1"})
    if error:
        out({"type": "error", "message": text.strip()})
        out({"type": "turn.failed", "error": {"message": text.strip()}})
    else:
        out({"type": "item.completed",
             "item": {"id": "i", "type": "agent_message", "text": text}})
        out({"type": "turn.completed", "usage": {"input_tokens": 200, "output_tokens": 20,
                                                 "cached_input_tokens": 0}})
else:
    out({"type": "init", "session_id": "g-1", "model": "gemini-standin"})
    if error:
        out({"type": "result", "status": "error", "error": {"type": "Error",
                                                          "message": text.strip()}})
    else:
        out({"type": "message", "role": "assistant", "content": text, "delta": True})
        out({"type": "result", "status": "success",
             "stats": {"input_tokens": 300, "output_tokens": 30}})
"""


# ----------------------------------------------------------------------------- helpers


def install_standins(folder: Path, engines: tuple[str, ...] = ENGINES) -> Path:
    """A bin folder with the given stand-in engines; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "say.py").write_text(SAY)
    for engine in engines:
        path = folder / engine
        path.write_text(STANDIN)
        path.chmod(0o755)
    return folder


def worker_env(project: Project, bin_dir: Path, record_dir: Path, **extra: str) -> dict[str, str]:
    """The supervisor's environment: stand-ins first, then only what the workers need."""
    dirs = [str(bin_dir), str(Path(sys.executable).parent)]
    for tool in ("git", "bash", "env", "grep", "cut", "mktemp", "cat", "tail", "basename"):
        found = shutil.which(tool)
        assert found, f"{tool} is needed by these tests"
        dirs.append(os.path.dirname(found))
    dirs = list(dict.fromkeys(dirs))
    for d in dirs[1:]:
        real = [e for e in ENGINES if (Path(d) / e).exists()]
        if real:
            pytest.skip(f"a real {real[0]} is installed in {d}, beside tools these tests need")
    record_dir.mkdir(parents=True, exist_ok=True)
    return {
        **project.env,
        "PATH": os.pathsep.join(dirs),
        "STANDIN_DIR": str(record_dir),
        "STANDIN_PY": sys.executable,
        "STANDIN_SAY": str(bin_dir / "say.py"),
        **extra,
    }


def start_supervisor(project: Project, env: dict[str, str]) -> None:
    """Start the supervisor in ``env``, and make ``env`` the clients' too: a worker gets
    the environment of the client that asked for it."""
    project.cli("supervisor", "start", env=env)
    project.env = env


def calc_change(project: Project) -> tuple[str, str]:
    """A feature branch with one commit on top of main: (merge base, commit)."""
    base = project.git("rev-parse", "HEAD")
    project.git("checkout", "-q", "-b", "feature")
    (project.root / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    project.git("add", "calc.py")
    project.git("commit", "-q", "-m", "add calc.add")
    return base, project.git("rev-parse", "HEAD")


def run_wait(project: Project, *args: str) -> dict[str, Any]:
    proc = project.cli("worker", "run", *args, "--wait", "--json", check=False, timeout=120)
    out = json.loads(proc.stdout)
    assert out["ok"], proc.stdout + proc.stderr
    run: dict[str, Any] = out["data"][0]
    run["exit"] = proc.returncode
    return run


def records(folder: Path) -> list[dict[str, Any]]:
    """Every stand-in call: its key/value lines, its role line and its prompt."""
    out = []
    for path in sorted(folder.iterdir()):
        if "." in path.name.split(".", 1)[1]:
            continue  # .prompt, .show, .diff companions
        fields: dict[str, Any] = {"engine": path.name.split(".")[0], "roles": []}
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("pgid", "runner_pgid", "args", "cwd"):
                fields[key] = value
            else:
                fields["roles"].append(line)
        fields["prompt"] = Path(f"{path}.prompt").read_text()
        fields["path"] = path
        out.append(fields)
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended; who reaps it is up to PID 1 here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def ends(project: Project, task: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events = project.process_events(task)
    assert [e["type"] for e in events][:1] == ["process_started"], events
    assert len(events) == 2, events
    assert events[1]["data"]["started_event_id"] == events[0]["id"]
    return events, events[1]


def attachments(project: Project, task: str) -> list[dict[str, Any]]:
    return [e for e in project.events(task) if e["type"] == "artifact_attached"]


def artifact_text(project: Project, event: dict[str, Any]) -> str:
    art_id = event["data"]["artifact_id"]
    payload = list((project.root / ".lattice" / "artifacts" / "payload").glob(f"{art_id}.*"))
    assert len(payload) == 1, payload
    return payload[0].read_text()


def init_shipped(project: Project) -> None:
    project.cli("worker", "init")
    project.cli("worker", "check")


# ----------------------------------------------------------------------------- CodeReviewLite


def test_code_review_lite_follows_its_prompt_end_to_end(project: Project, tmp_path: Path) -> None:
    init_shipped(project)
    base, commit = calc_change(project)
    task = project.create_task("Add calc.add")
    env = worker_env(project, install_standins(tmp_path / "bin"), tmp_path / "calls")
    start_supervisor(project, env)

    run = run_wait(project, "CodeReviewLite", task)

    assert run["exit"] == 0 and run["state"] == "completed", run
    (call,) = records(tmp_path / "calls")
    assert call["engine"] == "claude" and call["roles"] == ["lite"]
    assert call["args"].startswith("--output-format stream-json --verbose --add-dir ")
    assert call["args"].endswith(" --allowedTools Bash,Read,Grep,Glob,Write")
    assert call["cwd"] == run["worktree_path"]
    assert call["prompt"] == (project.root / "prompts/workers/code-review-lite.md").read_text()
    assert "main.." not in call["prompt"] and "diff main" not in call["prompt"]
    # It diffed exactly merge base .. commit, and read the task through `lattice show`.
    assert "+++ b/calc.py" in Path(f"{call['path']}.diff").read_text()
    assert "Add calc.add" in Path(f"{call['path']}.show").read_text()
    events, end = ends(project, task)
    assert end["type"] == "process_completed"
    assert events[0]["data"]["commit_sha"] == commit
    assert end["data"]["output"]["verdict"] == "request_changes"
    report = Path(end["data"]["output"]["report"])
    assert report.parent == project.root / ".lattice" / "reports"
    assert report.name == f"code-review-lite-{task}-{run['run_id']}.md"
    (attached,) = attachments(project, task)
    assert attached["data"]["role"] == "review"
    assert attached["actor"] == "agent:code-review-lite"
    assert "+++ b/calc.py" in artifact_text(project, attached) == report.read_text()
    assert run["merge_base"] == base


# ----------------------------------------------------------------------------- CodeReviewHeavy


def test_code_review_heavy_runs_six_reviewers_in_one_group_and_merges(
    project: Project, tmp_path: Path
) -> None:
    init_shipped(project)
    calc_change(project)
    task = project.create_task("Add calc.add")
    env = worker_env(project, install_standins(tmp_path / "bin"), tmp_path / "calls")
    start_supervisor(project, env)

    run = run_wait(project, "CodeReviewHeavy", task)

    assert run["exit"] == 0 and run["state"] == "completed", project.cli(
        "worker", "logs", run["run_id"]
    ).stdout
    calls = records(tmp_path / "calls")
    reviews = sorted((c["engine"], c["roles"][0]) for c in calls if c["roles"] != ["merge"])
    assert reviews == [
        (e, f"review {p}") for e in ENGINES for p in ("critical", "standard")
    ]
    (merge,) = [c for c in calls if c["roles"] == ["merge"]]
    assert merge["engine"] == "claude"  # the first available engine merges
    assert len({c["pgid"] for c in calls}) == 1, "a reviewer left the run's process group"
    for call in calls:
        assert call["pgid"] == call["runner_pgid"]
        assert call["cwd"] == run["worktree_path"]
        assert "main.." not in call["prompt"]
        assert "Your pass" not in call["args"] and "Merge" not in call["args"]  # stdin
    # Each CLI as its engine adapter runs it, then the definition's REVIEW_*_ARGS.
    by_engine = {c["engine"]: c["args"] for c in calls}
    assert by_engine["claude"].startswith("--output-format stream-json --verbose --add-dir ")
    assert by_engine["claude"].endswith(" --allowedTools Bash,Read,Grep,Glob")
    assert by_engine["codex"].startswith("--json --sandbox workspace-write --add-dir ")
    assert by_engine["codex"].endswith(" --skip-git-repo-check -")
    assert by_engine["gemini"].startswith("--output-format stream-json --skip-trust ")
    assert by_engine["gemini"].endswith(" --approval-mode yolo -p ")

    _, end = ends(project, task)
    out = end["data"]["output"]
    assert end["type"] == "process_completed"
    assert out["merged_by"] == "claude" and out["skipped"] == []
    assert out["verdict"] == "request_changes"
    assert [r["ok"] for r in out["reviewers"]] == [True] * 6
    # The reviewers' figures, summed on the run's agent object (cost: claude's three
    # calls, the merge included; codex and gemini report none).
    agent = end["data"]["agent"]
    assert agent["engine"] == "claude,codex,gemini" and agent["error_kind"] is None
    assert agent["cost_usd"] == 0.03
    assert agent["input_tokens"] == 3 * 100 + 2 * 200 + 2 * 300
    assert agent["model"] == "claude-standin,gemini-standin"
    log = project.cli("worker", "logs", run["run_id"]).stdout
    assert "[codex (critical)] Verdict: request_changes" in log  # the live transcript
    assert "[gemini (standard)] [gemini] done: 1 turns, 300 in / 30 out tokens" in log
    (attached,) = attachments(project, task)
    assert attached["data"]["role"] == "review"
    text = artifact_text(project, attached)
    assert "Stand-in claude merged 6 reviews." in text
    assert "## Merged review" in text and "## Individual reviews" in text
    for engine in ENGINES:
        for pass_name in ("standard", "critical"):
            assert f"### {engine} ({pass_name})" in text
            assert f"found by {engine}/{pass_name}" in text
    assert "1 file changed" in text  # each reviewer ran the prompt's git diff --stat
    assert Path(out["report"]).read_text() == text


def test_code_review_heavy_skips_absent_engines_and_concatenates_when_merge_fails(
    project: Project, tmp_path: Path
) -> None:
    init_shipped(project)
    calc_change(project)
    task = project.create_task("Add calc.add")
    bin_dir = install_standins(tmp_path / "bin", ("codex", "gemini"))
    env = worker_env(project, bin_dir, tmp_path / "calls", STANDIN_MERGE_FAILS="1")
    start_supervisor(project, env)

    run = run_wait(project, "CodeReviewHeavy", task)

    assert run["state"] == "completed", run
    _, end = ends(project, task)
    out = end["data"]["output"]
    assert out["skipped"] == ["claude"] and out["merged_by"] is None
    assert len(out["reviewers"]) == 4
    (attached,) = attachments(project, task)
    text = artifact_text(project, attached)
    assert "claude was skipped: `claude` is not on the worker's PATH." in text
    assert "the merge by codex failed (agent_error): codex failed (exit code 3)" in text
    assert 'codex said: "merge refused by stand-in"' in text
    assert "## Reviews" in text and "## Merged review" not in text
    for heading in ("codex (standard)", "codex (critical)", "gemini (standard)"):
        assert f"### {heading}" in text


def test_code_review_heavy_fails_clearly_when_no_engine_is_installed(
    project: Project, tmp_path: Path
) -> None:
    init_shipped(project)
    task = project.create_task("Review me")
    env = worker_env(project, install_standins(tmp_path / "bin", ()), tmp_path / "calls")
    start_supervisor(project, env)

    run = run_wait(project, "CodeReviewHeavy", task)

    assert run["exit"] == 8 and run["state"] == "failed"
    _, end = ends(project, task)
    assert end["type"] == "process_failed"
    assert end["data"]["reason"] == "exit_nonzero" and end["data"]["exit_code"] == 2
    assert "no reviewer engine is installed" in end["data"]["output"]["error"]
    assert end["data"]["error"] == end["data"]["output"]["error"]  # not "exited with code 2"
    assert end["data"]["agent"]["error_kind"] is None
    log = project.cli("worker", "logs", run["run_id"]).stdout
    assert "none of claude, codex, gemini is on the worker's PATH" in log
    assert attachments(project, task) == []
    assert list((tmp_path / "calls").iterdir()) == []


def test_code_review_heavy_stops_a_reviewer_past_its_time_limit(
    project: Project, tmp_path: Path
) -> None:
    init_shipped(project)
    calc_change(project)
    task = project.create_task("Add calc.add")
    env = worker_env(
        project, install_standins(tmp_path / "bin"), tmp_path / "calls",
        STANDIN_HANG_ENGINE="codex", REVIEW_TIMEOUT_MINUTES="0.1",
    )
    start_supervisor(project, env)

    run = run_wait(project, "CodeReviewHeavy", task)

    assert run["state"] == "completed", run
    _, end = ends(project, task)
    out = end["data"]["output"]
    assert {(r["engine"], r["ok"]) for r in out["reviewers"]} == {
        ("claude", True), ("codex", False), ("gemini", True)
    }
    text = artifact_text(project, attachments(project, task)[0])
    assert (
        "codex (standard) failed (agent_error): codex gave no answer within its time limit "
        "of 6 s and was stopped; raise REVIEW_TIMEOUT_MINUTES in the definition's \"env\""
    ) in text
    log = project.cli("worker", "logs", run["run_id"]).stdout
    # Each end is logged as it happens: the quick reviewers before the stopped ones.
    ends_logged = re.findall(r"finished (\w+) \((?:standard|critical)\)", log)
    assert ends_logged[-2:] == ["codex", "codex"] and len(ends_logged) == 6


def test_code_review_heavy_stops_a_reviewer_that_only_retries_the_network(
    project: Project, tmp_path: Path
) -> None:
    init_shipped(project)
    calc_change(project)
    task = project.create_task("Add calc.add")
    env = worker_env(
        project, install_standins(tmp_path / "bin"), tmp_path / "calls",
        STANDIN_OFFLINE_ENGINE="codex", REVIEW_NETWORK_SECONDS="2",
    )
    start_supervisor(project, env)

    run = run_wait(project, "CodeReviewHeavy", task)

    assert run["state"] == "completed", run
    _, end = ends(project, task)
    assert end["data"]["duration_seconds"] < 60
    text = artifact_text(project, attachments(project, task)[0])
    assert (
        "codex (standard) failed (network): codex could not reach its API: it did nothing "
        "but retry the network for 2 s"
    ) in text
    assert "or raise REVIEW_NETWORK_SECONDS in the definition's \"env\"" in text
    assert "Reconnecting... 2/5" in text


def test_code_review_heavy_with_no_usable_review_fails_in_the_reviewers_words(
    project: Project, tmp_path: Path
) -> None:
    init_shipped(project)
    calc_change(project)
    task = project.create_task("Add calc.add")
    env = worker_env(
        project, install_standins(tmp_path / "bin"), tmp_path / "calls", STANDIN_FAIL="1"
    )
    start_supervisor(project, env)

    run = run_wait(project, "CodeReviewHeavy", task)

    assert run["exit"] == 8 and run["state"] == "failed"
    _, end = ends(project, task)
    assert end["data"]["exit_code"] == 1
    assert attachments(project, task) == [], "no 'Verdict: unknown' review is attached"
    # The run's end says what to fix, for each engine once, with its error_kind.
    error = end["data"]["error"]
    assert error == end["data"]["output"]["error"] == run["error"]
    assert error.startswith("no reviewer gave a usable review (nothing attached): ")
    assert (
        'claude (standard, critical) failed (auth): claude is not logged in (claude said: '
        '"Not logged in · Please run /login"): set ANTHROPIC_API_KEY or run `claude login`'
    ) in error
    assert "codex (standard, critical) failed (auth): codex is not logged in" in error
    assert "OPENAI_API_KEY" in error
    assert "gemini (standard, critical) failed (auth): gemini is not logged in" in error
    assert "Please set an Auth method in your settings.json (gemini)" in error
    assert "\x1b" not in error
    assert end["data"]["agent"]["error_kind"] == "auth"
    assert [r["error_kind"] for r in end["data"]["output"]["reviewers"]] == ["auth"] * 6
    log = project.cli("worker", "logs", run["run_id"]).stdout
    assert "finished codex (critical): codex (critical) failed (auth): " in log


def test_code_review_heavy_does_not_attach_reviews_without_a_verdict(
    project: Project, tmp_path: Path
) -> None:
    init_shipped(project)
    calc_change(project)
    task = project.create_task("Add calc.add")
    env = worker_env(
        project, install_standins(tmp_path / "bin", ("gemini",)), tmp_path / "calls",
        STANDIN_NO_VERDICT="1",
    )
    start_supervisor(project, env)

    run = run_wait(project, "CodeReviewHeavy", task)

    assert run["state"] == "failed"
    _, end = ends(project, task)
    assert (
        "gemini (standard, critical) failed (agent_error): no verdict in its review: "
        "I looked and have opinions."
    ) in end["data"]["error"]
    assert end["data"]["agent"]["error_kind"] == "agent_error"
    assert attachments(project, task) == []


def test_cancelling_code_review_heavy_stops_every_reviewer(
    project: Project, tmp_path: Path
) -> None:
    init_shipped(project)
    calc_change(project)
    task = project.create_task("Add calc.add")
    bin_dir = install_standins(tmp_path / "bin")
    env = worker_env(project, bin_dir, tmp_path / "calls", STANDIN_HANG="1")
    start_supervisor(project, env)
    run_id = project.json("worker", "run", "CodeReviewHeavy", task)["data"]["run_id"]

    # Follow the run's log until all six reviewers have started (the script says so).
    follow = subprocess.Popen(
        [sys.executable, "-m", "lattice_workers", "worker", "logs", run_id, "--follow"],
        cwd=project.root, env=project.env, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert follow.stdout is not None
        pids = []
        for line in follow.stdout:
            if match := re.search(r"code-review-heavy: started .* \(pid (\d+)\)", line):
                pids.append(int(match.group(1)))
                if len(pids) == 6:
                    break
        assert len(pids) == 6, pids
        project.cli("worker", "cancel", run_id)
    finally:
        follow.kill()
        follow.wait()
    waited = project.cli("worker", "wait", run_id, "--json", check=False)

    assert waited.returncode == 8
    _, end = ends(project, task)
    assert end["data"]["reason"] == "cancelled"
    # Every reviewer is gone; only the supervisor is left.
    assert processes_with_root(project.root) == [project.supervisor_pid()]
    assert not [pid for pid in pids if alive(pid)]
    assert attachments(project, task) == []


# ----------------------------------------------------------------------------- TestRunner


TESTS_OK = """import unittest

from calc import add


class AddTest(unittest.TestCase):
    def test_adds(self):
        self.assertEqual(add(2, 2), 4)
"""

TESTS_ONE_FAILS = TESTS_OK + """
    def test_adds_negative(self):
        self.assertEqual(add(-1, -1), -3)
"""


def test_test_runner_counts_attaches_and_fails_on_a_failing_test(
    project: Project, tmp_path: Path
) -> None:
    init_shipped(project)
    # The same script, with a Python that cannot import pytest: the unittest fallback.
    stdlib_python = tmp_path / "python-stdlib"
    stdlib_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    stdlib_python.chmod(0o755)
    project.write_worker(
        "TestRunnerStdlib",
        command="./workers/test-runner.py",
        env={"TEST_PYTHON": str(stdlib_python)},
        artifact_role="tests",
        report_dir=".lattice/reports",
        report_prefix="tests",
    )
    empty = project.git("rev-parse", "HEAD")
    (project.root / "tests").mkdir()
    (project.root / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (project.root / "tests" / "test_calc.py").write_text(TESTS_OK)
    project.git("add", "calc.py", "tests")
    project.git("commit", "-q", "-m", "calc with a passing test")
    passing = project.git("rev-parse", "HEAD")
    (project.root / "tests" / "test_calc.py").write_text(TESTS_ONE_FAILS)
    project.git("commit", "-q", "-am", "a failing test")
    # A project configured for pytest, with a failing test, where the python3 on the
    # worker's PATH has no pytest: a failure that says so, never unittest's "OK".
    no_pytest_bin = tmp_path / "no-pytest-bin"
    no_pytest_bin.mkdir()
    (no_pytest_bin / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    (no_pytest_bin / "python3").chmod(0o755)
    shim_bin = project.root / ".lattice" / "run" / "bin"
    project.write_worker(
        "TestRunnerNoPytest",
        command="./workers/test-runner.py",
        env={"PATH": f"{no_pytest_bin}:{shim_bin}:/usr/bin:/bin"},
        artifact_role="tests",
        report_dir=".lattice/reports",
        report_prefix="tests",
    )
    project.git("checkout", "-q", "-b", "pytest-style")
    (project.root / "pytest.ini").write_text("[pytest]\n")
    (project.root / "tests" / "test_plain.py").write_text(
        "from calc import add\n\ndef test_add():\n    assert add(1, 1) == 3\n"
    )
    project.git("add", "pytest.ini", "tests")
    project.git("commit", "-q", "-m", "a pytest project")
    pytest_style = project.git("rev-parse", "HEAD")
    project.git("checkout", "-q", "main")
    names = ("fails", "fails-unittest", "passes", "none", "no-pytest")
    tasks = {name: project.create_task(name) for name in names}
    env = worker_env(project, install_standins(tmp_path / "bin", ()), tmp_path / "calls")
    start_supervisor(project, env)

    def start(worker: str, task: str, *extra: str) -> str:
        return str(project.json("worker", "run", worker, task, *extra)["data"]["run_id"])

    run_ids = [
        start("TestRunner", tasks["fails"]),
        start("TestRunnerStdlib", tasks["fails-unittest"]),
        start("TestRunner", tasks["passes"], "--commit", passing),
        start("TestRunner", tasks["none"], "--commit", empty),
        start("TestRunnerNoPytest", tasks["no-pytest"], "--commit", pytest_style),
    ]
    waited = project.cli("worker", "wait", *run_ids, "--json", check=False)
    assert waited.returncode == 8, waited.stdout + waited.stderr

    for name, framework in (("fails", "pytest"), ("fails-unittest", "unittest")):
        _, end = ends(project, tasks[name])
        assert end["type"] == "process_failed" and end["data"]["exit_code"] == 1
        out = end["data"]["output"]
        assert out["outcome"] == "failed" and out["framework"] == framework
        assert out["counts"] == {"passed": 1, "failed": 1, "errors": 0, "skipped": 0}
        (attached,) = attachments(project, tasks[name])
        assert attached["data"]["role"] == "tests"
        text = artifact_text(project, attached)
        assert text.startswith("# Tests: FAILED (1 failed, 1 passed)")
        assert "test_adds_negative" in text and "## Output (last" in text
        assert Path(out["report"]).read_text() == text
    assert attachments(project, tasks["fails"])[0]["actor"] == "agent:test-runner"

    _, end = ends(project, tasks["passes"])
    assert end["type"] == "process_completed"
    assert end["data"]["output"]["counts"]["passed"] == 1
    assert artifact_text(project, attachments(project, tasks["passes"])[0]).startswith(
        "# Tests: passed (1 passed)"
    )

    # No tests at all is not a success: the runner cannot tell that the commit works.
    _, end = ends(project, tasks["none"])
    assert end["type"] == "process_failed" and end["data"]["exit_code"] == 2
    assert end["data"]["output"]["outcome"] == "no_tests"
    assert end["data"]["output"]["error"] == "no tests found"
    assert "No tests were found" in artifact_text(project, attachments(project, tasks["none"])[0])

    _, end = ends(project, tasks["no-pytest"])
    assert end["type"] == "process_failed" and end["data"]["exit_code"] == 2
    missing = f"pytest is not installed for {no_pytest_bin / 'python3'}"
    assert end["data"]["output"]["error"] == missing
    text = artifact_text(project, attachments(project, tasks["no-pytest"])[0])
    assert text.startswith(f"# Tests: could not run ({missing})")
    log = Path(end["data"]["log_path"])
    log = log if log.is_absolute() else project.root / log
    assert log.read_text().splitlines()[-1] == f"test-runner: FAILED: {missing}"


# ----------------------------------------------------------------------------- pure logic


def _load_test_runner() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "workers" / "test-runner.py"
    spec = importlib.util.spec_from_file_location("shipped_test_runner", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("output", "counts"),
    [
        ("1 failed, 6 passed, 2 skipped in 3.71s", (6, 1, 0, 2)),
        ("===== 2 passed, 1 error in 0.10s =====", (2, 0, 1, 0)),
        ("Ran 4 tests in 0.001s\n\nFAILED (failures=1, errors=1, skipped=1)", (1, 1, 1, 1)),
        ("Ran 3 tests in 0.001s\n\nOK (skipped=1)", (2, 0, 0, 1)),
        (
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured\n"
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured",
            (4, 2, 0, 1),
        ),
        ("Tests:       1 failed, 1 skipped, 5 passed, 7 total", (5, 1, 0, 1)),
        ("  5 passing (20ms)\n  1 pending\n  2 failing", (5, 2, 0, 1)),
    ],
)
def test_test_runner_reads_the_counts_of_each_framework(
    output: str, counts: tuple[int, int, int, int]
) -> None:
    runner = _load_test_runner()
    lines = [line for line in output.splitlines() if runner.SUMMARY_HINT.search(line)]
    found = runner.count(lines)
    assert found is not None
    assert (found["passed"], found["failed"], found["errors"], found["skipped"]) == counts


def test_test_runner_sees_no_counts_in_unrelated_output() -> None:
    runner = _load_test_runner()
    assert runner.count(["building...", "done"]) is None
