"""The canonical write path: envelopes, checks under the lock, all-or-nothing writes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store import Board, NewEvent, new_id

from .conftest import ACTOR, board_bytes


def log_lines(board: Board, task_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in board.events_path(task_id).read_text().splitlines()]


def test_append_writes_the_lattice_envelope(board: Board, task_id: str) -> None:
    result = board.append(
        task_id,
        "x_note",
        {"k": "v"},
        actor="agent:bot",
        agent_meta={"session": "run-1"},
        provenance={"triggered_by": "human:ana", "reason": None},
    )
    event = log_lines(board, task_id)[-1]
    assert event == result.event
    assert set(event) == {
        "schema_version",
        "id",
        "ts",
        "type",
        "task_id",
        "actor",
        "data",
        "agent_meta",
        "provenance",
    }
    assert event["agent_meta"] == {"model": None, "session": "run-1"}
    assert event["provenance"] == {"triggered_by": "human:ana"}
    assert re.fullmatch(r"ev_[0-9A-Z]{26}", event["id"])
    raw = board.events_path(task_id).read_text().splitlines()[-1]
    assert raw == json.dumps(event, sort_keys=True, separators=(",", ":"))


def test_envelope_has_no_optional_keys_when_none_given(board: Board, task_id: str) -> None:
    event = board.append(task_id, "x_note", {}, actor=ACTOR).event
    assert "agent_meta" not in event and "provenance" not in event


def test_snapshot_after_each_write_equals_the_replay(board: Board, task_id: str) -> None:
    started = board.append(task_id, "process_started", {"process_type": "R"}, actor="agent:r")
    board.comment(task_id, "hi", actor=ACTOR)
    board.change_status(task_id, "planned", actor=ACTOR)
    board.append(
        task_id, "process_failed", {"started_event_id": started.event["id"]}, actor="agent:r"
    )
    assert json.loads(board.snapshot_path(task_id).read_text()) == board.replay(task_id)


def test_only_lifecycle_events_are_copied_to_the_lifecycle_log(board: Board, task_id: str) -> None:
    board.comment(task_id, "not lifecycle", actor=ACTOR)
    lines = board.lifecycle_path.read_text().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["task_created"]
    assert json.loads(lines[0]) == log_lines(board, task_id)[0]


def test_a_refusing_check_writes_nothing(board: Board, task_id: str) -> None:
    before = board_bytes(board)

    def refuse(snapshot: dict[str, Any]) -> None:
        assert snapshot["title"] == "Fix login"
        raise LatticeError(Code.ALREADY_RUNNING, "no")

    with pytest.raises(LatticeError) as err:
        board.append(task_id, "x_note", {}, actor=ACTOR, check=refuse)
    assert err.value.code == Code.ALREADY_RUNNING
    assert board_bytes(board) == before


def test_check_sees_the_log_even_when_the_snapshot_file_missed_an_update(
    board: Board, task_id: str
) -> None:
    """lattice-tracker writes snapshots computed before it locks; one can lose an update."""
    stale = board.snapshot_path(task_id).read_bytes()
    board.append(task_id, "process_started", {"process_type": "R"}, actor="agent:r")
    board.snapshot_path(task_id).write_bytes(stale)  # as a racing tracker write would leave it
    seen: list[int] = []
    board.append(
        task_id,
        "x_note",
        {},
        actor=ACTOR,
        check=lambda s: seen.append(len(s["active_processes"])),
    )
    assert seen == [1]
    assert len(board.read_snapshot(task_id)["active_processes"]) == 1


def test_unknown_snapshot_keys_are_carried_over(board: Board, task_id: str) -> None:
    path = board.snapshot_path(task_id)
    snap = json.loads(path.read_text())
    snap["x_future_key"] = [1, 2]
    path.write_text(json.dumps(snap))
    board.comment(task_id, "hi", actor=ACTOR)
    assert json.loads(path.read_text())["x_future_key"] == [1, 2]


def test_a_chosen_event_id_is_used_once(board: Board, task_id: str) -> None:
    chosen = new_id("ev")
    assert board.append(task_id, "x_note", {}, actor=ACTOR, event_id=chosen).event["id"] == chosen
    before = board_bytes(board)
    with pytest.raises(LatticeError) as err:
        board.append(task_id, "x_note", {}, actor=ACTOR, event_id=chosen)
    assert err.value.code == Code.CONFLICT
    assert board_bytes(board) == before


@pytest.mark.parametrize(
    ("etype", "data", "actor", "code"),
    [
        ("process_completed", {"process_type": "R"}, ACTOR, Code.INVALID_ARGUMENT),
        ("field_updated", {"field": "status", "to": "done"}, ACTOR, Code.INVALID_ARGUMENT),
        ("task_created", {"title": "again"}, ACTOR, Code.INVALID_ARGUMENT),
        ("Bad Type", {}, ACTOR, Code.INVALID_ARGUMENT),
        ("x_note", {"n": float("inf")}, ACTOR, Code.INVALID_ARGUMENT),
        ("x_note", {}, "nobody", Code.INVALID_ACTOR),
    ],
)
def test_malformed_events_are_refused_and_write_nothing(
    board: Board, task_id: str, etype: str, data: dict[str, Any], actor: str, code: Code
) -> None:
    before = board_bytes(board)
    with pytest.raises(LatticeError) as err:
        board.append(task_id, etype, data, actor=actor)
    assert err.value.code == code
    assert board_bytes(board) == before


def test_appending_to_a_missing_task_creates_no_file(board: Board) -> None:
    missing = "task_01M854QTJN4BXTN7DTFDVA5JR2"
    with pytest.raises(LatticeError) as err:
        board.append(missing, "x_note", {}, actor=ACTOR)
    assert err.value.code == Code.NOT_FOUND
    assert not list(board.dir.rglob(f"*{missing}*"))


def test_append_many_writes_all_or_nothing(board: Board, task_id: str) -> None:
    before = board_bytes(board)
    good = NewEvent("x_a", {}, ACTOR)
    bad = NewEvent("process_failed", {}, ACTOR)
    with pytest.raises(LatticeError):
        board.append_many(task_id, [good, bad])
    assert board_bytes(board) == before
    result = board.append_many(task_id, [NewEvent("x_a", {}, ACTOR), NewEvent("x_b", {}, ACTOR)])
    assert [e["type"] for e in result.events] == ["x_a", "x_b"]
    assert [e["type"] for e in log_lines(board, task_id)][-2:] == ["x_a", "x_b"]


class TestStatus:
    def test_a_legal_move_records_from_and_to(self, board: Board, task_id: str) -> None:
        result = board.change_status(task_id, "planned", actor=ACTOR)
        assert result.event["data"] == {"from": "backlog", "to": "planned"}
        assert result.snapshot["status"] == "planned"

    def test_the_same_status_writes_nothing(self, board: Board, task_id: str) -> None:
        before = board_bytes(board)
        result = board.change_status(task_id, "backlog", actor=ACTOR)
        assert not result.written and result.event == {}
        assert board_bytes(board) == before

    def test_an_illegal_move_is_refused_with_the_allowed_moves(
        self, board: Board, task_id: str
    ) -> None:
        before = board_bytes(board)
        with pytest.raises(LatticeError) as err:
            board.change_status(task_id, "done", actor=ACTOR)
        assert err.value.code == Code.INVALID_TRANSITION
        assert "backlog to done" in err.value.message
        assert err.value.details == {
            "from": "backlog",
            "to": "done",
            "allowed": ["in_planning", "planned", "needs_human", "cancelled"],
        }
        assert board_bytes(board) == before

    def test_force_needs_a_reason_and_is_recorded(self, board: Board, task_id: str) -> None:
        with pytest.raises(LatticeError) as err:
            board.change_status(task_id, "done", actor=ACTOR, force=True)
        assert err.value.code == Code.INVALID_ARGUMENT
        result = board.change_status(task_id, "done", actor=ACTOR, force=True, reason="shipped")
        assert result.event["data"] == {
            "from": "backlog",
            "to": "done",
            "force": True,
            "reason": "shipped",
        }
        assert result.event["provenance"] == {"reason": "shipped"}

    def test_final_statuses_have_no_way_out_but_force(self, board: Board, task_id: str) -> None:
        board.change_status(task_id, "cancelled", actor=ACTOR)
        with pytest.raises(LatticeError) as err:
            board.change_status(task_id, "needs_human", actor=ACTOR)
        assert "it is final" in err.value.message

    def test_unknown_status_is_invalid_argument(self, board: Board, task_id: str) -> None:
        with pytest.raises(LatticeError) as err:
            board.change_status(task_id, "shipped", actor=ACTOR)
        assert err.value.code == Code.INVALID_ARGUMENT

    def test_completion_policy_needs_evidence(
        self, board: Board, task_id: str, tmp_path: Path
    ) -> None:
        path = board.dir / "config.json"
        config = json.loads(path.read_text())
        config["workflow"]["completion_policies"] = {"done": {"require_roles": ["review"]}}
        path.write_text(json.dumps(config))
        board = Board(board.root)
        board.change_status(task_id, "planned", actor=ACTOR)
        board.change_status(task_id, "review", actor=ACTOR)
        with pytest.raises(LatticeError) as err:
            board.change_status(task_id, "done", actor=ACTOR)
        assert "role 'review'" in err.value.message
        report = tmp_path / "review.md"
        report.write_text("LGTM")
        board.attach(task_id, report, role="review", actor=ACTOR)
        assert board.change_status(task_id, "done", actor=ACTOR).snapshot["status"] == "done"


def test_empty_comment_is_refused(board: Board, task_id: str) -> None:
    with pytest.raises(LatticeError) as err:
        board.comment(task_id, " \n", actor=ACTOR)
    assert err.value.code == Code.INVALID_ARGUMENT


class TestAttach:
    def test_payload_meta_and_event(self, board: Board, task_id: str, tmp_path: Path) -> None:
        src = tmp_path / "report.md"
        src.write_bytes(b"# Review\n" * 1000)
        result = board.attach(task_id, src, role="review", actor=ACTOR)
        art_id = result.event["data"]["artifact_id"]
        assert result.event["data"] == {"artifact_id": art_id, "role": "review"}
        payload = board.dir / "artifacts" / "payload" / f"{art_id}.md"
        assert payload.read_bytes() == src.read_bytes()
        meta = json.loads((board.dir / "artifacts" / "meta" / f"{art_id}.json").read_text())
        assert meta["payload"] == {
            "file": f"{art_id}.md",
            "content_type": "text/markdown",
            "size_bytes": 9000,
        }
        assert (meta["id"], meta["type"], meta["title"]) == (art_id, "file", "report.md")
        assert result.snapshot["artifact_refs"] == [{"id": art_id, "role": "review"}]

    def test_an_id_chosen_earlier_is_used_once(
        self, board: Board, task_id: str, tmp_path: Path
    ) -> None:
        """A worker on a Ray node is told its artifact's id when it attaches; the
        supervisor attaches the file with it at the attempt's end."""
        src = tmp_path / "report.md"
        src.write_text("ok")
        chosen = new_id("art")
        result = board.attach(task_id, src, role="tests", actor=ACTOR, artifact_id=chosen)
        assert result.event["data"] == {"artifact_id": chosen, "role": "tests"}
        before = board_bytes(board)
        for bad, code in ((chosen, Code.CONFLICT), ("art_nope", Code.INVALID_ID)):
            with pytest.raises(LatticeError) as err:
                board.attach(task_id, src, role="tests", actor=ACTOR, artifact_id=bad)
            assert err.value.code == code
        assert board_bytes(board) == before

    def test_missing_file_writes_nothing(self, board: Board, task_id: str, tmp_path: Path) -> None:
        before = board_bytes(board)
        with pytest.raises(LatticeError) as err:
            board.attach(task_id, tmp_path / "nope.md", role="review", actor=ACTOR)
        assert err.value.code == Code.NOT_FOUND
        assert board_bytes(board) == before

    def test_a_role_the_board_does_not_know_writes_nothing(
        self, board: Board, task_id: str, tmp_path: Path
    ) -> None:
        path = board.dir / "config.json"
        config = json.loads(path.read_text())
        config["workflow"]["roles"] = ["review"]
        path.write_text(json.dumps(config))
        board = Board(board.root)
        src = tmp_path / "x.txt"
        src.write_text("x")
        before = board_bytes(board)
        with pytest.raises(LatticeError) as err:
            board.attach(task_id, src, role="lunch", actor=ACTOR)
        assert err.value.code == Code.INVALID_ARGUMENT
        assert board_bytes(board) == before
