"""Crash recovery: settle every run a previous supervisor left open (SPEC section 4).

Runs at every start, before the socket accepts requests. Sources of truth: the run
journal (what was accepted, pids, worktrees) and the board (``process_started``
events with no end). For each open run that no live actor owns:

1. settle it with :func:`~lattice_workers.actors._settle.settle_unowned`, the path
   ``doctor --fix`` takes too: kill its process group if its leader is really the same
   process (pid and start time match the journal), kill what carries its run id,
   write ``process_failed(orphaned)`` when the board shows it started and not ended,
   remove its worktree and every other one of ours, then ``git worktree prune``;
2. record it as ended in the journal, and check the snapshots of the tasks touched;
3. runs that were accepted but never started are queued again in their first order.

Every step checks before it acts, so recovery is idempotent: a crash in the middle
and another start give the same end state.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio

from lattice_workers.actors._journal import Journal, JournalRecord
from lattice_workers.actors._pool import kept_under
from lattice_workers.actors._registry import Registry
from lattice_workers.actors._settle import ORPHANED_ERROR, settle_unowned, write_recorded_end
from lattice_workers.actors._state import Reason, RunState
from lattice_workers.actors._worktree import remove_leftovers
from lattice_workers.errors import LatticeError
from lattice_workers.store import Board

log = logging.getLogger("lattice_workers.supervisor.recovery")


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



async def recover(
    board: Board,
    journal: Journal,
    registry: Registry,
    *,
    worktree_base: Path,
    keep_finished: int,
    keep_finished_seconds: float,
    kept_elsewhere: Mapping[tuple[str, int], dict[str, Any]] | None = None,
    spare_pool: bool = False,
) -> list[Path]:
    """Settle what a previous supervisor left open, then requeue unstarted runs.

    Takes what it uses, not the supervisor: the board, the journal, the registry that
    gets the finished and requeued runs, where the worktrees are, and the retention
    limits the journal is compacted to. ``kept_elsewhere``: the work of attempts that
    ran on another machine, kept there (see :func:`settle_unowned`). ``spare_pool``
    (``workers.keep_pool_on_stop``): the pooled workspaces the last supervisor left
    idle and no open run names are not removed but returned, for the pool to check
    and adopt (:func:`~lattice_workers.actors._pool.kept_under`).
    """
    records = await trio.to_thread.run_sync(journal.load)
    open_on_board = await trio.to_thread.run_sync(board.open_runs)
    # A run the journal saw end whose terminal line the board lost (torn by a crash, or
    # set aside by doctor --fix): its end is known, so that end is written, not
    # "orphaned" (which would turn an exit 0 into a failure).
    open_by_started = {r["started_event_id"]: r for r in open_on_board}
    for record in records.values():
        if RunState(record.run.state).is_final:
            lost = open_by_started.pop(record.run.started_event_id or "", None)
            if lost is not None:
                await trio.to_thread.run_sync(write_recorded_end, board, lost, record.run)
    requeue: list[JournalRecord] = []
    started: list[JournalRecord] = []
    for record in records.values():
        if RunState(record.run.state).is_final:
            continue
        (started if record.run.started_event_id else requeue).append(record)
    touched = {r["task_id"] for r in open_on_board} | {r.run.task_id for r in started}
    # A full disk can refuse a snapshot after its log line: a snapshot that still
    # lists a run the log has closed is repaired below too.
    touched |= await trio.to_thread.run_sync(_snapshots_with_open_runs, board)
    # One settle path, as doctor --fix: kill what is left, close on the board, remove
    # the worktrees (no run is live yet: every worktree of ours is left over, but the
    # idle pooled ones the configuration keeps).
    spared: list[Path] = []
    if spare_pool:
        spared = await trio.to_thread.run_sync(
            lambda: kept_under(
                worktree_base,
                board.root,
                board.dir,
                in_use=worktrees_of(open_on_board, started + requeue),
            )
        )
    await trio.to_thread.run_sync(
        lambda: settle_unowned(
            board,
            list(open_by_started.values()),
            journal_runs=started + requeue,  # never started: an id, no process group
            remove_worktrees=partial(
                remove_leftovers, worktree_base, board.root, owner=board.dir, spare=spared
            ),
            kept_elsewhere=kept_elsewhere,
        )
    )
    for index, record in enumerate(started):
        info = record.run
        started[index] = records[info.run_id] = record = msgspec.structs.replace(
            record,
            run=msgspec.structs.replace(
                info,
                state=str(RunState.FAILED),
                reason=str(Reason.ORPHANED),
                error=ORPHANED_ERROR,
                ended_at=info.ended_at or time.time(),
                pid=None,
            ),
        )
        await trio.to_thread.run_sync(journal.write, record)
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
        lambda: journal.compact(
            records, keep_finished=keep_finished, max_age_seconds=keep_finished_seconds
        )
    )
    registry.restore_finished([r for r in kept.values() if RunState(r.run.state).is_final])
    for record in requeue:
        await registry.requeue(record)
    if requeue or open_on_board:
        log.info(
            "recovery: %d open on the board, %d journal records settled, %d requeued",
            len(open_on_board),
            settled,
            len(requeue),
        )
    return spared


def worktrees_of(
    open_on_board: list[dict[str, Any]], records: list[JournalRecord]
) -> list[str]:
    """The worktree paths that runs still open name, on the board or in the journal."""
    paths = [str(r["worktree_path"]) for r in open_on_board if r.get("worktree_path")]
    return paths + [r.run.worktree_path for r in records if r.run.worktree_path]
