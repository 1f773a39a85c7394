"""Noticing that a worker removed the supervisor's socket or runtime folder.

The lock that makes a supervisor the only one (see :mod:`._pidlock`) cannot be
removed by a worker, but its socket can: ``rm -rf .lattice/run`` leaves a supervisor
that nobody can reach while it still owns live runs. It must not go on as if nothing
happened (clients would wait on a socket that no longer exists), nor can another
supervisor take over (its recovery would kill the live runs). So the supervisor
watches its socket's folder and ``.lattice/run`` with inotify (an event, no polling)
and, when the socket goes, stops accepting and drains: its live runs end on their
own, then it exits and the next command starts a new supervisor.

inotify through ctypes (no dependency): Linux only, as pidfds are; elsewhere, or
when the kernel refuses a watch, the supervisor runs without this watch and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import trio

IN_MOVED_FROM = 0x00000040
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_IGNORED = 0x00008000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len

#: What a watched folder reports when it, or a name in it, goes away.
GONE_MASK = IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF


class Inotify:
    """One inotify descriptor watching folders for names that disappear."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd: int | None = fd
        self._folders: dict[int, Path] = {}

    def watch(self, folder: Path, mask: int = GONE_MASK) -> None:
        assert self.fd is not None
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), mask)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"cannot watch {folder}: {os.strerror(code)}")
        self._folders[wd] = folder

    async def gone(self) -> AsyncIterator[Path]:
        """Each path that disappears: a name in a watched folder, or the folder itself."""
        assert self.fd is not None
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size : offset + _HEADER.size + length]
                offset += _HEADER.size + length
                folder = self._folders.get(wd)
                if folder is None:
                    continue
                if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                    yield folder
                elif mask & (IN_DELETE | IN_MOVED_FROM):
                    yield folder / os.fsdecode(name.rstrip(b"\0"))

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
