"""``bench/throughput.py`` (the throughput rows alone) keeps working end to end."""

from __future__ import annotations

import re
import subprocess
import sys
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
