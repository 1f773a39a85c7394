"""What a Run reply promises: the run is already on the record when the client hears of it.

An admitted run's acceptance is written with its ``process_started`` (one thread hop,
fsynced), so the reply comes after the event is on the board. A queued run's
acceptance is in the journal alone, before the reply; nothing is on the board yet.
"""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import Project


def journal_records(project: Project, run_id: str) -> list[dict[str, Any]]:
    path = project.root / ".lattice" / "run" / "journal.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["run"]["run_id"] == run_id]


def test_an_admitted_run_is_on_the_board_and_in_the_journal_when_the_reply_comes(
    project: Project,
) -> None:
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1)
    task = project.create_task("admitted")
    reply = project.json("worker", "run", "Sleeper", task)["data"]
    assert reply["state"] in ("preparing", "running")
    started = [e for e in project.process_events(task) if e["type"] == "process_started"]
    assert [e["data"]["run_id"] for e in started] == [reply["run_id"]]
    assert reply["started_event_id"] == started[0]["id"]
    records = journal_records(project, reply["run_id"])
    assert records and records[0]["run"]["started_event_id"] == started[0]["id"]
    project.cli("worker", "cancel", reply["run_id"])
    project.cli("worker", "wait", reply["run_id"], check=False)
    final = journal_records(project, reply["run_id"])[-1]["run"]
    assert final["state"] == "failed" and final["reason"] == "cancelled"


def test_a_queued_run_is_in_the_journal_and_not_on_the_board_when_the_reply_comes(
    project: Project,
) -> None:
    a, b = project.one_running_one_queued()
    assert [r["run"]["state"] for r in journal_records(project, b["run_id"])] == ["queued"]
    assert project.process_events(b["task_id"]) == []
    # Once the slot frees, the queued run starts, and its record says so; `ps` lists
    # it (its queue position, set while it waited, must not hide it now).
    project.cli("worker", "cancel", a["run_id"])
    project.cli("worker", "wait", a["run_id"], check=False)
    listed = {r["run_id"]: r for r in project.json("worker", "ps")["data"]}
    assert list(listed) == [b["run_id"]] and "queue_position" not in listed[b["run_id"]]
    project.cli("worker", "cancel", b["run_id"])
    waited = project.json("worker", "wait", b["run_id"], check=False)["data"][0]
    assert waited["state"] == "failed" and waited["reason"] == "cancelled"
    states = [r["run"]["state"] for r in journal_records(project, b["run_id"])]
    assert states[0] == "queued" and states[-1] == "failed"
