"""The kept work's patch, attached to the task with role ``diff`` (actors/_patch.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from lattice_workers.actors import _patch
from lattice_workers.actors._keep import keep_work
from lattice_workers.actors._patch import attach_diff_blocking
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.protocol._messages import RunInfo
from lattice_workers.store import Board
from tests.actors.conftest import git

RUN = "run_01M8TK00000000000000000001"
ACTOR = "agent:impl"


@pytest.fixture
def board(repo: Path) -> Board:
    board = Board.init(repo, project_code="LAT", default_actor=ACTOR)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")
    return board


def kept_changes(board: Board, tmp_path: Path, lines: int = 3) -> tuple[RunInfo, dict[str, Any]]:
    task = str(board.create_task("t", actor=ACTOR)["id"])
    base = git(board.root, "rev-parse", "HEAD")
    workspace = trio.run(Worktrees(tmp_path / "ws").create, board.root, "run", base)
    (workspace / "a.txt").write_text("".join(f"line {n}\n" for n in range(lines)))
    (workspace / "blob.bin").write_bytes(bytes(range(256)))
    changes = keep_work(
        workspace=workspace, repo=board.root, run_id=RUN, attempt=1, base_sha=base,
        actor=ACTOR, task=task,
    ).to_event()
    info = RunInfo(run_id=RUN, task_id=task, worker="W", state="completed", actor=ACTOR)
    return info, changes


def attached(board: Board, task: str) -> list[tuple[dict[str, Any], bytes]]:
    found = []
    for ref in board.read_snapshot(task).get("artifact_refs") or []:
        art = ref["id"] if isinstance(ref, dict) else ref
        meta = json.loads((board.dir / "artifacts" / "meta" / f"{art}.json").read_text())
        payload = board.dir / "artifacts" / "payload" / meta["payload"]["file"]
        found.append((ref, payload.read_bytes()))
    return found


def test_the_patch_is_attached_with_role_diff(board: Board, tmp_path: Path) -> None:
    info, changes = kept_changes(board, tmp_path)
    events = attach_diff_blocking(board, info, changes)
    assert [e["type"] for e in events] == ["artifact_attached"]
    assert events[0]["data"]["role"] == "diff" and events[0]["actor"] == ACTOR
    ((_, text),) = attached(board, info.task_id)
    assert text.startswith(f"Work of {RUN} (attempt 1), kept as {changes['ref']}".encode())
    assert b"2 files changed" in text and b"+line 2" in text
    assert b"Binary files" in text  # named, not encoded


def test_a_large_patch_is_cut_at_a_line_and_says_how_to_see_it_all(
    board: Board, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_patch, "MAX_PATCH_BYTES", 2000)
    info, changes = kept_changes(board, tmp_path, lines=1000)
    attach_diff_blocking(board, info, changes)
    ((_, text),) = attached(board, info.task_id)
    assert len(text) < 2000 + 600  # the cut patch, the summary and the last line
    assert b"2 files changed" in text  # the summary is whole
    body, _, last = text.rstrip(b"\n").rpartition(b"\n")
    assert last.startswith(b"[... ") and f"lattice worker diff {RUN}".encode() in last
    assert body.endswith(b"\n") and body.split(b"\n")[-2].startswith(b"+line ")


def test_no_patch_when_nothing_was_kept(board: Board) -> None:
    task = str(board.create_task("t", actor=ACTOR)["id"])
    info = RunInfo(run_id=RUN, task_id=task, worker="W", state="completed", actor=ACTOR)
    assert attach_diff_blocking(board, info, {"files_changed": 0}) == []
    assert attached(board, task) == []


def test_a_board_whose_roles_leave_out_diff_still_gets_the_patch_without_role(
    board: Board, tmp_path: Path
) -> None:
    config = json.loads((board.dir / "config.json").read_text())
    config["workflow"] = {**config.get("workflow", {}), "roles": ["review"]}
    (board.dir / "config.json").write_text(json.dumps(config))
    board = Board(board.root)
    info, changes = kept_changes(board, tmp_path)
    (event,) = attach_diff_blocking(board, info, changes)
    assert "role" not in event["data"]
    assert len(attached(board, info.task_id)) == 1
