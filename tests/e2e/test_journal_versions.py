"""The journal across versions, with a real supervisor: a journal written by a newer
version (fields this one does not know) and a line that cannot be read. The restart
loses nothing: the queued run still runs, the unknown fields stay, the unreadable line
is moved aside with a warning in the supervisor's log."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Project
from tests.e2e.test_crash_recovery import _kill_supervisor, _wait_running

GARBAGE = b'{"v": 9, "seq": 40, "run": {"run_id": "run_torn", "task_'


def _as_if_newer(journal: Path) -> None:
    """Rewrite every record as a later version might have written it, then tear a line."""
    out = []
    for line in journal.read_bytes().splitlines():
        record = json.loads(line)
        record["v"] = 99
        record["placement"] = {"node": "n7"}
        record["run"]["sandbox"] = "ray"
        record["request"]["env"] = {"FROM_CLIENT": "1"}
        out.append(json.dumps(record).encode() + b"\n")
    journal.write_bytes(b"".join(out) + GARBAGE)


def test_a_newer_journal_loses_nothing_and_its_queued_run_still_runs(project: Project) -> None:
    project.configure_workers(max_concurrent=1)
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1)
    project.write_worker("Quick", command="echo done")
    first, second = project.create_task("one"), project.create_task("two")
    running = project.json("worker", "run", "Sleeper", first)["data"]
    queued = project.json("worker", "run", "Quick", second)["data"]
    assert queued["state"] == "queued"
    _wait_running(project, 1)
    _kill_supervisor(project)
    journal = project.root / ".lattice" / "run" / "journal.jsonl"
    _as_if_newer(journal)

    project.cli("supervisor", "start")
    (done,) = project.json("worker", "wait", queued["run_id"])["data"]
    assert done["state"] == "completed", done
    assert [e["type"] for e in project.process_events(second)] == [
        "process_started", "process_completed",
    ]
    ends = [e for e in project.process_events(first) if e["type"] == "process_failed"]
    assert [e["data"]["reason"] for e in ends] == ["orphaned"]

    project.cli("supervisor", "stop")
    records = [json.loads(line) for line in journal.read_bytes().splitlines()]
    latest = {r["run"]["run_id"]: r for r in records}
    assert set(latest) == {running["run_id"], queued["run_id"]}
    assert latest[queued["run_id"]]["run"]["state"] == "completed"
    assert latest[running["run_id"]]["run"]["reason"] == "orphaned"
    for record in latest.values():
        assert record["placement"] == {"node": "n7"}
        assert record["run"]["sandbox"] == "ray"
        assert record["request"]["env"] == {"FROM_CLIENT": "1"}
    (aside,) = journal.parent.glob("journal.unreadable-*.jsonl")
    assert aside.read_bytes() == GARBAGE + b"\n"
    log = (project.root / ".lattice" / "logs" / "supervisor.log").read_text()
    assert "could not be read and were moved to" in log and aside.name in log
    assert "records of version 99" in log
