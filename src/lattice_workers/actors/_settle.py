"""Closing runs that nobody owns any more: :func:`settle_unowned`, the one settle path
of recovery and ``doctor --fix``.

Blocking functions with no Trio: the supervisor calls them from a thread, the CLI
calls them directly. Each checks before it acts (the process is the same one, the
run is still open on the board), so calling them twice changes nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.actors._process_group import kill_group, process_start_time
from lattice_workers.actors._state import Reason
from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol._messages import RunInfo
from lattice_workers.store import Board
from lattice_workers.store._run_events import PROCESS_FAILED

if TYPE_CHECKING:
    from lattice_workers.actors._journal import JournalRecord

log = logging.getLogger("lattice_workers.supervisor.recovery")

ORPHANED_ERROR = "the supervisor that owned this run stopped without ending it"
_SETTLED = "already settled"
#: How long one kill by environment keeps scanning /proc (see ``_kill_where``).
KILL_SECONDS = 10.0


def settle_unowned(
    board: Board,
    open_runs: Iterable[dict[str, Any]],
    *,
    journal_runs: Iterable[JournalRecord] = (),
    kill: bool = True,
    remove_worktrees: Callable[[list[Path]], object] | None = None,
    kept_elsewhere: Mapping[tuple[str, int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Settle runs that no supervisor owns; the open runs it closed on the board.

    ``open_runs``: runs open on the board (:meth:`Board.open_runs`) that no live
    supervisor owns. ``journal_runs``: the journal's records of runs that did not end,
    for what only it knows: each one's exact process group (pid and start time) and
    its worktree. ``kill``: whether what is left of those runs may be killed,
    which is only safe while no supervisor runs (one that does may have started a run
    that its ``ps`` did not show yet). ``remove_worktrees``: given the worktrees the
    journal names, removes those and every other of ours left over (only while no
    supervisor runs either; see :func:`~lattice_workers.actors._worktree.remove_leftovers`).
    ``kept_elsewhere``: the ``changes`` of attempts whose workspace was on another
    machine, kept there already (``(run_id, attempt)`` -> changes: a Ray executor's
    orphan settling); their terminal events say so, as a local worktree's would.

    The steps go in this order so that nothing of a run is alive once its end is on
    the board: the group of each started run whose leader is still the same process;
    then every process carrying one of the runs' ids (descendants that left the group,
    a group whose leader is gone); then ``process_failed(orphaned)`` for each open run
    that is still open; then the worktrees.
    """
    open_runs = list(open_runs)
    journal_runs = list(journal_runs)
    if kill:
        for record in journal_runs:
            if record.run.pid is not None and record.pid_start_time is not None:
                kill_if_same(record.run.pid, record.pid_start_time)
        run_ids = {str(r["run_id"]) for r in open_runs if r.get("run_id")}
        kill_by_run_id(run_ids | {record.run.run_id for record in journal_runs})
    # Their work, kept before their worktrees go (only when those may go: no supervisor).
    kept: dict[str, dict[str, Any]] = {}
    if remove_worktrees is not None:
        records = {r.run.started_event_id: r for r in journal_runs if r.run.started_event_id}
        for run in open_runs:
            started = str(run["started_event_id"])
            change = (kept_elsewhere or {}).get(
                (str(run.get("run_id")), int(run.get("attempt") or 1))
            ) or _keep_orphans_work(board, run, records.get(started))
            if change is not None:
                kept[started] = change
    closed = [
        run
        for run in open_runs
        if write_orphaned(
            board, run, run.get("run_id"), changes=kept.get(str(run["started_event_id"]))
        )
    ]
    if remove_worktrees is not None:
        known = [
            Path(r.run.worktree_path)
            for r in journal_runs
            if r.run.worktree_path and "://" not in r.run.worktree_path  # not on this machine
        ]
        remove_worktrees(known)
    return closed


def kill_if_same(pid: int, start_time: int) -> bool:
    """SIGKILL the group of ``pid`` if ``pid`` is still the process that started then."""
    if process_start_time(pid) != start_time:
        return False
    log.info("killing the process group of orphaned worker pid %d", pid)
    return kill_group(pid, signal.SIGKILL)


