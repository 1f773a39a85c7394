"""The errors both clients raise, worded once."""

from __future__ import annotations

import msgspec

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol._codec import DEFAULT_MAX_MESSAGE_SIZE
from lattice_workers.protocol._messages import Error


def error_from_reply(reply: Error) -> LatticeError:
    """An Error reply as the exception the caller sees; ``details`` is the run, if any."""
    details = msgspec.to_builtins(reply.run) if reply.run is not None else None
    return LatticeError(reply.code, reply.message, details=details)


def no_answer(endpoint: str, timeout: float) -> LatticeError:
    """The supervisor did not answer in time (it is most likely not running)."""
    return LatticeError(
        Code.SUPERVISOR_UNAVAILABLE,
        f"no answer from the supervisor at {endpoint} within {timeout:g}s; is it running? "
        f"(lattice supervisor status)",
    )


def went_away(endpoint: str) -> LatticeError:
    """The connection closed while a reply was awaited: the supervisor stopped (or, over
    TCP, refused this client's CURVE handshake, which looks the same from here)."""
    hint = ""
    if endpoint.startswith("tcp://"):
        hint = (
            "; over tcp:// a refused CURVE handshake looks the same: check "
            "LATTICE_CURVE_SERVER_KEY and that this client's public key is in the "
            "supervisor's LATTICE_CURVE_CLIENTS folder"
        )
    return LatticeError(
        Code.SUPERVISOR_UNAVAILABLE,
        f"the supervisor at {endpoint} closed the connection before answering (it stopped "
        f"or restarted); check it with lattice supervisor status and try again{hint}",
    )


def check_request_size(frame: bytes, limit: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
    """Refuse here what the server would drop silently (it disconnects on MAXMSGSIZE)."""
    if len(frame) > limit:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"the request is {len(frame)} bytes, more than the {limit} bytes the supervisor "
            f"accepts; send less at once (for example fewer run ids per request)",
        )
