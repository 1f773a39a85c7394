"""Every end of a run writes exactly one terminal event and leaves nothing behind.

Real supervisor, real git worktrees, real worker processes, the real CLI.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import Project, alive


def run_and_wait(project: Project, worker: str, task: str, *extra: str) -> dict:
    proc = project.cli("worker", "run", worker, task, "--wait", "--json", *extra, check=False)
    out = json.loads(proc.stdout)
    assert out["ok"], proc.stdout + proc.stderr
    run = out["data"][0]
    run["exit"] = proc.returncode
    return run


def terminal_events(project: Project, task: str) -> tuple[dict, list[dict]]:
    events = project.process_events(task)
    started = [e for e in events if e["type"] == "process_started"]
    ends = [e for e in events if e["type"] in ("process_completed", "process_failed")]
    assert len(started) == 1, events
    assert len(ends) == 1, events
    assert ends[0]["data"]["started_event_id"] == started[0]["id"]
    return started[0], ends


def assert_settled(project: Project, task: str) -> None:
    assert project.snapshot(task)["active_processes"] == []
    assert len(project.worktree_list()) == 1


def test_success_writes_completed_and_removes_worktree(project: Project) -> None:
    project.write_worker("Ok", command='pwd > "$LATTICE_LOG.cwd"; echo hello from $LATTICE_RUN_ID')
    task = project.create_task()
    run = run_and_wait(project, "Ok", task)
    assert run["exit"] == 0 and run["state"] == "completed"
    started, ends = terminal_events(project, task)
    assert ends[0]["type"] == "process_completed"
    assert ends[0]["data"]["exit_code"] == 0 and ends[0]["data"]["result"] == "success"
    assert started["data"]["run_id"] == run["run_id"]
    assert started["actor"] == "agent:ok"
    assert started["agent_meta"]["session"] == run["run_id"]
    cwd = Path(run["log_path"] + ".cwd").read_text().strip()
    assert cwd == run["worktree_path"] and not Path(cwd).exists()
    assert not Path(cwd).is_relative_to(project.root)
    log = project.cli("worker", "logs", run["run_id"]).stdout
    assert f"hello from {run['run_id']}" in log
    assert_settled(project, task)


def test_nonzero_exit_writes_failed_with_exit_code(project: Project) -> None:
    project.write_worker("Bad", command="echo oops; exit 3")
    task = project.create_task()
    run = run_and_wait(project, "Bad", task)
    assert run["exit"] == 8 and run["state"] == "failed"
    _, ends = terminal_events(project, task)
    assert ends[0]["type"] == "process_failed"
    assert ends[0]["data"]["reason"] == "exit_nonzero"
    assert ends[0]["data"]["exit_code"] == 3
    assert_settled(project, task)


def test_killed_by_signal_is_recorded(project: Project) -> None:
    project.write_worker("Killed", command="kill -KILL $$")
    task = project.create_task()
    run = run_and_wait(project, "Killed", task)
    assert run["state"] == "failed"
    _, ends = terminal_events(project, task)
    assert ends[0]["data"]["reason"] == "exit_nonzero"
    assert ends[0]["data"]["signal"] == 9
    assert_settled(project, task)


def test_timeout_escalates_to_sigkill_after_grace(project: Project) -> None:
    project.write_worker(
        "Stubborn",
        command="trap '' TERM; echo ready; while true; do sleep 0.1; done",
        timeout_minutes=0.02,
        kill_grace_seconds=1,
    )
    task = project.create_task()
    run = run_and_wait(project, "Stubborn", task)
    assert run["state"] == "failed" and run["reason"] == "timeout"
    _, ends = terminal_events(project, task)
    assert ends[0]["data"]["reason"] == "timeout"
    assert ends[0]["data"]["signal"] == 9
    assert_settled(project, task)


def test_grandchild_that_outlives_the_worker_is_killed(project: Project) -> None:
    project.write_worker(
        "Forker",
        command='(sleep 300 & echo $! > "$LATTICE_LOG.child"; wait) & sleep 0.2; exit 0',
    )
    task = project.create_task()
    run = run_and_wait(project, "Forker", task)
    assert run["state"] == "completed"
    child = int(Path(run["log_path"] + ".child").read_text())
    assert not alive(child), "the forked grandchild outlived its run"
    terminal_events(project, task)
    assert_settled(project, task)


#: A daemon in a session of its own (``setsid``, as tmux or a dev server's launcher
#: does): it writes its pid to $LATTICE_LOG.child (renamed into place) once it has left
#: the worker's process group, and the worker waits for that before it goes on.
DAEMON = (
    'python3 -c "import os, sys, time; os.setsid(); '
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid())); "
    "os.replace(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(300)\" "
    '"$LATTICE_LOG.child" & '
    'while [ ! -e "$LATTICE_LOG.child" ]; do sleep 0.01; done'
)


def _gone_soon(pid: int, timeout: float = 30) -> bool:
    """Whether ``pid`` ends within ``timeout`` (killed by the sweep of ended runs)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def test_a_descendant_that_left_the_group_is_killed_when_the_run_ends(project: Project) -> None:
    """It left the group, but it carries the run's LATTICE_RUN_ID, which finds it."""
    project.write_worker("Daemonizer", command=f"{DAEMON}; exit 0")
    task = project.create_task()
    run = run_and_wait(project, "Daemonizer", task)
    assert run["state"] == "completed"
    child = int(Path(run["log_path"] + ".child").read_text())
    assert _gone_soon(child), "a descendant in a session of its own outlived its run"
    assert_settled(project, task)


