"""The ``lattice`` a worker on a Ray node calls (``executors/_shim.py``), without
Ray: a real :class:`NodeAttempt` runs a real worker whose ``lattice show``, ``attach``
and ``comment`` go to the shim; the calls then made on a real board by
:func:`apply_calls` are compared with what the real ``lattice attach`` writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lattice_workers.executors._shim import apply_calls, board_info
from lattice_workers.executors.ray._node import NodeAttempt
from lattice_workers.store import Board
from tests.executors.test_ray_node import git, prepared, read_all

ACTOR = "agent:test-runner"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("hello\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    return root


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Board:
    for name in ("LATTICE_ROOT", "LATTICE_ACTOR"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "board"
    root.mkdir()
    return Board.init(root, project_code="LAT", default_actor="human:ana")


def run_worker(
    node: NodeAttempt, board: Board, task: str, script: str, extra_path: str = ""
) -> tuple[str, dict[str, Any]]:
    """Run ``script`` on the node as the supervisor would (``board_info`` shipped);
    its output and the attempt's files."""
    env = {
        "PATH": os.pathsep.join(p for p in (extra_path, os.environ["PATH"]) if p),
        "LATTICE_RUN_ID": "run_x",
        "LATTICE_TASK_ID": task,
        "LATTICE_ACTOR": ACTOR,
        "LATTICE_ROOT": str(board.root),
        "LATTICE_REPORT_DIR": str(board.root / ".lattice" / "reports"),
    }
    node.start(["bash", "-c", script], env, attempt=1, grace_seconds=1,
               local_roots=[str(board.root)], board=board_info(board, task))
    output = read_all(node).decode()
    assert node.wait(10) is not None
    return output, node.files()


def test_a_node_worker_shows_attaches_and_comments_as_locally(
    repo: Path, tmp_path: Path, board: Board
) -> None:
    task = board.create_task("Fix login", actor="human:ana")
    node = prepared(repo, tmp_path)
    # A `lattice` of the node's own on PATH would read the worktree as the board.
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "lattice").write_text("#!/bin/sh\necho WRONG LATTICE\nexit 9\n")
    (decoy / "lattice").chmod(0o755)
    script = (
        'set -e; lattice show "$LATTICE_TASK_ID" --json > show.json; '
        'lattice show LAT-1 | head -1; '
        'echo "# report" > "$LATTICE_REPORT_DIR/tests-LAT-1.md"; '
        'lattice attach "$LATTICE_TASK_ID" "$LATTICE_REPORT_DIR/tests-LAT-1.md" '
        '--role tests --title "Tests: passed" --json; echo; '
        'lattice comment lat-1 "all green"; '
        'test "$LATTICE_REPORT_DIR" != "$LATTICE_ROOT/.lattice/reports"'
    )
    output, files = run_worker(node, board, task["id"], script, extra_path=str(decoy))
    assert "WRONG" not in output
    shown = json.loads((node.worktree / "show.json").read_text())
    local = subprocess.run(
        [sys.executable, "-m", "lattice_workers", "show", task["id"], "--json"],
        cwd=board.root, capture_output=True, text=True, check=True,
    )
    assert shown == json.loads(local.stdout)
    assert "LAT-1" in output.splitlines()[0]
    answer = json.loads(next(line for line in output.splitlines() if line.startswith("{")))
    art = answer["data"]["artifact_id"]
    assert answer["ok"] and art.startswith("art_")
    # The report came back beside the calls; the worktree has nothing of it.
    assert files["reports"] == {"tests-LAT-1.md": b"# report\n"}
    assert not (node.worktree / ".lattice").exists()
    calls = files["lattice"]
    assert [c["command"] for c in calls] == ["attach", "comment"]
    node.release()

    # Before the calls are made, the board has neither.
    assert board_info(board, task["id"])["show"]["artifacts"] == []
    done = apply_calls(board, calls, tmp_path / "kept")
    assert done.problems == [] and done.artifacts == [art] and len(done.comments) == 1
    assert not (tmp_path / "kept").exists() or not any((tmp_path / "kept").iterdir())

    # The same file attached by the real `lattice attach`: the same records.
    same = tmp_path / "tests-LAT-1.md"
    same.write_text("# report\n")
    here = subprocess.run(
        [sys.executable, "-m", "lattice_workers", "attach", task["id"], str(same),
         "--role", "tests", "--title", "Tests: passed", "--json"],
        cwd=board.root, capture_output=True, text=True, check=True,
        env={**os.environ, "LATTICE_ACTOR": ACTOR},
    )
    local_art = json.loads(here.stdout)["data"]["artifact_id"]
    events = board.read_events(task["id"]).events
    attached = [e for e in events if e["type"] == "artifact_attached"]
    assert [e["data"]["artifact_id"] for e in attached] == [art, local_art]

    def shape(event: dict[str, Any]) -> dict[str, Any]:
        meta = json.loads(
            (board.dir / "artifacts" / "meta" / f"{event['data']['artifact_id']}.json").read_text()
        )
        payload = board.dir / "artifacts" / "payload" / meta["payload"]["file"]
        return {
            "actor": event["actor"], "role": event["data"].get("role"),
            "data_keys": sorted(event["data"]),
            "meta": {k: v for k, v in meta.items() if k not in ("id", "created_at", "payload")},
            "payload": {**meta["payload"], "file": Path(meta["payload"]["file"]).suffix},
            "bytes": payload.read_bytes(),
        }

    assert shape(attached[0]) == shape(attached[1])
    comment = next(e for e in events if e["type"] == "comment_added")
    assert comment["actor"] == ACTOR and comment["data"]["body"] == "all green"


