"""A run's deadline and kill grace, in virtual time: a real worker process, a real
board, and Trio's MockClock, which jumps to the next deadline once the loop has been
idle for a moment (real time), so minutes of deadline cost a second or two.

The jump waits for a real second of idleness rather than none: the actor's thread
hops (board writes) leave the loop idle too, and a jump in the middle of one would
skip the cleanup's own deadline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio
import trio.testing

from lattice_workers.actors._worktree import Worktrees
from lattice_workers.store import Board
from tests.actors.conftest import ACTOR, actor_for
from tests.e2e.conftest import processes_with_variable


async def run_worker(tmp_path: Path, command: str, **definition: object) -> tuple[dict, float]:
    """Run ``command`` as worker W; its terminal event and the virtual time it took."""
    board = Board.init(tmp_path, project_code="LAT", default_actor=ACTOR)
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "w.json").write_text(json.dumps(
        {"name": "W", "engine": "script", "command": command, "worktree": False, **definition}
    ))
    actor = actor_for(board, Worktrees(tmp_path / "worktrees"), "W", task_id)
    began = trio.current_time()
    try:
        await actor.run()
    finally:
        for pid in processes_with_variable("LATTICE_RUN_ID", actor.run_id):
            os.killpg(pid, 9)
        actor.ctx.journal.close()
    took = trio.current_time() - began
    assert processes_with_variable("LATTICE_RUN_ID", actor.run_id) == []
    events = [json.loads(line) for line in board.events_path(task_id).read_text().splitlines()]
    return events[-1], took


async def test_a_worker_past_its_deadline_is_stopped_with_sigterm(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 1.0
    end, took = await run_worker(tmp_path, "sleep 600", timeout_minutes=2, kill_grace_seconds=30)
    assert end["type"] == "process_failed"
    assert end["data"]["reason"] == "timeout" and end["data"]["signal"] == 15
    assert 120 <= took < 150  # the deadline, and no grace needed: sleep obeys SIGTERM
    assert 120 <= end["data"]["duration_seconds"] < 150


async def test_a_worker_that_ignores_sigterm_is_killed_after_its_grace(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 1.0
    end, took = await run_worker(
        tmp_path, "trap '' TERM; while :; do sleep 1; done", timeout_minutes=1,
        kill_grace_seconds=45,
    )
    assert end["data"]["reason"] == "timeout" and end["data"]["signal"] == 9
    assert 60 + 45 <= took < 60 + 45 + 30
