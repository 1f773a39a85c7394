"""Exactly one supervisor per project root: an exclusive lock on a file.

``flock`` is released by the kernel when its holder dies, however it dies, so a
stale lock from a killed supervisor needs no detection: the next start simply gets
it. The file holds the holder's pid so that a refused start can say who holds it.
The same check, taken and released at once, tells a client whether a supervisor is
alive without talking to it (``is_held``). Nothing here imports Trio.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store._locate import run_dir as board_run_dir

LOCK_NAME = "supervisor.lock"


def runtime_dir(board_dir: Path) -> Path:
    """``.lattice/run``: sockets, the lock, the journal. Created with mode 0700."""
    path = board_run_dir(board_dir)
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class PidLock:
    """The supervisor's lock on ``.lattice/run/supervisor.lock``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``CONFLICT`` naming the pid that holds it.

        A client's :func:`is_held` probe holds the lock for a few microseconds; when
        the lock is busy but no live pid is written in the file, that is a probe (or a
        supervisor that has not written its pid yet), so try again for a moment.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        for _ in range(100):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = read_holder(self.path)
                if holder is not None and _alive(holder):
                    os.close(fd)
                    raise LatticeError(
                        Code.CONFLICT,
                        f"a supervisor is already running for this board "
                        f"(pid {holder} holds {self.path})",
                        details={"pid": holder},
                    ) from None
                time.sleep(0.01)
        else:
            os.close(fd)
            raise LatticeError(Code.CONFLICT, f"could not take the lock {self.path}")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def read_holder(path: Path) -> int | None:
    """The pid written in the lock file, if any."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_held(run_dir: Path) -> bool:
    """True when a live process holds the supervisor lock (a supervisor is running)."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()
