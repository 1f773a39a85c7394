"""Descendants of a run that left its process group, killed shortly after it ends.

An attempt's end kills its process group; a daemon that moved to a session of its own
(tmux, ``setsid``, a dev server's launcher) is not in it. It still carries the run's
``LATTICE_RUN_ID`` and ``LATTICE_ATTEMPT``, which a scan of ``/proc`` finds, as crash
recovery finds the run's processes (the attempt too: a retry, with the same run id,
may be running by the time of the scan). The scan reads every process's environment:
for a trivial run it costs about as much CPU as the rest of the run (measured: +1 to
+4 ms per run at 1 to 16 concurrent clients), so runs share it. Their ids gather for
:data:`BATCH_SECONDS`, then one scan serves them all, in a thread. A process that
also scrubbed its environment stays out of reach; that would take a cgroup per run.
"""

from __future__ import annotations

import logging

import trio

from lattice_workers.actors._settle import kill_attempts

log = logging.getLogger("lattice_workers.supervisor.leftovers")

#: How long ended runs gather before one scan serves them.
BATCH_SECONDS = 0.1
#: The last scan, at shutdown, gets this long even when cancelled.
CLEANUP_SECONDS = 10.0


class LeftoverSweeper:
    """Kills what ended runs left outside their process groups, in batches."""

    def __init__(self, batch_seconds: float = BATCH_SECONDS) -> None:
        self.batch_seconds = batch_seconds
        self._pending: set[tuple[str, int]] = set()
        self._wakeup = trio.Event()

    def attempt_ended(self, run_id: str, attempt: int) -> None:
        """Scan for the attempt's leftovers soon. Called on the loop; never waits."""
        self._pending.add((run_id, attempt))
        self._wakeup.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Scan for ended runs until cancelled, then once more for the last ones."""
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                await trio.sleep(self.batch_seconds)  # runs that end meanwhile join in
                await self._sweep()
        finally:
            with trio.move_on_after(CLEANUP_SECONDS) as scope:
                scope.shield = True
                await self._sweep()

    async def _sweep(self) -> None:
        batch, self._pending = self._pending, set()
        if not batch:
            return
        try:
            # Abandoned when cancelled: a read of /proc/<pid>/environ can hang on that
            # process's memory (a stuck FUSE or NFS page), and the bound must hold.
            await trio.to_thread.run_sync(kill_attempts, batch, abandon_on_cancel=True)
        except trio.Cancelled:
            self._pending |= batch  # the last sweep takes them again
            raise
        except OSError:  # no /proc (a sandbox): the runs go on without the sweep
            log.exception("could not scan /proc for what ended runs left behind")
