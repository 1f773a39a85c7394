"""The canonical write path: the only code that appends to a task's log.

Under the task's locks (sorted ``flock``s, ``_locks``) it rebuilds the task's current state
*from the log*, lets the caller check it, builds the new events from it, applies
them, appends them durably (plus the lifecycle copy), rewrites the snapshot
atomically, and only then releases the locks. Hooks run afterwards, outside.

Why replay instead of trusting ``tasks/<id>.json``: ``lattice-tracker`` computes the
snapshot it writes from a read made *before* it takes its locks, so after a race
the file can silently miss another writer's update (an ``active_processes`` entry,
a comment count). Those lost updates are invisible from the file alone. Replaying
the log under the lock makes every snapshot written here equal to the replay of its
log, whatever wrote before; it is incremental, so a process parses only the lines
added since it last read the log (``_replay_cache``). Keys of the old file that
replay does not produce are carried over, so a newer tool's additions survive our
writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store._ids import (
    new_id,
    utc_now,
    validate_actor,
    validate_event_id,
    validate_event_type,
)
from lattice_workers.store._jsonio import (
    append_durable,
    atomic_write_bytes,
    dumps_event,
    dumps_pretty,
)
from lattice_workers.store._locks import locked, task_lock_keys
from lattice_workers.store._materialize import LIFECYCLE_TYPES, EventError, apply_event
from lattice_workers.store._replay_cache import (
    read_snapshot_file,
    remember_snapshot_file,
    replay_log,
)

if TYPE_CHECKING:
    from lattice_workers.store._board import Board

Check = Callable[[dict[str, Any]], None]

_META_KEYS = ("model", "session")
_PROVENANCE_KEYS = ("triggered_by", "on_behalf_of", "reason")


@dataclass
class NewEvent:
    """An event to write: everything but the id, timestamp and task, which the store adds."""

    type: str
    data: Mapping[str, Any]
    actor: str
    agent_meta: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    #: A caller may choose the id (``ev_<ULID>``) beforehand, e.g. to name a log file.
    id: str | None = None
    _valid: bool = field(default=False, init=False, repr=False, compare=False)

    def validate(self) -> None:
        """Refuse a malformed event before any lock is taken (checked once per event)."""
        if self._valid:
            return
        validate_event_type(self.type)
        if self.id is not None:
            self.id = validate_event_id(self.id)
        validate_actor(self.actor)
        if not isinstance(self.data, dict):
            raise LatticeError(Code.INVALID_ARGUMENT, f"{self.type} data must be a JSON object")
        for name, given, allowed in (
            ("agent_meta", self.agent_meta, _META_KEYS),
            ("provenance", self.provenance, _PROVENANCE_KEYS),
        ):
            if given is None:
                continue
            if not isinstance(given, dict) or set(given) - set(allowed):
                raise LatticeError(
                    Code.INVALID_ARGUMENT,
                    f"{name} may only have the keys {', '.join(allowed)}, got {given!r}",
                )
        behalf = (self.provenance or {}).get("on_behalf_of")
        if behalf is not None:
            validate_actor(behalf)
        dumps_event(self.data)  # refuses NaN and non-JSON values now, not under the lock
        self._valid = True

    def build(self, task_id: str, ts: str) -> dict[str, Any]:
        """The full event envelope as Lattice stores it."""
        event: dict[str, Any] = {
            "schema_version": 1,
            "id": self.id or new_id("ev"),
            "ts": ts,
            "type": self.type,
            "task_id": task_id,
            "actor": self.actor,
            "data": self.data,
        }
        meta = self.agent_meta or {}
        if any(meta.get(k) is not None for k in _META_KEYS):
            event["agent_meta"] = {k: meta.get(k) for k in _META_KEYS}
        prov = {k: v for k, v in (self.provenance or {}).items() if v is not None}
        if prov:
            event["provenance"] = prov
        return event


@dataclass
class WriteResult:
    """What a write wrote: its events in order and the task's snapshot afterwards.

    ``event`` is the last event written, or ``{}`` when the write was a no-op (a
    move to the status the task already has); ``written`` tells the two apart.
    """

    events: list[dict[str, Any]]
    snapshot: dict[str, Any]

    @property
    def event(self) -> dict[str, Any]:
        return self.events[-1] if self.events else {}

    @property
    def written(self) -> bool:
        return bool(self.events)


def current_state(board: Board, task_id: str) -> tuple[dict[str, Any] | None, Set[str] | None]:
    """The task's snapshot as the replay of its log, and its event ids (None: no log).

    The replay is incremental (:mod:`._replay_cache`): only lines added since this
    process last read the log are parsed. Falls back to the snapshot file when the log
    cannot give one (its ``task_created`` line is unreadable); carries over unknown
    keys of the file (decoded only when it changed, or holds such a key). The caller
    holds the task's locks.
    """
    replayed = replay_log(board.events_file(task_id))
    file = read_snapshot_file(board.snapshot_file(task_id))
    if replayed is None or replayed.snapshot is None:
        return (file.decoded() if file else None), (replayed.ids if replayed else None)
    snap = replayed.snapshot
    if file is not None and not file.keys <= snap.keys():
        for key, value in (file.decoded() or {}).items():
            snap.setdefault(key, value)
    return snap, replayed.ids


def locked_write(
    board: Board,
    task_id: str,
    make: Callable[[dict[str, Any] | None], list[NewEvent]],
    *,
    types: Iterable[str],
    creating: bool = False,
    extra_keys: Iterable[str] = (),
    check: Check | None = None,
    commit: Callable[[list[dict[str, Any]]], None] | None = None,
) -> WriteResult:
    """Run one canonical write of ``task_id``.

    ``types`` are the event types ``make`` may return (they decide whether the
    lifecycle lock is needed); ``make`` builds the events from the current snapshot
    inside the locks and may return none. ``commit`` runs after the snapshot is
    written, still inside the locks (``create_task`` saves ``ids.json`` there).
    """
    if not creating and not board.task_exists(task_id):  # before any lock file is made
        raise LatticeError(Code.NOT_FOUND, f"task {task_id} does not exist on this board")
    lifecycle = any(t in LIFECYCLE_TYPES for t in types)
    keys = [*task_lock_keys(task_id, lifecycle=lifecycle), *extra_keys]
    with locked(board.locks_dir, keys):
        snap, existing = current_state(board, task_id)
        if creating and (snap is not None or existing is not None):
            raise LatticeError(Code.CONFLICT, f"task {task_id} already exists")
        if not creating and snap is None:
            raise LatticeError(Code.NOT_FOUND, f"task {task_id} does not exist on this board")
        if check is not None and snap is not None:
            check(snap)
        planned = make(snap)
        if not planned:
            assert snap is not None
            return WriteResult([], snap)
        for item in planned:
            item.validate()
        chosen = {item.id for item in planned if item.id}
        if existing is not None and chosen & existing:
            raise LatticeError(
                Code.CONFLICT, f"task {task_id} already has an event with id {sorted(chosen)[0]}"
            )
        ts = utc_now()
        events = [item.build(task_id, ts) for item in planned]
        for event in events:
            try:
                snap = apply_event(snap, event)
            except EventError as err:
                msg = f"cannot write {event['type']}: {err}"
                raise LatticeError(Code.INVALID_ARGUMENT, msg) from None
        assert snap is not None
        append_durable(
            board.events_file(task_id), "".join(dumps_event(e) for e in events).encode("ascii")
        )
        lifecycle_lines = [dumps_event(e) for e in events if e["type"] in LIFECYCLE_TYPES]
        if lifecycle_lines:
            append_durable(board.lifecycle_path, "".join(lifecycle_lines).encode("ascii"))
        snapshot_file = board.snapshot_file(task_id)
        text = dumps_pretty(snap).encode("utf-8")
        atomic_write_bytes(snapshot_file, text)
        remember_snapshot_file(snapshot_file, snap, text)
        if commit is not None:
            commit(events)
    return WriteResult(events, snap)
