"""Crash recovery: settle every run a previous supervisor left open (SPEC section 4).

Runs at every start, before the socket accepts requests. Sources of truth: the run
journal (what was accepted, pids, worktrees) and the board (``process_started``
events with no end). For each open run that no live actor owns:

1. if its process group still lives and its leader is really the same process (pid
   and start time match the journal), kill the group;
2. write ``process_failed(orphaned)`` when the board shows it started and not ended;
3. remove its worktree; then ``git worktree prune`` once;
4. runs that were accepted but never started are queued again in their first order.

Every step checks before it acts, so recovery is idempotent: a crash in the middle
and another start give the same end state.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from lattice.actors._journal import JournalRecord
from lattice.actors._process_group import kill_group, process_start_time
from lattice.actors._state import Reason, RunState

if TYPE_CHECKING:
    from lattice.supervisor._main import Supervisor

log = logging.getLogger("lattice.supervisor.recovery")

ORPHANED_ERROR = "the supervisor that owned this run stopped without ending it"


async def recover(sup: Supervisor) -> None:
    """Settle what a previous supervisor left open, then requeue unstarted runs."""
    board = sup.board
    records = await trio.to_thread.run_sync(sup.journal.load)
    open_on_board = await trio.to_thread.run_sync(board.open_runs)
    open_by_started = {r["started_event_id"]: r for r in open_on_board}
    requeue: list[JournalRecord] = []
    worktrees: list[Path] = []
    for record in records.values():
        info = record.run
        if RunState(info.state).is_final:
            continue
        if info.started_event_id is None:
            requeue.append(record)
            continue
        if info.pid is not None and record.pid_start_time is not None:
            await trio.to_thread.run_sync(_kill_if_same, info.pid, record.pid_start_time)
        if info.worktree_path:
            worktrees.append(Path(info.worktree_path))
        board_run = open_by_started.pop(info.started_event_id, None)
        if board_run is not None:
            await _write_orphaned(sup, board_run, info.run_id)
        info.state = str(RunState.FAILED)
        info.reason = str(Reason.ORPHANED)
        info.error = ORPHANED_ERROR
        info.ended_at = info.ended_at or time.time()
        info.pid = None
        await trio.to_thread.run_sync(sup.journal.write, record)
    for board_run in open_by_started.values():
        # Open on the board but unknown to the journal (deleted journal, or a run
        # started by another tool): nothing to kill that we can identify; close it.
        await _write_orphaned(sup, board_run, board_run.get("run_id"))
    for path in worktrees:
        await sup.ctx.worktrees.remove(board.root, path)
    try:
        await sup.ctx.worktrees.prune(board.root)
    except Exception as exc:  # not a git repository: nothing to prune
        log.info("git worktree prune skipped: %s", exc)
    settled = len(records) - len(requeue)
    kept = await trio.to_thread.run_sync(
        lambda: sup.journal.compact(
            records,
            keep_finished=sup.settings.keep_finished,
            max_age_seconds=sup.settings.keep_finished_seconds,
        )
    )
    sup.registry.restore_finished(
        [r for r in kept.values() if RunState(r.run.state).is_final]
    )
    for record in requeue:
        await sup.registry.requeue(record)
    if requeue or open_on_board:
        log.info(
            "recovery: %d open on the board, %d journal records settled, %d requeued",
            len(open_on_board),
            settled,
            len(requeue),
        )


def _kill_if_same(pid: int, start_time: int) -> None:
    if process_start_time(pid) == start_time:
        log.info("recovery: killing the process group of orphaned worker pid %d", pid)
        kill_group(pid, signal.SIGKILL)


async def _write_orphaned(sup: Supervisor, board_run: dict[str, Any], run_id: str | None) -> None:
    board = sup.board
    data: dict[str, Any] = {
        "process_type": board_run.get("process_type"),
        "started_event_id": board_run["started_event_id"],
        "run_id": run_id,
        "commit_sha": board_run.get("commit_sha"),
        "reason": str(Reason.ORPHANED),
        "error": ORPHANED_ERROR,
        "duration_seconds": None,
        "log_path": board_run.get("log_path"),
    }
    started_event_id = board_run["started_event_id"]

    def still_open(snapshot: dict[str, Any]) -> None:
        from lattice.errors import Code, LatticeError

        if not any(
            p.get("started_event_id") == started_event_id
            for p in snapshot.get("active_processes", [])
        ):
            raise LatticeError(Code.CONFLICT, "already settled")

    def write() -> None:
        from lattice.errors import LatticeError

        try:
            board.append(
                board_run["task_id"],
                "process_failed",
                data,
                actor=board_run.get("actor") or "agent:lattice-supervisor",
                agent_meta={"model": None, "session": run_id},
                check=still_open,
                hooks=False,
            )
        except LatticeError as err:
            if err.message != "already settled":
                raise

    await trio.to_thread.run_sync(write)
    log.info("recovery: run %s on %s closed as orphaned", run_id, board_run["task_id"])
