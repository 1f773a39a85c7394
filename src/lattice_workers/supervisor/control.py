"""Starting, finding and stopping the supervisor from a client. Imports no Trio.

``start`` launches ``python -m lattice_workers supervisor run`` in a new session and reads
one line from a pipe the supervisor writes when it is serving (or has failed): it
returns exactly when the supervisor answers, without polling. ``stop`` sends
``Shutdown`` and waits on a pidfd until the process is gone.

Every worker command passes through :func:`connect`, which needs only a lock probe
when the supervisor runs; ``subprocess`` is imported by ``start`` alone.

``LATTICE_ENDPOINT`` naming another endpoint than the board's own socket (a ``tcp://``
listener, perhaps another machine's) makes the CLI a client of that endpoint alone
(:func:`elsewhere`): it starts no supervisor here, since one started here would not
listen there, and ``status``, ``stop`` and ``reload`` act on the supervisor there.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol import default_endpoint
from lattice_workers.protocol._endpoint import curve_key, ipc_path
from lattice_workers.protocol.client import Client
from lattice_workers.store._locate import run_dir
from lattice_workers.supervisor._pidlock import LOCK_NAME, SERVING_NAME, is_held, read_holder

if TYPE_CHECKING:
    import subprocess

#: How long ``start`` waits for a new supervisor to answer.
START_TIMEOUT = 30.0
#: What marks a run's processes for the kill by environment (recovery, the sweep of
#: ended runs): a supervisor started from a worker's shell must not carry them.
RUN_VARIABLES = ("LATTICE_RUN_ID", "LATTICE_ATTEMPT")


def endpoint_for(root: Path) -> str:
    """The endpoint clients use: ``LATTICE_ENDPOINT`` or the board's ipc socket."""
    return os.environ.get("LATTICE_ENDPOINT") or default_endpoint(root)


def elsewhere(root: Path) -> str | None:
    """``LATTICE_ENDPOINT`` when it names another endpoint than the board's own socket
    (an ``ipc://`` path is compared as the file it names, through links)."""
    configured = os.environ.get("LATTICE_ENDPOINT")
    if not configured:
        return None
    own = default_endpoint(root)
    if configured == own:
        return None
    given, mine = ipc_path(configured), ipc_path(own)
    if given is not None and mine is not None and os.path.realpath(given) == os.path.realpath(mine):
        return None
    return configured


def client_for(root: Path, *, timeout: float = 10.0, here: bool = False) -> Client:
    """A client of :func:`endpoint_for` (``here``: of the board's own socket);
    CURVE-encrypted on a ``tcp://`` endpoint when ``LATTICE_CURVE_SERVER_KEY`` and
    ``LATTICE_CURVE_CLIENT_CERT`` are set (CURVE guards TCP listeners only: the
    ``ipc://`` socket has its file modes)."""
    endpoint = default_endpoint(root) if here else endpoint_for(root)
    server_key, keypair = None, None
    if endpoint.startswith("tcp://"):
        server_key, keypair = curve_client_keys(os.environ)
    return Client(endpoint, timeout=timeout, curve_server_key=server_key, curve_keypair=keypair)


def curve_client_keys(
    environ: Mapping[str, str],
) -> tuple[bytes | None, tuple[bytes, bytes] | None]:
    """The server's public key and this client's key pair, from the environment.

    ``LATTICE_CURVE_SERVER_KEY``: the supervisor's public key (40 Z85 characters).
    ``LATTICE_CURVE_CLIENT_CERT``: this client's secret certificate, a ``*.key_secret``
    file as ``zmq.auth.create_certificates`` writes it (its public ``*.key`` twin goes
    in the supervisor's ``LATTICE_CURVE_CLIENTS`` folder). Both or neither.
    """
    server = environ.get("LATTICE_CURVE_SERVER_KEY") or None
    cert = environ.get("LATTICE_CURVE_CLIENT_CERT") or None
    if server is None and cert is None:
        return None, None
    if server is None or cert is None:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            "a CURVE client needs both LATTICE_CURVE_SERVER_KEY (the supervisor's public "
            "key, 40 Z85 characters) and LATTICE_CURVE_CLIENT_CERT (this client's secret "
            "certificate, a *.key_secret file); set both or neither",
        )
    from zmq.auth.certs import load_certificate

    server_key = curve_key(
        server,
        "LATTICE_CURVE_SERVER_KEY is not a CURVE public key (40 Z85 characters); "
        "copy the supervisor's public key into it",
    )
    try:
        public, secret = load_certificate(cert)
    except (OSError, ValueError) as exc:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"cannot read the CURVE client certificate {cert}: {exc}; "
            "LATTICE_CURVE_CLIENT_CERT must name a *.key_secret certificate file",
        ) from None
    if secret is None:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"{cert} holds no secret key; LATTICE_CURVE_CLIENT_CERT must name the "
            "*.key_secret file, not its public *.key twin",
        )
    return server_key, (public, secret)


