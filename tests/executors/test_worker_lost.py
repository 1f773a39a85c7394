"""The attempt's side of a lost node, without a cluster: an executor whose execution's
``wait`` raises ``WorkerLost`` (as the Ray executor's does when a node dies) ends the
run as ``process_failed`` with reason ``node_lost``; and a definition's ``executor``
picks the executor its runs use."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from lattice_workers.actors._definitions import load_workers
from lattice_workers.actors._executor import Launch, LocalExecution, LocalExecutor, WorkerLost
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.errors import Code, LatticeError
from lattice_workers.store import Board
from tests.actors.conftest import ACTOR, actor_for
from tests.e2e.conftest import processes_with_variable


class LosingExecution:
    """A local execution whose machine is lost once the worker has written a line."""

    def __init__(self, inner: LocalExecution, log_path: Path) -> None:
        self.inner = inner
        self.log_path = log_path
        self.pid = inner.pid
        self.start_time = inner.start_time
        self.node = "node-x"
        self.lost = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def returncode(self) -> int | None:
        return None if self.lost else self.inner.returncode  # a lost node says nothing

    async def wait(self) -> int:
        while b"up" not in self.log_path.read_bytes():  # noqa: ASYNC110 (another process)
            await trio.sleep(0.05)
        await self.inner.stop(0)  # here the process is ours: it goes with its "node"
        self.lost = True
        raise WorkerLost("the Ray node running the worker is gone (test)")

    async def stop(self, grace_seconds: float) -> None:
        if not self.lost:
            await self.inner.stop(grace_seconds)


class LosingExecutor(LocalExecutor):
    def start(self, launch: Launch) -> Any:
        log_path = Path(f"/proc/self/fd/{launch.log_fd}").resolve()
        return LosingExecution(super().start(launch), log_path)


async def test_a_lost_worker_ends_the_run_as_node_lost(tmp_path: Path) -> None:
    board = Board.init(tmp_path, project_code="LAT", default_actor=ACTOR)
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "w.json").write_text(json.dumps(
        {"name": "W", "engine": "script", "command": "echo up; sleep 600", "worktree": False,
         "kill_grace_seconds": 1}
    ))
    worktrees = Worktrees(tmp_path / "worktrees")
    actor = actor_for(board, worktrees, "W", task_id)
    actor.ctx.executor = LosingExecutor(board.root, worktrees)
    try:
        await actor.run()
    finally:
        for pid in processes_with_variable("LATTICE_RUN_ID", actor.run_id):
            os.killpg(pid, 9)
        actor.ctx.journal.close()
    events = [json.loads(line) for line in board.events_path(task_id).read_text().splitlines()]
    end = events[-1]
    assert end["type"] == "process_failed", end
    assert end["data"]["reason"] == "node_lost"
    assert "node running the worker is gone" in end["data"]["error"]
    assert actor.record.view().node == "node-x"


def test_a_definition_chooses_its_executor(tmp_path: Path) -> None:
    board = Board.init(tmp_path, project_code="LAT", default_actor=ACTOR)
    (tmp_path / "workers").mkdir()
    for name, executor in (("Far", "ray"), ("Near", "local"), ("Any", None)):
        body = {"name": name, "engine": "script", "command": "true"}
        if executor:
            body["executor"] = executor
        (tmp_path / "workers" / f"{name.lower()}.json").write_text(json.dumps(body))
    worktrees = Worktrees(tmp_path / "worktrees")
    ctx = actor_for(board, worktrees, "Any", "task_x").ctx
    workers = load_workers(board.root)
    far, near, any_ = (workers.require(n) for n in ("Far", "Near", "Any"))
    with pytest.raises(LatticeError) as caught:  # no cluster on this board
        ctx.executor_for(far)
    assert caught.value.code == Code.INVALID_WORKER
    cluster = object()
    ctx.ray = cluster
    assert ctx.executor_for(far) is cluster
    assert ctx.executor_for(near) is ctx.executor and ctx.executor_for(any_) is ctx.executor
    ctx.default_executor = "ray"
    assert ctx.executor_for(any_) is cluster and ctx.executor_for(near) is ctx.executor
    ctx.journal.close()


def test_an_orphan_kept_on_another_machine_has_its_changes_in_its_end(tmp_path: Path) -> None:
    """Recovery closes a run whose workspace was on a cluster node with the ``changes``
    its executor brought back, and never treats ``ray://...`` as a local folder."""
    from lattice_workers.actors._settle import settle_unowned

    board = Board.init(tmp_path, project_code="LAT", default_actor=ACTOR)
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    board.append(task_id, "process_started", {
        "process_type": "W", "run_id": "run_x", "attempt": 2, "commit_sha": "0" * 40,
        "worktree_path": "ray://node/somewhere/work",
    }, actor="agent:w")
    changes = {"ref": "refs/lattice/runs/run_x/2", "files_changed": 1}
    removed: list[list[Path]] = []
    closed = settle_unowned(
        board, board.open_runs(), kill=False, remove_worktrees=removed.append,
        kept_elsewhere={("run_x", 2): changes},
    )
    assert len(closed) == 1 and removed == [[]]
    end = json.loads(board.events_path(task_id).read_text().splitlines()[-1])
    assert end["data"]["reason"] == "orphaned" and end["data"]["changes"] == changes
