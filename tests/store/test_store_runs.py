"""Worker runs derived from process_* events."""

from __future__ import annotations

from typing import Any

from lattice_workers.store import process_runs


def ev(eid: str, etype: str, ts: str, **data: Any) -> dict[str, Any]:
    return {"id": eid, "type": etype, "ts": ts, "actor": "agent:w", "data": data}


def test_runs_pair_starts_with_their_ends() -> None:
    runs = process_runs(
        [
            ev(
                "ev_a",
                "process_started",
                "2026-01-01T00:00:00Z",
                process_type="Review",
                run_id="r1",
                commit_sha="abc123",
            ),
            ev(
                "ev_b",
                "process_started",
                "2026-01-01T00:00:05Z",
                process_type="Tests",
                run_id="r2",
                log_path="/logs/ev_b.log",
            ),
            ev("ev_c", "comment_added", "2026-01-01T00:00:06Z", body="hi"),
            ev(
                "ev_d",
                "process_failed",
                "2026-01-01T00:01:05Z",
                started_event_id="ev_b",
                reason="timeout",
                error="took too long",
                duration_seconds=60.5,
            ),
            ev(
                "ev_e",
                "process_completed",
                "2026-01-01T00:02:00Z",
                started_event_id="ev_a",
                result="success",
                exit_code=0,
            ),
        ]
    )
    review, tests = runs
    assert review["worker"] == "Review" and review["state"] == "completed"
    assert review["result"] == "success" and review["duration"] == 120.0
    assert review["commit"] == "abc123"
    assert review["log_path"] == ".lattice/logs/workers/ev_a.log"
    assert tests["state"] == "failed" and tests["result"] == "timeout"
    assert tests["duration"] == 60.5 and tests["error"] == "took too long"
    assert tests["log_path"] == "/logs/ev_b.log"
    assert tests["ended_event_id"] == "ev_d"


def test_an_unended_run_is_running_and_an_unpaired_end_is_shown() -> None:
    runs = process_runs(
        [
            ev("ev_a", "process_started", "2026-01-01T00:00:00Z", process_type="Review"),
            ev(
                "ev_z",
                "process_failed",
                "2026-01-01T00:00:01Z",
                started_event_id="ev_missing",
                reason="orphaned",
                process_type="Old",
            ),
        ]
    )
    assert [r["state"] for r in runs] == ["running", "failed"]
    assert runs[0]["ended"] is None and runs[0]["duration"] is None
    assert runs[1]["unpaired"] is True and runs[1]["worker"] == "Old"
