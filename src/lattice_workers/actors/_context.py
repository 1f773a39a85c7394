"""What every run shares: the board, git, the journal, the hooks, where workers run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from lattice_workers.actors._definitions import WorkerDefinition
from lattice_workers.actors._executor import Executor, LocalExecutor
from lattice_workers.actors._journal import Journal
from lattice_workers.actors._logsink import DEFAULT_MAX_MIB
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.protocol._messages import RunInfo
from lattice_workers.store import Board
from lattice_workers.store._spend import DailySpend

log = logging.getLogger("lattice_workers.supervisor")


@dataclass
class RunContext:
    """What every actor shares: the board, git, the journal, the hook runner, where
    workers run."""

    board: Board
    worktrees: Worktrees
    journal: Journal
    results_dir: Path
    run_hooks: Callable[[list[dict[str, Any]]], None]
    environ: dict[str, str]
    #: Told each time a run's state changes, its view up to date (the ``Watch`` feed);
    #: the second argument is ``"started"`` for a run just accepted, else None.
    on_state: Callable[[RunInfo, str | None], None] = lambda info, kind: None
    #: The folders :attr:`environ`'s PATH ends with so that workers find ``lattice``;
    #: added to a client's PATH too (:func:`client_base`).
    path_extras: tuple[str, ...] = ()
    #: ``workers.log_max_mib``: a run's log keeps at most this much (a definition's
    #: own ``log_max_mib`` wins); see :mod:`~lattice_workers.actors._logsink`.
    log_max_mib: float = DEFAULT_MAX_MIB
    #: Where workers run; by default on this machine, in worktrees of :attr:`worktrees`.
    executor: Executor = field(default=None)  # type: ignore[assignment]
    #: ``workers.executor``: "local" or "ray", for a definition that names none.
    default_executor: str = "local"
    #: The Ray cluster's executor, when ``workers.executor`` names one.
    ray: Any = None
    #: The day's agent spend, summed incrementally from the board's terminal events:
    #: the budget check reads it, and the total is published for ``ps`` and ``show``.
    spend: DailySpend = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.executor is None:
            self.executor = LocalExecutor(self.board.root, self.worktrees)
        if self.spend is None:
            self.spend = DailySpend(self.board.dir)

    def publish_spend(self) -> None:
        """Write the day's total for ``ps`` and ``show`` (blocking; a failure, such as
        a full disk, only leaves them to read the events)."""
        try:
            self.spend.publish(self.board.dir / "run")
        except OSError as err:
            log.warning("could not publish the day's agent spend: %s", err)

    def executor_kind(self, definition: WorkerDefinition) -> str:
        """Where a run of ``definition`` goes: its own ``executor``, else the board's.
        ``INVALID_WORKER`` when that is Ray and the board names no cluster."""
        from lattice_workers.executors.ray._config import ExecutorConfig, executor_for

        board = ExecutorConfig(kind="ray" if self.ray is not None else "local")
        chosen = definition.executor or self.default_executor
        return executor_for(board, chosen, definition.name)

    def executor_for(self, definition: WorkerDefinition) -> Executor:
        """The executor a run of ``definition`` uses (see :meth:`executor_kind`)."""
        if self.executor_kind(definition) == "ray":
            return cast(Executor, self.ray)
        return self.executor
