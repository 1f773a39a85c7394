"""The one error type of the project and the one table that maps it to exit codes.

Every layer (store, supervisor, protocol, CLI) raises :class:`LatticeError` with a
code from :class:`Code`. The supervisor sends the same codes over the wire, and the
CLI turns them into exit codes in exactly one place (:func:`exit_code_for`). A code
is a stable string because it crosses the wire and appears in ``--json`` output.
"""

from __future__ import annotations

import enum
import errno


class Code(enum.StrEnum):
    """Typed error codes, shared by the board, the protocol and the CLI."""

    # protocol (SPEC section 5)
    INVALID_REQUEST = "INVALID_REQUEST"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    NOT_FOUND = "NOT_FOUND"
    INVALID_WORKER = "INVALID_WORKER"
    INVALID_ACTOR = "INVALID_ACTOR"
    ENGINE_NOT_FOUND = "ENGINE_NOT_FOUND"
    CLUSTER_UNAVAILABLE = "CLUSTER_UNAVAILABLE"
    ALREADY_RUNNING = "ALREADY_RUNNING"
    CAPACITY = "CAPACITY"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INTERNAL = "INTERNAL"
    # board and client side
    NO_BOARD = "NO_BOARD"
    INVALID_ID = "INVALID_ID"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    LOCK_TIMEOUT = "LOCK_TIMEOUT"
    CONFLICT = "CONFLICT"
    SUPERVISOR_UNAVAILABLE = "SUPERVISOR_UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    RUN_FAILED = "RUN_FAILED"
    DOCTOR_PROBLEMS = "DOCTOR_PROBLEMS"
    #: A file or folder could not be read or written (the message names it).
    IO_ERROR = "IO_ERROR"
    #: The board's daily budget (``workers.daily_budget_usd``) is spent (SPEC section 9).
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"


class LatticeError(Exception):
    """An error with a typed code and one sentence for a person."""

    def __init__(self, code: Code | str, message: str, details: object = None) -> None:
        super().__init__(message)
        self.code = Code(code) if code in Code.__members__ else Code.INTERNAL
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": str(self.code), "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


#: Exit codes of the ``lattice`` command (documented in the README).
EXIT_CODES: dict[Code, int] = {
    Code.INTERNAL: 1,
    Code.INVALID_REQUEST: 2,
    Code.INVALID_ARGUMENT: 2,
    Code.UNSUPPORTED_VERSION: 2,
    Code.NOT_FOUND: 3,
    Code.NO_BOARD: 3,
    Code.INVALID_ID: 4,
    Code.INVALID_ACTOR: 4,
    Code.INVALID_TRANSITION: 4,
    Code.INVALID_WORKER: 4,
    Code.ENGINE_NOT_FOUND: 4,
    Code.ALREADY_RUNNING: 5,
    Code.CONFLICT: 5,
    Code.SUPERVISOR_UNAVAILABLE: 6,
    Code.CLUSTER_UNAVAILABLE: 6,
    Code.SHUTTING_DOWN: 6,
    Code.CAPACITY: 6,
    Code.TIMEOUT: 6,
    Code.LOCK_TIMEOUT: 6,
    Code.DOCTOR_PROBLEMS: 7,
    Code.RUN_FAILED: 8,
    Code.BUDGET_EXCEEDED: 9,
    Code.IO_ERROR: 10,
}


def io_error(err: OSError, doing: str) -> LatticeError:
    """``IO_ERROR`` for ``err``, raised while ``doing`` (such as "attach notes.md").

    Read-only and permission errors usually mean a sandbox (an agent's): the message
    says where such a worker may write instead."""
    where = f" ({err.filename})" if err.filename else ""
    what = err.strerror or str(err) or type(err).__name__
    hint = "check that the path exists and that this user may write there"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = (
            "the folder is not writable here; inside an agent's sandbox write to "
            "$LATTICE_OUTPUT_DIR instead and the supervisor attaches what is there"
        )
    return LatticeError(Code.IO_ERROR, f"cannot {doing}: {what}{where}; {hint}")


def exit_code_for(code: Code | str) -> int:
    """The exit code of the ``lattice`` command for an error code."""
    try:
        return EXIT_CODES[Code(code)]
    except ValueError:
        return 1
