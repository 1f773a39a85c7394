"""The run journal: durable appends, last record wins, torn lines skipped, compaction."""

from __future__ import annotations

import time
from pathlib import Path

from lattice_workers.actors._journal import Journal, JournalRecord
from lattice_workers.protocol._messages import Run, RunInfo


def record(seq: int, run_id: str, state: str, ended_at: float | None = None) -> JournalRecord:
    info = RunInfo(
        run_id=run_id, task_id="task_x", worker="W", state=state, actor="agent:w",
        created_at=time.time(), ended_at=ended_at,
    )
    return JournalRecord(seq=seq, run=info, request=Run(worker="W", task="T-1"))


def test_the_last_record_of_a_run_wins_in_acceptance_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "run" / "journal.jsonl")
    journal.write(record(2, "run_b", "queued"))
    journal.write(record(1, "run_a", "queued"))
    journal.write(record(1, "run_a", "running"))
    loaded = journal.load()
    assert list(loaded) == ["run_a", "run_b"]
    assert loaded["run_a"].run.state == "running"


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.write(record(1, "run_a", "queued"))
    journal.close()
    with open(journal.path, "ab") as f:
        f.write(b'{"seq": 2, "run": {"run_id": "run_b"')  # a crash mid-write
    assert list(Journal(journal.path).load()) == ["run_a"]


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
