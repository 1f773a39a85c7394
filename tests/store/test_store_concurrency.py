"""Many writers at once: processes and threads appending to one task lose nothing.

Each child process runs several threads; all of them write through ``Board.append``
at the same time. Afterwards every event is in the log exactly once, every line
parses, and the snapshot equals the replay of the log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lattice_workers.store import Board

from .conftest import ACTOR

PROCESSES = 3
THREADS = 4
PER_THREAD = 4

WRITER = r"""
import sys, threading
from pathlib import Path
from lattice_workers.errors import LatticeError
from lattice_workers.store import Board

root, task_id, mode, tag = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
threads, per_thread = int(sys.argv[5]), int(sys.argv[6])
board = Board(root)
gate = threading.Barrier(threads)
wins = []

def no_live_review(snap):
    if any(p.get("process_type") == "Review" for p in snap.get("active_processes", [])):
        raise LatticeError("ALREADY_RUNNING", "a Review run is live")

def work(n):
    gate.wait()
    for i in range(per_thread):
        if mode == "mixed":
            if i % 2:
                board.comment(task_id, f"{tag}-{n}-{i}", actor="human:ana")
            else:
                started = board.append(task_id, "process_started",
                    {"process_type": f"W{tag}{n}", "run_id": f"{tag}-{n}-{i}"}, actor="agent:w")
                board.append(task_id, "process_completed",
                    {"started_event_id": started.event["id"], "result": "success"},
                    actor="agent:w")
        elif mode == "dedup":
            try:
                board.append(task_id, "process_started", {"process_type": "Review"},
                             actor="agent:w", check=no_live_review)
                wins.append(n)
            except LatticeError as err:
                assert err.code == "ALREADY_RUNNING", err
        elif mode == "create":
            board.create_task(f"{tag}-{n}-{i}", actor="human:ana")

ts = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(len(wins))
"""


def run_writers(board: Board, task_id: str, mode: str) -> list[int]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(board.root),
                task_id,
                mode,
                str(p),
                str(THREADS),
                str(PER_THREAD),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    wins = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=100)
            assert proc.returncode == 0, err
            wins.append(int(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return wins


@pytest.mark.timeout(110)
def test_processes_and_threads_appending_to_one_task_lose_nothing(
    board: Board, task_id: str
) -> None:
    run_writers(board, task_id, "mixed")
    raw = board.events_path(task_id).read_text()
    events = [json.loads(line) for line in raw.splitlines()]  # every line parses
    per_writer = PER_THREAD // 2 * 3  # comments + started + completed per thread
    assert len(events) == 1 + PROCESSES * THREADS * per_writer
    assert len({e["id"] for e in events}) == len(events)
    bodies = {e["data"]["body"] for e in events if e["type"] == "comment_added"}
    assert bodies == {
        f"{p}-{n}-{i}"
        for p in range(PROCESSES)
        for n in range(THREADS)
        for i in range(1, PER_THREAD, 2)
    }
    snapshot = json.loads(board.snapshot_path(task_id).read_text())
    assert snapshot == board.replay(task_id)
    assert snapshot["active_processes"] == []
    assert snapshot["comment_count"] == len(bodies)
    assert board.doctor() == []


@pytest.mark.timeout(110)
def test_a_check_under_the_lock_lets_exactly_one_racing_start_win(
    board: Board, task_id: str
) -> None:
    wins = run_writers(board, task_id, "dedup")
    assert sum(wins) == 1
    snapshot = board.read_snapshot(task_id)
    assert len(snapshot["active_processes"]) == 1
    started = [e for e in board.read_events(task_id).events if e["type"] == "process_started"]
    assert len(started) == 1


@pytest.mark.timeout(110)
def test_concurrent_creates_get_distinct_consecutive_short_ids(board: Board, task_id: str) -> None:
    run_writers(board, task_id, "create")
    total = 1 + PROCESSES * THREADS * PER_THREAD
    snaps = board.list_snapshots()
    assert len(snaps) == total
    assert sorted(int(s["short_id"].split("-")[1]) for s in snaps) == list(range(1, total + 1))
    index = json.loads((board.dir / "ids.json").read_text())
    assert index["map"] == {s["short_id"]: s["id"] for s in snaps}
    assert index["next_seqs"] == {"LAT": total + 1}
    lifecycle = board.lifecycle_path.read_text().splitlines()
    assert len(lifecycle) == total
    assert board.doctor() == []


def test_concurrent_writers_in_one_process_share_nothing_but_the_files(
    tmp_path: Path,
) -> None:
    """Two Board objects on one folder (two threads of the supervisor) behave as one."""
    import threading

    first = Board.init(tmp_path)
    second = Board(tmp_path)
    task = first.create_task("t", actor=ACTOR)["id"]
    gate = threading.Barrier(2)

    def comment(b: Board, tag: str) -> None:
        gate.wait()
        for i in range(15):
            b.comment(task, f"{tag}{i}", actor=ACTOR)

    threads = [
        threading.Thread(target=comment, args=(b, t)) for b, t in ((first, "a"), (second, "b"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first.read_snapshot(task)["comment_count"] == 30
    assert first.read_snapshot(task) == first.replay(task)
