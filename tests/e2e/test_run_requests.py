"""What a Run request is refused for, and the one-live-run-per-key guarantee."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Project

STORM_CLIENT = r"""
import json, sys
from lattice_workers.errors import LatticeError
from lattice_workers.protocol._messages import Run
from lattice_workers.protocol.client import Client
endpoint, worker, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Client(endpoint, timeout=30) as c:
    for task in sys.stdin:  # one line per round: the task; every client sends at once
        out = []
        for _ in range(n):
            try:
                r = c.request(Run(worker=worker, task=task.strip()))
                out.append({"ok": r.run.run_id, "created": r.created})
            except LatticeError as e:
                out.append({"code": str(e.code), "run": (e.details or {}).get("run_id")})
        print(json.dumps(out), flush=True)
"""


def test_duplicate_storm_starts_exactly_one_run(project: Project) -> None:
    """20 processes x 5 requests for one key at once, five rounds: one run each round."""
    project.write_worker("Slow", command="sleep 300", kill_grace_seconds=1)
    project.cli("supervisor", "start")
    endpoint = project.json("supervisor", "status")["data"]["socket"]
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", STORM_CLIENT, endpoint, "Slow", "5"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=project.env,
        )
        for _ in range(20)
    ]
    try:
        for round_ in range(5):
            task = project.create_task(f"storm {round_}")
            for c in clients:
                assert c.stdin is not None
                c.stdin.write(task + "\n")
                c.stdin.flush()
            answers = []
            for c in clients:
                assert c.stdout is not None
                answers += json.loads(c.stdout.readline())
            created = [a for a in answers if a.get("created")]
            assert len(created) == 1, answers
            winner = created[0]["ok"]
            refused = [a for a in answers if "code" in a]
            assert len(refused) + 1 == len(answers) == 100
            assert all(a == {"code": "ALREADY_RUNNING", "run": winner} for a in refused), refused
            project.cli("worker", "cancel", winner)
            project.cli("worker", "wait", winner, check=False)
            started = [e for e in project.process_events(task) if e["type"] == "process_started"]
            assert len(started) <= 1
    finally:
        for c in clients:
            assert c.stdin is not None
            c.stdin.close()
            c.wait(timeout=30)


def test_already_running_names_the_live_run_and_exits_5(project: Project) -> None:
    project.write_worker("Slow", command="sleep 300", kill_grace_seconds=1)
    task = project.create_task()
    first = project.json("worker", "run", "Slow", task)["data"]
    proc = project.cli("worker", "run", "Slow", task, "--json", check=False)
    assert proc.returncode == 5
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "ALREADY_RUNNING" and first["run_id"] in err["message"]
    human = project.cli("worker", "run", "Slow", task, check=False)
    assert human.returncode == 5 and first["run_id"] in human.stderr
    project.cli("worker", "cancel", "Slow", task)
    project.cli("worker", "wait", first["run_id"], check=False)


def test_wait_on_a_live_key_waits_for_the_live_run(project: Project) -> None:
    project.write_worker("Short", command="sleep 1")
    task = project.create_task()
    first = project.json("worker", "run", "Short", task)["data"]
    waited = project.json("worker", "run", "Short", task, "--wait")["data"]
    assert [r["run_id"] for r in waited] == [first["run_id"]]
    assert waited[0]["state"] == "completed"


def test_broken_code_review_heavy_is_refused_with_both_problems(project: Project) -> None:
    project.write_worker(
        "CodeReviewHeavy",
        command="./workers/code-review-heavy.sh",
        prompt_file="prompts/workers/code-review-heavy.md",
    )
    task = project.create_task()
    before = project.events(task)
    proc = project.cli("worker", "run", "CodeReviewHeavy", task, "--json", check=False)
    assert proc.returncode == 4
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "INVALID_WORKER"
    assert "code-review-heavy.sh" in error["message"]
    assert "code-review-heavy.md" in error["message"]
    assert project.events(task) == before
    check = project.cli("worker", "check", check=False)
    assert check.returncode != 0


def test_invalid_actor_on_request_and_in_definition_is_refused(project: Project) -> None:
    project.write_worker("Ok", command="true")
    project.write_worker("BadActor", command="true", actor="robot")
    task = project.create_task()
    before = project.events(task)
    proc = project.cli("worker", "run", "Ok", task, "--actor", "nobody", "--json", check=False)
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["error"]["code"] == "INVALID_ACTOR"
    proc = project.cli("worker", "run", "BadActor", task, "--json", check=False)
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["error"]["code"] in ("INVALID_WORKER", "INVALID_ACTOR")
    assert project.events(task) == before


def test_unknown_task_worker_and_path_tricks_are_refused(project: Project) -> None:
    project.write_worker("Ok", command="true")
    task = project.create_task()
    for args, code in [
        (("Ok", "T-999"), "NOT_FOUND"),
        (("Ok", "../../etc/passwd"), "INVALID_ID"),
        (("Ok", "task_../../x"), "INVALID_ID"),
        (("Nope", task), "NOT_FOUND"),
        (("../Ok", task), "NOT_FOUND"),
    ]:
        proc = project.cli("worker", "run", *args, "--json", check=False)
        assert proc.returncode != 0, args
        assert json.loads(proc.stdout)["error"]["code"] == code, (args, proc.stdout)
    assert project.process_events(task) == []


ENV_PROBE = r"""
python3 - <<'PY'
import json, os
keep = {k: v for k, v in os.environ.items() if k.startswith(("LATTICE_", "ANTHROPIC_", "CLAUDE"))}
open(os.environ["LATTICE_LOG"] + ".env.json", "w").write(json.dumps(keep))
PY
lattice show "$LATTICE_TASK_ID" --json > "$LATTICE_LOG.show.json"
"""


def test_worker_environment_and_lattice_show_inside_the_worktree(project: Project) -> None:
    project.write_worker("Env", command=ENV_PROBE)
    task = project.create_task()
    env = dict(
        project.env,
        CLAUDECODE="1",
        ANTHROPIC_API_KEY="sk-test",
        CLAUDE_CONFIG_DIR="/tmp/claude-config",
        LATTICE_TASK_ID="task_inherited_should_vanish",
    )
    project.cli("supervisor", "start", env=env)
    run = json.loads(
        project.cli("worker", "run", "Env", task, "--wait", "--json", env=env).stdout
    )["data"][0]
    seen = json.loads(Path(run["log_path"] + ".env.json").read_text())
    assert "CLAUDECODE" not in seen
    assert seen["ANTHROPIC_API_KEY"] == "sk-test"
    assert seen["CLAUDE_CONFIG_DIR"] == "/tmp/claude-config"
    assert seen["LATTICE_ROOT"] == str(project.root)
    assert seen["LATTICE_TASK_ID"] == run["task_id"]
    assert seen["LATTICE_RUN_ID"] == run["run_id"]
    assert seen["LATTICE_WORKTREE"] == run["worktree_path"]
    assert seen["LATTICE_COMMIT_SHA"] == project.git("rev-parse", "HEAD")
    assert seen["LATTICE_MERGE_BASE"] == project.git("rev-parse", "HEAD")
    for name in ("LATTICE_STARTED_EVENT_ID", "LATTICE_RESULT_FILE", "LATTICE_LOG",
                 "LATTICE_WORKER", "LATTICE_ACTOR", "LATTICE_SHORT_ID", "LATTICE_BASE_REF"):
        assert seen.get(name), name
    shown = json.loads(Path(run["log_path"] + ".show.json").read_text())
    assert shown["ok"] and shown["data"]["task"]["id"] == run["task_id"]
