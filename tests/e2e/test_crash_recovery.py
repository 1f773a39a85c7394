"""A supervisor killed with SIGKILL: the next start settles everything it left open."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, alive, processes_with_root


def _wait_running(project: Project, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = project.json("worker", "ps")["data"]
        running = [r for r in runs if r["state"] == "running"]
        if len(running) >= count:
            return running
        assert time.monotonic() < deadline, runs
        time.sleep(0.1)


def _kill_supervisor(project: Project) -> None:
    """SIGKILL the project's supervisor, as a crash or the OOM killer would."""
    project.kill_supervisor()


def _drop_journal_records(project: Project, run_ids: set[str]) -> None:
    """What a power loss may do: a started run's journal records are not fsynced (its
    durable record is its ``process_started`` on the board), so they can be lost."""
    journal = project.root / ".lattice" / "run" / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line)["run"]["run_id"] not in run_ids]
    assert len(kept) < len(lines)
    journal.write_bytes(b"".join(kept))


@pytest.mark.parametrize(
    ("kill_during_recovery", "journal_lost"), [(False, False), (True, False), (False, True)]
)
def test_sigkill_then_restart_settles_every_run(
    project: Project, kill_during_recovery: bool, journal_lost: bool
) -> None:
    project.configure_workers(max_concurrent=5)
    project.write_worker("Sleeper", command="sleep 300")
    project.write_worker("Stubborn", command="trap '' TERM; while true; do sleep 0.2; done")
    project.write_worker("Quick", command="echo done")
    tasks = [project.create_task(f"task {i}") for i in range(10)]
    started = [project.json("worker", "run", "Sleeper", t)["data"] for t in tasks[:4]]
    started.append(project.json("worker", "run", "Stubborn", tasks[4])["data"])
    queued = [
        project.json("worker", "run", "Quick", t, "--idempotency-key", f"key-{i}")["data"]
        for i, t in enumerate(tasks[5:])
    ]
    assert all(q["state"] == "queued" for q in queued)
    running = _wait_running(project, 5)
    worker_pids = [r["pid"] for r in running]
    _kill_supervisor(project)
    assert any(alive(p) for p in worker_pids), "workers should outlive a SIGKILLed supervisor"
    if journal_lost:
        _drop_journal_records(project, {r["run_id"] for r in started})

    if kill_during_recovery:
        second = subprocess.Popen(
            [sys.executable, "-m", "lattice_workers", "supervisor", "run"],
            cwd=project.root, env=dict(project.env, LATTICE_ROOT=str(project.root)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # Kill it as soon as recovery has written its first event (it still has
        # worktrees to remove and runs to requeue): read the logs directly, fast.
        logs = [project.root / ".lattice" / "events" / f"{r['task_id']}.jsonl" for r in started]
        deadline = time.monotonic() + 30
        while not any(b'"process_failed"' in log.read_bytes() for log in logs):
            assert time.monotonic() < deadline and second.poll() is None
            time.sleep(0.001)
        second.kill()
        second.wait()

    project.cli("supervisor", "start")
    for pid in worker_pids:
        assert not alive(pid), f"worker {pid} of the killed supervisor is still alive"
    for task, run in zip(tasks[:5], started, strict=True):
        ends = [e for e in project.process_events(task) if e["type"] != "process_started"]
        assert len(ends) == 1, (task, ends)
        assert ends[0]["type"] == "process_failed"
        assert ends[0]["data"]["reason"] == "orphaned"
        assert ends[0]["data"]["run_id"] == run["run_id"]
    # The accepted-but-never-started runs run to completion, in their first order.
    again = project.json("worker", "run", "Quick", tasks[5], "--idempotency-key", "key-0")["data"]
    assert again["run_id"] == queued[0]["run_id"] and again["created"] is False
    waited = project.json("worker", "wait", *[q["run_id"] for q in queued])["data"]
    assert sorted(w["state"] for w in waited) == ["completed"] * 5
    # The environment their client sent died with the supervisor (it is never written
    # down): each requeued run's log says what it runs with instead.
    for q in queued:
        log = project.cli("worker", "logs", q["run_id"]).stdout
        assert log.startswith("lattice-workers: this run was queued when the supervisor ")
        assert "runs with the supervisor's environment" in log.splitlines()[0]
    for task in tasks[5:]:
        types = [e["type"] for e in project.process_events(task)]
        assert types == ["process_started", "process_completed"]
    for task in tasks:
        assert project.snapshot(task)["active_processes"] == []
    assert len(project.worktree_list()) == 1
    assert [p for p in processes_with_root(project.root) if p != project.supervisor_pid()] == []
    doctor = project.cli("doctor", check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    finished = {r["run_id"]: r for r in project.json("worker", "ps", "-a")["data"]}
    if not journal_lost:  # the board has them either way (checked above)
        assert {r["run_id"] for r in started} <= set(finished)


def test_retries_run_again_after_failure_until_success(project: Project) -> None:
    counter = project.root.parent / "attempts"
    project.write_worker(
        "Flaky",
        command='n=$(cat "$COUNTER" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$COUNTER"; '
        '[ "$n" -ge 3 ]',
        env={"COUNTER": str(counter)},
        retries=2,
        retry_backoff_seconds=0.1,
    )
    task = project.create_task()
    proc = project.cli("worker", "run", "Flaky", task, "--wait", "--json")
    final = json.loads(proc.stdout)["data"][0]
    assert final["state"] == "completed" and final["attempt"] == 3
    events = project.process_events(task)
    assert [(e["type"], e["data"]["attempt"]) for e in events] == [
        ("process_started", 1), ("process_failed", 1),
        ("process_started", 2), ("process_failed", 2),
        ("process_started", 3), ("process_completed", 3),
    ]
    failures = [e for e in events if e["type"] == "process_failed"]
    assert [e["data"]["reason"] for e in failures] == ["exit_nonzero", "exit_nonzero"]


def test_retries_stop_when_attempts_run_out(project: Project) -> None:
    project.write_worker("AlwaysBad", command="exit 1", retries=1, worktree=False)
    task = project.create_task()
    proc = project.cli("worker", "run", "AlwaysBad", task, "--wait", "--json", check=False)
    assert proc.returncode == 8
    types = [e["type"] for e in project.process_events(task)]
    assert types == ["process_started", "process_failed"] * 2


def test_doctor_reports_only_unowned_runs_and_fix_settles_them(project: Project) -> None:
    project.write_worker("Sleeper", command="sleep 300", worktree=False)
    task = project.create_task()
    run = project.json("worker", "run", "Sleeper", task)["data"]
    pid = _wait_running(project, 1)[0]["pid"]
    assert project.cli("doctor", check=False).returncode == 0  # owned by a live supervisor
    _kill_supervisor(project)
    env = dict(project.env, LATTICE_NO_AUTOSTART="1")
    report = project.cli("doctor", "--json", env=env, check=False)
    assert report.returncode == 7
    kinds = [p["kind"] for p in json.loads(report.stdout)["error"]["details"]]
    assert kinds == ["open_run"]
    fixed = project.cli("doctor", "--fix", env=env, check=False)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert not alive(pid)
    ends = [e for e in project.process_events(task) if e["type"] == "process_failed"]
    assert [(e["data"]["reason"], e["data"]["run_id"]) for e in ends] == [
        ("orphaned", run["run_id"])
    ]
    assert project.cli("doctor", env=env, check=False).returncode == 0


def test_doctor_fix_without_autostart_also_removes_the_worktrees_left(project: Project) -> None:
    # `env -i` scrubs LATTICE_RUN_ID: only the journal's pid record finds this process.
    project.write_worker("Sleeper", command="exec env -i sleep 300", worktree=True)
    task = project.create_task()
    project.json("worker", "run", "Sleeper", task)
    running = _wait_running(project, 1)[0]
    worktree = Path(running["worktree_path"])
    assert worktree.is_dir() and project.workspaces() == [worktree]
    _kill_supervisor(project)
    env = dict(project.env, LATTICE_NO_AUTOSTART="1")
    fixed = project.cli("doctor", "--fix", env=env, check=False)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert not alive(running["pid"])
    assert not worktree.exists()
    assert project.workspaces() == [] and len(project.worktree_list()) == 1
    assert project.cli("supervisor", "status", env=env, check=False).returncode == 6
