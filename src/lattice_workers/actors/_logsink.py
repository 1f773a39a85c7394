"""A run's output, from a pipe into its log file, with a bound on the file's size.

The worker's stdout and stderr are the write end of a pipe; the supervisor copies what
arrives into the log. Writing the file directly (as before) cost nothing, but nothing
could bound it: ``yes`` wrote 2 GiB in 8 s and a full disk followed. A descriptor
shared with the worker cannot be truncated safely while it appends, so the copy is
ours. Past ``limit`` bytes the log keeps its first half (the command, the first
errors) and its latest part, with one line between them that says how many bytes were
dropped; the worker is not stopped, and the terminal event says ``log_truncated``.

The cost for a run that writes little: a pipe, one Trio task waiting on it, and one
read at the end (measured with ``bench/throughput.py``, see the README). Copies run
on the loop: a read of at most :data:`CHUNK` bytes from a pipe never blocks, nor does
a write of them to a regular file, which lands in the page cache. What may take time,
moving the latest part down when the log is full, goes to a thread; meanwhile the
pipe fills and the worker waits, which is the back-pressure a bounded log needs.

Layout past the limit: ``[head: limit/2][marker][tail]``; the tail grows until the
file reaches ``limit`` again, then its last quarter-limit moves down behind the
marker (so copying costs at most one pass over what is written) and the marker's
count grows. When the supervisor dies, the pipe's read end goes with it and the
worker's next write fails (``SIGPIPE``): recovery ends such runs anyway.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Protocol

import trio

#: Bytes read from the pipe at once.
CHUNK = 64 * 1024
#: The default bound of a run's log, ``workers.log_max_mib``.
DEFAULT_MAX_MIB = 100
_MARKER = (
    "\n[lattice: {dropped:>20} bytes of output dropped here; the log keeps its first "
    "and its latest part (workers.log_max_mib)]\n"
)
_MARKER_SIZE = len(_MARKER.format(dropped=0))


def marker(dropped: int) -> bytes:
    """The line between head and tail; fixed width so it can be rewritten in place."""
    return _MARKER.format(dropped=dropped).encode()


class Tap(Protocol):
    """What an agent run puts between its pipe and its log (``actors/_agent_tap.py``):
    raw bytes in, the bytes to log out; ``finish`` flushes a last partial line."""

    def __call__(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class LogSink:
    """Copies a pipe into a log file; owns both descriptors from construction."""

    def __init__(self, read_fd: int, log_fd: int, limit: int, tap: Tap | None = None) -> None:
        self._tap: Callable[[bytes], bytes] | None = tap
        self._tap_finish: Callable[[], bytes] | None = tap.finish if tap is not None else None
        os.set_blocking(read_fd, False)
        self._read_fd: int | None = read_fd
        self._log_fd: int | None = log_fd
        #: At least room for the marker and something on each side of it.
        self.limit = max(int(limit), 4 * _MARKER_SIZE)
        self.head = self.limit // 2
        #: Our own descriptor, without ``O_APPEND`` (with it, Linux's pwrite appends).
        self.size = os.lseek(log_fd, 0, os.SEEK_END)
        self.dropped = 0
        self._closed = trio.Event()

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    async def pump(self) -> None:
        """Copy until the pipe's write ends are all closed, or until cancelled."""
        while self._read_fd is not None:
            await trio.lowlevel.wait_readable(self._read_fd)
            if not await self._copy_available():
                return

    async def finish(self) -> None:
        """Copy what is left in the pipe (without waiting for more), then close both.

        Called once the worker's group is killed: what it wrote is in the pipe; a
        leftover outside the group that still holds the write end gets ``EPIPE``.
        """
        try:
            if self._read_fd is not None:
                await self._copy_available()
            if self._tap_finish is not None and self._log_fd is not None:
                await self._write(self._tap_finish())
        finally:
            self.close()

    def close(self) -> None:
        for name in ("_read_fd", "_log_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                if name == "_read_fd":
                    trio.lowlevel.notify_closing(fd)
                os.close(fd)

    async def _copy_available(self) -> bool:
        """Copy what the pipe holds now; False at its end (all writers closed)."""
        while self._read_fd is not None:
            try:
                data = os.read(self._read_fd, CHUNK)
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return False
            if self._tap is not None:
                data = self._tap(data)
            await self._write(data)
        return False

    async def _write(self, data: bytes) -> None:
        assert self._log_fd is not None
        while data:
            room = self.limit - self.size
            if room <= 0:
                # Shielded: these bytes are out of the pipe, a cancel must not lose them.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._compact)
                continue
            part, data = data[:room], data[room:]
            _write_all(self._log_fd, part)
            self.size += len(part)

    def _compact(self) -> None:
        """Drop the middle (blocking): keep the head, the marker, the last quarter."""
        fd = self._log_fd
        assert fd is not None
        start = self.head + _MARKER_SIZE  # where the tail begins once truncated
        keep = max(self.limit // 4, 1)
        if self.size - keep < start:
            keep = self.size - start
        source = self.size - keep
        if self.dropped == 0:
            # The first cut: the marker takes the place of what followed the head.
            self.dropped = source - self.head
        else:
            self.dropped += source - start
        os.pwrite(fd, marker(self.dropped), self.head)
        moved = 0
        while moved < keep:
            block = os.pread(fd, min(1 << 20, keep - moved), source + moved)
            if not block:
                break
            os.pwrite(fd, block, start + moved)
            moved += len(block)
        os.ftruncate(fd, start + moved)
        self.size = os.lseek(fd, start + moved, os.SEEK_SET)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
