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
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from lattice_workers.actors._journal import JournalRecord
from lattice_workers.actors._settle import (
    ORPHANED_ERROR,
    kill_by_run_id,
    kill_if_same,
    write_orphaned,
    write_recorded_end,
)
from lattice_workers.actors._state import Reason, RunState
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.errors import LatticeError

if TYPE_CHECKING:
    from lattice_workers.store import Board
    from lattice_workers.supervisor._main import Supervisor

log = logging.getLogger("lattice_workers.supervisor.recovery")


async def remove_leftover_worktrees(
    worktrees: Worktrees, root: Path, known: Iterable[Path] = ()
) -> None:
    """Remove ``known`` and every worktree of ours under the base folder, then prune.

    Only while no run is live (recovery, or ``doctor --fix`` under the supervisor's
    lock): then every worktree of ours is left over. A project outside git has none
    under the base folder (``known`` ones are still removed). A path that cannot be
    removed (say, under a base folder of an earlier configuration) is logged and the
    others are still removed.
    """
    found = list(known)
    try:
        found += await worktrees.existing(root)
    except LatticeError as exc:  # not a git repository
        log.info("worktree listing skipped: %s", exc.message)
    except OSError as exc:
        log.warning("could not list the worktrees of %s: %s", root, exc)
    for path in dict.fromkeys(found):
        try:
            await worktrees.remove(root, path)
        except LatticeError as exc:
            log.warning("could not remove the worktree %s: %s", path, exc.message)
        except OSError as exc:  # files we may not delete (a worker ran a container, say)
            log.warning("could not remove the worktree %s: %s", path, exc)
    try:
        await worktrees.prune(root)
    except LatticeError as exc:
        log.info("git worktree prune skipped: %s", exc.message)


def _snapshots_with_open_runs(board: Board) -> set[str]:
    """Tasks whose snapshot file lists an active process (a cheap byte test per file)."""
    found: set[str] = set()
    folder = board.dir / "tasks"
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return found
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            raw = (folder / name).read_bytes()
        except OSError:
            continue
        at = raw.find(b'"active_processes"')
        if at >= 0 and not re.match(rb'"active_processes"\s*:\s*\[\s*\]', raw[at:]):
            found.add(name.removesuffix(".json"))
    return found


async def recover(sup: Supervisor) -> None:
    """Settle what a previous supervisor left open, then requeue unstarted runs."""
    board = sup.board
    records = await trio.to_thread.run_sync(sup.journal.load)
    open_on_board = await trio.to_thread.run_sync(board.open_runs)
    open_by_started = {r["started_event_id"]: r for r in open_on_board}
    requeue: list[JournalRecord] = []
    touched = {r["task_id"] for r in open_on_board}
    touched |= {
        r.run.task_id
        for r in records.values()
        if r.run.started_event_id and not RunState(r.run.state).is_final
    }
    # A full disk can refuse a snapshot after its log line: a snapshot that still
    # lists a run the log has closed is repaired below too.
    touched |= await trio.to_thread.run_sync(_snapshots_with_open_runs, board)
    worktrees: list[Path] = []
    for record in records.values():
        info = record.run
        if RunState(info.state).is_final:
            board_run = open_by_started.pop(info.started_event_id or "", None)
            if board_run is not None:  # its terminal line was lost: the journal knows it
                await trio.to_thread.run_sync(write_recorded_end, board, board_run, info)
            continue
        if info.started_event_id is None:
            requeue.append(record)
            continue
        if info.pid is not None and record.pid_start_time is not None:
            await trio.to_thread.run_sync(kill_if_same, info.pid, record.pid_start_time)
        if info.worktree_path:
            worktrees.append(Path(info.worktree_path))
        board_run = open_by_started.pop(info.started_event_id, None)
        if board_run is not None:
            await trio.to_thread.run_sync(write_orphaned, board, board_run, info.run_id)
        info.state = str(RunState.FAILED)
        info.reason = str(Reason.ORPHANED)
        info.error = ORPHANED_ERROR
        info.ended_at = info.ended_at or time.time()
        info.pid = None
        await trio.to_thread.run_sync(sup.journal.write, record)
    # Descendants that left the leader's group, or a group whose leader already
    # exited: every process still carrying an open run's id in its environment.
    open_run_ids = {r.run.run_id for r in records.values() if not RunState(r.run.state).is_final}
    open_run_ids |= {r["run_id"] for r in open_on_board if r.get("run_id")}
    await trio.to_thread.run_sync(kill_by_run_id, open_run_ids)
    for board_run in open_by_started.values():
        # Open on the board but unknown to the journal (deleted journal, or a run
        # started by another tool): nothing to kill that we can identify; close it.
        await trio.to_thread.run_sync(write_orphaned, board, board_run, board_run.get("run_id"))
    await remove_leftover_worktrees(sup.ctx.worktrees, board.root, worktrees)
    # A crash between a log append and its snapshot write leaves the two apart; the
    # log is the truth, so every task an open run touched gets its snapshot checked.
    for task_id in touched:
        try:
            if await trio.to_thread.run_sync(board.repair_snapshot, task_id):
                log.info("recovery: snapshot of %s rewritten from its log", task_id)
        except LatticeError as err:
            log.warning("recovery: could not check %s: %s", task_id, err.message)
    settled = len(records) - len(requeue)
    kept = await trio.to_thread.run_sync(
        lambda: sup.journal.compact(
            records,
            keep_finished=sup.settings.keep_finished,
            max_age_seconds=sup.settings.keep_finished_seconds,
        )
    )
    sup.registry.restore_finished([r for r in kept.values() if RunState(r.run.state).is_final])
    for record in requeue:
        await sup.registry.requeue(record)
    if requeue or open_on_board:
        log.info(
            "recovery: %d open on the board, %d journal records settled, %d requeued",
            len(open_on_board),
            settled,
            len(requeue),
        )
