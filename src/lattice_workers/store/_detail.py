"""One task as ``show`` presents it: snapshot, events, worker runs, artifacts, the
statuses it may move to, and what the board's agents spent today. One function, for
every front door that shows a task (the command line's ``show``, the MCP server's
``show_task``)."""

from __future__ import annotations

import json
from typing import Any

from lattice_workers.errors import LatticeError
from lattice_workers.store._board import Board
from lattice_workers.store._runs import process_runs
from lattice_workers.store._spend import spend_today


def task_detail(board: Board, task: str) -> dict[str, Any]:
    """Everything about ``task`` (an id or a short id); ``NOT_FOUND`` if there is none."""
    task_id = board.resolve_task(task)
    log = board.read_events(task_id)
    snap = board.read_snapshot(task_id)
    artifacts = []
    for ref in snap.get("artifact_refs") or [
        r for r in snap.get("evidence_refs") or [] if r.get("source_type") == "artifact"
    ]:
        info = {"id": ref.get("id"), "role": ref.get("role")}
        meta_path = board.dir / "artifacts" / "meta" / f"{ref.get('id')}.json"
        try:
            meta = json.loads(meta_path.read_bytes())
            info.update(title=meta.get("title"), file=(meta.get("payload") or {}).get("file"))
        except (OSError, ValueError, AttributeError):
            info["missing"] = True
        artifacts.append(info)
    try:
        transitions = board.workflow().targets(str(snap.get("status")))
    except LatticeError:
        transitions = []
    return {
        "task": snap,
        "events": log.events,
        "runs": process_runs(log.events),
        "artifacts": artifacts,
        "transitions": transitions,
        "problems": log.problems,
        # The board's, not the task's: a person deciding to start another agent run
        # here sees what is left of the daily budget (workers.daily_budget_usd).
        "spend_today": spend_today(board.dir),
    }
