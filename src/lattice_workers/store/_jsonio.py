"""The byte-level rules of the format: how lines and files are written and read.

One module owns serialization so that every writer (the store, the supervisor's run
journal) produces exactly what ``lattice-tracker`` produces: event lines are compact
sorted ASCII JSON, whole files are sorted ``indent=2`` JSON with a trailing newline,
written through a temp file, fsync and ``os.replace`` followed by an fsync of the
folder, so a reader sees the old file or the new one and never half of one.

Reading uses the stdlib ``json`` module on purpose: ``msgspec`` decodes faster but
costs more to import than a whole ``lattice show`` may take on a loaded machine. For
the same reason a whole file is formatted with ``msgspec`` only in a process that has
already imported it (the supervisor, whose writes are what limit its throughput); the
bytes are the same either way (see :func:`dumps_pretty`).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from typing import Any

from lattice_workers.errors import Code, LatticeError

#: A path as the write path passes it: a ``Path``, or a string (the hot path builds
#: strings: pathlib joins cost more than the rest of a write's own Python work).
StrPath = str | os.PathLike[str]


# What ``json.dumps`` builds from its keyword arguments on every call, built once.
_LINE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_PRETTY = json.JSONEncoder(sort_keys=True, indent=2, allow_nan=False)
_SORTED = json.JSONEncoder(sort_keys=True, allow_nan=False)


def dumps_event(obj: dict[str, Any]) -> str:
    """One event line: sorted keys, ``(",", ":")`` separators, ASCII, trailing newline."""
    try:
        return _LINE.encode(obj) + "\n"
    except (TypeError, ValueError) as err:
        raise LatticeError(
            Code.INVALID_ARGUMENT, f"event data cannot be stored as JSON: {err}"
        ) from None


def dumps_pretty(obj: Any) -> str:
    """A whole JSON file (snapshot, config, ids, artifact meta) as Lattice writes it.

    That is ``json.dumps(obj, sort_keys=True, indent=2)``, whose ``indent`` runs the
    stdlib's pure-Python encoder. Where ``msgspec`` is already imported, its formatter
    indents the C encoder's compact output instead: the same text in a third of the
    time (``tests/store/test_store_write_fastpath.py`` compares them on random values).
    What it refuses (the escape of a lone surrogate) or cannot encode goes the stdlib
    way, which gives the text or the usual error.
    """
    if "msgspec" in sys.modules:
        text = _pretty_with_msgspec(obj)
        if text is not None:
            return text + "\n"
    return _pretty_with_stdlib(obj)


def _pretty_with_stdlib(obj: Any) -> str:
    try:
        return _PRETTY.encode(obj) + "\n"
    except (TypeError, ValueError) as err:
        msg = f"value cannot be stored as JSON: {err}"
        raise LatticeError(Code.INVALID_ARGUMENT, msg) from None


def _pretty_with_msgspec(obj: Any) -> str | None:
    """``json.dumps(obj, sort_keys=True, indent=2)``, or None when it must be asked."""
    import msgspec.json  # imported already (see the caller): a lookup

    try:
        return msgspec.json.format(_SORTED.encode(obj), indent=2)
    except (TypeError, ValueError):  # msgspec.DecodeError is a ValueError
        return None


def fsync_dir(path: StrPath) -> None:
    """Make a rename or a new file in ``path`` durable (ignored where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


#: Numbers this process's temp files: with the pid, a name no other writer uses, without
#: ``tempfile``'s random names (they cost more than the rest of the rename).
_temp_numbers = itertools.count()


def _create_temp(folder: str) -> tuple[int, str]:
    """A new empty file ``.tmp.<pid>.<n>`` in ``folder``, mode 0600 as ``mkstemp`` makes.

    ``O_EXCL | O_NOFOLLOW`` as in ``mkstemp``: a name that exists (left by a crashed
    process that had our pid) is never opened; the next number is tried.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        tmp = f"{folder}/.tmp.{os.getpid()}.{next(_temp_numbers)}"
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: StrPath, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (temp file ``.tmp.*``)."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    fd, tmp = _create_temp(folder)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def atomic_write_json(path: StrPath, obj: Any) -> None:
    """Write ``obj`` to ``path`` as pretty sorted JSON, atomically and durably."""
    atomic_write_bytes(path, dumps_pretty(obj).encode("utf-8"))


def append_durable(path: StrPath, data: bytes) -> None:
    """Append ``data`` (whole lines) to ``path``, then flush and fsync.

    The caller holds the file's lock. If a crash left the file without a final
    newline, one is written first so the new line is never glued to the torn one.
    A file this call creates is made durable in its folder too.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
    created = False
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        fd = os.open(path, flags | os.O_CREAT, 0o644)
        created = True
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            _write_all(fd, data)
        except OSError:
            # A full disk may take part of the lines: cut them off again, so that the
            # refused write leaves no torn line behind (nothing was acknowledged).
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(os.path.dirname(os.fspath(path)) or ".")


def read_bytes(path: StrPath) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def as_dict(value: object) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one (for reading untrusted JSON)."""
    return value if isinstance(value, dict) else {}


def loads(data: bytes | str) -> Any:
    """Decode one JSON document (raises ``ValueError`` on bad input)."""
    return json.loads(data)


class EventLog:
    """The events of one log in file order, and the lines that could not be read.

    A corrupt line is skipped and described in ``problems``; reading never raises for
    bad content, so ``show`` and ``list`` keep working and ``doctor`` reports it.
    (A plain class: ``dataclasses`` costs more to import than ``lattice show`` may take.)
    """

    __slots__ = ("events", "problems")

    def __init__(
        self, events: list[dict[str, Any]] | None = None, problems: list[str] | None = None
    ) -> None:
        self.events: list[dict[str, Any]] = events if events is not None else []
        self.problems: list[str] = problems if problems is not None else []

    def __repr__(self) -> str:
        return f"EventLog({len(self.events)} events, problems={self.problems!r})"


def parse_jsonl(data: bytes, name: str) -> EventLog:
    """Parse a JSONL log; ``name`` (a path relative to the board) is used in problems."""
    log = EventLog()
    lines = data.split(b"\n")
    last = len(lines) - 1
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError as err:
            torn = " (a torn final line, probably from a crash)" if number - 1 == last else ""
            log.problems.append(f"{name} line {number}: not valid JSON{torn}: {err}")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            log.problems.append(f"{name} line {number}: not an event object with a type")
            continue
        log.events.append(obj)
    return log
