"""A board made and filled by lattice-tracker reads correctly here, and stays healthy
for the tracker after we write to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import (
    ours,
    ours_json,
    tracker_doctor_findings,
    tracker_json,
    tracker_ok,
)

A = ("--actor", "human:ana")


@pytest.fixture(scope="module")
def tracker_board(tracker: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tracker-board")
    tracker_ok(
        tracker,
        "init",
        *A,
        "--project-code",
        "LAT",
        "--no-setup-agents",
        "--no-setup-claude",
        cwd=root,
    )
    tracker_ok(tracker, "create", "First", *A, "--tags", "auth,ui", "--priority", "high", cwd=root)
    tracker_ok(tracker, "create", "Second", *A, "--type", "bug", cwd=root)
    tracker_ok(tracker, "status", "LAT-1", "planned", *A, cwd=root)
    tracker_ok(tracker, "status", "LAT-1", "review", *A, cwd=root)
    tracker_ok(tracker, "comment", "LAT-1", "Looks right", *A, cwd=root)
    tracker_ok(tracker, "comment", "LAT-1", "Reviewed", "--role", "review", *A, cwd=root)
    (root / "notes.txt").write_text("evidence\n")
    tracker_ok(tracker, "attach", "LAT-1", "notes.txt", "--role", "review", *A, cwd=root)
    tracker_ok(tracker, "assign", "LAT-2", "agent:bot", *A, cwd=root)
    tracker_ok(tracker, "event", "LAT-2", "x_ping", "--data", '{"n": 1}', *A, cwd=root)
    return root


def test_list_shows_the_tracker_tasks(tracker_board: Path) -> None:
    rows = ours_json("list", cwd=tracker_board)
    assert [(r["short_id"], r["title"], r["status"], r["priority"], r["type"]) for r in rows] == [
        ("LAT-1", "First", "review", "high", "task"),
        ("LAT-2", "Second", "backlog", "medium", "bug"),
    ]
    assert rows[1]["assigned_to"] == "agent:bot"


def test_show_has_every_tracker_event_and_artifact(tracker: Path, tracker_board: Path) -> None:
    ours_view = ours_json("show", "LAT-1", cwd=tracker_board)
    theirs = tracker_json(tracker, "show", "LAT-1", cwd=tracker_board)
    assert [e["id"] for e in ours_view["events"]] == [e["id"] for e in theirs["events"]]
    assert ours_view["problems"] == []
    assert [a["title"] for a in ours_view["artifacts"]] == ["notes.txt"]
    assert ours_view["task"]["comment_count"] == 2
    text = ours("show", "LAT-1", cwd=tracker_board).stdout
    assert '"Looks right"' in text and "planned -> review" in text


def test_doctor_is_clean_on_the_tracker_board(tracker_board: Path) -> None:
    assert ours_json("doctor", cwd=tracker_board) == {"problems": []}


def test_the_tracker_rebuild_matches_our_replay(tracker: Path, tracker_board: Path) -> None:
    """Our materialization of the tracker's own keys equals the tracker's."""
    tracker_ok(tracker, "rebuild", "--all", cwd=tracker_board)
    assert ours_json("doctor", cwd=tracker_board) == {"problems": []}


def test_our_writes_keep_the_tracker_board_healthy_for_the_tracker(
    tracker: Path, tracker_board: Path
) -> None:
    ours_json("status", "LAT-1", "done", "--actor", "human:bo", cwd=tracker_board)
    ours_json("comment", "LAT-2", "from the other tool", "--actor", "human:bo", cwd=tracker_board)
    created = ours_json("create", "Third", "--actor", "human:bo", cwd=tracker_board)
    assert created["short_id"] == "LAT-3"  # the tracker's numbering continues
    assert tracker_doctor_findings(tracker, tracker_board) == []
    theirs = tracker_json(tracker, "show", "LAT-1", cwd=tracker_board)
    assert theirs["status"] == "done" and theirs["done_at"] is not None
    listed = tracker_json(tracker, "list", cwd=tracker_board)
    assert [t["title"] for t in listed] == ["First", "Second", "Third"]
    assert ours_json("doctor", cwd=tracker_board) == {"problems": []}
