"""Where the last N lines of a log begin (``worker logs --tail``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lattice_workers.supervisor._handlers import _read_chunk, _tail_offset


@pytest.mark.parametrize(
    ("content", "lines", "expected"),
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),
        (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 0, b""),
        (b"", 3, b""),
        (b"x" * 200_000 + b"\nlast\n", 1, b"last\n"),
    ],
)
def test_tail_offset_starts_at_the_nth_line_from_the_end(
    tmp_path: Path, content: bytes, lines: int, expected: bytes
) -> None:
    path = tmp_path / "run.log"
    path.write_bytes(content)
    offset = _tail_offset(path, lines)
    assert _read_chunk(path, offset, 1 << 20) == expected


def test_a_missing_log_reads_as_empty(tmp_path: Path) -> None:
    assert _tail_offset(tmp_path / "nope.log", 5) == 0
    assert _read_chunk(tmp_path / "nope.log", 0, 10) == b""
