"""A worker process spawned from a worker thread and awaited on the Trio loop.

Why not ``trio.lowlevel.open_process``: it spawns in a thread hop of its own, and a
trivial run's cost is dominated by such fixed costs (each hop is a fifth of a
millisecond of the supervisor's CPU, measured). Spawning with ``subprocess.Popen``
inside the hop that already writes ``process_started`` and opens the log, and
noting the pid for recovery in the same hop, saves two of a run's five hops.

Waiting is what Trio does on Linux: a pidfd (``pidfd_open``, Linux 5.3+) becomes
readable when the process exits, the loop waits on it like on a socket, and only
then is the process reaped, so waiting never blocks a thread and a cancelled wait
leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import trio

from lattice_workers.actors._process_group import kill_group


class Child:
    """One spawned process, its pidfd, and its exit status once reaped."""

    __slots__ = ("_pidfd", "_popen")

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        self._popen = popen
        self._pidfd: int | None = pidfd

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        output_fd: int,
        stdin_fd: int | None = None,
    ) -> Child:
        """Start ``argv`` as the leader of a new session (blocking: call it in a thread).

        stdin is ``stdin_fd`` (an agent's prompt), else ``/dev/null``; stdout and stderr
        go to ``output_fd``. Raises
        ``OSError`` when the program cannot start or the kernel has no ``pidfd_open``
        (the process, if it started, is killed and reaped first).
        """
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL if stdin_fd is None else stdin_fd,
            stdout=output_fd,
            stderr=output_fd,
            start_new_session=True,
        )
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError as exc:
            kill_group(popen.pid, signal.SIGKILL)
            popen.wait()
            raise OSError(
                exc.errno, f"waiting for a worker needs pidfd_open (Linux 5.3+): {exc.strerror}"
            ) from exc
        return cls(popen, pidfd)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once :meth:`wait` has returned (negative: the signal), else None."""
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait until the process exits, reap it, and return its status. Cancellable."""
        if self._popen.returncode is None:
            assert self._pidfd is not None
            await trio.lowlevel.wait_readable(self._pidfd)
            # Readable means exited: this reaps a zombie and does not block.
            self._popen.wait()
            self.close()
        return self._popen.returncode

    def close(self) -> None:
        """Release the pidfd (idempotent). The process is reaped by :meth:`wait` only."""
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
