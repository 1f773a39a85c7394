"""Budgets through the real supervisor: the board's daily budget and per-run limits."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.e2e.conftest import Project

STANDIN = Path(__file__).resolve().parent.parent / "engines" / "standin" / "agent.py"


def install_standins(folder: Path) -> Path:
    """``claude``, ``codex`` and ``gemini`` stand-ins run by this Python, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for engine in ("claude", "codex", "gemini"):
        path = folder / engine
        path.write_text(
            f'#!/bin/sh\nSTANDIN_ENGINE={engine} exec "{sys.executable}" "{STANDIN}" "$@"\n'
        )
        path.chmod(0o755)
    return folder


def spent(project: Project, task: str, cost: float) -> None:
    """A terminal event of today with ``agent.cost_usd``, as a finished agent run leaves."""
    task_id = project.snapshot(task)["id"]
    path = project.root / ".lattice" / "events" / f"{task_id}.jsonl"
    from datetime import UTC, datetime

    event = {
        "actor": "agent:w",
        "data": {
            "started_event_id": "ev_01M8TSZ9414D0ENQDP9N0ZPAZV",
            "agent": {"engine": "claude", "cost_usd": cost},
        },
        "id": "ev_01M8TSZ9414D0ENQDP9N0ZPAZW",
        "schema_version": 1,
        "task_id": task_id,
        "ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "type": "process_completed",
    }
    with path.open("a") as f:
        f.write(json.dumps(event) + "\n")


def test_a_spent_daily_budget_refuses_agent_runs_before_anything_is_written(
    project: Project, tmp_path: Path
) -> None:
    bin_dir = install_standins(tmp_path / "bin")
    project.env = {**project.env, "PATH": f"{bin_dir}{os.pathsep}{project.env['PATH']}"}
    (project.root / "p.md").write_text("Review.\n")
    project.write_worker("Agent", engine="claude", prompt_file="p.md")
    project.write_worker("Script", command="true")
    project.configure_workers(daily_budget_usd=1.0)
    task = project.create_task()
    spent(project, task, 0.75)
    spent(project, task, 0.5)
    before = project.events(task)

    proc = project.cli("worker", "run", "Agent", task, "--json", check=False)
    assert proc.returncode == 9, proc.stdout + proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "BUDGET_EXCEEDED"
    assert "$1.25 of $1.00" in error["message"] and "daily_budget_usd" in error["message"]
    assert project.events(task) == before, "nothing written"

    # A script reports no cost: the agents' budget does not stop it.
    project.cli("worker", "run", "Script", task, "--wait")
    ps = project.cli("worker", "ps", "-a").stdout
    assert "agents spent $1.25 of the $1.00 daily budget today (UTC)" in ps
    # `show` says it too, where a person decides on another run of this task.
    show = project.cli("show", task).stdout
    assert "(agents spent $1.25 of the $1.00 daily budget today (UTC))" in show
    detail = project.json("show", task)["data"]
    assert detail["spend_today"] == {"spent_usd": 1.25, "daily_budget_usd": 1.0}


def test_show_and_ps_say_what_was_spent_without_a_budget(project: Project) -> None:
    task = project.create_task()
    assert "agents spent" not in project.cli("show", task).stdout  # nothing yet, no budget
    assert project.json("show", task)["data"]["spend_today"] == {
        "spent_usd": 0.0, "daily_budget_usd": None
    }
    spent(project, task, 0.125)
    assert "(agents spent $0.12 today (UTC))" in project.cli("show", task).stdout
    project.cli("supervisor", "start")
    assert "agents spent $0.12 today (UTC)" in project.cli("worker", "ps").stdout


def test_max_cost_and_max_turns_are_for_agent_workers_only(project: Project) -> None:
    project.write_worker("Script", command="true")
    task = project.create_task()
    proc = project.cli("worker", "run", "Script", task, "--max-turns", "3", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "only apply to agent workers" in proc.stderr
    bad = project.cli("worker", "run", "Script", task, "--max-cost", "-1", check=False)
    assert bad.returncode == 2 and "greater than 0" in bad.stderr
    assert not project.process_events(task)
