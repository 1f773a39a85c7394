"""50 clients x 1,000 requests against one server: no hang, every reply matched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.protocol.conftest import ServerProcess

LOAD_CLIENT = Path(__file__).with_name("load_client.py")

pytestmark = pytest.mark.timeout(120)


def test_fifty_clients_of_a_thousand_requests_each_get_every_answer_right(
    server_process: ServerProcess,
) -> None:
    # 50 clients in 4 processes: sync clients in threads and Trio clients as tasks.
    plan = [("sync", 13), ("sync", 12), ("async", 13), ("async", 12)]
    count = 1_000
    procs = [
        subprocess.Popen(
            [sys.executable, str(LOAD_CLIENT), server_process.endpoint, mode, str(n), str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode, n in plan
    ]
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=100)
            assert proc.returncode == 0, out
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [r["wrong"] for r in results] == [[], [], [], []]
    assert sum(r["ok"] for r in results) == 50 * count
    assert server_process.proc.poll() is None
