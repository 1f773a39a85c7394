"""Between an agent's output pipe and the run's log: the raw stream kept, the transcript
logged, the attempt stopped when its reader says so.

The log a person follows (``worker logs --follow``) gets the engine reader's readable
transcript; the raw stream, which holds everything (tool results, usage per message),
is kept beside it as ``<started_event_id>.jsonl``, bounded like the log (past its
bound the rest is dropped with one line saying so). ``stop_reason`` is asked as output
arrives and, since a CLI waiting on the network may go quiet, every
:data:`QUIET_CHECK_SECONDS` by :meth:`AgentTap.watch` (a comparison of two numbers).

The lifecycle wires it as: ``tap = AgentTap(reader, raw_path, limit, on_stop)``;
``LogSink(read_fd, log_fd, limit, tap=tap)``; ``nursery.start_soon(tap.watch)``;
``on_stop(reason, sentence)`` cancels the attempt with that ``process_failed.reason``;
at the end ``tap.close()`` and ``reader.report(exit_code)`` for the terminal event.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import trio

from lattice_workers.engines import StreamReader

#: How often a quiet agent's reader is asked whether to stop.
QUIET_CHECK_SECONDS = 1.0
#: ``stop_reason`` -> ``process_failed.reason``: network retries past their bound are
#: a deadline of their own (the sentence and ``agent.error_kind`` say which).
PROCESS_REASONS = {"network": "timeout", "budget_exceeded": "budget_exceeded"}
_CUT = b'{"lattice": "the raw stream reached its bound; the rest was dropped"}\n'


class AgentTap:
    """Feeds one attempt's output through its engine reader (see the module docstring)."""

    def __init__(
        self,
        reader: StreamReader,
        raw_path: Path | None,
        limit: int,
        on_stop: Callable[[str, str], None],
        clock: Callable[[], float],
    ) -> None:
        self.reader = reader
        self.limit = limit
        self.on_stop = on_stop
        self.clock = clock
        self.stopped: tuple[str, str] | None = None
        self.raw_size = 0
        self._raw_fd: int | None = None
        if raw_path is not None:
            try:
                self._raw_fd = os.open(
                    raw_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
                )
            except OSError:
                self._raw_fd = None  # the transcript still reaches the log

    def __call__(self, chunk: bytes) -> bytes:
        """Raw bytes in (kept), transcript bytes out (for the log)."""
        self._keep(chunk)
        out = self.reader.feed(chunk)
        self.check()
        return out

    def finish(self) -> bytes:
        """The transcript of a last line without a newline."""
        out = self.reader.finish()
        self.check()
        return out

    def check(self) -> None:
        """Ask the reader; the first stop it asks for goes to ``on_stop`` (once)."""
        if self.stopped is not None:
            return
        found = self.reader.stop_reason(self.clock())
        if found is not None:
            reason, sentence = found
            self.stopped = (PROCESS_REASONS.get(reason, reason), sentence)
            self.on_stop(*self.stopped)

    async def watch(self) -> None:
        """Check a quiet agent every :data:`QUIET_CHECK_SECONDS`, until cancelled."""
        while self.stopped is None:
            await trio.sleep(QUIET_CHECK_SECONDS)
            self.check()

    def close(self) -> None:
        if self._raw_fd is not None:
            fd, self._raw_fd = self._raw_fd, None
            os.close(fd)

    def _keep(self, chunk: bytes) -> None:
        if self._raw_fd is None or self.raw_size > self.limit:
            return
        room = self.limit - self.raw_size
        data = chunk if len(chunk) <= room else chunk[:room] + b"\n" + _CUT
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._raw_fd, view) :]
        except OSError:
            self.close()  # a full disk: the log and the reader go on without it
            return
        self.raw_size += len(chunk) if len(chunk) <= room else self.limit + 1
