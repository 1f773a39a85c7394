"""One handler per request type, dispatched by one ``match``.

A handler validates, asks the registry, and sends replies built with the request's
``rid``. Errors are raised as :class:`~lattice_workers.errors.LatticeError`; the server turns
them into :class:`~lattice_workers.protocol.Error` replies. Streams (``Wait``, ``Logs``) send
any number of replies and return; the server sends the closing ``End``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from lattice_workers import __version__
from lattice_workers.actors._files import open_run_file
from lattice_workers.actors._registry import Registry
from lattice_workers.actors._run import RunActor
from lattice_workers.actors._state import RunState
from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol._messages import (
    PROTOCOL_VERSION,
    AnyRequest,
    Cancel,
    Get,
    Hello,
    HelloReply,
    ListWorkers,
    LogChunk,
    Logs,
    Ok,
    Ps,
    PsReply,
    Reload,
    Reply,
    Run,
    RunEvent,
    RunInfo,
    RunReply,
    Shutdown,
    Wait,
    Watch,
    WorkersReply,
)
from lattice_workers.store import Board
from lattice_workers.supervisor._feed import Pending, RunFeed
from lattice_workers.supervisor._server import PeerBusy

Send = Callable[[Reply], Awaitable[None]]

#: The most log bytes in one reply; a follow sends several.
LOG_CHUNK_BYTES = 256 * 1024
#: After a ``Watch`` subscriber's queue was full, how long before sending again (no
#: event says a ZeroMQ peer has read: this is the one timer, and only while it lags).
WATCH_RETRY_INTERVAL = 0.2
#: How often a ``Logs --follow`` looks for new bytes while the run lives. The worker
#: writes straight to its file (so that its output survives us), which leaves no
#: event to wake on short of inotify; a run's end does wake the follower at once.
LOG_FOLLOW_INTERVAL = 0.2


class Handlers:
    """The supervisor's answers to every request.

    Given what they use rather than the supervisor: the registry, the board (to
    resolve task names), the feed of run changes (``Watch``), what ``Hello`` tells,
    and the supervisor's two actions a request may ask for (reload, shut down).
    """

    def __init__(
        self,
        registry: Registry,
        board: Board,
        feed: RunFeed,
        *,
        endpoint: str,
        started_at: float,
        reload: Callable[[], Awaitable[None]],
        request_shutdown: Callable[[bool], None],
    ) -> None:
        self.registry = registry
        self.board = board
        self.feed = feed
        self.endpoint = endpoint
        self.started_at = started_at
        self.reload = reload
        self.request_shutdown = request_shutdown

    async def __call__(self, req: AnyRequest, send: Send) -> None:
        match req:
            case Hello():
                await send(self._hello(req.rid))
            case ListWorkers():
                await send(WorkersReply(rid=req.rid, workers=await self.registry.worker_infos()))
            case Reload():
                await self.reload()
                await send(WorkersReply(rid=req.rid, workers=await self.registry.worker_infos()))
            case Run():
                accepted, created = await self.registry.submit(req)
                info = self.registry.info(accepted)
                await send(RunReply(rid=req.rid, run=info, created=created))
            case Cancel():
                await self._cancel(req, send)
            case Ps():
                task_id = await self._resolve_task(req.task) if req.task else None
                runs = self.registry.ps(include_finished=req.all, task_id=task_id)
                await send(PsReply(rid=req.rid, runs=runs))
            case Get():
                run = self.registry.info(self.registry.get(req.run_id))
                await send(RunReply(rid=req.rid, run=run))
            case Wait():
                await self._wait(req, send)
            case Logs():
                await self._logs(req, send)
            case Watch():
                await self._watch(req, send)
            case Shutdown():
                await send(Ok(rid=req.rid, message="shutting down"))
                self.request_shutdown(req.drain)

    def _hello(self, rid: int) -> HelloReply:
        return HelloReply(
            rid=rid,
            protocol_version=PROTOCOL_VERSION,
            server_version=__version__,
            pid=os.getpid(),
            root=str(self.board.root),
            socket=self.endpoint,
            started_at=self.started_at,
            subscribers=len(self.feed.subscriptions),
        )

    async def _resolve_task(self, ref: str) -> str:
        return await trio.to_thread.run_sync(self.board.resolve_task, ref)

    async def _cancel(self, req: Cancel, send: Send) -> None:
        if req.run_id:
            found = self.registry.get(req.run_id)
        elif req.worker and req.task:
            task_id = await self._resolve_task(req.task)
            try:
                found = self.registry.find_live(task_id, req.worker)
            except LatticeError as err:  # said with the task as the user named it
                err.message = err.message.replace(task_id, req.task)
                raise
        else:
            raise LatticeError(
                Code.INVALID_REQUEST, "cancel needs a run id, or a worker name and a task"
            )
        if isinstance(found, RunActor):
            self.registry.cancel(found)
        await send(RunReply(rid=req.rid, run=self.registry.info(found)))

    async def _wait(self, req: Wait, send: Send) -> None:
        runs = [self.registry.get(run_id) for run_id in req.run_ids]  # NOT_FOUND first
        done_send, done_receive = trio.open_memory_channel[RunInfo](len(runs))

        async def wait_one(run: RunActor | RunInfo) -> None:
            if isinstance(run, RunActor):
                await run.state.wait_value(lambda s: s.is_final)
                info = run.view()
            else:
                info = run
            await done_send.send(info)

        async with trio.open_nursery() as nursery:
            for run in runs:
                nursery.start_soon(wait_one, run)
            for _ in runs:
                info = await done_receive.receive()
                await send(RunReply(rid=req.rid, run=info))

    async def _watch(self, req: Watch, send: Send) -> None:
        feed = self.feed
        task_id = await self._resolve_task(req.task) if req.task else None
        # No await between the snapshot and the subscription: no change falls between.
        sub = feed.subscribe(task_id, self.registry.ps(task_id=task_id))
        try:
            while True:
                batch = sub.take()
                unsent: list[Pending] = []
                for i, event in enumerate(batch):
                    try:
                        await send(
                            RunEvent(rid=req.rid, kind=event.kind, run=event.run, lost=event.lost)
                        )
                    except PeerBusy:
                        unsent = batch[i:]
                        break
                if unsent:
                    sub.put_back(unsent)
                    await trio.sleep(WATCH_RETRY_INTERVAL)
                    continue
                if feed.closed.is_set() and not sub.pending:
                    return  # the server sends End
                if not sub.pending:
                    await sub.wake.wait()  # a change, or the feed closing
        finally:
            feed.unsubscribe(sub)

    async def _logs(self, req: Logs, send: Send) -> None:
        run = self.registry.get(req.run_id)
        info = self.registry.info(run)
        if not info.log_path and req.follow and isinstance(run, RunActor):
            # Queued: the log is named after process_started, which is not written yet.
            await run.state.wait_value(lambda s: s is not RunState.QUEUED)
        if not info.log_path:
            return  # nothing was ever logged (still queued, or ended in the queue)
        path = Path(info.log_path)
        offset = req.offset
        if req.tail is not None:
            offset = await trio.to_thread.run_sync(_tail_offset, path, req.tail)
        while True:
            data = await trio.to_thread.run_sync(_read_chunk, path, offset, LOG_CHUNK_BYTES)
            if data:
                await send(LogChunk(rid=req.rid, offset=offset, data=data))
                offset += len(data)
                continue
            cut = run.log_cut if req.follow and isinstance(run, RunActor) else None
            if (
                cut is not None
                and offset > cut
                and await trio.to_thread.run_sync(_size, path) < offset
            ):
                # The log was cut (log_max_mib) behind us: go on from its marker line,
                # which says how much was dropped, then its latest part.
                offset = cut
                continue
            if not req.follow or not isinstance(run, RunActor) or run.state.value.is_final:
                return
            with trio.move_on_after(LOG_FOLLOW_INTERVAL):
                await run.state.wait_value(lambda s: s.is_final)


def _size(path: Path) -> int:
    try:
        return os.stat(path, follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0


def _read_chunk(path: Path, offset: int, size: int) -> bytes:
    try:
        with open_run_file(path, "log") as f:
            f.seek(offset)
            return f.read(size)
    except FileNotFoundError:
        return b""


def _tail_offset(path: Path, lines: int) -> int:
    """The byte offset where the last ``lines`` lines of the file begin."""
    try:
        with open_run_file(path, "log") as f:
            end = f.seek(0, os.SEEK_END)
            if lines == 0:
                return end
            pos = end
            found = 0
            block = 64 * 1024
            # A trailing newline ends the last line; it does not start another.
            f.seek(max(end - 1, 0))
            trailing = f.read(1) == b"\n"
            needed = lines + (1 if trailing else 0)
            while pos > 0:
                start = max(pos - block, 0)
                f.seek(start)
                chunk = f.read(pos - start)
                for i in range(len(chunk) - 1, -1, -1):
                    if chunk[i] == 0x0A:
                        found += 1
                        if found == needed:
                            return start + i + 1
                pos = start
            return 0
    except FileNotFoundError:
        return 0

