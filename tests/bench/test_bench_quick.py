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
            "spawn",
            "append",
            "spawn+append",
            "worktree",
        }
        for stats in row["runs_per_s"].values():
            assert {"median", "min", "max", "n"} <= set(stats) and stats["median"] > 0
        assert row["share_of_floor"] > 0 and row["share_of_floor_worktree"] > 0
        assert row["run_latency_ms"]["n"] > 0 and "p99" in row["run_latency_ms"]
        assert row["problems"] == []
    assert smoke["runs"]["worktrees_left"] == 0


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
    assert set(smoke["others"]) == {"bench_board", "bench_protocol"}


def test_bulk_populated_board_is_valid(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from _scratch import populate
    finally:
        sys.path.remove(str(BENCH))
    from lattice.store import Board

    board = Board.init(tmp_path, project_code="B")
    board.create_task("made the normal way", actor="human:test")
    ids = populate(board, 20)
    board.create_task("after the bulk", actor="human:test")
    assert board.doctor() == []
    assert board.resolve_task("B-21") == ids[-1]
    assert len(board.list_snapshots()) == 22
