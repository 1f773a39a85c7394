"""The two ways a worker is spawned: in the hop that writes ``process_started`` (no
worktree), or after git made the worktree. Each notes the pid for recovery, hands
the worker its variables, and turns a failed exec into one ``process_failed``."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, alive
from tests.e2e.test_crash_recovery import _kill_supervisor, _wait_running


@pytest.mark.parametrize("worktree", [False, True])
def test_a_worker_that_scrubs_its_environment_still_dies_after_a_crash(
    project: Project, worktree: bool
) -> None:
    """Only the journal's pid record finds it: its environment no longer names the run."""
    project.write_worker("Scrubbed", command="exec env -i sleep 300", worktree=worktree)
    task = project.create_task()
    project.json("worker", "run", "Scrubbed", task)
    (running,) = _wait_running(project, 1)
    environ = Path(f"/proc/{running['pid']}/environ").read_bytes()
    assert b"LATTICE_RUN_ID" not in environ
    journal = project.root / ".lattice" / "run" / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    noted = [r for r in records if r["run"].get("pid") == running["pid"]]
    assert noted and noted[-1].get("pid_start_time"), records
    _kill_supervisor(project)
    assert alive(running["pid"])
    project.cli("supervisor", "start")
    assert not alive(running["pid"])
    (end,) = [e for e in project.process_events(task) if e["type"] != "process_started"]
    assert end["data"]["reason"] == "orphaned"


@pytest.mark.parametrize("worktree", [False, True])
def test_an_exec_that_fails_after_preflight_ends_the_run_on_the_record(
    project: Project, worktree: bool
) -> None:
    script = project.root / "broken.sh"
    script.write_text("#!/nonexistent/interpreter\necho never\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    project.write_worker("Broken", command=[str(script)], worktree=worktree)
    task = project.create_task()
    proc = project.cli("worker", "run", "Broken", task, "--wait", "--json", check=False)
    run = json.loads(proc.stdout)["data"][0]
    assert run["state"] == "failed" and run["reason"] == "spawn_error", run
    assert "could not start the worker" in run["error"]
    started, end = project.process_events(task)
    assert started["type"] == "process_started"
    assert end["type"] == "process_failed" and end["data"]["reason"] == "spawn_error"
    assert end["data"]["started_event_id"] == started["id"]
    assert project.snapshot(task)["active_processes"] == []
    assert len(project.worktree_list()) == 1


def test_a_worker_without_a_worktree_gets_its_started_event_id(project: Project) -> None:
    project.write_worker(
        "Here",
        command='printf "%s %s" "$LATTICE_STARTED_EVENT_ID" "$PWD" > "$LATTICE_LOG.seen"',
        worktree=False,
    )
    task = project.create_task()
    proc = project.cli("worker", "run", "Here", task, "--wait", "--json")
    run = json.loads(proc.stdout)["data"][0]
    assert run["state"] == "completed"
    started_id, cwd = Path(run["log_path"] + ".seen").read_text().split()
    (started,) = [e for e in project.process_events(task) if e["type"] == "process_started"]
    assert started_id == started["id"] == run["started_event_id"]
    assert os.path.samefile(cwd, project.root)


def test_log_and_result_folders_removed_under_a_live_supervisor_come_back(
    project: Project,
) -> None:
    project.write_worker(
        "Ok", command='echo \'{"ok": 1}\' > "$LATTICE_RESULT_FILE"', worktree=False
    )
    task = project.create_task()
    project.cli("supervisor", "start")
    logs = project.root / ".lattice" / "logs" / "workers"
    results = project.root / ".lattice" / "run" / "results"
    for _ in range(2):
        run = json.loads(project.cli("worker", "run", "Ok", task, "--wait", "--json").stdout)
        assert run["data"][0]["result"] == {"ok": 1}
        assert Path(run["data"][0]["log_path"]).parent == logs
        assert oct(results.stat().st_mode & 0o777) == oct(0o700)
        for folder in (logs, results):
            for child in folder.iterdir():
                child.unlink()
            folder.rmdir()
