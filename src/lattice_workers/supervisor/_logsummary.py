"""The supervisor's log keeps its history: repeated warnings are counted, not copied.

The log is rotated at a fixed size (it must not fill the disk); 20,000 garbage frames
from one peer, each one warning, rotated it through all its old files in two minutes,
pushing out what happened before (a fork storm, a crash's recovery). So warnings (and
errors) that repeat the same sentence, whatever its arguments (the peer, a size), are
written :data:`FIRST` times in a :data:`WINDOW_SECONDS` window; the others are counted
and summarized in one line when the window ends, by the next log line after that or
at the supervisor's stop. Lines below WARNING (a run's start and end) always pass.

This runs in the logging listener's thread, never on the Trio loop.
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Repetitions of one warning written in full per window...
FIRST = 5
#: ...and the window's length.
WINDOW_SECONDS = 60.0

_Key = tuple[str, int, str]


@dataclass
class _Window:
    started: float
    seen: int
    last: logging.LogRecord


class TemplateQueueHandler(logging.handlers.QueueHandler):
    """A ``QueueHandler`` that keeps the record's unformatted sentence: ``prepare``
    merges the arguments into ``msg``, and the sentence is what repeats."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        template = str(record.msg)
        prepared = super().prepare(record)
        prepared.template = template
        return prepared


def _template(record: logging.LogRecord) -> str:
    return str(getattr(record, "template", record.msg))


class RepeatSummarizer(logging.Handler):
    """Passes records on to ``handlers``, counting repeated warnings instead."""

    def __init__(
        self,
        handlers: list[logging.Handler],
        *,
        first: int = FIRST,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.handlers = handlers
        self.first = first
        self.window_seconds = window_seconds
        self.clock = clock
        self._windows: dict[_Key, _Window] = {}

    def emit(self, record: logging.LogRecord) -> None:
        now = self.clock()
        self._close_expired(now)
        if record.levelno < logging.WARNING:
            self._pass(record)
            return
        key = (record.name, record.levelno, _template(record))
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(now, 0, record)
        window.seen += 1
        window.last = record
        if window.seen <= self.first:
            self._pass(record)

    def _close_expired(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if now - window.started >= self.window_seconds:
                del self._windows[key]
                self._summarize(window, now)

    def _summarize(self, window: _Window, now: float) -> None:
        hidden = window.seen - self.first
        if hidden <= 0:
            return
        last = window.last
        summary = logging.LogRecord(
            last.name,
            last.levelno,
            last.pathname,
            last.lineno,
            "the warning %r came %d more times in %.0f s, not written one by one; "
            "the last one: %s",
            (_template(last), hidden, now - window.started, last.getMessage()),
            None,
        )
        self._pass(summary)

    def _pass(self, record: logging.LogRecord) -> None:
        for handler in self.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)

    def flush(self) -> None:
        for handler in self.handlers:
            handler.flush()

    def close(self) -> None:
        """Write the summaries of the open windows, then close the handlers."""
        now = self.clock()
        for window in self._windows.values():
            self._summarize(window, now)
        self._windows.clear()
        for handler in self.handlers:
            handler.close()
        super().close()
