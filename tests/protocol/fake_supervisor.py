"""A handler that answers every request type the way the supervisor would, for tests.

Run as a program (``python fake_supervisor.py ENDPOINT``) it serves until SIGTERM and
prints the bound endpoint on its first line once it is listening.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import trio

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol import (
    PROTOCOL_VERSION,
    AnyRequest,
    Cancel,
    Get,
    Hello,
    HelloReply,
    ListWorkers,
    LogChunk,
    Logs,
    Ok,
    Ps,
    PsReply,
    Reload,
    Run,
    RunInfo,
    RunReply,
    Shutdown,
    Wait,
    WorkerInfo,
    WorkersReply,
)
from lattice_workers.supervisor._server import Send, serve


def run_info(run_id: str, state: str = "running") -> RunInfo:
    return RunInfo(
        run_id=run_id,
        task_id="task_01",
        worker="Tests",
        state=state,
        actor="agent:tests",
        result={"passed": 3, "nested": {"ok": True}},
    )


class FakeSupervisor:
    """Answers each request; Get and Logs take magic run ids to misbehave on demand.

    Get: ``missing`` -> NOT_FOUND, ``boom`` -> a bug (INTERNAL), ``silent`` -> no reply,
    ``slow`` -> never answers, ``late`` -> answers once ``release_late`` is set.
    Logs: ``forever`` streams until cancelled.
    """

    def __init__(self, endpoint: str = "") -> None:
        self.endpoint = endpoint
        self.stream_cancelled = trio.Event()
        self.slow_started = trio.Event()
        self.release_late = trio.Event()
        self.late_started = trio.Event()
        self.late_answered = trio.Event()

    async def __call__(self, req: AnyRequest, send: Send) -> None:
        rid = req.rid
        match req:
            case Hello():
                await send(
                    HelloReply(
                        rid=rid,
                        protocol_version=PROTOCOL_VERSION,
                        server_version="test",
                        pid=os.getpid(),
                        root="/nowhere",
                        socket=self.endpoint,
                        started_at=time.time(),
                    )
                )
            case ListWorkers() | Reload():
                workers = [
                    WorkerInfo(name="Tests", path="workers/tests.json", valid=True),
                    WorkerInfo(name="Bad", path="w/bad.json", valid=False, problems=["no engine"]),
                ]
                await send(WorkersReply(rid=rid, workers=workers))
            case Run(worker="dup"):
                raise LatticeError(
                    Code.ALREADY_RUNNING, "already running as run_1", details=run_info("run_1")
                )
            case Run() | Cancel():
                await send(RunReply(rid=rid, run=run_info("run_1"), created=True))
            case Ps():
                await send(PsReply(rid=rid, runs=[run_info("run_1"), run_info("run_2", "queued")]))
            case Get(run_id="missing"):
                raise LatticeError(Code.NOT_FOUND, "no run 'missing'")
            case Get(run_id="boom"):
                raise RuntimeError("boom")
            case Get(run_id="silent"):
                return
            case Get(run_id="slow"):
                self.slow_started.set()
                await trio.sleep_forever()
            case Get(run_id="late"):
                self.late_started.set()
                await self.release_late.wait()
                try:
                    await send(RunReply(rid=rid, run=run_info("late", "completed")))
                finally:
                    self.late_answered.set()  # sent, or found its client gone
            case Get():
                await send(RunReply(rid=rid, run=run_info(req.run_id, "completed")))
            case Wait():
                for run_id in req.run_ids:
                    await send(RunReply(rid=rid, run=run_info(run_id, "completed")))
            case Logs(run_id="forever"):
                try:
                    offset = 0
                    while True:
                        data = f"line {offset}\n".encode()
                        await send(LogChunk(rid=rid, offset=offset, data=data))
                        offset += len(data)
                        await trio.sleep(0.001)
                finally:
                    self.stream_cancelled.set()
            case Logs():
                for offset in range(req.offset, req.offset + 3):
                    await send(LogChunk(rid=rid, offset=offset, data=b"x"))
            case Shutdown():
                await send(Ok(rid=rid, message="stopping"))


async def _main(endpoint: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(serve, endpoint, FakeSupervisor(endpoint))
            print(bound, flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    trio.run(_main, sys.argv[1])
