"""Board hooks: which run, in what order, with what input, and that they never fail a write."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from lattice_workers.store import Board

from .conftest import ACTOR


def set_hooks(board: Board, hooks: dict[str, Any]) -> Board:
    path = board.dir / "config.json"
    config = json.loads(path.read_text())
    config["hooks"] = hooks
    path.write_text(json.dumps(config))
    return Board(board.root)


def record(tag: str, out: Path) -> str:
    return f'echo "{tag} $LATTICE_EVENT_TYPE" >> {out}'


def test_hooks_run_in_lattice_order_for_a_status_change(board: Board, tmp_path: Path) -> None:
    out = tmp_path / "calls"
    board = set_hooks(
        board,
        {
            "post_event": record("post", out),
            "on": {"status_changed": record("on", out)},
            "transitions": {
                "* -> *": record("any", out),
                "backlog -> *": record("from", out),
                "* -> planned": [record("to1", out), record("to2", out)],
                "backlog -> planned": record("exact", out),
                "planned -> review": record("never", out),
            },
        },
    )
    task = board.create_task("t", actor=ACTOR)["id"]
    board.change_status(task, "planned", actor=ACTOR)
    assert out.read_text().splitlines() == [
        "post task_created",
        "post status_changed",
        "on status_changed",
        "exact status_changed",
        "to1 status_changed",
        "to2 status_changed",
        "from status_changed",
        "any status_changed",
    ]


def test_a_hook_gets_the_event_on_stdin_and_lattice_variables(board: Board, tmp_path: Path) -> None:
    out = tmp_path / "hook"
    out.mkdir()
    board = set_hooks(
        board,
        {
            "transitions": {
                "backlog -> planned": (
                    f"cat > {out}/stdin; env | grep ^LATTICE_ | sort > {out}/env; pwd > {out}/cwd"
                )
            }
        },
    )
    task = board.create_task("t", actor=ACTOR)["id"]
    event = board.change_status(task, "planned", actor=ACTOR).event
    assert json.loads((out / "stdin").read_text()) == event
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines())
    assert env["LATTICE_ROOT"] == str(board.root)  # the project root, not .lattice/
    assert env["LATTICE_DIR"] == str(board.dir)
    assert env["LATTICE_TASK_ID"] == task
    assert env["LATTICE_EVENT_ID"] == event["id"]
    assert env["LATTICE_EVENT_TYPE"] == "status_changed"
    assert env["LATTICE_ACTOR"] == ACTOR
    assert (env["LATTICE_FROM_STATUS"], env["LATTICE_TO_STATUS"]) == ("backlog", "planned")
    assert (out / "cwd").read_text().strip() == str(board.root)


def test_failing_hooks_are_logged_and_the_write_stands(
    board: Board, caplog: pytest.LogCaptureFixture
) -> None:
    board = set_hooks(board, {"post_event": ["echo boom >&2; exit 3", "no-such-command-xyz"]})
    task = board.create_task("t", actor=ACTOR)["id"]
    assert board.read_snapshot(task)["title"] == "t"
    messages = [r.getMessage() for r in caplog.records]
    assert any("exited with 3" in m and "boom" in m for m in messages)
    assert any("no-such-command-xyz" in m for m in messages)


@pytest.mark.timeout(30)
def test_a_hanging_hook_is_killed_at_its_deadline(board: Board, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    board = set_hooks(
        board, {"timeout_seconds": 0.5, "on": {"comment_added": f"echo $$ > {pid_file}; sleep 60"}}
    )
    task = board.create_task("t", actor=ACTOR)["id"]
    result = board.comment(task, "hello", actor=ACTOR)
    assert result.written
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


@pytest.mark.timeout(30)
def test_a_hook_that_leaves_a_background_process_does_not_hold_the_write(
    board: Board, tmp_path: Path
) -> None:
    pid_file = tmp_path / "bg"
    board = set_hooks(board, {"on": {"comment_added": f"sleep 60 & echo $! > {pid_file}"}})
    task = board.create_task("t", actor=ACTOR)["id"]
    try:
        board.comment(task, "hello", actor=ACTOR)  # returns although `sleep 60` lives on
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), 9)


def test_hooks_false_runs_no_hook(board: Board, tmp_path: Path) -> None:
    out = tmp_path / "calls"
    board = set_hooks(board, {"post_event": record("post", out)})
    task = board.create_task("t", actor=ACTOR)["id"]
    out.unlink()
    result = board.append(task, "x_quiet", {}, actor=ACTOR, hooks=False)
    assert not out.exists()
    board.run_hooks(result.events)
    assert out.read_text() == "post x_quiet\n"


def test_a_malformed_hooks_section_is_ignored(board: Board) -> None:
    board = set_hooks(board, {"on": ["not", "a", "dict"], "transitions": "nope", "post_event": 5})
    task = board.create_task("t", actor=ACTOR)["id"]
    assert board.change_status(task, "planned", actor=ACTOR).written
