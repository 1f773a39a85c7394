"""A ``lattice`` command for workers and hooks, wherever we are installed.

Workers and hooks are told to call ``lattice show $LATTICE_TASK_ID`` and ``lattice
attach ...``, and a board hook runs ``lattice worker run ...``. With lattice-tracker in
the environment, its ``lattice`` serves them (our commands through its plugin group).
Without it there is no ``lattice`` at all: our own executable is ``lattice-workers``,
because installing one named ``lattice`` would overwrite the tracker's, and
uninstalling us would then delete it. So the environment of a worker or a hook ends
its ``PATH`` with this installation's bin folder, then with a folder of the board's
runtime (``.lattice/run/bin``) holding a two-line ``lattice`` that runs this
installation. Both go last: a ``lattice`` the user put on ``PATH`` still wins.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import MutableMapping
from pathlib import Path

SHIM_FOLDER = "bin"


def _shim_text() -> str:
    return (
        "#!/bin/sh\n"
        "# Written by lattice-workers for its workers and hooks; rewritten at each start.\n"
        f"exec {shlex.quote(sys.executable)} -m lattice_workers \"$@\"\n"
    )


def write_shim(run_dir: Path) -> Path:
    """Write ``run_dir/bin/lattice`` (when it differs) and return its folder.

    Blocking (a few small file calls): callers run it before their event loop starts or
    in a thread.
    """
    run_dir.mkdir(mode=0o700, exist_ok=True)
    folder = run_dir / SHIM_FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    shim = folder / "lattice"
    text = _shim_text()
    try:
        if shim.read_text(encoding="utf-8") == text and os.access(shim, os.X_OK):
            return folder
    except OSError:
        pass
    partial = folder / f".lattice.{os.getpid()}.tmp"
    partial.write_text(text, encoding="utf-8")
    os.chmod(partial, 0o700)
    os.replace(partial, shim)
    return folder


def add_lattice_to_path(env: MutableMapping[str, str], run_dir: Path | None) -> None:
    """Append this installation's bin folder and, when ``run_dir`` is given, the shim's
    folder to ``env["PATH"]``, each unless already there."""
    parts = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p]
    extra = [str(Path(sys.executable).parent)]
    if run_dir is not None:
        try:
            extra.append(str(write_shim(run_dir)))
        except OSError:
            pass  # a read-only board: a `lattice` on PATH, if any, still serves
    for folder in extra:
        if folder not in parts:
            parts.append(folder)
    env["PATH"] = os.pathsep.join(parts)
