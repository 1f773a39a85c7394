"""The supervisor's log is bounded: a peer that keeps sending bad requests (each one a
warning) makes it rotate, never grow without end."""

from __future__ import annotations

import zmq

from lattice_workers.protocol import default_endpoint
from lattice_workers.supervisor._main import LOG_BACKUPS, LOG_MAX_BYTES
from tests.e2e.conftest import Project


def test_bad_requests_rotate_the_log_instead_of_filling_the_disk(project: Project) -> None:
    project.cli("supervisor", "start")
    logs = project.root / ".lattice" / "logs"
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(default_endpoint(project.root))
    try:
        frame = b"\xc1" * 2000  # never valid msgpack: one refusal, one warning each
        sent = 0
        while not (logs / "supervisor.log.1").exists():
            assert sent < 3 * LOG_MAX_BYTES // 100, "the log never rotated"
            for _ in range(500):
                sock.send(frame)
            for _ in range(500):
                assert sock.poll(10_000), "the supervisor stopped answering"
                sock.recv()  # an Error reply each
            sent += 500
    finally:
        sock.close()
    assert project.json("worker", "ps")["ok"]  # it still answers
    files = sorted(p.name for p in logs.iterdir() if p.name.startswith("supervisor.log"))
    assert files[0] == "supervisor.log" and len(files) <= LOG_BACKUPS + 1
    for name in files:
        assert (logs / name).stat().st_size <= LOG_MAX_BYTES
    assert "refused a request from peer" in (logs / "supervisor.log.1").read_text()
