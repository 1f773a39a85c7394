"""Reused workspaces through a real supervisor (see actors/_pool.py): the second run of
a worker takes the first one's workspace, the event names the folder it really ran
in, nothing of the first run is left, and the pool goes with the supervisor (stop,
kill -9 then start) and shows in ``doctor``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Project
from tests.e2e.test_crash_recovery import _kill_supervisor

#: A worker that says where it ran and fails if the last run's leftovers are there.
LEAVES_THINGS = (
    'pwd >> "$OUT"; test ! -e junk.txt; test ! -e cache.log; '
    "git branch -q left-branch; git stash list | grep -q . && exit 3; "
    "echo junk > junk.txt; echo c > cache.log; echo edit >> README.md; git stash -q; "
    "git config user.name worker; true"
)


def _started_paths(project: Project, task: str) -> list[str]:
    return [
        e["data"]["worktree_path"]
        for e in project.process_events(task)
        if e["type"] == "process_started"
    ]


def test_the_second_run_reuses_the_first_workspace_clean(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "cwd.txt"
    (project.root / ".gitignore").write_text(".lattice/run/\n.lattice/logs/\n*.log\n")
    project.git("commit", "-qam", "ignore logs")
    project.write_worker("Leaver", command=LEAVES_THINGS, env={"OUT": str(out)})
    task = project.create_task()
    for _ in range(3):
        run = project.json("worker", "run", "Leaver", task, "--wait")["data"][0]
        assert run["state"] == "completed", run
    first, second, third = _started_paths(project, task)
    assert Path(first).name.startswith("run_")
    assert Path(second).name.startswith("pool-") and second == third
    # The event names the folder the worker really ran in.
    assert out.read_text().splitlines() == [first, second, third]
    assert not Path(first).exists()
    assert [str(p) for p in project.workspaces()] == [second]
    assert project.git("branch", "--list", "left-branch") == ""
    report = project.json("doctor")["data"]
    # Its three runs' work is kept too (issue 19): doctor says both.
    assert report["problems"] == [] and report["pool"] == [second]
    assert report["kept_work"]["refs"] == 3
    assert second in project.cli("doctor").stdout
    project.cli("supervisor", "stop", timeout=120)
    assert project.workspaces() == []  # the pool goes with its supervisor


def test_keep_ignored_keeps_a_workers_ignored_files(project: Project) -> None:
    (project.root / ".gitignore").write_text(".lattice/run/\n.lattice/logs/\n.venv/\n")
    project.git("commit", "-qam", "ignore .venv")
    project.write_worker(
        "Builder",
        command='n=$(cat .venv/n 2>/dev/null || echo 0); mkdir -p .venv; echo $((n+1)) > .venv/n; '
        'test ! -e junk; touch junk; echo "$n" > "$LATTICE_OUTPUT"',
        env={"LATTICE_OUTPUT": str(project.root.parent / "n.txt")},
        worktree_reuse="keep-ignored",
    )
    task = project.create_task()
    for expected in ("0", "1"):
        run = project.json("worker", "run", "Builder", task, "--wait")["data"][0]
        assert run["state"] == "completed", run
        assert (project.root.parent / "n.txt").read_text().strip() == expected


def test_the_pool_can_be_turned_off(project: Project) -> None:
    project.configure_workers(worktree_pool=0)
    project.write_worker("Quick", command="true")
    task = project.create_task()
    for _ in range(2):
        project.json("worker", "run", "Quick", task, "--wait")
    assert all(Path(p).name.startswith("run_") for p in _started_paths(project, task))
    assert project.workspaces() == []


def test_a_reload_that_shrinks_the_pool_removes_the_excess(project: Project) -> None:
    project.write_worker("Quick", command="true")
    task = project.create_task()
    project.json("worker", "run", "Quick", task, "--wait")
    assert [p.name[:5] for p in project.workspaces()] == ["pool-"]
    project.configure_workers(worktree_pool=0)
    project.cli("supervisor", "reload")
    assert project.workspaces() == []


def test_bad_pool_size_is_refused_with_a_clear_error(project: Project) -> None:
    project.configure_workers(worktree_pool=-1)
    proc = project.cli("supervisor", "start", check=False)
    assert proc.returncode != 0
    assert "workers.worktree_pool" in proc.stdout + proc.stderr


def test_kill_9_then_start_removes_the_pool(project: Project) -> None:
    project.write_worker("Quick", command="true")
    task = project.create_task()
    project.json("worker", "run", "Quick", task, "--wait")
    [pooled] = project.workspaces()
    assert pooled.name.startswith("pool-")
    _kill_supervisor(project)
    project.cli("supervisor", "start")
    assert project.workspaces() == []
    assert json.loads(project.cli("doctor", "--json").stdout)["data"] == {"problems": []}
