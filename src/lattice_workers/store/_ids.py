"""Identifiers, actors and timestamps of the Lattice format, and their validation.

Every string that ends up in a file path (task ids, event ids) is checked against
its pattern here before it touches the file system, so ``../../etc/passwd`` or
``task_junk`` is an :data:`~lattice_workers.errors.Code.INVALID_ID` error, never a path.

``python-ulid`` is imported only when an id is generated: it is slow to import
and read-only commands (``list``, ``show``) never need it.
"""

from __future__ import annotations

import re
import time

from lattice_workers.errors import Code, LatticeError

#: A prefix, then the ULID part of every id: Crockford base32, 26 characters (any case on
#: read). Both cases are spelled out, ASCII only: ``re.IGNORECASE`` would also let in the
#: Kelvin sign (U+212A) for ``K``, and it makes these the slowest patterns to compile.
_PREFIXED_RE = re.compile(r"([A-Za-z]+)_([0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26})")
#: Short ids such as ``LAT-42`` or ``LAT-F-7`` (looked up upper-cased).
SHORT_ID_RE = re.compile(r"[A-Z]{1,5}(?:-[A-Z]{1,5})?-\d+")
PROJECT_CODE_RE = re.compile(r"[A-Z]{1,5}")
#: Event types: built-in names and ``x_*`` custom ones; lower-case words only.
EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")

ACTOR_PREFIXES = ("agent", "human", "team", "dashboard")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def utc_now() -> str:
    """The current UTC time as Lattice writes it: whole seconds, ``Z`` suffix."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_id(prefix: str) -> str:
    """A new ``<prefix>_<ULID>`` id, for example ``ev_01M854QTJS89NAXBFNR1YMF6SV``."""
    from ulid import ULID

    return f"{prefix}_{ULID()}"


def parse_prefixed_id(value: object, prefix: str) -> str | None:
    """The canonical form (lower-case prefix, upper-case ULID) of a valid id, else None."""
    if not isinstance(value, str):
        return None
    match = _PREFIXED_RE.fullmatch(value)
    if match is None or match.group(1).lower() != prefix:
        return None
    return f"{prefix}_{match.group(2).upper()}"


def _validate_prefixed(value: object, prefix: str, what: str) -> str:
    canonical = parse_prefixed_id(value, prefix)
    if canonical is None:
        raise LatticeError(
            Code.INVALID_ID,
            f"{value!r} is not a valid {what} id: expected {prefix}_ followed by a "
            "26-character ULID",
        )
    return canonical


def validate_task_id(s: str) -> str:
    """The canonical task id for ``s``; ``INVALID_ID`` if it is not ``task_<ULID>``."""
    return _validate_prefixed(s, "task", "task")


def validate_event_id(s: str) -> str:
    """The canonical event id for ``s``; ``INVALID_ID`` if it is not ``ev_<ULID>``."""
    return _validate_prefixed(s, "ev", "event")


def validate_artifact_id(s: str) -> str:
    """The canonical artifact id for ``s``; ``INVALID_ID`` if it is not ``art_<ULID>``."""
    return _validate_prefixed(s, "art", "artifact")


def is_short_id(s: str) -> bool:
    """Whether ``s`` looks like a short id (``LAT-42``), in any case."""
    return SHORT_ID_RE.fullmatch(s.upper()) is not None


def validate_actor(actor: str) -> str:
    """``actor`` if it is ``prefix:identifier`` with a known prefix, else INVALID_ACTOR.

    Lattice's rule (split at the first ``:``, both parts non-empty, prefix one of
    agent/human/team/dashboard) plus one of ours: no control characters, because an
    actor with a newline in it is always a mistake and is printed in every history.
    """
    if not isinstance(actor, str):
        raise LatticeError(Code.INVALID_ACTOR, f"actor must be a string, not {actor!r}")
    prefix, sep, ident = actor.partition(":")
    if not sep or not prefix or not ident.strip() or prefix not in ACTOR_PREFIXES:
        raise LatticeError(
            Code.INVALID_ACTOR,
            f"invalid actor {actor!r}: use prefix:name with prefix one of "
            f"{', '.join(ACTOR_PREFIXES)} (for example human:ana or agent:review-bot)",
        )
    if _CONTROL_RE.search(actor) or len(actor) > 200:
        raise LatticeError(
            Code.INVALID_ACTOR,
            f"invalid actor {actor!r}: it must be at most 200 characters with no "
            "control characters",
        )
    return actor


def validate_event_type(event_type: str) -> str:
    """``event_type`` if it is a lower-case name such as ``comment_added`` or ``x_ping``."""
    if not isinstance(event_type, str) or EVENT_TYPE_RE.fullmatch(event_type) is None:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"invalid event type {event_type!r}: use lower-case letters, digits and _ "
            "(custom types start with x_)",
        )
    return event_type


def actor_display(actor: object) -> str:
    """How an actor is printed: the string itself, or the name of a session actor dict.

    ``lattice-tracker`` 0.2 may store a structured identity (a dict) as the actor.
    """
    if isinstance(actor, dict):
        return str(actor.get("name") or actor.get("base_name") or actor)
    return str(actor) if actor is not None else "?"
