"""What ``lattice doctor`` adds for runs: an open run is a problem only if no live
supervisor owns it, and ``--fix`` settles the unowned ones the way recovery does.

``--fix`` goes through the supervisor: it starts one if none runs (its recovery
settles everything the journal knows, kills what is left of those runs and requeues
what was never started), then closes any run still open that the supervisor does not
own (written by another tool, or with the journal deleted). With
``LATTICE_NO_AUTOSTART=1`` and no supervisor, it settles directly under the
supervisor's lock, so that none can start half-way, on the path recovery takes
(:func:`~lattice_workers.actors._settle.settle_unowned`): it kills what is left of
the open runs, closes them on the board and removes the worktrees of ours.
"""

from __future__ import annotations

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


def pooled_workspaces(board: Board) -> list[str]:
    """The board's pooled workspaces (see :mod:`lattice_workers.actors._pool`), for the
    report: they hold disk space, and outlive runs by design."""
    from lattice_workers.actors._pool import pooled_under
    from lattice_workers.supervisor._settings import worktree_base

    return [str(p) for p in pooled_under(worktree_base(board), board.root, board.dir)]


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


def _settle(board: Board) -> None:
    import os

    from lattice_workers.actors._settle import settle_unowned

    if control.is_running(board.dir) or os.environ.get("LATTICE_NO_AUTOSTART") != "1":
        control.ensure_running(board.root, board.dir)
        live = _live_run_ids(board)
        # A supervisor runs: nothing may be killed or removed (a run it starts now is
        # not in the ps just read); the runs it does not own are closed.
        settle_unowned(
            board, [r for r in board.open_runs() if r.get("run_id") not in live], kill=False
        )
        return
    from lattice_workers.actors._journal import Journal
    from lattice_workers.actors._state import RunState
    from lattice_workers.actors._worktree import remove_leftovers
    from lattice_workers.supervisor._pidlock import PidLock, runtime_dir
    from lattice_workers.supervisor._settings import worktree_base

    run_dir = runtime_dir(board.dir)
    lock = PidLock(board.dir)
    lock.acquire()  # no supervisor may start while we settle
    try:
        # What the journal knows, as recovery uses it: the exact process group of
        # each started run, and its worktree (the records stay open: the next start
        # closes them, finding nothing left to do). One never started is left for the
        # next start to requeue.
        started = [
            record
            for record in Journal(run_dir / "journal.jsonl").load().values()
            if record.run.started_event_id is not None
            and not RunState(record.run.state).is_final
        ]
        base = worktree_base(board)
        settle_unowned(
            board,
            board.open_runs(),
            journal_runs=started,
            remove_worktrees=lambda known: remove_leftovers(
                base, board.root, known, owner=board.dir
            ),
        )
    finally:
        lock.release()
