"""Every message that crosses the supervisor's socket.

The wire is msgpack. A request is a map whose ``type`` field names the request
(msgspec tagged union); every request carries the protocol version ``v`` and a
client-chosen request id ``rid``, and every reply echoes that ``rid``. Most requests
get exactly one reply. Streaming requests (``Wait``, ``Logs`` with ``follow``) get any
number of replies followed by one :class:`End`. An :class:`Error` reply also ends a
stream. ``docs/protocol.md`` is the prose version of this module.

Structs forbid unknown fields so that a typo in a client is an ``INVALID_REQUEST``
rather than a silently ignored option.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

PROTOCOL_VERSION = 1

#: The request id: an unsigned integer chosen by the client, unique among its open requests.
RequestId = Annotated[int, Meta(ge=0, le=2**63 - 1)]
NonEmpty = Annotated[str, Meta(min_length=1, max_length=512)]


class Request(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Base of every request: protocol version and request id.

    The defaults only make construction in Python convenient (the client sets ``rid``);
    on the wire both fields are required: the server reads them first with
    :class:`Header` and refuses a request that lacks them.
    """

    v: int = PROTOCOL_VERSION
    rid: RequestId = 0


class Header(msgspec.Struct):
    """The two fields every request must carry, read before the request itself."""

    v: int
    rid: RequestId


class Hello(Request, tag="hello"):
    """Is the supervisor there? Answered by :class:`HelloReply`."""

    client: str = ""


class ListWorkers(Request, tag="list_workers"):
    """Every worker definition, valid or not. Answered by :class:`WorkersReply`."""


class Run(Request, tag="run"):
    """Start ``worker`` on ``task`` unless that key already has a live run.

    ``task`` is a task id or a short id. ``revision`` is the commit to work on (default:
    the project's HEAD when the request arrives); ``base`` the ref to diff against.
    ``idempotency_key``: a retry carrying the same key gets the same run back.
    ``env``: the requesting client's environment (never ``LATTICE_*``), which the
    worker gets instead of the supervisor's, after the same stripping rules; it is
    never written to disk, and over TCP it is sent and accepted only under CURVE.
    ``from_run``: start from the work an earlier run kept (its last attempt's snapshot,
    ``refs/lattice/runs/<run>/<attempt>``) instead of ``revision``, which must then be
    absent: a follow-up attempt builds on the previous one.
    Answered by :class:`RunReply`, or ``ALREADY_RUNNING`` naming the live run.
    """

    worker: NonEmpty
    task: NonEmpty
    revision: str | None = None
    from_run: str | None = None
    base: str | None = None
    actor: str | None = None
    timeout_minutes: Annotated[float, Meta(gt=0)] | None = None
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    requested_by: str | None = None
    env: dict[str, str] | None = None
    #: Per-run budgets for an agent worker, in place of the definition's
    #: ``max_cost_usd`` / ``max_turns``: passed to the CLI where it has a flag, else
    #: enforced from its stream. Refused (``INVALID_REQUEST``) for a script worker.
    max_cost_usd: Annotated[float, Meta(gt=0)] | None = None
    max_turns: Annotated[int, Meta(ge=1)] | None = None
    #: Resume the agent session of this finished run of the same worker and task, in
    #: a workspace at its kept work, telling it ``message`` (default: go on).
    continue_run: NonEmpty | None = None
    message: Annotated[str, Meta(min_length=1, max_length=128 * 1024)] | None = None


class Cancel(Request, tag="cancel"):
    """Cancel a run by ``run_id``, or by its key (``worker`` and ``task``).

    A queued run leaves the queue and writes nothing; a running run is stopped
    (SIGTERM, grace, SIGKILL) and ends as ``process_failed(cancelled)``.
    Answered by :class:`RunReply` with the run as it is after the request.
    """

    run_id: str | None = None
    worker: str | None = None
    task: str | None = None


class Ps(Request, tag="ps"):
    """Live runs (queued first by position, then running); with ``all``, finished ones too."""

    all: bool = False
    task: str | None = None


class Get(Request, tag="get"):
    """One run, live or finished. Answered by :class:`RunReply`."""

    run_id: NonEmpty


class Wait(Request, tag="wait"):
    """Stream one :class:`RunReply` per run as each ends, then :class:`End`."""

    run_ids: Annotated[list[str], Meta(min_length=1, max_length=1000)]


class Logs(Request, tag="logs"):
    """A run's log: bytes from ``offset`` (or the last ``tail`` lines).

    Streams :class:`LogChunk` replies then :class:`End`; with ``follow`` it keeps
    streaming new output until the run has ended and its log is read to the end.
    """

    run_id: NonEmpty
    offset: Annotated[int, Meta(ge=0)] = 0
    tail: Annotated[int, Meta(ge=0)] | None = None
    follow: bool = False


