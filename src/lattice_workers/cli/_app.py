"""The frame every ``lattice`` command runs in: parsing, output, errors, exit codes.

A command module exposes ``register(commands)`` and adds its subcommands with
:func:`add_command`; each handler takes ``(ctx, args)``, does one thing and returns
``ctx.ok(...)``. Errors are raised as :class:`~lattice_workers.errors.LatticeError` and turned
into a message and an exit code here, and nowhere else.

Command modules import only this module at the top: the store, msgspec and pyzmq are
imported inside handlers so that each command pays only for what it uses. For the same
reason a command line builds only the parsers of its own command (see
:data:`COMMAND_MODULES`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.errors import Code, LatticeError, exit_code_for, io_error

if TYPE_CHECKING:
    from lattice_workers.store import Board

Handler = Callable[["Context", argparse.Namespace], int]

#: Our own executable's name. Not ``lattice``: that is lattice-tracker's, which runs
#: our commands through its plugin group (:mod:`lattice_workers.plugin`).
PROG = "lattice-workers"


class Context:
    """What every handler gets: output mode, the working directory, the board."""

    def __init__(self, json_mode: bool, cwd: Path | None = None) -> None:
        self.json = json_mode
        self.prog = PROG
        self.cwd = cwd or Path.cwd()
        self._root: Path | None = None
        self._board: Board | None = None

    def where(self) -> tuple[Path, Path]:
        """The project root and its ``.lattice/`` (``LATTICE_ROOT``, else found upwards).

        Found without loading the store: all that a client of the supervisor needs.
        """
        from lattice_workers.store import LATTICE_DIR, find_root

        if self._root is None:
            self._root = find_root(self.cwd)
        return self._root, self._root / LATTICE_DIR

    def board(self) -> Board:
        """The board at :meth:`where`."""
        if self._board is None:
            from lattice_workers.store import Board

            self._board = Board(self.where()[0])
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


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, minus an ``import shutil`` on every command line.

    argparse builds a formatter for each ``add_argument`` (to check its metavar), and
    the stock one asks ``shutil.get_terminal_size`` for the width; importing shutil
    takes ~3 ms (it loads bz2 and lzma), as long as building the parsers of a command.
    This one gets the same width the same way (:func:`_columns`).
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        width = _columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    """``shutil.get_terminal_size().columns``: ``COLUMNS``, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors obey ``--json``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        # The program's name is said once, by main(); a subcommand is named after it
        # ("lattice-workers: worker run: the following arguments are required").
        command = self.prog.partition(" ")[2]
        raise LatticeError(Code.INVALID_ARGUMENT, f"{command}: {message}" if command else message)


_COMMON = _Parser(add_help=False)
_COMMON.add_argument("--json", action="store_true", help="print the JSON envelope")

#: Each command module, in ``--help`` order, with the top-level names it registers (a
#: group such as ``worker`` may be filled by several modules). A test checks this
#: table against what each module's ``register`` adds.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "lattice_workers.cli.board": (
        "init",
        "create",
        "list",
        "show",
        "status",
        "comment",
        "attach",
        "rebuild",
        "doctor",
    ),
    "lattice_workers.cli.worker_defs": ("worker",),
    "lattice_workers.cli.worker": ("worker",),
    "lattice_workers.cli.work": ("worker",),
    "lattice_workers.cli.supervisor": ("supervisor",),
    "lattice_workers.cli.mcp": ("mcp",),
    "lattice_workers.cli.web": ("web",),
}


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


def modules_for(argv: Sequence[str]) -> list[str]:
    """The command modules that parsing ``argv`` needs, in registration order.

    The command is the first word after any ``--json``: when a module owns it, only
    the modules that own it are needed, because argparse hands everything after the
    command to that command's parser. Anything else (no command, ``--help``, a typo)
    needs them all, so that the top-level help and "invalid choice" list every command.
    """
    command = next((word for word in argv if word != "--json"), None)
    owners = [module for module, names in COMMAND_MODULES.items() if command in names]
    return owners or list(COMMAND_MODULES)


def build_parser(argv: Sequence[str] | None = None, prog: str = PROG) -> argparse.ArgumentParser:
    """The parser: every command, or only those ``argv`` can reach."""
    import importlib

    from lattice_workers import __version__

    parser = _Parser(
        prog=prog,
        description="A Lattice board and the supervisor that runs workers against its tasks.",
        parents=[_COMMON],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _GROUPS.clear()
    for module_name in list(COMMAND_MODULES) if argv is None else modules_for(argv):
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run one command line; returns the exit code. ``prog`` is the name the user
    typed: ours, or ``lattice`` when lattice-tracker's CLI hands us the command."""
    argv = sys.argv[1:] if argv is None else argv
    json_mode = "--json" in argv
    ctx = Context(json_mode)
    ctx.prog = prog
    try:
        args = build_parser(argv, prog).parse_args(argv)
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
    except OSError as exc:
        # A file the command needed could not be read or written (a read-only sandbox,
        # a full disk): a sentence and an exit code, never a traceback.
        failure = io_error(exc, f"run `{prog} {' '.join(argv[:1])}`")
        _report(ctx, failure)
        return exit_code_for(failure.code)


def _report(ctx: Context, err: LatticeError) -> None:
    if ctx.json:
        print(json.dumps({"ok": False, "error": err.to_dict()}, sort_keys=True, default=str))
    else:
        print(f"{ctx.prog}: {err.message}", file=sys.stderr)