def test_what_the_node_cannot_do_is_refused_with_the_limit_and_nothing_is_called(
    repo: Path, tmp_path: Path, board: Board
) -> None:
    task = board.create_task("Fix login", actor="human:ana")
    other = board.create_task("Other", actor="human:ana")
    node = prepared(repo, tmp_path)
    script = (
        'echo x > f.md; '
        'lattice status "$LATTICE_TASK_ID" done; echo "status=$?"; '
        'lattice worker run Build "$LATTICE_TASK_ID" --json; echo "worker=$?"; '
        f'lattice show {other["id"]}; echo "other=$?"; '
        'lattice attach "$LATTICE_TASK_ID" missing.md --role tests; echo "missing=$?"; '
        'lattice attach "$LATTICE_TASK_ID" f.md --role "bad role"; echo "role=$?"; '
        'lattice comment "$LATTICE_TASK_ID" "  "; echo "empty=$?"'
    )
    output, files = run_worker(node, board, task["id"], script)
    node.release()
    codes = dict(
        line.split("=", 1) for line in output.splitlines()
        if line.split("=", 1)[0] in ("status", "worker", "other", "missing", "role", "empty")
    )
    assert all(code != "0" for code in codes.values()), output
    assert len(codes) == 6, output
    assert "`lattice status` is not available here" in output
    assert '"executor": "local"' in output
    worker_reply = json.loads(next(x for x in output.splitlines() if x.startswith("{")))
    assert worker_reply["ok"] is False and "`lattice worker`" in worker_reply["error"]["message"]
    assert f"no task {other['id']} here" in output
    assert "cannot attach missing.md: no such file" in output
    assert "invalid role 'bad role'" in output
    assert "a comment needs a non-empty body" in output
    assert files["lattice"] == []


def test_a_call_the_board_refuses_at_the_end_keeps_its_file(
    tmp_path: Path, board: Board
) -> None:
    task = board.create_task("Fix login", actor="human:ana")
    calls = [{"command": "attach", "task": task["id"], "actor": ACTOR, "role": "tests",
              "title": None, "name": "r.md", "artifact_id": "not-an-id", "payload": b"x"}]
    done = apply_calls(board, calls, tmp_path / "kept")
    assert len(done.problems) == 1 and "invalid artifact id" in done.problems[0]
    assert (tmp_path / "kept" / "lattice-call-1" / "r.md").read_bytes() == b"x"
    assert not [e for e in board.read_events(task["id"]).events
                if e["type"] == "artifact_attached"]
