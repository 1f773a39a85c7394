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

A board whose ``workers.executor`` names a Ray cluster has parts there too: each
node's host of the board, and the attempts it hosts (:mod:`lattice_workers.executors.
ray`). Doctor joins the cluster and reports an attempt that no live run owns
(``cluster_run``) and, when no supervisor runs, a host that is still there
(``cluster_host``: a supervisor ends its hosts when it stops); ``--fix`` settles them
as a supervisor's start does: each attempt stopped, its work kept when its node
answers, its worktree removed, and (no supervisor) the hosts ended. A cluster that
does not answer is a problem too (``cluster_unreachable``): what is there is unknown.
"""

from __future__ import annotations

from typing import Any

import trio

from lattice_workers.errors import LatticeError
from lattice_workers.store import Board, Problem
from lattice_workers.supervisor import control

#: Bound of doctor's whole visit to the cluster (join, list, settle).
CLUSTER_SECONDS = 180.0


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
    ] + _on_cluster(board, live, supervised=control.is_running(board.dir))[0]


def _cluster_of(board: Board) -> Any:
    """The board's Ray executor when its config names a cluster, else None."""
    from lattice_workers.executors.ray._config import parse_executor

    try:
        config = parse_executor(board.config.get("workers") or {})
    except LatticeError:
        return None  # a config the supervisor refuses: said when it starts
    if config.kind != "ray":
        return None
    from lattice_workers.executors.ray._executor import RayExecutor

    return RayExecutor(board.root, config)


def _on_cluster(
    board: Board, live: set[str], *, supervised: bool, fix: bool = False
) -> tuple[list[Problem], dict[tuple[str, int], dict[str, Any]]]:
    """The board's parts on its cluster that no supervisor owns, as problems; with
    ``fix``, settled first (then the problems are what is left), and the work kept
    by attempt for the runs' terminal events. Nothing when no cluster is named."""
    cluster = _cluster_of(board)
    if cluster is None:
        return [], {}

    async def visit() -> tuple[list[Problem], dict[tuple[str, int], dict[str, Any]]]:
        kept: dict[tuple[str, int], dict[str, Any]] = {}
        with trio.fail_after(CLUSTER_SECONDS):
            if fix:
                for entry in await cluster.settle_orphans(live=lambda r: r in live):
                    if entry.get("changes") and entry.get("attempt"):
                        kept[(entry["run_id"], int(entry["attempt"]))] = entry["changes"]
                if not supervised:
                    await cluster.close()  # its hosts, now idle: no supervisor owns them
            found = await cluster.survey(live=lambda r: r in live)
        return [_cluster_problem(entry, supervised) for entry in found
                if "host" not in entry or not supervised], kept

    try:
        return trio.run(visit)
    except (LatticeError, trio.TooSlowError) as err:
        said = err.message if isinstance(err, LatticeError) else "it did not answer in time"
        return [Problem(
            "cluster_unreachable", None,
            f"this board's runs on the Ray cluster at {cluster.config.address} could not be "
            f"looked at: {said}",
        )], {}


def _cluster_problem(entry: dict[str, Any], supervised: bool) -> Problem:
    if "run_id" in entry:
        return Problem(
            "cluster_run", None,
            f"run {entry['run_id']} (attempt {entry['attempt']}) is on Ray node "
            f"{entry['node'][:12]} and no {'live run' if supervised else 'supervisor'} owns "
            "it; "
            + (
                "`lattice supervisor stop` then `lattice doctor --fix` (or the next start) "
                "stops it, keeps its work and removes its worktree"
                if supervised
                else "`lattice doctor --fix` stops it, keeps its work and removes its worktree"
            ),
            details=entry,
        )
    if "host" in entry:
        return Problem(
            "cluster_host", None,
            f"this board's host on Ray node {entry['node'][:12]} is still there with no "
            "supervisor; `lattice doctor --fix` ends it",
            details=entry,
        )
    return Problem(
        "cluster_actor", None,
        f"the actor {entry['actor']} of this board is on the Ray cluster with no "
        "supervisor; `lattice doctor --fix` ends it",
        details=entry,
    )


def pooled_workspaces(board: Board) -> tuple[list[str], str]:
    """The board's pooled workspaces (see :mod:`lattice_workers.actors._pool`), for the
    report: they hold disk space, and outlive runs by design; and what becomes of them
    (a live supervisor reuses them; with none, the next start adopts those it keeps,
    after checking each, and removes the others)."""
    from lattice_workers.actors._pool import kept_under, pooled_under
    from lattice_workers.supervisor._settings import Settings, worktree_base

    settings = Settings(board.config)
    base = worktree_base(board, settings)
    pool = [str(p) for p in pooled_under(base, board.root, board.dir)]
    if not pool or control.is_running(board.dir):
        return pool, "reused by the next runs"
    kept = len(kept_under(base, board.root, board.dir)) if settings.keep_pool_on_stop else 0
    if kept == len(pool):
        return pool, "kept for the next start, which checks each before reusing it"
    return pool, (
        f"no supervisor runs: the next start (or `doctor --fix`) removes {len(pool) - kept}"
        + (f" and checks {kept} before reusing them" if kept else "")
    )


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
        # Its start settled what the cluster held. Nothing there is stopped here: a run
        # it accepts after the ps just read would look unowned, and its host killed
        # with every attempt on that node (the report still names what it finds).
        _on_cluster(board, live, supervised=True, fix=False)
        # A supervisor runs: nothing may be killed or removed (a run it starts now is
        # not in the ps just read); the runs it does not own are closed.
        settle_unowned(
            board, [r for r in board.open_runs() if r.get("run_id") not in live], kill=False
        )
        return
    from lattice_workers.actors._journal import Journal
    from lattice_workers.actors._pool import kept_under
    from lattice_workers.actors._state import RunState
    from lattice_workers.actors._worktree import remove_leftovers
    from lattice_workers.supervisor._pidlock import PidLock, runtime_dir
    from lattice_workers.supervisor._recovery import worktrees_of
    from lattice_workers.supervisor._settings import Settings, worktree_base

    run_dir = runtime_dir(board.dir)
    lock = PidLock(board.dir)
    lock.acquire()  # no supervisor may start while we settle
    try:
        _, kept = _on_cluster(board, set(), supervised=False, fix=True)
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
        settings = Settings(board.config)
        base = worktree_base(board, settings)
        open_runs = board.open_runs()
        # Idle pooled workspaces the configuration keeps are the next start's to check
        # and adopt (or remove); every other workspace of ours is a stray.
        spare = (
            kept_under(base, board.root, board.dir, in_use=worktrees_of(open_runs, started))
            if settings.keep_pool_on_stop
            else []
        )
        settle_unowned(
            board,
            open_runs,
            journal_runs=started,
            remove_worktrees=lambda known: remove_leftovers(
                base, board.root, known, owner=board.dir, spare=spare
            ),
            kept_elsewhere=kept,
        )
    finally:
        lock.release()
