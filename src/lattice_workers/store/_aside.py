"""Moving the lines of a task log that cannot be read out of the log, never deleting them.

A crash in the middle of an append leaves a torn last line; a disk error or a hand
edit can leave an undecodable one anywhere. Such a line makes ``doctor`` report
``corrupt_line`` for good, and neither replay nor ``rebuild`` may drop it (nothing
written is ever lost). ``doctor --fix`` calls :func:`set_aside_bad_lines`: the
bad lines go, byte for byte, into a dated file beside the log
(``events/<task>.jsonl.aside-<UTC time>``, which no tool reads as a log), and the log
is rewritten atomically without them, under the task's locks; the caller then
rewrites the snapshot from the cleaned log.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lattice_workers.store._ids import validate_task_id
from lattice_workers.store._jsonio import append_durable, atomic_write_bytes, read_bytes
from lattice_workers.store._locks import locked, task_lock_keys

if TYPE_CHECKING:
    from lattice_workers.store._board import Board

ASIDE_MARK = ".aside-"


def _readable(line: bytes) -> bool:
    """Whether ``parse_jsonl`` takes this line as an event (the same test)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("type"), str)


def set_aside_bad_lines(board: Board, task_id: str) -> tuple[Path, int] | None:
    """Move the unreadable lines of the task's log aside; (aside file, lines moved).

    None when every line reads. The aside file is written (and fsynced) before the
    log is replaced, so a crash in between leaves the line in both places, never in
    neither; a second run then finds the log clean.
    """
    task_id = validate_task_id(task_id)
    path = board.events_path(task_id)
    with locked(board.locks_dir, task_lock_keys(task_id)):
        raw = read_bytes(path)
        if raw is None:
            return None
        good: list[bytes] = []
        bad: list[bytes] = []
        for line in raw.split(b"\n"):
            if line.strip():
                (good if _readable(line.strip()) else bad).append(line)
        if not bad:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}{ASIDE_MARK}{stamp}")
        append_durable(aside, b"".join(line + b"\n" for line in bad))
        mode = os.stat(path).st_mode & 0o777
        atomic_write_bytes(path, b"".join(line + b"\n" for line in good))
        os.chmod(path, mode)
    return aside, len(bad)
