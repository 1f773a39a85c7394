"""A run as the supervisor keeps it, and the wire's view of it.

:class:`RunRecord` is the domain state: what a run is (its key, its commit, who asked),
the facts of its current attempt, its state as a :class:`RunState`, and an
:class:`Ending` that exists only once the run has ended. Only the run's own actor (and
the registry, while the run is queued) changes it. The wire type
:class:`~lattice_workers.protocol._messages.RunInfo` is a view built from it by
:meth:`RunRecord.view` for a reply, the ``Watch`` feed and the journal; nothing mutates
a view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lattice_workers.actors._state import Reason, RunState
from lattice_workers.protocol._messages import RunInfo


@dataclass(slots=True)
class Outcome:
    """How an attempt ended, before it is written: becomes its terminal event."""

    reason: Reason | None  # None means success
    error: str = ""
    exit_code: int | None = None
    signal: int | None = None


@dataclass(slots=True)
class Ending:
    """How an attempt, and then its run, ended: what its terminal event said."""

    at: float
    reason: str | None = None  # None: success
    error: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    duration_seconds: float | None = None
    result: dict[str, Any] | None = None
    log_tail: str | None = None
    #: What the attempt changed in its workspace, kept (see actors/_keep.py).
    changes: dict[str, Any] | None = None
    #: An agent attempt's ``agent`` object (engines: model, tokens, cost, error kind).
    agent: dict[str, Any] | None = None


@dataclass(slots=True)
class AttemptFacts:
    """The current (or last) attempt: one ``process_started`` and what it named."""

    number: int = 1
    started_event_id: str | None = None
    log_path: str | None = None
    worktree_path: str | None = None
    pid: int | None = None
    #: The cluster node that runs the attempt (a Ray executor's), else None.
    node: str | None = None
    started_at: float | None = None
    #: Set once the attempt's terminal event is written (or it ended without one).
    ended: Ending | None = None


@dataclass(slots=True)
class RunRecord:
    """One run, from its acceptance to its end (see the module docstring)."""

    run_id: str
    task_id: str
    worker: str
    actor: str
    state: RunState = RunState.QUEUED
    short_id: str | None = None
    requested_by: str | None = None
    commit_sha: str | None = None
    base_ref: str | None = None
    merge_base: str | None = None
    created_at: float = 0.0
    idempotency_key: str | None = None
    attempt: AttemptFacts = field(default_factory=AttemptFacts)
    #: Exists once the run has ended: its last attempt's ending, or why it never started.
    ended: Ending | None = None

    def view(self, queue_position: int | None = None) -> RunInfo:
        """The run for the wire and the journal, as it is now."""
        attempt = self.attempt
        end = self.ended or attempt.ended
        return RunInfo(
            run_id=self.run_id,
            task_id=self.task_id,
            worker=self.worker,
            state=str(self.state),
            actor=self.actor,
            short_id=self.short_id,
            attempt=attempt.number,
            queue_position=queue_position,
            requested_by=self.requested_by,
            commit_sha=self.commit_sha,
            base_ref=self.base_ref,
            merge_base=self.merge_base,
            worktree_path=attempt.worktree_path,
            log_path=attempt.log_path,
            started_event_id=attempt.started_event_id,
            pid=None if self.state.is_final else attempt.pid,
            created_at=self.created_at,
            started_at=attempt.started_at,
            ended_at=end.at if end else None,
            duration_seconds=end.duration_seconds if end else None,
            exit_code=end.exit_code if end else None,
            signal=end.signal if end else None,
            reason=end.reason if end else None,
            error=end.error if end else None,
            result=end.result if end else None,
            idempotency_key=self.idempotency_key,
            log_tail=end.log_tail if end else None,
            changes=end.changes if end else None,
            agent=end.agent if end else None,
            node=attempt.node,
        )

    @classmethod
    def from_view(cls, info: RunInfo) -> RunRecord:
        """A record again from its journaled view (a run queued by a previous supervisor)."""
        ended = None
        if info.ended_at is not None or info.reason is not None:
            ended = Ending(
                at=info.ended_at or 0.0,
                reason=info.reason,
                error=info.error,
                exit_code=info.exit_code,
                signal=info.signal,
                duration_seconds=info.duration_seconds,
                result=info.result,
                log_tail=info.log_tail,
                changes=info.changes,
                agent=info.agent,
            )
        state = RunState(info.state)
        return cls(
            run_id=info.run_id,
            task_id=info.task_id,
            worker=info.worker,
            actor=info.actor,
            state=state,
            short_id=info.short_id,
            requested_by=info.requested_by,
            commit_sha=info.commit_sha,
            base_ref=info.base_ref,
            merge_base=info.merge_base,
            created_at=info.created_at,
            idempotency_key=info.idempotency_key,
            attempt=AttemptFacts(
                number=info.attempt,
                started_event_id=info.started_event_id,
                log_path=info.log_path,
                worktree_path=info.worktree_path,
                pid=info.pid,
                started_at=info.started_at,
                ended=None if state.is_final else ended,
            ),
            ended=ended if state.is_final else None,
        )
