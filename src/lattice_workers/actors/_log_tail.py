"""The end of a failed run's log, for its terminal event (``log_tail``, SPEC section 9).

"The worker exited with code 1" says that a run failed, not why; the why is usually
the last lines the worker printed. So a failed run's event carries them: at most
:data:`TAIL_BYTES` of the log's last meaningful lines, as plain text. Meaningful: ANSI
escape sequences removed, a line redrawn with carriage returns (a progress bar)
reduced to what was left on screen, blank lines and rules (``=====``) dropped.
"""

from __future__ import annotations

import os
import re

#: At most this many bytes (UTF-8) of text in ``log_tail``.
TAIL_BYTES = 500
#: How much of the log's end is read: enough for the lines that fit in TAIL_BYTES
#: once escape sequences and blank lines are gone.
READ_BYTES = 16 * 1024

#: CSI (colours, cursor moves), OSC (titles, links; ended by BEL or ST), and the other
#: two-character escapes.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[@-Z\\-_]"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_RULE = re.compile(r"[\s=\-_*~#.]*")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences."""
    return _ANSI.sub("", text)


def tail_text(raw: bytes, limit: int = TAIL_BYTES) -> str:
    """The last meaningful lines of ``raw`` (a log's end), at most ``limit`` bytes."""
    text = raw.decode("utf-8", "replace")
    kept: list[str] = []
    size = 0
    for line in reversed(text.split("\n")):
        line = _CONTROL.sub("", strip_ansi(line).rsplit("\r", 1)[-1].rstrip("\r")).rstrip()
        if _RULE.fullmatch(line):
            continue
        cost = len(line.encode()) + (1 if kept else 0)
        if size + cost > limit:
            if not kept:  # one long last line: its end, which is what was said last
                kept.append("..." + _last_bytes(line, limit - 3))
            break
        kept.append(line)
        size += cost
    return "\n".join(reversed(kept))


def _last_bytes(line: str, limit: int) -> str:
    data = line.encode()[-limit:]
    return data.decode("utf-8", "ignore")


def read_log_tail(path: str | os.PathLike[str], limit: int = TAIL_BYTES) -> str:
    """:func:`tail_text` of the file at ``path``; "" when it cannot be read (blocking)."""
    try:
        # O_NOFOLLOW: a worker that replaced its log with a link to another file does
        # not get that file's end written into the board.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - READ_BYTES)
            f.seek(start)
            raw = f.read(READ_BYTES)
    except OSError:
        return ""
    if start > 0:  # the first line read is probably cut: leave it out
        raw = raw.partition(b"\n")[2]
    return tail_text(raw, limit)
