"""Reused workspaces through a real supervisor (see actors/_pool.py): the second run of
a worker takes the first one's workspace, the event names the folder it really ran
in, nothing of the first run is left, and the pool goes with the supervisor (stop,
kill -9 then start) and shows in ``doctor``."""

from __future__ import annotations

import json
import time
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


def _adopted(project: Project) -> str:
    """The supervisor's log once it has checked the workspaces the last one kept (it
    does so beside its first runs); bounded."""
    log = project.root / ".lattice" / "logs" / "supervisor.log"
    for _ in range(600):
        text = log.read_text()
        if "kept by the last supervisor adopted" in text.rsplit("serving", 1)[-1]:
            return text
        time.sleep(0.05)
    raise AssertionError(f"no adoption in the supervisor's log:\n{text[-2000:]}")


def _forget_the_kept_pool(project: Project) -> None:
    """Turn keep_pool_on_stop off again, so that the fixture's stop leaves nothing."""
    project.configure_workers()
    project.cli("supervisor", "reload")


def test_a_pool_kept_on_stop_is_adopted_by_the_next_start(
    project: Project, tmp_path: Path
) -> None:
    out = tmp_path / "cwd.txt"
    (project.root / ".gitignore").write_text(".lattice/run/\n.lattice/logs/\n*.log\n")
    project.git("commit", "-qam", "ignore logs")
    project.configure_workers(keep_pool_on_stop=True)
    project.write_worker("Leaver", command=LEAVES_THINGS, env={"OUT": str(out)})
    task = project.create_task()
    project.json("worker", "run", "Leaver", task, "--wait")
    [pooled] = project.workspaces()
    project.cli("supervisor", "stop", timeout=120)
    assert project.workspaces() == [pooled]
    doctor = project.cli("doctor")
    assert str(pooled) in doctor.stdout and "kept for the next start" in doctor.stdout
    project.cli("supervisor", "start")
    log = _adopted(project)
    assert "1 of 1 pooled workspaces kept by the last supervisor adopted" in log
    # Adopted: the next run works in it, and finds none of the first run's leftovers.
    run = project.json("worker", "run", "Leaver", task, "--wait")["data"][0]
    assert run["state"] == "completed", run
    assert _started_paths(project, task)[-1] == str(pooled)
    assert out.read_text().splitlines()[-1] == str(pooled)
    _forget_the_kept_pool(project)


def test_a_kept_workspace_changed_while_stopped_is_removed_not_reused(
    project: Project,
) -> None:
    project.configure_workers(keep_pool_on_stop=True)
    project.write_worker("Quick", command="true")
    task = project.create_task()
    project.json("worker", "run", "Quick", task, "--wait")
    [pooled] = project.workspaces()
    project.cli("supervisor", "stop", timeout=120)
    (pooled / "README.md").write_text("edited while no supervisor ran\n")
    project.cli("supervisor", "start")
    log = _adopted(project)
    assert f"the workspace {pooled} kept from the last supervisor is not reused" in log
    assert project.workspaces() == []
    project.json("worker", "run", "Quick", task, "--wait")
    assert Path(_started_paths(project, task)[-1]).name.startswith("run_")
    _forget_the_kept_pool(project)


def test_kill_9_returns_the_idle_and_removes_the_one_in_use(project: Project) -> None:
    """With the pool kept, a crash is no different for an idle workspace (its mark says
    it is clean, and adoption checks it); the one a run was using holds that run's
    work: it is kept on the run's ref, and the workspace removed."""
    project.configure_workers(keep_pool_on_stop=True, max_concurrent=4)
    project.write_worker("Quick", command="sleep 1")
    project.write_worker("Editor", command="echo edit >> README.md; sleep 300")
    one, two, three = (project.create_task(t) for t in ("one", "two", "three"))
    runs = [project.json("worker", "run", "Quick", t)["data"]["run_id"] for t in (one, two)]
    project.cli("worker", "wait", *runs, timeout=60)
    assert len(project.workspaces()) == 2
    editor = project.json("worker", "run", "Editor", three)["data"]
    in_use = Path(_started_paths(project, three)[-1])
    [idle] = [p for p in project.workspaces() if p != in_use]
    for _ in range(100):  # until its edit is made
        if "edit" in (in_use / "README.md").read_text():
            break
        time.sleep(0.05)
    project.kill_supervisor()
    report = project.cli("doctor", check=False).stdout  # the open run is a problem
    assert str(idle) in report and str(in_use) in report
    assert "removes 1 and checks 1 before reusing them" in report
    project.cli("supervisor", "start")
    _adopted(project)
    assert project.workspaces() == [idle]
    ended = project.process_events(three)[-1]
    assert ended["type"] == "process_failed" and ended["data"]["reason"] == "orphaned"
    assert ended["data"]["changes"]["ref"] == f"refs/lattice/runs/{editor['run_id']}/1"
    assert "+edit" in project.cli("worker", "diff", editor["run_id"]).stdout
    run = project.json("worker", "run", "Quick", one, "--wait")["data"][0]
    assert _started_paths(project, one)[-1] == str(idle), run
    _forget_the_kept_pool(project)


def test_doctor_fix_without_a_supervisor_removes_strays_and_spares_the_kept_pool(
    project: Project,
) -> None:
    project.configure_workers(keep_pool_on_stop=True)
    project.write_worker("Quick", command="true")
    project.write_worker("Sleeper", command="sleep 300")
    one, two = project.create_task("one"), project.create_task("two")
    project.json("worker", "run", "Quick", one, "--wait")
    [idle] = project.workspaces()
    project.json("worker", "run", "Sleeper", two)  # takes the idle one
    project.json("worker", "run", "Quick", one, "--wait")  # a new one, pooled
    [in_use] = [Path(p) for p in _started_paths(project, two)]
    assert in_use == idle
    [kept] = [p for p in project.workspaces() if p != in_use]
    project.kill_supervisor()
    fixed = project.cli(
        "doctor", "--fix", check=False, env={**project.env, "LATTICE_NO_AUTOSTART": "1"}
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert project.workspaces() == [kept]
    assert "kept for the next start" in fixed.stdout
    project.cli("supervisor", "start")
    _adopted(project)
    assert project.workspaces() == [kept]
    _forget_the_kept_pool(project)


def test_a_bad_keep_pool_on_stop_is_refused_with_a_clear_error(project: Project) -> None:
    project.configure_workers(keep_pool_on_stop="yes")
    proc = project.cli("supervisor", "start", check=False)
    assert proc.returncode != 0
    assert "workers.keep_pool_on_stop" in proc.stdout + proc.stderr
    assert "true or false" in proc.stdout + proc.stderr
