"""The board commands run as a user runs them: the real `lattice` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lattice_workers.store import Board


def lattice(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
    return subprocess.run(
        [sys.executable, "-m", "lattice_workers", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok_json(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    proc = lattice(*args, "--json", cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    envelope = json.loads(proc.stdout)
    assert envelope["ok"] is True
    return envelope["data"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proc = lattice("init", "--project-code", "LAT", "--actor", "human:ana", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path


def test_a_task_goes_through_its_life_from_the_command_line(project: Path) -> None:
    sub = project / "src"
    sub.mkdir()
    created = ok_json("create", "Fix login", "--tag", "auth", "--priority", "high", cwd=sub)
    assert created["short_id"] == "LAT-1" and created["tags"] == ["auth"]
    moved = ok_json("status", "lat-1", "planned", cwd=sub)
    assert moved["changed"] and moved["task"]["status"] == "planned"
    same = ok_json("status", "LAT-1", "planned", cwd=sub)
    assert same["changed"] is False and same["event"] is None
    comment = ok_json("comment", "LAT-1", "on it", "--actor", "agent:bot", cwd=sub)
    assert comment["event"]["actor"] == "agent:bot"
    report = sub / "review.md"
    report.write_text("LGTM")
    attached = ok_json("attach", created["id"], str(report), "--role", "review", cwd=sub)
    shown = ok_json("show", "LAT-1", cwd=sub)
    assert shown["task"]["status"] == "planned"
    assert [e["type"] for e in shown["events"]] == [
        "task_created",
        "status_changed",
        "comment_added",
        "artifact_attached",
    ]
    assert shown["artifacts"][0]["id"] == attached["artifact_id"]
    assert shown["artifacts"][0]["title"] == "review.md"
    assert shown["problems"] == [] and shown["runs"] == []
    rows = ok_json("list", cwd=sub)
    assert [(r["short_id"], r["status"]) for r in rows] == [("LAT-1", "planned")]
    assert ok_json("doctor", cwd=sub) == {"problems": []}
    assert ok_json("rebuild", cwd=sub)["rewritten"] == []


def test_text_output_reads_well(project: Path) -> None:
    lattice("create", "Fix login", "--description", "line one\nline two", cwd=project)
    out = lattice("create", "Write docs", "--status", "planned", cwd=project).stdout
    assert out.startswith("Created LAT-2 (task_")
    listing = lattice("list", cwd=project).stdout.splitlines()
    assert listing[0].startswith("LAT-1  backlog") and listing[0].endswith("Fix login")
    assert lattice("list", "--status", "planned", cwd=project).stdout.startswith("LAT-2  planned")
    shown = lattice("show", "LAT-1", cwd=project).stdout
    assert '"Fix login"' in shown and "  line two" in shown
    assert "Worker runs:\n  (none)" in shown
    assert "Next: in_planning | planned | needs_human | cancelled" in shown
    status = lattice("status", "LAT-1", "planned", cwd=project)
    assert status.stdout.strip() == "LAT-1: backlog -> planned"


def test_show_lists_worker_runs_from_process_events(project: Path) -> None:
    board = Board(project)
    task = board.create_task("Review me", actor="human:ana")["id"]
    done = board.append(
        task,
        "process_started",
        {"process_type": "CodeReviewLite", "run_id": "run-1", "commit_sha": "abc1234def"},
        actor="agent:codereviewlite",
    ).event
    board.append(
        task,
        "process_completed",
        {"started_event_id": done["id"], "result": "success", "duration_seconds": 42},
        actor="agent:codereviewlite",
    )
    board.append(
        task, "process_started", {"process_type": "Tests", "run_id": "run-2"}, actor="agent:t"
    )
    runs = ok_json("show", "LAT-1", cwd=project)["runs"]
    assert [(r["worker"], r["state"], r["duration"]) for r in runs] == [
        ("CodeReviewLite", "completed", 42),
        ("Tests", "running", None),
    ]
    text = lattice("show", "LAT-1", cwd=project).stdout
    assert "CodeReviewLite  completed  success  commit abc1234def" in text
    assert "took 42s  run run-1" in text
    assert f"log: .lattice/logs/workers/{done['id']}.log" in text


def test_lattice_root_selects_the_board_from_anywhere(project: Path, tmp_path_factory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    env = {"LATTICE_ROOT": str(project)}
    ok_json("create", "remote", cwd=elsewhere, env=env)
    assert [r["title"] for r in ok_json("list", cwd=elsewhere, env=env)] == ["remote"]


def test_actor_comes_from_lattice_actor_when_not_given(project: Path) -> None:
    snap = ok_json("create", "mine", cwd=project, env={"LATTICE_ACTOR": "agent:env"})
    assert snap["created_by"] == "agent:env"


def test_force_with_reason_overrides_the_workflow(project: Path) -> None:
    ok_json("create", "t", cwd=project)
    moved = ok_json("status", "LAT-1", "done", "--force", "--reason", "done elsewhere", cwd=project)
    assert moved["event"]["data"]["force"] is True
    assert moved["event"]["data"]["reason"] == "done elsewhere"


def test_doctor_exits_non_zero_and_lists_problems(project: Path) -> None:
    board = Board(project)
    task = board.create_task("t", actor="human:ana")["id"]
    board.append(task, "process_started", {"process_type": "R", "run_id": "r9"}, actor="agent:r")
    proc = lattice("doctor", cwd=project)
    assert proc.returncode == 7
    assert "open_run: run r9 of R" in proc.stdout
    assert proc.stderr.strip() == "lattice-workers: doctor found 1 problem on this board"
    proc = lattice("doctor", "--json", cwd=project)
    assert proc.returncode == 7
    envelope = json.loads(proc.stdout)
    assert envelope["ok"] is False and envelope["error"]["code"] == "DOCTOR_PROBLEMS"
    assert envelope["error"]["details"][0]["kind"] == "open_run"
    assert envelope["error"]["details"][0]["details"]["run_id"] == "r9"


def test_init_is_idempotent(project: Path) -> None:
    data = ok_json("init", cwd=project)
    assert data["created"] is False and data["project_code"] == "LAT"


def test_board_commands_import_neither_trio_nor_zmq_nor_the_writer(project: Path) -> None:
    """`lattice show` must feel instant: it loads only the modules that read."""
    ok_json("create", "t", cwd=project)
    probe = (
        "import sys, contextlib, io\n"
        "from lattice_workers.cli._app import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['show', 'LAT-1']) == 0\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    for heavy in ("trio", "zmq", "msgspec", "ulid", "lattice_workers.store._write"):
        assert heavy not in loaded, heavy
