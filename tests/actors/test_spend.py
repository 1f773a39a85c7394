"""DailySpend: the day's ``agent.cost_usd`` of terminal events, read incrementally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lattice_workers.store._spend import DailySpend


def event(kind: str, ts: str, cost: Any, **extra: Any) -> str:
    data: dict[str, Any] = {"started_event_id": "ev_1", **extra}
    if cost is not None:
        data["agent"] = {"engine": "claude", "cost_usd": cost}
    return json.dumps({"type": kind, "ts": ts, "data": data, "id": "ev_2"}) + "\n"


def test_sums_todays_terminal_events_only(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    (events / "task_a.jsonl").write_text(
        event("process_completed", "2026-12-02T01:00:00Z", 0.5)
        + event("process_failed", "2026-12-02T23:59:59Z", 0.25)
        + event("process_completed", "2026-12-01T23:59:59Z", 9.0)  # yesterday
        + event("process_started", "2026-12-02T01:00:00Z", 7.0)  # not terminal
        + event("process_completed", "2026-12-02T02:00:00Z", None)  # a script
        + event("process_completed", "2026-12-02T02:00:00Z", "1.0")  # not a number
        + "not json at all cost_usd \"2026-12-02T process_failed\n"
    )
    archive = tmp_path / "archive" / "events"
    archive.mkdir(parents=True)
    (archive / "task_b.jsonl").write_text(event("process_failed", "2026-12-02T05:00:00Z", 1))
    assert DailySpend(tmp_path).spent("2026-12-02") == 1.75
    assert DailySpend(tmp_path).spent("2026-12-01") == 9.0


def test_reads_only_what_was_appended_and_a_torn_line_later(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    path = events / "task_a.jsonl"
    path.write_text(event("process_completed", "2026-12-02T01:00:00Z", 0.5))
    spend = DailySpend(tmp_path)
    assert spend.spent("2026-12-02") == 0.5
    line = event("process_failed", "2026-12-02T03:00:00Z", 0.25)
    with path.open("a") as f:
        f.write(line[:30])  # a writer mid-line
    assert spend.spent("2026-12-02") == 0.5
    with path.open("a") as f:
        f.write(line[30:])
    assert spend.spent("2026-12-02") == 0.75
    path.write_text(event("process_failed", "2026-12-02T03:00:00Z", 0.1))  # rebuilt, shorter
    assert spend.spent("2026-12-02") == 0.1
    assert spend.spent("2026-12-03") == 0.0  # a new day starts from zero


def test_no_events_folder_is_zero(tmp_path: Path) -> None:
    assert DailySpend(tmp_path / "nowhere").spent() == 0.0


def test_daily_budget_setting_is_checked() -> None:
    import pytest

    from lattice_workers.errors import LatticeError
    from lattice_workers.supervisor._settings import Settings

    assert Settings({}).daily_budget_usd is None
    assert Settings({"workers": {"daily_budget_usd": 2.5}}).daily_budget_usd == 2.5
    with pytest.raises(LatticeError, match=r"workers.daily_budget_usd .* got '5'"):
        Settings({"workers": {"daily_budget_usd": "5"}})


def test_a_file_last_written_before_the_day_is_not_read(tmp_path: Path) -> None:
    # A file untouched since yesterday holds no event of today: on a board of thousands
    # of tasks only those written today are read. (The event inside is made up to show
    # that the file was skipped, not read and found empty.)
    import os
    from datetime import UTC, datetime

    events = tmp_path / "events"
    events.mkdir()
    old, new = events / "task_old.jsonl", events / "task_new.jsonl"
    old.write_text(event("process_completed", "2026-12-02T01:00:00Z", 4.0))
    new.write_text(event("process_completed", "2026-12-02T01:00:00Z", 0.5))
    midnight = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
    os.utime(old, (midnight - 60, midnight - 60))
    os.utime(new, (midnight + 60, midnight + 60))
    assert DailySpend(tmp_path).spent("2026-12-02") == 0.5


def test_a_published_total_of_today_is_read_instead_of_the_events(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from lattice_workers.store._spend import spend_today

    events = tmp_path / "events"
    events.mkdir()
    (tmp_path / "run").mkdir()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    (events / "task_a.jsonl").write_text(event("process_completed", f"{today}T01:00:00Z", 0.5))
    assert DailySpend(tmp_path).publish(tmp_path / "run") == 0.5
    assert spend_today(tmp_path)["spent_usd"] == 0.5
    # What ps and show print comes from the published total, not the events: a cost
    # the supervisor has not published yet is not seen (it publishes after each one).
    (events / "task_b.jsonl").write_text(event("process_failed", f"{today}T02:00:00Z", 1.0))
    assert spend_today(tmp_path)["spent_usd"] == 0.5
    # Another day's total (or none, or a torn one) says nothing: the events are read.
    (tmp_path / "run" / "spend.json").write_text('{"day": "2000-01-01", "spent_usd": 9}')
    assert spend_today(tmp_path)["spent_usd"] == 1.5
    (tmp_path / "run" / "spend.json").write_text('{"day": ')
    assert spend_today(tmp_path)["spent_usd"] == 1.5
