"""Fixtures for the wire tests: a live server in the test's Trio loop or in a process."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from lattice_workers.protocol import default_endpoint
from lattice_workers.supervisor._server import serve
from tests.protocol.fake_supervisor import FakeSupervisor

FAKE_SUPERVISOR = Path(__file__).with_name("fake_supervisor.py")


@pytest.fixture
def endpoint(tmp_path: Path) -> str:
    return default_endpoint(tmp_path)


@dataclass
class LogWatch:
    """Server log records, and a way to wait for one (no sleeping, no polling)."""

    records: list[logging.LogRecord] = field(default_factory=list)
    _waiters: list[tuple[str, trio.Event]] = field(default_factory=list)

    def add(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        for text, event in self._waiters:
            if text in record.getMessage():
                event.set()

    def seen(self, text: str) -> bool:
        return any(text in r.getMessage() for r in self.records)

    async def wait_for(self, text: str) -> logging.LogRecord:
        event = trio.Event()
        self._waiters.append((text, event))
        if not self.seen(text):
            await event.wait()
        return next(r for r in self.records if text in r.getMessage())


class _Handler(logging.Handler):
    def __init__(self, watch: LogWatch) -> None:
        super().__init__(logging.DEBUG)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        self.watch.add(record)


@pytest.fixture
def server_log() -> Iterator[LogWatch]:
    watch = LogWatch()
    logger = logging.getLogger("lattice_workers.supervisor.server")
    handler = _Handler(watch)
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@pytest.fixture
async def fake(
    nursery: trio.Nursery, endpoint: str, server_log: LogWatch
) -> AsyncIterator[FakeSupervisor]:
    """A server on ``endpoint`` answering with :class:`FakeSupervisor`, in this loop."""
    supervisor = FakeSupervisor(endpoint)
    await nursery.start(serve, endpoint, supervisor)
    yield supervisor


@dataclass
class ServerProcess:
    endpoint: str
    proc: subprocess.Popen[str]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server_process(endpoint: str) -> ServerProcess:
    """``fake_supervisor.py`` in a process of its own, once it is listening."""
    proc = subprocess.Popen(
        [sys.executable, str(FAKE_SUPERVISOR), endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    bound = proc.stdout.readline().strip()
    if not bound:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the fake supervisor did not start on {endpoint}")
    return ServerProcess(bound, proc)


@pytest.fixture
def server_process(endpoint: str) -> Iterator[ServerProcess]:
    server = start_server_process(endpoint)
    try:
        yield server
    finally:
        server.stop()
