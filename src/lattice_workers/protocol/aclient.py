"""The protocol for Trio programs: :class:`AsyncClient`, and :class:`TrioSocket`
under it (and under the supervisor's server).

This is the one module of :mod:`lattice_workers.protocol` that imports Trio.

pyzmq has no Trio support. A ZeroMQ socket exposes one file descriptor, ``ZMQ_FD``,
that is *edge*-triggered: it becomes readable when the socket's state may have
changed, and any zmq call on the socket (a send included) can consume that edge. Three
rules, each of which we saw hang without it on this machine, follow:

1. Before waiting on the descriptor, look at ``EVENTS``: a message may already be
   queued, and no edge will come for it. (Receive until ``EVENTS`` has no POLLIN.)
2. After every send, look at ``EVENTS`` again and wake the task waiting on the
   descriptor if what it waits for is now there: the send may have swallowed its
   edge. (The server does better: the sender dispatches what arrived itself.)
3. Only one task may wait on a descriptor in Trio; the others park and are woken
   when it returns, so every waiter re-checks ``EVENTS`` itself.

``zmq-anyio`` (on Trio through AnyIO) measured 4.5x slower than this wrapper in the
same run (``bench/bench_protocol.py --zmq-anyio``: p50 638 us against 141 us, 1,160
against 3,560 requests per second with 32 clients), so we keep this small wrapper and
test each rule (``tests/protocol/test_aclient.py``).
"""

from __future__ import annotations

import itertools
import math
import select
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

import trio
import zmq

from lattice_workers.protocol._client_errors import (
    check_request_size,
    error_from_reply,
    no_answer,
    went_away,
)
from lattice_workers.protocol._codec import ProtocolError, decode_reply, encode
from lattice_workers.protocol._messages import End, Error, Reply, Request


