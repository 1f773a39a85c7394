"""The frame every ``lattice`` command runs in: parsing, output, errors, exit codes.

A command module exposes ``register(commands)`` and adds its subcommands with
:func:`add_command`; each handler takes ``(ctx, args)``, does one thing and returns
``ctx.ok(...)``. Errors are raised as :class:`~lattice.errors.LatticeError` and turned
into a message and an exit code here, and nowhere else.

Command modules import only this module at the top: the store, msgspec and pyzmq are
imported inside handlers so that each command pays only for what it uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice.errors import Code, LatticeError, exit_code_for

if TYPE_CHECKING:
    from lattice.store import Board

Handler = Callable[["Context", argparse.Namespace], int]


class Context:
    """What every handler gets: output mode, the working directory, the board."""

    def __init__(self, json_mode: bool, cwd: Path | None = None) -> None:
        self.json = json_mode
        self.cwd = cwd or Path.cwd()
        self._board: Board | None = None

    def board(self) -> Board:
        """The board found from the working directory (or ``LATTICE_ROOT``)."""
        if self._board is None:
            from lattice.store import Board

            self._board = Board.open(self.cwd)
        return self._board

    def ok(self, data: Any, text: str | Callable[[], str] | None = None, exit_code: int = 0) -> int:
        """Print a success: the JSON envelope, or the human text."""
        if self.json:
            print(json.dumps({"ok": True, "data": data}, sort_keys=True, default=str))
        elif text is not None:
            rendered = text() if callable(text) else text
            if rendered:
                print(rendered)
        return exit_code


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors obey ``--json``."""

    def error(self, message: str) -> Any:
        raise LatticeError(Code.INVALID_ARGUMENT, f"{self.prog}: {message}")


_COMMON = _Parser(add_help=False)
_COMMON.add_argument("--json", action="store_true", help="print the JSON envelope")

COMMAND_MODULES = (
    "lattice.cli.board",
    "lattice.cli.worker_defs",
    "lattice.cli.worker",
    "lattice.cli.supervisor",
)


def add_command(
    commands: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    help: str,
) -> argparse.ArgumentParser:
    """Add one subcommand whose parser knows ``--json`` and calls ``handler``."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=help, parents=[_COMMON]
    )
    parser.set_defaults(handler=handler)
    return parser


def add_group(
    commands: argparse._SubParsersAction,
    name: str,
    help: str,
) -> argparse._SubParsersAction:
    """Add a command group such as ``worker`` and return its subcommand table."""
    parser = commands.add_parser(name, help=help, description=help, parents=[_COMMON])
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)


_GROUPS: dict[str, argparse._SubParsersAction] = {}


def group(
    commands: argparse._SubParsersAction,
    name: str,
    help: str,
) -> argparse._SubParsersAction:
    """The subcommand table of group ``name``, created once and shared by modules."""
    if name not in _GROUPS:
        _GROUPS[name] = add_group(commands, name, help)
    return _GROUPS[name]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
        prog="lattice",
        description="A Lattice board and the supervisor that runs workers against its tasks.",
        parents=[_COMMON],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _GROUPS.clear()
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``lattice`` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    json_mode = "--json" in argv
    ctx = Context(json_mode)
    try:
        args = build_parser().parse_args(argv)
        ctx.json = bool(getattr(args, "json", False)) or json_mode
        code: int = args.handler(ctx, args)
        return code
    except LatticeError as err:
        _report(ctx, err)
        return exit_code_for(err.code)
    except KeyboardInterrupt:
        _report(ctx, LatticeError(Code.INTERNAL, "interrupted"))
        return 130
    except BrokenPipeError:
        # `lattice list | head`: the reader left; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _report(ctx: Context, err: LatticeError) -> None:
    if ctx.json:
        print(json.dumps({"ok": False, "error": err.to_dict()}, sort_keys=True, default=str))
    else:
        print(f"lattice: {err.message}", file=sys.stderr)
