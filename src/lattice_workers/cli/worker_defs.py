"""``lattice worker list | check | init``: the definitions in ``workers/``, read locally.

These commands never talk to the supervisor: a definition is a file in the project, and
checking it must work where no supervisor runs (CI, a fresh clone). The lead's
``lattice_workers.cli.worker`` adds the run commands to the same ``worker`` group.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.cli._app import Context, add_command, group
from lattice_workers.errors import Code, LatticeError

if TYPE_CHECKING:
    from lattice_workers.actors._definitions import LoadedWorker

#: Folders of the package (or the repository) that ``worker init`` copies into a project.
SHIPPED_FOLDERS = ("workers", "prompts")
_NOT_COPIED = frozenset({".gitkeep", "__pycache__", ".DS_Store"})


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``worker list``, ``worker check`` and ``worker init``."""
    sub = group(commands, "worker", "run workers and manage their definitions")
    add_command(sub, "list", _list, "show every worker definition, valid or not, with problems")
    add_command(
        sub, "check", _check, "validate every worker definition; non-zero exit on a problem"
    )
    add_command(
        sub, "init", _init, "copy the shipped worker definitions and prompts into this project"
    )


# -- list ------------------------------------------------------------------------------------


def _list(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.actors._definitions import load_workers

    root = ctx.board().root
    rows = [_row(lw, root) for lw in load_workers(root).files]

    def text() -> str:
        if not rows:
            return f"no worker definitions in {root / 'workers'} (run `lattice worker init`)"
        lines = [_table(rows)]
        for row in rows:
            lines.extend(f"  - {problem}" for problem in row["problems"])
        return "\n".join(lines)

    return ctx.ok({"root": str(root), "workers": rows}, text)


# -- check -----------------------------------------------------------------------------------


def _check(ctx: Context, args: argparse.Namespace) -> int:
    from lattice_workers.actors._definitions import load_workers, preflight
    from lattice_workers.actors._environment import worker_environment

    root = ctx.board().root
    rows = []
    for lw in load_workers(root).files:
        row = _row(lw, root)
        row["warnings"] = []
        if lw.valid and lw.definition is not None:
            # The engines may not be installed where definitions are checked (CI), so
            # a missing program is a warning here; `worker run` refuses it.
            env = worker_environment(os.environ, lw.definition, {})
            warning = preflight(lw.definition, root, env.get("PATH", os.defpath))
            if warning:
                row["warnings"].append(warning)
        rows.append(row)
    invalid = [row for row in rows if row["problems"]]
    warnings = sum(len(row["warnings"]) for row in rows)
    data = {"root": str(root), "workers": rows, "invalid": len(invalid), "warnings": warnings}

    def text() -> str:
        if not rows:
            return f"no worker definitions in {root / 'workers'} (run `lattice worker init`)"
        lines = []
        for row in rows:
            lines.append(f"{'ok' if row['valid'] else 'INVALID':8} {row['name']} ({row['path']})")
            lines.extend(f"  problem: {p}" for p in row["problems"])
            lines.extend(f"  warning: {w}" for w in row["warnings"])
        if not invalid:
            lines.append(
                f"{_count(len(rows), 'worker definition')} valid, {_count(warnings, 'warning')}"
            )
        return "\n".join(lines)

    if invalid:
        if not ctx.json:
            print(text())
        raise LatticeError(
            Code.INVALID_WORKER,
            f"{len(invalid)} of {_count(len(rows), 'worker definition')} invalid; fix the "
            "problems listed and run `lattice worker check` again",
            details=data,
        )
    return ctx.ok(data, text)


# -- init ------------------------------------------------------------------------------------


def _init(ctx: Context, args: argparse.Namespace) -> int:
    root = ctx.board().root
    source = shipped_source()
    if source is None:
        raise LatticeError(
            Code.NOT_FOUND,
            "the shipped worker definitions are missing from this installation of "
            "lattice-workers; reinstall it",
        )
    copied, skipped = install_shipped(root, source)

    def text() -> str:
        lines = [f"copied  {rel}" for rel in copied]
        lines += [f"skipped {rel} (already there; not overwritten)" for rel in skipped]
        lines.append(f"{_count(len(copied), 'file')} copied, {len(skipped)} skipped, into {root}")
        return "\n".join(lines)

    return ctx.ok(
        {"root": str(root), "source": str(source), "copied": copied, "skipped": skipped}, text
    )


def shipped_source() -> Path | None:
    """Where the shipped ``workers/`` and ``prompts/`` are.

    Installed: ``lattice/_shipped`` inside the package (pyproject's force-include). In an
    editable install that folder does not exist, and the repository's own top-level
    folders are the source.
    """
    from importlib.resources import files

    packaged = Path(str(files("lattice_workers") / "_shipped"))
    if packaged.is_dir():
        return packaged
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file() and any(
        (repo / folder).is_dir() for folder in SHIPPED_FOLDERS
    ):
        return repo
    return None


def install_shipped(root: Path, source: Path) -> tuple[list[str], list[str]]:
    """Copy ``source``'s ``workers/`` and ``prompts/`` into ``root``; never overwrite.

    Returns the relative paths copied and skipped. A file is created with ``O_EXCL``, so
    a file that appears meanwhile is not overwritten either; modes (the executable bit
    of scripts) are kept.
    """
    copied: list[str] = []
    skipped: list[str] = []
    for folder in SHIPPED_FOLDERS:
        top = source / folder
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*")):
            rel = path.relative_to(source)
            if _NOT_COPIED.intersection(rel.parts) or path.suffix == ".pyc" or path.is_dir():
                continue
            dest = root / rel
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "xb") as out:
                    out.write(path.read_bytes())
                os.chmod(dest, path.stat().st_mode & 0o777)
            except FileExistsError:
                skipped.append(rel.as_posix())
                continue
            except OSError as err:
                raise LatticeError(
                    Code.INTERNAL,
                    f"cannot copy {rel.as_posix()} into {root}: {err.strerror}; fix the "
                    "folder and run `lattice worker init` again",
                ) from None
            copied.append(rel.as_posix())
    return copied, skipped


# -- rendering ---------------------------------------------------------------------------------


def _row(lw: LoadedWorker, root: Path) -> dict[str, Any]:
    defn = lw.definition
    try:
        path = lw.path.relative_to(root).as_posix()
    except ValueError:
        path = str(lw.path)
    return {
        "name": lw.name,
        "path": path,
        "valid": lw.valid,
        "problems": list(lw.problems),
        "engine": defn.engine if defn else None,
        "description": defn.description if defn else None,
        "actor": lw.actor,
        "worktree": defn.worktree if defn else None,
        "timeout_minutes": defn.timeout_minutes if defn else None,
        "max_concurrent": defn.max_concurrent if defn else None,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("NAME", "ENGINE", "STATUS", "ACTOR", "DESCRIPTION")
    cells = [
        (
            r["name"],
            r["engine"] or "-",
            "ok" if r["valid"] else "INVALID",
            r["actor"],
            r["description"] or "",
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(4)]
    lines = []
    for c in [header, *cells]:
        lines.append("  ".join(str(c[i]).ljust(widths[i]) for i in range(4)) + "  " + c[4])
    return "\n".join(line.rstrip() for line in lines)
