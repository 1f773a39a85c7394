"""``lattice supervisor run|start|stop|status``."""

from __future__ import annotations

import argparse

from lattice_workers.cli._app import Context, add_command, group
from lattice_workers.errors import Code, LatticeError


def register(commands: argparse._SubParsersAction) -> None:
    """Add the supervisor commands."""
    sub = group(commands, "supervisor", "run, start, stop or inspect this board's supervisor")
    p = add_command(sub, "run", cmd_run, "run the supervisor in the foreground")
    p.add_argument("--listen", action="append", default=[], metavar="ENDPOINT",
                   help="also listen on tcp://HOST:PORT (loopback, or CURVE keys required)")
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    p = add_command(sub, "start", cmd_start, "start the supervisor in the background")
    p.add_argument("--listen", action="append", default=[], metavar="ENDPOINT",
                   help="also listen on tcp://HOST:PORT (loopback, or CURVE keys required)")
    p = add_command(sub, "stop", cmd_stop, "stop the supervisor gracefully and wait for it")
    p.add_argument("--drain", action="store_true", help="let live runs finish first")
    add_command(sub, "status", cmd_status, "is a supervisor running for this board?")
    add_command(
        sub, "reload", cmd_reload,
        "re-read .lattice/config.json and the worker definitions (no restart, no run stops)",
    )


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.supervisor._main import run_supervisor

    return run_supervisor(ctx.board(), listen=args.listen, ready_fd=args.ready_fd)


def cmd_start(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.supervisor import control

    root, board_dir = ctx.where()
    info = control.start(root, board_dir, listen=args.listen)
    verb = "started" if info.get("started") else "already running"
    return ctx.ok(info, f"supervisor {verb}: pid {info.get('pid')}, socket {info.get('socket')}")


def cmd_stop(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.supervisor import control

    root, board_dir = ctx.where()
    pid = control.stop(root, board_dir, drain=args.drain)
    if pid is None:
        remote = control.elsewhere(root)
        where = f"at {remote} (LATTICE_ENDPOINT)" if remote else "for this board"
        return ctx.ok({"stopped": False}, f"no supervisor is running {where}")
    return ctx.ok({"stopped": True, "pid": pid}, f"supervisor stopped (pid {pid})")


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.supervisor import control

    root, board_dir = ctx.where()
    info = control.status(root, board_dir)
    if info is None:
        remote = control.elsewhere(root)
        where = f"at {remote} (LATTICE_ENDPOINT)" if remote else f"for {root}"
        raise LatticeError(Code.SUPERVISOR_UNAVAILABLE, f"no supervisor is running {where}")
    return ctx.ok(
        {"running": True, **info},
        f"supervisor running: pid {info['pid']}, socket {info['socket']}, "
        f"up {info['uptime_seconds']:.0f}s",
    )


def cmd_reload(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.protocol._messages import Reload, WorkersReply
    from lattice_workers.supervisor import control

    root, board_dir = ctx.where()
    if control.elsewhere(root) is None and not control.is_running(board_dir):
        raise LatticeError(
            Code.SUPERVISOR_UNAVAILABLE,
            f"no supervisor is running for {root}; the next one reads the config when it starts",
        )
    with control.client_for(root) as client:
        reply = client.request(Reload())
    assert isinstance(reply, WorkersReply)
    valid = sum(1 for w in reply.workers if w.valid)
    return ctx.ok(
        {"reloaded": True, "workers": len(reply.workers), "valid_workers": valid},
        f"reloaded .lattice/config.json and {len(reply.workers)} worker definitions "
        f"({valid} valid)",
    )
