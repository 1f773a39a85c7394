"""The run journal: every accepted run, durably, so that a restart forgets nothing.

One append-only file, ``.lattice/run/journal.jsonl``: a line is the whole record of
one run at one moment (accepted, started, ended); the last line for a run id wins.
An append plus ``fsync`` is the cheapest durable write there is, and a whole-record
line means replay needs no merging logic. The file is compacted at start-up
(finished runs beyond the retention limits dropped), with an atomic rewrite.

Nothing written is lost, whichever version wrote it:

- a record carries the version of its schema (``v``); one written by a newer version
  is read for what this version knows, and the fields it does not know (at the top,
  in ``run`` or in ``request``) are carried into every later record of that run and
  through compaction untouched: a downgrade followed by an upgrade keeps them;
- a line that cannot be read at all (a torn last line from a crash mid-write, damage)
  is moved aside by the next compaction, into a dated file beside the journal
  (``journal.unreadable-<UTC time>.jsonl``), with a warning in the supervisor's log;
  it is never simply dropped.

The request is kept as :class:`RunRequest`, not as the wire ``Run``: the wire type
forbids unknown fields (a client's typo must be an error), which for a file read
across versions would turn every new request field into the loss of every queued run.

The board never needs this file: deleting it loses the ``ps -a`` history and
idempotency keys, nothing else. Runs still open on the board are found from the
board itself during recovery.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from lattice_workers.protocol._messages import Run, RunInfo

log = logging.getLogger("lattice_workers.supervisor.journal")

#: The schema version this code writes. Lines without ``v`` are from before versions,
#: read as this one: the same shape, but for the wire request's ``type``, ``v`` and
#: ``rid`` in ``request``, which are known and dropped.
JOURNAL_VERSION = 1


class RunRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What was asked for a run, as the journal keeps it (the wire ``Run``'s fields).

    Tolerant of unknown fields, unlike the wire type (see the module docstring). A
    field added to ``Run`` is added here too, with a default, so that a record without
    it (written before it existed) still reads; all but ``env``, the client's
    environment, which lives in the actor's memory only and never reaches the disk.
    """

    worker: str
    task: str
    revision: str | None = None
    from_run: str | None = None
    base: str | None = None
    actor: str | None = None
    timeout_minutes: float | None = None
    idempotency_key: str | None = None
    requested_by: str | None = None
    max_cost_usd: float | None = None
    max_turns: int | None = None
    continue_run: str | None = None
    message: str | None = None
    #: Resolved by the registry from ``continue_run``: the agent's session, and the
    #: folder it ran in (claude keeps sessions per working folder).
    resume_session: str | None = None
    resume_cwd: str | None = None

    @classmethod
    def from_wire(cls, req: Run) -> RunRequest:
        return cls(
            worker=req.worker,
            task=req.task,
            revision=req.revision,
            from_run=req.from_run,
            base=req.base,
            actor=req.actor,
            timeout_minutes=req.timeout_minutes,
            idempotency_key=req.idempotency_key,
            requested_by=req.requested_by,
            max_cost_usd=req.max_cost_usd,
            max_turns=req.max_turns,
            continue_run=req.continue_run,
            message=req.message,
        )


class JournalRecord(msgspec.Struct, kw_only=True):
    """One run at one moment, with what recovery needs to settle or requeue it.

    Every field is written, ``v`` above all (``omit_defaults`` would leave it out).
    """

    v: int = JOURNAL_VERSION
    seq: int
    run: RunInfo
    request: RunRequest
    pid_start_time: int | None = None

_encoder = msgspec.json.Encoder()

#: The field names (as encoded) each level of a record knows; anything else is carried.
_KNOWN_TOP = frozenset(JournalRecord.__struct_encode_fields__)
_KNOWN_RUN = frozenset(RunInfo.__struct_encode_fields__)
#: The wire request's own fields, found in the records written before versions: known.
_KNOWN_REQUEST = frozenset(RunRequest.__struct_encode_fields__) | {"type", "v", "rid"}


@dataclass
class _Carried:
    """The fields of one run's records that this version does not know, by level."""

    top: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> _Carried | None:
        run, request = raw.get("run"), raw.get("request")
        carried = cls(
            {k: v for k, v in raw.items() if k not in _KNOWN_TOP},
            {k: v for k, v in run.items() if k not in _KNOWN_RUN} if isinstance(run, dict) else {},
            {k: v for k, v in request.items() if k not in _KNOWN_REQUEST}
            if isinstance(request, dict)
            else {},
        )
        return carried if carried.top or carried.run or carried.request else None

    def into(self, record: JournalRecord) -> dict[str, Any]:
        """``record`` as builtins with the carried fields put back where they were."""
        out: dict[str, Any] = msgspec.to_builtins(record)
        out["run"].update(self.run)
        out["request"].update(self.request)
        for key, value in self.top.items():
            out.setdefault(key, value)
        return out


class Unreadable(msgspec.Struct):
    """A line of the journal that could not be read, and why."""

    line: bytes
    error: str


