"""``lattice web``: the board and its runs, live, in a browser.

A Starlette application served by hypercorn's Trio worker: the process is a client of
the supervisor like the command line (one :class:`AsyncClient` for requests, one more
per live stream, so that a closed browser tab closes its subscription), and a reader of
the board for tasks. Live updates are server-sent events fed by the supervisor's
``Watch`` subscription and ``Logs`` follow streams; nothing polls.

Every request needs the token printed with the URL: in the query (``?token=``), or the
cookie set by a first request that had it; a POST also carries it in its form, so that
another page cannot make a browser start or cancel runs. Bad input gets the command
line's error code and message, and changes nothing.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.responses import StreamingResponse as _Streaming
from starlette.routing import Route

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
    RunEvent,
    RunInfo,
    RunReply,
    Watch,
    WorkersReply,
)
from lattice_workers.protocol.aclient import AsyncClient
from lattice_workers.protocol.client import client_environment
from lattice_workers.web import _pages

COOKIE = "lattice_web_token"
#: HTTP statuses for the protocol's error codes; anything else is a 500.
HTTP_STATUS = {
    Code.NOT_FOUND: 404,
    Code.NO_BOARD: 404,
    Code.INVALID_ID: 400,
    Code.INVALID_ARGUMENT: 400,
    Code.INVALID_REQUEST: 400,
    Code.INVALID_WORKER: 422,
    Code.INVALID_ACTOR: 422,
    Code.ENGINE_NOT_FOUND: 422,
    Code.ALREADY_RUNNING: 409,
    Code.CONFLICT: 409,
    Code.CAPACITY: 503,
    Code.SHUTTING_DOWN: 503,
    Code.SUPERVISOR_UNAVAILABLE: 503,
}
#: The longest form a POST may send (bytes): a worker name and a task id.
MAX_FORM_BYTES = 4096

Endpoint = Callable[[HttpRequest], Awaitable[Response]]


class WebView:
    """The application's state: the board's root, its supervisor's endpoint, the token."""

    def __init__(self, root: Path, endpoint: str, token: str | None = None) -> None:
        self.root = root
        self.endpoint = endpoint
        self.token = token or secrets.token_urlsafe(18)
        self.client = AsyncClient(endpoint, timeout=30)

    # ------------------------------------------------------------ plumbing
    def allowed(self, request: HttpRequest, form_token: str | None = None) -> bool:
        given = [request.query_params.get("token"), request.cookies.get(COOKIE), form_token]
        return any(g and secrets.compare_digest(g, self.token) for g in given)

    def guarded(self, endpoint: Endpoint, *, post: bool = False) -> Endpoint:
        """``endpoint`` behind the token, with LatticeError turned into an error page."""

        async def handle(request: HttpRequest) -> Response:
            form_token = None
            if post:
                if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
                    return PlainTextResponse("request too large", status_code=413)
                form = await request.form()
                request.state.form = form
                token = form.get("token")
                form_token = token if isinstance(token, str) else None
                if form_token is None or not secrets.compare_digest(form_token, self.token):
                    return PlainTextResponse("forbidden: a POST needs the token", 403)
            if not self.allowed(request, form_token):
                return PlainTextResponse(
                    "forbidden: open the URL that `lattice web` printed (it has the token)", 403
                )
            try:
                response = await endpoint(request)
            except LatticeError as err:
                status = HTTP_STATUS.get(err.code, 500)  # a StrEnum key finds a str code
                response = HTMLResponse(
                    _pages.error_page(str(err.code), err.message, self.token), status
                )
            if request.query_params.get("token") == self.token:
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return response

        return handle

    async def request(self, req: Any) -> Any:
        return await self.client.request(req)

    # ------------------------------------------------------------ reads
    async def tasks(self) -> tuple[list[str], list[dict[str, Any]]]:
        def read() -> tuple[list[str], list[dict[str, Any]]]:
            from lattice_workers.store import Board

            board = Board(self.root)
            rows, _ = board.task_rows()
            statuses = list(board.workflow().statuses)
            return statuses, rows

        return await trio.to_thread.run_sync(read)

    async def board_fragment(self) -> str:
        (statuses, tasks) = await self.tasks()
        runs: PsReply = await self.request(Ps(all=True))
        workers: WorkersReply = await self.request(ListWorkers())
        return _pages.board_fragment(statuses, tasks, runs.runs, workers.workers, self.token)

    async def run_info(self, run_id: str) -> RunInfo:
        reply: RunReply = await self.request(Get(run_id=run_id))
        return reply.run

    # ------------------------------------------------------------ pages
    async def board(self, request: HttpRequest) -> Response:
        body = await self.board_fragment()
        return HTMLResponse(_pages.page("board", body, self.token, script=_pages.BOARD_SCRIPT))

    async def board_part(self, request: HttpRequest) -> Response:
        return HTMLResponse(await self.board_fragment())

    async def run_page(self, request: HttpRequest) -> Response:
        run = await self.run_info(request.path_params["run_id"])
        log = await self.read_log(run)
        artifacts = await self.task_artifacts(run.task_id)
        kept = await self.kept_diff(run.run_id)
        return HTMLResponse(_pages.run_page(run, log, artifacts, self.token, kept))

    async def kept_diff(self, run_id: str) -> bytes | None:
        """The run's kept work as a patch, or None when it kept none."""

        def read() -> bytes | None:
            from lattice_workers.actors._keep import KeepError, diff

            try:
                return diff(self.root, run_id)[: 1024 * 1024]
            except (KeepError, LatticeError):
                return None

        return await trio.to_thread.run_sync(read)

    async def run_part(self, request: HttpRequest) -> Response:
        run = await self.run_info(request.path_params["run_id"])
        return HTMLResponse(_pages.run_fragment(run, self.token))

    async def read_log(self, run: RunInfo) -> bytes:
        chunks = [
            reply.data
            async for reply in self.client.stream(Logs(run_id=run.run_id), timeout=30)
            if isinstance(reply, LogChunk)
        ]
        return b"".join(chunks)

    async def task_artifacts(self, task_id: str) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            from lattice_workers.store import Board
            from lattice_workers.store._detail import task_detail

            artifacts: list[dict[str, Any]] = task_detail(Board(self.root), task_id)["artifacts"]
            return artifacts

        return await trio.to_thread.run_sync(read)

    async def artifact(self, request: HttpRequest) -> Response:
        art_id = request.path_params["artifact_id"]

        def read() -> bytes:
            from lattice_workers.store import validate_artifact_id

            validate_artifact_id(art_id)
            board_dir = self.root / ".lattice" / "artifacts"
            try:
                meta = json.loads((board_dir / "meta" / f"{art_id}.json").read_bytes())
                name = str((meta.get("payload") or {}).get("file") or "")
            except (OSError, ValueError, AttributeError):
                raise LatticeError(Code.NOT_FOUND, f"no artifact {art_id}") from None
            if not name or "/" in name or name.startswith("."):
                raise LatticeError(Code.NOT_FOUND, f"artifact {art_id} has no readable file")
            try:
                fd = os.open(board_dir / "payload" / name, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                raise LatticeError(Code.NOT_FOUND, f"artifact {art_id}: file missing") from None
            with os.fdopen(fd, "rb") as f:
                return f.read(16 * 1024 * 1024)

        data = await trio.to_thread.run_sync(read)
        # Shown as text whatever it claims to be: an artifact is a worker's output.
        return Response(data, media_type="text/plain; charset=utf-8")

    # ------------------------------------------------------------ live streams
    async def events(self, request: HttpRequest) -> Response:
        """The board's live stream: every run change, as the Watch subscription says."""

        async def stream() -> AsyncIterator[str]:
            async with AsyncClient(self.endpoint, timeout=30) as client:
                async for reply in client.stream(Watch(), timeout=None):
                    if isinstance(reply, RunEvent):
                        yield _change(reply)

        return _sse(stream())

    async def run_live(self, request: HttpRequest) -> Response:
        """A run page's one live stream: its log from ``offset`` (``log`` events), its
        record's changes (``change`` events), and ``end`` once the run has ended and its
        log is read to the end (the supervisor's follow says so, with no window between
        a subscription and a change: the page's last redraw is certain).

        One connection per page, not one per feed: a browser opens at most six to one
        host over HTTP/1.1, and every open tab of this view holds its stream."""
        run_id = request.path_params["run_id"]
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            raise LatticeError(Code.INVALID_ARGUMENT, "offset must be a number") from None

        async def log(emit: Emit) -> None:
            try:
                async with AsyncClient(self.endpoint, timeout=30) as client:
                    logs = Logs(run_id=run_id, offset=offset, follow=True)
                    async for reply in client.stream(logs, timeout=None):
                        if isinstance(reply, LogChunk):
                            text = reply.data.decode("utf-8", "replace")
                            await emit(f"event: log\ndata: {json.dumps(text)}\n\n")
            except LatticeError:
                pass  # a run the supervisor no longer knows has no more log to give
            # "end" (not a dropped stream, which the browser would reopen every few
            # seconds): the page stops following and draws the record once more.
            await emit("event: end\ndata: \n\n")

        async def changes(emit: Emit) -> None:
            async with AsyncClient(self.endpoint, timeout=30) as client:
                async for reply in client.stream(Watch(), timeout=None):
                    if isinstance(reply, RunEvent) and reply.run.run_id == run_id:
                        await emit("event: change\n" + _change(reply))

        return _LiveEvents(log, changes)

    # ------------------------------------------------------------ actions
    async def start(self, request: HttpRequest) -> Response:
        form = request.state.form
        worker, task = form.get("worker"), form.get("task")
        if not (isinstance(worker, str) and worker and isinstance(task, str) and task):
            raise LatticeError(Code.INVALID_ARGUMENT, "a start needs a worker and a task")
        actor = await trio.to_thread.run_sync(_actor, self.root)  # reads the config
        run = Run(worker=worker, task=task, requested_by=actor)
        if not self.endpoint.startswith("tcp://"):
            # A run started from the page gets the environment `lattice web` was started
            # with, as one started from a shell gets the shell's (never over plain TCP).
            run.env = client_environment()
        reply: RunReply = await self.request(run)
        return RedirectResponse(f"/runs/{reply.run.run_id}?token={self.token}", status_code=303)

    async def cancel(self, request: HttpRequest) -> Response:
        run_id = request.path_params["run_id"]
        await self.request(Cancel(run_id=run_id))
        return RedirectResponse(f"/runs/{run_id}?token={self.token}", status_code=303)

    def app(self) -> Starlette:
        g = self.guarded
        return Starlette(
            routes=[
                Route("/", g(self.board)),
                Route("/fragments/board", g(self.board_part)),
                Route("/runs/{run_id}", g(self.run_page)),
                Route("/fragments/runs/{run_id}", g(self.run_part)),
                Route("/runs/{run_id}/live", g(self.run_live)),
                Route("/events", g(self.events)),
                Route("/artifacts/{artifact_id}", g(self.artifact)),
                Route("/runs", g(self.start, post=True), methods=["POST"]),
                Route("/runs/{run_id}/cancel", g(self.cancel, post=True), methods=["POST"]),
            ]
        )


#: Server-sent events need no caching and no proxy buffering.
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
#: Sends one server-sent event (its text, blank line included) to the browser.
Emit = Callable[[str], Awaitable[None]]
#: A live feed: sends its events through the ``Emit`` it is given.
Feed = Callable[[Emit], Awaitable[None]]


def _sse(events: AsyncIterator[str]) -> Response:
    return _Streaming(events, media_type="text/event-stream", headers=SSE_HEADERS)


def _change(event: RunEvent) -> str:
    payload = msgspec.json.encode({"kind": event.kind, "run": event.run, "lost": event.lost})
    return f"data: {payload.decode()}\n\n"


class _LiveEvents(_Streaming):
    """Server-sent events from several feeds on one connection, each feed a task in a
    nursery (not an async generator, which must not yield inside one). The response
    ends when ``main`` returns; Starlette cancels it all when the browser goes."""

    def __init__(self, main: Feed, *others: Feed) -> None:
        super().__init__(_no_body(), media_type="text/event-stream", headers=SSE_HEADERS)
        self.main, self.others = main, others

    async def stream_response(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        lock = trio.Lock()  # one event at a time on the wire

        async def emit(text: str) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        async with trio.open_nursery() as nursery:
            for other in self.others:
                nursery.start_soon(other, emit)
            await self.main(emit)
            nursery.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


def _actor(root: Path) -> str:
    """Who starts a run from the page: the board's default actor (``LATTICE_ACTOR``
    first), else the user (blocking: it reads the board's config)."""
    import getpass

    from lattice_workers.store import Board

    try:
        return Board(root).default_actor() or f"human:{getpass.getuser()}"
    except LatticeError:
        return f"human:{getpass.getuser()}"
