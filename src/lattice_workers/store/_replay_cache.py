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
kept as JSON text, so callers may change what they get. The set of event ids is
grown in place instead (copying it made a write cost O(events in the log)): it is
taken out of the cache while it grows, so a failure halfway leaves no mark, and the
caller gets it read-only, valid while it holds the locks. At most :data:`CAPACITY`
logs and :data:`MAX_EVENTS` events are remembered (least recently used out first).

A write also needs the keys of the task's snapshot *file* that replay does not give
(they are carried over), and decoding that file on every write cost more than the
replay. So the file's bytes are remembered as this process last read or wrote them,
with their top-level keys (:func:`read_snapshot_file`): a write still reads the file,
but decodes it only when its bytes changed (someone else wrote it) or hold a key the
replay lacks, and then afresh, so callers may change what they get.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Set
from typing import Any, NamedTuple

from lattice_workers.store._jsonio import StrPath, loads, parse_jsonl
from lattice_workers.store._materialize import EventError, apply_event

#: Logs (and snapshot files) remembered per process...
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
    ids: set[str]  # the id of every event up to ``offset`` (grown in place, see above)
    events: int  # len(ids) when the mark was made (the budget's running total)


class Replayed(NamedTuple):
    """A log's replay: the snapshot it gives (None: no ``task_created``) and its ids."""

    snapshot: dict[str, Any] | None
    ids: Set[str]  # read-only, and valid only while the caller holds the task's locks


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

    def take(self, key: str) -> _Mark | None:
        """Remove and return the mark of ``key`` (its owner puts it back when done)."""
        with self._lock:
            gone = self._by_log.pop(key, None)
            if gone is not None:
                self._events -= gone.events
            return gone

    def put(self, key: str, mark: _Mark) -> None:
        """Remember ``mark`` as the newest; drop the oldest while over the bounds."""
        with self._lock:
            self._drop(key)
            self._by_log[key] = mark
            self._events += mark.events
            while len(self._by_log) > CAPACITY or (
                self._events > MAX_EVENTS and len(self._by_log) > 1
            ):
                self._events -= self._by_log.popitem(last=False)[1].events

    def clear(self) -> None:
        with self._lock:
            self._by_log.clear()
            self._events = 0

    def _drop(self, key: str) -> None:
        gone = self._by_log.pop(key, None)
        if gone is not None:
            self._events -= gone.events


_marks = _Marks()


def replay_log(path: StrPath) -> Replayed | None:
    """The replay of the task log at ``path``, or None when there is no log.

    The caller holds the task's locks. Lines that cannot be read or applied are
    skipped, as in :func:`~lattice_workers.store._materialize.replay`.
    """
    key = os.fspath(path)
    mark = _marks.take(key)
    try:
        fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if mark is not None and not _usable(mark, fd, info):
            mark = None
        start = mark.offset if mark else 0
        data = _read_from(fd, start)
    finally:
        os.close(fd)
    snap: dict[str, Any] | None = json.loads(mark.state) if mark else None
    ids = mark.ids if mark else set()
    cut = data.rfind(b"\n") + 1  # complete lines end here
    if cut:
        snap = _apply(snap, ids, data[:cut])
        tail = _tail((mark.tail if mark else b"") + data[:cut])
        state = json.dumps(snap)
        mark = _Mark(info.st_dev, info.st_ino, start + cut, tail, state, ids, len(ids))
    if mark is not None:
        _marks.put(key, mark)
    if cut < len(data):  # a last line without its newline (a torn write, or one in flight)
        ids = set(ids)  # not the mark's
        snap = _apply(snap, ids, data[cut:])
    return Replayed(snap, ids)


def forget_all() -> None:
    """Drop every mark and snapshot file (tests; a process that wants to start cold)."""
    _marks.clear()
    _snapshots.clear()


def _usable(mark: _Mark, fd: int, info: os.stat_result) -> bool:
    """Whether the log open at ``fd`` still starts with the bytes ``mark`` replayed."""
    if (mark.dev, mark.ino) != (info.st_dev, info.st_ino) or mark.offset > info.st_size:
        return False
    return os.pread(fd, len(mark.tail), mark.offset - len(mark.tail)) == mark.tail


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


def _apply(snap: dict[str, Any] | None, ids: set[str], data: bytes) -> dict[str, Any] | None:
    """Apply the lines of ``data`` to ``snap``; add their ids to ``ids``."""
    events = parse_jsonl(data, "").events
    for event in events:
        try:
            snap = apply_event(snap, event)
        except EventError:
            pass  # skipped, as a full replay skips it
    ids.update(str(e.get("id")) for e in events)
    return snap


class SnapshotFile(NamedTuple):
    """A task's snapshot file: its bytes and their top-level keys."""

    keys: frozenset[str]  # none when the bytes are not a JSON object
    data: bytes

    def decoded(self) -> dict[str, Any] | None:
        """The file as a new dict (None when it is not a JSON object)."""
        try:
            value = loads(self.data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class _Snapshots:
    """Snapshot files by path, least recently used first, at most :data:`CAPACITY`;
    thread-safe."""

    def __init__(self) -> None:
        self._by_path: OrderedDict[str, SnapshotFile] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_path)

    def get(self, path: str) -> SnapshotFile | None:
        with self._lock:
            return self._by_path.get(path)

    def put(self, path: str, file: SnapshotFile) -> None:
        with self._lock:
            self._by_path.pop(path, None)
            self._by_path[path] = file
            while len(self._by_path) > CAPACITY:
                self._by_path.popitem(last=False)

    def drop(self, path: str) -> None:
        with self._lock:
            self._by_path.pop(path, None)

    def clear(self) -> None:
        with self._lock:
            self._by_path.clear()


_snapshots = _Snapshots()


def read_snapshot_file(path: str) -> SnapshotFile | None:
    """The snapshot file at ``path`` (None: there is none); its keys are found by
    decoding it only when its bytes are not those this process last saw there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        _snapshots.drop(path)
        return None
    try:
        data = _read_from(fd, 0)
    finally:
        os.close(fd)
    seen = _snapshots.get(path)
    if seen is not None and seen.data == data:
        _snapshots.put(path, seen)  # the most recently used now
        return seen
    file = SnapshotFile(frozenset(), data)
    decoded = file.decoded()
    if decoded:
        file = SnapshotFile(frozenset(decoded), data)
    _snapshots.put(path, file)
    return file


def remember_snapshot_file(path: str, snapshot: dict[str, Any], data: bytes) -> None:
    """Remember that this process just wrote ``data``, the encoding of ``snapshot``,
    to ``path``."""
    if all(type(key) is str for key in snapshot):
        _snapshots.put(path, SnapshotFile(frozenset(snapshot), data))
    else:  # the file's keys are those keys' JSON forms: let the next read find them
        _snapshots.drop(path)
