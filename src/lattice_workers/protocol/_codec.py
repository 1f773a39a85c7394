"""msgpack encoding of the protocol messages, and the one place that decodes them.

Decoding a request is done in two steps so that an error can name the request it
answers: first the :class:`Header` (``v`` and ``rid``, unknown fields ignored), then
the typed union. A request whose header is readable gets its ``rid`` back in the
error even when the rest of it is wrong; a request whose version is not ours is
refused before its body is looked at, because a newer client's body may well be
valid in a protocol we do not speak.
"""

from __future__ import annotations

import functools
from typing import Annotated

import msgspec
from msgspec import Meta

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol._messages import (
    PROTOCOL_VERSION,
    AnyReply,
    AnyRequest,
    Header,
    Reply,
    Request,
)

#: The largest message the server accepts by default (the socket's ``MAXMSGSIZE``).
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20


class ProtocolError(LatticeError):
    """A frame that is not a valid message; ``rid`` is 0 when it could not be read."""

    def __init__(self, code: Code, rid: int, message: str) -> None:
        super().__init__(code, message)
        self.rid = rid


class _RidOnly(msgspec.Struct):
    """Used to recover the request id of a request whose header is incomplete."""

    rid: Annotated[int, Meta(ge=0, le=2**63 - 1)]


_encoder = msgspec.msgpack.Encoder()
_header = msgspec.msgpack.Decoder(Header)
_rid_only = msgspec.msgpack.Decoder(_RidOnly)


# Building a union's decoder compiles every member's type (about a millisecond each,
# which a `lattice` command feels): each side builds only the one it reads, the
# supervisor requests and a client replies, on first use.
@functools.cache
def _requests() -> msgspec.msgpack.Decoder[AnyRequest]:
    return msgspec.msgpack.Decoder(AnyRequest)


@functools.cache
def _replies() -> msgspec.msgpack.Decoder[AnyReply]:
    return msgspec.msgpack.Decoder(AnyReply)


def encode(msg: Request | Reply) -> bytes:
    """The msgpack bytes of one request or reply (a map whose ``type`` names it)."""
    return _encoder.encode(msg)


def request_rid(frame: bytes) -> int:
    """The ``rid`` of a request as far as it can be read, else 0 (the "unreadable" rid).

    For errors about a message as a whole (one of several frames, say): an error that
    carries the client's ``rid`` reaches the request that caused it.
    """
    return _recover_rid(frame)


def _recover_rid(frame: bytes) -> int:
    try:
        return _rid_only.decode(frame).rid
    except Exception:
        # Anything at all can arrive here (RecursionError on deep nesting included).
        return 0


def _why(exc: Exception) -> str:
    if isinstance(exc, msgspec.ValidationError):  # a subclass of DecodeError
        return str(exc)
    if isinstance(exc, msgspec.DecodeError):
        return "it is not valid msgpack"
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    return str(exc)


def decode_request(frame: bytes) -> AnyRequest:
    """Decode one request, or raise :class:`ProtocolError` saying what is wrong with it."""
    try:
        header = _header.decode(frame)
    except Exception as exc:
        rid = _recover_rid(frame)
        raise ProtocolError(
            Code.INVALID_REQUEST,
            rid,
            f"invalid request: {_why(exc)} (a request is a msgpack map with at least "
            f"the integer fields 'v' and 'rid'; see docs/protocol.md)",
        ) from None
    if header.v != PROTOCOL_VERSION:
        raise ProtocolError(
            Code.UNSUPPORTED_VERSION,
            header.rid,
            f"protocol version {header.v} is not supported: this supervisor speaks "
            f"version {PROTOCOL_VERSION} (use a client of the same version)",
        )
    try:
        return _requests().decode(frame)
    except Exception as exc:
        raise ProtocolError(
            Code.INVALID_REQUEST, header.rid, f"invalid request: {_why(exc)}"
        ) from None


def decode_reply(frame: bytes) -> AnyReply:
    """Decode one reply; a reply this client cannot read raises :class:`ProtocolError`.

    The code is ``INTERNAL`` because the fault is not the caller's: client and
    supervisor disagree about the protocol.
    """
    try:
        return _replies().decode(frame)
    except Exception as exc:
        raise ProtocolError(
            Code.INTERNAL,
            _recover_rid(frame),
            f"the supervisor sent a reply this client cannot read ({_why(exc)}); "
            f"are the client and the supervisor the same version?",
        ) from None
