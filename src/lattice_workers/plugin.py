"""Our commands inside lattice-tracker's ``lattice`` CLI (its ``lattice.cli_plugins``
entry point group calls :func:`register` with its Click group).

One implementation, two front doors: each command we add hands its words, untouched,
to the same :func:`lattice_workers.cli._app.main` that ``lattice-workers`` runs, so
``lattice worker run ...`` has exactly the syntax, ``--json`` envelope and exit codes
of ``lattice-workers worker run ...``. Click does not parse them (no options, unknown
options passed through, its own ``--help`` off): argparse, behind them, does.

We only add names the tracker does not have: a name it already uses stays its own,
with a line on stderr, because the whole point of the plugin is that installing us
never takes the place of anything of the tracker's. Click is the tracker's dependency,
not ours: it is imported here only, when the tracker calls us.
"""

from __future__ import annotations

import sys
from typing import Any

#: The command groups we add to the tracker's CLI, with their one-line help.
COMMANDS: dict[str, str] = {
    "worker": "Run workers against tasks (lattice-workers): run, ps, wait, logs, cancel...",
    "supervisor": "The lattice-workers supervisor of this board: start, stop, status...",
    "mcp": "Serve this board's worker runs to agents over MCP (lattice-workers)",
    "web": "A live view of the board and its worker runs in a browser (lattice-workers)",
}


def register(cli: Any) -> None:
    """Add :data:`COMMANDS` to lattice-tracker's Click group ``cli``."""
    for name, help_text in COMMANDS.items():
        if name in getattr(cli, "commands", {}):
            print(
                f"lattice: lattice-workers did not add `{name}`: the tracker already has a "
                f"command of that name (use `lattice-workers {name}` instead)",
                file=sys.stderr,
            )
            continue
        cli.add_command(_handing_over(name, help_text))


def _handing_over(name: str, help_text: str) -> Any:
    """A Click command ``name`` that passes every word after it to our CLI."""
    import click

    @click.command(
        name,
        help=help_text,
        short_help=help_text,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.argument("words", nargs=-1, type=click.UNPROCESSED)
    def command(words: tuple[str, ...]) -> None:
        from lattice_workers.cli._app import main

        sys.exit(main([name, *words], prog="lattice"))

    return command
