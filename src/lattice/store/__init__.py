"""The Lattice board format: reading and writing ``.lattice/`` as lattice-tracker does.

:class:`Board` is the API; :func:`locked_write` (behind ``Board.append``) is the one
write path. The JSON helpers are exported for other writers of durable files (the
supervisor's run journal). Importing this package imports neither trio nor zmq.
"""

from lattice.store._board import LATTICE_DIR, Board
from lattice.store._ids import (
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
from lattice.store._integrity import Problem, RebuildReport, drift, runs_left_open
from lattice.store._jsonio import (
    EventLog,
    append_durable,
    atomic_write_bytes,
    atomic_write_json,
    dumps_event,
    dumps_pretty,
    fsync_dir,
    parse_jsonl,
)
from lattice.store._materialize import apply_event, replay
from lattice.store._runs import process_runs
from lattice.store._workflow import Workflow
from lattice.store._write import NewEvent, WriteResult

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
