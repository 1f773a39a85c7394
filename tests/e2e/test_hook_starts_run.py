"""The board hook the README shows: moving a task to review starts one review run.

``.lattice/config.json`` gets ``hooks.transitions["* -> review"] = "lattice worker run
CodeReviewLite $LATTICE_TASK_ID"``; ``lattice status`` runs it after its write, with
the event's ``LATTICE_*`` variables, and the supervisor runs CodeReviewLite (a stand-in
``claude``, see test_shipped_workers) on the task.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Project
from tests.e2e.test_shipped_workers import (
    attachments,
    calc_change,
    init_shipped,
    install_standins,
    start_supervisor,
    worker_env,
)

HOOK = "lattice worker run CodeReviewLite $LATTICE_TASK_ID"


def add_review_hook(project: Project) -> None:
    path = project.root / ".lattice" / "config.json"
    config = json.loads(path.read_text())
    config["hooks"] = {"transitions": {"* -> review": HOOK}}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def test_moving_a_task_to_review_starts_exactly_one_run(project: Project, tmp_path: Path) -> None:
    init_shipped(project)
    calc_change(project)
    add_review_hook(project)
    # The hook runs with the environment of `lattice status`: `lattice` must be on PATH.
    env = worker_env(project, install_standins(tmp_path / "bin", ("claude",)), tmp_path / "calls")
    start_supervisor(project, env)
    task = project.create_task("Add calc.add")

    for status in ("planned", "in_progress"):
        project.cli("status", task, status, env=env)
    assert project.json("worker", "ps", "-a", "--task", task)["data"] == []

    moved = project.cli("status", task, "review", env=env)

    runs = project.json("worker", "ps", "-a", "--task", task)["data"]
    assert len(runs) == 1, f"{runs}\nstatus stderr: {moved.stderr}"
    assert runs[0]["worker"] == "CodeReviewLite"
    waited = project.cli("worker", "wait", runs[0]["run_id"], "--json", check=False)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    events = project.process_events(task)
    assert [e["type"] for e in events] == ["process_started", "process_completed"]
    assert events[0]["data"]["requested_by"] == "human:test"
    (attached,) = attachments(project, task)
    assert attached["data"]["role"] == "review"
    assert project.snapshot(task)["status"] == "review"
    assert len(list((tmp_path / "calls").glob("claude.??????"))) == 1
