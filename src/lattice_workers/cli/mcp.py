"""``lattice mcp``: serve this board's runs to an agent over the Model Context Protocol."""

from __future__ import annotations

import argparse

from lattice_workers.cli._app import Context, add_command
from lattice_workers.errors import Code, LatticeError


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``mcp`` command."""
    add_command(
        commands, "mcp", cmd_mcp,
        "serve MCP on stdin/stdout: tools to start, watch and collect runs (for agents)",
    )


def cmd_mcp(ctx: Context, args: argparse.Namespace) -> int:
    try:
        from lattice_workers.mcp import serve
    except ImportError as err:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"the MCP server needs the mcp extra ({err.name} is not installed): "
            "pip install 'lattice-workers[mcp]'",
        ) from None
    root, _ = ctx.where()
    serve(root)
    return 0