def kill_by_run_id(run_ids: set[str]) -> list[int]:
    """SIGKILL every process whose environment names one of ``run_ids``.

    This reaches what a group kill cannot: descendants that left the worker's group,
    and a group whose leader already exited (its pid no longer identifies it).
    """
    if not run_ids:
        return []
    markers = {f"LATTICE_RUN_ID={run_id}".encode() for run_id in run_ids}
    return _kill_where(lambda variables: not markers.isdisjoint(variables))


def kill_attempts(attempts: set[tuple[str, int]]) -> list[int]:
    """:func:`kill_by_run_id` for these attempts of runs only: a run's next attempt,
    which carries the same run id, may be running already."""
    if not attempts:
        return []
    wanted = [
        (f"LATTICE_RUN_ID={run_id}".encode(), f"LATTICE_ATTEMPT={attempt}".encode())
        for run_id, attempt in attempts
    ]
    return _kill_where(lambda variables: any(r in variables and a in variables for r, a in wanted))


def _kill_where(match: Callable[[set[bytes]], bool], *, seconds: float | None = None) -> list[int]:
    """SIGKILL every process (but this one) whose environment ``match`` accepts, until a
    scan of /proc finds none.

    A pass lists /proc, then reads and kills: what a process forks after the listing is
    not in it, and descendants that keep forking new sessions (``setsid`` in a loop)
    keep making such; a pid that exits between the listing and the kill may already
    have forked its successor. So passes repeat until one finds no matching process
    alive (one killed but still dying is found again, and the next pass looks again),
    for at most ``seconds`` (:data:`KILL_SECONDS`); a warning says so if that bound is
    hit. Stopping after a pass that killed nothing *new* (as before) let such storms
    outlive their run by seconds.
    """
    started = time.monotonic()
    deadline = started + (KILL_SECONDS if seconds is None else seconds)
    killed: set[int] = set()
    passes = 0
    while True:
        found = _kill_pass(match)
        passes += 1
        if not found:
            break
        new = found - killed
        killed |= found
        if time.monotonic() >= deadline:
            log.warning(
                "%d processes left by runs that ended were still found after %d scans in "
                "%.1f s; giving up on them (pids %s)",
                len(found),
                passes,
                time.monotonic() - started,
                " ".join(str(pid) for pid in sorted(found)[:20]),
            )
            break
        if not new:
            time.sleep(0.005)  # only dying ones: give them a moment, do not spin
    if killed:
        shown = " ".join(str(pid) for pid in sorted(killed)[:20])
        more = f" and {len(killed) - 20} more" if len(killed) > 20 else ""
        log.info(
            "killed %d processes left by a run that ended (%s%s) in %d scans, %.3f s",
            len(killed),
            shown,
            more,
            passes,
            time.monotonic() - started,
        )
    return sorted(killed)


def _kill_pass(match: Callable[[set[bytes]], bool]) -> set[int]:
    """One pass of :func:`_kill_where`: the matching processes it sent SIGKILL to."""
    killed = set()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                variables = set(f.read().split(b"\0"))
        except OSError:
            continue
        if match(variables):
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed.add(int(entry))
            except OSError:
                pass
    return killed


def write_recorded_end(board: Board, board_run: dict[str, Any], info: RunInfo) -> bool:
    """Write the end the journal recorded for a run the board shows open; False if
    it was already closed.

    The journal's final record is written after the terminal event's log line: a run
    open on the board with a final record lost that line (torn by a crash, or moved
    aside by ``doctor --fix``). Its worker's outcome is known, so the end says it,
    instead of ``orphaned``, which would turn an exit 0 into a failure.
    """
    fields: dict[str, Any] = {
        "attempt": info.attempt,
        "duration_seconds": info.duration_seconds,
        "commit_sha": info.commit_sha or board_run.get("commit_sha"),
        "log_path": info.log_path or board_run.get("log_path"),
    }
    if info.reason is None and info.state == "completed":
        fields.update(result="success", exit_code=0)
        if info.result is not None:
            fields["output"] = info.result
        event_type = "process_completed"
    else:
        fields.update(
            reason=info.reason or str(Reason.ORPHANED), error=info.error or ORPHANED_ERROR
        )
        if info.exit_code is not None:
            fields["exit_code"] = info.exit_code
        if info.signal is not None:
            fields["signal"] = info.signal
        event_type = "process_failed"
    return _write_end(board, board_run, info.run_id, event_type, fields)


