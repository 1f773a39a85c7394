"""Which CURVE clients may connect: ZAP over pyzmq's ``zmq.auth.Authenticator``.

CURVE alone encrypts, but lets in any client that knows the server's *public* key:
whoever can reach a TCP port could start and cancel runs. With an allow-list, libzmq
asks the ZAP handler of the socket's context about every handshake, and only clients
whose public key has a certificate in the folder get through.

The folder holds public certificates in ZeroMQ's format, ``*.key`` files (what
``zmq.auth.create_certificates`` writes, or czmq's ``zcert``); secret ``*.key_secret``
files are never read. It is read at start and by ``lattice supervisor reload``.

pyzmq's ``Authenticator`` holds the policy and speaks the protocol; it does not come
with a Trio loop, so :func:`answer` feeds it from a Trio task.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import trio
import zmq
import zmq.auth

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol.aclient import TrioSocket

log = logging.getLogger("lattice_workers.supervisor.zap")

#: Shortest time between two warnings about refused handshakes.
REFUSAL_LOG_INTERVAL_S = 60.0


class ClientKeys:
    """The public keys (Z85) allowed to connect, from the ``*.key`` files of ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.keys: frozenset[bytes] = frozenset()
        self.refused = 0  # handshakes refused since the last warning
        self._last_refused = b""
        self._warned_at = -math.inf

    def load(self) -> int:
        """Read the folder again (blocking); the number of keys. A bad folder changes nothing."""
        try:
            found = zmq.auth.load_certificates(self.folder)
        except (OSError, ValueError) as exc:
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"cannot read the CURVE client certificates in {self.folder}: {exc}; "
                f"LATTICE_CURVE_CLIENTS must name a folder of public *.key certificates",
            ) from None
        self.keys = frozenset(found)
        if not self.keys:
            log.warning("no client certificate (*.key) in %s: no client can connect", self.folder)
        return len(self.keys)

    def callback(self, domain: str, key: bytes) -> bool:
        """``Authenticator``'s question: may the client with this Z85 key connect?

        Refusals are logged at most once a minute, with their count, so that a
        stranger knocking on the port cannot fill the disk with the log; those counted
        in between are reported when the minute is up (:func:`answer` sees to it).
        """
        if key in self.keys:
            return True
        self.refused += 1
        self._last_refused = key
        if self.seconds_until_report() == 0:
            self.report()
        return False

    def seconds_until_report(self) -> float:
        """How long until the refusals counted so far may be logged (inf: none)."""
        if not self.refused:
            return math.inf
        return max(0.0, REFUSAL_LOG_INTERVAL_S - (time.monotonic() - self._warned_at))

    def report(self) -> None:
        """Log the refusals counted since the last warning."""
        log.warning(
            "refused %d CURVE handshake(s) with unknown keys (the last: %s)",
            self.refused,
            self._last_refused.decode("ascii", "replace"),
        )
        self._warned_at, self.refused = time.monotonic(), 0


def start_authenticator(
    ctx: zmq.Context[zmq.Socket[bytes]], clients: ClientKeys
) -> zmq.auth.Authenticator:
    """Bind ``ctx``'s ZAP handler socket, checking CURVE clients against ``clients``.

    Call it before the server binds: libzmq lets every CURVE client in when no handler
    is bound. Requests wait in the socket until :func:`answer` reads them. Close it
    with ``auth.stop()`` before the context is terminated.
    """
    auth = zmq.auth.Authenticator(ctx, log=log)
    auth.configure_curve_callback("*", clients)
    auth.start()
    return auth


async def answer(auth: zmq.auth.Authenticator, clients: ClientKeys) -> None:
    """Answer ZAP requests until cancelled; report counted refusals when they are due."""
    sock = TrioSocket(auth.zap_socket)
    while True:
        request = None
        with trio.move_on_after(clients.seconds_until_report()):
            request = await sock.recv()
        if request is None:
            clients.report()
            continue
        await auth.handle_zap_message(request)  # replies at once on the REP socket
        sock.wake_waiters()