def test_the_sweep_of_an_attempt_spares_the_next_attempt(project: Project) -> None:
    """A retry has the same run id and may start before the sweep of the failed
    attempt: only the failed attempt's leftovers die."""
    project.write_worker(
        "Flaky",
        command=(
            f'if [ "$LATTICE_ATTEMPT" = 1 ]; then {DAEMON}; exit 1; fi; '
            'sleep 1; echo second > "$LATTICE_LOG.second"'
        ),
        retries=1,
        retry_backoff_seconds=0,
        worktree=False,
    )
    task = project.create_task()
    run = run_and_wait(project, "Flaky", task)
    assert run["state"] == "completed" and run["attempt"] == 2, run
    assert Path(run["log_path"] + ".second").read_text() == "second\n"
    ends = [e for e in project.process_events(task) if e["type"] != "process_started"]
    first_log = ends[0]["data"]["log_path"]
    assert [e["type"] for e in ends] == ["process_failed", "process_completed"], ends
    assert _gone_soon(int(Path(first_log + ".child").read_text()))


def test_a_supervisor_that_stops_takes_the_daemons_of_its_runs_along(project: Project) -> None:
    project.write_worker("Daemonizer", command=f"{DAEMON}; sleep 300", worktree=False)
    task = project.create_task()
    run = project.json("worker", "run", "Daemonizer", task)["data"]
    child_file = Path(run["log_path"] + ".child")
    deadline = time.monotonic() + 30
    while not child_file.exists():  # the daemon's own signal that it left the group
        assert time.monotonic() < deadline, "the daemon never started"
        time.sleep(0.02)
    child = int(child_file.read_text())
    project.cli("supervisor", "stop")  # returns once the supervisor's process is gone
    assert not alive(child), "a run's daemon outlived the supervisor's shutdown"


def test_cancel_while_running_writes_cancelled(project: Project) -> None:
    project.write_worker("Sleeper", command="echo started; sleep 300", kill_grace_seconds=2)
    task = project.create_task()
    started = project.json("worker", "run", "Sleeper", task)["data"]
    _wait_for_state(project, started["run_id"], "running")
    project.cli("worker", "cancel", started["run_id"])
    waited = project.cli("worker", "wait", started["run_id"], "--json", check=False)
    assert waited.returncode == 8
    _, ends = terminal_events(project, task)
    assert ends[0]["data"]["reason"] == "cancelled"
    assert_settled(project, task)


def test_cancel_while_queued_writes_nothing(project: Project) -> None:
    a, b = project.one_running_one_queued()
    first, second = a["task_id"], b["task_id"]
    assert b["queue_position"] == 1
    ps = project.json("worker", "ps")["data"]
    assert [r["run_id"] for r in ps] == [b["run_id"], a["run_id"]]
    project.cli("worker", "cancel", "Sleeper", second)
    waited = project.json("worker", "wait", b["run_id"], check=False)["data"][0]
    assert waited["state"] == "failed" and waited["reason"] == "cancelled"
    assert project.process_events(second) == []
    project.cli("worker", "cancel", a["run_id"])
    project.cli("worker", "wait", a["run_id"], check=False)
    terminal_events(project, first)


