"""The supervisor's log is bounded and keeps its history: a peer that keeps sending bad
requests (each one a warning) gets its warnings counted and summarized, so they
neither fill the disk nor rotate earlier lines away."""

from __future__ import annotations

import re

import zmq

from lattice_workers.protocol import default_endpoint
from lattice_workers.supervisor._logsummary import FIRST
from lattice_workers.supervisor._main import LOG_MAX_BYTES
from tests.e2e.conftest import Project

FRAMES = 20_000


def test_twenty_thousand_bad_frames_leave_the_logs_history_in_place(project: Project) -> None:
    pid = project.json("supervisor", "start")["data"]["pid"]
    logs = project.root / ".lattice" / "logs"
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(default_endpoint(project.root))
    try:
        frame = b"\xc1" * 200  # never valid msgpack: one refusal, one warning each
        for _ in range(FRAMES // 500):
            for _ in range(500):
                sock.send(frame)
            for _ in range(500):
                assert sock.poll(10_000), "the supervisor stopped answering"
                sock.recv()  # an Error reply each
    finally:
        sock.close()
    one_more = zmq.Context.instance().socket(zmq.DEALER)  # another peer: the same warning
    one_more.setsockopt(zmq.LINGER, 0)
    one_more.connect(default_endpoint(project.root))
    try:
        one_more.send(frame)
        assert one_more.poll(10_000)
        one_more.recv()
    finally:
        one_more.close()
    assert project.json("worker", "ps")["ok"]  # it still answers
    project.cli("supervisor", "stop")  # writes the summaries of what is still counted
    assert not (logs / "supervisor.log.1").exists()
    text = (logs / "supervisor.log").read_text()
    assert (logs / "supervisor.log").stat().st_size <= LOG_MAX_BYTES
    assert f"supervisor {pid} serving" in text  # the history before the flood
    written = len(re.findall(r"WARNING [\w.]+: refused a request from peer", text))
    counted = sum(int(n) for n in re.findall(r"refused a request from peer.*came (\d+) more", text))
    assert written + counted == FRAMES + 1 and written <= FIRST * 10, (written, counted)
