"""A worktree run whose ``process_started`` cannot be written leaves nothing behind.

The actor makes the worktree while the event's thread hop writes (they are
independent), so a write that fails may find git half way through, or done.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from lattice_workers.actors._worktree import Worktrees
from lattice_workers.store import Board
from tests.actors.conftest import ACTOR, actor_for, git
from tests.e2e.conftest import processes_with_variable


class _NotedWorktrees(Worktrees):
    """Worktrees that say (to a thread) when one has been made."""

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.made = threading.Event()

    async def create(self, root: Path, name: str, commit: str) -> Path:
        path = await super().create(root, name, commit)
        self.made.set()
        return path


class _FullDiskBoard(Board):
    """A board whose ``process_started`` fails as on a full disk, at once or once git is done."""

    def __init__(self, root: Path, wait_for: threading.Event | None) -> None:
        super().__init__(root)
        self.wait_for = wait_for

    def append(self, task_id: str, event_type: str, data: dict[str, Any], **kw: Any) -> Any:
        if event_type == "process_started":
            if self.wait_for is not None:
                assert self.wait_for.wait(30), "the worktree was never made"
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().append(task_id, event_type, data, **kw)


@pytest.mark.parametrize("when", ["at once", "after git made the worktree"])
async def test_a_process_started_that_cannot_be_written_leaves_no_worktree(
    tmp_path: Path, when: str
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    Board.init(root, project_code="LAT", default_actor=ACTOR)
    (root / "workers").mkdir()
    (root / "workers" / "tree.json").write_text(
        json.dumps({"name": "Tree", "engine": "script", "command": "sleep 300", "worktree": True})
    )
    git(root, "add", "-A")
    git(root, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init")
    worktrees = _NotedWorktrees(tmp_path / "worktrees")
    board = _FullDiskBoard(root, worktrees.made if when != "at once" else None)
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    actor = actor_for(board, worktrees, "Tree", task_id)
    ctx, info = actor.ctx, actor.view()
    try:
        with trio.fail_after(60):
            await actor.run()
            info = actor.view()
        assert actor.recorded.is_set()
        assert info.state == "failed" and info.reason == "spawn_error", info
        assert "could not write process_started" in (info.error or "")
        assert "No space left" in (info.error or "")
        # Nothing of the run is left: no folder, no registration in git, no process.
        assert not (tmp_path / "worktrees" / info.run_id).exists()
        assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 1
        assert processes_with_variable("LATTICE_RUN_ID", info.run_id) == []
        events = [json.loads(line) for line in board.events_path(task_id).read_text().splitlines()]
        assert [e["type"] for e in events] == ["task_created"]
    finally:
        for pid in processes_with_variable("LATTICE_RUN_ID", info.run_id):
            os.killpg(pid, 9)
        ctx.journal.close()


async def test_a_keep_that_overruns_the_end_still_ends_the_attempt_on_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A FIFO named .gitignore blocks keep's `git status` until its bound: the thread
    # running it outlives the end's whole budget. The terminal event is written anyway
    # (its changes say the work could not be kept), never lost to the spent budget.
    from lattice_workers.actors import _attempt, _keep

    monkeypatch.setattr(_keep, "GIT_SECONDS", 4.0)
    monkeypatch.setattr(_attempt, "CLEANUP_SECONDS", 2.0)
    monkeypatch.setattr(_attempt, "TERMINAL_SECONDS", 1.0)
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    Board.init(root, project_code="LAT", default_actor=ACTOR)
    (root / "workers").mkdir()
    (root / "workers" / "fifo.json").write_text(json.dumps({
        "name": "Fifo", "engine": "script", "worktree": True, "kill_grace_seconds": 0,
        "command": "mkdir d && mkfifo d/.gitignore && echo x > d/x",
    }))
    git(root, "add", "-A")
    git(root, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init")
    board = Board(root)
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    actor = actor_for(board, Worktrees(tmp_path / "worktrees"), "Fifo", task_id)
    actor.record.commit_sha = git(root, "rev-parse", "HEAD")  # as the registry sets it
    try:
        with trio.fail_after(60):
            await actor.run()
    finally:
        actor.ctx.journal.close()
    events = [
        json.loads(line)
        for line in (root / ".lattice" / "events" / f"{task_id}.jsonl").read_text().splitlines()
    ]
    ends = [e for e in events if e["type"] in ("process_completed", "process_failed")]
    assert [e["type"] for e in events if e["type"].startswith("process_")] == [
        "process_started", "process_completed"
    ], events
    assert "could not be kept" in ends[0]["data"]["changes"]["error"], ends[0]
