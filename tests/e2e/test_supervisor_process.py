"""The supervisor as a process: one per board, started on demand, stopped gracefully."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Project


def wait_gone(pid: int, timeout: float = 60) -> None:
    fd = os.pidfd_open(pid)
    try:
        import select

        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"pid {pid} still alive after {timeout}s"
    finally:
        os.close(fd)


def socket_path(project: Project) -> Path:
    endpoint = project.json("supervisor", "status")["data"]["socket"]
    assert endpoint.startswith("ipc://")
    return Path(endpoint.removeprefix("ipc://"))


def test_start_status_stop(project: Project) -> None:
    proc = project.cli("supervisor", "status", check=False)
    assert proc.returncode == 6
    started = project.json("supervisor", "start")["data"]
    assert started["started"] is True
    status = project.json("supervisor", "status")["data"]
    assert status["pid"] == started["pid"] and status["root"] == str(project.root)
    again = project.json("supervisor", "start")["data"]
    assert again["started"] is False and again["pid"] == started["pid"]
    sock = socket_path(project)
    assert sock.exists()
    stopped = project.json("supervisor", "stop")["data"]
    assert stopped == {"stopped": True, "pid": started["pid"]}
    assert not sock.exists()
    assert project.cli("supervisor", "status", check=False).returncode == 6


def test_socket_and_folder_permissions(project: Project) -> None:
    project.cli("supervisor", "start")
    sock = socket_path(project)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700


def test_worker_commands_start_the_supervisor_on_demand(project: Project) -> None:
    env = dict(project.env, LATTICE_NO_AUTOSTART="1")
    refused = project.cli("worker", "ps", "--json", env=env, check=False)
    assert refused.returncode == 6
    assert json.loads(refused.stdout)["error"]["code"] == "SUPERVISOR_UNAVAILABLE"
    assert project.json("worker", "ps")["data"] == []
    assert project.json("supervisor", "status")["data"]["pid"] > 0


def test_ten_simultaneous_starts_leave_exactly_one_supervisor(project: Project) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lattice_workers", "supervisor", "start", "--json"],
            cwd=project.root, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    pids = set()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, out + err
        pids.add(json.loads(out)["data"]["pid"])
    assert len(pids) == 1
    (pid,) = pids
    # The losers said who holds the lock and are exiting; none of them may linger.
    for other in _processes_with_cmd("supervisor run"):
        if other != pid and _root_of(other) == project.root:
            wait_gone(other, timeout=30)
    supervisors = [p for p in _processes_with_cmd("supervisor run") if _root_of(p) == project.root]
    assert supervisors == [pid]


def test_stale_lock_from_a_killed_supervisor_is_taken_over(project: Project) -> None:
    first = project.json("supervisor", "start")["data"]["pid"]
    os.kill(first, signal.SIGKILL)
    wait_gone(first)
    second = project.json("supervisor", "start")["data"]
    assert second["started"] is True and second["pid"] != first
    assert project.json("worker", "ps")["data"] == []


def test_second_foreground_supervisor_names_the_holder(project: Project) -> None:
    pid = project.json("supervisor", "start")["data"]["pid"]
    proc = project.cli("supervisor", "run", "--json", check=False, timeout=30)
    assert proc.returncode != 0
    assert f"pid {pid}" in json.loads(proc.stdout)["error"]["message"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_and_closes_running_runs(project: Project, sig: int) -> None:
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=2)
    task = project.create_task()
    run = project.json("worker", "run", "Sleeper", task)["data"]
    pid = project.json("supervisor", "status")["data"]["pid"]
    sock = socket_path(project)
    deadline = time.monotonic() + 30
    while project.json("worker", "show", run["run_id"])["data"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(pid, sig)
    wait_gone(pid)
    assert not sock.exists()
    ends = [e for e in project.process_events(task) if e["type"] == "process_failed"]
    assert len(ends) == 1 and ends[0]["data"]["reason"] == "supervisor_shutdown"
    assert project.snapshot(task)["active_processes"] == []
    assert len(project.worktree_list()) == 1


def test_non_loopback_tcp_is_refused_without_curve_keys(project: Project) -> None:
    proc = project.cli(
        "supervisor", "run", "--listen", "tcp://0.0.0.0:47123", "--json", check=False, timeout=30
    )
    assert proc.returncode != 0
    assert "CURVE" in proc.stdout + proc.stderr


def test_loopback_tcp_listener_answers(project: Project) -> None:
    project.cli("supervisor", "start", "--listen", "tcp://127.0.0.1:47124")
    env = dict(project.env, LATTICE_ENDPOINT="tcp://127.0.0.1:47124")
    assert project.json("worker", "ps")["data"] == [] and env
    out = project.cli("worker", "ps", "--json", env=env)
    assert json.loads(out.stdout)["ok"]


def _processes_with_cmd(fragment: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in cmd and "lattice" in cmd:
            found.append(int(entry))
    return found


def _root_of(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def test_stop_with_drain_lets_live_runs_finish(project: Project) -> None:
    project.write_worker("Short", command="sleep 1; echo finished", worktree=False)
    task = project.create_task()
    project.json("worker", "run", "Short", task)
    project.cli("supervisor", "stop", "--drain")
    ends = [e for e in project.process_events(task) if e["type"] != "process_started"]
    assert [e["type"] for e in ends] == ["process_completed"]


def test_a_supervisor_started_from_a_workers_shell_belongs_to_no_run(project: Project) -> None:
    """Started by a worker's command (it autostarts one when none runs), it must not carry
    the run's marks: the kill by environment of that run (recovery, the sweep of ended
    runs, ``doctor --fix``) would take it and its git processes along."""
    from lattice_workers.actors._settle import kill_by_run_id

    marks = {"LATTICE_RUN_ID": "run_01JSHELL0000000000000000AA", "LATTICE_ATTEMPT": "1"}
    project.write_worker("Ok", command="true", worktree=False)
    task = project.create_task()
    project.cli("worker", "run", "Ok", task, "--wait", env=dict(project.env, **marks))
    pid = project.supervisor_pid()
    assert pid is not None
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not {f"{k}={v}".encode() for k, v in marks.items()} & set(environ)
    # Nothing the supervisor started (its git processes) carries them either.
    assert kill_by_run_id({marks["LATTICE_RUN_ID"]}) == []
    assert project.json("supervisor", "status")["data"]["pid"] == pid
