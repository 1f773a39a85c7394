"""Run changes, fanned out to subscribers (the ``Watch`` request) without ever waiting.

Each subscription queues the events it has not been sent yet, up to
:data:`MAX_PENDING`. Past that (a subscriber that does not read as fast as runs
change, so that ZeroMQ's queue to it is full and ours grows), the queue is compacted
to the latest event of each run, and the events dropped are counted in the next
event's ``lost``: a subscriber never makes the supervisor wait or grow without bound
(at most one event per run that changed), and is told what it missed. A run's last
event (``ended``) is never dropped: nothing comes after it to replace it.

Publishing appends to a deque and sets an event per subscriber, on the event loop,
from the places that change a run's state; it never awaits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
import trio

from lattice_workers.protocol._messages import RunInfo

#: The kinds of :class:`~lattice_workers.protocol.RunEvent`, in a run's order.
CURRENT, STARTED, STATE, ENDED = "current", "started", "state", "ended"
FINAL_STATES = frozenset({"completed", "failed"})
#: Events one subscription queues before it keeps only the latest of each run.
MAX_PENDING = 256


@dataclass
class Pending:
    kind: str
    run: RunInfo
    lost: int = 0


@dataclass(eq=False)
class Subscription:
    """One subscriber's events not yet sent, oldest first."""

    task_id: str | None
    pending: deque[Pending] = field(default_factory=deque)
    lost_total: int = 0
    wake: trio.Event = field(default_factory=trio.Event)

    def offer(self, kind: str, run: RunInfo) -> None:
        if self.task_id is not None and run.task_id != self.task_id:
            return
        # A copy: the run's record changes after this (and would change what we send).
        self.pending.append(Pending(kind, msgspec.structs.replace(run)))
        if len(self.pending) > MAX_PENDING:
            self._compact()
        self.wake.set()

    def take(self) -> list[Pending]:
        """Everything pending, oldest first; the subscription is then empty."""
        out = list(self.pending)
        self.pending.clear()
        self.wake = trio.Event()
        return out

    def put_back(self, unsent: Iterable[Pending]) -> None:
        """Events that could not be sent go back in front of those that came since."""
        self.pending.extendleft(reversed(list(unsent)))
        if len(self.pending) > MAX_PENDING:
            self._compact()
        if self.pending:
            self.wake.set()

    def _compact(self) -> None:
        """Keep the latest event of each run, in the order of those events."""
        latest: dict[str, Pending] = {}
        for event in self.pending:
            older = latest.pop(event.run.run_id, None)
            if older is not None:
                # A run the subscriber never saw stays "current" or "started".
                seen_first = older.kind in (CURRENT, STARTED) and event.kind == STATE
                event = Pending(
                    older.kind if seen_first else event.kind,
                    event.run,
                    older.lost + event.lost + 1,
                )
                self.lost_total += 1
            latest[event.run.run_id] = event
        self.pending = deque(latest.values())


class RunFeed:
    """The supervisor's subscribers. Closed once, at shutdown: each stream then ends."""

    def __init__(self) -> None:
        self.subscriptions: set[Subscription] = set()
        self.closed = trio.Event()
        self._all_gone = trio.Event()

    def subscribe(self, task_id: str | None, current: list[RunInfo]) -> Subscription:
        sub = Subscription(task_id)
        for run in current:
            sub.offer(CURRENT, run)
        self.subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)
        if self.closed.is_set() and not self.subscriptions:
            self._all_gone.set()

    def publish(self, run: RunInfo, kind: str | None = None) -> None:
        """``run`` changed: ``kind`` defaults to ``ended`` for a final state, else ``state``."""
        if not self.subscriptions:
            return
        kind = kind or (ENDED if run.state in FINAL_STATES else STATE)
        for sub in self.subscriptions:
            sub.offer(kind, run)

    async def close(self) -> None:
        """End every subscription: each sends what it has pending, then its End."""
        self.closed.set()
        for sub in self.subscriptions:
            sub.wake.set()
        if self.subscriptions:
            await self._all_gone.wait()
