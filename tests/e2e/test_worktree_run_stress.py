"""Many worktree runs at once, cancelled at every stage, retried, and cut off by the
supervisor's end (a graceful stop, or SIGKILL and a restart): nothing is ever left.

A worktree run makes its worktree while its ``process_started`` is written and removes
it while its terminal event is written; these probes hit those overlaps from every
side (a cancel right after the Run reply lands while git is still making the
worktree) and then check the invariants on the real board and the real repository:
every ``process_started`` has exactly one end naming it, no worktree folder or git
registration is left, no log descriptor stays open in the supervisor, and (the
``project`` fixture checks it) no process of the project is alive.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from lattice_workers.protocol import default_endpoint
from lattice_workers.protocol._messages import (
    Cancel,
    LogChunk,
    Logs,
    Ps,
    PsReply,
    Run,
    RunReply,
)
from lattice_workers.protocol.client import Client
from tests.e2e.conftest import Project, open_files_under
from tests.e2e.test_supervisor_process import wait_gone

#: Every reason a run of these probes may end with.
ENDS = {"success", "cancelled", "exit_nonzero", "supervisor_shutdown", "orphaned"}


def _workers(project: Project, *, max_concurrent: int) -> None:
    project.configure_workers(max_concurrent=max_concurrent)
    project.write_worker("Quick", command="sleep 0.05", kill_grace_seconds=1)
    project.write_worker(
        "Flaky", command="exit 1", retries=1, retry_backoff_seconds=0.05, kill_grace_seconds=1
    )
    # Says it is up (so a test can wait for that, not sleep), then waits to be stopped.
    project.write_worker("Slow", command="echo up; exec sleep 60", kill_grace_seconds=1)
    # Cancelled as soon as it is accepted: it cannot end on its own first.
    project.write_worker("Patient", command="exec sleep 60", kill_grace_seconds=1)


def _client(project: Project) -> Client:
    """A protocol client of the project's supervisor: a Cancel sent right after a Run
    reply reaches the supervisor while git is still making that run's worktree (the
    ``lattice`` command alone takes longer than git to start)."""
    return Client(default_endpoint(project.root), timeout=60)


def _run(client: Client, worker: str, task: str) -> dict[str, Any]:
    reply = client.request(Run(worker=worker, task=task, requested_by="human:test"))
    assert isinstance(reply, RunReply) and reply.created, reply
    return {"run_id": reply.run.run_id, "state": reply.run.state, "worker": worker}


def _cancel(client: Client, run_id: str) -> None:
    reply = client.request(Cancel(run_id=run_id))
    assert isinstance(reply, RunReply), reply


def _wait_up(client: Client, run_id: str) -> None:
    """Until the run's log says ``up``: its worker is running (an event, not a sleep)."""
    seen = b""
    for chunk in client.stream(Logs(run_id=run_id, follow=True), timeout=60):
        assert isinstance(chunk, LogChunk), chunk
        seen += chunk.data
        if b"up" in seen:
            return
    raise AssertionError(f"run {run_id} ended before its worker said it was up: {seen!r}")


