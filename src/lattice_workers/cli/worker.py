"""``lattice worker run|ps|show|logs|wait|cancel``: thin clients of the supervisor.

Each command builds one request, sends it, and renders the reply. The supervisor is
started on demand (``LATTICE_NO_AUTOSTART=1`` turns that off).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from lattice_workers.cli._app import Context, add_command, group
from lattice_workers.errors import Code, LatticeError

if TYPE_CHECKING:
    from lattice_workers.protocol._messages import RunInfo
    from lattice_workers.protocol.client import Client


def register(commands: argparse._SubParsersAction) -> None:
    """Add the run commands to the ``worker`` group."""
    sub = group(commands, "worker", "run workers and manage their definitions")
    p = add_command(sub, "run", cmd_run, "run a worker on a task (one live run per pair)")
    p.add_argument("name", help="worker name (see `lattice worker list`)")
    p.add_argument("task", help="task id or short id")
    p.add_argument("--commit", metavar="REV", help="commit to work on (default: HEAD now)")
    p.add_argument(
        "--from", dest="from_run", metavar="RUN", help="start from the work RUN kept"
    )
    p.add_argument("--base", metavar="REF", help="ref to diff against (default: main)")
    p.add_argument("--actor", help="actor written on the run's events")
    p.add_argument("--timeout", type=float, metavar="MIN", help="deadline in minutes")
    p.add_argument("--idempotency-key", metavar="KEY", help="retries with it get the same run")
    p.add_argument(
        "--max-cost", type=_positive(float), metavar="USD", help="agent workers: spend at most USD"
    )
    p.add_argument(
        "--max-turns", type=_positive(int), metavar="N", help="agent workers: at most N turns"
    )
    p.add_argument(
        "--continue", dest="continue_run", metavar="RUN",
        help="agent workers: resume RUN's session, at RUN's kept work",
    )
    p.add_argument("--message", metavar="TEXT", help="with --continue: what to tell the agent")
    p.add_argument("--wait", action="store_true", help="wait for the run to end")
    p.add_argument("--follow", action="store_true", help="stream the log until the run ends")

    p = add_command(sub, "ps", cmd_ps, "live runs (queued and running)")
    p.add_argument("-a", "--all", action="store_true", help="finished runs too")
    p.add_argument("--task", help="only runs of this task")
    p.add_argument("--watch", action="store_true", help="redraw at each change until Ctrl-C")

    p = add_command(sub, "show", cmd_show, "one run, live or finished")
    p.add_argument("run_id", metavar="RUN")

    p = add_command(sub, "logs", cmd_logs, "a run's log")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--follow", "-f", action="store_true", help="stream until the run ends")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")

    p = add_command(sub, "wait", cmd_wait, "wait for runs to end; non-zero if any failed")
    p.add_argument("run_ids", metavar="RUN", nargs="+")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")

    p = add_command(sub, "cancel", cmd_cancel, "cancel a run: RUN, or NAME TASK")
    p.add_argument("target", nargs="+", metavar="RUN | NAME TASK")


# ----------------------------------------------------------------------------- plumbing


def _client(ctx: Context) -> Client:
    from lattice_workers.supervisor import control

    root, board_dir = ctx.where()  # not ctx.board(): a client needs only where it is
    return control.connect(root, board_dir)


def _requested_by(ctx: Context) -> str:
    import getpass

    return ctx.board().default_actor() or f"human:{getpass.getuser()}"


def _as_dict(info: RunInfo) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(info)  # type: ignore[no-any-return,unused-ignore]


def _line(info: RunInfo) -> str:
    task = info.short_id or info.task_id
    parts = [info.run_id, info.worker, task, info.state]
    if info.queue_position:
        parts.append(f"#{info.queue_position} in queue")
    if info.pid:
        parts.append(f"pid {info.pid}")
    if info.node:
        parts.append(f"node {_node(info.node)}")
    if info.commit_sha:
        parts.append(info.commit_sha[:10])
    if info.duration_seconds is not None:
        parts.append(f"{info.duration_seconds:.1f}s")
    elif info.started_at:
        parts.append(f"{time.time() - info.started_at:.1f}s")
    if info.reason:
        parts.append(f"{info.reason}: {info.error}")
    return "  ".join(parts)


#: ``worker show`` fields that are Unix times, and durations in seconds.
_TIMES = ("created_at", "started_at", "ended_at")
_BLOCKS = ("result", "log_tail", "changes", "agent")


def _iso(seconds: float) -> str:
    """A Unix time as ISO 8601 in UTC, to the second (as the board's events)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _duration(seconds: float) -> str:
    """``4.2s``, ``3m 05s``, ``2h 01m``: what a person reads at a glance."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _detail(info: RunInfo, refs: set[str] | None = None) -> str:
    """One run for a person: ISO times, durations, the result as indented JSON, the
    log's tail as lines, what it changed (``--json`` keeps the raw values). ``refs``:
    the kept-work refs the repository holds now (None: unknown)."""
    import json

    from lattice_workers.cli.work import changes_lines

    values = _as_dict(info)
    if info.short_id:
        values["task_id"] = f"{info.short_id} ({info.task_id})"
        values.pop("short_id")
    for name in _TIMES:
        if isinstance(values.get(name), int | float) and values[name]:
            values[name] = _iso(values[name])
    if info.duration_seconds is not None:
        values["duration_seconds"] = _duration(info.duration_seconds)
    elif info.started_at and info.ended_at is None:
        values["duration_seconds"] = _duration(time.time() - info.started_at) + " so far"
    rows = [(k, v) for k, v in values.items() if v not in (None, "", []) and k not in _BLOCKS]
    width = max(len(k) for k, _ in rows)
    out = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if info.result is not None:
        text = json.dumps(info.result, indent=2, sort_keys=True, ensure_ascii=False)
        out += ["result", *(f"  {line}" for line in text.splitlines())]
    if info.agent:
        from lattice_workers.store._runs import agent_summary

        out += ["agent", f"  {agent_summary(info.agent)}"]
        out += [f"  {k}: {info.agent[k]}" for k in ("session_id", "error") if info.agent.get(k)]
    if info.log_tail:
        out += ["log_tail", *(f"  {line}" for line in info.log_tail.splitlines())]
    if info.changes is not None:
        ref = info.changes.get("ref")
        still = None if refs is None or not ref else ref in refs
        out += ["changes", *(f"  {line}" for line in changes_lines(info.changes, still_kept=still))]
    return "\n".join(out)


def _final_exit(info: RunInfo) -> int:
    from lattice_workers.errors import exit_code_for

    return 0 if info.state == "completed" else exit_code_for(Code.RUN_FAILED)


def _wait_runs(ctx: Context, client: Client, run_ids: list[str], timeout: float | None) -> int:
    def say(run: RunInfo) -> None:
        print(_line(run), flush=True)
        if run.log_tail:
            print("\n".join(f"    {t}" for t in run.log_tail.splitlines()))

    finished, live = client.wait_runs(run_ids, timeout, on_end=None if ctx.json else say)
    if live:
        raise LatticeError(
            Code.TIMEOUT, f"still live after {timeout:g}s: {', '.join(sorted(live))}",
            details=sorted(live),
        )
    failed = [i for i in finished if i.state != "completed"]
    code = _final_exit(failed[0]) if failed else 0
    return ctx.ok([_as_dict(i) for i in finished], None, exit_code=code)


def _follow(client: Client, run_id: str, tail: int | None = None) -> None:
    from lattice_workers.protocol._messages import LogChunk, Logs

    out = sys.stdout.buffer
    for reply in client.stream(Logs(run_id=run_id, follow=True, tail=tail), timeout=None):
        assert isinstance(reply, LogChunk)
        out.write(reply.data)
        out.flush()


def _positive(kind: type[float] | type[int]) -> Any:
    """An argparse type: a number of ``kind`` greater than 0, else a clear usage error."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {what} greater than 0, not {text!r}")
        return value

    return parse


