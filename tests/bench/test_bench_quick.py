"""The benchmark keeps working: its smallest subset runs end to end and writes its JSON.

Real supervisors, real client processes, real git worktrees (that is the point: the
bench must not rot). No timing is asserted; only the shape of the result and the
one correctness fact the bench measures (a duplicate storm starts exactly one run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "result.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--smoke", "--json-out", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["_stdout"] = proc.stdout
    return result


def test_smoke_run_reports_the_machine_and_its_filesystem(smoke: dict) -> None:
    machine = smoke["machine"]
    assert machine["cpus"] >= 1
    assert machine["filesystem"]["type"]
    assert machine["filesystem"]["label"] in smoke["table"]
    assert smoke["mode"] == "smoke"


def test_throughput_rows_have_supervisor_floors_and_shares(smoke: dict) -> None:
    rows = smoke["runs"]["throughput"]
    assert [r["clients"] for r in rows] == sorted({r["clients"] for r in rows})
    for row in rows:
        assert set(row["runs_per_s"]) == {
            "sup",
            "sup_wt",
            "sup_wt_fresh",
            "ceiling",
            "spawn",
            "append",
            "spawn+append",
            "worktree",
        }
        for stats in row["runs_per_s"].values():
            assert {"median", "min", "max", "n"} <= set(stats) and stats["median"] > 0
        assert row["share_of_floor"] > 0 and row["share_of_floor_worktree"] > 0
        # The pool on and off, side by side (the CPU of both is in the table too).
        assert row["share_of_floor_worktree_fresh"] > 0 and row["pool_speedup"] > 0
        assert row["run_latency_ms_worktree_fresh"]["n"] > 0
        assert row["ceiling_share_of_floor"] > 0 and row["share_of_ceiling"] > 0
        assert row["run_latency_ms_ceiling"]["n"] > 0
        assert row["run_latency_ms"]["n"] > 0 and "p99" in row["run_latency_ms"]
        assert row["problems"] == []
    assert smoke["runs"]["worktrees_left"] == 0
    assert "runs/s, worktree (pool off)" in smoke["table"]


def test_duplicate_storm_starts_exactly_one_run(smoke: dict) -> None:
    storm = smoke["runs"]["storm"]
    assert storm["runs_created"] == 1
    assert storm["process_started_on_board"] == 1
    assert storm["replies"].get("ALREADY_RUNNING") == storm["clients"] - 1


def test_ps_scale_and_cli_sections_are_complete(smoke: dict) -> None:
    cells = {(r["tasks"], r["live"]) for r in smoke["ps"]}
    assert len(cells) == 4 and {live for _, live in cells} == {0, max(lv for _, lv in cells)}
    assert all(r["latency_ms"]["median"] > 0 for r in smoke["ps"])
    live = max(lv for _, lv in cells)
    assert all(r["latency_ms"]["runs_listed"] == r["live"] for r in smoke["ps"]), live
    scale = smoke["scale"]
    assert scale["rss_live_mib"] > 0 and scale["ps_latency_ms"]["runs_listed"] == scale["live_runs"]
    assert set(smoke["cli"]["times_python_pass"]) == {
        "python -c pass",
        "python -c 'import zmq, msgspec'",
        "lattice supervisor status",
        "lattice worker ps",
        "lattice worker run",
    }


def test_goals_and_table_are_printed(smoke: dict) -> None:
    assert smoke["goals"] and all({"goal", "value", "met"} <= set(g) for g in smoke["goals"])
    assert "| measurement | lattice |" in smoke["_stdout"]
    assert set(smoke["others"]) == {"bench_board", "bench_protocol", "bench_workspace"}


def test_bulk_populated_board_is_valid(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from _scratch import populate
    finally:
        sys.path.remove(str(BENCH))
    from lattice_workers.store import Board

    board = Board.init(tmp_path, project_code="B")
    board.create_task("made the normal way", actor="human:test")
    ids = populate(board, 20)
    board.create_task("after the bulk", actor="human:test")
    assert board.doctor() == []
    assert board.resolve_task("B-21") == ids[-1]
    assert len(board.list_snapshots()) == 22


def test_store_diagnostic_compares_board_append_with_bare_write(smoke: dict) -> None:
    store = smoke["runs"]["store"]
    assert store["writes"] == 20
    for kind in ("board_append", "bare_write"):
        assert store[kind]["wall_ms"]["n"] == store["writes"]
        assert store[kind]["wall_ms"]["median"] > 0 and store[kind]["cpu_ms_per_write"] >= 0
    assert store["ratio_wall"] > 0
    assert "Board.append vs bare write" in smoke["table"]
    assert "spawn + 2 bare writes" in smoke["table"] and "2 appends" not in smoke["table"]


def test_bare_write_appends_the_event_line_and_replaces_the_snapshot_under_the_locks(
    tmp_path: Path,
) -> None:
    import fcntl
    import os
    import threading

    sys.path.insert(0, str(BENCH))
    try:
        from _scratch import populate
        from bench_runs import bare_write, run_event
    finally:
        sys.path.remove(str(BENCH))
    from lattice_workers.store import Board, dumps_event

    board = Board.init(tmp_path, project_code="B")
    (task,) = populate(board, 1)
    log_before = board.events_path(task).read_bytes()
    snapshot = board.snapshot_path(task).read_bytes()
    started = run_event(task, None)
    done = run_event(task, started["id"])
    lock = os.open(board.locks_dir / f"tasks_{task}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    writer = threading.Thread(target=bare_write, args=(str(board.dir), task, snapshot, started))
    writer.start()
    writer.join(0.3)
    blocked = writer.is_alive()
    os.close(lock)  # releases the flock
    writer.join(30)
    assert blocked and not writer.is_alive()
    assert board.events_path(task).read_bytes() == log_before + dumps_event(started).encode()
    bare_write(str(board.dir), task, snapshot, done)
    events = board.read_events(task)
    assert events.problems == [] and [e["type"] for e in events.events][1:] == [
        "process_started",
        "process_completed",
    ]
    assert board.snapshot_path(task).read_bytes() == snapshot
    assert sorted(p.name for p in (board.dir / "tasks").iterdir()) == [f"{task}.json"]
    assert board.replay(task)["active_processes"] == []