class TrioSocket:
    """A pyzmq socket used from Trio tasks, following the three rules above.

    Any number of tasks may send and receive at once. It does not own the socket's
    options: configure the pyzmq socket before wrapping it.
    """

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self.fd = int(sock.getsockopt(zmq.FD))
        self._waiter: trio.CancelScope | None = None  # the one task in wait_readable
        self._wanted = 0  # union of the EVENTS bits that waiting tasks want
        self._lot = trio.lowlevel.ParkingLot()

    def events(self) -> int:
        """The socket's ``EVENTS`` bits now (POLLIN, POLLOUT)."""
        return int(self.sock.getsockopt(zmq.EVENTS))

    async def wait(self, mask: int) -> None:
        """Return once ``EVENTS`` has a bit of ``mask``; always a checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self.events() & mask:
            self._wanted |= mask
            if self._waiter is not None:
                await self._lot.park()
                continue
            with trio.CancelScope() as scope:
                self._waiter = scope
                try:
                    await trio.lowlevel.wait_readable(self.fd)
                finally:
                    self._waiter = None
                    self._wanted = 0  # every woken task adds its mask back
                    self._lot.unpark_all()

    def wake_waiters(self) -> None:
        """Rule 2: call after any operation done without :meth:`wait` (sends)."""
        if self._waiter is not None and self.events() & self._wanted:
            self._waiter.cancel()

    def recv_nowait(self) -> list[bytes] | None:
        """One whole message, or None when none is queued."""
        if not self.events() & zmq.POLLIN:
            return None  # (cheaper than letting recv raise zmq.Again)
        frames = self.sock.recv_multipart(zmq.NOBLOCK)
        self.wake_waiters()
        return frames

    def send_nowait(self, frames: list[bytes]) -> None:
        """Send one message or raise (``zmq.Again`` when the peer's queue is full)."""
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        finally:
            self.wake_waiters()

    async def recv(self) -> list[bytes]:
        """The next whole message, waiting as long as it takes."""
        while True:
            frames = self.recv_nowait()
            if frames is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return frames
            await self.wait(zmq.POLLIN)

    async def send(self, frames: list[bytes]) -> None:
        """Send one message, waiting while the socket's send queue is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self.send_nowait(frames)
            except zmq.Again:
                await self.wait(zmq.POLLOUT)
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return

    def close(self, linger: int = 0) -> None:
        """Close the socket (waking and failing any task still waiting on it)."""
        if self.sock.closed:
            return
        trio.lowlevel.notify_closing(self.fd)
        self.sock.close(linger=linger)


class _Gone:
    """Filed in the inbox of every request in flight when the connection closes."""


_GONE = _Gone()


class _Connection:
    """A DEALER socket, its monitor, and one descriptor to wait on for both.

    Trio lets a task wait on one descriptor; an epoll set holding both sockets'
    descriptors is readable when either is, so the receiving task can wait for a
    reply and for the connection closing at once, without a task per wait.
    """

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = TrioSocket(sock)
        self.monitor = TrioSocket(sock.get_monitor_socket(zmq.EVENT_DISCONNECTED))
        self._either: select.epoll | None = None
        self.either_fd = self.sock.fd  # without epoll (not Linux): closes seen on wake-up
        if hasattr(select, "epoll"):
            self._either = select.epoll()
            self._either.register(self.sock.fd, select.EPOLLIN)
            self._either.register(self.monitor.fd, select.EPOLLIN)
            self.either_fd = self._either.fileno()

    def close(self) -> None:
        if self._either is not None:
            trio.lowlevel.notify_closing(self.either_fd)
            self._either.close()
        self.sock.sock.disable_monitor()
        self.monitor.close()
        self.sock.close()


class AsyncClient:
    """A client of the supervisor for Trio programs; the API of :class:`Client`.

    Several tasks may use one client at once: replies are routed by request id. The
    task that finds no reply waiting for it receives for everyone and files what it
    gets; so no background task is needed and the client works without a nursery.
    A reply nobody waits for any more (its request timed out) is dropped, because
    request ids are never reused within a client.

    While it receives, that task also watches the connection (a socket monitor): if
    it closes, every request in flight fails with SUPERVISOR_UNAVAILABLE, so a
    stream without a timeout cannot outlive the supervisor.

    ``curve_server_key`` and ``curve_keypair``: as for
    :class:`~lattice_workers.protocol.client.Client`.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        curve_server_key: bytes | None = None,
        curve_keypair: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._curve = (curve_server_key, curve_keypair)
        self._rids = itertools.count(1)
        self._inbox: dict[int, deque[Reply | _Gone | ProtocolError]] = {}
        self._receiving = False
        self._receiver: trio.CancelScope | None = None
        self._arrived = trio.lowlevel.ParkingLot()
        self._conn: _Connection | None = None

    def _connected(self) -> _Connection:
        if self._conn is None:
            from lattice_workers.protocol.client import new_dealer  # no Trio there: cheap to share

            self._conn = _Connection(new_dealer(self.endpoint, *self._curve))
        return self._conn

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        """Close the connection (the client connects again if used again)."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _connection_closed(self) -> None:
        for box in self._inbox.values():
            box.append(_GONE)

    async def _send(self, req: Request) -> int:
        req.rid = next(self._rids)
        frame = encode(req)
        check_request_size(frame)
        conn = self._connected()
        while conn.monitor.recv_nowait() is not None:  # a close seen now ends what is
            self._connection_closed()  # in flight, not this request
        self._inbox[req.rid] = deque()
        try:
            await conn.sock.send([frame])
        except BaseException:
            del self._inbox[req.rid]
            raise
        # Rule 2 of TrioSocket: the send may have taken the edge the receiver waits for.
        if self._receiver is not None and conn.sock.events() & zmq.POLLIN:
            self._receiver.cancel()
        return req.rid

    async def _receive(self) -> None:
        """Receive what has arrived and file it; wait if nothing has."""
        conn = self._connected()
        with trio.CancelScope() as self._receiver:
            try:
                while True:
                    frames = conn.sock.recv_nowait()
                    if frames is not None:
                        self._file(frames)
                        return
                    if conn.monitor.recv_nowait() is not None:  # the connection closed
                        frames = conn.sock.recv_nowait()  # (an answer may have come first)
                        if frames is not None:
                            self._file(frames)
                        self._connection_closed()
                        return
                    await trio.lowlevel.wait_readable(conn.either_fd)
            finally:
                self._receiver = None

    def _file(self, frames: list[bytes]) -> None:
        try:
            reply = decode_reply(frames[-1])
        except ProtocolError as exc:
            if exc.rid in self._inbox:
                self._inbox[exc.rid].append(exc)
            return
        if reply.rid in self._inbox:
            self._inbox[reply.rid].append(reply)

    async def _next(self, rid: int) -> Reply:
        """The next reply to ``rid``: from the inbox, or received by this task."""
        box = self._inbox[rid]
        while not box:
            if self._receiving:
                await self._arrived.park()
                continue
            self._receiving = True
            try:
                await self._receive()
            finally:
                self._receiving = False
                self._arrived.unpark_all()
        answer = box.popleft()
        if isinstance(answer, _Gone):
            raise went_away(self.endpoint)
        if isinstance(answer, ProtocolError):
            raise answer
        return answer

    async def _answer(self, rid: int, seconds: float | None) -> Reply:
        with trio.move_on_after(math.inf if seconds is None else seconds):
            reply = await self._next(rid)
            if isinstance(reply, Error):
                raise error_from_reply(reply)
            return reply
        raise no_answer(self.endpoint, seconds or 0.0)

    async def request(
        self,
        req: Request,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Reply:
        """Send ``req`` and return its one reply; an Error reply is raised.

        ``timeout`` rather than a cancel scope around the call, because running out
        of time is an answer here (SUPERVISOR_UNAVAILABLE, worded for a person), not
        a cancellation.
        """
        rid = await self._send(req)
        try:
            return await self._answer(rid, self.timeout if timeout is None else timeout)
        finally:
            self._inbox.pop(rid, None)

    async def stream(
        self,
        req: Request,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (see request)
    ) -> AsyncIterator[Reply]:
        """Yield the replies to ``req`` until :class:`End` (not yielded).

        ``timeout`` applies to each reply; None waits forever (as ``Wait`` needs),
        though never past the supervisor's end. Leaving early closes the connection
        when no other request is using it, which stops the stream on the server;
        otherwise the rest of the stream is dropped as it arrives.
        """
        rid = await self._send(req)
        ended = False
        try:
            while True:
                reply = await self._answer(rid, timeout)
                if isinstance(reply, End):
                    ended = True
                    return
                yield reply
        finally:
            self._inbox.pop(rid, None)
            if not ended and not self._inbox and not self._receiving:
                self._close()


__all__ = ["AsyncClient", "TrioSocket"]
