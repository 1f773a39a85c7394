"""What the agents spent today: the sum of ``agent.cost_usd`` in terminal events.

The board-wide daily budget (``workers.daily_budget_usd``) is checked on every Run
request, so the sum must be cheap to ask again: event files are append-only, and
:class:`DailySpend` remembers how far it read each one and what it found there, so a
second question costs one ``stat`` per file and reads only what was appended. A new
UTC day starts from zero. Lines that are not JSON (a torn last line, a corrupt one)
count nothing: the board's own readers deal with them.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

TERMINAL = (b'"process_completed"', b'"process_failed"')


@dataclass
class _FileState:
    offset: int
    cost: float


#: The day's total as the supervisor last summed it, in ``.lattice/run/``: what ``ps``
#: and ``show`` read instead of every event file of the board (a board of 5,000 tasks
#: made today took ``ps`` from 85 to 287 ms). Only the supervisor's attempts write a
#: cost, and it publishes the total at its start and after each end that has one, so a
#: total of today is current; without one (no supervisor today) the events are read.
PUBLISHED = "spend.json"


def spend_today(board_dir: Path) -> dict[str, object]:
    """Today's spend of the board's agents and its ``workers.daily_budget_usd`` (None
    when unset or unreadable): what ``worker ps`` and ``show`` print (blocking)."""
    spent = _published(board_dir / "run" / PUBLISHED, _today())
    if spent is None:
        spent = DailySpend(board_dir).spent()
    budget: float | None = None
    try:
        config = json.loads((board_dir / "config.json").read_bytes())
    except (OSError, ValueError):
        config = None
    section = config.get("workers") if isinstance(config, dict) else None
    value = section.get("daily_budget_usd") if isinstance(section, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        budget = float(value)
    return {"spent_usd": spent, "daily_budget_usd": budget}


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _published(path: Path, day: str) -> float | None:
    """The published total of ``day``, or None (none, another day's, unreadable)."""
    try:
        found = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("day") != day:
        return None
    value = found.get("spent_usd")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def spend_sentence(spend: dict[str, object]) -> str:
    """One line for people ("" when nothing was spent and no budget is set)."""
    spent, budget = spend.get("spent_usd"), spend.get("daily_budget_usd")
    if not isinstance(spent, int | float):
        return ""
    if isinstance(budget, int | float):
        return f"agents spent ${spent:.2f} of the ${budget:.2f} daily budget today (UTC)"
    return f"agents spent ${spent:.2f} today (UTC)" if spent else ""


class DailySpend:
    """The day's spend of one board, read incrementally (thread-safe, blocking I/O)."""

    def __init__(self, board_dir: Path) -> None:
        self.folders = (board_dir / "events", board_dir / "archive" / "events")
        self._day = ""
        self._files: dict[Path, _FileState] = {}
        self._lock = threading.Lock()
        self._publishing = threading.Lock()

    def publish(self, run_dir: Path) -> float:
        """Sum today's spend and write it as :data:`PUBLISHED` in ``run_dir`` (atomic:
        a reader sees the old total or the new one); the total."""
        with self._publishing:  # one at a time: an older sum never lands last
            day = _today()
            total = self.spent(day)
            tmp = run_dir / f".{PUBLISHED}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"day": day, "spent_usd": total}) + "\n", encoding="utf-8")
            os.replace(tmp, run_dir / PUBLISHED)
            return total

    def spent(self, day: str | None = None) -> float:
        """US dollars spent on ``day`` (``YYYY-MM-DD``, UTC; default today)."""
        day = day or _today()
        midnight = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
        with self._lock:
            if day != self._day:
                self._day, self._files = day, {}
            total = 0.0
            for folder in self.folders:
                try:
                    entries = list(os.scandir(folder))
                except OSError:
                    continue
                for entry in entries:
                    if entry.name.endswith(".jsonl") and _touched_on(entry, midnight):
                        total += self._read(Path(entry.path), day)
            return round(total, 6)

    def _read(self, path: Path, day: str) -> float:
        state = self._files.get(path)
        if state is None:
            state = self._files[path] = _FileState(0, 0.0)
        try:
            size = path.stat().st_size
            if size < state.offset:  # rewritten (rebuild): read it again
                state.offset, state.cost = 0, 0.0
            if size == state.offset:
                return state.cost
            with open(path, "rb") as f:
                f.seek(state.offset)
                data = f.read(size - state.offset)
        except OSError:
            return state.cost
        end = data.rfind(b"\n") + 1  # a torn last line is read again next time
        state.offset += end
        state.cost += _cost_of(data[:end], day)
        return state.cost


def _touched_on(entry: os.DirEntry[str], midnight: float) -> bool:
    """Whether the file was written on or after ``midnight``: a file last written
    before the day began holds no event of that day, and is not read (on a board of
    thousands of tasks, most are old; a stat is the price of each)."""
    try:
        return entry.stat().st_mtime >= midnight
    except OSError:
        return False


def _cost_of(data: bytes, day: str) -> float:
    total = 0.0
    stamp = f'"{day}T'.encode()
    for line in data.splitlines():
        if b"cost_usd" not in line or stamp not in line or not any(t in line for t in TERMINAL):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("type") not in (
            "process_completed",
            "process_failed",
        ):
            continue
        if not str(event.get("ts", "")).startswith(day):
            continue
        data_field = event.get("data")
        agent = data_field.get("agent") if isinstance(data_field, dict) else None
        cost = agent.get("cost_usd") if isinstance(agent, dict) else None
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > 0:
            total += float(cost)
    return total