def is_running(board_dir: Path) -> bool:
    """Whether a live process holds this board's supervisor lock (no socket traffic)."""
    return is_held(board_dir)


def check_reachable(root: Path, board_dir: Path) -> None:
    """Raise a clear error when the running supervisor's socket file is gone.

    A worker may delete ``.lattice/run/``; the supervisor, which still holds the
    board's lock, then lets its runs end and exits (see ``supervisor/_watch.py``).
    Until then no second one may start, and a client would wait on a socket that
    does not exist: say so at once instead.
    """
    path = ipc_path(default_endpoint(root))
    if path is None or path.exists():
        return
    folder = run_dir(board_dir)
    pid = read_holder(folder / LOCK_NAME)
    if pid is None:  # a start between its lock and its pid file? a moment later
        time.sleep(0.05)
        pid = read_holder(folder / LOCK_NAME)
    if path.exists() or (pid is not None and read_holder(folder / SERVING_NAME) != pid):
        return  # it is starting: its socket comes once recovery is done
    who = f"the supervisor (pid {pid})" if pid else "the supervisor"
    raise LatticeError(
        Code.SUPERVISOR_UNAVAILABLE,
        f"{who} of this board lost its socket {path} (was .lattice/run/ deleted?); it "
        "accepts no new runs, lets its live ones end and then exits: run the command "
        "again once it has stopped",
        details={"pid": pid} if pid else None,
    )


def status(
    root: Path, board_dir: Path, *, timeout: float = 2.0, here: bool = False
) -> dict[str, Any] | None:
    """Hello's answer as a dict, or None when no supervisor runs for this board (or,
    when the CLI talks :func:`elsewhere`, none answers there within ``timeout``).
    ``here``: this board's own supervisor, whatever ``LATTICE_ENDPOINT`` says."""
    remote = None if here else elsewhere(root)
    if remote is None and not is_running(board_dir):
        return None
    if remote is None:
        check_reachable(root, board_dir)
    from lattice_workers.protocol._messages import Hello, HelloReply

    try:
        with client_for(root, timeout=timeout, here=here) as client:
            reply = client.request(Hello(client="lattice-cli"))
    except LatticeError as err:
        if remote is None or err.code != Code.SUPERVISOR_UNAVAILABLE:
            raise
        return None
    assert isinstance(reply, HelloReply)
    return {
        "pid": reply.pid,
        "socket": reply.socket,
        "root": reply.root,
        "version": reply.server_version,
        "protocol_version": reply.protocol_version,
        "uptime_seconds": round(time.time() - reply.started_at, 3),
    }


