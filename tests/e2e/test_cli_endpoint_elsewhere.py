"""A CLI whose ``LATTICE_ENDPOINT`` names another supervisor is a client of that one only.

It must not start a supervisor of its own board (one started here would not listen on
that endpoint), and ``status``, ``stop`` and ``reload`` act on the supervisor there.
"""

from __future__ import annotations

import json
import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, alive, make_project, stop_everything
from tests.e2e.test_supervisor_curve import free_port


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Project, Project]]:
    """Project ``a`` with a supervisor on loopback TCP; project ``b`` pointed at it."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_project(tmp_path / "a")
    b = make_project(tmp_path / "b")
    try:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        a.cli("supervisor", "start", "--listen", endpoint)
        b.env["LATTICE_ENDPOINT"] = endpoint
        yield a, b
    finally:
        b.env.pop("LATTICE_ENDPOINT", None)
        for project in (a, b):
            stop_everything(project)


def test_worker_commands_use_the_supervisor_there_and_start_none_here(
    two: tuple[Project, Project],
) -> None:
    a, b = two
    a.write_worker("Sleeper", command="sleep 300", worktree=False)
    task = a.create_task()
    run = a.json("worker", "run", "Sleeper", task)["data"]
    listed = b.json("worker", "ps")["data"]
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    b.cli("worker", "cancel", run["run_id"])
    assert b.json("worker", "wait", run["run_id"], check=False)["data"][0]["state"] == "failed"
    assert b.supervisor_pid() is None, "the CLI started a supervisor of its own board"
    assert not (b.root / ".lattice" / "run" / "supervisor.sock").exists()


def test_status_reload_and_stop_act_on_the_supervisor_there(
    two: tuple[Project, Project],
) -> None:
    a, b = two
    pid = a.supervisor_pid()
    assert pid is not None
    status = b.json("supervisor", "status")["data"]
    assert status["pid"] == pid and status["root"] == str(a.root.resolve())
    assert b.json("supervisor", "reload")["data"]["reloaded"] is True
    pidfd = os.pidfd_open(pid)
    try:
        stopped = b.json("supervisor", "stop")["data"]
        assert stopped == {"stopped": True, "pid": pid}
        # Not this board's, so the command does not wait for the process: it ends soon.
        assert select.select([pidfd], [], [], 30)[0], "the supervisor there did not stop"
    finally:
        os.close(pidfd)
    proc = b.cli("supervisor", "status", "--json", check=False)
    assert proc.returncode != 0
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "SUPERVISOR_UNAVAILABLE"
    assert b.env["LATTICE_ENDPOINT"] in error["message"]
    assert b.supervisor_pid() is None


def test_stop_through_tcp_waits_for_this_boards_own_supervisor(project: Project) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    project.cli("supervisor", "start", "--listen", endpoint)
    pid = project.supervisor_pid()
    assert pid is not None
    env = dict(project.env, LATTICE_ENDPOINT=endpoint)
    stopped = json.loads(project.cli("supervisor", "stop", "--json", env=env).stdout)["data"]
    assert stopped == {"stopped": True, "pid": pid}
    # The command returned only once the process was gone (it is ours: we can watch it).
    assert not alive(pid)


def test_the_boards_own_socket_written_another_way_is_not_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lattice_workers.protocol import default_endpoint
    from lattice_workers.supervisor.control import elsewhere

    root = tmp_path / "project"
    root.mkdir()
    own = default_endpoint(root)
    sock = Path(own.removeprefix("ipc://"))
    sock.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "link").symlink_to(sock.parent)
    try:
        for same in (
            own,
            f"ipc://{sock.parent}/./{sock.name}",
            f"ipc://{tmp_path}/link/{sock.name}",
        ):
            monkeypatch.setenv("LATTICE_ENDPOINT", same)
            assert elsewhere(root) is None, same
    finally:
        if tmp_path not in sock.parents:  # the short fallback folder of a long path
            sock.parent.rmdir()
    for other in ("tcp://127.0.0.1:5555", f"ipc://{tmp_path}/other.sock"):
        monkeypatch.setenv("LATTICE_ENDPOINT", other)
        assert elsewhere(root) == other
    monkeypatch.delenv("LATTICE_ENDPOINT")
    assert elsewhere(root) is None
