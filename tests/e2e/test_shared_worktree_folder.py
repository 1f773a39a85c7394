"""Two boards in one repository with one LATTICE_WORKTREE_DIR: each supervisor's
recovery removes only its own worktrees, never the other board's live ones."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Project, alive, stop_everything
from tests.e2e.test_crash_recovery import _kill_supervisor, _wait_running


def test_recovery_leaves_the_other_boards_live_worktree_alone(project: Project) -> None:
    sub = project.root / "service"
    sub.mkdir()
    other = Project(sub, project.worktrees)  # same repository, same worktree folder
    other.cli("init", "--project-code", "S")
    try:
        for board in (project, other):
            board.write_worker("Sleeper", command="sleep 300")
        mine = project.create_task()
        theirs = other.create_task()
        project.json("worker", "run", "Sleeper", mine)
        other.json("worker", "run", "Sleeper", theirs)
        (my_run,) = _wait_running(project, 1)
        (their_run,) = _wait_running(other, 1)
        assert Path(my_run["worktree_path"]).parent == Path(their_run["worktree_path"]).parent

        _kill_supervisor(project)
        project.cli("supervisor", "start")  # recovery: settles and removes its leftovers

        assert not Path(my_run["worktree_path"]).exists()
        assert Path(their_run["worktree_path"], "README.md").is_file()
        assert alive(their_run["pid"])
        live = other.json("worker", "ps")["data"]
        assert [r["run_id"] for r in live] == [their_run["run_id"]]
        assert live[0]["state"] == "running"
        other.cli("worker", "cancel", their_run["run_id"])
        done = other.json("worker", "wait", their_run["run_id"], check=False)["data"][0]
        assert done["reason"] == "cancelled"
        assert not Path(their_run["worktree_path"]).exists()
        ends = [e for e in other.process_events(theirs) if e["type"] != "process_started"]
        assert [e["data"]["reason"] for e in ends] == ["cancelled"]
        (mine_end,) = [e for e in project.process_events(mine) if e["type"] != "process_started"]
        assert mine_end["data"]["reason"] == "orphaned"
        assert json.loads(project.cli("doctor", "--json", check=False).stdout)["ok"]
    finally:
        stop_everything(other)
