"""A board made here, with worker runs, opens in lattice-tracker: show, list, doctor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lattice_workers.store import Board

from .conftest import ours_json, tracker_doctor_findings, tracker_json, tracker_ok


@pytest.fixture
def our_board(tmp_path: Path) -> Board:
    os.environ.pop("LATTICE_ROOT", None)
    board = Board.init(tmp_path, project_code="LAT", default_actor="human:ana")
    first = board.create_task("Review me", actor="human:ana", tags=["x"])["id"]
    board.create_task("Other", actor="human:ana", type="bug")
    board.change_status(first, "planned", actor="human:ana")
    board.comment(first, "please review", actor="human:ana")
    (tmp_path / "spec.md").write_text("# spec\n")
    board.attach(first, tmp_path / "spec.md", role="review", actor="human:ana")
    run = board.append(
        first,
        "process_started",
        {
            "process_type": "CodeReviewLite",
            "run_id": "r1",
            "commit_sha": "abc",
            "timeout_minutes": 10,
        },
        actor="agent:codereviewlite",
        agent_meta={"session": "r1"},
    ).event
    board.append(
        first,
        "process_completed",
        {
            "process_type": "CodeReviewLite",
            "started_event_id": run["id"],
            "run_id": "r1",
            "result": "success",
            "exit_code": 0,
            "duration_seconds": 3.5,
        },
        actor="agent:codereviewlite",
    )
    board.append(
        first,
        "process_started",
        {"process_type": "Tests", "run_id": "r2", "commit_sha": "abc", "timeout_minutes": 5},
        actor="agent:tests",
    )
    return board


def test_tracker_lists_and_shows_our_tasks(tracker: Path, our_board: Board) -> None:
    root = our_board.root
    listed = tracker_json(tracker, "list", cwd=root)
    assert [(t["short_id"], t["status"]) for t in listed] == [
        ("LAT-1", "planned"),
        ("LAT-2", "backlog"),
    ]
    shown = tracker_json(tracker, "show", "LAT-1", cwd=root)
    assert [e["type"] for e in shown["events"]] == [
        "task_created",
        "status_changed",
        "comment_added",
        "artifact_attached",
        "process_started",
        "process_completed",
        "process_started",
    ]
    assert shown["artifact_info"][0]["title"] == "spec.md"
    assert [p["process_type"] for p in shown["active_processes"]] == ["Tests"]
    assert "CodeReviewLite" in tracker_ok(tracker, "show", "LAT-1", "--full", cwd=root)


def test_tracker_doctor_passes_on_our_board(tracker: Path, our_board: Board) -> None:
    assert tracker_doctor_findings(tracker, our_board.root) == []


def test_tracker_writes_on_our_board_keep_it_healthy_here(tracker: Path, our_board: Board) -> None:
    root = our_board.root
    tracker_ok(tracker, "status", "LAT-1", "review", "--actor", "human:bo", cwd=root)
    tracker_ok(tracker, "comment", "LAT-1", "tracker says hi", "--actor", "human:bo", cwd=root)
    tracker_ok(tracker, "create", "From tracker", "--actor", "human:bo", cwd=root)
    problems = our_board.doctor()
    assert [p.kind for p in problems] == ["open_run"]  # the Tests run, still open
    assert [t["short_id"] for t in ours_json("list", cwd=root)] == ["LAT-1", "LAT-2", "LAT-3"]


def test_tracker_rebuild_drops_open_runs_and_our_rebuild_restores_them(
    tracker: Path, our_board: Board
) -> None:
    root = our_board.root
    tracker_ok(tracker, "rebuild", "--all", cwd=root)  # warns about process_* and drops them
    kinds = sorted(p.kind for p in our_board.doctor())
    assert kinds == ["drift", "open_run"]
    our_board.rebuild()
    task = our_board.resolve_task("LAT-1")
    assert [p["process_type"] for p in our_board.read_snapshot(task)["active_processes"]] == [
        "Tests"
    ]
    assert [p.kind for p in our_board.doctor()] == ["open_run"]
    assert tracker_doctor_findings(tracker, root) == []