def _wait(project: Project, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``lattice worker wait --json``: the final record of each run (failures expected)."""
    proc = project.cli("worker", "wait", "--json", *run_ids, check=False)
    envelope = json.loads(proc.stdout)
    assert envelope["ok"], envelope  # a failed run exits non-zero with the same data
    found = {r["run_id"]: r for r in envelope["data"]}
    assert set(found) == set(run_ids), (sorted(found), run_ids)
    assert all(r["state"] in ("completed", "failed") for r in found.values()), found
    return found


def _assert_board_closed(project: Project, tasks: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every ``process_started`` has exactly one end naming it, and no end names none.

    Returns each run's process events, by run id.
    """
    by_run: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        events = project.process_events(task)
        started = {e["id"]: e for e in events if e["type"] == "process_started"}
        ends: dict[str, list[dict[str, Any]]] = {sid: [] for sid in started}
        for event in events:
            if event["type"] == "process_started":
                continue
            assert event["type"] in ("process_completed", "process_failed"), event
            sid = event["data"]["started_event_id"]
            assert sid in ends, f"{task}: an end that names no process_started: {event}"
            ends[sid].append(event)
            reason = event["data"].get("reason") or event["data"].get("result")
            assert reason in ENDS, event
        for sid, found in ends.items():
            assert len(found) == 1, f"{task}: {sid} has {len(found)} ends: {found}"
            assert found[0]["data"]["run_id"] == started[sid]["data"]["run_id"]
        for event in events:
            by_run.setdefault(event["data"]["run_id"], []).append(event)
        assert project.snapshot(task)["active_processes"] == [], task
    return by_run


def _assert_no_worktree_left(project: Project) -> None:
    assert len(project.worktree_list()) == 1, project.worktree_list()
    admin = project.root / ".git" / "worktrees"
    assert not admin.exists() or list(admin.iterdir()) == [], list(admin.iterdir())
    base = project.worktrees
    assert not base.exists() or list(base.iterdir()) == [], list(base.iterdir())


def _assert_nothing_went_wrong_inside(project: Project) -> None:
    """The supervisor logged no error or warning: an unexpected exception, a worktree
    it could not remove, a cleanup past its deadline would each hide behind a board
    that looks right."""
    logs = sorted((project.root / ".lattice" / "logs").glob("supervisor.log*"))
    lines = [line for log in logs for line in log.read_text().splitlines()]
    bad = [line for line in lines if " ERROR " in line or " WARNING " in line]
    assert bad == [], "\n".join(bad)


def _started(project: Project, *, max_concurrent: int) -> tuple[list[str], int]:
    """The workers written, eight tasks made, the supervisor started: tasks and its pid."""
    _workers(project, max_concurrent=max_concurrent)
    tasks = [project.create_task(f"task {i}") for i in range(8)]
    project.cli("supervisor", "start")
    pid = project.supervisor_pid()
    assert pid is not None
    return tasks, pid


def _worker_logs(project: Project) -> Path:
    return project.root / ".lattice" / "logs" / "workers"


def test_worktree_runs_cancelled_retried_and_shut_down_leave_nothing(project: Project) -> None:
    tasks, pid = _started(project, max_concurrent=12)
    with _client(project) as client:
        # 1. A burst past the cap (some queue): 8 Quick, 8 Flaky (retries: 1), 3 Slow,
        # and 3 Patient runs cancelled as soon as they are accepted, while git makes
        # their worktrees.
        quick, flaky, slow, patient = [], [], [], []
        for i, task in enumerate(tasks):
            if i < 3:
                patient.append(_run(client, "Patient", task))
                _cancel(client, patient[-1]["run_id"])
            quick.append(_run(client, "Quick", task))
            flaky.append(_run(client, "Flaky", task))
            if i < 3:
                slow.append(_run(client, "Slow", task))
        # 2. Two Slow runs are cancelled while they run; the third runs on.
        for run in slow:
            _wait_up(client, run["run_id"])
        for run in slow[:2]:
            _cancel(client, run["run_id"])
        ended = [r["run_id"] for r in patient + quick + flaky + slow[:2]]
        final = _wait(project, ended)
        for run in quick:
            assert final[run["run_id"]]["state"] == "completed", final[run["run_id"]]
        for run in patient + slow[:2]:
            info = final[run["run_id"]]
            assert info["state"] == "failed" and info["reason"] == "cancelled", info
        for run in flaky:
            info = final[run["run_id"]]
            assert info["state"] == "failed" and info["reason"] == "exit_nonzero", info
            assert info["attempt"] == 2, info
        # Only the Slow run still running holds a worktree, the others are idle in the
        # pool (at most its size, the cap); the supervisor holds no log but that run's
        # own (it copies the run's output into it: see _logsink).
        live = client.request(Ps())
        assert isinstance(live, PsReply)
        assert [r.run_id for r in live.runs] == [slow[2]["run_id"]]
        held = live.runs[0].worktree_path
        others = [p.name for p in project.workspaces() if str(p) != held]
        assert len(others) == len(project.workspaces()) - 1, (held, others)
        assert all(name.startswith("pool-") for name in others) and len(others) <= 12, others
        assert len(project.worktree_list()) == 1  # a workspace is no git worktree
        assert open_files_under(pid, _worker_logs(project)) == [live.runs[0].log_path]

        # 3. Another burst, some cancelled at once, and SIGTERM to the supervisor while
        # these runs are being prepared (and one Slow run still runs).
        burst = []
        for i, task in enumerate(tasks):
            burst.append(_run(client, "Quick", task)["run_id"])
            if 3 <= i < 5:
                burst.append(_run(client, "Patient", task)["run_id"])
                _cancel(client, burst[-1])
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid)

    by_run = _assert_board_closed(project, tasks)
    for run in flaky:
        events = by_run[run["run_id"]]
        assert [(e["type"], e["data"]["attempt"]) for e in events] == [
            ("process_started", 1), ("process_failed", 1),
            ("process_started", 2), ("process_failed", 2),
        ], events
    last = by_run[slow[2]["run_id"]][-1]
    assert last["type"] == "process_failed", last
    assert last["data"]["reason"] == "supervisor_shutdown", last
    for run_id in burst:  # started ones ended; queued ones wrote nothing
        assert len(by_run.get(run_id, [])) in (0, 2), by_run.get(run_id)
    _assert_no_worktree_left(project)
    _assert_nothing_went_wrong_inside(project)