class Watch(Request, tag="watch"):
    """Subscribe to run changes: a stream of :class:`RunEvent` as they happen.

    First one ``current`` event per live run (queue order), then one event per change
    (``started`` for a new run, ``state``, ``ended`` once a run has ended, its record
    complete), for as long as the client reads; :class:`End` when the supervisor stops.
    ``task`` (an id or a short id) keeps only that task's runs. A client that reads
    slower than runs change is never waited for: a run's newer state replaces the one
    not yet sent, and the next event it gets counts what it missed in ``lost``. A
    run's ``ended`` event is never replaced.
    """

    task: str | None = None


class Reload(Request, tag="reload"):
    """Re-read the worker definitions now. Answered by :class:`WorkersReply`."""


class Shutdown(Request, tag="shutdown"):
    """Stop the supervisor gracefully. ``drain``: let runs finish (up to the deadline)."""

    drain: bool = False


AnyRequest = (
    Hello | ListWorkers | Run | Cancel | Ps | Get | Wait | Logs | Watch | Reload | Shutdown
)


# --------------------------------------------------------------------------- replies


class Reply(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every reply: the request id it answers (0 when it could not be read)."""

    rid: int = 0


class RunInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A run as the supervisor knows it: live or finished.

    ``state`` is one of queued, preparing, running, stopping, completed, failed.
    Times are Unix seconds (floats). ``queue_position`` is 1-based while queued.
    """

    run_id: str
    task_id: str
    worker: str
    state: str
    actor: str
    short_id: str | None = None
    attempt: int = 1
    queue_position: int | None = None
    requested_by: str | None = None
    commit_sha: str | None = None
    base_ref: str | None = None
    merge_base: str | None = None
    worktree_path: str | None = None
    log_path: str | None = None
    started_event_id: str | None = None
    pid: int | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    duration_seconds: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    idempotency_key: str | None = None
    #: A failed run's last meaningful log lines (ANSI stripped, at most ~500 bytes).
    log_tail: str | None = None
    #: What its last ended attempt changed in its workspace, as its terminal event says
    #: (``ref``, ``head_sha``, ``snapshot_sha``, ``base_sha``, ``commits``,
    #: ``files_changed``, ``insertions``, ``deletions``, ``left_out``; or
    #: ``{"files_changed": 0}``); None for a run without a workspace.
    changes: dict[str, Any] | None = None
    #: An agent run's ``agent`` object from its terminal event (SPEC section 9):
    #: engine, model, session, turns, tokens, cost, final message, error kind.
    agent: dict[str, Any] | None = None
    #: The cluster node that runs (ran) its current attempt; None on this machine.
    node: str | None = None


class WorkerInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One worker definition and whether it can run."""

    name: str
    path: str
    valid: bool
    problems: list[str] = []
    engine: str | None = None
    description: str | None = None
    actor: str | None = None
    worktree: bool = True
    max_concurrent: int | None = None


class HelloReply(Reply, tag="hello"):
    protocol_version: int
    server_version: str
    pid: int
    root: str
    socket: str
    started_at: float
    #: Open ``Watch`` subscriptions (one that went away is noticed at its next event).
    subscribers: int = 0


class WorkersReply(Reply, tag="workers"):
    workers: list[WorkerInfo]


class RunReply(Reply, tag="run"):
    """One run. ``created`` is true when this request started it."""

    run: RunInfo
    created: bool = False


class PsReply(Reply, tag="ps"):
    runs: list[RunInfo]


class LogChunk(Reply, tag="log"):
    """``data`` starts at byte ``offset`` of the log file."""

    offset: int
    data: bytes


class RunEvent(Reply, tag="run_event"):
    """One change of one run, in a :class:`Watch` stream.

    ``kind``: ``current`` (the run as it was when the subscription began), ``started``,
    ``state`` or ``ended``. ``lost``: how many of this subscriber's events were replaced
    by newer ones since its previous event (0 for a subscriber that keeps up).
    """

    kind: str
    run: RunInfo
    lost: int = 0


class Ok(Reply, tag="ok"):
    """A request that has nothing to say beyond success."""

    message: str = ""


class End(Reply, tag="end"):
    """The last reply of a stream."""


class Error(Reply, tag="error"):
    """A typed error (codes: :class:`lattice_workers.errors.Code`) with a sentence for a person.

    ``run`` is set with ``ALREADY_RUNNING`` (the live run).
    """

    code: str
    message: str
    run: RunInfo | None = None


AnyReply = (
    HelloReply | WorkersReply | RunReply | PsReply | LogChunk | RunEvent | Ok | End | Error
)

#: Requests answered by a stream that ends with :class:`End`.
STREAMING = (Wait, Logs, Watch)
