"""Board commands on a 5,000-task board: this project's `lattice` beside lattice-tracker.

Builds a valid board (every task has a log, a snapshot equal to its replay, a
lifecycle entry and a short id) by generating the events in bulk and writing the
files directly: going through the locked write path 5,000 times would measure the
builder, not the commands. Then runs each command several times per tool and prints
the medians beside ``python -c pass`` for each interpreter, which is the floor of
any Python command on this machine.

    python bench/bench_board.py [--tasks 5000] [--runs 7] [--tracker PATH] [--json OUT]

The tracker is found by ``--tracker``, ``LATTICE_TRACKER_BIN`` or
``/work/tracker-venv/bin/lattice``; without it only this project's numbers are shown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lattice_workers.store import Board, dumps_event, dumps_pretty, new_id, replay

STATUSES = ["backlog", "planned", "in_progress", "review", "done"]


def build_board(root: Path, tasks: int) -> Board:
    """A board of ``tasks`` tasks, each with a few events; some with worker runs."""
    board = Board.init(root, project_code="LAT", default_actor="human:bench")
    lifecycle: list[str] = []
    mapping: dict[str, str] = {}
    for n in range(1, tasks + 1):
        task_id = new_id("task")
        short_id = f"LAT-{n}"
        ts = f"2026-01-{1 + n % 28:02d}T{n % 24:02d}:00:00Z"

        def event(etype: str, data: dict[str, Any], actor: str = "human:bench") -> dict[str, Any]:
            return {
                "schema_version": 1,
                "id": new_id("ev"),
                "ts": ts,  # noqa: B023 - built and used within one iteration
                "type": etype,
                "task_id": task_id,  # noqa: B023
                "actor": actor,
                "data": data,
            }

        created = event(
            "task_created",
            {
                "title": f"Task number {n}: make the thing work",
                "status": "backlog",
                "priority": "medium",
                "type": "task",
                "short_id": short_id,
                "description": "A description long enough to look like a real one. " * 3,
            },
        )
        events = [created]
        status = STATUSES[n % len(STATUSES)]
        if status != "backlog":
            events.append(event("status_changed", {"from": "backlog", "to": status}))
        events.append(event("comment_added", {"body": f"comment on {short_id}"}))
        if n % 10 == 0:
            started = event(
                "process_started",
                {"process_type": "CodeReviewLite", "run_id": f"run-{n}", "commit_sha": "abc"},
                "agent:codereviewlite",
            )
            events.append(started)
            if n % 20 == 0:
                events.append(
                    event(
                        "process_completed",
                        {"started_event_id": started["id"], "result": "success"},
                        "agent:codereviewlite",
                    )
                )
        snapshot, problems = replay(events)
        assert snapshot is not None and not problems
        board.events_path(task_id).write_text("".join(dumps_event(e) for e in events))
        board.snapshot_path(task_id).write_text(dumps_pretty(snapshot))
        lifecycle.append(dumps_event(created))
        mapping[short_id] = task_id
    board.lifecycle_path.write_text("".join(lifecycle))
    (board.dir / "ids.json").write_text(
        dumps_pretty({"map": mapping, "next_seqs": {"LAT": tasks + 1}, "schema_version": 2})
    )
    return board


# Both tools get the same environment; byte-code writing is left on, as for a user
# (with PYTHONDONTWRITEBYTECODE an editable install recompiles every module each run).
ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith("LATTICE_") and k != "PYTHONDONTWRITEBYTECODE"
}


def once_ms(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed: {proc.stderr.decode()[-500:]}")
    return elapsed


def medians_ms(commands: list[list[str]], cwd: Path, runs: int) -> list[float]:
    """Median wall time of each command; runs are interleaved so that a noisy
    neighbour slows every command alike, after one warm-up run each."""
    for argv in commands:
        once_ms(argv, cwd)
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for i, argv in enumerate(commands):
            times[i].append(once_ms(argv, cwd))
    return [statistics.median(t) for t in times]


def find_tracker(given: str | None) -> Path | None:
    for candidate in (
        given,
        os.environ.get("LATTICE_TRACKER_BIN"),
        "/work/tracker-venv/bin/lattice",
    ):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tracker", help="path to lattice-tracker's `lattice` executable")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write results here")
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    args = parser.parse_args()
    if args.quick:
        args.runs = min(args.runs, 3)

    tracker = find_tracker(args.tracker)
    # The installed console script, as a user runs it (as the tracker is run).
    script = Path(sys.executable).with_name("lattice-workers")
    ours = [str(script)] if script.exists() else [sys.executable, "-m", "lattice_workers"]
    with tempfile.TemporaryDirectory(prefix="bench-board-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        build_board(root, args.tasks)
        built_s = time.perf_counter() - start
        probe = f"LAT-{args.tasks // 2}"
        rows: list[dict[str, Any]] = []
        pythons = [[sys.executable, "-c", "pass"]]
        if tracker is not None:
            pythons.append([str(tracker.parent / "python"), "-c", "pass"])
        floors = dict(zip(("ours", "tracker"), medians_ms(pythons, root, args.runs), strict=False))
        for name, cmd in (
            ("list", ["list"]),
            (f"show {probe}", ["show", probe]),
            ("list --json", ["list", "--json"]),
        ):
            argvs = [ours + cmd] + ([[str(tracker), *cmd]] if tracker is not None else [])
            times = medians_ms(argvs, root, args.runs)
            row: dict[str, Any] = {"command": name, "ours_ms": times[0]}
            if tracker is not None:
                row["tracker_ms"] = times[1]
                row["speedup"] = times[1] / times[0]
            rows.append(row)

    print(
        f"board: {args.tasks} tasks, built in {built_s:.1f} s; medians of {args.runs} runs;"
        f" filesystem of {tempfile.gettempdir()}"
    )
    print(f"{'command':<16}{'lattice (ours)':>16}{'lattice-tracker':>18}{'speedup':>10}")
    print(
        f"{'python -c pass':<16}{floors['ours']:>13.0f} ms"
        + (f"{floors['tracker']:>15.0f} ms" if "tracker" in floors else "")
    )
    for row in rows:
        line = f"{row['command']:<16}{row['ours_ms']:>13.0f} ms"
        if "tracker_ms" in row:
            line += f"{row['tracker_ms']:>15.0f} ms{row['speedup']:>9.1f}x"
        print(line)
    if tracker is None:
        print("lattice-tracker not found: pass --tracker or set LATTICE_TRACKER_BIN")
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {"tasks": args.tasks, "runs": args.runs, "floor_ms": floors, "commands": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
