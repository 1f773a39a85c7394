"""Recovery alone: a board, a journal and a registry, no supervisor around them.

What a previous supervisor left: a started run whose worker still lives (its pid and
start time in the journal, its worktree folder), a run open on the board that the
journal never heard of, a run accepted but never started, and a finished one.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from lattice_workers.actors._journal import Journal, JournalRecord, RunRequest
from lattice_workers.actors._process_group import process_start_time
from lattice_workers.protocol._messages import RunInfo
from lattice_workers.store import Board
from lattice_workers.supervisor._recovery import recover
from tests.e2e.conftest import alive

ACTOR = "human:ana"


class Registry:
    """What recovery hands runs to: the finished ones, and those to queue again."""

    def __init__(self) -> None:
        self.finished: list[str] = []
        self.requeued: list[str] = []

    def restore_finished(self, records: list[JournalRecord]) -> None:
        self.finished += [r.run.run_id for r in records]

    async def requeue(self, record: JournalRecord) -> None:
        self.requeued.append(record.run.run_id)


def record(
    seq: int, run_id: str, task_id: str, state: str, start_time: int | None = None, **run: Any
) -> JournalRecord:
    info = RunInfo(
        run_id=run_id, task_id=task_id, worker="W", state=state, actor=ACTOR,
        created_at=time.time(), **run,
    )
    return JournalRecord(
        seq=seq, run=info, request=RunRequest(worker="W", task=task_id),
        pid_start_time=start_time,
    )


def sleeper(**env: str) -> subprocess.Popen[bytes]:
    """A worker left running, in a process group of its own."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True, env={**os.environ, **env})


async def test_recovery_settles_kills_closes_removes_and_requeues(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    board = Board.init(tmp_path / "project", project_code="LAT", default_actor=ACTOR)
    tasks = [str(board.create_task(f"t{i}", actor=ACTOR)["id"]) for i in range(3)]
    started = board.append(
        tasks[0], "process_started",
        {"process_type": "W", "run_id": "run_started", "timeout_minutes": 10}, actor=ACTOR,
    ).event
    board.append(  # open on the board, unknown to the journal (deleted, or another tool)
        tasks[1], "process_started", {"process_type": "Old", "timeout_minutes": 10},
        actor=ACTOR,
    )
    worker = sleeper()
    stray = sleeper(LATTICE_RUN_ID="run_started")  # left the group: found by its run id
    start_time = process_start_time(worker.pid)
    assert start_time is not None
    worktrees = tmp_path / "worktrees"
    (worktrees / "run_started").mkdir(parents=True)  # not a git worktree: just removed
    journal = Journal(board.dir / "run" / "journal.jsonl")
    journal.write(record(1, "run_done", tasks[2], "completed", ended_at=time.time()))
    journal.write(record(
        2, "run_started", tasks[0], "running", start_time, started_event_id=started["id"],
        pid=worker.pid, worktree_path=str(worktrees / "run_started"),
    ))
    journal.write(record(3, "run_queued", tasks[2], "queued"))
    registry = Registry()
    try:
        await recover(
            board, journal, registry,  # type: ignore[arg-type]
            worktree_base=worktrees, keep_finished=10, keep_finished_seconds=86400,
        )
        assert worker.wait(timeout=10) == -9 and stray.wait(timeout=10) == -9
    finally:
        for proc in (worker, stray):
            if alive(proc.pid):
                proc.kill()
            proc.wait()
    assert board.open_runs() == []
    for task in tasks[:2]:
        (end,) = [e for e in board.read_events(task).events if e["type"] == "process_failed"]
        assert end["data"]["reason"] == "orphaned"
    assert not (worktrees / "run_started").exists()
    after = Journal(journal.path).load()
    assert after["run_started"].run.state == "failed"
    assert after["run_started"].run.reason == "orphaned"
    assert registry.finished == ["run_done", "run_started"]
    assert registry.requeued == ["run_queued"]
