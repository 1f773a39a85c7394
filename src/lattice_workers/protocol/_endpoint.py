"""Where the supervisor listens: the default ``ipc://`` endpoint and endpoint checks.

The default socket lives in ``.lattice/run/`` (the supervisor's runtime folder, mode
0700) so that only the owner of the board can reach it. A Unix socket path is limited
to ~107 bytes, which a deep project folder easily exceeds; then the socket moves to a
0700 folder under ``$XDG_RUNTIME_DIR`` (or ``/tmp``) named after a hash of the
resolved root, so that the client and the server, computing independently, agree.

Nothing here imports Trio: the CLI computes the endpoint before it connects.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store._locate import LATTICE_DIR, RUN_DIR

#: Longest usable ``sun_path`` (108 bytes on Linux, 104 on macOS, minus the NUL).
MAX_IPC_PATH = 103 if sys.platform == "darwin" else 107

RUNTIME_DIR = Path(LATTICE_DIR) / RUN_DIR
SOCKET_NAME = "supervisor.sock"


def default_endpoint(root: Path) -> str:
    """``ipc://<root>/.lattice/run/supervisor.sock``, or a short fallback when too long."""
    root = Path(root).resolve()
    path = root / RUNTIME_DIR / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_IPC_PATH:
        return f"ipc://{path}"
    import hashlib  # only here: the CLI's start-up time matters

    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:16]
    folder = f"lattice-{os.getuid()}-{digest}"
    base = os.environ.get("XDG_RUNTIME_DIR") or ""
    if base and Path(base).is_absolute():
        candidate = Path(base) / folder / SOCKET_NAME
        if len(os.fsencode(candidate)) <= MAX_IPC_PATH:
            return f"ipc://{candidate}"
    return f"ipc://{Path('/tmp') / folder / SOCKET_NAME}"


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint, or None for other transports."""
    if not endpoint.startswith("ipc://"):
        return None
    path = endpoint[len("ipc://") :]
    if not path or path.startswith("@"):
        return None  # abstract socket: no file
    return Path(path)


def prepare_ipc_folder(socket_path: Path) -> None:
    """Create the socket's folder with mode 0700, or check an existing one is safe.

    An existing folder must be a real folder (not a symlink) owned by us; its mode is
    then tightened to 0700. Refusing a folder someone else owns matters for the
    ``/tmp`` fallback, where another user could have created the name first.
    """
    folder = socket_path.parent
    if len(os.fsencode(socket_path)) > MAX_IPC_PATH:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"the socket path {socket_path} is longer than {MAX_IPC_PATH} bytes, the "
            f"limit of a Unix socket; choose a shorter ipc:// path",
        )
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError as exc:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"cannot create the socket folder {folder}: {exc.strerror}; check its parent "
            f"exists and is writable",
        ) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"the socket folder {folder} is not a folder owned by this user; remove it "
            f"or choose another endpoint",
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        folder.chmod(0o700)


def check_ipc_free(socket_path: Path, endpoint: str) -> None:
    """Refuse to bind a socket file that a live server is listening on.

    ZeroMQ would silently unlink it and bind anew, leaving the other server unreachable.
    A socket file nobody listens on (left by a killed server) is fine to replace.
    """
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(socket_path))
    except OSError:
        return  # no file, or nobody listening
    finally:
        probe.close()
    raise LatticeError(
        Code.INVALID_ARGUMENT,
        f"another server is already listening on {endpoint}; stop it first "
        f"(lattice supervisor status) or choose another endpoint",
    )


def curve_key(text: str, refusal: str) -> bytes:
    """``text`` as a CURVE key (40 Z85 characters for 32 bytes), or INVALID_ARGUMENT
    with ``refusal`` (one sentence naming the variable and what to do)."""
    from zmq.utils import z85  # only where a key is given: the CLI's start stays light

    try:
        valid = len(z85.decode(text.encode("ascii"))) == 32
    except (ValueError, KeyError, UnicodeEncodeError):  # z85 says KeyError for a bad char
        valid = False
    if not valid:
        raise LatticeError(Code.INVALID_ARGUMENT, refusal)
    return text.encode("ascii")


def check_tcp_endpoint(endpoint: str, *, curve: bool) -> None:
    """Refuse a ``tcp://`` address other than loopback unless ``curve``: CURVE encrypts
    it and an allow-list of client keys decides who may connect."""
    if not endpoint.startswith("tcp://") or curve:
        return
    import ipaddress

    host = endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a host name or interface name ('*', 'eth0'): not provably local
    if not loopback:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"refusing to listen on {endpoint}: a non-loopback TCP address needs CURVE "
            f"(set LATTICE_CURVE_SECRET_KEY and LATTICE_CURVE_CLIENTS, a folder of the "
            f"public *.key certificates of the clients allowed in), or listen on "
            f"tcp://127.0.0.1:PORT",
        )
