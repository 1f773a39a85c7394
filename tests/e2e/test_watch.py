"""The ``Watch`` subscription against a real supervisor, through raw DEALER sockets
(so that a test decides when, and whether, a subscriber reads)."""

from __future__ import annotations

import time
from pathlib import Path

import zmq

from lattice_workers.protocol import (
    End,
    Hello,
    HelloReply,
    RunEvent,
    Watch,
    decode_reply,
    default_endpoint,
    encode,
)
from tests.e2e.conftest import Project


def subscriber(project: Project, task: str | None = None) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(default_endpoint(project.root))
    sock.send(encode(Watch(rid=1, task=task)))
    return sock


def events(sock: zmq.Socket[bytes], until: str, timeout: float = 30) -> list[RunEvent]:
    """Events until (and with) one whose run is in state ``until``, or End."""
    got: list[RunEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sock.poll(int((deadline - time.monotonic()) * 1000) + 1):
            break
        reply = decode_reply(sock.recv())
        if isinstance(reply, End):
            return got
        assert isinstance(reply, RunEvent), reply
        got.append(reply)
        if reply.run.state == until:
            return got
    seen = [(e.kind, e.run.state) for e in got]
    raise AssertionError(f"no {until!r} within {timeout}s; got {seen}")


def hello(project: Project) -> HelloReply:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(default_endpoint(project.root))
        sock.send(encode(Hello(rid=7)))
        assert sock.poll(10_000)
        reply = decode_reply(sock.recv())
        assert isinstance(reply, HelloReply)
        return reply
    finally:
        sock.close()


def subscribers_become(project: Project, count: int) -> None:
    """Wait until the supervisor holds ``count`` subscriptions (requests on other sockets
    may be taken in any order, so a Hello can overtake a Watch)."""
    deadline = time.monotonic() + 10
    while hello(project).subscribers != count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hello(project).subscribers == count


def started(project: Project) -> None:
    project.write_worker("Hello", command="echo hi", worktree=False)
    project.write_worker("Sleeper", command="sleep 300", worktree=False, kill_grace_seconds=1)
    project.cli("supervisor", "start")


def test_a_subscriber_sees_the_live_runs_then_every_change_then_end(project: Project) -> None:
    started(project)
    one, two = project.create_task("one"), project.create_task("two")
    sleeper = project.json("worker", "run", "Sleeper", one)["data"]["run_id"]
    sock = subscriber(project)
    try:
        current = events(sock, until="running")
        assert [(e.kind, e.run.run_id) for e in current] == [("current", sleeper)]
        hello_run = project.json("worker", "run", "Hello", two)["data"]["run_id"]
        seen = events(sock, until="completed")
        assert [e.run.run_id for e in seen] == [hello_run] * len(seen)
        assert seen[0].kind == "started" and seen[-1].kind == "ended"
        assert [e.run.state for e in seen] == ["queued", "preparing", "running", "completed"]
        assert seen[-1].run.exit_code == 0 and seen[-1].run.ended_at
        assert all(e.lost == 0 for e in seen)
        project.cli("worker", "cancel", sleeper)
        cancelled = events(sock, until="failed")
        assert cancelled[-1].run.reason == "cancelled"
        project.cli("supervisor", "stop", timeout=120)
        assert events(sock, until="never") == []  # the stream ends with End
    finally:
        sock.close()


def test_a_task_filter_and_many_subscribers(project: Project) -> None:
    started(project)
    one, two = project.create_task("one"), project.create_task("two")
    everyone = [subscriber(project) for _ in range(20)]
    only_two = subscriber(project, task=two)
    try:
        subscribers_become(project, 21)
        project.json("worker", "run", "Hello", one)
        second = project.json("worker", "run", "Hello", two)["data"]["run_id"]
        for sock in everyone:
            seen = events(sock, until="completed")  # the first run's end
            seen += events(sock, until="completed")  # the second's
            assert [e.run.run_id for e in seen if e.kind == "ended"][-1] == second
        filtered = events(only_two, until="completed")
        assert {e.run.run_id for e in filtered} == {second}
    finally:
        for sock in [*everyone, only_two]:
            sock.close()


def test_a_subscriber_that_does_not_read_holds_nothing_up(project: Project) -> None:
    started(project)
    tasks = [project.create_task(f"t{i}") for i in range(12)]
    idle = subscriber(project)  # never reads until the end
    watching = subscriber(project)
    try:
        ids = [project.json("worker", "run", "Hello", t)["data"]["run_id"] for t in tasks]
        ended: set[str] = set()
        while len(ended) < len(ids):
            ended |= {e.run.run_id for e in events(watching, until="completed")}
        assert ended == set(ids)
        late = []
        while {e.run.run_id for e in late if e.kind == "ended"} != set(ids):
            late += events(idle, until="completed")
        assert {e.run.run_id for e in late if e.kind == "ended"} == set(ids)
    finally:
        idle.close()
        watching.close()


def test_subscribers_that_went_away_are_dropped_at_the_next_change(project: Project) -> None:
    started(project)
    task = project.create_task("one")
    pid = hello(project).pid
    rss = []
    for _ in range(4):
        gone = [subscriber(project) for _ in range(30)]
        subscribers_become(project, 30)
        for sock in gone:
            sock.close()
        project.json("worker", "run", "Hello", task, "--wait")
        subscribers_become(project, 0)
        rss.append(resident_kib(pid))
    # Flat: what the first round settled at, give or take allocator noise.
    assert rss[-1] - rss[0] < 4096, rss


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
