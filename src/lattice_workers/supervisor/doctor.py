"""What ``lattice doctor`` adds for runs: an open run is a problem only if no live
supervisor owns it, and ``--fix`` settles the unowned ones the way recovery does.

``--fix`` goes through the supervisor: it starts one if none runs (its recovery
settles everything the journal knows, kills what is left of those runs and requeues
what was never started), then closes any run still open that the supervisor does not
own (written by another tool, or with the journal deleted). With
``LATTICE_NO_AUTOSTART=1`` and no supervisor, it settles directly under the
supervisor's lock, so that none can start half-way: it kills what is left of the
open runs, closes them on the board and removes the worktrees of ours, as recovery
would (that step runs Trio, as the worktree code does).
"""

from __future__ import annotations

from pathlib import Path

from lattice_workers.actors._settle import kill_by_run_id, kill_if_same, write_orphaned
from lattice_workers.store import Board, Problem
from lattice_workers.supervisor import control


def _live_run_ids(board: Board) -> set[str]:
    if not control.is_running(board.dir):
        return set()
    from lattice_workers.protocol._messages import Ps, PsReply

    # This board's own supervisor, whatever LATTICE_ENDPOINT names: the runs it owns.
    with control.client_for(board.root, here=True) as client:
        reply = client.request(Ps())
    assert isinstance(reply, PsReply)
    return {run.run_id for run in reply.runs}


def unowned_problems(board: Board, *, fix: bool = False) -> list[Problem]:
    """The board's problems, without the open runs a live supervisor owns."""
    if fix:
        _heal(board)  # first: a torn end event must not hide how a run ended
        _settle(board)
        _heal(board)  # the snapshots of what settling closed
    live = _live_run_ids(board)
    return [
        p
        for p in board.doctor()
        if not (p.kind == "open_run" and p.details.get("run_id") in live)
    ]


def _heal(board: Board) -> None:
    """Move unreadable log lines aside and rewrite each snapshot that disagrees with
    its log from the log (a full disk can refuse a snapshot after its log line)."""
    problems = board.doctor()
    for task_id in sorted({p.task_id for p in problems if p.kind == "corrupt_line" and p.task_id}):
        if board.task_exists(task_id):
            board.set_aside_bad_lines(task_id)
    for task_id in sorted({p.task_id for p in problems if p.task_id}):
        if board.task_exists(task_id):
            board.repair_snapshot(task_id)


def _remove_worktrees(board: Board, known: list[Path]) -> None:
    """No supervisor runs (we hold its lock): every worktree of ours is left over."""
    import trio

    from lattice_workers.actors._worktree import Worktrees
    from lattice_workers.supervisor._main import worktree_base
    from lattice_workers.supervisor._recovery import remove_leftover_worktrees

    worktrees = Worktrees(worktree_base(board), owner=board.dir)
    trio.run(remove_leftover_worktrees, worktrees, board.root, known)


def _settle(board: Board) -> None:
    import os

    from lattice_workers.supervisor._pidlock import PidLock, runtime_dir

    if control.is_running(board.dir) or os.environ.get("LATTICE_NO_AUTOSTART") != "1":
        control.ensure_running(board.root, board.dir)
        live = _live_run_ids(board)
        for run in board.open_runs():
            if run.get("run_id") not in live:
                write_orphaned(board, run, run.get("run_id"))
        return
    from lattice_workers.actors._journal import Journal
    from lattice_workers.actors._state import RunState

    lock = PidLock(board.dir)
    lock.acquire()  # no supervisor may start while we settle
    try:
        # What the journal knows, as recovery uses it: the exact process group of
        # each started run, and its worktree (the records stay open: the next start
        # closes them, finding nothing left to do).
        started = []
        for record in Journal(runtime_dir(board.dir) / "journal.jsonl").load().values():
            info = record.run
            if info.started_event_id is None or RunState(info.state).is_final:
                continue  # ended, or never started (the next start requeues it)
            started.append(info)
            if info.pid is not None and record.pid_start_time is not None:
                kill_if_same(info.pid, record.pid_start_time)
        open_runs = board.open_runs()
        run_ids = {str(r["run_id"]) for r in open_runs if r.get("run_id")}
        kill_by_run_id(run_ids | {info.run_id for info in started})
        for run in open_runs:
            write_orphaned(board, run, run.get("run_id"))
        _remove_worktrees(board, [Path(i.worktree_path) for i in started if i.worktree_path])
    finally:
        lock.release()