class Journal:
    """Append-only, fsynced run records. Methods block: call them from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._fd: int | None = None
        #: Records appended since the file was last compacted.
        self.appended = 0
        #: Fields of a newer version, by run id, carried into that run's records.
        self._carried: dict[str, _Carried] = {}
        #: Lines the last :meth:`load` could not read; the next compaction moves them aside.
        self.unreadable: list[Unreadable] = []

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self._fd

    def _encode(self, record: JournalRecord) -> bytes:
        carried = self._carried.get(record.run.run_id) if self._carried else None
        if carried is None:
            return _encoder.encode(record)
        return _encoder.encode(carried.into(record))

    def write(self, record: JournalRecord, *, durable: bool = False) -> None:
        """Append one record; with ``durable`` it is on disk when this returns.

        Only the acceptance of a queued run needs ``durable``: it must survive a reboot
        to be requeued, and nothing else records it (a run admitted at once has its
        ``process_started`` on the board, which recovery reads), and so does that of a
        run with an idempotency key, which only the journal keeps. Later records (pid,
        worktree, end) only need to survive the death of the supervisor, which the
        page cache gives; after a reboot their processes are gone anyway and the board
        says which runs are open. The fsync runs outside the lock (on a duplicate of
        the descriptor, which a compaction may close), so concurrent acceptances share
        the disk's flush instead of queueing for it.
        """
        line = self._encode(record) + b"\n"
        with self._lock:
            fd = self._open()
            os.write(fd, line)
            self.appended += 1
            flush_fd = os.dup(fd) if durable else None
        if flush_fd is not None:
            try:
                os.fsync(flush_fd)
            finally:
                os.close(flush_fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def load(self) -> dict[str, JournalRecord]:
        """The latest record of every run, in order of acceptance.

        Remembers what it could not read (:attr:`unreadable`) and the fields of a
        newer version (carried into later writes), as the module docstring says.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        latest: dict[str, JournalRecord] = {}
        carried: dict[str, _Carried] = {}
        unreadable: list[Unreadable] = []
        newest = 0
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                raw = msgspec.json.decode(line)
                record = msgspec.convert(raw, JournalRecord)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                unreadable.append(Unreadable(line, str(exc)))
                continue
            run_id = record.run.run_id
            latest[run_id] = record
            newest = max(newest, record.v)
            # What this version writes of the run from now on follows its own schema
            # (plus the carried fields, which a newer reader may find out of date).
            record.v = JOURNAL_VERSION
            extra = _Carried.of(raw)
            if extra is not None:
                carried[run_id] = extra
            else:
                carried.pop(run_id, None)
        with self._lock:
            self._carried = carried
            self.unreadable = unreadable
        if newest > JOURNAL_VERSION:
            log.warning(
                "run journal %s holds records of version %d (this is version %d): the "
                "fields this version does not know are kept as they are",
                self.path, newest, JOURNAL_VERSION,
            )
        return dict(sorted(latest.items(), key=lambda item: item[1].seq))

    def compact_now(self, *, keep_finished: int, max_age_seconds: float) -> None:
        """Compact while the supervisor runs: read and rewrite under one lock."""
        with self._lock:
            self.compact(self.load(), keep_finished=keep_finished, max_age_seconds=max_age_seconds)

    def compact(
        self, records: dict[str, JournalRecord], *, keep_finished: int, max_age_seconds: float
    ) -> dict[str, JournalRecord]:
        """Rewrite the file with open runs and the newest retained finished ones.

        What :meth:`load` could not read is first moved aside (see the module docstring).
        """
        now = time.time()
        finished = [
            r
            for r in records.values()
            if r.run.state in ("completed", "failed")
            and now - (r.run.ended_at or r.run.created_at) <= max_age_seconds
        ]
        keep_ids = {r.run.run_id for r in finished[-keep_finished:]} if keep_finished else set()
        kept = {
            run_id: r
            for run_id, r in records.items()
            if r.run.state not in ("completed", "failed") or run_id in keep_ids
        }
        with self._lock:
            self._move_aside()
            self._rewrite(kept.values())
            self._carried = {k: v for k, v in self._carried.items() if k in kept}
        return kept

    def _move_aside(self) -> None:
        """Append the unreadable lines to a dated file beside the journal, durably."""
        if not self.unreadable:
            return
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.stem}.unreadable-{stamp}{self.path.suffix}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, b"".join(u.line + b"\n" for u in self.unreadable))
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning(
            "run journal %s: %d line(s) could not be read and were moved to %s (first: %s); "
            "nothing else was lost, and the file can be read or removed by hand",
            self.path, len(self.unreadable), aside, self.unreadable[0].error,
        )
        self.unreadable = []

    def _rewrite(self, records: Iterable[JournalRecord]) -> None:
        from lattice_workers.store import atomic_write_bytes

        payload = b"".join(self._encode(r) + b"\n" for r in records)
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write_bytes(self.path, payload)
            self.appended = 0
