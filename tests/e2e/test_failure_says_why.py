"""A failed run says why: the end of its log travels in its terminal event (issue 17).

``log_tail`` is a new field: the fields the event had keep their bytes (lattice-tracker
reads them). ``lattice show``, ``worker show`` and ``worker wait`` print it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lattice_workers.actors._log_tail import TAIL_BYTES, read_log_tail, tail_text
from tests.e2e.conftest import Project

FAILING = (
    "printf 'starting\\n'; "
    "printf 'progress 10%%\\rprogress 100%%\\n'; "
    "printf '\\033[31mERROR\\033[0m: the database at db:5432 refused the connection\\n'; "
    "printf '=========\\n\\n'; exit 3"
)


def test_a_failed_runs_event_carries_the_end_of_its_log(project: Project) -> None:
    project.write_worker("Fails", command=FAILING)
    project.write_worker("Works", command="printf 'fine\\n'")
    task = project.create_task()
    waited = project.cli("worker", "run", "Fails", task, "--wait", check=False)
    assert waited.returncode == 8
    tail = "starting\nprogress 100%\nERROR: the database at db:5432 refused the connection"
    assert "    ERROR: the database at db:5432 refused the connection" in waited.stdout
    end = project.process_events(task)[-1]
    assert end["type"] == "process_failed"
    assert end["data"]["log_tail"] == tail
    # The fields it had before keep their values.
    assert end["data"]["error"] == "the worker exited with code 3"
    assert end["data"]["reason"] == "exit_nonzero" and end["data"]["exit_code"] == 3
    shown = project.cli("show", task).stdout
    assert "    log tail:\n      starting\n      progress 100%\n      ERROR: the database" in shown
    run_id = end["data"]["run_id"]
    detail = project.cli("worker", "show", run_id).stdout
    assert "log_tail\n  starting\n  progress 100%\n  ERROR: the database" in detail
    assert project.json("worker", "show", run_id)["data"]["log_tail"] == tail

    project.cli("worker", "run", "Works", task, "--wait")
    assert "log_tail" not in project.process_events(task)[-1]["data"]


def test_the_tail_is_short_plain_text() -> None:
    raw = b"".join(b"line %d \x1b[1;32mok\x1b[0m\n" % i for i in range(200))
    tail = tail_text(raw)
    assert len(tail.encode()) <= TAIL_BYTES
    assert tail.endswith("line 199 ok") and "\x1b" not in tail
    long_line = "x" * 2000 + " the end"
    assert tail_text(long_line.encode()).endswith("x the end")
    assert len(tail_text(long_line.encode()).encode()) <= TAIL_BYTES
    osc = b"\x1b]0;title\x07text \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\n"
    assert tail_text(osc) == "text link"
    assert tail_text(b"\n\n  \n----\n") == ""


def test_a_link_in_place_of_the_log_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("do not copy me\n")
    log = tmp_path / "run.log"
    os.symlink(secret, log)
    assert read_log_tail(log) == ""
    log.unlink()
    log.write_bytes(b"a" * 40_000 + b"\nlast words\n")
    assert read_log_tail(log) == "last words"


def test_worker_show_speaks_in_human_units(project: Project) -> None:
    project.write_worker(
        "Reports", command='printf \'{"counts": {"passed": 2}}\' > "$LATTICE_RESULT_FILE"'
    )
    task = project.create_task()
    run = project.json("worker", "run", "Reports", task, "--wait")["data"][0]
    detail = project.cli("worker", "show", run["run_id"]).stdout
    lines = dict(line.split(None, 1) for line in detail.splitlines() if "  " in line.strip())
    assert lines["created_at"].strip().endswith("Z") and "T" in lines["created_at"]
    assert lines["duration_seconds"].strip().endswith("s")
    assert lines["task_id"].strip() == f"{task} ({run['task_id']})"
    assert 'result\n  {\n    "counts": {\n      "passed": 2\n    }\n  }' in detail
    raw = project.json("worker", "show", run["run_id"])["data"]
    assert isinstance(raw["created_at"], float) and raw["result"] == {"counts": {"passed": 2}}
    json.dumps(raw)


def test_a_run_closed_as_orphaned_carries_its_logs_end_too(tmp_path: Path) -> None:
    from lattice_workers.actors._settle import write_orphaned
    from lattice_workers.store import Board, runs_left_open

    board = Board.init(tmp_path, default_actor="human:a")
    task = board.create_task(
        "t", actor="human:a", status=None, priority=None, type=None, description=None,
        tags=None, assigned_to=None,
    )["id"]
    log = ".lattice/logs/workers/ev_x.log"
    (tmp_path / log).write_text("working\nKilled: out of memory\n")
    board.append(
        task, "process_started", {"process_type": "W", "run_id": "run_x", "log_path": log},
        actor="agent:w",
    )
    (run,) = runs_left_open(task, board.read_events(task).events)
    assert write_orphaned(board, run, "run_x")
    end = board.read_events(task).events[-1]
    assert end["data"]["reason"] == "orphaned"
    assert end["data"]["log_tail"] == "working\nKilled: out of memory"
