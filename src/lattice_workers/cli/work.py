"""``lattice worker diff|apply|merge|discard``: review a run's kept work and take it.

The work lives under ``refs/lattice/runs/<run>/<attempt>`` in this project's
repository (see :mod:`lattice_workers.actors._keep`); these commands need git and the
repository, not the supervisor.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from lattice_workers.cli._app import Context, add_command, group

T = TypeVar("T")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the kept-work commands to the ``worker`` group."""
    sub = group(commands, "worker", "run workers and manage their definitions")
    p = add_command(sub, "diff", cmd_diff, "a run's kept work, as a patch from its commit")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--stat", action="store_true", help="a summary of the files changed")
    p.add_argument("--attempt", type=int, metavar="N", help="this attempt (default: the last)")
    p = add_command(sub, "apply", cmd_apply, "a new branch at a run's kept work")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--branch", required=True, metavar="NAME", help="the branch to create")
    p.add_argument("--attempt", type=int, metavar="N", help="this attempt (default: the last)")
    p = add_command(sub, "merge", cmd_merge, "merge a run's kept work into the current branch")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--attempt", type=int, metavar="N", help="this attempt (default: the last)")
    p = add_command(sub, "discard", cmd_discard, "drop a run's kept work")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--attempt", type=int, metavar="N", help="only this attempt")


def cmd_diff(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.actors._keep import diff

    patch = _kept_call(
        lambda: diff(ctx.where()[0], args.run_id, attempt=args.attempt, stat_only=args.stat)
    )
    if ctx.json:
        return ctx.ok({"run_id": args.run_id, "diff": patch.decode("utf-8", "replace")})
    sys.stdout.buffer.write(patch)
    sys.stdout.flush()
    return 0


def cmd_apply(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.actors._keep import apply_to_branch

    sha = _kept_call(
        lambda: apply_to_branch(ctx.where()[0], args.run_id, args.branch, args.attempt)
    )
    return ctx.ok(
        {"run_id": args.run_id, "branch": args.branch, "commit": sha},
        f"branch {args.branch} at {sha[:10]}: the work of {args.run_id}",
    )


def cmd_merge(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.actors._keep import merge_into_current

    sha = _kept_call(lambda: merge_into_current(ctx.where()[0], args.run_id, args.attempt))
    return ctx.ok(
        {"run_id": args.run_id, "commit": sha}, f"merged the work of {args.run_id}: {sha[:10]}"
    )


def cmd_discard(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.actors._keep import discard

    dropped = _kept_call(lambda: discard(ctx.where()[0], args.run_id, args.attempt))
    return ctx.ok(
        {"run_id": args.run_id, "attempts": dropped},
        f"dropped the kept work of {args.run_id} (attempt {', '.join(map(str, dropped))})",
    )


def _kept_call(call: Callable[[], T]) -> T:
    """``call()``, with git's failures said as errors of this command."""
    from lattice_workers.actors._keep import KeepError
    from lattice_workers.errors import Code, LatticeError

    try:
        return call()
    except KeepError as err:
        raise LatticeError(Code.INTERNAL, str(err)) from None


# ------------------------------------------------------------------ shown by ps, show


def changes_summary(changes: Mapping[str, Any]) -> str:
    """A run's ``changes`` in one phrase: ``work kept: 3 files +10 -2, 1 commit`` (or
    why nothing was kept)."""
    if changes.get("error"):
        return str(changes["error"])
    files = changes.get("files_changed") or 0
    if not changes.get("ref"):
        left = changes.get("left_out") or []
        return f"nothing kept ({len(left)} left out)" if left else "no changes"
    commits = changes.get("commits") or 0
    text = (
        f"work kept: {files} file{'s' * (files != 1)} +{changes.get('insertions', 0)} "
        f"-{changes.get('deletions', 0)}"
    )
    if commits:
        text += f", {commits} commit{'s' * (commits != 1)}"
    if changes.get("left_out"):
        text += f", {len(changes['left_out'])} left out"
    return text


def changes_lines(changes: Mapping[str, Any], *, still_kept: bool | None = None) -> list[str]:
    """A run's ``changes`` for ``worker show`` and ``lattice show``: the phrase, then
    the ref (and whether it is still there, when known), the files left out, a note."""
    lines = [changes_summary(changes)]
    if changes.get("ref"):
        gone = " (applied or discarded since)" if still_kept is False else ""
        lines.append(f"ref: {changes['ref']}{gone}")
    if changes.get("left_out"):
        left = ", ".join(map(str, changes["left_out"]))
        lines.append(f"left out (too large, or a repository inside): {left}")
    if changes.get("note"):
        lines.append(f"note: {changes['note']}")
    return lines


def live_refs(root: Path) -> set[str] | None:
    """The kept-work refs the project's repository holds now; None when git cannot
    say (no repository here: the supervisor may serve another machine's board)."""
    from lattice_workers.actors._keep import REF_PREFIX, KeepError, git

    try:
        out = git(root, "for-each-ref", "--format=%(refname)", f"{REF_PREFIX}/", check=False)
    except KeepError:
        return None
    if out.returncode != 0:
        return None
    return set(out.stdout.decode(errors="replace").split())
