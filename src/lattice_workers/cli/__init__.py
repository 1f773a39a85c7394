"""The ``lattice`` command: board commands, worker commands, supervisor commands."""

from __future__ import annotations

import sys

from lattice_workers.cli._app import main as _main


def main() -> None:
    """Console entry point."""
    sys.exit(_main())
