"""The run journal: durable appends, last record wins, compaction, and nothing lost:
records of a newer version keep what this one does not know, unreadable lines are
moved aside."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from lattice_workers.actors._journal import JOURNAL_VERSION, Journal, JournalRecord, RunRequest
from lattice_workers.protocol._messages import RunInfo


def record(seq: int, run_id: str, state: str, ended_at: float | None = None) -> JournalRecord:
    info = RunInfo(
        run_id=run_id, task_id="task_x", worker="W", state=state, actor="agent:w",
        created_at=time.time(), ended_at=ended_at,
    )
    return JournalRecord(seq=seq, run=info, request=RunRequest(worker="W", task="T-1"))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_the_last_record_of_a_run_wins_in_acceptance_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "run" / "journal.jsonl")
    journal.write(record(2, "run_b", "queued"))
    journal.write(record(1, "run_a", "queued"))
    journal.write(record(1, "run_a", "running"))
    loaded = journal.load()
    assert list(loaded) == ["run_a", "run_b"]
    assert loaded["run_a"].run.state == "running"


def test_every_record_says_its_version(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.write(record(1, "run_a", "queued"))
    assert lines(journal.path)[0]["v"] == JOURNAL_VERSION


def test_a_record_from_before_versions_with_the_wire_request_reads(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    old = {
        "seq": 3,
        "run": {"run_id": "run_a", "task_id": "t", "worker": "W", "state": "queued",
                "actor": "agent:w"},
        "request": {"type": "run", "v": 1, "rid": 0, "worker": "W", "task": "T-1",
                    "timeout_minutes": 2.5},
    }
    path.write_text(json.dumps(old) + "\n")
    journal = Journal(path)
    loaded = journal.load()
    assert loaded["run_a"].request == RunRequest(worker="W", task="T-1", timeout_minutes=2.5)
    journal.write(loaded["run_a"])  # the wire's own fields are not carried on
    assert "type" not in lines(path)[-1]["request"]


def test_a_torn_last_line_is_moved_aside_by_the_next_compaction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.write(record(1, "run_a", "queued"))
    journal.close()
    torn = b'{"seq": 2, "run": {"run_id": "run_b"'  # a crash mid-write
    with open(journal.path, "ab") as f:
        f.write(torn)
    journal = Journal(journal.path)
    records = journal.load()
    assert list(records) == ["run_a"]
    with caplog.at_level(logging.WARNING, logger="lattice_workers"):
        journal.compact(records, keep_finished=10, max_age_seconds=86400)
    (aside,) = tmp_path.glob("journal.unreadable-*.jsonl")
    assert aside.read_bytes() == torn + b"\n"
    assert "moved to" in caplog.text and aside.name in caplog.text
    assert torn not in journal.path.read_bytes()
    journal.write(record(3, "run_c", "queued"))  # appends after it read cleanly
    assert list(Journal(journal.path).load()) == ["run_a", "run_c"]


def test_a_record_that_is_json_but_not_a_record_is_moved_aside_too(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.write(record(1, "run_a", "queued"))
    with open(journal.path, "ab") as f:
        f.write(b'{"seq": "two", "run": {}}\n[1, 2]\n')
    journal.compact(journal.load(), keep_finished=10, max_age_seconds=86400)
    (aside,) = tmp_path.glob("journal.unreadable-*.jsonl")
    assert aside.read_bytes() == b'{"seq": "two", "run": {}}\n[1, 2]\n'


def test_a_read_alone_moves_nothing(tmp_path: Path) -> None:
    """``doctor`` loads the journal without compacting: the file stays as it is."""
    journal = Journal(tmp_path / "journal.jsonl")
    journal.path.write_bytes(b"garbage\n")
    assert journal.load() == {}
    assert journal.path.read_bytes() == b"garbage\n"
    assert list(tmp_path.glob("journal.unreadable-*")) == []


def newer_line(run_id: str, state: str, seq: int) -> bytes:
    """A record as a later version might write it: fields this version does not know."""
    line = {
        "v": JOURNAL_VERSION + 1,
        "seq": seq,
        "run": {"run_id": run_id, "task_id": "t", "worker": "W", "state": state,
                "actor": "agent:w", "created_at": time.time(), "sandbox": {"kind": "ray"}},
        "request": {"worker": "W", "task": "T-1", "env": {"A": "1"}},
        "placement": "node-7",
    }
    return json.dumps(line).encode() + b"\n"


def test_fields_of_a_newer_version_survive_compaction_and_later_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(newer_line("run_new", "queued", 1) + newer_line("run_done", "completed", 2))
    journal = Journal(path)
    with caplog.at_level(logging.WARNING, logger="lattice_workers"):
        records = journal.load()
    assert f"version {JOURNAL_VERSION + 1}" in caplog.text
    assert records["run_new"].request == RunRequest(worker="W", task="T-1")
    journal.compact(records, keep_finished=10, max_age_seconds=86400)
    # This version's own record of the run (it ran here) keeps them too.
    later = records["run_new"]
    later.run.state = "running"
    journal.write(later)
    journal.compact_now(keep_finished=10, max_age_seconds=86400)
    by_id = {line["run"]["run_id"]: line for line in lines(path)}
    assert set(by_id) == {"run_new", "run_done"}
    for line in by_id.values():
        assert line["placement"] == "node-7"
        assert line["run"]["sandbox"] == {"kind": "ray"}
        assert line["request"]["env"] == {"A": "1"}
    assert by_id["run_new"]["run"]["state"] == "running"
    assert by_id["run_new"]["v"] == JOURNAL_VERSION  # written by this version now
    assert list(tmp_path.glob("journal.unreadable-*")) == []


def test_compaction_keeps_open_runs_and_the_newest_finished(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    now = time.time()
    journal.write(record(1, "run_old", "completed", ended_at=now - 10 * 86400))
    for i in range(2, 6):
        journal.write(record(i, f"run_{i}", "failed", ended_at=now))
    journal.write(record(6, "run_open", "running"))
    kept = journal.compact(journal.load(), keep_finished=2, max_age_seconds=86400)
    assert list(kept) == ["run_4", "run_5", "run_open"]
    assert list(journal.load()) == ["run_4", "run_5", "run_open"]
    assert journal.appended == 0
    journal.write(record(7, "run_7", "queued"))
    assert list(journal.load())[-1] == "run_7"


def test_compact_now_loses_no_record_written_around_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    for i in range(50):
        journal.write(record(i, f"run_{i}", "queued"))
    journal.compact_now(keep_finished=0, max_age_seconds=0)
    journal.write(record(50, "run_50", "queued"))
    assert len(journal.load()) == 51


def test_a_finished_runs_changes_survive_the_journal_and_the_record(tmp_path: Path) -> None:
    """``ps -a`` and ``worker show`` after a restart read finished runs from here."""
    from lattice_workers.actors._record import RunRecord

    changes = {
        "ref": "refs/lattice/runs/run_x/1", "head_sha": "a" * 40, "snapshot_sha": "b" * 40,
        "base_sha": "c" * 40, "commits": 1, "files_changed": 2, "insertions": 3,
        "deletions": 0, "left_out": [],
    }
    finished = record(1, "run_x", "completed", ended_at=time.time())
    finished.run.changes = changes
    journal = Journal(tmp_path / "journal.jsonl")
    journal.write(finished)
    journal.close()
    (loaded,) = Journal(tmp_path / "journal.jsonl").load().values()
    assert loaded.run.changes == changes
    assert RunRecord.from_view(loaded.run).view().changes == changes
