"""The Trio client, and the socket wrapper under it."""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import pytest
import trio
import zmq

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol import (
    Get,
    Hello,
    HelloReply,
    Logs,
    Run,
    RunReply,
    Wait,
    default_endpoint,
)
from lattice_workers.protocol.aclient import AsyncClient, TrioSocket
from lattice_workers.supervisor._server import serve
from tests.protocol.conftest import LogWatch
from tests.protocol.fake_supervisor import FakeSupervisor

pytestmark = pytest.mark.timeout(60)


async def test_many_tasks_share_one_client_and_each_gets_its_own_answer(
    fake: FakeSupervisor, endpoint: str
) -> None:
    wrong: list[tuple[str, str]] = []

    async with AsyncClient(endpoint, timeout=30) as client:

        async def ask(task: int) -> None:
            for i in range(20):
                run_id = f"r{task}-{i}"
                reply = await client.request(Get(run_id=run_id))
                assert isinstance(reply, RunReply)
                if reply.run.run_id != run_id:
                    wrong.append((run_id, reply.run.run_id))

        async with trio.open_nursery() as nursery:
            for task in range(50):
                nursery.start_soon(ask, task)
    assert wrong == []


async def test_streams_and_requests_interleave_on_one_client(
    fake: FakeSupervisor, endpoint: str
) -> None:
    async with AsyncClient(endpoint, timeout=30) as client:
        chunks = 0
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                nonlocal chunks
                async for _ in client.stream(Logs(run_id="forever", follow=True), timeout=20):
                    chunks += 1
                    if chunks == 50:
                        nursery.cancel_scope.cancel()

            nursery.start_soon(follow)
            for _ in range(100):
                assert isinstance(await client.request(Hello()), HelloReply)
        runs = [r.run.run_id async for r in client.stream(Wait(run_ids=["a", "b"]))]  # type: ignore[attr-defined]
    assert runs == ["a", "b"]


async def test_an_error_reply_is_raised(fake: FakeSupervisor, endpoint: str) -> None:
    async with AsyncClient(endpoint) as client:
        with pytest.raises(LatticeError) as info:
            await client.request(Run(worker="dup", task="t"))
        assert info.value.code == Code.ALREADY_RUNNING
        assert isinstance(info.value.details, dict)
        with pytest.raises(LatticeError) as info:
            await client.request(Get(run_id="missing"))
        assert info.value.code == Code.NOT_FOUND


async def test_no_answer_in_time_is_supervisor_unavailable_and_the_late_reply_is_dropped(
    fake: FakeSupervisor, endpoint: str, server_log: LogWatch
) -> None:
    async with AsyncClient(endpoint) as client:
        with pytest.raises(LatticeError) as info:
            await client.request(Get(run_id="late"), timeout=0.5)
        assert info.value.code == Code.SUPERVISOR_UNAVAILABLE
        assert "within 0.5s" in info.value.message
        with trio.fail_after(20):
            await fake.late_started.wait()
        fake.release_late.set()
        with trio.fail_after(20):
            await fake.late_answered.wait()
        reply = await client.request(Get(run_id="next"))
        assert isinstance(reply, RunReply) and reply.run.run_id == "next"


async def test_no_supervisor_is_supervisor_unavailable(tmp_path: Path) -> None:
    async with AsyncClient(default_endpoint(tmp_path), timeout=0.2) as client:
        with pytest.raises(LatticeError) as info:
            await client.request(Hello())
    assert info.value.code == Code.SUPERVISOR_UNAVAILABLE


async def test_a_caller_cancelling_one_request_leaves_the_others_working(
    fake: FakeSupervisor, endpoint: str
) -> None:
    async with AsyncClient(endpoint) as client:
        with trio.move_on_after(0.05):
            await client.request(Get(run_id="slow"))
        assert isinstance(await client.request(Hello()), HelloReply)


async def test_a_supervisor_gone_mid_stream_ends_every_request_in_flight(
    endpoint: str, nursery: trio.Nursery
) -> None:
    server = trio.CancelScope()
    fake = FakeSupervisor(endpoint)

    async def run_server(task_status: trio.TaskStatus[str]) -> None:
        with server:
            await serve(endpoint, fake, task_status=task_status)

    await nursery.start(run_server)
    failures: list[LatticeError] = []
    async with AsyncClient(endpoint) as client:

        async def expect_gone(req: Logs | Get) -> None:
            with pytest.raises(LatticeError) as info:
                if isinstance(req, Logs):
                    async for _ in client.stream(req):  # no timeout at all
                        pass
                else:
                    await client.request(req, timeout=60)
            failures.append(info.value)

        async with trio.open_nursery() as waiting:
            waiting.start_soon(expect_gone, Logs(run_id="forever", follow=True))
            waiting.start_soon(expect_gone, Get(run_id="slow"))
            await fake.slow_started.wait()
            server.cancel()
    assert [e.code for e in failures] == [Code.SUPERVISOR_UNAVAILABLE] * 2
    assert all("closed the connection" in e.message for e in failures)


async def test_leaving_a_stream_early_stops_it_on_the_server(
    fake: FakeSupervisor, endpoint: str
) -> None:
    async with AsyncClient(endpoint) as client:
        stream = client.stream(Logs(run_id="forever", follow=True), timeout=20)
        async with aclosing(stream):  # type: ignore[type-var]
            async for _ in stream:
                break
        with trio.fail_after(20):
            await fake.stream_cancelled.wait()
        assert isinstance(await client.request(Hello()), HelloReply)


async def test_trio_socket_wakes_a_receiver_whose_edge_a_send_consumed(tmp_path: Path) -> None:
    """Rule 2 of TrioSocket: while one task waits to receive, others send; a send may
    process the signal of an arriving message, and the receiver must still wake.

    A ROUTER echoes from a task per message (as the server does) to a DEALER that 50
    tasks share, each waiting for its own echo. Without the wake-up after sends this
    stalls within a few hundred messages.
    """
    ctx = zmq.Context.instance()
    endpoint = f"ipc://{tmp_path}/echo.sock"
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for raw in (router, dealer):
        raw.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    dealer.connect(endpoint)
    server, client = TrioSocket(router), TrioSocket(dealer)
    tasks, rounds = 50, 100
    arrived: dict[bytes, trio.Event] = {}

    async def echo(frames: list[bytes]) -> None:
        await server.send(frames)

    async def ask(who: int) -> None:
        for i in range(rounds):
            key = f"{who}:{i}".encode()
            arrived[key] = trio.Event()
            await client.send([key])
            await arrived[key].wait()

    try:
        with trio.fail_after(50):
            async with trio.open_nursery() as nursery:

                async def serve_echo() -> None:
                    while True:
                        nursery.start_soon(echo, await server.recv())

                async def receive() -> None:
                    while True:
                        arrived[(await client.recv())[0]].set()

                nursery.start_soon(serve_echo)
                nursery.start_soon(receive)
                async with trio.open_nursery() as askers:
                    for who in range(tasks):
                        askers.start_soon(ask, who)
                nursery.cancel_scope.cancel()
    finally:
        server.close()
        client.close()
    assert len(arrived) == tasks * rounds
