"""Lattice's lock protocol: one ``filelock`` file per key, taken in sorted order.

``filelock`` uses ``fcntl.flock`` on Linux, which locks an *open file description*:
each acquisition here opens its own descriptor, so two threads of one process
exclude each other exactly as two processes do. Lock files are never deleted
(``preserve_lock_file``): filelock 4 would unlink them on release, which is safe only
when every other writer runs a filelock that rechecks the inode after locking, and
the tracker's own dependency range does not promise that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lattice.errors import Code, LatticeError

LOCK_TIMEOUT_S = 10.0


def task_lock_keys(task_id: str, *, lifecycle: bool = False) -> list[str]:
    """The keys of the canonical task write (plus the lifecycle log's when needed)."""
    keys = [f"events_{task_id}", f"tasks_{task_id}"]
    if lifecycle:
        keys.append("events__lifecycle")
    return keys


def _file_lock(cls: Any, path: str, timeout: float) -> Any:
    try:
        return cls(path, timeout=timeout, thread_local=False, preserve_lock_file=True)
    except TypeError:  # filelock 3 has no such option and never deletes lock files
        return cls(path, timeout=timeout, thread_local=False)


@contextlib.contextmanager
def locked(locks_dir: Path, keys: Iterable[str], timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold every lock in ``keys`` (sorted, deduplicated); release in reverse order."""
    from filelock import FileLock, Timeout

    locks_dir.mkdir(parents=True, exist_ok=True)
    held: list[Any] = []
    try:
        for key in sorted(set(keys)):
            lock = _file_lock(FileLock, str(locks_dir / f"{key}.lock"), timeout)
            try:
                lock.acquire(poll_interval=0.01)
            except Timeout:
                raise LatticeError(
                    Code.LOCK_TIMEOUT,
                    f"could not take the board lock {key!r} within {timeout:g} s; another "
                    "writer is holding it, try again",
                ) from None
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()
