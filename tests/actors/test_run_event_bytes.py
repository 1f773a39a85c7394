"""The exact bytes of the run events on the board (``process_started``,
``process_completed``, ``process_failed``), as every writer produces them.

Other tools read these lines (lattice-tracker shows them in a task's history), so a
change of a key, a null or an order is a change of format, never a refactoring: each
line is compared whole, with only what differs from run to run (ids, times, paths,
durations) replaced by a placeholder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trio

from lattice_workers.actors._settle import write_orphaned
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.store import Board
from tests.actors.conftest import ACTOR, actor_for, git


def normalized(line: str, root: Path, tmp: Path) -> str:
    line = line.replace(str(root), "<root>").replace(str(tmp), "<tmp>")
    line = re.sub(r'"ts":"[^"]+"', '"ts":"<ts>"', line)
    line = re.sub(r'"duration_seconds":[0-9.e-]+', '"duration_seconds":<s>', line)
    line = re.sub(r"\b[0-9a-f]{40}\b", "<sha>", line)
    seen: dict[str, str] = {}
    counts: dict[str, int] = {}

    def name(match: re.Match[str]) -> str:
        if match.group(0) not in seen:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
            seen[match.group(0)] = f"<{match.group(1)}{counts[match.group(1)]}>"
        return seen[match.group(0)]

    return re.sub(r"\b(ev|run|task)_[0-9A-Z]{26}\b", name, line)


async def run_lines(
    tmp_path: Path, definition: dict, *, commit: bool = False, requested_by: str | None = None
) -> list[str]:
    """Run worker ``W`` once as the registry would, and the task's event lines after
    ``task_created``, normalized."""
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    board = Board.init(root, project_code="LAT", default_actor=ACTOR)
    (root / "workers").mkdir()
    (root / "workers" / "w.json").write_text(
        json.dumps({"name": "W", "engine": "script", **definition})
    )
    git(root, "add", "-A")
    git(root, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init")
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    actor = actor_for(board, Worktrees(tmp_path / "worktrees"), "W", task_id)
    if commit:
        actor.record.commit_sha = git(root, "rev-parse", "HEAD")
        actor.record.base_ref = "main"
    actor.record.requested_by = requested_by
    try:
        with trio.fail_after(60):
            await actor.run()
    finally:
        actor.ctx.journal.close()
    text = "\n".join(board.events_path(task_id).read_text().splitlines()[1:])
    return normalized(text, root, tmp_path).splitlines()


#: What every event of the actor's runs starts with.
HEAD = '{"actor":"human:ana","agent_meta":{"model":null,"session":"<run1>"},"data":{'
#: What every event ends with, after ``data``.
TAIL = '"id":"<ev{n}>","schema_version":1,"task_id":"<task1>","ts":"<ts>","type":"{type}"}}'
LOG = '"log_path":"<root>/.lattice/logs/workers/<ev1>.log",'
STARTED_BARE = (
    HEAD + '"attempt":1,"base_ref":null,"commit_sha":null,' + LOG + '"process_type":"W",'
    '"requested_by":null,"run_id":"<run1>","timeout_minutes":10},'
    + TAIL.format(n=1, type="process_started")
)


async def test_a_completed_run_with_a_result_file(tmp_path: Path) -> None:
    lines = await run_lines(
        tmp_path,
        {"command": "printf '{\"n\": 1}' > \"$LATTICE_RESULT_FILE\"", "worktree": False},
    )
    assert lines == [
        STARTED_BARE,
        HEAD + '"attempt":1,"commit_sha":null,"duration_seconds":<s>,"exit_code":0,' + LOG
        + '"output":{"n":1},"process_type":"W","result":"success","run_id":"<run1>",'
        '"started_event_id":"<ev1>"},' + TAIL.format(n=2, type="process_completed"),
    ]


@pytest.mark.parametrize(
    ("command", "end"),
    [
        ("exit 3", '"error":"the worker exited with code 3","exit_code":3,'),
        ("kill -9 $$", '"error":"the worker was killed by signal 9 SIGKILL",'),
    ],
)
async def test_a_failed_run(tmp_path: Path, command: str, end: str) -> None:
    lines = await run_lines(tmp_path, {"command": command, "worktree": False})
    signal = '"signal":9,' if "kill" in command else ""
    assert lines == [
        STARTED_BARE,
        HEAD + f'"attempt":1,"commit_sha":null,"duration_seconds":<s>,{end}' + LOG
        + f'"process_type":"W","reason":"exit_nonzero","run_id":"<run1>",{signal}'
        '"started_event_id":"<ev1>"},' + TAIL.format(n=2, type="process_failed"),
    ]


async def test_a_run_past_its_deadline_asked_for_by_someone(tmp_path: Path) -> None:
    lines = await run_lines(
        tmp_path,
        {"command": "sleep 30", "worktree": False, "timeout_minutes": 0.002,
         "kill_grace_seconds": 5},
        requested_by="human:bo",
    )
    provenance = '"provenance":{"triggered_by":"human:bo"},'
    assert lines == [
        HEAD + '"attempt":1,"base_ref":null,"commit_sha":null,' + LOG + '"process_type":"W",'
        '"requested_by":"human:bo","run_id":"<run1>","timeout_minutes":0.002},'
        + TAIL.format(n=1, type="process_started").replace('"schema', provenance + '"schema'),
        HEAD + '"attempt":1,"commit_sha":null,"duration_seconds":<s>,'
        '"error":"the worker ran past its deadline of 0.002 minutes",' + LOG
        + '"process_type":"W","reason":"timeout","run_id":"<run1>","signal":15,'
        '"started_event_id":"<ev1>"},'
        + TAIL.format(n=2, type="process_failed").replace('"schema', provenance + '"schema'),
    ]


async def test_a_worktree_run_with_a_bad_result_file(tmp_path: Path) -> None:
    lines = await run_lines(
        tmp_path,
        {"command": "echo nope > \"$LATTICE_RESULT_FILE\"", "worktree": True,
         "timeout_minutes": 2.5},
        commit=True,
    )
    assert lines == [
        HEAD + '"attempt":1,"base_ref":"main","commit_sha":"<sha>",' + LOG
        + '"process_type":"W","requested_by":null,"run_id":"<run1>","timeout_minutes":2.5,'
        '"worktree_path":"<tmp>/worktrees/<run1>"},' + TAIL.format(n=1, type="process_started"),
        # A worktree run's end says what it changed (here nothing: no ref is made).
        HEAD + '"attempt":1,"changes":{"files_changed":0},"commit_sha":"<sha>",'
        '"duration_seconds":<s>,"exit_code":0,' + LOG
        + '"output_error":"result file is not valid JSON and was ignored: JSON is malformed:'
        ' invalid character (byte 4)","process_type":"W","result":"success",'
        '"run_id":"<run1>","started_event_id":"<ev1>"},'
        + TAIL.format(n=2, type="process_completed"),
    ]


def test_an_orphaned_run(tmp_path: Path) -> None:
    """The settle path's end, for a run another tool started (no run id, no log path)."""
    board = Board.init(tmp_path, project_code="LAT", default_actor=ACTOR)
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    board.append(
        task_id, "process_started",
        {"process_type": "Old", "commit_sha": "abc", "timeout_minutes": 10}, actor="agent:old",
    )
    (open_run,) = board.open_runs()
    assert write_orphaned(board, open_run, open_run.get("run_id"))
    line = board.events_path(task_id).read_text().splitlines()[-1]
    assert normalized(line, tmp_path, tmp_path) == (
        '{"actor":"agent:old","data":{"commit_sha":null,"duration_seconds":null,'
        '"error":"the supervisor that owned this run stopped without ending it",'
        '"log_path":null,"process_type":"Old","reason":"orphaned","run_id":null,'
        '"started_event_id":"<ev1>"},"id":"<ev2>","schema_version":1,"task_id":"<task1>",'
        '"ts":"<ts>","type":"process_failed"}'
    )


def test_an_orphaned_run_of_ours(tmp_path: Path) -> None:
    board = Board.init(tmp_path, project_code="LAT", default_actor=ACTOR)
    task_id = str(board.create_task("t", actor=ACTOR)["id"])
    board.append(
        task_id, "process_started",
        {"process_type": "W", "run_id": "run_01M8TGPT698E83WJS48ZKQV5XD", "commit_sha": "abc",
         "log_path": "/x.log", "timeout_minutes": 10}, actor="agent:w",
    )
    (open_run,) = board.open_runs()
    assert write_orphaned(board, open_run, open_run.get("run_id"))
    line = board.events_path(task_id).read_text().splitlines()[-1]
    assert normalized(line, tmp_path, tmp_path) == (
        '{"actor":"agent:w","agent_meta":{"model":null,"session":"<run1>"},"data":{'
        '"commit_sha":null,"duration_seconds":null,'
        '"error":"the supervisor that owned this run stopped without ending it",'
        '"log_path":"/x.log","process_type":"W","reason":"orphaned","run_id":"<run1>",'
        '"started_event_id":"<ev1>"},"id":"<ev2>","schema_version":1,"task_id":"<task1>",'
        '"ts":"<ts>","type":"process_failed"}'
    )
