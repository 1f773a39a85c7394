"""``lattice`` board commands: init, create, list, show, status, comment, attach, rebuild, doctor.

Each handler resolves its arguments, makes one call to :class:`lattice_workers.store.Board`
and renders the answer; the rules live in the store. The store is imported inside
the handlers so that ``lattice --help`` and the worker commands never pay for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.cli._app import Context, add_command
from lattice_workers.errors import Code, LatticeError

if TYPE_CHECKING:
    from lattice_workers.store import Board


def register(commands: argparse._SubParsersAction) -> None:
    """Add this module's commands."""
    p = add_command(commands, "init", _init, "create a board (.lattice/) in the current folder")
    p.add_argument("--project-code", help="1-5 letters for short ids such as LAT-1")
    p.add_argument("--actor", help="the board's default actor, saved in config.json")

    p = add_command(commands, "create", _create, "create a task")
    p.add_argument("title")
    p.add_argument("--status", help="initial status (default: the board's default_status)")
    p.add_argument("--priority", help="critical, high, medium or low")
    p.add_argument("--type", dest="task_type", help="task type, such as task or bug")
    p.add_argument("--description")
    p.add_argument("--tag", action="append", dest="tags", metavar="TAG", help="repeatable")
    p.add_argument("--assigned-to", metavar="ACTOR")
    _actor_option(p)

    p = add_command(commands, "list", _list, "list the board's tasks")
    p.add_argument("--status", help="only tasks in this status")

    p = add_command(commands, "show", _show, "show a task: fields, worker runs, history")
    p.add_argument("task", help="task id or short id")

    p = add_command(commands, "status", _status, "move a task to another status")
    p.add_argument("task", help="task id or short id")
    p.add_argument("new_status", metavar="STATUS")
    p.add_argument("--force", action="store_true", help="override the workflow (needs --reason)")
    p.add_argument("--reason", help="why; recorded in the event")
    _actor_option(p)

    p = add_command(commands, "comment", _comment, "add a comment to a task")
    p.add_argument("task", help="task id or short id")
    p.add_argument("body")
    _actor_option(p)

    p = add_command(commands, "attach", _attach, "attach a file to a task as an artifact")
    p.add_argument("task", help="task id or short id")
    p.add_argument("file", type=Path)
    p.add_argument("--role", required=True, help="what the file is for, such as review")
    p.add_argument("--title", help="artifact title (default: the file name)")
    _actor_option(p)

    add_command(commands, "rebuild", _rebuild, "replay every event log and rewrite snapshots")
    p = add_command(commands, "doctor", _doctor, "check the board for inconsistencies")
    p.add_argument(
        "--fix", action="store_true", help="close runs left open that no supervisor owns"
    )


def _actor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--actor", help="who is writing, such as human:ana (default: LATTICE_ACTOR or config)"
    )


def _actor(board: Board, args: argparse.Namespace) -> str:
    from lattice_workers.store import validate_actor

    return validate_actor(args.actor or default_actor(board))


def default_actor(board: Board, *, say: bool = True) -> str:
    """``LATTICE_ACTOR``, else the board's ``default_actor``, else a guess (git's user
    name, ``$USER``), said on stderr when ``say``: a board made elsewhere (or by an
    older version) may have no default."""
    import sys

    from lattice_workers.cli._defaults import guess_actor

    actor = board.default_actor()
    if actor:
        return actor
    actor, source = guess_actor(board.root)
    if say:
        print(
            f"lattice-workers: acting as {actor} (from {source}); pass --actor or set "
            "default_actor in .lattice/config.json to choose",
            file=sys.stderr,
        )
    return actor


def _label(snap: dict[str, Any]) -> str:
    return str(snap.get("short_id") or snap.get("id"))


