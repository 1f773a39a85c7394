"""A RunActor whose worker is already spawned when something goes wrong on the loop."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import trio

from lattice_workers.actors._worktree import Worktrees
from lattice_workers.store import Board
from tests.actors.conftest import ACTOR, actor_for
from tests.e2e.conftest import processes_with_variable


async def test_an_error_after_the_spawn_hop_still_stops_the_worker(tmp_path: Path) -> None:
    board = Board.init(tmp_path, project_code="LAT", default_actor=ACTOR)
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "sleeper.json").write_text(
        json.dumps(
            {"name": "Sleeper", "engine": "script", "command": "sleep 300", "worktree": False}
        )
    )

    def run_hooks(events: list[dict[str, Any]]) -> None:
        # As when the supervisor's hook nursery has closed under a crash.
        if events[0]["type"] == "process_started":
            raise RuntimeError("Nursery is closed to new arrivals")

    actor = actor_for(
        board, Worktrees(tmp_path / "worktrees"), "Sleeper", task_id, run_hooks=run_hooks
    )
    ctx, info = actor.ctx, actor.view()
    try:
        with trio.fail_after(30):
            await actor.run()
            info = actor.view()
        assert processes_with_variable("LATTICE_RUN_ID", info.run_id) == []
        lines = board.events_path(task_id).read_text().splitlines()
        events = [json.loads(line) for line in lines]
        ends = [e for e in events if e["type"] in ("process_completed", "process_failed")]
        assert len(ends) == 1 and ends[0]["data"]["reason"] == "spawn_error", ends
        assert "internal error" in ends[0]["data"]["error"]
    finally:
        for pid in processes_with_variable("LATTICE_RUN_ID", info.run_id):
            os.killpg(pid, 9)
        ctx.journal.close()