def _keep_orphans_work(
    board: Board, board_run: dict[str, Any], record: JournalRecord | None
) -> dict[str, Any] | None:
    """Keep what an orphaned run changed in its worktree; its ``changes``, or None when
    it had no worktree (or it is gone). The journal knows the run best; its
    ``process_started`` on the board names the worktree too (the journal may have lost
    the record that did: a supervisor killed right after the spawn)."""
    from lattice_workers.actors._keep import KeepError, keep_work, not_kept

    info = record.run if record is not None else None
    path = (info.worktree_path if info else None) or board_run.get("worktree_path")
    base = (info.commit_sha if info else None) or board_run.get("run_commit")
    run_id = (info.run_id if info else None) or board_run.get("run_id")
    if not (path and base and run_id) or "://" in str(path) or not os.path.isdir(path):
        return None  # none, gone, or on another machine (kept there: kept_elsewhere)
    from lattice_workers.actors._patch import attach_diff_blocking

    attempt = int((info.attempt if info else None) or board_run.get("attempt") or 1)
    actor = str((info.actor if info else None) or board_run.get("actor") or "agent:unknown")
    try:
        changes = keep_work(
            workspace=Path(path),
            repo=board.root,
            run_id=str(run_id),
            attempt=attempt,
            base_sha=str(base),
            actor=actor,
            task=(info.short_id if info else None) or str(board_run["task_id"]),
        ).to_event()
    except (KeepError, OSError) as err:
        log.warning("run %s: its work could not be kept: %s", run_id, err)
        return not_kept(err)
    run = RunInfo(
        run_id=str(run_id),
        task_id=str(board_run["task_id"]),
        worker=str(board_run.get("process_type") or "?"),
        state="failed",
        actor=actor,
        attempt=attempt,
    )
    attach_diff_blocking(board, run, changes)  # no hooks: as the orphaned end it precedes
    return changes


def write_orphaned(
    board: Board,
    board_run: dict[str, Any],
    run_id: str | None,
    *,
    changes: dict[str, Any] | None = None,
) -> bool:
    """Write ``process_failed(orphaned)`` for an open run; False if it was already closed.
    ``changes``: the work kept from its worktree, when it had one."""
    fields: dict[str, Any] = {
        "commit_sha": board_run.get("commit_sha"),
        "reason": str(Reason.ORPHANED),
        "error": ORPHANED_ERROR,
        "duration_seconds": None,
        "log_path": board_run.get("log_path"),
    }
    if board_run.get("log_path"):
        from lattice_workers.actors._log_tail import read_log_tail

        tail = read_log_tail(board.root / str(board_run["log_path"]))  # relative or not
        if tail:
            fields["log_tail"] = tail
    if changes is not None:
        fields["changes"] = changes
    return _write_end(board, board_run, run_id, PROCESS_FAILED, fields)


def _write_end(
    board: Board,
    board_run: dict[str, Any],
    run_id: str | None,
    event_type: str,
    fields: dict[str, Any],
) -> bool:
    started_event_id = board_run["started_event_id"]
    data: dict[str, Any] = {
        "process_type": board_run.get("process_type"),
        "started_event_id": started_event_id,
        "run_id": run_id,
        **fields,
    }

    def still_open(snapshot: dict[str, Any]) -> None:
        if not any(
            p.get("started_event_id") == started_event_id
            for p in snapshot.get("active_processes", [])
        ):
            raise LatticeError(Code.CONFLICT, _SETTLED)

    try:
        board.append(
            board_run["task_id"],
            event_type,
            data,
            actor=board_run.get("actor") or "agent:lattice-supervisor",
            agent_meta={"model": None, "session": run_id},
            check=still_open,
            hooks=False,
        )
    except LatticeError as err:
        if err.message == _SETTLED:
            return False
        raise
    log.info("run %s on %s closed (%s)", run_id, board_run["task_id"], data.get("reason", "ok"))
    return True
