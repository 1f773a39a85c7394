"""Signals to a run's process group, and the identity of a process across restarts.

Every worker is the leader of its own session and process group
(``start_new_session``), so one ``killpg`` reaches the worker and everything it
forked that did not leave the group itself. Linux never reuses a pid as long as a
process group with that id exists, so signalling the group after the leader has been
reaped is still safe while any member lives.
"""

from __future__ import annotations

import os
import signal


def kill_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    A pid plus its start time names one process for good: a recycled pid has another
    start time. None when the process is gone or /proc is not there.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
