"""The Trio ROUTER server: replies, streams, typed errors, and bad peers of every kind."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio
import zmq

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol import (
    End,
    Error,
    Get,
    Hello,
    HelloReply,
    LogChunk,
    Logs,
    Ok,
    Reply,
    Run,
    RunReply,
    Shutdown,
    Wait,
    decode_reply,
    encode,
)
from lattice_workers.protocol._endpoint import ipc_path
from lattice_workers.protocol.aclient import AsyncClient, TrioSocket
from lattice_workers.supervisor import _server
from lattice_workers.supervisor._server import Send, serve
from tests.protocol.conftest import LogWatch
from tests.protocol.fake_supervisor import FakeSupervisor, run_info
from tests.protocol.test_codec import REQUESTS

pytestmark = pytest.mark.timeout(60)

EXPECTED = {
    "Hello": "HelloReply",
    "ListWorkers": "WorkersReply",
    "Run": "RunReply",
    "Cancel": "RunReply",
    "Ps": "PsReply",
    "Get": "RunReply",
    "Reload": "WorkersReply",
    "Shutdown": "Ok",
}


@asynccontextmanager
async def dealer(endpoint: str, **options: int) -> AsyncIterator[TrioSocket]:
    """A bare DEALER socket, for sending what no well-behaved client would."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(endpoint)
    wrapped = TrioSocket(sock)
    try:
        yield wrapped
    finally:
        wrapped.close()


async def exchange(sock: TrioSocket, *frames: bytes) -> Reply:
    await sock.send(list(frames))
    return decode_reply((await sock.recv())[-1])


async def hello_works(endpoint: str) -> None:
    async with AsyncClient(endpoint, timeout=20) as client:
        assert isinstance(await client.request(Hello(client="probe")), HelloReply)


@pytest.mark.parametrize(
    "req", [r for r in REQUESTS if type(r).__name__ in EXPECTED], ids=lambda r: type(r).__name__
)
async def test_every_single_reply_request_gets_its_reply(
    fake: FakeSupervisor, endpoint: str, req: object
) -> None:
    async with dealer(endpoint) as sock:
        reply = await exchange(sock, encode(req))  # type: ignore[arg-type]
    assert type(reply).__name__ == EXPECTED[type(req).__name__]
    assert reply.rid == req.rid  # type: ignore[attr-defined]


async def test_a_stream_sends_its_replies_then_end(fake: FakeSupervisor, endpoint: str) -> None:
    async with dealer(endpoint) as sock:
        await sock.send([encode(Wait(rid=11, run_ids=["a", "b", "c"]))])
        replies = [decode_reply((await sock.recv())[-1]) for _ in range(4)]
    assert [type(r) for r in replies] == [RunReply, RunReply, RunReply, End]
    assert [r.run.run_id for r in replies[:3]] == ["a", "b", "c"]  # type: ignore[attr-defined]
    assert {r.rid for r in replies} == {11}


async def test_logs_without_follow_is_a_stream_too(fake: FakeSupervisor, endpoint: str) -> None:
    async with AsyncClient(endpoint) as client:
        chunks = [r async for r in client.stream(Logs(run_id="r", offset=5), timeout=20)]
    assert [(c.offset, c.data) for c in chunks] == [(5, b"x"), (6, b"x"), (7, b"x")]  # type: ignore[attr-defined]


async def test_a_lattice_error_is_a_typed_error_reply_carrying_the_run(
    fake: FakeSupervisor, endpoint: str
) -> None:
    async with dealer(endpoint) as sock:
        reply = await exchange(sock, encode(Run(rid=4, worker="dup", task="t")))
    assert isinstance(reply, Error)
    assert (reply.rid, reply.code, reply.message) == (
        4,
        "ALREADY_RUNNING",
        "already running as run_1",
    )
    assert reply.run is not None and reply.run.run_id == "run_1"


async def test_a_bug_in_a_handler_is_internal_logged_with_traceback_and_survived(
    fake: FakeSupervisor, endpoint: str, server_log: LogWatch
) -> None:
    async with dealer(endpoint) as sock:
        reply = await exchange(sock, encode(Get(rid=8, run_id="boom")))
    assert isinstance(reply, Error) and (reply.rid, reply.code) == (8, Code.INTERNAL)
    assert "RuntimeError: boom" in reply.message and "supervisor log" in reply.message
    record = await server_log.wait_for("handler for Get rid=8 failed")
    assert record.exc_info is not None
    await hello_works(endpoint)


