"""The MCP tools, each one request to the supervisor (or one read of the board).

Why threads: the supervisor's synchronous client (``protocol.client``, no Trio) is the
one the command line uses, with its deadlines, its start on demand and its errors; the
SDK serves on anyio. Each tool call runs one client, made for that call (a client keeps
one request in flight), in a worker thread, and every call has a bound: the client's
own deadline, which a tool's ``timeout_seconds`` may raise to :data:`MAX_WAIT_S` and
no further, so that no tool call holds the server past its bound.

Errors come back as MCP tool errors whose text starts with the protocol's error code
(``NOT_FOUND: no worker named 'X' ...``), the same code and words as the command line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import msgspec
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from pydantic import Field

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol._messages import (
    Cancel,
    Get,
    ListWorkers,
    LogChunk,
    Logs,
    Ps,
    PsReply,
    Run,
    RunInfo,
    RunReply,
    WorkersReply,
)
from lattice_workers.protocol.client import Client, client_environment

T = TypeVar("T")

#: The longest any tool call may wait for runs to end (seconds).
MAX_WAIT_S = 600.0
#: The deadline of a call that does not wait for runs (a supervisor start included).
CALL_S = 30.0
#: The most log bytes one ``run_logs`` call returns; ``next_offset`` reads on.
MAX_LOG_BYTES = 256 * 1024

TOOL_NAMES = (
    "list_workers",
    "run_worker",
    "list_runs",
    "get_run",
    "run_logs",
    "wait_runs",
    "cancel_run",
    "run_diff",
    "list_tasks",
    "show_task",
)

INSTRUCTIONS = """\
Run workers (AI agents and scripts defined in workers/*.json) against tasks on this
project's Lattice board, under a supervisor that runs at most one live run per
(task, worker). Typical use: list_tasks, list_workers, run_worker (wait=true to block
until it ends, bounded), or run_worker then wait_runs; run_logs to read what a run
printed; cancel_run to stop one. Errors start with a code: NOT_FOUND, INVALID_WORKER,
ENGINE_NOT_FOUND, ALREADY_RUNNING (the live run is named), INVALID_ARGUMENT, ..."""


def _run_dict(info: RunInfo) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(info)
    return out


class _Board:
    """Where the tools act: one project root, its board and its supervisor."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def client(self) -> Client:
        """This board's supervisor, started on demand (deadlines are per request)."""
        from lattice_workers.supervisor import control

        return control.connect(self.root, self.root / ".lattice")

    def request(self, req: Any, timeout: float = CALL_S) -> Any:
        with self.client() as client:
            if isinstance(req, Run):
                req.requested_by = _actor(self.root)
                if client.private:
                    # The run gets this server's environment (the agent's), as a run
                    # the command line asks for gets the shell's.
                    req.env = client_environment()
            return client.request(req, timeout=timeout)

    def wait(self, run_ids: list[str], timeout: float) -> tuple[list[RunInfo], list[str]]:
        """(runs that ended, ids still live when ``timeout`` ran out)."""
        with self.client() as client:
            return client.wait_runs(run_ids, timeout)


async def _in_thread(call: Callable[[], T]) -> T:
    """Run a blocking client call off the event loop; LatticeError becomes a ToolError."""
    try:
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    except LatticeError as err:
        detail = f" {json.dumps(err.details, default=str)}" if err.details else ""
        raise ToolError(f"{err.code}: {err.message}{detail}") from None


def _actor(root: Path) -> str:
    """Who asks: the board's default actor (``LATTICE_ACTOR`` first), else ``agent:mcp``
    (blocking: it reads the board's config)."""
    from lattice_workers.store import Board

    try:
        return Board(root).default_actor() or "agent:mcp"
    except LatticeError:
        return "agent:mcp"


def build_server(root: Path) -> FastMCP:
    """The MCP server of the project at ``root`` (tools only, no resources)."""
    board = _Board(root)
    server = FastMCP("lattice-workers", instructions=INSTRUCTIONS)

    @server.tool()
    async def list_workers() -> dict[str, Any]:
        """Every worker definition in workers/*.json, valid or not: name, engine,
        description, and the problems of an invalid one."""
        reply = await _in_thread(lambda: board.request(ListWorkers()))
        assert isinstance(reply, WorkersReply)
        return {"workers": [msgspec.to_builtins(w) for w in reply.workers]}

    @server.tool()
    async def run_worker(
        worker: Annotated[str, Field(description="worker name, as list_workers gives it")],
        task: Annotated[str, Field(description="task id (task_...) or short id (T-1)")],
        commit: Annotated[
            str | None, Field(description="commit to work on; default: the project's HEAD")
        ] = None,
        base: Annotated[str | None, Field(description="ref to diff against")] = None,
        from_run: Annotated[
            str | None,
            Field(description="start at the work this run kept (a follow-up); not with commit"),
        ] = None,
        timeout_minutes: Annotated[
            float | None, Field(gt=0, description="the run's deadline; default: the worker's")
        ] = None,
        idempotency_key: Annotated[
            str | None,
            Field(description="a retry with the same key gets the same run back"),
        ] = None,
        wait: Annotated[bool, Field(description="wait for the run to end")] = False,
        wait_seconds: Annotated[
            float, Field(ge=0, le=MAX_WAIT_S, description="the longest to wait")
        ] = 120.0,
    ) -> dict[str, Any]:
        """Start WORKER on TASK (one live run per task and worker: a second start is
        refused with ALREADY_RUNNING naming the live run). Returns the run; with
        wait=true, waits up to wait_seconds and says whether it ended."""
        request = Run(
            worker=worker,
            task=task,
            revision=commit,
            from_run=from_run,
            base=base,
            timeout_minutes=timeout_minutes,
            idempotency_key=idempotency_key,
        )
        reply = await _in_thread(lambda: board.request(request))
        assert isinstance(reply, RunReply)
        out = {"run": _run_dict(reply.run), "created": reply.created}
        if wait:
            ended, _ = await _in_thread(lambda: board.wait([reply.run.run_id], wait_seconds))
            out["ended"] = bool(ended)
            if ended:
                out["run"] = _run_dict(ended[0])
        return out

    @server.tool()
    async def list_runs(
        finished: Annotated[bool, Field(description="include finished runs")] = False,
        task: Annotated[str | None, Field(description="only this task's runs")] = None,
    ) -> dict[str, Any]:
        """Live runs (queued first, in queue order, then running); with finished=true,
        the finished runs the supervisor keeps too."""
        reply = await _in_thread(lambda: board.request(Ps(all=finished, task=task)))
        assert isinstance(reply, PsReply)
        return {"runs": [_run_dict(r) for r in reply.runs]}

    @server.tool()
    async def get_run(run_id: str) -> dict[str, Any]:
        """One run, live or finished: state, outcome, exit code, reason, times, log path."""
        reply = await _in_thread(lambda: board.request(Get(run_id=run_id)))
        assert isinstance(reply, RunReply)
        return _run_dict(reply.run)

    @server.tool()
    async def run_logs(
        run_id: str,
        tail: Annotated[
            int | None, Field(ge=1, le=10_000, description="only the last N lines")
        ] = None,
        offset: Annotated[int, Field(ge=0, description="read from this byte")] = 0,
        max_bytes: Annotated[int, Field(ge=1, le=MAX_LOG_BYTES)] = 64 * 1024,
    ) -> dict[str, Any]:
        """A run's log, as text: the last `tail` lines, or up to max_bytes from `offset`.
        `next_offset` is where the next call reads on; `more` says whether it was cut."""

        def read() -> tuple[bytes, bool]:
            data = bytearray()
            with board.client() as client:
                for reply in client.stream(
                    Logs(run_id=run_id, offset=offset, tail=tail), timeout=CALL_S
                ):
                    if isinstance(reply, LogChunk):
                        data += reply.data
                        if len(data) > max_bytes:
                            return bytes(data[:max_bytes]), True
            return bytes(data), False

        data, more = await _in_thread(read)
        return {
            "run_id": run_id,
            "log": data.decode("utf-8", "replace"),
            "next_offset": None if tail is not None else offset + len(data),
            "more": more,
        }

    @server.tool()
    async def wait_runs(
        run_ids: Annotated[list[str], Field(min_length=1, max_length=1000)],
        timeout_seconds: Annotated[
            float, Field(ge=0, le=MAX_WAIT_S, description="the longest to wait (seconds)")
        ] = 60.0,
    ) -> dict[str, Any]:
        """Wait until the runs end or timeout_seconds pass (at most 600): the runs
        that ended, with their outcomes, and the ids still live."""
        ended, live = await _in_thread(lambda: board.wait(run_ids, timeout_seconds))
        return {"ended": [_run_dict(r) for r in ended], "still_live": live}

    @server.tool()
    async def cancel_run(
        run_id: Annotated[str | None, Field(description="the run; or give worker and task")] = None,
        worker: str | None = None,
        task: str | None = None,
    ) -> dict[str, Any]:
        """Cancel a queued run (it leaves the queue; nothing is written) or stop a
        running one (SIGTERM, grace, SIGKILL; it ends as cancelled: wait_runs sees the
        end). Give run_id, or worker and task."""
        if not run_id and not (worker and task):
            raise ToolError(f"{Code.INVALID_ARGUMENT}: give run_id, or worker and task")
        request = Cancel(run_id=run_id) if run_id else Cancel(worker=worker, task=task)
        reply = await _in_thread(lambda: board.request(request))
        assert isinstance(reply, RunReply)
        return _run_dict(reply.run)

    @server.tool()
    async def run_diff(
        run_id: str,
        stat: Annotated[bool, Field(description="only a summary of the files changed")] = False,
        attempt: Annotated[
            int | None, Field(ge=1, description="this attempt (default: the last kept)")
        ] = None,
        max_bytes: Annotated[int, Field(ge=1, le=MAX_LOG_BYTES)] = 64 * 1024,
    ) -> dict[str, Any]:
        """The work a run left in its worktree (kept under refs/lattice/runs/RUN/N when it
        ended), as a patch from the run's commit; NOT_FOUND when it kept none (nothing
        changed, no worktree, or already applied or discarded). Cut at max_bytes."""

        def read() -> bytes:
            from lattice_workers.actors._keep import KeepError, diff

            try:
                return diff(board.root, run_id, attempt=attempt, stat_only=stat)
            except KeepError as err:
                raise LatticeError(Code.INTERNAL, str(err)) from None

        patch = await _in_thread(read)
        return {
            "run_id": run_id,
            "diff": patch[:max_bytes].decode("utf-8", "replace"),
            "more": len(patch) > max_bytes,
        }

    @server.tool()
    async def list_tasks(
        status: Annotated[str | None, Field(description="only tasks in this status")] = None,
    ) -> dict[str, Any]:
        """The board's tasks: id, short id, title, status, priority, type, live runs."""

        def rows() -> dict[str, Any]:
            from lattice_workers.store import Board

            found, problems = Board(board.root).task_rows(status=status)
            return {"tasks": found, "problems": problems}

        return await _in_thread(rows)

    @server.tool()
    async def show_task(
        task: Annotated[str, Field(description="task id (task_...) or short id (T-1)")],
    ) -> dict[str, Any]:
        """One task: its snapshot, its events, its worker runs, its artifacts and the
        statuses it may move to."""

        def detail() -> dict[str, Any]:
            from lattice_workers.store import Board
            from lattice_workers.store._detail import task_detail

            return task_detail(Board(board.root), task)

        return await _in_thread(detail)

    return server


def serve(root: Path) -> None:
    """Serve MCP on stdin/stdout until the client closes it."""
    build_server(root).run("stdio")
