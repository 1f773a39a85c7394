"""The three run events on the board: one typed definition for every writer and reader.

``process_started`` opens a run; exactly one ``process_completed`` or
``process_failed`` naming its ``started_event_id`` closes it (SPEC section 3). The
supervisor's run actor and the settle path for orphans write them; the replay
(``active_processes``), ``doctor``, a task's run history and the CLI's event list read
them. These types are the one place their fields are named.

Why ``TypedDict`` and not ``msgspec.Struct``, as the wire types are: the readers run
in ``lattice show`` and every CLI write, which must not import msgspec (a tenth of a
second of start-up on a loaded machine, pinned by the tests of the CLI's imports), and
they must stay lenient towards events other tools wrote (lattice-tracker's own
``process_started`` has neither ``run_id`` nor ``log_path``) where a typed decode would
refuse the line. A ``TypedDict`` costs nothing at run time, is the very dict that is
written (so the bytes on the board are what they were:
``tests/actors/test_run_event_bytes.py`` pins them), and lets mypy check every key a
writer sets and a reader asks for.

Readers take the data of an event from any tool: they read with ``.get`` and check
types where a wrong one matters. Writers set every required key, even to ``None``
(today's lines have those nulls). A later field is added as ``NotRequired``: a writer
sets it only when it has a value, so the lines of runs without it do not change.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, cast

PROCESS_STARTED = "process_started"
PROCESS_COMPLETED = "process_completed"
PROCESS_FAILED = "process_failed"
PROCESS_END_TYPES = frozenset({PROCESS_COMPLETED, PROCESS_FAILED})


class ProcessStarted(TypedDict):
    """A run's attempt began: its worker, commit and where its log goes."""

    process_type: str
    run_id: str
    attempt: int
    commit_sha: str | None
    base_ref: str | None
    timeout_minutes: float
    log_path: str
    requested_by: str | None
    #: Only for a worker that runs in its own worktree.
    worktree_path: NotRequired[str]


class ProcessEnded(TypedDict):
    """What both ends of a run carry. ``attempt`` is absent from an orphan's end (the
    settle path reads the run from the board, which does not say), as are
    ``output`` (the worker's result file) and ``output_error`` (why it was ignored)
    when there is none."""

    process_type: str | None
    started_event_id: str
    run_id: str | None
    commit_sha: str | None
    duration_seconds: float | None
    log_path: str | None
    attempt: NotRequired[int]
    output: NotRequired[dict[str, Any]]
    output_error: NotRequired[str]
    #: True when the log reached ``log_max_mib`` and its middle was dropped.
    log_truncated: NotRequired[bool]
    #: An agent run's figures and failure class (SPEC section 9; engines/_common.py).
    agent: NotRequired[dict[str, Any]]
    #: What the attempt changed in its worktree, kept under ``ref`` (SPEC section 9),
    #: or ``{"files_changed": 0}``; only for a run with a worktree.
    changes: NotRequired[dict[str, Any]]


class ProcessCompleted(ProcessEnded):
    """The worker exited 0."""

    result: Literal["success"]
    exit_code: int


class ProcessFailed(ProcessEnded):
    """Anything else: ``reason`` is a :class:`~lattice_workers.actors._state.Reason`,
    ``error`` a sentence for a person; ``exit_code`` or ``signal`` when the worker
    exited by itself."""

    reason: str
    error: str
    exit_code: NotRequired[int]
    signal: NotRequired[int]
    #: The end of the worker's log, ANSI stripped, when there is one (SPEC section 9).
    log_tail: NotRequired[str]


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else {}


def started_data(event: dict[str, Any]) -> ProcessStarted:
    """The data of a ``process_started`` event from any tool (read it with ``.get``)."""
    return cast(ProcessStarted, _data(event))


def ended_data(event: dict[str, Any]) -> ProcessEnded:
    """What either end event carries, from any tool (read it with ``.get``)."""
    return cast(ProcessEnded, _data(event))


def completed_data(event: dict[str, Any]) -> ProcessCompleted:
    """The data of a ``process_completed`` event from any tool (read it with ``.get``)."""
    return cast(ProcessCompleted, _data(event))


def failed_data(event: dict[str, Any]) -> ProcessFailed:
    """The data of a ``process_failed`` event from any tool (read it with ``.get``)."""
    return cast(ProcessFailed, _data(event))
