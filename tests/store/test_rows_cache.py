"""`lattice list` reuses its rows while the tasks/ folder is unchanged, and only then."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lattice_workers.store import Board


@pytest.fixture
def board(tmp_path: Path) -> Board:
    b = Board.init(tmp_path)
    for i in range(3):
        b.create_task(f"task {i}", actor="human:t")
    settle(b)
    return b


def settle(board: Board) -> None:
    """Date tasks/ and its files an hour back, as if nobody had written since."""
    past = time.time_ns() - 3600 * 10**9
    for path in (board.dir / "tasks").iterdir():
        os.utime(path, ns=(past, past))
    os.utime(board.dir / "tasks", ns=(past, past))


def cache(board: Board) -> Path:
    return board.dir / "run" / "rows-cache.json"


def test_rows_are_cached_and_reused_while_nothing_changes(board: Board) -> None:
    rows, _ = board.task_rows()
    assert len(rows) == 3 and cache(board).exists()
    data = json.loads(cache(board).read_text())
    data["rows"][0]["title"] = "from the cache"
    cache(board).write_text(json.dumps(data))
    again, _ = board.task_rows()
    assert again[0]["title"] == "from the cache"


def test_any_snapshot_write_invalidates_the_cache(board: Board) -> None:
    task_id = board.task_rows()[0][0]["id"]
    assert cache(board).exists()
    board.change_status(task_id, "planned", actor="human:t")
    rows, _ = board.task_rows()
    assert {r["id"]: r["status"] for r in rows}[task_id] == "planned"
    settle(board)
    board.task_rows()
    board.create_task("a fourth", actor="human:t")
    assert len(board.task_rows()[0]) == 4


def test_status_filter_applies_to_cached_rows(board: Board) -> None:
    task_id = board.task_rows()[0][0]["id"]
    board.change_status(task_id, "planned", actor="human:t")
    settle(board)
    board.task_rows()
    assert cache(board).exists()
    assert [r["id"] for r in board.task_rows(status="planned")[0]] == [task_id]


def test_a_folder_changed_just_now_is_not_trusted_whole(board: Board) -> None:
    board.create_task("just now", actor="human:t")
    board.task_rows()
    data = json.loads(cache(board).read_text())
    assert data["folder"] is None and data["rows"] is None
    assert len(data["files"]) == 3  # the settled files; the new one is read every time


def test_after_a_write_only_the_changed_file_is_read_again(board: Board) -> None:
    rows, _ = board.task_rows()
    changed, untouched = rows[0]["id"], rows[1]["id"]
    data = json.loads(cache(board).read_text())
    for name, entry in data["files"].items():
        if name.startswith(untouched):
            entry[1]["title"] = "from the cache"
    cache(board).write_text(json.dumps(data))
    board.change_status(changed, "planned", actor="human:t")
    by_id = {r["id"]: r for r in board.task_rows()[0]}
    assert by_id[changed]["status"] == "planned"
    assert by_id[untouched]["title"] == "from the cache"


def test_a_corrupt_cache_is_ignored(board: Board) -> None:
    board.dir.joinpath("run").mkdir(exist_ok=True)
    cache(board).write_text("{not json")
    assert len(board.task_rows()[0]) == 3
