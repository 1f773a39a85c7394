"""The states of a run and the reasons it can fail (SPEC sections 3 and 4)."""

from __future__ import annotations

import enum


class RunState(enum.StrEnum):
    """``queued -> preparing -> running -> stopping -> completed | failed``."""

    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (RunState.COMPLETED, RunState.FAILED)


class Reason(enum.StrEnum):
    """``process_failed.reason``: why a run did not succeed."""

    EXIT_NONZERO = "exit_nonzero"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    WORKTREE_ERROR = "worktree_error"
    SPAWN_ERROR = "spawn_error"
    SUPERVISOR_SHUTDOWN = "supervisor_shutdown"
    ORPHANED = "orphaned"
    #: An agent went past its cost or turn limit and was stopped (SPEC section 9).
    BUDGET_EXCEEDED = "budget_exceeded"
    #: The cluster node that ran it died or stopped answering (a Ray executor).
    NODE_LOST = "node_lost"
