"""doctor finds every kind of damage; rebuild repairs what the logs can repair."""

from __future__ import annotations

import json
from pathlib import Path

from lattice_workers.store import Board

from .conftest import ACTOR


def kinds(board: Board) -> list[str]:
    return sorted(p.kind for p in board.doctor())


def test_a_healthy_board_has_no_problems(board: Board, task_id: str, tmp_path: Path) -> None:
    started = board.append(task_id, "process_started", {"process_type": "R"}, actor="agent:r")
    board.append(
        task_id, "process_completed", {"started_event_id": started.event["id"]}, actor="agent:r"
    )
    (tmp_path / "f.txt").write_text("x")
    board.attach(task_id, tmp_path / "f.txt", role="review", actor=ACTOR)
    assert board.doctor() == []


def test_an_open_run_is_reported_and_listed(board: Board, task_id: str) -> None:
    started = board.append(
        task_id,
        "process_started",
        {"process_type": "Review", "run_id": "r-1", "log_path": "x.log"},
        actor="agent:r",
    ).event
    problems = board.doctor()
    assert [p.kind for p in problems] == ["open_run"]
    assert problems[0].task_id == task_id and "r-1" in problems[0].message
    assert board.open_runs() == [
        {
            "task_id": task_id,
            "started_event_id": started["id"],
            "run_id": "r-1",
            "process_type": "Review",
            "started_at": started["ts"],
            "actor": "agent:r",
            "log_path": "x.log",
            "worktree_path": None,
            "run_commit": None,
            "attempt": None,
        }
    ]


def test_a_corrupt_line_is_reported_and_the_rest_still_reads(board: Board, task_id: str) -> None:
    board.comment(task_id, "before", actor=ACTOR)
    with board.events_path(task_id).open("a") as fh:
        fh.write("{garbage\n")
    board.comment(task_id, "after", actor=ACTOR)
    assert kinds(board) == ["corrupt_line"]
    log = board.read_events(task_id)
    assert [e["data"].get("body") for e in log.events[1:]] == ["before", "after"]
    assert "line 3" in log.problems[0]


def test_drift_is_reported_and_rebuild_repairs_it(board: Board, task_id: str) -> None:
    path = board.snapshot_path(task_id)
    snap = json.loads(path.read_text())
    snap["title"] = "edited by hand"
    snap["active_processes"] = [{"started_event_id": "ev_x"}]
    path.write_text(json.dumps(snap))
    problems = board.doctor()
    assert [p.kind for p in problems] == ["drift"]
    assert problems[0].details == {"keys": ["active_processes", "title"]}
    report = board.rebuild()
    assert report.rewritten == [task_id]
    assert board.doctor() == []
    assert board.read_snapshot(task_id)["title"] == "Fix login"


def test_rebuild_is_deterministic_and_matches_incremental_writes(
    board: Board, task_id: str
) -> None:
    board.comment(task_id, "hi", actor=ACTOR)
    board.change_status(task_id, "planned", actor=ACTOR)
    before = {p: p.read_bytes() for p in (board.dir).rglob("*") if p.is_file()}
    first = board.rebuild()
    second = board.rebuild()
    assert first.rewritten == [] and not first.lifecycle_rewritten and not first.ids_rewritten
    assert second.to_dict() == first.to_dict()
    assert {p: p.read_bytes() for p in before} == before


def test_lifecycle_damage_is_reported_and_rebuilt(board: Board, task_id: str) -> None:
    other = board.create_task("other", actor=ACTOR)["id"]
    board.lifecycle_path.write_text("")
    assert kinds(board) == ["lifecycle", "lifecycle"]
    report = board.rebuild()
    assert report.lifecycle_rewritten and report.lifecycle_events == 2
    assert {json.loads(x)["task_id"] for x in board.lifecycle_path.read_text().splitlines()} == {
        task_id,
        other,
    }
    assert board.doctor() == []


def test_a_lost_short_id_index_is_reported_and_rebuilt(board: Board, task_id: str) -> None:
    board.create_task("second", actor=ACTOR)
    (board.dir / "ids.json").unlink()
    assert kinds(board) == ["short_ids"]
    board.rebuild()
    index = json.loads((board.dir / "ids.json").read_text())
    assert index["map"]["LAT-1"] == task_id and index["next_seqs"] == {"LAT": 3}
    assert board.doctor() == []
    assert board.create_task("third", actor=ACTOR)["short_id"] == "LAT-3"


def test_missing_snapshot_artifact_and_stray_files(board: Board, task_id: str) -> None:
    board.append(
        task_id, "artifact_attached", {"artifact_id": "art_01M854QTJN4BXTN7DTFDVA5JR2"}, actor=ACTOR
    )
    (board.dir / "events" / "notes.jsonl").write_text("")
    second = board.create_task("second", actor=ACTOR)["id"]
    board.snapshot_path(second).unlink()
    assert kinds(board) == [
        "malformed_id",
        "missing_artifact",
        "missing_artifact",
        "missing_snapshot",
    ]
    board.rebuild()
    assert board.snapshot_path(second).exists()


def test_an_event_of_another_task_in_a_log_is_reported(board: Board, task_id: str) -> None:
    other = board.create_task("other", actor=ACTOR)["id"]
    line = board.events_path(other).read_text().splitlines()[0]
    event = json.loads(line)
    event["type"] = "x_moved"
    event["id"] = "ev_01M854QTJN4BXTN7DTFDVA5JR2"
    with board.events_path(task_id).open("a") as fh:
        fh.write(json.dumps(event) + "\n")
    assert "wrong_task" in kinds(board)
