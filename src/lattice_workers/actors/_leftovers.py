"""Descendants of a run that left its process group, killed shortly after it ends.

An attempt's end kills its process group; a daemon that moved to a session of its own
(tmux, ``setsid``, a dev server's launcher) is not in it. It still carries the run's
``LATTICE_RUN_ID`` and ``LATTICE_ATTEMPT``, which a scan of ``/proc`` finds, as crash
recovery finds the run's processes (the attempt too: a retry, with the same run id,
may be running by the time of the scan). Each scan repeats until it finds none (see
``_settle._kill_where``): descendants that keep forking new sessions are all dead
when it returns. A run its supervisor stopped (cancel, timeout, shutdown), or whose
group still had members when its leader ended, waits for that scan before its end is
written, so that no process of it is alive once its end is visible; a run that simply
exited does not wait (a daemon that left its group then dies within about
:data:`BATCH_SECONDS`). Where each run has a cgroup (:mod:`._cgroup`), the sweep first kills
the attempt's cgroup, which reaches a process that scrubbed its environment too. The
scan reads every process's environment:
for a trivial run it costs about as much CPU as the rest of the run (measured: +1 to
+4 ms per run at 1 to 16 concurrent clients), so runs share it. Their ids gather for
:data:`BATCH_SECONDS`, then one scan serves them all, in a thread. A process that
also scrubbed its environment stays out of reach; that would take a cgroup per run.
"""

from __future__ import annotations

import logging

import trio

from lattice_workers.actors._cgroup import RunCgroups
from lattice_workers.actors._settle import kill_attempts

log = logging.getLogger("lattice_workers.supervisor.leftovers")

#: How long ended runs gather before one scan serves them.
BATCH_SECONDS = 0.1
#: The last scan, at shutdown, gets this long even when cancelled.
CLEANUP_SECONDS = 10.0


class LeftoverSweeper:
    """Kills what ended runs left outside their process groups, in batches."""

    def __init__(
        self, batch_seconds: float = BATCH_SECONDS, cgroups: RunCgroups | None = None
    ) -> None:
        self.batch_seconds = batch_seconds
        self.cgroups = cgroups
        self._busy: set[tuple[str, int]] = set()  # cgroups not empty yet at their sweep
        self._pending: set[tuple[str, int]] = set()
        self._wakeup = trio.Event()
        self._swept = trio.Event()  # set when the scan of the pending batch is done

    def attempt_ended(self, run_id: str, attempt: int) -> trio.Event:
        """Scan for the attempt's leftovers soon. Called on the loop; never waits.

        Returns an event set once that scan is over (its kills are then done: the scan
        repeats until it finds none), for a run whose end must wait for it.
        """
        self._pending.add((run_id, attempt))
        self._wakeup.set()
        return self._swept

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

    def _kill(self, batch: set[tuple[str, int]]) -> None:
        """In a thread: the attempts' cgroups (if any), then the scan of /proc."""
        if self.cgroups is not None:
            self.cgroups.kill(batch)
        kill_attempts(batch)
        if self.cgroups is not None:
            self._busy = self.cgroups.release(batch | self._busy)

    async def _sweep(self) -> None:
        batch, self._pending = self._pending, set()
        swept, self._swept = self._swept, trio.Event()
        if not batch:
            swept.set()
            return
        try:
            # Abandoned when cancelled: a read of /proc/<pid>/environ can hang on that
            # process's memory (a stuck FUSE or NFS page), and the bound must hold.
            await trio.to_thread.run_sync(self._kill, batch, abandon_on_cancel=True)
        except trio.Cancelled:
            self._pending |= batch  # the last sweep takes them again
            self._swept = swept
            raise
        except OSError:  # no /proc (a sandbox): the runs go on without the sweep
            log.exception("could not scan /proc for what ended runs left behind")
        swept.set()
