"""Where the board is: ``LATTICE_ROOT``, else the nearest ``.lattice/`` above a folder.

A module of its own that imports nothing else of the store, so that the client
commands (``lattice worker ps``) find the project without loading the modules that
read and write the board; :meth:`Board.open <lattice.store.Board.open>` calls the same
function, so there is one rule for finding a board.
"""

from __future__ import annotations

import os
from pathlib import Path

from lattice_workers.errors import Code, LatticeError

LATTICE_DIR = ".lattice"
#: The supervisor's runtime folder in the board's folder, ``.lattice/run``: its lock,
#: socket, run journal, result files, the ``lattice`` shim, the CLI's caches. Never
#: part of the board (a project's ``.gitignore`` lists it). Named here and nowhere else.
RUN_DIR = "run"


def run_dir(board_dir: Path) -> Path:
    """The runtime folder of the board whose folder (``.lattice``) is ``board_dir``."""
    return board_dir / RUN_DIR


def find_root(start: Path | None = None) -> Path:
    """The project root named by ``LATTICE_ROOT``, else the nearest one above ``start``.

    ``LATTICE_ROOT`` names the project root; when it is set there is no fallback.
    """
    env = os.environ.get("LATTICE_ROOT")
    if env is not None:
        return _root_from_env(env)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / LATTICE_DIR).is_dir():
            return folder
    raise LatticeError(
        Code.NO_BOARD,
        f"no Lattice board here: neither {here} nor any folder above it has a "
        f"{LATTICE_DIR}/ folder (run lattice init, or set LATTICE_ROOT to the project root)",
    )


def _root_from_env(env: str) -> Path:
    if not env:
        raise LatticeError(
            Code.NO_BOARD,
            "LATTICE_ROOT is set but empty: unset it or set it to the project root",
        )
    root = Path(env).absolute()
    if (root / LATTICE_DIR).is_dir():
        return root
    hint = (
        f"it must name the project root, not its {LATTICE_DIR}/ folder: use {root.parent}"
        if root.name == LATTICE_DIR and root.is_dir()
        else "set it to the folder that holds .lattice/, or run lattice init there"
    )
    raise LatticeError(Code.NO_BOARD, f"LATTICE_ROOT={env} has no {LATTICE_DIR}/ folder: {hint}")
