"""The synchronous client, against a live server (in this loop via a thread, or a process)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol import (
    Get,
    Hello,
    HelloReply,
    LogChunk,
    Logs,
    Ps,
    PsReply,
    Run,
    RunReply,
    Wait,
    WorkersReply,
    default_endpoint,
)
from lattice_workers.protocol.client import Client
from tests.protocol.conftest import LogWatch, ServerProcess, start_server_process
from tests.protocol.fake_supervisor import FakeSupervisor
from tests.protocol.test_codec import REQUESTS
from tests.protocol.test_server import EXPECTED

pytestmark = pytest.mark.timeout(60)


def test_importing_the_client_does_not_import_trio() -> None:
    code = (
        "import lattice_workers.protocol.client, sys; "
        "assert 'trio' not in sys.modules, 'trio imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_every_request_type_round_trips(fake: FakeSupervisor, endpoint: str) -> None:
    def talk() -> list[str]:
        with Client(endpoint) as client:
            names = []
            for req in REQUESTS:
                req = type(req)(**{f: getattr(req, f) for f in req.__struct_fields__})
                if type(req).__name__ in EXPECTED:
                    names.append(type(client.request(req)).__name__)
                else:
                    names.extend(type(r).__name__ for r in client.stream(req, timeout=20))
            return names

    names = await trio.to_thread.run_sync(talk)
    assert names == [
        "HelloReply",
        "WorkersReply",
        "RunReply",
        "RunReply",
        "RunReply",
        "PsReply",
        "RunReply",
        "RunReply",  # Wait: one per run id, End not yielded
        "RunReply",
        "LogChunk",
        "LogChunk",
        "LogChunk",
        "WorkersReply",
        "Ok",
    ]


async def test_an_error_reply_is_raised_with_the_run_as_details(
    fake: FakeSupervisor, endpoint: str
) -> None:
    def talk() -> LatticeError:
        with Client(endpoint) as client, pytest.raises(LatticeError) as info:
            client.request(Run(worker="dup", task="t"))
        return info.value

    error = await trio.to_thread.run_sync(talk)
    assert error.code == Code.ALREADY_RUNNING and error.message == "already running as run_1"
    assert isinstance(error.details, dict) and error.details["run_id"] == "run_1"


def test_no_supervisor_is_a_clear_error_within_the_timeout(tmp_path: Path) -> None:
    endpoint = default_endpoint(tmp_path)
    with Client(endpoint, timeout=0.3) as client, pytest.raises(LatticeError) as info:
        client.request(Hello())
    assert info.value.code == Code.SUPERVISOR_UNAVAILABLE
    assert info.value.message == (
        f"no answer from the supervisor at {endpoint} within 0.3s; is it running? "
        f"(lattice supervisor status)"
    )


async def test_a_late_reply_is_never_taken_for_the_next_answer(
    fake: FakeSupervisor, endpoint: str
) -> None:
    with Client(endpoint, timeout=20) as client:
        with pytest.raises(LatticeError) as info:
            await trio.to_thread.run_sync(lambda: client.request(Get(run_id="late"), timeout=1))
        assert info.value.code == Code.SUPERVISOR_UNAVAILABLE
        with trio.fail_after(20):
            await fake.late_started.wait()  # (the request did reach the server)
        fake.release_late.set()
        with trio.fail_after(20):
            await fake.late_answered.wait()
        reply = await trio.to_thread.run_sync(lambda: client.request(Get(run_id="next")))
    assert isinstance(reply, RunReply) and reply.run.run_id == "next"


async def test_leaving_a_stream_early_stops_it_on_the_server(
    fake: FakeSupervisor, endpoint: str, server_log: LogWatch
) -> None:
    def follow_three() -> list[bytes]:
        with Client(endpoint) as client:
            out = []
            for chunk in client.stream(Logs(run_id="forever", follow=True), timeout=20):
                assert isinstance(chunk, LogChunk)
                out.append(chunk.data)
                if len(out) == 3:
                    break
            # the client is usable again at once
            assert isinstance(client.request(Hello()), HelloReply)
            return out

    assert await trio.to_thread.run_sync(follow_three) == [b"line 0\n", b"line 7\n", b"line 14\n"]
    with trio.fail_after(20):
        await fake.stream_cancelled.wait()


def test_a_supervisor_killed_mid_stream_ends_the_stream_with_an_error(
    server_process: ServerProcess,
) -> None:
    with Client(server_process.endpoint) as client:
        stream = client.stream(Logs(run_id="forever", follow=True))  # no timeout at all
        assert isinstance(next(stream), LogChunk)
        server_process.stop(signal.SIGKILL)
        with pytest.raises(LatticeError) as info:
            for _ in stream:
                pass
    assert info.value.code == Code.SUPERVISOR_UNAVAILABLE
    assert "closed the connection" in info.value.message


def test_a_client_outlives_a_supervisor_restart(endpoint: str) -> None:
    first = start_server_process(endpoint)
    try:
        with Client(endpoint, timeout=20) as client:
            assert isinstance(client.request(Ps()), PsReply)
            first.stop()
            second = start_server_process(endpoint)
            try:
                assert isinstance(client.request(Ps()), PsReply)
            finally:
                second.stop()
    finally:
        first.stop()


def test_a_wait_stream_from_a_process_server(server_process: ServerProcess) -> None:
    with Client(server_process.endpoint, timeout=20) as client:
        runs = [r.run.run_id for r in client.stream(Wait(run_ids=["a", "b"]), timeout=20)]  # type: ignore[attr-defined]
        assert runs == ["a", "b"]
        assert isinstance(client.request(Hello()), HelloReply)
        assert isinstance(client.request(Hello()), HelloReply)


def test_a_request_over_the_size_limit_is_refused_before_sending(tmp_path: Path) -> None:
    with Client(default_endpoint(tmp_path)) as client, pytest.raises(LatticeError) as info:
        client.request(Wait(run_ids=["r" * 500_000, "s" * 600_000]))
    assert info.value.code == Code.INVALID_ARGUMENT and "bytes" in info.value.message


def test_a_malformed_endpoint_is_a_clear_error() -> None:
    with Client("carrier-pigeon://roof") as client, pytest.raises(LatticeError) as info:
        client.request(Hello())
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "carrier-pigeon://roof" in info.value.message


async def test_workers_reply_decodes_problems(fake: FakeSupervisor, endpoint: str) -> None:
    from lattice_workers.protocol import ListWorkers

    def talk() -> WorkersReply:
        with Client(endpoint) as client:
            reply = client.request(ListWorkers())
            assert isinstance(reply, WorkersReply)
            return reply

    reply = await trio.to_thread.run_sync(talk)
    assert [(w.name, w.valid, w.problems) for w in reply.workers] == [
        ("Tests", True, []),
        ("Bad", False, ["no engine"]),
    ]
