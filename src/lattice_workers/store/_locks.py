"""Lattice's lock protocol: one lock file per key, ``fcntl.flock``-ed in sorted order.

This is the protocol ``filelock`` speaks on Linux and macOS (``lattice-tracker`` uses
it), spoken directly: an exclusive ``flock`` on ``locks/<key>.lock``, tried without
blocking and retried until a deadline. ``flock`` locks an *open file description*:
each acquisition opens its own descriptor, so two threads of one process exclude each
other exactly as two processes do. Lock files are never deleted: a writer that
unlinks a lock file can let a third writer lock a new inode while a second still
holds the old one.

Why not ``filelock`` itself: its bookkeeping (path resolution, fork tracking, per-
instance registries) cost more CPU than the rest of a board write together (measured
with cProfile: ~55% of ``Board.append``'s Python time). The files and the locking
call are the same, so the tracker and we still exclude each other (tested in
``tests/interop``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from lattice_workers.errors import Code, LatticeError

LOCK_TIMEOUT_S = 10.0
#: Longest wait between two tries of a held lock (``filelock``'s default poll is 10 ms).
MAX_POLL_S = 0.01


def task_lock_keys(task_id: str, *, lifecycle: bool = False) -> list[str]:
    """The keys of the canonical task write (plus the lifecycle log's when needed)."""
    keys = [f"events_{task_id}", f"tasks_{task_id}"]
    if lifecycle:
        keys.append("events__lifecycle")
    return keys


def _open_lock_file(path: str, locks_dir: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:  # a board without its locks/ folder yet
        locks_dir.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)


def _acquire(path: str, locks_dir: Path, key: str, deadline: float, timeout: float) -> int:
    """An open descriptor of ``path`` holding its exclusive ``flock``."""
    fd = _open_lock_file(path, locks_dir)
    pause = 0.001
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LatticeError(
                        Code.LOCK_TIMEOUT,
                        f"could not take the board lock {key!r} within {timeout:g} s; "
                        "another writer is holding it, try again",
                    ) from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, MAX_POLL_S)
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def locked(locks_dir: Path, keys: Iterable[str], timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold every lock in ``keys`` (sorted, deduplicated); release in reverse order.

    ``timeout`` bounds the wait for each lock, as in the tracker.
    """
    held: list[int] = []
    base = os.fspath(locks_dir)
    try:
        for key in sorted(set(keys)):
            deadline = time.monotonic() + timeout
            held.append(_acquire(f"{base}/{key}.lock", locks_dir, key, deadline, timeout))
        yield
    finally:
        _release(held)


def _release(held: list[int]) -> None:
    """Unlock and close every descriptor, in reverse order; never raises.

    Unlock before closing: a child forked meanwhile (a worker being spawned by another
    thread) shares the descriptor until it execs, and a close alone would leave the
    lock held until then. Neither call can fail in a way that leaves the lock held:
    closing the last descriptor of the description releases it, and Linux frees a
    descriptor even when ``close`` reports an error. So errors are not raised, which
    would also hide the exception of the locked block.
    """
    for fd in reversed(held):
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)
