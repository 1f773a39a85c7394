"""The node side of a run on a Ray cluster: one attempt's workspace, process and output
(:class:`NodeAttempt`), and the host of a board's attempts on a node (:class:`NodeHost`).

Both are plain Python (no Ray import), so that their logic is tested on its own;
:mod:`._remote` wraps :class:`NodeHost` as a named, detached, threaded Ray actor, one
per node per board. An attempt's methods are called concurrently (output, wait and stop
at once), so its shared state is under one condition variable.

Why one host per node and not an actor per attempt: Ray starts an actor as a new
Python process that imports Ray and this module, 1 to 3 s of CPU on a node, which
was 90% of Run -> running. A host is started once per node (per board) and spawns
each attempt as a plain process group, so an attempt costs a few calls. What the actor
per attempt gave is kept another way: the supervisor finds a dead supervisor's
attempts by listing the namespace's hosts and asking each what it hosts; a node's
death still fails every pending call to its host (``RayActorError``: ``node_lost``);
and the resources an attempt reserves are a placement group, not an actor's.

On the node, per board (a Ray namespace): a bare cache repository that receives the
run's commit as an incremental bundle (:mod:`._bundle`) and holds one worktree per
attempt, and a folder per attempt for the files that live on the supervisor's side
(result file, prompt, outputs). Everything git does here goes through
:func:`lattice_workers.actors._keep.git` (no hooks, no filters of the worker's).

What if the host dies (node lost, ``ray.kill``): each worker runs in its own process
group, watched by a guard process in a session of its own that holds a pipe from the
host. The pipe's end without the word ``done`` means the host is gone: the guard sends
TERM to the group, waits the grace, then KILL. So no worker outlives its host, however
the host ends. What a dead host left on the disk (worktrees, folders) is swept by the
next host of the board that starts on a machine sharing that disk: each host holds a
lock file for its life (``hosts/<node>.lock``), and each attempt's folder names its
host, so a folder whose host's lock is free is a dead host's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lattice_workers.actors._keep import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_TOTAL_BYTES,
    KeepError,
    git,
    keep_work,
    not_kept,
)
from lattice_workers.actors._process_group import kill_group
from lattice_workers.executors._shim import FOLDER, read_calls, write_shim
from lattice_workers.executors.ray._bundle import has_commit, make_bundle, receive_bundle

#: Where a node keeps its cache repositories and workspaces, unless ``LATTICE_RAY_DIR``
#: (in the node's environment) says otherwise.
DEFAULT_NODE_DIR = Path("~/.cache/lattice-workers/ray")
#: Bytes of output held for the supervisor at most; past it the worker's pipe fills
#: and it waits (the back-pressure a local run's log has too).
MAX_BUFFERED = 16 * 1024 * 1024
#: Bytes returned by one :meth:`NodeAttempt.read_output`.
READ_CHUNK = 1024 * 1024
#: The result file's bound (SPEC section 2) plus one byte, so the supervisor sees "too big".
RESULT_READ = 64 * 1024 + 1
#: Outputs brought back at most (bytes, files); more is left out and said.
OUTPUTS_MAX_BYTES = 50 * 1024 * 1024
OUTPUTS_MAX_FILES = 1000
#: Cached commits named to the supervisor as a bundle's possible prerequisites.
CACHE_TIPS = 32
#: Variables whose value is a supervisor-side path the node replaces with its own.
RESULT_VAR = "LATTICE_RESULT_FILE"
OUTPUT_VAR = "LATTICE_OUTPUT_DIR"
PROMPT_VAR = "LATTICE_PROMPT_FILE"
REPORT_VAR = "LATTICE_REPORT_DIR"
#: In an attempt's folder: the id of the node whose host made it.
HOST_FILE = "host"
#: The methods of an attempt a supervisor calls through its host (:meth:`NodeHost.call`).
ATTEMPT_CALLS = frozenset(
    {"start", "read_output", "wait", "signal_group", "stop", "files", "keep", "describe"}
)

_GUARD = r"""
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
said = sys.stdin.buffer.read()
if said.startswith(b"done"):
    sys.exit(0)
def gone():
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
try:
    os.killpg(pgid, signal.SIGTERM)
except ProcessLookupError:
    sys.exit(0)
end = time.monotonic() + grace
while time.monotonic() < end and not gone():
    time.sleep(0.1)