def start(
    root: Path, board_dir: Path, *, listen: list[str] | None = None, timeout: float = START_TIMEOUT
) -> dict[str, Any]:
    """Start this board's supervisor in the background unless it runs; its status."""
    current = status(root, board_dir, here=True)
    if current is not None:
        return {**current, "started": False}
    import subprocess  # here: a client that finds the supervisor running never needs it

    read_fd, write_fd = os.pipe()
    log_dir = board_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "lattice_workers",
        "supervisor",
        "run",
        "--ready-fd",
        str(write_fd),
    ]
    for endpoint in listen or []:
        argv += ["--listen", endpoint]
    env = dict(os.environ, LATTICE_ROOT=str(root))
    for name in RUN_VARIABLES:  # a supervisor belongs to no run
        env.pop(name, None)
    with open(log_dir / "supervisor.stderr", "ab") as stderr:
        proc = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    os.close(write_fd)
    try:
        line = _read_line(read_fd, timeout)
    finally:
        os.close(read_fd)
    if line.startswith("ok "):
        return {**(status(root, board_dir, here=True) or {}), "started": True}
    if line.startswith("error ") and "already running" in line:
        # Another start won the race: that one is the supervisor now.
        current = status(root, board_dir, timeout=timeout, here=True)
        if current is not None:
            return {**current, "started": False}
    detail = line.removeprefix("error ").strip() or _exit_detail(proc)
    if line.startswith("error "):
        # It refused to start (a bad config, say) and is exiting: once this says so,
        # no process of it is left (on a busy machine its exit took a moment).
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    raise LatticeError(
        Code.SUPERVISOR_UNAVAILABLE,
        f"the supervisor did not start: {detail} (see {log_dir / 'supervisor.log'})",
    )


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ""
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            break  # the child exited without a word
        data += chunk
    return data.decode(errors="replace").strip()


def _exit_detail(proc: subprocess.Popen[bytes]) -> str:
    code = proc.poll()
    return "it exited at once" if code is not None else "no answer in time"


def connect(root: Path, board_dir: Path) -> Client:
    """The client of a worker command: this board's supervisor, started on demand, or
    the one :func:`elsewhere` names, as it is."""
    if elsewhere(root) is None:
        ensure_running(root, board_dir)
    return client_for(root)


def ensure_running(root: Path, board_dir: Path) -> None:
    """Start this board's supervisor on demand, unless ``LATTICE_NO_AUTOSTART=1``."""
    if is_running(board_dir):
        check_reachable(root, board_dir)
        return
    if os.environ.get("LATTICE_NO_AUTOSTART") == "1":
        raise LatticeError(
            Code.SUPERVISOR_UNAVAILABLE,
            "no supervisor is running for this board and LATTICE_NO_AUTOSTART=1; "
            "start one with `lattice supervisor start`",
        )
    info = start(root, board_dir)
    if info.get("started"):
        # Never silently: a process now runs that the user did not start by name.
        print(
            f"lattice-workers: started supervisor pid {info.get('pid')} for {root} "
            "(`lattice-workers supervisor stop` stops it)",
            file=sys.stderr,
            flush=True,
        )


def stop(root: Path, board_dir: Path, *, drain: bool = False, timeout: float = 120.0) -> int | None:
    """Ask the supervisor to stop and wait until its process is gone; its pid or None.

    One reached :func:`elsewhere` is waited for only when it is this board's own (its
    pid holds the lock here); another machine's process cannot be watched from here.
    """
    from lattice_workers.protocol._messages import Shutdown

    if elsewhere(root) is None:
        if not is_running(board_dir):
            return None
        pid = read_holder(run_dir(board_dir) / LOCK_NAME)
        pidfd = _pidfd(pid)
    else:
        info = status(root, board_dir)
        if info is None:
            return None
        pid = int(info["pid"])
        ours = (
            info.get("root") == str(Path(root).resolve())
            and is_running(board_dir)
            and read_holder(run_dir(board_dir) / LOCK_NAME) == pid
        )
        pidfd = _pidfd(pid) if ours else None
    try:
        path = ipc_path(default_endpoint(root))
        if elsewhere(root) is None and pid is not None and path is not None and not path.exists():
            # Its socket is gone (see check_reachable): it already drains; a stop
            # without --drain is a signal, which ends its runs now.
            if not drain:
                os.kill(pid, signal.SIGTERM)
        else:
            with client_for(root) as client:
                client.request(Shutdown(drain=drain))
        if pidfd is not None:
            ready, _, _ = select.select([pidfd], [], [], timeout)
            if not ready:
                raise LatticeError(
                    Code.TIMEOUT, f"the supervisor (pid {pid}) did not stop within {timeout:g}s"
                )
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return pid


def _pidfd(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
