"""``bench/throughput.py`` (the throughput rows alone) keeps working end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_throughput_tool_prints_supervisor_ceiling_and_floor_for_each_concurrency() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "throughput.py"), "--runs", "2", "--reps", "1",
         "--clients", "1,2"],
        capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("C=")]
    assert [line.split()[0] for line in lines] == ["C=1", "C=2"]
    for line in lines:
        rates = re.search(r"lattice ([\d.]+), ceiling ([\d.]+), floor ([\d.]+)", line)
        assert rates is not None, line
        assert all(float(x) > 0 for x in rates.groups()), line


def test_a_terminated_bench_stops_its_supervisor_and_removes_its_scratch(tmp_path: Path) -> None:
    """``kill`` or ``timeout`` on a bench must not leave a scratch supervisor running."""
    from tests.e2e.conftest import alive, processes_with_variable

    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "throughput.py"), "--runs", "100000", "--reps", "1",
         "--clients", "1"],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        supervisor = None
        while supervisor is None:
            assert proc.poll() is None and time.monotonic() < deadline, "no supervisor started"
            time.sleep(0.1)
            for lock in tmp_path.glob("bench-throughput-*/runs/.lattice/run/supervisor.lock"):
                text = lock.read_text().strip()
                supervisor = int(text) if text.isdigit() else None
        root = lock.parents[2]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
        assert not alive(supervisor)  # `supervisor stop` waits for its end (a zombie is ended)
        assert list(tmp_path.glob("bench-throughput-*")) == []
        deadline = time.monotonic() + 30  # the bench's clients end as their pipes close
        while processes_with_variable("LATTICE_ROOT", str(root)):
            assert time.monotonic() < deadline, processes_with_variable("LATTICE_ROOT", str(root))
            time.sleep(0.1)
    finally:  # what a failed bench left behind does not outlive the test
        for pid in processes_with_variable("LATTICE_ROOT", str(root)):
            os.kill(pid, signal.SIGKILL)
