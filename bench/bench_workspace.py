"""A run's workspace (issue 19): today's cost beside the ``git worktree`` it replaced.

Per repository size (a small repository of 100 files, and one of ~5,000 files in 50 folders,
packed as a real one is), in the same process and interleaved try by try so that the
machine's noise hits both alike:

- **worktree**: what each run paid before issue 19: ``git worktree add --no-checkout
  --detach``, ``read-tree -u --reset HEAD``, then the removal (files, then ``git
  worktree remove``).
- **workspace**: :meth:`Worktrees.create` and :meth:`Worktrees.remove` as the supervisor
  calls them (a ``.git`` of its own written by hand, the same ``read-tree -u``; removal
  is file deletion).
- **one git status (floor)**: a bare ``git status --porcelain`` in that untouched
  workspace: the issue's yardstick for a keep that finds nothing (goal: under 5 ms, about
  one such check).
- **keep, nothing changed**: :func:`keep_work` on a workspace the run did not touch
  (what every run pays at its end).
- **keep, 100 files changed**: the same after editing 100 tracked files (the snapshot
  commit and its fetch into the project).

    python bench/bench_workspace.py [--tries 11] [--files 5000] [--quick] [--json OUT]

Prints the medians (and min-max) in milliseconds as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from lattice_workers.actors._keep import discard, keep_work
from lattice_workers.actors._worktree import Worktrees

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
RUN = "run_01BENCH" + "0" * 19  # a run id in form (ref names are checked)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], env=ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path, files: int) -> str:
    """A repository of ``files`` files (100 per folder), packed; its HEAD."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for n in range(files):
        folder = path / f"d{n // 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{n % 100:03d}.txt").write_text(f"file {n}\n" * 4)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "files")
    git(path, "gc", "-q")
    return git(path, "rev-parse", "HEAD")


def worktree_pair(repo: Path, path: Path, head: str) -> None:
    git(repo, "worktree", "add", "-q", "--no-checkout", "--detach", str(path), head)
    git(path, "read-tree", "-u", "--reset", "HEAD")
    for entry in os.scandir(path):
        if entry.name != ".git":
            shutil.rmtree(entry.path) if entry.is_dir() else os.unlink(entry.path)
    git(repo, "worktree", "remove", "--force", "--force", str(path))


def workspace_pair(workspaces: Worktrees, repo: Path, name: str, head: str) -> None:
    path = trio.run(workspaces.create, repo, name, head)
    trio.run(workspaces.remove, repo, path)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(scratch: Path, files: int, tries: int) -> dict[str, dict[str, float]]:
    repo = scratch / f"repo-{files}"
    head = make_repo(repo, files)
    workspaces = Worktrees(scratch / f"ws-{files}")
    found: dict[str, list[float]] = {
        "worktree": [],
        "workspace": [],
        "status_floor": [],
        "keep_nothing": [],
        "keep_100": [],
    }
    changed = sorted(p for p in repo.rglob("*.txt"))[:100]

    def keep(path: Path) -> None:
        keep_work(
            workspace=path,
            repo=repo,
            run_id=RUN,
            attempt=1,
            base_sha=head,
            actor="agent:bench",
            task="B-1",
        )

    for n in range(tries):
        found["worktree"].append(timed(lambda: worktree_pair(repo, scratch / f"wt-{n}", head)))  # noqa: B023
        found["workspace"].append(timed(lambda: workspace_pair(workspaces, repo, f"run_{n}", head)))  # noqa: B023
        path = trio.run(workspaces.create, repo, f"keep_{n}", head)
        found["status_floor"].append(timed(lambda: git(path, "status", "--porcelain")))  # noqa: B023
        found["keep_nothing"].append(timed(lambda: keep(path)))  # noqa: B023
        for file in changed:
            target = path / file.relative_to(repo)
            target.write_text(target.read_text() + f"try {n}\n")
        found["keep_100"].append(timed(lambda: keep(path)))  # noqa: B023
        discard(repo, RUN)
        trio.run(workspaces.remove, repo, path)
    return {key: stats(values) for key, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=11)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="3 tries, 500 files")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write results here")
    args = parser.parse_args()
    tries, files = (3, 500) if args.quick else (args.tries, args.files)
    with tempfile.TemporaryDirectory(prefix="lattice-bench-ws-") as tmp:
        results: dict[str, Any] = {
            "tries": tries,
            "small": measure(Path(tmp), 100, tries),
            "large": measure(Path(tmp), files, tries),
            "files": files,
        }
    rows = [
        ("worktree add + checkout + remove (before issue 19)", "worktree"),
        ("workspace create + remove (now)", "workspace"),
        ("one `git status` in the workspace (floor)", "status_floor"),
        ("keep, nothing changed", "keep_nothing"),
        ("keep, 100 files changed", "keep_100"),
    ]
    print(f"| per run, ms (median of {tries}, min-max) | 100 files | {files} files |")
    print("|---|---|---|")
    for label, key in rows:
        cells = [
            "{median:.1f} ({min:.1f}-{max:.1f})".format(**results[size][key])
            for size in ("small", "large")
        ]
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
