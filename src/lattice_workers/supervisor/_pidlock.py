"""Exactly one supervisor per board: an exclusive lock on the board's folder itself.

``flock`` is released by the kernel when its holder dies, however it dies, so a
stale lock from a killed supervisor needs no detection: the next start simply gets
it. The lock is taken on ``.lattice/`` (a directory can be ``flock``-ed through a
read-only descriptor), not on a file inside it: a worker that deletes
``.lattice/run/`` (where the lock file used to be) would otherwise let a second
supervisor start beside a live one, whose recovery would kill the live one's runs.
A worker cannot remove ``.lattice/`` without removing the board.

``.lattice/run/supervisor.lock`` still holds the holder's pid, so that a refused
start can say who holds the lock and ``stop`` can wait for it; it is information,
not the lock. The same check, taken and released at once, tells a client whether a
supervisor is alive without talking to it (``is_held``). Nothing here imports Trio.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store._locate import run_dir as board_run_dir

LOCK_NAME = "supervisor.lock"
SERVING_NAME = "supervisor.serving"


def runtime_dir(board_dir: Path) -> Path:
    """``.lattice/run``: sockets, the pid file, the journal. Created with mode 0700."""
    path = board_run_dir(board_dir)
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _open_board_dir(board_dir: Path) -> int:
    return os.open(board_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


class PidLock:
    """The supervisor's lock on ``.lattice/`` (its pid in ``run/supervisor.lock``)."""

    def __init__(self, board_dir: Path) -> None:
        self.board_dir = Path(board_dir)
        self.path = board_run_dir(self.board_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``CONFLICT`` naming the pid that holds it.

        A client's :func:`is_held` probe holds the lock for a few microseconds; when
        the lock is busy but no live pid is written in the file, that is a probe (or a
        supervisor that has not written its pid yet), so try again for a moment.
        """
        fd = _open_board_dir(self.board_dir)
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
                        f"(pid {holder} holds the lock on {self.board_dir})",
                        details={"pid": holder},
                    ) from None
                time.sleep(0.01)
        else:
            os.close(fd)
            raise LatticeError(
                Code.CONFLICT,
                f"could not take the lock on {self.board_dir}: another process holds it "
                f"(a supervisor whose pid file {self.path} is gone?); stop it and retry",
            )
        self._fd = fd
        self.write_pid()

    def write_pid(self) -> None:
        """Write our pid into ``run/supervisor.lock`` (``run/`` is made if gone)."""
        runtime_dir(self.board_dir)
        _replace_text(self.path, f"{os.getpid()}\n")

    def mark_serving(self) -> None:
        """Write ``run/supervisor.serving`` (our pid) once the socket is bound: a client
        that then finds the socket missing knows it was removed, not yet made (see
        ``control.check_reachable``)."""
        _replace_text(self.path.with_name(SERVING_NAME), f"{os.getpid()}\n")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def read_holder(path: Path) -> int | None:
    """The pid written in the pid file, if any."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def is_held(board_dir: Path) -> bool:
    """True when a live process holds the supervisor lock (a supervisor is running)."""
    try:
        fd = _open_board_dir(board_dir)
    except (FileNotFoundError, NotADirectoryError):
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
