"""The task list: a few fields of every snapshot, read as fast as Python can.

``lattice list`` reads every ``tasks/*.json``. Files are read with
``os.open``/``os.read``, half the cost of ``open()`` (which builds a buffered file
object and asks for the file's size first). Rejected: decoding with a ``msgspec``
struct of just the listed fields (its decode is faster, but importing msgspec costs
as much as it saves at 5,000 tasks, and more on smaller boards); a cache of rows
(checking 5,000 entries costs 5,000 ``stat`` calls, about what reading the files
costs, and it would also have to notice lattice-tracker's writes).

What does work is a cache that is checked cheaply. Every snapshot write, by either
tool, is an atomic rename into ``tasks/``: it changes the folder's mtime and gives
the file a new inode. So: one ``stat`` of the folder says whether anything changed
at all (the whole cache is reused); when something did, one ``stat`` per file
(``ino``, ``mtime_ns``, ``size``) says which files to read again, and only those are
decoded (decoding is most of the cost). Because the mtime clock is coarse and an
inode number can come back, a file (or the folder) is cached only once its mtime is
older than a clock tick can hide (100 ms here; coarse file-system clocks tick every 1 to
10 ms): any later write then gets a visibly different mtime. Younger files are read
every time until they settle. The cache
lives in ``.lattice/run/`` (our runtime folder) and is never needed.
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


#: A file or folder state younger than this is not cached (coarse mtime, reused inodes).
SETTLE_NS = 100_000_000

Row = dict[str, Any]


def read_rows(
    tasks_dir: str, status: str | None, cache_path: str | None = None
) -> tuple[list[Row], list[str]]:
    """Rows (id, short_id, title, status, priority, type, assigned_to, tags, updated_at,
    active_runs) of every snapshot in ``tasks_dir`` sorted by id, and unreadable files.

    With ``cache_path``, unchanged files are not read again (see above).
    """
    try:
        st = os.stat(tasks_dir)
    except FileNotFoundError:
        return [], []
    now = time.time_ns()
    folder = [st.st_ino, st.st_mtime_ns]
    cache = _load_cache(cache_path) if cache_path else {}
    if cache.get("folder") == folder and isinstance(cache.get("rows"), list):
        rows: list[Row] = cache["rows"]
        problems: list[str] = cache.get("problems") or []
    else:
        rows, problems, files = _scan(tasks_dir, cache.get("files") or {}, now)
        if cache_path:
            settled = now - st.st_mtime_ns > SETTLE_NS
            _save_cache(
                cache_path,
                {
                    "folder": folder if settled else None,
                    "rows": rows if settled else None,
                    "problems": problems,
                    "files": files,
                },
            )
    if status is not None:
        rows = [r for r in rows if r["status"] == status]
    return rows, problems


def _load_cache(path: str) -> dict[str, Any]:
    try:
        data = json.loads(_read(path))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(path: str, data: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written costs the next list a full read."""
    folder = os.path.dirname(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="ascii") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _scan(
    tasks_dir: str, known: dict[str, Any], now: int
) -> tuple[list[Row], list[str], dict[str, Any]]:
    """Read every snapshot whose (inode, mtime, size) is not in ``known``.

    Returns the rows, the problems and the entries to cache (settled files only).
    """
    rows: list[Row] = []
    problems: list[str] = []
    files: dict[str, Any] = {}
    loads, read, append = json.loads, _read, rows.append
    try:
        entries = list(os.scandir(tasks_dir))
    except FileNotFoundError:
        return rows, problems, files
    for entry in entries:
        name = entry.name
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            st = entry.stat()
        except OSError:
            continue  # replaced or removed while we looked
        key = [st.st_ino, st.st_mtime_ns, st.st_size]
        hit = known.get(name)
        if isinstance(hit, list) and len(hit) == 2 and hit[0] == key:
            row = hit[1]
        else:
            try:
                snap = loads(read(entry.path))
                row = _row(snap)
            except (OSError, ValueError, AttributeError) as err:
                problems.append(f"tasks/{name}: cannot be read ({err})")
                continue
        append(row)
        if now - st.st_mtime_ns > SETTLE_NS:
            files[name] = [key, row]
    rows.sort(key=lambda r: str(r["id"]))
    return rows, problems, files


def _row(snap: dict[str, Any]) -> Row:
    get = snap.get
    runs = get("active_processes")
    return {
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