# ----------------------------------------------------------------------------- commands


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.protocol._messages import Get, Run, RunReply
    from lattice_workers.protocol.client import client_environment

    request = Run(
        worker=args.name,
        task=args.task,
        revision=args.commit,
        from_run=args.from_run,
        base=args.base,
        actor=args.actor,
        timeout_minutes=args.timeout,
        idempotency_key=args.idempotency_key,
        requested_by=_requested_by(ctx),
        max_cost_usd=args.max_cost,
        max_turns=args.max_turns,
        continue_run=args.continue_run,
        message=args.message,
    )
    if args.message is not None and args.continue_run is None:
        raise LatticeError(Code.INVALID_ARGUMENT, "--message goes with --continue RUN")
    with _client(ctx) as client:
        if client.private:
            # The worker gets this shell's environment (a credential exported after the
            # supervisor started), never over the network in clear.
            request.env = client_environment()
        try:
            reply = client.request(request)
        except LatticeError as err:
            live = err.details if err.code is Code.ALREADY_RUNNING else None
            if not (isinstance(live, dict) and (args.wait or args.follow)):
                raise  # its message names the live run
            run_id = str(live["run_id"])
            if not ctx.json:
                print(f"already running: waiting for the live run {run_id}", file=sys.stderr)
        else:
            assert isinstance(reply, RunReply)
            run_id = reply.run.run_id
            if not (args.wait or args.follow):
                return ctx.ok(
                    {**_as_dict(reply.run), "created": reply.created},
                    ("started " if reply.created else "existing run ") + _line(reply.run),
                )
            if not ctx.json:
                print("started " + _line(reply.run), file=sys.stderr, flush=True)
        if args.follow and not ctx.json:
            _follow(client, run_id)
            final = client.request(Get(run_id=run_id))
            assert isinstance(final, RunReply)
            print(_line(final.run), file=sys.stderr)
            return _final_exit(final.run)
        return _wait_runs(ctx, client, [run_id], None)


