"""The supervisor's ZeroMQ server: a ROUTER socket served by Trio tasks.

One task receives; every request runs its handler in a task of its own, in a nursery
owned by :func:`serve`, so one slow request or client never stalls another. Replies
are sent without ever waiting (``NOBLOCK``):

- a peer that has gone (``EHOSTUNREACH``, with ``ROUTER_MANDATORY``) gets all its
  handler tasks cancelled, since nobody will read their answers;
- a peer that does not read (its queue is full at ``SNDHWM``) loses the reply, and
  that request's handler is cancelled (a stream with a hole in it is worse than a
  stream that stops); the server logs it and moves on. Waiting for room instead
  would let one stuck client hold handler tasks, and their resources, forever. The
  exception is a ``Watch`` subscription, whose handler is told (:class:`PeerBusy`)
  and keeps the unsent event to send later: its stream is built to have holes,
  which it counts for the subscriber.

Frames: a request is ``[identity, payload]`` from a DEALER, or ``[identity, b"",
payload]`` from a REQ socket; the reply goes back with the same envelope.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio
import zmq
import zmq.auth

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    STREAMING,
    AnyRequest,
    End,
    Error,
    ProtocolError,
    Reply,
    RunInfo,
    Watch,
    decode_request,
    encode,
    request_rid,
)
from lattice_workers.protocol._endpoint import (
    check_ipc_free,
    check_tcp_endpoint,
    ipc_path,
    prepare_ipc_folder,
)
from lattice_workers.protocol.aclient import TrioSocket
from lattice_workers.supervisor._zap import ClientKeys, answer, start_authenticator

Send = Callable[[Reply], Awaitable[None]]
Handler = Callable[[AnyRequest, Send], Awaitable[None]]

#: Requests one peer may have in flight; more are answered CAPACITY at once.
MAX_IN_FLIGHT_PER_PEER = 1000
#: Messages received in a row before the receiver lets handlers run.
RECEIVE_BATCH = 64
#: How long queued replies (the answer to Shutdown, say) may take to leave at close.
CLOSE_LINGER_MS = 1000

_log = logging.getLogger("lattice_workers.supervisor.server")


class PeerBusy(Exception):
    """A ``Watch`` reply found the subscriber's queue full; nothing was sent."""


async def serve(
    endpoint: str,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    log: logging.Logger | None = None,
    curve_secret_key: bytes | None = None,
    curve_clients: ClientKeys | None = None,
) -> None:
    """Serve ``endpoint`` with ``handler`` until cancelled.

    ``task_status.started`` receives the bound endpoint (with the real port when the
    endpoint asked for ``tcp://127.0.0.1:*``). An ``ipc://`` socket file is made mode
    0600 in a 0700 folder, and removed at the end.

    ``curve_secret_key`` makes the socket a CURVE server; ``curve_clients`` then
    admits only the clients whose public key it holds (ZAP). A TCP address beyond
    loopback needs both.
    """
    log = log or _log
    if curve_secret_key is None and curve_clients is not None:
        raise ValueError("curve_clients needs a curve_secret_key")
    check_tcp_endpoint(endpoint, curve=curve_clients is not None)
    path = ipc_path(endpoint)
    if path is not None:
        await trio.to_thread.run_sync(prepare_ipc_folder, path)
        await trio.to_thread.run_sync(check_ipc_free, path, endpoint)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    auth: zmq.auth.Authenticator | None = None
    bound_inode: int | None = None
    try:
        if curve_clients is not None:  # before the bind: no handshake may go unchecked
            auth = start_authenticator(ctx, curve_clients)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
        sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        if curve_secret_key is not None:
            sock.curve_server = True
            sock.curve_secretkey = curve_secret_key
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"cannot listen on {endpoint}: {exc}; choose another endpoint",
            ) from None
        if path is not None:
            bound_inode = await trio.to_thread.run_sync(_secure_socket_file, path)
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("listening on %s", bound)
        server = _Server(TrioSocket(sock), handler, log)
        async with trio.open_nursery() as nursery:
            server.nursery = nursery
            if auth is not None and curve_clients is not None:
                nursery.start_soon(answer, auth, curve_clients)
            task_status.started(bound)
            await server.receive_forever()
    finally:
        with trio.move_on_after(CLOSE_LINGER_MS / 1000 + 1) as cleanup:
            cleanup.shield = True
            sock.close()  # queued replies still leave, for up to CLOSE_LINGER_MS
            if auth is not None:
                auth.stop()
            if path is not None and bound_inode is not None:
                await trio.to_thread.run_sync(_remove_socket_file, path, bound_inode)
            await trio.to_thread.run_sync(ctx.term, abandon_on_cancel=True)


