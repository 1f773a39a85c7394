"""The stack's ceiling: the least a run costs in a supervisor built on Trio, pyzmq and msgspec.

``python bench/_ceiling.py ENDPOINT LATTICE_DIR`` serves Hello, Run and Wait of our
protocol on ``ENDPOINT`` (``ipc://``) until SIGTERM, doing per run only what any
supervisor on the required stack must do, and nothing of ours above it:

- the request is received with pyzmq from a Trio task and decoded with msgspec (our
  codec and :class:`~lattice_workers.protocol.aclient.TrioSocket`), and each request is
  handled in a task of its own (a Wait blocks; a server cannot answer in line);
- Run: a dict keyed by (task, worker) refuses a second live run of one key, the
  ``process_started`` event is written with :func:`bench_runs.bare_write` in a thread
  (the reply means the run is on the board), and the reply is sent; a task spawns
  ``bash -c true`` in a session of its own, waits for it, and writes
  ``process_completed`` the same way;
- Wait: waits for the run's end and answers it, then the end of the stream.

No validation, definitions, git, journal, log file, environment, process-group
kill, hooks or retention: it is not a supervisor, it is the floor plus the required
libraries. The bench drives it with the same client processes as the real
supervisor, so ``supervisor / ceiling`` is the share of the stack's best that our
code keeps, and ``ceiling / floor`` is what the stack itself costs.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path

import trio
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_runs import bare_write, run_event, spawn_true
from lattice_workers.protocol import (
    End,
    Error,
    Hello,
    HelloReply,
    Reply,
    Run,
    RunInfo,
    RunReply,
    Wait,
    decode_request,
    encode,
)
from lattice_workers.protocol.aclient import TrioSocket


class Ceiling:
    """The server's state: live runs by key, and every run's end by run id."""

    def __init__(
        self, sock: TrioSocket, lattice_dir: str, endpoint: str, snapshots: dict[str, bytes]
    ) -> None:
        self.sock = sock
        self.lattice_dir = lattice_dir
        self.endpoint = endpoint
        self.snapshots = snapshots  # each write puts its task's file back as it was
        self.live: dict[tuple[str, str], str] = {}
        self.ended: dict[str, trio.Event] = {}
        self.infos: dict[str, RunInfo] = {}
        self.numbers = itertools.count()

    def send(self, envelope: list[bytes], reply: Reply) -> None:
        self.sock.send_nowait([*envelope, encode(reply)])

    def write(self, task: str, started: str | None) -> str:
        event = run_event(task, started)
        bare_write(self.lattice_dir, task, self.snapshots[task], event)
        return str(event["id"])

    async def run(self, envelope: list[bytes], req: Run, nursery: trio.Nursery) -> None:
        key = (req.task, req.worker)
        if key in self.live:
            self.send(envelope, Error(rid=req.rid, code="ALREADY_RUNNING", message="live"))
            return
        run_id = f"run_{next(self.numbers):08d}"
        self.live[key] = run_id
        self.ended[run_id] = trio.Event()
        started = await trio.to_thread.run_sync(self.write, req.task, None)
        info = RunInfo(
            run_id=run_id, task_id=req.task, worker=req.worker, state="running", actor="agent:x"
        )
        self.infos[run_id] = info
        self.send(envelope, RunReply(rid=req.rid, run=info, created=True))
        nursery.start_soon(self.process, key, run_id, started)

    async def process(self, key: tuple[str, str], run_id: str, started: str) -> None:
        code = await spawn_true()
        await trio.to_thread.run_sync(self.write, key[0], started)
        info = self.infos[run_id]
        self.infos[run_id] = RunInfo(
            run_id=run_id, task_id=info.task_id, worker=info.worker, state="completed",
            actor=info.actor, exit_code=code,
        )  # fmt: skip
        del self.live[key]
        self.ended[run_id].set()

    async def wait(self, envelope: list[bytes], req: Wait) -> None:
        for run_id in req.run_ids:
            await self.ended[run_id].wait()
            self.send(envelope, RunReply(rid=req.rid, run=self.infos[run_id]))
        self.send(envelope, End(rid=req.rid))

    async def handle(self, frames: list[bytes], nursery: trio.Nursery) -> None:
        envelope, payload = frames[:-1], frames[-1]
        req = decode_request(payload)
        if isinstance(req, Hello):
            reply = HelloReply(
                rid=req.rid, protocol_version=req.v, server_version="ceiling", pid=os.getpid(),
                root=self.lattice_dir, socket=self.endpoint, started_at=time.time(),
            )  # fmt: skip
            self.send(envelope, reply)
        elif isinstance(req, Run):
            await self.run(envelope, req, nursery)
        elif isinstance(req, Wait):
            await self.wait(envelope, req)
        else:
            self.send(envelope, Error(rid=req.rid, code="INVALID_REQUEST", message="no"))

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                frames = await self.sock.recv()
                nursery.start_soon(self.handle, frames, nursery)


def read_snapshots(lattice_dir: str) -> dict[str, bytes]:
    """Every task's snapshot by task id, read before any timing (as the floor does)."""
    return {path.stem: path.read_bytes() for path in Path(lattice_dir, "tasks").glob("*.json")}


async def main(endpoint: str, lattice_dir: str) -> None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(endpoint)
        snapshots = await trio.to_thread.run_sync(read_snapshots, lattice_dir)
        ceiling = Ceiling(TrioSocket(sock), lattice_dir, endpoint, snapshots)
        print(json.dumps({"ready": os.getpid()}), flush=True)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ceiling.serve)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    finally:
        sock.close()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