def test_sigkill_while_worktree_runs_are_prepared_then_restart_leaves_nothing(
    project: Project,
) -> None:
    tasks, pid = _started(project, max_concurrent=6)
    with _client(project) as client:
        slow = [_run(client, "Slow", task) for task in tasks[:2]]
        for run in slow:
            _wait_up(client, run["run_id"])
        workers = [r["pid"] for r in project.json("worker", "ps")["data"] if r.get("pid")]
        assert len(workers) == 2, workers
        # A burst past the cap (some run, some queue), one retrying run among them,
        # then SIGKILL while git makes their worktrees.
        burst = [_run(client, "Quick", task)["run_id"] for task in tasks]
        burst.append(_run(client, "Flaky", tasks[0])["run_id"])
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    left_by_crash = {p.name for p in project.workspaces() if p.name.startswith("pool-")}

    # Any worker command starts a supervisor, whose recovery settles the old runs and
    # queues again those that were accepted but never started.
    runs = project.json("worker", "ps", "-a")["data"]
    new_pid = project.supervisor_pid()
    assert new_pid is not None and new_pid != pid
    for worker_pid in workers:
        assert not Path(f"/proc/{worker_pid}").exists() or _zombie(worker_pid), worker_pid
    live = [r["run_id"] for r in runs if r["state"] not in ("completed", "failed")]
    if live:
        _wait(project, live)
    by_run = _assert_board_closed(project, tasks)
    for run in slow:
        last = by_run[run["run_id"]][-1]
        assert last["type"] == "process_failed" and last["data"]["reason"] == "orphaned", last
    for run_id in burst:
        events = by_run.get(run_id, [])
        assert events, f"run {run_id} was accepted, so it must have run (again) after recovery"
    assert open_files_under(new_pid, _worker_logs(project)) == []
    # The new supervisor's runs left their workspaces idle in its pool; none of the
    # killed one's pool is among them (its recovery removed them).
    idle = [p.name for p in project.workspaces()]
    assert all(name.startswith("pool-") for name in idle) and len(idle) <= 6, idle
    assert not left_by_crash & set(idle), (left_by_crash, idle)
    project.cli("supervisor", "stop", timeout=120)
    _assert_no_worktree_left(project)
    _assert_nothing_went_wrong_inside(project)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True