# ---------------------------------------------------------------- init
def _init(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.cli._defaults import derive_project_code, guess_actor
    from lattice_workers.store import Board

    existed = (ctx.cwd / ".lattice" / "config.json").exists()
    code, actor, said = args.project_code, args.actor, []
    if not existed:
        # A new board works without flags: short ids from the folder's name, and the
        # actor the user already is to git (both said once, here).
        if code is None:
            code = derive_project_code(ctx.cwd.absolute().name)
            said.append(f"project code {code} (from the folder name; pass --project-code)")
        if actor is None:
            actor, source = guess_actor(ctx.cwd)
            said.append(f"default actor {actor} (from {source}; pass --actor)")
    had_code = None if not existed else Board(ctx.cwd.absolute()).config.get("project_code")
    board = Board.init(ctx.cwd, project_code=code, default_actor=actor)
    have = board.config.get("project_code")
    data = {
        "root": str(board.root),
        "created": not existed,
        "project_code": have,
        "default_actor": board.config.get("default_actor"),
    }
    if not existed:
        lines = [f"{board.root} now has a board in .lattice/"]
        lines += [f"  {line}" for line in said]
        lines.append(
            f"  short ids: {have}-1, {have}-2, ...; commit .lattice/ (its .gitignore "
            "keeps the runtime files out)"
        )
        return ctx.ok(data, "\n".join(lines))
    if have and had_code is None:
        return ctx.ok(
            data, f"{board.root} already has a board; project code set to {have}: "
            f"new tasks are {have}-1, {have}-2, ..."
        )
    code_text = f"project code {have}" if have else "no project code (no short ids)"
    return ctx.ok(data, f"{board.root} already has a board in .lattice/ ({code_text})")


# ---------------------------------------------------------------- create
def _create(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    snap = board.create_task(
        args.title,
        actor=_actor(board, args),
        status=args.status,
        priority=args.priority,
        type=args.task_type,
        description=args.description,
        tags=args.tags,
        assigned_to=args.assigned_to,
    )
    text = (
        f'Created {_label(snap)} ({snap["id"]}) "{snap["title"]}"\n'
        f"  status: {snap['status']}  priority: {snap['priority']}  type: {snap['type']}"
    )
    return ctx.ok(snap, text)


# ---------------------------------------------------------------- list
def _list(ctx: Context, args: argparse.Namespace) -> int:
    rows, problems = ctx.board().task_rows(status=args.status)

    def text() -> str:
        if not rows:
            return "No tasks." if args.status is None else f"No tasks in {args.status}."
        labels = [str(r["short_id"] or r["id"]) for r in rows]
        line = f"%-{max(map(len, labels))}s  %-12s %-8s %-6s %s%s"  # %: fastest for 5,000 rows
        lines = [
            line
            % (
                label,
                r["status"],
                r["priority"],
                r["type"],
                r["title"],
                f"  [{r['active_runs']} running]" if r["active_runs"] else "",
            )
            for label, r in zip(labels, rows, strict=True)
        ]
        lines += [f"warning: {p} (run lattice doctor)" for p in problems]
        return "\n".join(lines)

    return ctx.ok(rows, text)


# ---------------------------------------------------------------- show
def _show(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.store._detail import task_detail

    data = task_detail(ctx.board(), args.task)
    return ctx.ok(data, lambda: _render_show(data))


def _render_show(data: dict[str, Any]) -> str:
    from lattice_workers.store import actor_display
    from lattice_workers.store._runs import agent_summary
    from lattice_workers.store._spend import spend_sentence

    snap = data["task"]
    head = f"{snap['short_id']} ({snap['id']})" if snap.get("short_id") else str(snap.get("id"))
    out = [
        f'{head}  "{snap.get("title")}"',
        f"Status: {snap.get('status')}  Priority: {snap.get('priority')}  Type: {snap.get('type')}",
        f"Assigned: {actor_display(snap.get('assigned_to')) if snap.get('assigned_to') else '-'}"
        f"  Created by: {actor_display(snap.get('created_by'))}",
        f"Created: {snap.get('created_at')}  Updated: {snap.get('updated_at')}",
    ]
    if snap.get("tags"):
        out.append(f"Tags: {', '.join(map(str, snap['tags']))}")
    if data["transitions"]:
        out.append(f"Next: {' | '.join(data['transitions'])}")
    if snap.get("description"):
        out += [
            "",
            "Description:",
            *(f"  {line}" for line in str(snap["description"]).splitlines()),
        ]
    if data["artifacts"]:
        out += ["", "Artifacts:"]
        for a in data["artifacts"]:
            title = " (metadata missing)" if a.get("missing") else f' "{a.get("title")}"'
            out.append(f"  {a['id']}{title}  role: {a.get('role') or '-'}")
    out += ["", "Worker runs:"]
    if not data["runs"]:
        out.append("  (none)")
    spend = spend_sentence(data.get("spend_today") or {})
    if spend:
        out.append(f"  ({spend})")
    for run in data["runs"]:
        duration = run.get("duration")
        took = f"{duration:.0f}s" if isinstance(duration, int | float) else "-"
        commit = str(run.get("commit") or "-")[:10]
        result = run.get("result") or ""
        out.append(
            f"  {run.get('worker')}  {run.get('state')}  {result}  commit {commit}  "
            f"started {run.get('started') or '?'}  took {took}  run {run.get('run_id') or '-'}"
        )
        if run.get("error"):
            out.append(f"    error: {run['error']}")
        if run.get("agent"):
            out.append(f"    agent: {agent_summary(run['agent'])}")
            agent_error = run["agent"].get("error")
            if agent_error and agent_error != run.get("error"):
                out.append(f"    agent error: {agent_error}")
        if run.get("log_tail"):
            out.append("    log tail:")
            out += [f"      {line}" for line in str(run["log_tail"]).splitlines()]
        if isinstance(run.get("changes"), dict):
            from lattice_workers.cli.work import changes_lines

            out += [f"    {line}" for line in changes_lines(run["changes"])]
        out.append(f"    log: {run.get('log_path')}")
    out += ["", "History (oldest first):"]
    for event in data["events"]:
        summary = _summary(event)
        out.append(
            f"  {event.get('ts')}  {event.get('type')}{'  ' + summary if summary else ''}"
            f"  by {actor_display(event.get('actor'))}"
        )
    if data["problems"]:
        out += ["", "Problems (run lattice doctor):", *(f"  {p}" for p in data["problems"])]
    return "\n".join(out)


def _summary(event: dict[str, Any]) -> str:
    from lattice_workers.store._run_events import (
        PROCESS_END_TYPES,
        PROCESS_STARTED,
        completed_data,
        ended_data,
        failed_data,
        started_data,
    )

    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    assert isinstance(data, dict)
    etype = event.get("type")
    if etype == "status_changed":
        forced = f" (forced: {data.get('reason')})" if data.get("force") else ""
        return f"{data.get('from')} -> {data.get('to')}{forced}"
    if etype == "assignment_changed":
        return f"{data.get('from') or '-'} -> {data.get('to') or '-'}"
    if etype == "field_updated":
        return f"{data.get('field')}: {data.get('from')!r} -> {data.get('to')!r}"
    if etype == "comment_added":
        body = str(data.get("body", "")).replace("\n", " ")
        return f'"{body[:57]}..."' if len(body) > 60 else f'"{body}"'
    if etype == "artifact_attached":
        return f"{data.get('artifact_id')} (role: {data.get('role') or '-'})"
    if etype == PROCESS_STARTED:
        started = started_data(event)
        return f"{started.get('process_type')} run {started.get('run_id') or '-'}"
    if etype in PROCESS_END_TYPES:
        ended = ended_data(event)
        outcome = completed_data(event).get("result") or failed_data(event).get("reason") or ""
        run = ended.get("run_id") or f"started by {ended.get('started_event_id')}"
        return " ".join(str(x) for x in (ended.get("process_type"), "run", run, outcome) if x)
    return ""


# ---------------------------------------------------------------- status / comment / attach
def _status(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    task_id = board.resolve_task(args.task)
    result = board.change_status(
        task_id, args.new_status, actor=_actor(board, args), force=args.force, reason=args.reason
    )
    snap = result.snapshot
    data = {"task": snap, "event": result.event or None, "changed": result.written}
    if not result.written:
        return ctx.ok(data, f"{_label(snap)} is already {snap.get('status')}; nothing written")
    ev = result.event["data"]
    return ctx.ok(data, f"{_label(snap)}: {ev['from']} -> {ev['to']}")


def _comment(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    task_id = board.resolve_task(args.task)
    result = board.comment(task_id, args.body, actor=_actor(board, args))
    data = {"task": result.snapshot, "event": result.event}
    return ctx.ok(data, f"Comment {result.event['id']} added to {_label(result.snapshot)}")


def _attach(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    task_id = board.resolve_task(args.task)
    result = board.attach(
        task_id, args.file, role=args.role, actor=_actor(board, args), title=args.title
    )
    art_id = result.event["data"]["artifact_id"]
    data = {"artifact_id": art_id, "task": result.snapshot, "event": result.event}
    return ctx.ok(
        data, f"Attached {args.file} as {art_id} (role: {args.role}) to {_label(result.snapshot)}"
    )


# ---------------------------------------------------------------- rebuild / doctor
def _rebuild(ctx: Context, args: argparse.Namespace) -> int:
    report = ctx.board().rebuild()

    def text() -> str:
        lines = [
            f"Replayed {report.tasks} tasks; {len(report.rewritten)} snapshots rewritten",
            f"Lifecycle log: {report.lifecycle_events} events "
            f"({'rewritten' if report.lifecycle_rewritten else 'unchanged'})",
            f"ids.json: {'rewritten' if report.ids_rewritten else 'unchanged'}",
        ]
        return "\n".join(lines + [f"warning: {p}" for p in report.problems])

    return ctx.ok(report.to_dict(), text)


def _size(n: int) -> str:
    """Bytes for a person: ``512 B``, ``3.4 KiB``, ``12.0 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _doctor(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.actors._keep import kept_summary
    from lattice_workers.supervisor.doctor import pooled_workspaces, unowned_problems

    board = ctx.board()
    problems = unowned_problems(board, fix=args.fix)
    kept = kept_summary(board.root)
    said = ""
    if kept is not None:  # not a problem: work waiting for review, said so
        said = (
            f"\nKept work: {kept['refs']} ref{'s' * (kept['refs'] != 1)} under "
            f"refs/lattice/runs hold {_size(kept['bytes'])} that no branch or tag holds; "
            "they stay until `lattice worker apply`, `merge` or `discard` "
            "(keep_finished_days never deletes them)"
        )
    pool, fate = pooled_workspaces(board)
    listed = (
        [f"Worktree pool ({len(pool)}, {fate}):", *(f"  {p}" for p in pool)]
        if pool
        else []
    )
    if not problems:
        # "kept_work" and "pool" only when there are: a plain board's reply stays as it was.
        data: dict[str, object] = {"problems": []}
        if kept is not None:
            data["kept_work"] = kept
        if pool:
            data["pool"] = pool
        return ctx.ok(data, "\n".join(["No problems found.", *listed]) + said)
    if not ctx.json:
        ctx.ok(None, "\n".join([f"{p.kind}: {p.message}" for p in problems] + listed) + said)
    count = len(problems)
    raise LatticeError(
        Code.DOCTOR_PROBLEMS,
        f"doctor found {count} problem{'s' if count != 1 else ''} on this board",
        details=[p.to_dict() for p in problems],
    )
