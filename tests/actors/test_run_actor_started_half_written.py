"""A ``process_started`` whose log line went down but whose snapshot did not still ends.

The canonical write appends the event to the task's log (durable) and only then
writes the snapshot; a full disk can refuse the second after the first. The board
then shows the run as started (the log is the truth), so the run must also end there,
with exactly one ``process_failed``; and it leaves no worktree, process or log
descriptor behind.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

import lattice_workers.store._write as store_write
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.store import Board
from tests.actors.conftest import ACTOR, actor_for, git
from tests.e2e.conftest import open_files_under, processes_with_variable


@pytest.mark.parametrize("worktree", [True, False], ids=["worktree", "no-worktree"])
async def test_a_process_started_whose_snapshot_failed_still_gets_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worktree: bool
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    board = Board.init(root, project_code="LAT", default_actor=ACTOR)
    (root / "workers").mkdir()
    (root / "workers" / "tree.json").write_text(
        json.dumps(
            {"name": "Tree", "engine": "script", "command": "sleep 300", "worktree": worktree}
        )
    )
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    snapshot = board.snapshot_file(task_id)
    real_write = store_write.atomic_write_bytes
    refused: list[str] = []

    def full_disk_after_the_log(path: Any, data: bytes) -> None:
        # The first snapshot write after the log line of a process_started: ENOSPC.
        if str(path) == snapshot and not refused and b'"process_type"' in data:
            refused.append(str(path))
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(store_write, "atomic_write_bytes", full_disk_after_the_log)
    actor = actor_for(board, Worktrees(tmp_path / "worktrees"), "Tree", task_id)
    ctx, info = actor.ctx, actor.view()
    try:
        with trio.fail_after(60):
            await actor.run()
            info = actor.view()
        assert refused, "the snapshot write was never refused: the test proves nothing"
        assert info.state == "failed" and info.reason == "spawn_error", info
        assert "No space left" in (info.error or "")
        # What failed is the snapshot after the log line, not the process_started.
        assert "process_started is in the task's log" in (info.error or ""), info.error
        assert "could not write process_started" not in (info.error or "")
        events = [json.loads(line) for line in board.events_path(task_id).read_text().splitlines()]
        started = [e for e in events if e["type"] == "process_started"]
        ends = [e for e in events if e["type"] in ("process_completed", "process_failed")]
        assert len(started) == 1, events
        assert len(ends) == 1, [e["type"] for e in events]
        assert ends[0]["type"] == "process_failed"
        assert ends[0]["data"]["started_event_id"] == started[0]["id"]
        assert ends[0]["data"]["reason"] == "spawn_error"
        assert board.open_runs() == []
        assert (board.replay(task_id) or {}).get("active_processes") == []
        # Nothing of the run is left: no folder, no registration, no process, no fd.
        assert not (tmp_path / "worktrees" / info.run_id).exists()
        assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 1
        assert processes_with_variable("LATTICE_RUN_ID", info.run_id) == []
        assert open_files_under("self", board.worker_log_dir()) == []
    finally:
        for pid in processes_with_variable("LATTICE_RUN_ID", info.run_id):
            os.killpg(pid, 9)
        ctx.journal.close()
