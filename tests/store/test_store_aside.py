"""Unreadable log lines are moved aside, byte for byte, never dropped."""

from __future__ import annotations

import os

from lattice_workers.store import Board

from .conftest import ACTOR


def test_bad_lines_go_into_a_dated_file_and_the_log_keeps_the_rest(
    board: Board, task_id: str
) -> None:
    board.append(task_id, "comment_added", {"body": "one"}, actor=ACTOR)
    path = board.events_path(task_id)
    good = path.read_bytes()
    os.chmod(path, 0o644)
    garbage, torn = b"not json at all", b'{"type": "comment_added", "da'
    path.write_bytes(good + garbage + b"\n" + torn)
    assert "corrupt_line" in {p.kind for p in board.doctor()}
    moved = board.set_aside_bad_lines(task_id)
    assert moved is not None
    aside, count = moved
    assert count == 2 and aside.parent == path.parent
    assert aside.name.startswith(f"{path.name}.aside-")
    assert aside.read_bytes() == garbage + b"\n" + torn + b"\n"
    assert path.read_bytes() == good
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert board.doctor() == []
    assert board.set_aside_bad_lines(task_id) is None  # clean: nothing to do