def cmd_ps(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.protocol._messages import Ps, PsReply

    empty = "no runs" if args.all else "no live runs"
    with _client(ctx) as client:
        reply = client.request(Ps(all=args.all, task=args.task))
        assert isinstance(reply, PsReply)
        if args.watch and not ctx.json:
            _watch(ctx, client, Ps(all=args.all, task=args.task), reply.runs, empty)
            return 0
    return ctx.ok(
        [_as_dict(r) for r in reply.runs],
        lambda: "\n".join(
            filter(
                None,
                [_table(reply.runs, _refs_now(ctx, reply.runs)) or empty, _spent_line(ctx)],
            )
        ),
    )


def _spent_line(ctx: Context) -> str:
    """What the board's agents spent today, against ``workers.daily_budget_usd`` if set
    ("" when nothing was spent and no budget is set)."""
    from lattice_workers.store._spend import spend_sentence, spend_today

    try:
        # Read without the board's store: ps is a client of the supervisor, and loads
        # nothing it does not need (tests/cli/test_cli_lazy_parser.py).
        return spend_sentence(spend_today(ctx.where()[1]))
    except (LatticeError, OSError):
        return ""


def _refs_now(ctx: Context, runs: list[RunInfo]) -> set[str] | None:
    """The kept-work refs of the repository now, when a run says it kept work (one
    git process then, none otherwise); None when unknown."""
    if not any(r.changes and r.changes.get("ref") for r in runs):
        return None
    from lattice_workers.cli.work import live_refs

    return live_refs(ctx.where()[0])


def _watch(ctx: Context, lister: Client, ps: Any, runs: list[RunInfo], empty: str) -> None:
    """Draw ``runs``, then again at each change the supervisor reports (a ``Watch``
    subscription: nothing polls), until it stops or Ctrl-C.

    On a terminal each drawing replaces the last; into a pipe or a file, plain
    snapshots follow one another, separated by a blank line. The table is read again
    with ``ps`` at each change (queue positions move without events of their own),
    through a second connection, since the first carries the subscription.
    """
    from lattice_workers.protocol._messages import PsReply, RunEvent, Watch

    redraw = sys.stdout.isatty()

    def draw(runs: list[RunInfo], first: bool) -> None:
        text = _table(runs) or empty
        if redraw:
            print("\033[2J\033[H" + text, flush=True)
        else:
            print(text if first else "\n" + text, flush=True)

    draw(runs, True)
    with _client(ctx) as watcher:
        for event in watcher.stream(Watch(task=ps.task), timeout=None):
            if isinstance(event, RunEvent) and event.kind != "current":
                reply = lister.request(ps)
                assert isinstance(reply, PsReply)
                draw(reply.runs, False)


_HEADER = ("RUN", "WORKER", "TASK", "STATE", "PID", "COMMIT", "TIME", "NOTE")
#: Where the NODE column goes, shown only when a run is on a cluster node.
_NODE_AT = _HEADER.index("PID") + 1
#: Characters of a node id shown (Ray's are 56 hex digits; 12 tell nodes apart).
NODE_CHARS = 12


def _node(node: str) -> str:
    return node[:NODE_CHARS]


def _row(info: RunInfo, refs: set[str] | None = None) -> tuple[str, ...]:
    if info.duration_seconds is not None:
        took = _duration(info.duration_seconds)
    elif info.started_at:
        took = _duration(time.time() - info.started_at)
    else:
        took = "-"
    note = f"#{info.queue_position} in queue" if info.queue_position else ""
    if info.reason:
        note = f"{info.reason}: {info.error}"
    ref = info.changes.get("ref") if info.changes else None
    if ref and (refs is None or ref in refs):  # still there to review and take
        from lattice_workers.cli.work import changes_summary

        assert info.changes is not None
        note = f"{note}; {changes_summary(info.changes)}" if note else changes_summary(info.changes)
    if info.agent:
        from lattice_workers.store._runs import agent_summary

        note = f"[{agent_summary(info.agent)}] {note}".rstrip()
    return (
        info.run_id,
        info.worker,
        info.short_id or info.task_id,
        info.state,
        str(info.pid) if info.pid else "-",
        (info.commit_sha or "-")[:10],
        took,
        note,
    )


def _table(runs: list[RunInfo], refs: set[str] | None = None) -> str:
    """Runs under a header row, in aligned columns ("" when there are none); a run
    whose kept work is still in ``refs`` (all, when None) says so in its note."""
    if not runs:
        return ""
    rows = [_HEADER, *(_row(r, refs) for r in runs)]
    if any(r.node for r in runs):  # runs on a cluster: which node each one is on
        nodes = ["NODE", *(_node(r.node) if r.node else "-" for r in runs)]
        rows = [
            (*row[:_NODE_AT], node, *row[_NODE_AT:])
            for row, node in zip(rows, nodes, strict=True)
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        .rstrip()
        for row in rows
    )


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.protocol._messages import Get, RunReply

    with _client(ctx) as client:
        reply = client.request(Get(run_id=args.run_id))
    assert isinstance(reply, RunReply)
    return ctx.ok(
        _as_dict(reply.run), lambda: _detail(reply.run, _refs_now(ctx, [reply.run]))
    )


def cmd_logs(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.protocol._messages import LogChunk, Logs

    with _client(ctx) as client:
        if args.follow and not ctx.json:
            _follow(client, args.run_id, args.tail)
            return 0
        chunks = []
        for reply in client.stream(Logs(run_id=args.run_id, tail=args.tail)):
            assert isinstance(reply, LogChunk)
            chunks.append(reply.data)
    data = b"".join(chunks)
    if ctx.json:
        return ctx.ok({"run_id": args.run_id, "log": data.decode(errors="replace")})
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def cmd_wait(ctx: Context, args: argparse.Namespace) -> int:
    with _client(ctx) as client:
        return _wait_runs(ctx, client, args.run_ids, args.timeout)


def cmd_cancel(ctx: Context, args: argparse.Namespace) -> int:
    """Cancel, then show the run as it ended (a running run takes its grace period to
    stop); a run that had already ended is said to have, with its state."""
    from lattice_workers.protocol._messages import Cancel, Get, RunReply, Wait

    if len(args.target) == 1:
        request = Cancel(run_id=args.target[0])
    elif len(args.target) == 2:
        request = Cancel(worker=args.target[0], task=args.target[1])
    else:
        raise LatticeError(Code.INVALID_ARGUMENT, "cancel takes a run id, or a worker and a task")
    with _client(ctx) as client:
        if request.run_id:
            before = client.request(Get(run_id=request.run_id))
            assert isinstance(before, RunReply)
            if before.run.state in _ENDED:
                run = before.run
                return ctx.ok(
                    {**_as_dict(run), "already_ended": True},
                    f"{run.run_id} already ended: {_line(run)}",
                )
        reply = client.request(request)
        assert isinstance(reply, RunReply)
        run = reply.run
        if run.state not in _ENDED:
            for final in client.stream(Wait(run_ids=[run.run_id]), timeout=None):
                assert isinstance(final, RunReply)
                run = final.run
    if run.reason != "cancelled":  # it ended by itself before the cancel reached it
        return ctx.ok(
            {**_as_dict(run), "already_ended": True}, f"{run.run_id} already ended: {_line(run)}"
        )
    return ctx.ok({**_as_dict(run), "already_ended": False}, "cancelled " + _line(run))


_ENDED = ("completed", "failed")