def _secure_socket_file(path: Path) -> int:
    os.chmod(path, 0o600)
    return path.stat().st_ino


def _remove_socket_file(path: Path, inode: int) -> None:
    """Remove the socket file unless another server has bound the path since."""
    try:
        if path.stat().st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


class _Server:
    """The receiver and the per-request tasks of one bound socket."""

    def __init__(self, sock: TrioSocket, handler: Handler, log: logging.Logger) -> None:
        self.sock = sock
        self.handler = handler
        self.log = log
        self.nursery: trio.Nursery | None = None
        self._reader: trio.CancelScope | None = None
        #: identity -> cancel scopes of that peer's running requests
        self.peers: dict[bytes, set[trio.CancelScope]] = {}

    async def receive_forever(self) -> None:
        """Dispatch requests as they come; the one task that waits on the descriptor.

        Rule 2 of :class:`TrioSocket` (a send may swallow the edge this task waits
        for) is kept without waking this task: whoever sends also dispatches what
        has arrived (:meth:`_after_send`). This task is woken only in the rare case
        that a sender left messages behind (more than a batch), by cancelling its
        scope; so the common path pays for no cancel scope per wait.
        """
        fd = self.sock.fd
        while True:
            with trio.CancelScope() as self._reader:
                while True:
                    if self._pump():
                        await trio.lowlevel.checkpoint()  # a full batch: let handlers run
                    else:
                        await trio.lowlevel.wait_readable(fd)

    def _pump(self) -> bool:
        """Rule 1: dispatch what is queued; True if it stopped at the batch limit."""
        for _ in range(RECEIVE_BATCH):
            frames = self.sock.recv_nowait()
            if frames is None:
                return False
            try:
                self._dispatch(frames)
            except Exception:  # a bug here must not take the supervisor down
                self.log.exception("failed to dispatch a message of %d frames", len(frames))
        return True

    def _after_send(self) -> None:
        """Rule 2: this send may have consumed the edge the receiver waits for."""
        if self.sock.events() & zmq.POLLIN and self._pump() and self._reader is not None:
            self._reader.cancel()

    def _dispatch(self, frames: list[bytes]) -> None:
        identity = frames[0]
        # A REQ socket puts an empty delimiter before its frames; a DEALER does not.
        envelope = [identity, b""] if len(frames) > 2 and frames[1] == b"" else [identity]
        body = frames[len(envelope) :]
        if len(body) != 1:
            self.log.warning(
                "refused a message of %d frames from peer %s (a request is one frame)",
                len(body),
                identity.hex(),
            )
            # Answered with the rid of its first frame, when that one has a readable
            # rid: the client's request then fails at once rather than at its timeout.
            self._send_now(
                envelope,
                Error(
                    rid=request_rid(body[0]) if body else 0,
                    code=Code.INVALID_REQUEST,
                    message=f"invalid request: a request is one frame, this message had "
                    f"{len(body)} (see docs/protocol.md)",
                ),
            )
            return
        payload = body[0]
        try:
            req = decode_request(payload)
        except ProtocolError as exc:
            self.log.warning(
                "refused a request from peer %s: %s (%d bytes)",
                identity.hex(),
                exc.message,
                len(payload),
            )
            self._send_now(envelope, Error(rid=exc.rid, code=exc.code, message=exc.message))
            return
        scopes = self.peers.setdefault(identity, set())
        if len(scopes) >= MAX_IN_FLIGHT_PER_PEER:
            self.log.warning(
                "refused %s rid=%d from peer %s: %d requests in flight",
                type(req).__name__,
                req.rid,
                identity.hex(),
                len(scopes),
            )
            self._send_now(
                envelope,
                Error(
                    rid=req.rid,
                    code=Code.CAPACITY,
                    message=f"this client has {len(scopes)} requests in flight, the most "
                    f"allowed; wait for some to finish before sending more",
                ),
            )
            return
        assert self.nursery is not None
        scope = trio.CancelScope()
        scopes.add(scope)
        self.nursery.start_soon(self._run, envelope, req, scope)

    def _send_now(self, envelope: list[bytes], reply: Reply | bytes) -> str | None:
        """Send without waiting; the reason it could not be sent, or None."""
        frame = reply if isinstance(reply, bytes) else encode(reply)
        try:
            self.sock.send_nowait([*envelope, frame])
        except zmq.Again:
            return "full"
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                return "gone"
            self.log.error("could not send to peer %s: %s", envelope[0].hex(), exc)
            return "failed"
        return None

    async def _run(self, envelope: list[bytes], req: AnyRequest, scope: trio.CancelScope) -> None:
        identity = envelope[0]
        name = type(req).__name__
        streaming = isinstance(req, STREAMING)
        replies = 0
        done = False  # an Error (or the one reply of a plain request) was sent

        async def send(reply: Reply) -> None:
            nonlocal replies, done
            if done:
                self.log.error(
                    "handler for %s rid=%d sent another reply after its last; dropped: %r",
                    name,
                    req.rid,
                    reply,
                )
                await trio.lowlevel.checkpoint()
                return
            if reply.rid != req.rid:
                self.log.error(
                    "handler for %s rid=%d sent a reply with rid=%d; corrected",
                    name,
                    req.rid,
                    reply.rid,
                )
                reply = msgspec.structs.replace(reply, rid=req.rid)
            frame = encode(reply)  # (a reply that cannot be encoded is the handler's bug)
            replies += 1
            done = isinstance(reply, Error) or not streaming
            failure = self._send_now(envelope, frame)
            self._after_send()
            if failure == "gone":
                # Once per peer: its other handlers may already be past their last
                # checkpoint (woken together by one event) and find it gone as well.
                gone = self.peers.pop(identity, None)
                if gone is not None:
                    self.log.info(
                        "peer %s went away; cancelling its %d request(s), %s rid=%d among them",
                        identity.hex(),
                        len(gone),
                        name,
                        req.rid,
                    )
                    for other in gone:
                        other.cancel()
                scope.cancel()
            elif failure == "full" and isinstance(req, Watch):
                replies -= 1
                raise PeerBusy
            elif failure == "full":
                self.log.warning(
                    "dropped a reply to %s rid=%d: peer %s does not read its replies "
                    "(its queue is full); cancelling that request",
                    name,
                    req.rid,
                    identity.hex(),
                )
                scope.cancel()
            elif failure == "failed":
                scope.cancel()
            if streaming:
                await trio.lowlevel.checkpoint()  # a stream in a loop must let others run
            else:
                # The one reply of a plain request: no need to reschedule the task just
                # to finish it (this saves a scheduling round per request).
                await trio.lowlevel.checkpoint_if_cancelled()

        try:
            with scope:
                try:
                    await self.handler(req, send)
                except Exception as exc:
                    error = _lattice_error_in(exc)
                    if error is None:
                        self.log.exception("handler for %s rid=%d failed", name, req.rid)
                        error = LatticeError(
                            Code.INTERNAL,
                            f"the supervisor failed while handling {name} (rid {req.rid}): "
                            f"{type(exc).__name__}: {exc}; see the supervisor log",
                        )
                    if not done:
                        run = error.details if isinstance(error.details, RunInfo) else None
                        await send(
                            Error(rid=req.rid, code=error.code, message=error.message, run=run)
                        )
                    return
                if streaming and not done:
                    await send(End(rid=req.rid))
                elif not replies:
                    self.log.error("handler for %s rid=%d sent no reply", name, req.rid)
                    await send(
                        Error(
                            rid=req.rid,
                            code=Code.INTERNAL,
                            message=f"the supervisor sent no answer to {name}; see its log",
                        )
                    )
        finally:
            scopes = self.peers.get(identity)
            if scopes is not None:
                scopes.discard(scope)
                if not scopes:
                    del self.peers[identity]


def _lattice_error_in(exc: BaseException) -> LatticeError | None:
    """``exc`` if it is a LatticeError, or the only exception inside a group."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, LatticeError) else None
