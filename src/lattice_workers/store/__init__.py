"""The Lattice board format: reading and writing ``.lattice/`` as lattice-tracker does.

:class:`Board` is the API; ``Board.append`` (the canonical locked write path of
``_write``) is the one way events are written. The JSON helpers are exported for
other writers of durable files (the supervisor's run journal). Importing this package
imports neither trio nor zmq, and names are loaded on first use, so that ``lattice
show`` pays only for the modules that read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lattice_workers.store._board import Board
    from lattice_workers.store._ids import (
        actor_display,
        is_short_id,
        new_id,
        utc_now,
        validate_actor,
        validate_artifact_id,
        validate_event_id,
        validate_event_type,
        validate_task_id,
    )
    from lattice_workers.store._integrity import Problem, RebuildReport, drift, runs_left_open
    from lattice_workers.store._jsonio import (
        EventLog,
        append_durable,
        atomic_write_bytes,
        atomic_write_json,
        dumps_event,
        dumps_pretty,
        fsync_dir,
        parse_jsonl,
    )
    from lattice_workers.store._locate import LATTICE_DIR, find_root
    from lattice_workers.store._materialize import apply_event, replay
    from lattice_workers.store._runs import process_runs
    from lattice_workers.store._workflow import Workflow
    from lattice_workers.store._write import NewEvent, WriteResult

_WHERE = {
    "LATTICE_DIR": "_locate",
    "Board": "_board",
    "actor_display": "_ids",
    "is_short_id": "_ids",
    "new_id": "_ids",
    "utc_now": "_ids",
    "validate_actor": "_ids",
    "validate_artifact_id": "_ids",
    "validate_event_id": "_ids",
    "validate_event_type": "_ids",
    "validate_task_id": "_ids",
    "Problem": "_integrity",
    "RebuildReport": "_integrity",
    "drift": "_integrity",
    "runs_left_open": "_integrity",
    "EventLog": "_jsonio",
    "append_durable": "_jsonio",
    "atomic_write_bytes": "_jsonio",
    "atomic_write_json": "_jsonio",
    "dumps_event": "_jsonio",
    "dumps_pretty": "_jsonio",
    "fsync_dir": "_jsonio",
    "parse_jsonl": "_jsonio",
    "find_root": "_locate",
    "apply_event": "_materialize",
    "replay": "_materialize",
    "process_runs": "_runs",
    "Workflow": "_workflow",
    "NewEvent": "_write",
    "WriteResult": "_write",
}

__all__ = [
    "LATTICE_DIR",
    "Board",
    "EventLog",
    "NewEvent",
    "Problem",
    "RebuildReport",
    "Workflow",
    "WriteResult",
    "actor_display",
    "append_durable",
    "apply_event",
    "atomic_write_bytes",
    "atomic_write_json",
    "drift",
    "dumps_event",
    "dumps_pretty",
    "find_root",
    "fsync_dir",
    "is_short_id",
    "new_id",
    "parse_jsonl",
    "process_runs",
    "replay",
    "runs_left_open",
    "utc_now",
    "validate_actor",
    "validate_artifact_id",
    "validate_event_id",
    "validate_event_type",
    "validate_task_id",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'lattice_workers.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lattice_workers.store.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
