"""Snapshot materialization: the one function that turns events into a task snapshot.

The snapshot is a cache of the event log; :func:`replay` is the truth, and both the
write path and ``rebuild`` use it, so a snapshot written here always equals the
replay of its log.

The effects are those of ``lattice-format.md`` (``artifact_refs``,
``active_processes``, ...) *plus* the keys ``lattice-tracker`` 0.2 derives
(``evidence_refs``, ``comment_count``, ``done_at``, ``last_status_changed_at``,
``reopened_count``), computed exactly as it computes them. Both tools can then read
each other's snapshots without surprises: the tracker's ``show``, completion
policies and ``doctor`` see what its own replay would give, and ours see the
format's keys.

Nothing here raises on bad content: an event that cannot be applied is skipped and
described, because one bad line must not hide a task.
"""

from __future__ import annotations

from typing import Any, cast

from lattice_workers.store._run_events import (
    PROCESS_COMPLETED,
    PROCESS_FAILED,
    PROCESS_STARTED,
    ProcessEnded,
    ProcessStarted,
)
from lattice_workers.store._workflow import STATUSES

#: Fields ``field_updated`` may not set (the list ``lattice-tracker`` enforces).
PROTECTED_FIELDS = frozenset(
    {
        "schema_version",
        "id",
        "short_id",
        "created_at",
        "created_by",
        "updated_at",
        "done_at",
        "last_event_id",
        "last_status_changed_at",
        "status",
        "assigned_to",
        "relationships_out",
        "evidence_refs",
        "branch_links",
        "comment_count",
        "reopened_count",
        "custom_fields",
    }
)

LIFECYCLE_TYPES = frozenset({"task_created", "task_archived", "task_unarchived"})

# The order the tracker uses to count a move "backwards" as a reopening.
_STATUS_RANK = {s: i for i, s in enumerate(STATUSES)}


class EventError(ValueError):
    """An event that cannot be applied to the snapshot (it is skipped and reported)."""


