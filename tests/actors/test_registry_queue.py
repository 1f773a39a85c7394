"""The queue policy of the registry, alone: stand-in actors that start when admitted
and end when the test says so, no processes, no files, no git.

What is specified: a global cap and per-worker caps; first in, first out among the
runs that may start; a worker at its cap never holds back another worker's runs; a
cap raised on reload admits at once, a lowered one stops nothing; a queued run that
is cancelled leaves the queue without starting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from trio_util import AsyncValue

from lattice_workers.actors._definitions import LoadedWorker, WorkerDefinition
from lattice_workers.actors._record import RunRecord
from lattice_workers.actors._registry import Registry
from lattice_workers.actors._state import Reason, RunState
from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol._messages import Run, RunInfo


class StandIn:
    """A run actor's contract with the registry, and nothing else: it waits for its
    admission, then "runs" until :meth:`finish` (or a cancel), and reports its exit."""

    def __init__(self, ctx: Any, record: RunRecord, worker: LoadedWorker, request: Any,
                 seq: int, *, on_exit: Any, wait_admitted: Any, **_: Any) -> None:
        self.ctx, self.record, self.worker = ctx, record, worker
        self.request, self.seq = request, seq
        self.definition = worker.definition
        self._on_exit, self._wait_admitted = on_exit, wait_admitted
        self.admitted = False
        self.accept_recorded = False
        self.recorded = trio.Event()
        self.state = AsyncValue(RunState.QUEUED)
        self.started = False
        self.cancelled: Reason | None = None
        self._done = trio.Event()

    @property
    def key(self) -> tuple[str, str]:
        return (self.record.task_id, self.worker.name.lower())

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def view(self, queue_position: int | None = None) -> RunInfo:
        return self.record.view(queue_position)

    def cancel(self, reason: Reason = Reason.CANCELLED) -> None:
        self.cancelled = self.cancelled or reason
        self._done.set()

    def finish(self) -> None:
        self._done.set()

    async def run(self) -> None:
        try:
            await self._wait_admitted(self)
            if self.cancelled is None:
                self.started = True
                self.ctx.started.append(self.record.task_id)
                self.record.state = RunState.RUNNING
                self.recorded.set()
                await self._done.wait()
            self.record.state = RunState.FAILED if self.cancelled else RunState.COMPLETED
        finally:
            self.recorded.set()
            self.state.value = self.record.state if self.started else RunState.FAILED
            self._on_exit(self)


class QueueOnly(Registry):
    """The registry with validation answered from a table instead of files and git."""

    caps: dict[str, int | None]

    async def _validate(self, req: Run, client_env: Any = None) -> Any:
        cap = self.caps[req.worker]
        definition = WorkerDefinition(
            name=req.worker, engine="script", command="true", max_concurrent=cap
        )
        worker = LoadedWorker(req.worker, Path(f"workers/{req.worker}.json"), definition, [])
        return worker, req.task, None, "agent:test", None, None, None


class Journal:
    def __init__(self) -> None:
        self.written: list[Any] = []
        self.appended = 0

    def write(self, record: Any, *, durable: bool = False) -> None:
        self.written.append(record)


@asynccontextmanager
async def registry(max_concurrent: int, **caps: int | None) -> AsyncIterator[QueueOnly]:
    ctx = SimpleNamespace(journal=Journal(), started=[], on_state=lambda info, kind: None)
    reg = QueueOnly(ctx, max_concurrent=max_concurrent, actor_class=StandIn)  # type: ignore[arg-type]
    reg.caps = caps
    async with trio.open_nursery() as nursery:
        await nursery.start(reg.serve)
        yield reg
        for run in list(reg.live.values()):
            run.finish()  # type: ignore[attr-defined]
        await reg.live_count.wait_value(0)
        nursery.cancel_scope.cancel()


async def submit(reg: QueueOnly, worker: str, task: str) -> StandIn:
    run, created = await reg.submit(Run(worker=worker, task=task))
    assert created
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(run, StandIn)
    return run


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def started(reg: QueueOnly) -> list[str]:
    return list(reg.ctx.started)  # type: ignore[attr-defined]


def queued(reg: QueueOnly) -> list[tuple[str, int | None]]:
    return [(i.task_id, i.queue_position) for i in reg.ps() if i.state == "queued"]


async def test_the_global_cap_holds_runs_back_until_a_slot_frees() -> None:
    async with registry(2, A=None, B=None, C=None) as reg:
        a, _b = await submit(reg, "A", "t1"), await submit(reg, "B", "t2")
        await submit(reg, "C", "t3")
        await submit(reg, "A", "t4")
        assert started(reg) == ["t1", "t2"]
        assert queued(reg) == [("t3", 1), ("t4", 2)]
        a.finish()
        await settle()
        assert started(reg) == ["t1", "t2", "t3"]
        assert queued(reg) == [("t4", 1)]


async def test_a_worker_cap_holds_back_only_that_worker_with_slots_to_spare() -> None:
    async with registry(8, A=1, B=None) as reg:
        a1 = await submit(reg, "A", "t1")
        await submit(reg, "A", "t2")
        await submit(reg, "B", "t3")
        assert started(reg) == ["t1", "t3"]
        assert queued(reg) == [("t2", 1)]
        a1.finish()
        await settle()
        assert started(reg) == ["t1", "t3", "t2"]


async def test_runs_start_first_in_first_out() -> None:
    async with registry(1, A=None, B=None) as reg:
        runs = [await submit(reg, "AB"[i % 2], f"t{i}") for i in range(5)]
        for run in runs:
            run.finish()
            await settle()
        assert started(reg) == [f"t{i}" for i in range(5)]


async def test_a_capped_worker_at_the_head_of_the_queue_never_blocks_another() -> None:
    async with registry(2, A=1, B=None) as reg:
        a1 = await submit(reg, "A", "t1")
        await submit(reg, "A", "t2")  # first in the queue, but A is at its cap
        await submit(reg, "B", "t3")  # starts past it: a slot is free and B may take it
        assert started(reg) == ["t1", "t3"]
        await submit(reg, "B", "t4")  # the global cap now holds it
        assert queued(reg) == [("t2", 1), ("t4", 2)]
        a1.finish()
        await settle()
        # The slot goes to the oldest that may start: t2, now that A is under its cap.
        assert started(reg) == ["t1", "t3", "t2"]
        assert queued(reg) == [("t4", 1)]


async def test_a_raised_cap_admits_queued_runs_at_once() -> None:
    async with registry(1, A=None) as reg:
        for i in range(4):
            await submit(reg, "A", f"t{i}")
        assert started(reg) == ["t0"]
        reg.set_limits(max_concurrent=3, keep_finished=10, keep_finished_seconds=60)
        await settle()
        # Both admitted in one step, the oldest two; which task Trio wakes first is its own.
        assert sorted(started(reg)) == ["t0", "t1", "t2"]
        assert queued(reg) == [("t3", 1)]


async def test_a_lowered_cap_stops_nothing_and_admits_only_under_it() -> None:
    async with registry(3, A=None) as reg:
        runs = [await submit(reg, "A", f"t{i}") for i in range(5)]
        assert started(reg) == ["t0", "t1", "t2"]
        reg.set_limits(max_concurrent=1, keep_finished=10, keep_finished_seconds=60)
        await settle()
        assert all(r.started and r.cancelled is None for r in runs[:3])  # none stopped
        runs[0].finish()
        runs[1].finish()
        await settle()
        assert started(reg) == ["t0", "t1", "t2"]  # two run still: one over the cap
        runs[2].finish()
        await settle()
        assert started(reg) == ["t0", "t1", "t2", "t3"]
        assert queued(reg) == [("t4", 1)]


async def test_a_cancelled_queued_run_leaves_the_queue_without_starting() -> None:
    async with registry(1, A=None) as reg:
        first = await submit(reg, "A", "t1")
        second = await submit(reg, "A", "t2")
        await submit(reg, "A", "t3")
        assert queued(reg) == [("t2", 1), ("t3", 2)]
        reg.cancel(second)  # type: ignore[arg-type]
        await settle()
        assert not second.started and second.cancelled is Reason.CANCELLED
        assert second.run_id not in reg.by_id and second.key not in reg.live
        assert queued(reg) == [("t3", 1)]
        assert started(reg) == ["t1"]  # its leaving started nothing: the slot is t1's
        # The journal holds its acceptance only (the actor writes nothing to the board).
        journaled = [r.run.run_id for r in reg.ctx.journal.written]  # type: ignore[attr-defined]
        assert second.run_id in journaled
        first.finish()
        await settle()
        assert started(reg) == ["t1", "t3"]


async def test_a_second_run_of_a_live_key_is_refused_queued_or_running() -> None:
    async with registry(1, A=None) as reg:
        await submit(reg, "A", "t1")
        await submit(reg, "A", "t2")
        for task in ("t1", "t2"):
            with pytest.raises(LatticeError) as err:
                await reg.submit(Run(worker="A", task=task))
            assert err.value.code == Code.ALREADY_RUNNING
