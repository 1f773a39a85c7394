"""The task list: a few fields of every snapshot, read as fast as Python can.

``lattice list`` reads every ``tasks/*.json``; at 5,000 tasks decoding whole
snapshots with ``json`` is most of its time. A ``msgspec`` decoder for a struct of
just the listed fields skips the rest of each file in C and is several times
faster, which pays for importing msgspec here (and only here). Files are read with
``os.open``/``os.read``: half the cost of ``open()``, which builds a buffered file
object and asks for the file's size first.

No cache: checking 5,000 cached entries costs 5,000 ``stat`` calls, about what
reading the files costs, and a cache would also have to notice lattice-tracker's
writes; a stale list is worse than a slower one.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec


class _Row(msgspec.Struct):
    id: Any = None
    short_id: Any = None
    title: Any = None
    status: Any = None
    priority: Any = None
    type: Any = None
    assigned_to: Any = None
    tags: Any = None
    updated_at: Any = None
    active_processes: Any = None


_decode = msgspec.json.Decoder(_Row).decode
_CHUNK = 1 << 16


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) == _CHUNK:  # a large snapshot: read the rest
            chunks = [data]
            while chunk := os.read(fd, _CHUNK):
                chunks.append(chunk)
            data = b"".join(chunks)
    finally:
        os.close(fd)
    return data


def read_rows(tasks_dir: str, status: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (id, short_id, title, status, priority, type, assigned_to, tags, updated_at,
    active_runs) of every snapshot in ``tasks_dir`` sorted by id, and unreadable files."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        names = os.listdir(tasks_dir)
    except FileNotFoundError:
        return rows, problems
    prefix = tasks_dir + os.sep
    decode, read, append = _decode, _read, rows.append
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            row = decode(read(prefix + name))
        except (OSError, msgspec.DecodeError) as err:
            problems.append(f"tasks/{name}: cannot be read ({err})")
            continue
        if status is not None and row.status != status:
            continue
        runs = row.active_processes
        append(
            {
                "id": row.id,
                "short_id": row.short_id,
                "title": row.title,
                "status": row.status,
                "priority": row.priority,
                "type": row.type,
                "assigned_to": row.assigned_to,
                "tags": row.tags or [],
                "updated_at": row.updated_at,
                "active_runs": len(runs) if isinstance(runs, list) else 0,
            }
        )
    rows.sort(key=lambda r: str(r["id"]))
    return rows, problems