def test_missing_command_is_refused_before_anything_is_written(project: Project) -> None:
    project.write_worker("Ghost", command="no-such-program-xyz --flag")
    task = project.create_task()
    before = project.events(task)
    proc = project.cli("worker", "run", "Ghost", task, "--json", check=False)
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["error"]["code"] == "ENGINE_NOT_FOUND"
    assert project.events(task) == before


def test_an_empty_path_in_the_definition_is_refused_before_anything_is_written(
    project: Project,
) -> None:
    """An empty PATH finds no program (the worker's exec would not either)."""
    project.write_worker("NoPath", command=["sleep", "0"], env={"PATH": ""}, worktree=False)
    task = project.create_task()
    before = project.events(task)
    proc = project.cli("worker", "run", "NoPath", task, "--json", check=False)
    assert json.loads(proc.stdout).get("error", {}).get("code") == "ENGINE_NOT_FOUND", proc.stdout
    assert project.events(task) == before


def test_worktree_that_cannot_be_created_fails_the_run(project: Project) -> None:
    blocker = project.worktrees
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the worktree folder should be")
    project.write_worker("Tree", command="true")
    task = project.create_task()
    run = run_and_wait(project, "Tree", task)
    assert run["state"] == "failed" and run["reason"] == "worktree_error"
    _, ends = terminal_events(project, task)
    assert ends[0]["data"]["reason"] == "worktree_error"
    assert_settled(project, task)
    blocker.unlink()


def test_result_file_is_carried_in_the_completion_event(project: Project) -> None:
    project.write_worker(
        "Reporter",
        command='echo \'{"summary": "all good", "findings": 0}\' > "$LATTICE_RESULT_FILE"',
    )
    task = project.create_task()
    run_and_wait(project, "Reporter", task)
    _, ends = terminal_events(project, task)
    assert ends[0]["data"]["output"] == {"summary": "all good", "findings": 0}


def test_run_history_appears_in_lattice_show(project: Project) -> None:
    project.write_worker("Ok", command="true")
    task = project.create_task()
    run = run_and_wait(project, "Ok", task)
    shown = project.cli("show", task).stdout
    assert "Ok" in shown and "completed" in shown
    runs = project.json("show", task)["data"]["runs"]
    assert [(r["run_id"], r["state"]) for r in runs] == [(run["run_id"], "completed")]


def _wait_for_state(project: Project, run_id: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if project.json("worker", "show", run_id)["data"]["state"] == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {state}")



def test_wait_timeout_exits_6_and_names_the_live_run(project: Project) -> None:
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1, worktree=False)
    task = project.create_task()
    run = project.json("worker", "run", "Sleeper", task)["data"]
    proc = project.cli("worker", "wait", run["run_id"], "--timeout", "0.5", "--json", check=False)
    assert proc.returncode == 6
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "TIMEOUT" and run["run_id"] in error["message"]
    project.cli("worker", "cancel", run["run_id"])
    project.cli("worker", "wait", run["run_id"], check=False)


def test_logs_tail_and_follow(project: Project) -> None:
    project.write_worker("Counter", command="for i in 1 2 3 4 5; do echo line $i; done; sleep 0.5")
    task = project.create_task()
    run = project.json("worker", "run", "Counter", task)["data"]
    followed = project.cli("worker", "logs", run["run_id"], "--follow").stdout
    assert followed.splitlines() == [f"line {i}" for i in range(1, 6)]
    tail = project.cli("worker", "logs", run["run_id"], "--tail", "2").stdout
    assert tail.splitlines() == ["line 4", "line 5"]


def test_follow_on_a_queued_run_waits_for_its_output(project: Project) -> None:
    project.configure_workers(max_concurrent=1)
    # First holds the only slot until the test says go (a fixed sleep could end before
    # Second is asked for on a loaded machine, and then Second would not queue).
    go = project.root / "go"
    project.write_worker(
        "First", command=f"while [ ! -e {go} ]; do sleep 0.05; done", worktree=False
    )
    project.write_worker("Second", command="echo out of the queue", worktree=False)
    task = project.create_task()
    project.json("worker", "run", "First", task)
    queued = project.json("worker", "run", "Second", task)["data"]
    assert queued["state"] == "queued"
    follow = subprocess.Popen(
        [sys.executable, "-m", "lattice_workers", "worker", "logs", queued["run_id"], "--follow"],
        cwd=project.root, env=project.env, stdout=subprocess.PIPE, text=True,
    )
    go.touch()
    followed, _ = follow.communicate(timeout=60)
    assert followed == "out of the queue\n"
