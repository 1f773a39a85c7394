"""What ended attempts left outside their process groups: found by their environment's
``LATTICE_RUN_ID`` and ``LATTICE_ATTEMPT`` (whole entries), killed, and nothing else.

Real processes with crafted environments; the scan is faked only where a real one
cannot be made to hang or fail.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from trio_util import AsyncValue

from lattice_workers.actors import _leftovers
from lattice_workers.actors._leftovers import LeftoverSweeper
from lattice_workers.actors._settle import kill_attempts
from lattice_workers.store import new_id


class Processes:
    """Processes started with a given environment, all killed and reaped at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.run_ids: set[str] = set()

    def start(
        self, env: dict[str, str], argv: list[str] | None = None, stdout: int = subprocess.DEVNULL
    ) -> int:
        """``argv`` (``sleep 60``) in a session of its own, as a daemon that left its
        run's group; ``stdout``: a descriptor, else none."""
        proc = subprocess.Popen(
            argv or ["sleep", "60"],
            env={"PATH": os.defpath, **env},
            start_new_session=True,
            stdout=stdout,
        )
        self.started.append(proc)
        return proc.pid

    def marked(self, run_id: str, attempt: int) -> dict[str, str]:
        self.run_ids.add(run_id)
        return {"LATTICE_RUN_ID": run_id, "LATTICE_ATTEMPT": str(attempt)}

    def cleanup(self) -> None:
        for proc in self.started:
            proc.kill()
            proc.wait()
        for _ in range(20):  # the grandchildren of a forker, should a test have failed
            left = [pid for run_id in self.run_ids for pid in _with_run_id(run_id)]
            if not left:
                return
            for pid in left:
                _kill_quietly(pid)
            _gone_within(left, 1)


@pytest.fixture
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.cleanup()


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _with_run_id(run_id: str) -> list[int]:
    """Live (not zombie) processes whose environment has ``LATTICE_RUN_ID=run_id``."""
    marker = f"LATTICE_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                variables = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in variables and state != b"Z":
            found.append(int(entry))
    return found


def _gone_within(pids: list[int], timeout: float) -> list[int]:
    """The pids of ``pids`` that are still running after ``timeout`` seconds."""
    fds: dict[int, int] = {}
    try:
        for pid in pids:
            try:
                fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + timeout
        waiting = set(fds)
        while waiting and (left := deadline - time.monotonic()) > 0:
            waiting -= set(select.select(list(waiting), [], [], left)[0])
        return [fds[fd] for fd in waiting]
    finally:
        for fd in fds:
            os.close(fd)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_only_the_ended_attempt_of_the_run_dies(procs: Processes) -> None:
    """Whole ``NAME=value`` entries, both of the same attempt: a retry (same run id),
    a longer id or attempt, and the markers inside other variables are spared."""
    run, other = new_id("run"), new_id("run")
    target = procs.start(procs.marked(run, 1))
    spared = [
        procs.start(procs.marked(run, 2)),  # the retry
        procs.start({"LATTICE_RUN_ID": run, "LATTICE_ATTEMPT": "11"}),
        procs.start({"LATTICE_RUN_ID": run + "x", "LATTICE_ATTEMPT": "1"}),
        procs.start({"LATTICE_RUN_ID": run}),
        procs.start({"NOTE": f"LATTICE_RUN_ID={run}", "MORE": "LATTICE_ATTEMPT=1"}),
        procs.start({"X": f"x\nLATTICE_RUN_ID={run}\nLATTICE_ATTEMPT=1"}),
        procs.start({**procs.marked(other, 1), "NOTE": f"LATTICE_RUN_ID={run}"}),
        procs.start({"LATTICE_RUN_ID": other, "LATTICE_ATTEMPT": "1"}),
    ]
    assert kill_attempts({(run, 1), (other, 2)}) == [target]
    assert not _gone_within([target], 10)
    assert all(_running(pid) for pid in spared)


#: Forks a sleeper after the other as fast as it can, having said (on stdout) it started.
FORKER = "echo; i=0; while [ $i -lt 250 ]; do sleep 60 & i=$((i+1)); done; wait"