async def test_a_handler_that_answers_nothing_gets_an_internal_error_sent_for_it(
    fake: FakeSupervisor, endpoint: str, server_log: LogWatch
) -> None:
    async with dealer(endpoint) as sock:
        reply = await exchange(sock, encode(Get(rid=3, run_id="silent")))
    assert isinstance(reply, Error) and reply.code == Code.INTERNAL
    assert server_log.seen("sent no reply")


BAD_FRAMES = {
    "undecodable bytes": (b"\xc1\xc1\xc1", Code.INVALID_REQUEST, 0),
    "wrong shape": (
        msgspec.msgpack.encode({"type": "get", "v": 1, "rid": 5, "run_id": 12}),
        Code.INVALID_REQUEST,
        5,
    ),
    "unknown type": (
        msgspec.msgpack.encode({"type": "format_disk", "v": 1, "rid": 6}),
        Code.INVALID_REQUEST,
        6,
    ),
    "unknown version": (
        msgspec.msgpack.encode({"type": "hello", "v": 99, "rid": 7}),
        Code.UNSUPPORTED_VERSION,
        7,
    ),
    "missing v": (msgspec.msgpack.encode({"type": "hello", "rid": 8}), Code.INVALID_REQUEST, 8),
    "missing rid": (msgspec.msgpack.encode({"type": "hello", "v": 1}), Code.INVALID_REQUEST, 0),
    "empty frame": (b"", Code.INVALID_REQUEST, 0),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
async def test_bad_input_gets_a_typed_error_a_log_line_and_the_server_serves_on(
    fake: FakeSupervisor, endpoint: str, server_log: LogWatch, case: str
) -> None:
    frame, code, rid = BAD_FRAMES[case]
    async with dealer(endpoint) as sock:
        reply = await exchange(sock, frame)
        assert isinstance(reply, Error)
        assert (reply.code, reply.rid) == (code, rid)
        # the same connection is still served
        assert isinstance(await exchange(sock, encode(Hello(rid=1))), HelloReply)
    assert server_log.seen("refused a request")
    await hello_works(endpoint)


async def test_a_multipart_message_is_refused_as_one_request_is_one_frame(
    fake: FakeSupervisor, endpoint: str, server_log: LogWatch
) -> None:
    async with dealer(endpoint) as sock:
        reply = await exchange(sock, encode(Hello(rid=17)), b"extra", b"frames")
        unreadable = await exchange(sock, b"\xc1", encode(Hello(rid=18)))
    assert isinstance(reply, Error) and reply.code == Code.INVALID_REQUEST
    assert "one frame" in reply.message and server_log.seen("3 frames")
    # The first frame's rid is readable: the error answers that request.
    assert reply.rid == 17
    # Only the first frame counts: one that cannot be read gives the unreadable rid.
    assert isinstance(unreadable, Error) and unreadable.rid == 0


async def test_a_multipart_message_from_a_req_socket_is_refused_through_its_envelope(
    fake: FakeSupervisor, endpoint: str
) -> None:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    req = TrioSocket(sock)
    try:
        await req.send([encode(Hello(rid=23)), b"extra"])
        with trio.fail_after(20):
            frames = await req.recv()
    finally:
        req.close()
    reply = decode_reply(frames[-1])
    assert isinstance(reply, Error) and reply.code == Code.INVALID_REQUEST
    assert reply.rid == 23 and "had 2" in reply.message


async def test_a_req_socket_is_answered_through_its_envelope(
    fake: FakeSupervisor, endpoint: str
) -> None:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    req = TrioSocket(sock)
    try:
        await req.send([encode(Hello(rid=21))])
        frames = await req.recv()
    finally:
        req.close()
    reply = decode_reply(frames[-1])
    assert isinstance(reply, HelloReply) and reply.rid == 21


async def test_a_message_over_the_size_limit_drops_that_peer_and_the_server_serves_on(
    nursery: trio.Nursery, endpoint: str
) -> None:
    await nursery.start(
        lambda task_status: serve(
            endpoint, FakeSupervisor(), max_message_size=4096, task_status=task_status
        )
    )
    async with dealer(endpoint) as sock:
        monitor = TrioSocket(sock.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED))
        try:
            await sock.send([b"\x00" * 100_000])
            await monitor.recv()  # ZeroMQ on the server side cut the connection
        finally:
            sock.sock.disable_monitor()
            monitor.close()
    await hello_works(endpoint)


