"""Shared by the actor tests: real git repositories in temporary folders."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lattice_workers.actors._definitions import load_workers
from lattice_workers.actors._journal import Journal, RunRequest
from lattice_workers.actors._record import RunRecord
from lattice_workers.actors._run import RunActor, RunContext
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.store import Board, new_id

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "LC_ALL": "C",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(cwd), *args], env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit_file(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"{name}: {text}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit_file(path, "a.txt", "one")
    (path / "src").mkdir()
    commit_file(path, "src/b.txt", "two")
    return path


#: The actor written on the events of the actor tests' runs.
ACTOR = "human:ana"


def actor_for(
    board: Board,
    worktrees: Worktrees,
    worker_name: str,
    task_id: str,
    *,
    run_hooks: Callable[[list[dict[str, Any]]], None] | None = None,
) -> RunActor:
    """A run of ``worker_name`` (defined under the board's root) on ``task_id``, built as
    the registry builds one and admitted at once; ``run`` it, then close its journal."""
    worker = load_workers(board.root).get(worker_name)
    assert worker is not None and worker.valid, worker
    ctx = RunContext(
        board=board,
        worktrees=worktrees,
        journal=Journal(board.dir / "run" / "journal.jsonl"),
        results_dir=board.dir / "run" / "results",
        run_hooks=run_hooks or (lambda events: None),
        environ=dict(os.environ),
    )
    record = RunRecord(run_id=new_id("run"), task_id=task_id, worker=worker_name, actor=ACTOR)

    async def admitted(_: RunActor) -> None:
        pass

    return RunActor(
        ctx,
        record,
        worker,
        RunRequest(worker=worker_name, task=task_id),
        1,
        on_exit=lambda _: None,
        wait_admitted=admitted,
    )