def test_what_a_process_forks_while_the_scan_runs_dies_too(procs: Processes) -> None:
    """The scan lists /proc, then reads and kills: a sleeper the forker started after
    the listing and before its own death was not listed. Processes listed before the
    forker make that stretch longer; three rounds make a miss all but certain."""
    for _ in range(60):
        procs.start({"FILL": "x" * 100_000})
    for _ in range(3):
        run = new_id("run")
        read_fd, write_fd = os.pipe()
        try:
            procs.start(procs.marked(run, 1), ["sh", "-c", FORKER], stdout=write_fd)
        finally:
            os.close(write_fd)
        try:
            assert os.read(read_fd, 1) == b"\n"
        finally:
            os.close(read_fd)
        kill_attempts({(run, 1)})
        left = _gone_within(_with_run_id(run), 10)
        assert not left, f"{len(left)} processes forked during the scan outlived it"


class FakeScan:
    """Stands in for the /proc scan where a real one cannot be made to hang or fail."""

    def __init__(self, *, hang: bool = False, fail: bool = False) -> None:
        self.hang, self.fail = hang, fail
        self.batches: list[set[tuple[str, int]]] = []
        self.scans: AsyncValue[int] = AsyncValue(0)
        self.release = threading.Event()
        self.finished = False

    def __call__(self, batch: set[tuple[str, int]]) -> list[int]:
        self.batches.append(set(batch))
        trio.from_thread.run_sync(setattr, self.scans, "value", len(self.batches))
        if self.hang:
            self.release.wait(5)  # a read of /proc/<pid>/environ stuck on that mm
            self.finished = True
        if self.fail:
            raise FileNotFoundError(2, "No such file or directory", "/proc")
        return []


@pytest.mark.parametrize("batch_seconds", [0, 3600], ids=["during-a-scan", "before-it"])
async def test_a_scan_that_hangs_holds_a_shutdown_no_longer_than_its_bound(
    monkeypatch: pytest.MonkeyPatch, batch_seconds: float
) -> None:
    """Cancelled during a scan (abandoned; the last sweep takes its batch again) or
    before it: the last sweep's scan hangs, and the sweeper still ends in its bound."""
    scan = FakeScan(hang=True)
    monkeypatch.setattr(_leftovers, "kill_attempts", scan)
    monkeypatch.setattr(_leftovers, "CLEANUP_SECONDS", 0.1)
    sweeper = LeftoverSweeper(batch_seconds=batch_seconds)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sweeper.serve)
            sweeper.attempt_ended("run_a", 1)
            if batch_seconds:
                await trio.testing.wait_all_tasks_blocked()
            else:
                await scan.scans.wait_value(1)
            nursery.cancel_scope.cancel()
        assert not scan.finished, "the shutdown waited for a hung scan past its bound"
        assert scan.batches == [{("run_a", 1)}] * (2 if batch_seconds == 0 else 1)
    finally:
        scan.release.set()


async def test_a_scan_that_fails_leaves_the_sweeper_serving(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No /proc (a sandbox): the runs go on, the supervisor with them, and it says so."""
    scan = FakeScan(fail=True)
    monkeypatch.setattr(_leftovers, "kill_attempts", scan)
    sweeper = LeftoverSweeper(batch_seconds=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sweeper.serve)
        sweeper.attempt_ended("run_a", 1)
        await scan.scans.wait_value(1)
        sweeper.attempt_ended("run_b", 1)
        await scan.scans.wait_value(2)
        nursery.cancel_scope.cancel()  # the last sweep may take run_b again
    assert scan.batches[:2] == [{("run_a", 1)}, {("run_b", 1)}]
    assert "/proc" in caplog.text


async def test_attempts_that_end_during_a_scan_go_in_the_next_and_the_last_one(
    procs: Processes,
) -> None:
    """Real processes: one ends its attempt while the sweeper runs, one just before the
    sweeper is cancelled (a shutdown); both die, the retry of the first does not."""
    run_a, run_b = new_id("run"), new_id("run")
    first = procs.start(procs.marked(run_a, 1))
    retry = procs.start(procs.marked(run_a, 2))
    last = procs.start(procs.marked(run_b, 3))
    sweeper = LeftoverSweeper(batch_seconds=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sweeper.serve)
        sweeper.attempt_ended(run_a, 1)
        fd = os.pidfd_open(first)
        try:
            await trio.lowlevel.wait_readable(fd)  # killed by the sweep
        finally:
            os.close(fd)
        sweeper.batch_seconds = 3600  # the next one waits: only the last sweep serves it
        sweeper.attempt_ended(run_b, 3)
        nursery.cancel_scope.cancel()
    assert not _gone_within([last], 10)
    assert _running(retry)
