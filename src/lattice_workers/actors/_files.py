"""Opening a file a worker could have tampered with: never through a symlink.

A run's log and result file live in folders the worker can write to; a worker that
replaces its log by a symlink to ``~/.ssh/id_ed25519`` must not get the supervisor to
read that file for it (``worker logs``, and through ``--listen tcp`` for anyone
allowed to connect). So these files are opened with ``O_NOFOLLOW`` (a symlink fails
with ``ELOOP``) and ``O_NONBLOCK`` (a FIFO put in their place does not hang the
open), and must then be regular files.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from lattice_workers.errors import Code, LatticeError


def open_run_file(path: Path, what: str = "file") -> BinaryIO:
    """Open ``path`` for reading if it is a regular file and not a symlink.

    Raises ``FileNotFoundError`` when it does not exist, and ``LatticeError``
    (``INVALID_ARGUMENT``) when it is a symlink or not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused(path, what, "a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refused(path, what, "not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _refused(path: Path, what: str, kind: str) -> LatticeError:
    return LatticeError(
        Code.INVALID_ARGUMENT,
        f"the run's {what} {path} is {kind}, which the supervisor does not follow or "
        f"read (the worker replaced it); look at the file yourself if you trust it",
    )


def read_regular(path: Path, limit: int = 64 * 1024) -> bytes:
    """Up to ``limit`` bytes of ``path``, a regular file (OSError for anything else),
    opened without following a link or blocking: a worker may have made any file of
    its workspace a FIFO, and opening one to read waits for a writer, for good."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, limit)
    finally:
        os.close(fd)