def _new_snapshot(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    if not isinstance(data, dict):
        raise EventError("task_created has no data object")
    ts = event.get("ts")
    snap: dict[str, Any] = {
        "schema_version": 1,
        "id": event.get("task_id"),
        "title": data.get("title"),
        "status": data.get("status"),
        "priority": data.get("priority"),
        "urgency": data.get("urgency"),
        "complexity": data.get("complexity"),
        "type": data.get("type"),
        "description": data.get("description"),
        "tags": data.get("tags"),
        "assigned_to": data.get("assigned_to"),
        "created_by": event.get("actor"),
        "created_at": ts,
        "updated_at": ts,
        "relationships_out": [],
        "artifact_refs": [],
        "branch_links": [],
        "active_processes": [],
        "custom_fields": data.get("custom_fields") or {},
        # derived keys of lattice-tracker 0.2
        "evidence_refs": [],
        "comment_count": 0,
        "reopened_count": 0,
        "done_at": ts if data.get("status") == "done" else None,
        "last_status_changed_at": ts,
    }
    if data.get("short_id") is not None:
        snap["short_id"] = data["short_id"]
    return snap


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    if not isinstance(data, dict):
        raise EventError(f"{event.get('type')} has no data object")
    return data


def _need(data: dict[str, Any], key: str, etype: str) -> Any:
    if key not in data:
        raise EventError(f"{etype} has no {key!r} in its data")
    return data[key]


def _status_changed(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = _data(event)
    new = _need(data, "to", "status_changed")
    old = data.get("from")
    if (
        isinstance(old, str)
        and isinstance(new, str)
        and -1 < _STATUS_RANK.get(new, -1) < _STATUS_RANK.get(old, -1)
    ):
        snap["reopened_count"] = snap.get("reopened_count", 0) + 1
    snap.setdefault("reopened_count", 0)
    snap["status"] = new
    snap["last_status_changed_at"] = event.get("ts")
    if new == "done":
        snap["done_at"] = event.get("ts")
    elif snap.get("done_at") is not None:
        snap["done_at"] = None


def _field_updated(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = _data(event)
    name = _need(data, "field", "field_updated")
    value = data.get("to")
    if not isinstance(name, str) or not name:
        raise EventError("field_updated names no field")
    if name.startswith("custom_fields."):
        if not isinstance(snap.get("custom_fields"), dict):
            snap["custom_fields"] = {}
        snap["custom_fields"][name[len("custom_fields.") :]] = value
    elif name in PROTECTED_FIELDS:
        raise EventError(f"field_updated may not set the protected field {name!r}")
    else:
        snap[name] = value


def _artifact_attached(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = _data(event)
    art_id = _need(data, "artifact_id", "artifact_attached")
    role = data.get("role")
    refs = snap.setdefault("artifact_refs", [])
    if not any((r.get("id") if isinstance(r, dict) else r) == art_id for r in refs):
        refs.append({"id": art_id, "role": role})
    evidence = snap.setdefault("evidence_refs", [])
    if not any(
        isinstance(r, dict) and r.get("source_type") == "artifact" and r.get("id") == art_id
        for r in evidence
    ):
        evidence.append({"id": art_id, "role": role, "source_type": "artifact"})


def _process_started(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = cast(ProcessStarted, _data(event))
    entry: dict[str, Any] = {
        "process_type": data.get("process_type"),
        "started_event_id": event.get("id"),
        "started_at": event.get("ts"),
        "actor": event.get("actor"),
        "commit_sha": data.get("commit_sha"),
        "timeout_minutes": data.get("timeout_minutes"),
    }
    if data.get("run_id") is not None:
        entry["run_id"] = data["run_id"]
    snap.setdefault("active_processes", []).append(entry)


def _process_ended(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = cast(ProcessEnded, _data(event))
    if "started_event_id" not in data:
        raise EventError(f"{event.get('type')} has no 'started_event_id' in its data")
    started = data["started_event_id"]
    snap["active_processes"] = [
        p
        for p in snap.get("active_processes") or []
        if not (isinstance(p, dict) and p.get("started_event_id") == started)
    ]


def _relationship_added(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = _data(event)
    snap.setdefault("relationships_out", []).append(
        {
            "type": _need(data, "type", "relationship_added"),
            "target_task_id": _need(data, "target_task_id", "relationship_added"),
            "created_at": event.get("ts"),
            "created_by": event.get("actor"),
            "note": data.get("note"),
        }
    )


def _relationship_removed(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = _data(event)
    key = (data.get("type"), data.get("target_task_id"))
    snap["relationships_out"] = [
        r
        for r in snap.get("relationships_out") or []
        if (r.get("type"), r.get("target_task_id")) != key
    ]


def _branch_linked(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = _data(event)
    snap.setdefault("branch_links", []).append(
        {
            "branch": _need(data, "branch", "branch_linked"),
            "repo": data.get("repo"),
            "linked_at": event.get("ts"),
            "linked_by": event.get("actor"),
        }
    )


def _branch_unlinked(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = _data(event)
    key = (data.get("branch"), data.get("repo"))
    snap["branch_links"] = [
        b for b in snap.get("branch_links") or [] if (b.get("branch"), b.get("repo")) != key
    ]


def _comment_added(snap: dict[str, Any], event: dict[str, Any]) -> None:
    snap["comment_count"] = snap.get("comment_count", 0) + 1
    role = _data(event).get("role")
    if role is not None:
        snap.setdefault("evidence_refs", []).append(
            {"id": event.get("id"), "role": role, "source_type": "comment"}
        )


def _drop_comment_evidence(snap: dict[str, Any], comment_id: object) -> None:
    snap["evidence_refs"] = [
        r
        for r in snap.get("evidence_refs") or []
        if not (r.get("source_type") == "comment" and r.get("id") == comment_id)
    ]


def _comment_edited(snap: dict[str, Any], event: dict[str, Any]) -> None:
    data = _data(event)
    comment_id = data.get("comment_id")
    if "role" not in data or comment_id is None:
        return
    _drop_comment_evidence(snap, comment_id)
    if data["role"] is not None:
        snap["evidence_refs"].append(
            {"id": comment_id, "role": data["role"], "source_type": "comment"}
        )


def _comment_deleted(snap: dict[str, Any], event: dict[str, Any]) -> None:
    snap["comment_count"] = max(0, snap.get("comment_count", 0) - 1)
    comment_id = _data(event).get("comment_id")
    if comment_id and "evidence_refs" in snap:
        _drop_comment_evidence(snap, comment_id)


def _short_id_assigned(snap: dict[str, Any], event: dict[str, Any]) -> None:
    snap["short_id"] = _need(_data(event), "short_id", "task_short_id_assigned")


_HANDLERS = {
    "status_changed": _status_changed,
    "assignment_changed": lambda s, e: s.__setitem__(
        "assigned_to", _need(_data(e), "to", "assignment_changed")
    ),
    "field_updated": _field_updated,
    "artifact_attached": _artifact_attached,
    PROCESS_STARTED: _process_started,
    PROCESS_COMPLETED: _process_ended,
    PROCESS_FAILED: _process_ended,
    "relationship_added": _relationship_added,
    "relationship_removed": _relationship_removed,
    "branch_linked": _branch_linked,
    "branch_unlinked": _branch_unlinked,
    "comment_added": _comment_added,
    "comment_edited": _comment_edited,
    "comment_deleted": _comment_deleted,
    "task_short_id_assigned": _short_id_assigned,
}


def apply_event(snapshot: dict[str, Any] | None, event: dict[str, Any]) -> dict[str, Any]:
    """Apply one event in place and return the snapshot (a new one for task_created).

    Raises :class:`EventError` when the event cannot be applied; the snapshot is then
    unchanged. Types with no effect (comments' text, reactions, ``x_*``, unknown
    types) only move ``last_event_id`` and ``updated_at``.
    """
    etype = event.get("type")
    if etype == "task_created":
        snap = _new_snapshot(event)
    else:
        if snapshot is None:
            raise EventError(f"{etype} comes before the task_created event")
        snap = snapshot
        handler = _HANDLERS.get(str(etype))
        if handler is not None:
            try:
                handler(snap, event)
            except (AttributeError, TypeError, KeyError) as err:
                raise EventError(f"{etype} has malformed data ({err})") from None
    snap["last_event_id"] = event.get("id")
    snap["updated_at"] = event.get("ts")
    return snap


def replay(
    events: list[dict[str, Any]], *, source: str = "log"
) -> tuple[dict[str, Any] | None, list[str]]:
    """Materialize a snapshot from a task's events in file order.

    Returns the snapshot (None when there is no ``task_created``) and a description
    of every event that could not be applied.
    """
    snap: dict[str, Any] | None = None
    problems: list[str] = []
    for index, event in enumerate(events, start=1):
        try:
            snap = apply_event(snap, event)
        except EventError as err:
            problems.append(f"{source} event {index} ({event.get('id')}): {err}; skipped")
    return snap, problems
