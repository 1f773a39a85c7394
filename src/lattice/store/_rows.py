"""The task list: a few fields of every snapshot, read as fast as Python can.

``lattice list`` reads every ``tasks/*.json``. Files are read with
``os.open``/``os.read``, half the cost of ``open()`` (which builds a buffered file
object and asks for the file's size first). Rejected: decoding with a ``msgspec``
struct of just the listed fields (its decode is faster, but importing msgspec costs
as much as it saves at 5,000 tasks, and more on smaller boards); a cache of rows
(checking 5,000 entries costs 5,000 ``stat`` calls, about what reading the files
costs, and it would also have to notice lattice-tracker's writes).
"""

from __future__ import annotations

import json
import os
from typing import Any

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
    loads, read, append = json.loads, _read, rows.append
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            snap = loads(read(prefix + name))
            get = snap.get
        except (OSError, ValueError, AttributeError) as err:
            problems.append(f"tasks/{name}: cannot be read ({err})")
            continue
        if status is not None and get("status") != status:
            continue
        runs = get("active_processes")
        append(
            {
                "id": get("id"),
                "short_id": get("short_id"),
                "title": get("title"),
                "status": get("status"),
                "priority": get("priority"),
                "type": get("type"),
                "assigned_to": get("assigned_to"),
                "tags": get("tags") or [],
                "updated_at": get("updated_at"),
                "active_runs": len(runs) if isinstance(runs, list) else 0,
            }
        )
    rows.sort(key=lambda r: str(r["id"]))
    return rows, problems
