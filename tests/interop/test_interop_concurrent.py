"""Both tools appending to one task at the same time lose no event.

lattice-tracker processes comment in a loop while threads here write comments and
worker-run pairs through the canonical write path, until the tracker is done. Both
take the same lock files, so every event lands once. The tracker computes the
snapshot it writes from a read made before it locks, so one of its writes can miss
a concurrent update of ours; our writes replay the log under the lock, so the
snapshot after our last write equals the replay whatever happened before.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from lattice_workers.store import Board

from .conftest import clean_env, tracker_doctor_findings

TRACKER_PROCS = 2
TRACKER_COMMENTS = 4
OUR_THREADS = 2


@pytest.mark.timeout(110)
def test_both_tools_appending_to_one_task_lose_nothing(tracker: Path, tmp_path: Path) -> None:
    board = Board.init(tmp_path, project_code="LAT", default_actor="human:ana")
    task = board.create_task("shared", actor="human:ana")["id"]
    loop = (
        f'for i in $(seq 1 {TRACKER_COMMENTS}); do "{tracker}" comment LAT-1 "trk-$P-$i" '
        "--actor human:trk >/dev/null || exit 1; done"
    )
    procs = [
        subprocess.Popen(
            ["bash", "-c", loop],
            cwd=tmp_path,
            env={**clean_env(), "P": str(p)},
            stderr=subprocess.PIPE,
        )
        for p in range(TRACKER_PROCS)
    ]
    ours: list[str] = []
    errors: list[BaseException] = []

    def write(n: int) -> None:
        i = 0
        try:
            while any(p.poll() is None for p in procs) or i < 2:
                started = board.append(
                    task,
                    "process_started",
                    {"process_type": f"W{n}", "run_id": f"{n}-{i}"},
                    actor="agent:w",
                ).event
                ended = board.append(
                    task, "process_completed", {"started_event_id": started["id"]}, actor="agent:w"
                ).event
                comment = board.comment(task, f"ours-{n}-{i}", actor="human:ana").event
                ours.extend([started["id"], ended["id"], comment["id"]])
                i += 1
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(OUR_THREADS)]
    try:
        for t in threads:
            t.start()
        for p in procs:
            _, err = p.communicate(timeout=100)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for t in threads:
            t.join()
    assert errors == []
    ours.append(board.comment(task, "last word", actor="human:ana").event["id"])

    events = [json.loads(x) for x in board.events_path(task).read_text().splitlines()]
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    tracker_bodies = sorted(
        e["data"]["body"]
        for e in events
        if e["type"] == "comment_added" and e["actor"] == "human:trk"
    )
    assert tracker_bodies == sorted(
        f"trk-{p}-{i}" for p in range(TRACKER_PROCS) for i in range(1, TRACKER_COMMENTS + 1)
    )
    assert set(ours) <= set(ids)
    assert len(events) == 1 + len(ours) + len(tracker_bodies)
    snapshot = json.loads(board.snapshot_path(task).read_text())
    assert snapshot == board.replay(task)
    assert snapshot["active_processes"] == []
    assert snapshot["comment_count"] == len(tracker_bodies) + len(ours) // 3 + 1
    assert board.doctor() == []
    assert tracker_doctor_findings(tracker, tmp_path) == []