async def test_a_client_that_never_reads_does_not_stall_the_others(
    fake: FakeSupervisor, endpoint: str, server_log: LogWatch
) -> None:
    """Its replies pile up until its queue is full; then they are dropped and logged."""
    async with dealer(endpoint, RCVHWM=1, SNDHWM=0) as flood:
        hello = encode(Hello(rid=1))
        for _ in range(1_000):
            await flood.send([hello])
        await hello_works(endpoint)  # served while a thousand replies wait to be read
        # Keep going until the server has had to drop replies to it.
        with trio.fail_after(30):
            while not server_log.seen("does not read its replies"):
                for _ in range(1_000):
                    await flood.send([hello])
                await hello_works(endpoint)
    await hello_works(endpoint)


async def test_a_client_gone_mid_stream_has_its_handler_cancelled_and_logged(
    fake: FakeSupervisor, endpoint: str, server_log: LogWatch
) -> None:
    async with dealer(endpoint) as sock:
        await sock.send([encode(Logs(rid=2, run_id="forever", follow=True))])
        for _ in range(3):
            assert isinstance(decode_reply((await sock.recv())[-1]), LogChunk)
    with trio.fail_after(20):
        await fake.stream_cancelled.wait()
        await server_log.wait_for("went away")
    await hello_works(endpoint)


async def test_a_peer_gone_with_many_replies_due_at_once_is_handled_once(
    nursery: trio.Nursery, endpoint: str, server_log: LogWatch
) -> None:
    """Handlers woken together (a run ending under many waits) all find the peer gone:
    it is logged, and its requests cancelled, once, not once per handler (which
    costs the square of their number: two seconds for a thousand)."""
    release, all_waiting, all_done = trio.Event(), trio.Event(), trio.Event()
    count = {"waiting": 0, "done": 0}

    async def handler(req: object, send: Send) -> None:
        if isinstance(req, Logs):  # the canary: streams until the server finds it gone
            while True:
                await send(LogChunk(rid=req.rid, offset=0, data=b"x"))
                await trio.sleep(0.01)
        if isinstance(req, Hello):
            await send(Ok(rid=req.rid, message="serving"))
            return
        with trio.CancelScope(shield=True):  # past its last checkpoint when released
            count["waiting"] += 1
            if count["waiting"] == 50:
                all_waiting.set()
            await release.wait()
        try:
            await send(Ok(rid=req.rid, message="late"))
        finally:
            count["done"] += 1
            if count["done"] == 50:
                all_done.set()

    await nursery.start(serve, endpoint, handler)
    async with dealer(endpoint) as sock:
        for rid in range(1, 51):
            await sock.send([encode(Get(rid=rid, run_id="r"))])
        await sock.send([encode(Logs(rid=99, run_id="r", follow=True))])
        assert isinstance(decode_reply((await sock.recv())[-1]), LogChunk)
    with trio.fail_after(20):
        await server_log.wait_for("went away")
        await all_waiting.wait()
        release.set()
        await all_done.wait()
    assert len([r for r in server_log.records if "went away" in r.getMessage()]) == 1
    async with dealer(endpoint) as sock:  # and it serves on
        assert isinstance(await exchange(sock, encode(Hello(rid=1))), Ok)


async def test_a_slow_request_does_not_stall_the_same_or_other_clients(
    fake: FakeSupervisor, endpoint: str
) -> None:
    async with dealer(endpoint) as sock:
        await sock.send([encode(Get(rid=1, run_id="slow"))])
        await fake.slow_started.wait()
        assert (await exchange(sock, encode(Hello(rid=2)))).rid == 2
        await hello_works(endpoint)


async def test_requests_in_flight_per_client_are_capped(
    fake: FakeSupervisor, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_server, "MAX_IN_FLIGHT_PER_PEER", 5)
    async with dealer(endpoint) as sock:
        for rid in range(1, 6):
            await sock.send([encode(Get(rid=rid, run_id="slow"))])
        reply = await exchange(sock, encode(Hello(rid=6)))
    assert isinstance(reply, Error) and (reply.rid, reply.code) == (6, Code.CAPACITY)
    await hello_works(endpoint)


async def test_an_error_mid_stream_ends_the_stream_without_end(
    nursery: trio.Nursery, endpoint: str
) -> None:
    async def handler(req: object, send: Send) -> None:
        await send(LogChunk(rid=1, offset=0, data=b"a"))
        raise LatticeError(Code.NOT_FOUND, "the log is gone")

    await nursery.start(serve, endpoint, handler)
    async with dealer(endpoint) as sock:
        await sock.send([encode(Logs(rid=1, run_id="r"))])
        first = decode_reply((await sock.recv())[-1])
        second = decode_reply((await sock.recv())[-1])
        assert isinstance(first, LogChunk)
        assert isinstance(second, Error) and second.code == Code.NOT_FOUND
        # nothing more for that request: the next reply is the next request's
        assert isinstance(await exchange(sock, encode(Logs(rid=2, run_id="r"))), LogChunk)


