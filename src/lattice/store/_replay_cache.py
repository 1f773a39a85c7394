"""Replayed task logs, remembered between writes: a write parses only the new lines.

A write applies its events to the replay of the task's *whole* log (see ``_write``
for why the snapshot file cannot be trusted), and a task's log grows by two events
per worker run: replaying all of it made every write cost more than the last. Every
writer only appends to a log, so the state after its first N bytes stays right for
as long as those bytes stay. Per log this module keeps a *mark*: the state after the
log's last complete line, and what identifies those bytes (device, inode, offset and
the line before the offset, up to 4 KiB, which holds that event's unique id). The next read
parses only what follows the mark.

A log that shrank, was replaced (a new inode: an archive, a restore, a copy) or whose
line before the mark changed is replayed from its start. A log rewritten in place
with the same length and the same last line would not be noticed: logs are
append-only (lattice-format.md), and a process that starts reads every log afresh.
Reads happen under the task's locks, where nobody else can append. The state is
kept as JSON text, so callers may change what they get. At most :data:`CAPACITY`
logs and :data:`MAX_EVENTS` events are remembered (least recently used out first).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from lattice.store._jsonio import parse_jsonl
from lattice.store._materialize import EventError, apply_event

#: Logs remembered per process...
CAPACITY = 256
#: ...and events, over all of them (an id is ~100 bytes: ~20 MB).
MAX_EVENTS = 200_000
#: At least this many bytes before a mark must be unchanged for the mark to be used
#: (the whole line before it, when longer: an event line holds its own unique id)...
_TAIL = 128
#: ...and at most this many. Keys are sorted, so a line's id comes after its data;
#: only a ``provenance`` reason of over ~4 KiB would push it out, and then the tail
#: still holds the line's timestamp, task and type.
_MAX_TAIL = 4096


class _Mark(NamedTuple):
    dev: int
    ino: int
    offset: int  # the log's bytes up to here (just after a newline) are replayed
    tail: bytes  # the bytes before ``offset``: its last line (within ``_TAIL``..``_MAX_TAIL``)
    state: str  # the replay so far, as JSON ("null": no task_created yet)
    ids: frozenset[str]  # the id of every event up to ``offset``


class Replayed(NamedTuple):
    """A log's replay: the snapshot it gives (None: no ``task_created``) and its ids."""

    snapshot: dict[str, Any] | None
    ids: frozenset[str]


class _Marks:
    """The marks by log path, least recently used first, and how many events they
    hold (kept as a running total: a write must not add them all up); thread-safe."""

    def __init__(self) -> None:
        self._by_log: OrderedDict[str, _Mark] = OrderedDict()
        self._events = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_log)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._by_log))

    def get(self, key: str) -> _Mark | None:
        with self._lock:
            return self._by_log.get(key)

    def put(self, key: str, mark: _Mark) -> None:
        """Remember ``mark`` as the newest; drop the oldest while over the bounds."""
        with self._lock:
            self._drop(key)
            self._by_log[key] = mark
            self._events += len(mark.ids)
            while len(self._by_log) > CAPACITY or (
                self._events > MAX_EVENTS and len(self._by_log) > 1
            ):
                self._events -= len(self._by_log.popitem(last=False)[1].ids)

    def drop(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._by_log.clear()
            self._events = 0

    def _drop(self, key: str) -> None:
        gone = self._by_log.pop(key, None)
        if gone is not None:
            self._events -= len(gone.ids)


_marks = _Marks()


def replay_log(path: Path) -> Replayed | None:
    """The replay of the task log at ``path``, or None when there is no log.

    The caller holds the task's locks. Lines that cannot be read or applied are
    skipped, as in :func:`~lattice.store._materialize.replay`.
    """
    key = os.fspath(path)
    try:
        fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        _marks.drop(key)
        return None
    try:
        info = os.fstat(fd)
        mark = _usable_mark(key, fd, info)
        start = mark.offset if mark else 0
        data = _read_from(fd, start)
    finally:
        os.close(fd)
    snap: dict[str, Any] | None = json.loads(mark.state) if mark else None
    ids = mark.ids if mark else frozenset()
    cut = data.rfind(b"\n") + 1  # complete lines end here
    if cut:
        snap, ids = _apply(snap, ids, data[:cut])
        tail = _tail((mark.tail if mark else b"") + data[:cut])
        _marks.put(key, _Mark(info.st_dev, info.st_ino, start + cut, tail, json.dumps(snap), ids))
    if cut < len(data):  # a last line without its newline (a torn write, or one in flight)
        snap, ids = _apply(snap, ids, data[cut:])
    return Replayed(snap, ids)


def forget_all() -> None:
    """Drop every mark (tests; a process that wants to start cold)."""
    _marks.clear()


def _usable_mark(key: str, fd: int, info: os.stat_result) -> _Mark | None:
    mark = _marks.get(key)
    if mark is None or (mark.dev, mark.ino) != (info.st_dev, info.st_ino):
        return None
    if mark.offset > info.st_size:
        return None
    if os.pread(fd, len(mark.tail), mark.offset - len(mark.tail)) != mark.tail:
        return None
    return mark


def _tail(replayed: bytes) -> bytes:
    """The end of ``replayed`` (which ends with a newline) to check a mark by."""
    size = len(replayed)
    line_start = replayed.rfind(b"\n", 0, size - 1) + 1
    return replayed[max(min(line_start, size - _TAIL), size - _MAX_TAIL, 0) :]


def _read_from(fd: int, offset: int) -> bytes:
    chunks = []
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _apply(
    snap: dict[str, Any] | None, ids: frozenset[str], data: bytes
) -> tuple[dict[str, Any] | None, frozenset[str]]:
    events = parse_jsonl(data, "").events
    for event in events:
        try:
            snap = apply_event(snap, event)
        except EventError:
            pass  # skipped, as a full replay skips it
    return snap, ids | {str(e.get("id")) for e in events}