try:
    os.killpg(pgid, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


def node_dir() -> Path:
    return Path(os.environ.get("LATTICE_RAY_DIR") or DEFAULT_NODE_DIR).expanduser()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The cache repository to ourselves (attempts of one node share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class NodeAttempt:
    """One attempt's part on a node: its worktree, its process, its output."""

    def __init__(
        self, namespace: str, name: str, node_id: str = "", base: str | None = None,
        host: str = "",
    ):
        self.namespace = namespace
        self.name = name
        self.node_id = node_id
        #: The host that made it (its lock file's name): the node's id, unless a host
        #: was made for this attempt alone (the benchmark's baseline).
        self.host = host or node_id
        root = Path(base).expanduser() if base else node_dir()
        self.home = root / _safe(namespace)
        self.cache = self.home / "cache.git"
        self.dir = self.home / "runs" / _safe(name)
        self.worktree = self.dir / "work"
        self.run_id = ""
        self.attempt = 0
        self.commit = ""
        self._cond = threading.Condition()
        self._buf = bytearray()
        self._buf_start = 0  # the absolute offset of _buf[0]
        self._eof = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._guard: subprocess.Popen[bytes] | None = None
        self._returncode: int | None = None
        self._stopped = False

    # ------------------------------------------------------------------ workspace

    def describe(self) -> dict[str, Any]:
        """What a restarted supervisor needs to settle this attempt."""
        with self._cond:
            return {
                "name": self.name,
                "node": self.node_id,
                "run_id": self.run_id,
                "attempt": self.attempt,
                "commit": self.commit,
                "location": str(self.worktree),
                "started": self._proc is not None,
                "returncode": self._returncode,
            }

    def cached_tips(self) -> list[str]:
        """Commits the node's cache holds, newest first (a bundle's prerequisites)."""
        if not (self.cache / "HEAD").exists():
            return []
        out = git(
            self.cache, "for-each-ref", "--sort=-committerdate", f"--count={CACHE_TIPS}",
            "--format=%(objectname)", "refs/cache/",
        ).stdout.decode()
        return out.split()

    def prepare(self, run_id: str, commit: str, bundle: bytes | None = None) -> dict[str, Any]:
        """A worktree at ``commit``; ``{"missing": tips}`` when the cache lacks it and
        no bundle came (the supervisor then sends one that leaves ``tips`` out)."""
        self.run_id, self.commit = run_id, commit
        lock = self.home / "cache.lock"
        with _locked(lock):
            if not (self.cache / "HEAD").exists():
                self.cache.mkdir(parents=True, exist_ok=True)
                git(self.cache, "init", "--bare", "-q")
            if not has_commit(self.cache, commit):
                if bundle is None:
                    return {"missing": self.cached_tips()}
                receive_bundle(self.cache, bundle, f"refs/cache/{commit}")
            elif git(self.cache, "show-ref", "--verify", "-q", f"refs/cache/{commit}",
                     check=False).returncode != 0:
                git(self.cache, "update-ref", f"refs/cache/{commit}", commit)
            if self.dir.exists():  # a previous attempt of this name died half-way
                self._remove_worktree()
            self.dir.mkdir(parents=True)
            # Under the lock: a sweeping host never sees this folder without its host.
            (self.dir / HOST_FILE).write_text(self.host)
            git(self.cache, "worktree", "add", "-q", "--detach", str(self.worktree), commit)
        return {"location": str(self.worktree), "node": self.node_id}

    # ------------------------------------------------------------------ process

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        attempt: int,
        grace_seconds: float,
        local_roots: Sequence[str] = (),
        files: Mapping[str, bytes] | None = None,
        stdin: bytes | None = None,
        local_outputs: Sequence[str] = (),
        board: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Spawn the worker in the worktree, in a new session, with ``env`` rewritten
        for this node (see :meth:`_node_env`). Raises ``FileNotFoundError`` naming the
        node when its program is not there.

        ``stdin``: what it reads (an agent's prompt), from a file as locally (a pipe
        could block this thread until the worker reads). ``local_outputs``: the
        supervisor's output folder as it may be spelled (as given, resolved); each is
        replaced by this node's wherever it occurs in argv and the environment (an
        agent's sandbox is told of it inside larger arguments, as codex's
        ``writable_roots=[...]``). ``board``: the run's task for the worker's
        ``lattice`` (:mod:`lattice_workers.executors._shim`), put first on its
        ``PATH``: a ``lattice`` of the node's would read the worktree as the board."""
        if not self.worktree.is_dir():
            raise RuntimeError("prepare() first: the attempt has no worktree on this node")
        self.attempt = attempt
        if OUTPUT_VAR in env:  # first: the output folder may be inside the project
            outputs = str(self.dir / "outputs")
            for spelled in sorted({o for o in local_outputs if o}, key=len, reverse=True):
                argv = [arg.replace(spelled, outputs) for arg in argv]
                env = {k: v.replace(spelled, outputs) for k, v in env.items()}
        env = self._node_env(env, local_roots, files or {})
        if board is not None:
            shim = write_shim(self.dir / FOLDER, dict(board))
            env["PATH"] = os.pathsep.join([str(shim), env["PATH"]])
        argv = [_remap(arg, local_roots, str(self.worktree)) for arg in argv]
        program = argv[0]
        if shutil.which(program, path=env.get("PATH") or os.defpath) is None and not (
            os.sep in program and os.access(self.worktree / program, os.X_OK)
        ):
            raise FileNotFoundError(
                2, f"{program!r} is not installed on Ray node {self.node_id or '?'} "
                "(install it there, or run this worker locally: \"executor\": \"local\")",
                program,
            )
        stdin_file: Any = subprocess.DEVNULL
        if stdin is not None:
            (self.dir / "stdin").write_bytes(stdin)
            stdin_file = open(self.dir / "stdin", "rb")  # noqa: SIM115 (closed below)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            proc = subprocess.Popen(
                argv, cwd=self.worktree, env=env, stdin=stdin_file,
                stdout=write_fd, stderr=write_fd, start_new_session=True,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
            if stdin is not None:
                stdin_file.close()
        self._proc = proc
        self._guard = subprocess.Popen(
            [sys.executable, "-c", _GUARD, str(proc.pid), str(grace_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        threading.Thread(target=self._copy_output, args=(read_fd,), daemon=True).start()
        threading.Thread(target=self._reap, daemon=True).start()
        return {"node": self.node_id, "pid": proc.pid}

    def _node_env(
        self, env: Mapping[str, str], roots: Sequence[str], files: Mapping[str, bytes]
    ) -> dict[str, str]:
        """The supervisor's environment for the worker, its paths made this node's:
        the project and the workspace become the worktree, the result file, prompt,
        outputs and log live in the attempt's folder, ``LATTICE_NODE`` is added."""
        wt = str(self.worktree)
        out = {k: _remap(v, roots, wt) for k, v in env.items()}
        out["LATTICE_WORKTREE"] = wt
        out["LATTICE_ROOT"] = wt
        out["PWD"] = wt  # the folder it runs in, as a local worker's PWD says
        out["LATTICE_NODE"] = self.node_id
        # The node's Python, which has lattice-workers (the supervisor's may not exist
        # here): what a script runs agents with (`$LATTICE_PYTHON -m lattice_workers...`).
        out["LATTICE_PYTHON"] = sys.executable
        out["LATTICE_LOG"] = str(self.dir / "output.log")
        out[RESULT_VAR] = str(self.dir / "result.json")
        if OUTPUT_VAR in env:
            (self.dir / "outputs").mkdir(exist_ok=True)
            out[OUTPUT_VAR] = str(self.dir / "outputs")
        if REPORT_VAR in env:
            # Outside the worktree, as locally (the project's .lattice/reports): a
            # report is not the worker's work; it comes back into the supervisor's.
            (self.dir / "reports").mkdir(exist_ok=True)
            out[REPORT_VAR] = str(self.dir / "reports")
        for var, content in files.items():
            path = self.dir / f"{var.lower()}"
            path.write_bytes(content)
            out[var] = str(path)
        out["PATH"] = node_path(out.get("PATH", ""))
        return out

    def _copy_output(self, fd: int) -> None:
        """Pipe -> buffer (and the node-side log), until every writer closed the pipe."""
        try:
            with open(self.dir / "output.log", "ab") as log:
                while True:
                    with self._cond:
                        while len(self._buf) >= MAX_BUFFERED:
                            self._cond.wait()
                    data = os.read(fd, 64 * 1024)
                    if not data:
                        break
                    log.write(data)
                    with self._cond:
                        self._buf += data
                        self._cond.notify_all()
        except OSError:
            pass
        finally:
            os.close(fd)
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _reap(self) -> None:
        assert self._proc is not None
        code = self._proc.wait()
        with self._cond:
            self._returncode = code
            self._cond.notify_all()

    def read_output(self, offset: int, wait_seconds: float) -> tuple[int, bytes, bool]:
        """What the worker wrote from ``offset`` on (everything before it is
        acknowledged and dropped here): ``(offset, data, at_end)``. Waits up to
        ``wait_seconds`` for something new."""
        with self._cond:
            if offset > self._buf_start:
                del self._buf[: offset - self._buf_start]
                self._buf_start = offset
                self._cond.notify_all()
            deadline = time.monotonic() + wait_seconds
            while not self._buf and not self._eof:
                left = deadline - time.monotonic()
                if left <= 0 or self._proc is None:
                    break
                self._cond.wait(left)
            data = bytes(self._buf[:READ_CHUNK])
            return self._buf_start, data, self._eof and len(data) == len(self._buf)

    def wait(self, wait_seconds: float) -> int | None:
        """The worker's exit status (negative: the signal), or None if it still runs
        after ``wait_seconds``."""
        with self._cond:
            self._cond.wait_for(lambda: self._returncode is not None, wait_seconds)
            return self._returncode

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the worker's process group; whether any process got it."""
        if self._proc is None:
            return False
        if signum in (signal.SIGTERM, signal.SIGKILL):
            self._stopped = True
        return kill_group(self._proc.pid, signal.Signals(signum))

    def stop(self, grace_seconds: float) -> int | None:
        """TERM to the group, the grace, KILL; the exit status."""
        if self._proc is None:
            return None
        self.signal_group(signal.SIGTERM)
        code = self.wait(grace_seconds)
        self.signal_group(signal.SIGKILL)
        return code if code is not None else self.wait(10.0)

    # ------------------------------------------------------------------ the end

    def files(self) -> dict[str, Any]:
        """What the attempt leaves beside its work: the result file's first bytes (None
        when there is none), its outputs, its reports and its ``lattice`` calls
        (:mod:`lattice_workers.executors._shim`). Kills what is left of the group
        first."""
        if self._proc is not None:
            kill_group(self._proc.pid, signal.SIGKILL)
        out: dict[str, Any] = {"result": None}
        result = self.dir / "result.json"
        if result.is_file() and not result.is_symlink():
            with open(result, "rb") as f:
                out["result"] = f.read(RESULT_READ)
        out["outputs"], out["outputs_left_out"] = _outputs(self.dir / "outputs")
        out["reports"], _ = _outputs(self.dir / "reports")
        out["lattice"] = read_calls(self.dir / FOLDER)
        return out

    def keep(
        self,
        *,
        actor: str,
        task: str,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    ) -> dict[str, Any] | None:
        """The attempt's kept work: ``{"changes": ..., "bundle": bytes | None}``, the
        snapshot made here as :func:`~lattice_workers.actors._keep.keep_work` makes it
        locally, shipped as a bundle that leaves out the run's commit (the supervisor's
        repository has it). None when the attempt had no worktree."""
        if not self.worktree.is_dir() or not self.run_id:
            return None
        if self._proc is not None:
            kill_group(self._proc.pid, signal.SIGKILL)
        try:
            changes = keep_work(
                workspace=self.worktree, repo=self.cache, run_id=self.run_id,
                attempt=self.attempt, base_sha=self.commit, actor=actor, task=task,
                max_file_bytes=max_file_bytes, max_total_bytes=max_total_bytes,
            )
        except (KeepError, OSError) as err:
            return {"changes": not_kept(err)}
        bundle = None
        if changes.ref and changes.snapshot_sha:
            bundle = make_bundle(self.cache, changes.snapshot_sha, [self.commit])
            git(self.cache, "update-ref", "-d", changes.ref)
        return {"changes": changes.to_event(), "bundle": bundle}

    def release(self) -> None:
        """Remove the worktree and the attempt's folder; tell the guard all is well."""
        if self._proc is not None and self._returncode is None:
            self.stop(0)
        elif self._proc is not None:
            # The leader is gone, its group may not be: what is left there would hold
            # the output pipe, and this host's copying thread with it, for the host's
            # whole life.
            kill_group(self._proc.pid, signal.SIGKILL)
        if self._guard is not None and self._guard.stdin is not None:
            with contextlib.suppress(OSError):
                self._guard.stdin.write(b"done")
                self._guard.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._guard.wait(5)
        with _locked(self.home / "cache.lock"):
            self._remove_worktree()

    def _remove_worktree(self) -> None:
        if self.worktree.exists():
            git(self.cache, "worktree", "remove", "--force", str(self.worktree), check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        git(self.cache, "worktree", "prune", check=False)


class NodeHost:
    """Every attempt of one board on one node: made, called and released by name.

    Holds ``hosts/<node>.lock`` for its life (see the module's docstring); on start it
    sweeps what dead hosts left. Thread-safe: Ray calls it from many threads at once.
    """

    def __init__(
        self, namespace: str, node_id: str, base: str | None = None, ident: str = ""
    ) -> None:
        self.namespace = namespace
        self.node_id = node_id
        self.base = base
        #: Names its lock file and its attempts' folders: the node's id, one host per
        #: node; another name only for a host made for one attempt (the bench's baseline).
        self.ident = ident or node_id
        root = Path(base).expanduser() if base else node_dir()
        self.home = root / _safe(namespace)
        self._attempts: dict[str, NodeAttempt] = {}
        self._lock = threading.Lock()
        self._held = _hold(self.home / "hosts" / f"{_safe(self.ident)}.lock")
        self.swept = sweep_gone(self.home, self.ident)

    def ready(self) -> str:
        """The node's id, once the host is up (the supervisor's first call)."""
        return self.node_id

    def prepare(
        self, name: str, run_id: str, commit: str, bundle: bytes | None = None
    ) -> dict[str, Any]:
        """:meth:`NodeAttempt.prepare` of the attempt ``name`` (made on its first call)."""
        with self._lock:
            attempt = self._attempts.get(name)
            if attempt is None:
                attempt = NodeAttempt(
                    self.namespace, name, self.node_id, self.base, host=self.ident
                )
                self._attempts[name] = attempt
        return attempt.prepare(run_id, commit, bundle)

    def call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """The attempt ``name``'s ``method`` (one of :data:`ATTEMPT_CALLS`)."""
        if method not in ATTEMPT_CALLS:
            raise ValueError(f"{method!r} is not a call an attempt answers")
        with self._lock:
            attempt = self._attempts.get(name)
        if attempt is None:
            raise LookupError(f"no attempt {name} on Ray node {self.node_id}")
        return getattr(attempt, method)(*args, **kwargs)

    def release(self, name: str) -> bool:
        """End the attempt ``name``: its group killed if it still runs, its worktree
        and folder removed. False when this host has no such attempt."""
        with self._lock:
            attempt = self._attempts.pop(name, None)
        if attempt is None:
            return False
        attempt.release()
        return True

    def missing(self, programs: list[str], path: str) -> list[str]:
        """Those of ``programs`` a worker with ``path`` (the supervisor's PATH for it)
        would not find on this node."""
        found = node_path(path) or os.defpath
        return [program for program in programs if shutil.which(program, path=found) is None]

    def attempts(self) -> list[dict[str, Any]]:
        """What each hosted attempt is (:meth:`NodeAttempt.describe`): what a restarted
        supervisor settles."""
        with self._lock:
            hosted = list(self._attempts.values())
        return [attempt.describe() for attempt in hosted]


def _hold(path: Path) -> int:
    """An exclusive lock on ``path``, held as long as this process lives (the fd)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another host of this board runs on this node ({path})") from None
    return fd


def _host_is_gone(home: Path, node: str) -> bool:
    """Whether the host of ``node`` is dead: its lock file is free (or never was)."""
    path = home / "hosts" / f"{_safe(node)}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def sweep_gone(home: Path, me: str) -> list[str]:
    """Remove the folders (and worktrees) of attempts whose host is gone: a node that
    died mid-run, then came back, still has them on its disk. Called by a host as it
    starts (``me``: its ident), so folders that name it are a previous host's. The
    folders removed."""
    runs = home / "runs"
    if not runs.is_dir():
        return []
    removed = []
    with _locked(home / "cache.lock"):
        for folder in sorted(runs.iterdir()):
            try:
                node = (folder / HOST_FILE).read_text().strip()
            except OSError:
                node = ""  # made before hosts named themselves, or half made
            if node and node != me and not _host_is_gone(home, node):
                continue
            work = folder / "work"
            if work.exists() and (home / "cache.git" / "HEAD").exists():
                git(home / "cache.git", "worktree", "remove", "--force", str(work), check=False)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
        if removed and (home / "cache.git" / "HEAD").exists():
            git(home / "cache.git", "worktree", "prune", check=False)
    return removed


def node_path(path: str) -> str:
    """The supervisor's PATH for a worker, then the node's own: a program installed on
    the node where the supervisor's machine has it elsewhere is still found."""
    extra = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    have = [p for p in path.split(os.pathsep) if p]
    return os.pathsep.join(have + [p for p in extra if p not in have])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120] or "_"


def _remap(value: str, roots: Sequence[str], to: str) -> str:
    """``value`` with a supervisor-side folder at its start replaced by ``to``."""
    for root in roots:
        if root and (value == root or value.startswith(root.rstrip("/") + "/")):
            return to + value[len(root.rstrip("/")) :]
    return value


def _outputs(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """Regular files under ``folder`` (relative path -> bytes), within the bounds."""
    found: dict[str, bytes] = {}
    left_out: list[str] = []
    total = 0
    if not folder.is_dir():
        return found, left_out
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        size = path.stat().st_size
        if len(found) >= OUTPUTS_MAX_FILES or total + size > OUTPUTS_MAX_BYTES:
            left_out.append(rel)
            continue
        found[rel] = path.read_bytes()
        total += size
    return found, left_out
