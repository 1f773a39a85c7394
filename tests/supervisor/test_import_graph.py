"""The supervisor's modules import each other without circles, and each imports alone.

A circle hidden behind ``if TYPE_CHECKING`` still ties two modules together (neither
can be read, tested or moved without the other), so the graph counts every import
that names a module of ours: at the top, in a function, or for types only.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lattice_workers

PACKAGE = Path(lattice_workers.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``path`` imports anywhere (``from pkg import mod`` too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & known


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {name: imports_of(path, known) - {name} for name, path in paths.items()}


def cycles_through(prefix: str, edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary import circle made only of modules under ``prefix``."""
    inside = {m for m in edges if m.startswith(prefix)}
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges[node] & inside):
            if nxt == start:
                found.append([*path, start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for start in sorted(inside):
        walk(start, start, [start])
    return found


def test_the_supervisor_package_has_no_import_circle() -> None:
    assert cycles_through("lattice_workers.supervisor", graph()) == []


def test_the_actors_package_has_no_import_circle() -> None:
    """The run, its attempt and its executor: the attempt sees its run through a
    Protocol (``AttemptOwner``), not by importing it."""
    assert cycles_through("lattice_workers.actors", graph()) == []


def test_the_finder_finds_a_circle() -> None:
    edges = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": set()}
    assert cycles_through("p.", edges) == [["p.a", "p.b", "p.c", "p.a"]]


#: Imports each module given with none of ours loaded before it (third-party modules
#: stay loaded: they cannot take part in a circle of ours, and reloading them is slow).
ALONE = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] == "lattice_workers"]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
"""


def test_each_supervisor_module_imports_alone() -> None:
    names = sorted(m for m in graph() if m.startswith("lattice_workers.supervisor"))
    done = subprocess.run(
        [sys.executable, "-c", ALONE, *names], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
