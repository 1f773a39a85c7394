"""One run of one worker on one task: from the queue, through its attempts, to its end.

A :class:`RunActor` is a Trio task in the registry's nursery. It spans the run's
attempts: it waits for the registry to admit it, runs one
:class:`~lattice_workers.actors._attempt.Attempt` after another while the definition's
``retries`` allow (after ``exit_nonzero`` or ``timeout`` only, never after a cancel),
and ends the run as its last attempt ended. It never touches a process or a file: each
attempt owns its resources, and its ``end`` is the only way to its terminal event
(read :meth:`Attempt.end <lattice_workers.actors._attempt.Attempt.end>` for where a run
ends and its terminal event is written). :meth:`RunActor._finish` then makes the
final state visible.

State is a :class:`trio_util.AsyncValue`: waiters (``Wait``, ``--wait``, the
shutdown path) wait on it instead of polling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio
from trio_util import AsyncValue

from lattice_workers.actors._attempt import CLEANUP_SECONDS, Attempt
from lattice_workers.actors._context import RunContext
from lattice_workers.actors._definitions import LoadedWorker, WorkerDefinition
from lattice_workers.actors._environment import client_base
from lattice_workers.actors._journal import JournalRecord, RunRequest
from lattice_workers.actors._record import Ending, Outcome, RunRecord
from lattice_workers.actors._state import Reason, RunState
from lattice_workers.protocol._messages import RunInfo

log = logging.getLogger("lattice_workers.supervisor.run")


class RunActor:
    """The task that owns one run. Created and started only by the registry."""

    def __init__(
        self,
        ctx: RunContext,
        record: RunRecord,
        worker: LoadedWorker,
        request: RunRequest,
        seq: int,
        *,
        on_exit: Callable[[RunActor], None],
        wait_admitted: Callable[[RunActor], Awaitable[None]],
        client_env: dict[str, str] | None = None,
        requeued: bool = False,
    ) -> None:
        assert worker.definition is not None
        self.ctx = ctx
        self.record = record
        self.worker = worker
        self.definition: WorkerDefinition = worker.definition
        self.request = request
        #: The requesting client's environment (held in memory only, never journaled),
        #: else the supervisor's.
        self.base_env = (
            ctx.environ if client_env is None else client_base(client_env, ctx.path_extras)
        )
        #: Queued by a previous supervisor, requeued by recovery: the client's
        #: environment is gone with it (the log says so).
        self.requeued = requeued
        self.seq = seq
        self.state: AsyncValue[RunState] = AsyncValue(record.state)
        self._on_exit = on_exit
        self._wait_admitted = wait_admitted
        #: Why the run was asked to end (cancel, shutdown), once it was.
        self.cancel_reason: Reason | None = None
        #: The wait a cancel interrupts: an attempt's worker, or the backoff between two.
        self.wait_scope: trio.CancelScope | None = None
        #: The current attempt, then the last one.
        self.attempt: Attempt | None = None
        #: Set by the registry when the run leaves the queue and holds a slot.
        self.admitted = False
        #: Whether the journal already holds the acceptance durably (the registry wrote
        #: it for a queued run); if not, the run's first write does.
        self.accept_recorded = False
        #: Set once the run is recorded (its first write) or has ended without one.
        self.recorded = trio.Event()

    # ------------------------------------------------------------------ identity

    @property
    def key(self) -> tuple[str, str]:
        return (self.record.task_id, self.worker.name.lower())

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def view(self, queue_position: int | None = None) -> RunInfo:
        """The run for the wire, as it is now."""
        return self.record.view(queue_position)

    def set_state(self, state: RunState) -> None:
        self.record.state = state
        self.state.value = state
        self.ctx.on_state(self.record.view(), None)

    # ------------------------------------------------------------------ control

    def cancel(self, reason: Reason = Reason.CANCELLED) -> None:
        """Ask the run to end. Idempotent; the actor does the stopping."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self.wait_scope is not None:
            self.wait_scope.cancel()

    def cancel_sentence(self, reason: Reason | None = None) -> str:
        """Why a started attempt was stopped: ``reason``, else the run's cancel reason."""
        if (reason or self.cancel_reason) is Reason.SUPERVISOR_SHUTDOWN:
            return "the supervisor shut down while the run was in progress"
        return "the run was cancelled on request"

    @property
    def log_cut(self) -> int | None:
        """Where the log's marker line is once its middle was dropped (``log_max_mib``):
        a follower past the end of a log that shrank goes on from there."""
        execution = self.attempt.execution if self.attempt is not None else None
        return execution.log_cut if execution is not None else None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """The whole life of the run. Never raises except ``Cancelled``."""
        try:
            await self._wait_admitted(self)
            number = self.record.attempt.number
            while self.cancel_reason is None:
                attempt = self.attempt = Attempt(self, number)
                async with attempt:  # its end, shielded and bounded, however it ends
                    await attempt.execute()
                    attempt.final = not self._should_retry(attempt.outcome)
                if attempt.final:
                    break
                backoff = self.definition.retry_backoff_seconds * (2 ** (number - 1))
                with trio.CancelScope(deadline=trio.current_time() + backoff) as scope:
                    self.wait_scope = scope
                    if self.cancel_reason is None:
                        await trio.sleep_forever()
                self.wait_scope = None
                number += 1
        except Exception:  # a bug of ours: the attempt's end has closed it on the record
            log.exception("run %s: unexpected error", self.run_id)
        finally:
            with trio.move_on_after(CLEANUP_SECONDS) as s:
                s.shield = True
                await self._finish()
            if s.cancelled_caught:
                log.error("run %s: its last record did not finish in time", self.run_id)
            self.recorded.set()
            self._on_exit(self)

    def _should_retry(self, outcome: Outcome | None) -> bool:
        return (
            self.cancel_reason is None
            and outcome is not None
            and outcome.reason in (Reason.EXIT_NONZERO, Reason.TIMEOUT)
            and self.record.attempt.number <= self.definition.retries
        )

    async def _finish(self) -> None:
        """The run has ended as its last attempt ended (or never started): record it."""
        record = self.record
        attempt = self.attempt
        ending = attempt.facts.ended if attempt is not None else None
        if ending is None and attempt is not None and attempt.facts.started_event_id:
            # Its end did not finish in time (a hung git, a stuck disk): the board still
            # shows it open, and recovery or `doctor --fix` closes it there.
            reason = self.cancel_reason or Reason.SUPERVISOR_SHUTDOWN
            ending = Ending(
                at=time.time(),
                reason=str(reason),
                error="the attempt's end did not finish in time; its terminal event is "
                "written by the next start's recovery or by `doctor --fix`",
            )
        elif ending is None:
            # Never left the queue (or its attempt never got as far as the board).
            reason = self.cancel_reason or Reason.SUPERVISOR_SHUTDOWN
            ending = Ending(
                at=time.time(),
                reason=str(reason),
                error="cancelled while queued"
                if reason is Reason.CANCELLED
                else "the supervisor shut down before the run started",
            )
        record.ended = ending
        record.state = RunState.COMPLETED if ending.reason is None else RunState.FAILED
        if attempt is None or not attempt.journaled:
            await trio.to_thread.run_sync(self._journal_quietly)
        self.state.value = record.state
        self.ctx.on_state(record.view(), None)

    def _journal_quietly(self) -> None:
        """The run's record in the journal (blocking); a failure is logged: the board is
        the record that matters, and recovery reads it."""
        execution = self.attempt.execution if self.attempt is not None else None
        entry = JournalRecord(
            seq=self.seq,
            run=self.record.view(),
            request=self.request,
            pid_start_time=execution.start_time if execution is not None else None,
        )
        try:
            self.ctx.journal.write(entry)
        except OSError:
            log.exception("run %s: could not write the journal", self.run_id)
