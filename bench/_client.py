"""A benchmark client in a process of its own, driven over a multiprocessing pipe.

:func:`serve_jobs` connects with the real synchronous
:class:`~lattice_workers.protocol.client.Client`, says Hello (connection set-up is not
measured), sends ``"ready"``, then answers one job per message. The job message is
also the start signal, so a driver releases many clients at once by sending to each
of them. Times are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every process on
the machine), so the driver can compare the first request of one client with the
last answer of another. The processes are forked from a forkserver that has already
imported this module and the client (see ``_pool``): fifty clients start in well
under a second instead of fifty Python start-ups.

Jobs:
- ``{"job": "runs", "pairs": [[worker, task], ...]}``: for each pair, Run then Wait
  (a closed loop: one run in flight per client); latencies of Run -> accepted reply.
- ``{"job": "run", "worker": W, "task": T}``: one Run; whether it created the run.
- ``{"job": "ps", "count": N}``: N Ps requests; their latencies.
"""

from __future__ import annotations

import time
from typing import Any


def run_pairs(client: Any, pairs: list[list[str]]) -> dict[str, Any]:
    from lattice_workers.protocol import Run, RunReply, Wait

    latencies: list[float] = []
    states: dict[str, int] = {}
    first = last = time.monotonic()
    for i, (worker, task) in enumerate(pairs):
        t0 = time.monotonic()
        if i == 0:
            first = t0
        reply = client.request(Run(worker=worker, task=task, requested_by="human:bench"))
        latencies.append((time.monotonic() - t0) * 1000)
        assert isinstance(reply, RunReply)
        for done in client.stream(Wait(run_ids=[reply.run.run_id]), timeout=120):
            assert isinstance(done, RunReply)
            states[done.run.state] = states.get(done.run.state, 0) + 1
        last = time.monotonic()
    return {"latencies_ms": latencies, "first": first, "last": last, "states": states}


def run_once(client: Any, worker: str, task: str) -> dict[str, Any]:
    from lattice_workers.errors import LatticeError
    from lattice_workers.protocol import Run, RunReply

    t0 = time.monotonic()
    try:
        reply = client.request(Run(worker=worker, task=task, requested_by="human:bench"))
    except LatticeError as err:
        return {"code": str(err.code), "ms": (time.monotonic() - t0) * 1000, "t0": t0}
    assert isinstance(reply, RunReply)
    return {
        "code": "OK",
        "created": reply.created,
        "run_id": reply.run.run_id,
        "ms": (time.monotonic() - t0) * 1000,
        "t0": t0,
    }


def run_ps(client: Any, count: int) -> dict[str, Any]:
    from lattice_workers.protocol import Ps, PsReply

    latencies = []
    runs = 0
    for _ in range(count):
        t0 = time.monotonic()
        reply = client.request(Ps())
        latencies.append((time.monotonic() - t0) * 1000)
        assert isinstance(reply, PsReply)
        runs = len(reply.runs)
    return {"latencies_ms": latencies, "runs": runs}


def serve_jobs(conn: Any, endpoint: str) -> None:
    """The client process: answer jobs from ``conn`` until it closes."""
    from lattice_workers.protocol import Hello
    from lattice_workers.protocol.client import Client

    with Client(endpoint, timeout=120) as client:
        for _ in range(3):
            client.request(Hello(client="bench"))
        conn.send("ready")
        while True:
            try:
                job = conn.recv()
            except EOFError:
                return
            if job["job"] == "runs":
                out = run_pairs(client, job["pairs"])
            elif job["job"] == "run":
                out = run_once(client, job["worker"], job["task"])
            elif job["job"] == "ps":
                out = run_ps(client, job["count"])
            else:
                out = {"error": f"unknown job {job['job']!r}"}
            conn.send(out)


def preload() -> None:
    """What the forkserver imports once for every client it forks."""
    import lattice_workers.protocol.client  # noqa: F401
