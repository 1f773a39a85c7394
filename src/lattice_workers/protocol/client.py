"""The synchronous client: for the ``lattice`` command and any Python program.

It imports no Trio (the CLI must start fast) and keeps one request in flight at a
time. Two things make it safe to use against a supervisor that may not be there, or
may stop while we wait:

- every wait has a deadline, and after a deadline the socket is replaced, so a reply
  that arrives late can never be taken for the answer to a later request;
- a socket monitor reports when the connection closes while we wait (the supervisor
  stopped or was killed), so even a stream that waits forever (``Wait``) ends with
  ``SUPERVISOR_UNAVAILABLE`` instead of hanging.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

import zmq

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol._client_errors import (
    check_request_size,
    error_from_reply,
    no_answer,
    went_away,
)
from lattice_workers.protocol._codec import ProtocolError, decode_reply, encode
from lattice_workers.protocol._messages import (
    End,
    Error,
    Reply,
    Request,
    RunInfo,
    RunReply,
    Wait,
)

#: zmq heartbeats on TCP so that a peer that vanished without closing is noticed.
HEARTBEAT_MS = 5_000


def _monitor_event(monitor: zmq.Socket[bytes]) -> int:
    """The event number of the next monitor message (zmq.utils.monitor costs 70 ms to import)."""
    first = monitor.recv_multipart()[0]
    return int(struct.unpack("=hi", first[:6])[0])


def new_dealer(
    endpoint: str,
    curve_server_key: bytes | None = None,
    curve_keypair: tuple[bytes, bytes] | None = None,
) -> zmq.Socket[bytes]:
    """A DEALER socket connected to ``endpoint`` (both clients use this).

    With ``curve_server_key`` the connection is CURVE-encrypted; ``curve_keypair``
    (public, secret) is this client's own pair, which the server's allow-list must
    hold. Without it a new pair is made, which only a server without an allow-list
    lets in.
    """
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if endpoint.startswith("tcp://"):
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_MS)
    if curve_server_key is not None:
        public, secret = curve_keypair or zmq.curve_keypair()
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.curve_serverkey = curve_server_key
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"cannot connect to {endpoint!r}: {exc}; an endpoint looks like "
            f"ipc:///path/to/supervisor.sock or tcp://127.0.0.1:PORT",
        ) from None
    return sock


class Client:
    """A connection to the supervisor at ``endpoint`` (see :func:`default_endpoint`).

    One request at a time, from one thread (like the socket under it); use a client
    per thread, or :class:`~lattice_workers.protocol.aclient.AsyncClient` in Trio programs.

    ``timeout`` is the default deadline of :meth:`request`, in seconds.
    ``curve_server_key`` is the server's CURVE public key, for a CURVE-encrypted
    ``tcp://`` endpoint, and ``curve_keypair`` this client's (public, secret) pair,
    whose public key the server must allow (see :func:`new_dealer`).
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
        self._sock: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._poller = zmq.Poller()

    @property
    def private(self) -> bool:
        """Whether what is sent stays private: this machine's ``ipc://`` socket (file
        modes guard it), or a CURVE-encrypted connection."""
        return not self.endpoint.startswith("tcp://") or self._curve[0] is not None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the client connects again on its next request."""
        if self._sock is not None:
            self._poller = zmq.Poller()
            if self._monitor is not None:
                self._sock.disable_monitor()
                self._monitor.close(linger=0)
            self._sock.close(linger=0)
            self._sock = self._monitor = None

    def _connected(self) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
        if self._sock is None or self._monitor is None:
            self._sock = new_dealer(self.endpoint, *self._curve)
            self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            self._poller.register(self._sock, zmq.POLLIN)
            self._poller.register(self._monitor, zmq.POLLIN)
        return self._sock, self._monitor

    def _send(self, req: Request) -> int:
        req.rid = next(self._rids)
        frame = encode(req)
        check_request_size(frame)
        sock, monitor = self._connected()
        while int(monitor.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # disconnects from before
            _monitor_event(monitor)  # this request are old news
        sock.send(frame)
        return req.rid

    def _take(self, sock: zmq.Socket[bytes], rid: int) -> Reply | None:
        """The first queued reply to ``rid``, dropping replies to other (stale) ids."""
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            try:
                reply = decode_reply(frames[-1])
            except ProtocolError as exc:
                if exc.rid in (rid, 0):
                    raise
                continue
            # rid 0: the server could not read the request; with one request in
            # flight, that request is ours.
            if reply.rid == rid or (reply.rid == 0 and isinstance(reply, Error)):
                return reply

    def _answer(self, rid: int, timeout: float | None) -> Reply:
        sock, monitor = self._connected()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = None
            if deadline is not None:
                wait_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            ready = dict(self._poller.poll(wait_ms))
            if not ready:
                self.close()  # a late reply must not answer a later request
                raise no_answer(self.endpoint, timeout or 0.0)
            if sock in ready:
                reply = self._take(sock, rid)
                if reply is not None:
                    if isinstance(reply, Error):
                        raise error_from_reply(reply)
                    return reply
            if monitor in ready and _monitor_event(monitor) == zmq.EVENT_DISCONNECTED:
                reply = self._take(sock, rid)  # the answer may have come just before
                if reply is None:
                    self.close()
                    raise went_away(self.endpoint)
                if isinstance(reply, Error):
                    raise error_from_reply(reply)
                return reply

    def request(self, req: Request, *, timeout: float | None = None) -> Reply:
        """Send ``req`` and return its one reply; an Error reply is raised as LatticeError.

        ``timeout`` (seconds) defaults to the client's; past it, SUPERVISOR_UNAVAILABLE.
        """
        rid = self._send(req)
        return self._answer(rid, self.timeout if timeout is None else timeout)

    def wait_runs(
        self,
        run_ids: list[str],
        timeout: float | None = None,
        on_end: Callable[[RunInfo], None] | None = None,
    ) -> tuple[list[RunInfo], list[str]]:
        """Wait until the runs end or ``timeout`` seconds pass: (the runs that ended, in
        the order they did, each also given to ``on_end``; the ids still live)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ended: list[RunInfo] = []
        try:
            for reply in self.stream(Wait(run_ids=run_ids), timeout=timeout):
                if isinstance(reply, RunReply):
                    ended.append(reply.run)
                    if on_end is not None:
                        on_end(reply.run)
                if deadline is not None and time.monotonic() > deadline:
                    break
        except LatticeError as err:
            timed_out = deadline is not None and time.monotonic() >= deadline
            if not (timed_out and err.code in (Code.TIMEOUT, Code.SUPERVISOR_UNAVAILABLE)):
                raise
        done = {run.run_id for run in ended}
        return ended, [run_id for run_id in run_ids if run_id not in done]

    def stream(self, req: Request, *, timeout: float | None = None) -> Iterator[Reply]:
        """Yield the replies to ``req`` until :class:`End` (not yielded).

        ``timeout`` applies to each reply; None waits forever (as ``Wait`` needs),
        though never past the supervisor's end: a closed connection is raised.
        Leaving the loop early drops the connection, which stops the stream.
        """
        rid = self._send(req)
        ended = False
        try:
            while True:
                reply = self._answer(rid, timeout)
                if isinstance(reply, End):
                    ended = True
                    return
                yield reply
        finally:
            if not ended:
                self.close()


def client_environment() -> dict[str, str]:
    """This process's environment for a ``Run`` request's ``env``: every variable but
    ``LATTICE_*`` (they describe this process's own run or board); the supervisor
    applies the rest of the worker's stripping rules. Send it only where
    :attr:`Client.private` holds."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
