"""A board in a folder that is not a git repository: what runs and what is refused.

A worker without a worktree needs no git: it runs with no commit on its record. A
worker that asks for a worktree is refused before anything is written, with the
reason and the way out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, processes_with_root


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "plain"
    root.mkdir()
    project = Project(root, tmp_path / "worktrees")
    project.cli("init", "--project-code", "P")
    try:
        yield project
    finally:
        project.cli("supervisor", "stop", check=False, timeout=120)
        assert processes_with_root(root) == []


def test_a_worker_without_a_worktree_runs_with_no_commit(plain: Project) -> None:
    plain.write_worker("Echo", command="echo hello from $LATTICE_TASK_ID", worktree=False)
    task = plain.create_task("no git here")
    run = plain.json("worker", "run", "Echo", task, "--wait")["data"][0]
    assert run["state"] == "completed", run
    started, ended = plain.process_events(task)
    assert started["type"] == "process_started" and started["data"]["commit_sha"] is None
    assert ended["type"] == "process_completed"
    assert "hello from" in plain.cli("worker", "logs", run["run_id"]).stdout


def test_a_worker_with_a_worktree_is_refused_before_anything_is_written(plain: Project) -> None:
    plain.write_worker("Tree", command="true")
    task = plain.create_task("wants a worktree")
    refused = plain.json("worker", "run", "Tree", task, check=False)
    assert refused["ok"] is False
    assert refused["error"]["code"] == "NOT_FOUND"
    assert "not inside a git working tree" in refused["error"]["message"]
    assert '"worktree": false' in refused["error"]["message"]
    assert plain.process_events(task) == []