async def test_a_reply_with_the_wrong_rid_is_corrected_and_extra_replies_dropped(
    nursery: trio.Nursery, endpoint: str, server_log: LogWatch
) -> None:
    async def handler(req: object, send: Send) -> None:
        await send(Ok(rid=999, message="first"))
        await send(Ok(rid=1, message="second"))

    await nursery.start(serve, endpoint, handler)
    async with dealer(endpoint) as sock:
        reply = await exchange(sock, encode(Hello(rid=1)))
        assert isinstance(reply, Ok) and (reply.rid, reply.message) == (1, "first")
        assert (await exchange(sock, encode(Hello(rid=2)))).rid == 2
    assert server_log.seen("corrected") and server_log.seen("after its last")


async def test_the_answer_to_shutdown_is_delivered_although_the_server_stops_at_once(
    nursery: trio.Nursery, endpoint: str
) -> None:
    scope = trio.CancelScope()

    async def handler(req: object, send: Send) -> None:
        await send(Ok(rid=1, message="bye"))
        scope.cancel()

    async def run_server(task_status: trio.TaskStatus[str]) -> None:
        with scope:
            await serve(endpoint, handler, task_status=task_status)

    await nursery.start(run_server)
    async with AsyncClient(endpoint) as client:
        reply = await client.request(Shutdown(), timeout=20)
    assert isinstance(reply, Ok) and reply.message == "bye"


async def test_the_socket_is_0600_in_a_0700_folder_and_removed_at_the_end(
    endpoint: str, tmp_path: Path
) -> None:
    path = ipc_path(endpoint)
    assert path is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, endpoint, FakeSupervisor())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.parent.stat().st_uid == os.getuid()
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_the_socket_file_of_a_newer_server_is_left_alone(endpoint: str) -> None:
    path = ipc_path(endpoint)
    assert path is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, endpoint, FakeSupervisor())
        path.unlink()
        path.write_text("someone else's")  # as if another server had bound the path since
        nursery.cancel_scope.cancel()
    assert path.read_text() == "someone else's"


async def test_a_second_server_on_a_live_socket_is_refused_and_the_first_keeps_it(
    fake: FakeSupervisor, endpoint: str
) -> None:
    with pytest.raises(LatticeError) as info:
        await serve(endpoint, FakeSupervisor())
    assert info.value.code == Code.INVALID_ARGUMENT and "already listening" in info.value.message
    await hello_works(endpoint)


async def test_a_socket_file_left_by_a_killed_server_is_replaced(
    nursery: trio.Nursery, endpoint: str
) -> None:
    path = ipc_path(endpoint)
    assert path is not None
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening, then abandoned: as after kill -9
    stale.close()
    await nursery.start(serve, endpoint, FakeSupervisor())
    await hello_works(endpoint)


async def test_a_reply_that_cannot_be_encoded_is_an_internal_error(
    nursery: trio.Nursery, endpoint: str, server_log: LogWatch
) -> None:
    async def handler(req: object, send: Send) -> None:
        run = run_info("r")
        run.result = {"not msgpack": object()}
        await send(RunReply(rid=1, run=run))

    await nursery.start(serve, endpoint, handler)
    async with dealer(endpoint) as sock:
        reply = await exchange(sock, encode(Get(rid=1, run_id="r")))
    assert isinstance(reply, Error) and reply.code == Code.INTERNAL
    assert server_log.seen("handler for Get rid=1 failed")


async def test_non_loopback_tcp_is_refused_without_curve_keys() -> None:
    with pytest.raises(LatticeError) as info:
        await serve("tcp://0.0.0.0:*", FakeSupervisor())
    assert info.value.code == Code.INVALID_ARGUMENT and "CURVE" in info.value.message


async def test_loopback_tcp_is_served_and_started_reports_the_port(nursery: trio.Nursery) -> None:
    bound = await nursery.start(serve, "tcp://127.0.0.1:*", FakeSupervisor())
    assert bound.startswith("tcp://127.0.0.1:") and not bound.endswith(":*")
    await hello_works(bound)


async def test_an_address_that_cannot_be_bound_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LatticeError) as info:
        await serve("tcp://127.0.0.1:not-a-port", FakeSupervisor())
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "tcp://127.0.0.1:not-a-port" in info.value.message
