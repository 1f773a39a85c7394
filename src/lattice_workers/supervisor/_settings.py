"""The ``workers`` section of ``.lattice/config.json``, and where run worktrees live.

Apart from the supervisor's own module so that ``doctor --fix``, which settles runs
with no supervisor running, finds the same worktree folder without importing it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lattice_workers.actors._logsink import DEFAULT_MAX_MIB
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.errors import Code, LatticeError
from lattice_workers.executors.ray._config import parse_executor
from lattice_workers.store import Board


class Settings:
    """The ``workers`` section of ``.lattice/config.json`` (all optional).

    Refused with one clear sentence when a value is not what it must be, so that a
    typo neither crashes a start nor half-applies a reload.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        section = config.get("workers")
        section = section if isinstance(section, dict) else {}
        self.max_concurrent = int(_number(section, "max_concurrent", 8, minimum=1, whole=True))
        self.keep_finished = int(_number(section, "keep_finished", 1000, minimum=0, whole=True))
        self.keep_finished_seconds = _number(section, "keep_finished_days", 7, minimum=0) * 86400
        self.shutdown_drain_seconds = _number(section, "shutdown_drain_seconds", 60, minimum=0)
        self.log_max_mib = _number(section, "log_max_mib", DEFAULT_MAX_MIB, minimum=0.001)
        self.daily_budget_usd: float | None = None
        if section.get("daily_budget_usd") is not None:
            self.daily_budget_usd = _number(section, "daily_budget_usd", 0, minimum=0)
        #: ``workers.executor``: where runs go unless their definition says otherwise.
        self.executor = parse_executor(section)
        # Idle workspaces kept for reuse (actors/_pool.py): as many as can run at once,
        # so that a steady load never makes one; 0 turns the pool off.
        self.worktree_pool = int(
            _number(section, "worktree_pool", self.max_concurrent, minimum=0, whole=True)
        )
        # Whether `supervisor stop` leaves the idle pooled workspaces for the next start to
        # check and adopt (actors/_pool.py), instead of removing them.
        self.keep_pool_on_stop = _flag(section, "keep_pool_on_stop", False)
        worktree_dir = os.environ.get("LATTICE_WORKTREE_DIR") or section.get("worktree_dir")
        self.worktree_dir = Path(worktree_dir) if worktree_dir else None


def _number(
    section: dict[str, Any], key: str, default: float, *, minimum: float, whole: bool = False
) -> float:
    value = section.get(key, default)
    kind = "a whole number" if whole else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (whole and not float(value).is_integer())
        or value < minimum
    ):
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"workers.{key} in .lattice/config.json must be {kind} of at least {minimum:g}, "
            f"got {value!r}; fix the file",
        )
    return float(value)


def _flag(section: dict[str, Any], key: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"workers.{key} in .lattice/config.json must be true or false, got {value!r}; "
            "fix the file",
        )
    return value


def worktree_base(board: Board, settings: Settings | None = None) -> Path:
    """Where the board's run worktrees live: ``LATTICE_WORKTREE_DIR``, else
    ``workers.worktree_dir``, else the default under the user's cache folder."""
    settings = settings or Settings(board.config)
    return settings.worktree_dir or Worktrees.default_base_dir(board.root)
