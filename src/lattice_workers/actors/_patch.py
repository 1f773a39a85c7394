"""The kept work as a patch file attached to the task (role ``diff``), for people and
viewers that do not speak git.

Attached when an attempt's work was kept (its ``changes`` name a ref): the ``--stat``
summary, then the patch from the run's commit to the snapshot, as ``lattice worker
diff`` prints them (no external diff, no textconv: nothing of the worker's runs;
binary files are named, not encoded). Bounded: a patch larger than
:data:`MAX_PATCH_BYTES` is cut at the last whole line under it, and a last line says
how much was left out and which command shows it all; the summary above it is always
whole. The artifact's role is ``diff``, unless the board declares its roles and
``diff`` is not one of them: then it has none (an attach the board refuses would lose
the patch). Never raises for a failure: the run's end matters more; it is logged.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from lattice_workers.actors._keep import KeepError, git
from lattice_workers.errors import LatticeError
from lattice_workers.protocol._messages import RunInfo
from lattice_workers.store import Board
from lattice_workers.store._workflow import configured_roles

log = logging.getLogger(__name__)

ROLE = "diff"
#: The largest patch attached whole (the summary is added to it).
MAX_PATCH_BYTES = 1024 * 1024


def patch_text(repo: Path, run_id: str, changes: dict[str, Any]) -> bytes:
    """The ``--stat`` summary and the patch from ``base_sha`` to ``snapshot_sha``,
    the patch cut to :data:`MAX_PATCH_BYTES` (see the module's docstring)."""
    base, snapshot = str(changes["base_sha"]), str(changes["snapshot_sha"])
    args = ("diff", "--no-ext-diff", "--no-textconv", "--no-color")
    stat = git(repo, *args, "--stat", base, snapshot).stdout
    patch = git(repo, *args, base, snapshot).stdout
    if len(patch) > MAX_PATCH_BYTES:
        cut = patch.rfind(b"\n", 0, MAX_PATCH_BYTES) + 1
        left = len(patch) - cut
        patch = patch[:cut] + (
            f"\n[... {left} more bytes of the patch left out: run "
            f"`lattice worker diff {run_id}` for all of it]\n"
        ).encode()
    attempt = changes.get("attempt", "?")
    header = f"Work of {run_id} (attempt {attempt}), kept as {changes['ref']}\n\n"
    return header.encode() + stat + b"\n" + patch


def attach_diff_blocking(
    board: Board, info: RunInfo, changes: dict[str, Any]
) -> list[dict[str, Any]]:
    """Attach the patch of the work ``changes`` says was kept; the events written (for
    the caller's hooks), none when nothing was kept or the attach failed. Blocking."""
    if not changes.get("ref") or not changes.get("snapshot_sha") or not changes.get("base_sha"):
        return []
    try:
        text = patch_text(board.root, info.run_id, {**changes, "attempt": info.attempt})
        role = ROLE if not (known := configured_roles(board.config)) or ROLE in known else None
        with tempfile.TemporaryDirectory(prefix="lattice-diff-") as tmp:
            path = Path(tmp, f"{info.run_id}-{info.attempt}.patch")
            path.write_bytes(text)
            result = board.attach(
                info.task_id,
                path,
                role=role,
                actor=info.actor,
                title=f"Diff of {info.run_id} (attempt {info.attempt})",
                run_hooks=False,
            )
        return list(result.events)
    except (KeepError, OSError, LatticeError) as err:
        log.warning("run %s: could not attach the diff of its kept work: %s", info.run_id, err)
        return []


async def attach_diff(
    board: Board,
    run_hooks: Callable[[list[dict[str, Any]]], None],
    info: RunInfo,
    changes: dict[str, Any],
) -> None:
    """:func:`attach_diff_blocking` in a thread, then the board's hooks for its event,
    as every write of a run is followed."""
    events = await trio.to_thread.run_sync(attach_diff_blocking, board, info, changes)
    if events:
        run_hooks(events)

