"""RepeatSummarizer: repeated warnings are counted and summarized, nothing else is."""

from __future__ import annotations

import logging

from lattice_workers.supervisor._logsummary import RepeatSummarizer


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _record(level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("lattice_workers.t", level, __file__, 1, msg, args, None)


def test_repeats_past_the_first_few_become_one_line_when_the_window_ends() -> None:
    now = [0.0]
    out = _Collect()
    summarizer = RepeatSummarizer([out], first=2, window_seconds=60, clock=lambda: now[0])
    for peer in range(10):
        summarizer.handle(_record(logging.WARNING, "refused a request from peer %s", peer))
    summarizer.handle(_record(logging.INFO, "run %s started", "r1"))
    assert out.lines == [
        "WARNING refused a request from peer 0",
        "WARNING refused a request from peer 1",
        "INFO run r1 started",
    ]
    now[0] = 61.0
    summarizer.handle(_record(logging.INFO, "run %s ended", "r1"))
    assert out.lines[3].startswith(
        "WARNING the warning 'refused a request from peer %s' came 8 more times in 61 s"
    )
    assert out.lines[3].endswith("the last one: refused a request from peer 9")
    assert out.lines[4] == "INFO run r1 ended"


def test_info_lines_are_never_counted_and_close_writes_open_summaries() -> None:
    out = _Collect()
    summarizer = RepeatSummarizer([out], first=1, window_seconds=60)
    for _ in range(3):
        summarizer.handle(_record(logging.INFO, "same"))
        summarizer.handle(_record(logging.ERROR, "boom"))
    assert out.lines == ["INFO same", "ERROR boom", "INFO same", "INFO same"]
    summarizer.close()
    assert "came 2 more times" in out.lines[-1]
