"""A full disk under the board (issue 18): runs start and end while a small real
filesystem is full; once space is back, a restart and ``doctor --fix`` leave every
start with one end, ``doctor`` clean, and nothing lost that was acknowledged.

The filesystem is a tmpfs this test mounts and unmounts, so it runs as root only;
elsewhere it is skipped with a line that says so."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, make_project, stop_everything

SIZE = "24m"


@pytest.fixture
def small_project(tmp_path: Path) -> Iterator[Project]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root: run the tests as root to include this")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"could not mount a tmpfs here: {done.stderr.strip()}")
    project = None
    try:
        project = make_project(mount)
        yield project
    finally:
        try:
            if project is not None:
                stop_everything(project)
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the filesystem is full; the file, to free it later."""
    filler = folder / "filler"
    chunk = b"\0" * (64 * 1024)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_runs_on_a_full_disk_heal_after_restart_and_doctor_fix(small_project: Project) -> None:
    project = small_project
    project.write_worker("Quick", command="echo hello; echo more output", worktree=False)
    project.configure_workers(max_concurrent=4)
    tasks = [project.create_task(f"task {i}") for i in range(4)]
    project.cli("supervisor", "start")
    acknowledged: list[dict[str, object]] = []
    for task in tasks[:1]:
        acknowledged += project.json("worker", "run", "Quick", task, "--wait")["data"]
    filler = _fill(project.root.parent)
    for task in tasks[1:]:  # started and ended (or refused) while the disk is full
        proc = project.cli("worker", "run", "Quick", task, "--wait", "--json", check=False)
        reply = json.loads(proc.stdout) if proc.stdout.strip() else {}
        if reply.get("ok"):
            acknowledged += reply["data"]
    filler.unlink()
    project.cli("supervisor", "stop", check=False)
    project.cli("doctor", "--fix", "--json", check=False)
    doctor = project.cli("doctor", "--json", check=False)
    assert doctor.returncode == 0, doctor.stdout
    ends: Counter[str] = Counter()
    starts: set[str] = set()
    for task in tasks:
        for event in project.process_events(task):
            if event["type"] == "process_started":
                starts.add(event["id"])
            else:
                ends[event["data"]["started_event_id"]] += 1
        assert project.snapshot(task)["active_processes"] == []
    assert set(ends) == starts and set(ends.values()) <= {1}, (starts, ends)
    for run in acknowledged:  # what a reply said was started is on the board
        if run.get("started_event_id"):
            assert run["started_event_id"] in starts, run
