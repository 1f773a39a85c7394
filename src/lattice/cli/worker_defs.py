"""`lattice` worker definition commands (list, check, init) (not written yet)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands."""
