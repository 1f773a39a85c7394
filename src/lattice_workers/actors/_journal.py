"""The run journal: every accepted run, durably, so that a restart forgets nothing.

One append-only file, ``.lattice/run/journal.jsonl``: a line is the whole record of
one run at one moment (accepted, started, ended); the last line for a run id wins.
An append plus ``fsync`` is the cheapest durable write there is, and a whole-record
line means replay needs no merging logic. A torn last line (a crash mid-write) is
skipped. The file is compacted at start-up (finished runs beyond the retention
limits dropped), with an atomic rewrite.

The board never needs this file: deleting it loses the ``ps -a`` history and
idempotency keys, nothing else. Runs still open on the board are found from the
board itself during recovery.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from lattice_workers.protocol._messages import Run, RunInfo


class JournalRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One run at one moment, with what recovery needs to settle or requeue it."""

    seq: int
    run: RunInfo
    request: Run
    pid_start_time: int | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(JournalRecord)


class Journal:
    """Append-only, fsynced run records. Methods block: call them from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._fd: int | None = None
        #: Records appended since the file was last compacted.
        self.appended = 0

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self._fd

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
        line = _encoder.encode(record) + b"\n"
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
        """The latest record of every run, in order of acceptance."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        latest: dict[str, JournalRecord] = {}
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                record = _decoder.decode(line)
            except msgspec.DecodeError:
                continue  # a torn line from a crash mid-write, or damage: skip it
            latest[record.run.run_id] = record
        return dict(sorted(latest.items(), key=lambda item: item[1].seq))

    def compact_now(self, *, keep_finished: int, max_age_seconds: float) -> None:
        """Compact while the supervisor runs: read and rewrite under one lock."""
        with self._lock:
            self.compact(self.load(), keep_finished=keep_finished, max_age_seconds=max_age_seconds)

    def compact(
        self, records: dict[str, JournalRecord], *, keep_finished: int, max_age_seconds: float
    ) -> dict[str, JournalRecord]:
        """Rewrite the file with open runs and the newest retained finished ones."""
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
        self._rewrite(kept.values())
        return kept

    def _rewrite(self, records: Iterable[JournalRecord]) -> None:
        from lattice_workers.store import atomic_write_bytes

        payload = b"".join(_encoder.encode(r) + b"\n" for r in records)
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write_bytes(self.path, payload)
            self.appended = 0
