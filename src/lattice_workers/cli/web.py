"""``lattice web``: the board and its runs, live, in a browser."""

from __future__ import annotations

import argparse

from lattice_workers.cli._app import Context, add_command
from lattice_workers.errors import Code, LatticeError


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``web`` command."""
    p = add_command(
        commands, "web", cmd_web,
        "serve a live view of the board and its runs on 127.0.0.1 (prints its URL)",
    )
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument(
        "--listen", default="127.0.0.1", metavar="HOST",
        help="address to listen on (default 127.0.0.1; another host still needs the token)",
    )


def cmd_web(ctx: Context, args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise LatticeError(Code.INVALID_ARGUMENT, f"--port {args.port}: not a port number")
    try:
        from lattice_workers.web import serve
    except ImportError as err:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"the web view needs the web extra ({err.name} is not installed): "
            "pip install 'lattice-workers[web]'",
        ) from None
    root, _ = ctx.where()
    serve(root, port=args.port, host=args.listen)
    return 0
