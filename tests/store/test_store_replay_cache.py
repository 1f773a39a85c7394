"""The incremental replay of a write: only new lines are parsed, and nothing is missed.

Every test checks what a write sees (through ``check``) and writes (the snapshot)
against a full replay of the log (``Board.replay``), after the log was changed behind
the writer's back in the ways other writers and crashes change it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store import Board, new_id
from lattice_workers.store import _replay_cache as cache

from .conftest import ACTOR


@pytest.fixture(autouse=True)
def _cold_cache() -> Iterator[None]:
    cache.forget_all()
    yield
    cache.forget_all()


def foreign_event(task_id: str, etype: str, data: dict[str, Any], **extra: Any) -> bytes:
    """One line as another tool would append it (the tracker formats its own way)."""
    event = {
        "schema_version": 1,
        "id": extra.pop("id", new_id("ev")),
        "ts": "2026-11-24T03:00:00.000000Z",
        "type": etype,
        "task_id": task_id,
        "actor": "human:other",
        "data": data,
    }
    return (json.dumps(event, indent=None) + "\n").encode()


def seen_by_a_write(board: Board, task_id: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []
    board.append(task_id, "x_note", {}, actor=ACTOR, check=lambda s: seen.append(dict(s)))
    return seen[0]


def on_disk(board: Board, task_id: str) -> dict[str, Any]:
    return json.loads(board.snapshot_path(task_id).read_text())


def test_lines_appended_by_another_tool_between_our_writes_are_applied(
    board: Board, task_id: str
) -> None:
    board.comment(task_id, "ours", actor=ACTOR)  # the writer now has a mark on this log
    with board.events_path(task_id).open("ab") as log:
        log.write(foreign_event(task_id, "process_started", {"process_type": "Other"}))
    seen = seen_by_a_write(board, task_id)
    assert [p["process_type"] for p in seen["active_processes"]] == ["Other"]
    assert on_disk(board, task_id) == board.replay(task_id)


def test_a_torn_last_line_is_skipped_like_a_full_replay_skips_it(
    board: Board, task_id: str
) -> None:
    board.comment(task_id, "ours", actor=ACTOR)
    with board.events_path(task_id).open("ab") as log:
        log.write(foreign_event(task_id, "comment_added", {"body": "x"})[:40])  # a crash
    board.comment(task_id, "after the crash", actor=ACTOR)
    board.comment(task_id, "and again", actor=ACTOR)
    assert on_disk(board, task_id) == board.replay(task_id)
    assert on_disk(board, task_id)["comment_count"] == 3


def test_a_replaced_log_is_replayed_from_its_start(board: Board, task_id: str) -> None:
    other = board.create_task("Another", actor=ACTOR)["id"]
    board.comment(task_id, "ours", actor=ACTOR)
    board.change_status(other, "planned", actor=ACTOR)
    # Replace the log by a longer one with different history (a new inode).
    path = board.events_path(task_id)
    first = path.read_bytes().split(b"\n")[0] + b"\n"
    replacement = path.with_name("replacement.tmp")
    replacement.write_bytes(
        first
        + foreign_event(task_id, "status_changed", {"from": "backlog", "to": "planned"})
        + foreign_event(task_id, "x_padding", {"pad": "p" * 400})
    )
    os.replace(replacement, path)
    seen = seen_by_a_write(board, task_id)
    assert seen["status"] == "planned" and seen.get("comment_count", 0) == 0
    assert on_disk(board, task_id) == board.replay(task_id)


def test_a_log_rewritten_in_place_is_replayed_from_its_start(board: Board, task_id: str) -> None:
    board.comment(task_id, "ours", actor=ACTOR)
    board.comment(task_id, "ours again", actor=ACTOR)  # the mark is now after "ours"
    path = board.events_path(task_id)
    inode = path.stat().st_ino
    lines = path.read_bytes().splitlines(keepends=True)
    # Same inode, longer, but the bytes before the writer's mark are different.
    with path.open("r+b") as log:
        log.write(lines[0] + foreign_event(task_id, "x_padding", {"pad": "p" * 600}))
    assert path.stat().st_ino == inode
    seen = seen_by_a_write(board, task_id)
    assert seen.get("comment_count", 0) == 0
    assert on_disk(board, task_id) == board.replay(task_id)


def test_an_edit_of_the_line_before_the_mark_is_noticed_even_at_the_same_length(
    board: Board, task_id: str
) -> None:
    board.change_status(task_id, "planned", actor=ACTOR)
    board.comment(task_id, "x", actor=ACTOR)  # the mark is now after the status change
    path = board.events_path(task_id)
    raw = path.read_bytes()
    edited = raw.replace(b'"to":"planned"', b'"to":"backlog"')
    assert edited != raw and len(edited) == len(raw)
    with path.open("r+b") as log:  # in place: same inode, same length
        log.write(edited)
    seen = seen_by_a_write(board, task_id)
    assert seen["status"] == "backlog"
    assert on_disk(board, task_id) == board.replay(task_id)


def test_a_shrunk_log_is_replayed_from_its_start(board: Board, task_id: str) -> None:
    for n in range(3):
        board.comment(task_id, f"c{n}", actor=ACTOR)
    path = board.events_path(task_id)
    first_two = b"".join(path.read_bytes().splitlines(keepends=True)[:2])
    with path.open("r+b") as log:
        log.truncate(len(first_two))
    seen = seen_by_a_write(board, task_id)
    assert seen["comment_count"] == 1
    assert on_disk(board, task_id) == board.replay(task_id)


def test_an_id_another_tool_wrote_after_our_last_read_is_refused(
    board: Board, task_id: str
) -> None:
    board.comment(task_id, "ours", actor=ACTOR)
    taken = new_id("ev")
    with board.events_path(task_id).open("ab") as log:
        log.write(foreign_event(task_id, "x_note", {}, id=taken))
    with pytest.raises(LatticeError) as err:
        board.append(task_id, "x_note", {}, actor=ACTOR, event_id=taken)
    assert err.value.code == Code.CONFLICT


def test_a_long_history_gives_the_same_snapshot_as_a_cold_replay(
    board: Board, task_id: str
) -> None:
    for n in range(60):
        started = board.append(
            task_id, "process_started", {"process_type": "W", "run_id": f"r{n}"}, actor="agent:w"
        )
        board.append(
            task_id,
            "process_completed",
            {"started_event_id": started.event["id"], "result": "success"},
            actor="agent:w",
        )
        if n % 20 == 0:
            board.comment(task_id, f"c{n}", actor=ACTOR)
    warm = on_disk(board, task_id)
    assert warm == board.replay(task_id)
    assert len(warm["active_processes"]) == 0 and warm["comment_count"] == 3
    cache.forget_all()
    board.comment(task_id, "cold", actor=ACTOR)
    cold = on_disk(board, task_id)
    assert cold == board.replay(task_id)
    assert cold["comment_count"] == warm["comment_count"] + 1


def test_the_number_of_remembered_logs_is_bounded(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "CAPACITY", 3)
    tasks = [board.create_task(f"t{n}", actor=ACTOR)["id"] for n in range(5)]
    for task in tasks:
        board.comment(task, "hi", actor=ACTOR)
    assert len(cache._marks) == 3
    assert list(cache._marks) == [os.fspath(board.events_path(t)) for t in tasks[-3:]]
    for task in tasks:
        assert on_disk(board, task) == board.replay(task)


def test_the_number_of_remembered_events_is_bounded_too(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "MAX_EVENTS", 10)
    small, big = (board.create_task(t, actor=ACTOR)["id"] for t in ("small", "big"))
    board.comment(small, "hi", actor=ACTOR)  # its mark: task_created
    for n in range(12):
        board.comment(big, f"c{n}", actor=ACTOR)  # its mark grows past the budget
    # The older mark went first; the newest stays even alone over the budget.
    assert list(cache._marks) == [os.fspath(board.events_path(big))]
    assert on_disk(board, big) == board.replay(big)


def test_marks_are_keyed_by_path_so_two_boards_do_not_mix(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = Board.init(tmp_path / "one", project_code="ONE", default_actor=ACTOR)
    two = Board.init(tmp_path / "two", project_code="TWO", default_actor=ACTOR)
    a = one.create_task("a", actor=ACTOR)["id"]
    b = two.create_task("b", actor=ACTOR)["id"]
    one.comment(a, "x", actor=ACTOR)
    two.comment(b, "y", actor=ACTOR)
    two.comment(b, "z", actor=ACTOR)
    assert on_disk(one, a)["comment_count"] == 1
    assert on_disk(two, b)["comment_count"] == 2
