"""A task's worker runs, derived from its ``process_*`` events.

The runs are not stored anywhere: each ``process_started`` opens one, and the
``process_completed`` or ``process_failed`` naming its ``started_event_id`` closes
it. What cannot be paired is still shown (an end with no start, a start with two
ends) rather than hidden, because those are exactly the cases worth seeing.
"""

from __future__ import annotations

from typing import Any

from lattice_workers.store._ids import actor_display
from lattice_workers.store._run_events import (
    PROCESS_END_TYPES,
    PROCESS_FAILED,
    PROCESS_STARTED,
    completed_data,
    ended_data,
    failed_data,
    started_data,
)


def _epoch(ts: object) -> float | None:
    import calendar
    import time

    if not isinstance(ts, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def default_log_path(started_event_id: str) -> str:
    """Where a run's log lives, relative to the project root."""
    return f".lattice/logs/workers/{started_event_id}.log"


def agent_summary(agent: dict[str, Any] | None) -> str:
    """An agent run's figures on one line: model, turns, tokens, cost ("" for none).

    Read from an event written by any tool, so every value is checked."""
    if not isinstance(agent, dict):
        return ""
    parts = [str(agent.get("model") or agent.get("engine") or "agent")]
    turns = agent.get("turns")
    if isinstance(turns, int):
        parts.append(f"{turns} turn{'s' if turns != 1 else ''}")
    tokens_in, tokens_out = agent.get("input_tokens"), agent.get("output_tokens")
    if isinstance(tokens_in, int) or isinstance(tokens_out, int):
        parts.append(f"{tokens_in or 0} in / {tokens_out or 0} out tokens")
    cached = agent.get("cache_read_tokens")
    if isinstance(cached, int) and cached:
        parts.append(f"{cached} cached")
    cost = agent.get("cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        parts.append(f"${cost:.4f}")
    if agent.get("error_kind"):
        parts.append(f"error_kind {agent['error_kind']}")
    return ", ".join(parts)


def process_runs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of one task in the order they started (unpaired ends last).

    Each run: ``worker`` (the process_type), ``run_id``, ``state`` (running,
    completed, failed), ``commit``, ``started``, ``ended``, ``duration`` (seconds),
    ``result`` (``success`` or the failure reason), ``error``, ``exit_code``,
    ``started_event_id``, ``ended_event_id``, ``log_path``, ``actor``, ``attempt``,
    ``log_tail`` when the end carries one (a failure's last log lines), ``changes``
    when it carries one (what the attempt changed: see actors/_keep.py), and ``agent``
    when the run was an agent's (model, turns, tokens, cost, ``error_kind``).
    """
    runs: dict[str, dict[str, Any]] = {}
    orphans: list[dict[str, Any]] = []
    for event in events:
        etype = event.get("type")
        if etype == PROCESS_STARTED:
            started = started_data(event)
            sid = str(event.get("id"))
            runs[sid] = {
                "worker": started.get("process_type"),
                "run_id": started.get("run_id"),
                "state": "running",
                "commit": started.get("commit_sha"),
                "started": event.get("ts"),
                "ended": None,
                "duration": None,
                "result": None,
                "error": None,
                "exit_code": None,
                "started_event_id": sid,
                "ended_event_id": None,
                "log_path": started.get("log_path") or default_log_path(sid),
                "actor": actor_display(event.get("actor")),
                "attempt": started.get("attempt"),
            }
        elif etype in PROCESS_END_TYPES:
            ended = ended_data(event)
            run = runs.get(str(ended.get("started_event_id")))
            if run is None or run["ended_event_id"] is not None:
                run = {
                    "worker": ended.get("process_type"),
                    "run_id": ended.get("run_id"),
                    "commit": ended.get("commit_sha"),
                    "started": None,
                    "started_event_id": ended.get("started_event_id"),
                    "log_path": ended.get("log_path"),
                    "actor": actor_display(event.get("actor")),
                    "attempt": None,
                    "unpaired": True,
                }
                orphans.append(run)
            failed = etype == PROCESS_FAILED
            run["state"] = "failed" if failed else "completed"
            run["ended"] = event.get("ts")
            run["ended_event_id"] = event.get("id")
            # Read as a failure either way: a success has no reason and no error (None).
            failure = failed_data(event)
            if failed:
                run["result"] = failure.get("reason")
            else:
                run["result"] = completed_data(event).get("result", "success")
            run["error"] = failure.get("error")
            run["exit_code"] = failure.get("exit_code")
            if isinstance(failure.get("log_tail"), str):
                run["log_tail"] = failure["log_tail"]
            if isinstance(ended.get("changes"), dict):
                run["changes"] = ended.get("changes")
            if isinstance(ended.get("agent"), dict):
                run["agent"] = ended["agent"]
            duration = ended.get("duration_seconds")
            if not isinstance(duration, int | float):
                start, end = _epoch(run.get("started")), _epoch(run["ended"])
                duration = end - start if start is not None and end is not None else None
            run["duration"] = duration
    return [*runs.values(), *orphans]
