"""A task's worker runs, derived from its ``process_*`` events.

The runs are not stored anywhere: each ``process_started`` opens one, and the
``process_completed`` or ``process_failed`` naming its ``started_event_id`` closes
it. What cannot be paired is still shown (an end with no start, a start with two
ends) rather than hidden, because those are exactly the cases worth seeing.
"""

from __future__ import annotations

from typing import Any

from lattice_workers.store._ids import actor_display
from lattice_workers.store._jsonio import as_dict


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


def process_runs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of one task in the order they started (unpaired ends last).

    Each run: ``worker`` (the process_type), ``run_id``, ``state`` (running,
    completed, failed), ``commit``, ``started``, ``ended``, ``duration`` (seconds),
    ``result`` (``success`` or the failure reason), ``error``, ``exit_code``,
    ``started_event_id``, ``ended_event_id``, ``log_path``, ``actor``, ``attempt``,
    and ``log_tail`` when the end carries one (a failure's last log lines).
    """
    runs: dict[str, dict[str, Any]] = {}
    orphans: list[dict[str, Any]] = []
    for event in events:
        etype = event.get("type")
        data = as_dict(event.get("data"))
        if etype == "process_started":
            sid = str(event.get("id"))
            runs[sid] = {
                "worker": data.get("process_type"),
                "run_id": data.get("run_id"),
                "state": "running",
                "commit": data.get("commit_sha"),
                "started": event.get("ts"),
                "ended": None,
                "duration": None,
                "result": None,
                "error": None,
                "exit_code": None,
                "started_event_id": sid,
                "ended_event_id": None,
                "log_path": data.get("log_path") or default_log_path(sid),
                "actor": actor_display(event.get("actor")),
                "attempt": data.get("attempt"),
            }
        elif etype in ("process_completed", "process_failed"):
            run = runs.get(str(data.get("started_event_id")))
            if run is None or run["ended_event_id"] is not None:
                run = {
                    "worker": data.get("process_type"),
                    "run_id": data.get("run_id"),
                    "commit": data.get("commit_sha"),
                    "started": None,
                    "started_event_id": data.get("started_event_id"),
                    "log_path": data.get("log_path"),
                    "actor": actor_display(event.get("actor")),
                    "attempt": None,
                    "unpaired": True,
                }
                orphans.append(run)
            failed = etype == "process_failed"
            run["state"] = "failed" if failed else "completed"
            run["ended"] = event.get("ts")
            run["ended_event_id"] = event.get("id")
            run["result"] = data.get("reason") if failed else data.get("result", "success")
            run["error"] = data.get("error")
            run["exit_code"] = data.get("exit_code")
            if isinstance(data.get("log_tail"), str):
                run["log_tail"] = data["log_tail"]
            duration = data.get("duration_seconds")
            if not isinstance(duration, int | float):
                start, end = _epoch(run.get("started")), _epoch(run["ended"])
                duration = end - start if start is not None and end is not None else None
            run["duration"] = duration
    return [*runs.values(), *orphans]
