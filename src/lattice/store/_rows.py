"""The task list: a few fields of every snapshot, read as fast as Python can.

``lattice list`` reads every ``tasks/*.json``. Files are read with
``os.open``/``os.read``, half the cost of ``open()`` (which builds a buffered file
object and asks for the file's size first). Rejected: decoding with a ``msgspec``
struct of just the listed fields (its decode is faster, but importing msgspec costs
as much as it saves at 5,000 tasks, and more on smaller boards); a cache of rows
(checking 5,000 entries costs 5,000 ``stat`` calls, about what reading the files
costs, and it would also have to notice lattice-tracker's writes).

What does work is a cache validated by the ``tasks/`` folder itself: every snapshot
write by either tool is a rename into that folder (atomic write), which changes the
folder's mtime, so one ``stat`` tells whether any snapshot changed. The mtime clock
ticks coarsely, so a folder state is trusted (cached) only once it is two seconds
old; a board that is being written to is simply read in full. The cache lives in
``.lattice/run/`` (our runtime folder) and is never needed: delete it at will.
"""

from __future__ import annotations

import json
import os
import time
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


#: A folder state younger than this is not cached (mtime granularity, writers racing).
SETTLE_NS = 2_000_000_000


def read_rows(
    tasks_dir: str, status: str | None, cache_path: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (id, short_id, title, status, priority, type, assigned_to, tags, updated_at,
    active_runs) of every snapshot in ``tasks_dir`` sorted by id, and unreadable files.

    With ``cache_path``, rows are reused while the folder has not changed (see above).
    """
    try:
        st = os.stat(tasks_dir)
    except FileNotFoundError:
        return [], []
    stamp = [st.st_ino, st.st_mtime_ns]
    cached = _load_cache(cache_path, stamp) if cache_path else None
    if cached is not None:
        rows, problems = cached
    else:
        rows, problems = _scan(tasks_dir)
        if cache_path and time.time_ns() - st.st_mtime_ns > SETTLE_NS:
            _save_cache(cache_path, stamp, rows, problems)
    if status is not None:
        rows = [r for r in rows if r["status"] == status]
    return rows, problems


def _load_cache(path: str, stamp: list[int]) -> tuple[list[dict[str, Any]], list[str]] | None:
    try:
        data = json.loads(_read(path))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("stamp") != stamp:
        return None
    rows, problems = data.get("rows"), data.get("problems")
    if not isinstance(rows, list) or not isinstance(problems, list):
        return None
    return rows, problems


def _save_cache(
    path: str, stamp: list[int], rows: list[dict[str, Any]], problems: list[str]
) -> None:
    """Best effort: a cache that cannot be written costs the next list a full read."""
    folder = os.path.dirname(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="ascii") as f:
            json.dump({"stamp": stamp, "rows": rows, "problems": problems}, f)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _scan(tasks_dir: str) -> tuple[list[dict[str, Any]], list[str]]:
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
