"""LogSink: a run's output copied from a pipe into its log, bounded."""

from __future__ import annotations

import os
import re
from pathlib import Path

import trio

from lattice_workers.actors._logsink import LogSink


def _sink(tmp_path: Path, limit: int) -> tuple[LogSink, int, Path]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    path = tmp_path / "run.log"
    log_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    return LogSink(read_fd, log_fd, limit), write_fd, path


async def _feed(write_fd: int, data: bytes) -> None:
    def write() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view[:4096]) :]
        os.close(write_fd)

    await trio.to_thread.run_sync(write)


async def test_small_output_is_copied_as_is(tmp_path: Path) -> None:
    sink, write_fd, path = _sink(tmp_path, 1 << 20)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.pump)
        await _feed(write_fd, b"hello\nworld\n")
    await sink.finish()
    assert path.read_bytes() == b"hello\nworld\n" and not sink.truncated


async def test_past_the_limit_the_log_keeps_its_head_and_its_latest_part(
    tmp_path: Path,
) -> None:
    limit = 16 * 1024
    data = b"".join(b"line %06d\n" % i for i in range(20_000))  # 220 KB
    sink, write_fd, path = _sink(tmp_path, limit)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.pump)
        await _feed(write_fd, data)
    await sink.finish()
    log = path.read_bytes()
    assert len(log) <= limit and sink.truncated
    found = re.search(rb"\n\[lattice: +(\d+) bytes of output dropped here[^\n]*\]\n", log)
    assert found is not None
    head, tail = log[: found.start()], log[found.end() :]
    dropped = int(found.group(1))
    assert head == data[: len(head)] and len(head) == limit // 2
    assert data.endswith(tail) and len(tail) >= limit // 4
    assert len(head) + dropped + len(tail) == len(data)


async def test_finish_copies_what_is_left_without_waiting_for_writers(tmp_path: Path) -> None:
    sink, write_fd, path = _sink(tmp_path, 1 << 20)
    os.write(write_fd, b"last words\n")  # a leftover still holds the write end
    await sink.finish()
    assert path.read_bytes() == b"last words\n"
    os.close(write_fd)


async def test_a_cancel_while_the_log_is_full_loses_no_byte_read(tmp_path: Path) -> None:
    """The pump is cancelled when the worker exits; bytes it already read out of the
    pipe are written even when the log must be compacted first."""
    limit = 16 * 1024
    sink, write_fd, path = _sink(tmp_path, limit)
    os.close(write_fd)
    with trio.CancelScope() as scope:
        scope.cancel()
        await sink._write(b"x" * limit + b"the end\n")  # needs a compaction
    await sink.finish()
    assert path.read_bytes().endswith(b"the end\n") and sink.truncated
