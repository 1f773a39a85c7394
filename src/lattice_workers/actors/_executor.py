"""Where a worker runs: the seam between an attempt and the machine that runs it.

An :class:`~lattice_workers.actors._attempt.Attempt` decides *what* runs and writes
the board; an :class:`Executor` knows *where*: it prepares a workspace at a commit,
starts the worker in it, signals its group, waits for it, copies its output into the
run's log, keeps its work and gives the workspace back. Above this seam nothing
assumes a local pid or a local path: a workspace is named by a string
(:attr:`Workspace.location`) and an :class:`Execution` may have no pid.

:class:`LocalExecutor` is the first implementation: a workspace on this machine, a
repository of its own that borrows the project's objects
(:class:`~lattice_workers.actors._worktree.Worktrees`), reused from a pool
(:class:`~lattice_workers.actors._pool.WorkspacePool`), a child process in a new
session (:class:`~lattice_workers.actors._child.Child`), its output through a pipe
into the log (:class:`~lattice_workers.actors._logsink.LogSink`), a cgroup per attempt
where the system allows one, and the sweep for what left the group.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from lattice_workers.actors._cgroup import RunCgroups
from lattice_workers.actors._child import Child
from lattice_workers.actors._keep import KeepError, keep_work, not_kept
from lattice_workers.actors._logsink import LogSink, Tap
from lattice_workers.actors._pool import WorkspacePool
from lattice_workers.actors._process_group import kill_group, process_start_time
from lattice_workers.actors._worktree import Worktrees

log = logging.getLogger("lattice_workers.supervisor.run")

#: How long an attempt's end waits at most for the scan for its leftovers (that scan
#: has its own bound, ``_settle.KILL_SECONDS``).
SWEEP_WAIT_SECONDS = 15.0


class WorkerLost(Exception):
    """The machine that ran the worker is gone (a cluster node died or stopped
    answering): :meth:`Execution.wait` raises it, and the attempt ends as
    ``process_failed`` with reason ``node_lost``."""


@dataclass(frozen=True, slots=True)
class Workspace:
    """The folder a worker sees, named as its executor names it."""

    location: str


@dataclass(frozen=True, slots=True)
class Launch:
    """What to start: the program, its environment, where, and where its output goes."""

    argv: Sequence[str]
    env: Mapping[str, str]
    #: The workspace, or None for a worker that runs in the project itself.
    workspace: Workspace | None
    #: The run's log, open for writing; the executor copies the worker's output into
    #: a descriptor of its own (the caller closes this one).
    log_fd: int
    log_limit: int
    run_id: str
    attempt: int
    #: What the worker reads on stdin (an agent's prompt); None: ``/dev/null``.
    stdin: bytes | None = None
    #: Between the output pipe and the log (an agent's stream reader), or None.
    tap: Tap | None = None


class Execution(Protocol):
    """One started worker, until its end."""

    #: The process's id on this machine, for recovery; None where it has none here.
    pid: int | None
    #: With :attr:`pid`, names the process for good (a recycled pid differs).
    start_time: int | None

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has ended (negative: the signal), else None."""

    @property
    def log_truncated(self) -> bool:
        """Whether its log lost its middle to the size limit."""

    @property
    def log_cut(self) -> int | None:
        """Where the log's marker line is once its middle was dropped, else None."""

    async def run_output(self) -> None:
        """Copy its output into the log while it runs; returns at the output's end."""

    async def wait(self) -> int:
        """Wait until it exits; its status. Cancellable."""

    async def stop(self, grace_seconds: float) -> None:
        """TERM to its group, ``grace_seconds``, then KILL; returns once it exited."""

    async def close(self, *, stopped: bool) -> None:
        """After its exit: kill what is left of it, copy the rest of its output.

        ``stopped``: the supervisor stopped it; then nothing of it may be alive when
        this returns (bounded). Called once, shielded, by the attempt's end.
        """


class Executor(Protocol):
    """Where workers run (see the module docstring)."""

    def location_for(self, run_id: str, *, pool: str = "") -> str:
        """Where the workspace of ``run_id`` will be (named in ``process_started``
        before it exists); decided for good by the first call, which :meth:`prepare`
        then honours. ``pool``: which reused workspaces may serve ("" the shared
        ones; a worker's name, its own: see ``worktree_reuse``)."""

    async def prepare(self, run_id: str, commit: str, *, pool: str = "") -> Workspace:
        """A workspace at ``commit``, where :meth:`location_for` said; raises
        ``LatticeError`` when it cannot be made."""

    def start(self, launch: Launch) -> Execution:
        """Start the worker (blocking: called in a thread hop the attempt shares with
        its own writes). Raises ``OSError`` or ``ValueError`` when it cannot start."""

    async def keep(
        self,
        workspace: Workspace,
        *,
        run_id: str,
        attempt: int,
        base_sha: str,
        actor: str,
        task: str,
    ) -> dict[str, Any] | None:
        """Keep what the attempt changed (the ``changes`` of its terminal event)."""

    async def release(self, workspace: Workspace) -> None:
        """Give the workspace back (to its pool, or removed); a failure is logged, not
        raised. Only after :meth:`keep`: what it changed is gone after this."""


class LocalExecutor:
    """Workers on this machine, each in a workspace of the project's (see
    :mod:`~lattice_workers.actors._worktree`), reused through a
    :class:`~lattice_workers.actors._pool.WorkspacePool` of ``pool_size`` idle ones
    (``workers.worktree_pool``; 0: each run's is made and removed)."""

    def __init__(
        self,
        root: Path,
        worktrees: Worktrees,
        *,
        cgroups: RunCgroups | None = None,
        sweep_leftovers: Callable[[str, int], trio.Event | None] = lambda run_id, n: None,
        pool_size: int = 0,
    ) -> None:
        self.root = root
        self.worktrees = worktrees
        self.cgroups = cgroups
        self.sweep_leftovers = sweep_leftovers
        self.pool = WorkspacePool(worktrees, root, pool_size)

    def location_for(self, run_id: str, *, pool: str = "") -> str:
        return self.pool.location_for(run_id, pool)

    async def prepare(self, run_id: str, commit: str, *, pool: str = "") -> Workspace:
        return Workspace(str(await self.pool.prepare(run_id, commit, pool)))

    async def close(self, *, keep_pool: bool = False) -> None:
        """Remove the idle pooled workspaces, or leave them for the next start to adopt
        (``keep_pool``: ``workers.keep_pool_on_stop``); the supervisor stops."""
        await self.pool.close(keep=keep_pool)

    def start(self, launch: Launch) -> LocalExecution:
        cwd = launch.workspace.location if launch.workspace else str(self.root)
        argv = list(launch.argv)
        # The folder it runs in, whoever asked: a client's PWD names the client's folder.
        env = {**launch.env, "PWD": cwd}
        cgroups, key = self.cgroups, (launch.run_id, launch.attempt)
        entered = False
        if cgroups is not None and _shell_keeps(env):
            # Into its cgroup before its first instruction (RunCgroups.entering). The
            # shell would turn a failed exec into an exit 127: the checks exec makes
            # are made first, so that the start fails as Popen's would.
            _check_program(argv[0], env.get("PATH"), cwd)
            wrapped = cgroups.entering(*key, argv)
            entered, argv = wrapped is not argv, wrapped
        with contextlib.ExitStack() as stack:
            stdin_fd: int | None = None
            if launch.stdin is not None:
                # A file, not a pipe: a prompt larger than a pipe holds must not block
                # this thread until the worker reads it (or forever, if it never does).
                stdin = stack.enter_context(tempfile.TemporaryFile())
                stdin.write(launch.stdin)
                stdin.seek(0)
                stdin_fd = stdin.fileno()
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            try:
                child = Child.spawn(
                    argv, cwd=cwd, env=env, output_fd=write_fd, stdin_fd=stdin_fd
                )
            except BaseException:
                os.close(read_fd)
                if cgroups is not None:
                    cgroups.release({key})  # claimed by entering(), and empty
                raise
            finally:
                os.close(write_fd)  # the worker has its own copies (stdout, stderr)
        # Owned from here: whatever fails later, the attempt's end stops and reaps it.
        execution = LocalExecution(self, child, launch)
        if cgroups is not None and not entered:
            cgroups.join(*key, child.pid)
        try:
            execution.sink = LogSink(
                read_fd, os.dup(launch.log_fd), launch.log_limit, tap=launch.tap
            )
        except OSError:  # out of descriptors: the output is lost, the run goes on
            log.exception("run %s: cannot copy its output into its log", launch.run_id)
            os.close(read_fd)
        return execution

    async def keep(
        self,
        workspace: Workspace,
        *,
        run_id: str,
        attempt: int,
        base_sha: str,
        actor: str,
        task: str,
    ) -> dict[str, Any] | None:
        path = workspace.location
        try:
            kept = await trio.to_thread.run_sync(
                partial(
                    keep_work,
                    workspace=Path(path),
                    repo=self.root,
                    run_id=run_id,
                    attempt=attempt,
                    base_sha=base_sha,
                    actor=actor,
                    task=task,
                )
            )
        except (KeepError, OSError) as err:
            if isinstance(err, KeepError) and not await trio.to_thread.run_sync(
                os.path.isdir, path
            ):
                return None  # never made (the attempt failed before its worktree)
            log.warning("run %s: its work could not be kept: %s", run_id, err)
            return not_kept(err)
        return kept.to_event()

    async def release(self, workspace: Workspace) -> None:
        try:
            await self.pool.release(Path(workspace.location))
        except Exception:
            log.exception("could not give back the worktree %s", workspace.location)


class LocalExecution:
    """A worker process on this machine, its output pipe and its cgroup."""

    def __init__(self, executor: LocalExecutor, child: Child, launch: Launch) -> None:
        self._executor = executor
        self._child = child
        self._run_id = launch.run_id
        self._attempt = launch.attempt
        self.pid: int | None = child.pid
        self.start_time = process_start_time(child.pid)
        self.sink: LogSink | None = None

    @property
    def returncode(self) -> int | None:
        return self._child.returncode

    @property
    def log_truncated(self) -> bool:
        return self.sink is not None and self.sink.truncated

    @property
    def log_cut(self) -> int | None:
        sink = self.sink
        return sink.head if sink is not None and sink.truncated else None

    async def run_output(self) -> None:
        if self.sink is not None:
            await self.sink.pump()

    async def wait(self) -> int:
        return await self._child.wait()

    async def stop(self, grace_seconds: float) -> None:
        with trio.CancelScope(shield=True):
            kill_group(self._child.pid, signal.SIGTERM)
            with trio.move_on_after(grace_seconds):
                await self._child.wait()
            kill_group(self._child.pid, signal.SIGKILL)
            await self._child.wait()

    async def close(self, *, stopped: bool) -> None:
        executor = self._executor
        # Whatever the leader left behind in its group (a forked grandchild) dies now,
        # and what left the group soon after.
        group_left = kill_group(self._child.pid, signal.SIGKILL)
        self._child.close()
        swept = executor.sweep_leftovers(self._run_id, self._attempt)
        left_cgroup = executor.cgroups is not None and executor.cgroups.populated(
            self._run_id, self._attempt
        )
        if not (group_left or stopped or left_cgroup):
            swept = None  # it simply exited, alone: its end need not wait for the scan
        if self.sink is not None:
            try:
                await self.sink.finish()
            except OSError:
                log.exception("run %s: could not copy the end of its output", self._run_id)
        if swept is not None:
            # Stopped by us, or it left processes behind: nothing of it may be alive once
            # its end is visible (the scan repeats until it finds none, bounded).
            with trio.move_on_after(SWEEP_WAIT_SECONDS):
                await swept.wait()




#: Names ``/bin/sh`` sets for itself whatever its environment says.
_SHELL_OWNED = frozenset({"IFS", "PPID", "OPTIND"})
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _shell_keeps(env: Mapping[str, str]) -> bool:
    """Whether ``/bin/sh`` passes ``env`` on unchanged to what it execs: it drops
    names that are not shell names (an exported bash function, ``BASH_FUNC_f%%``) and
    resets a few of its own. A worker with such an environment is moved into its
    cgroup just after its start instead (see :meth:`RunCgroups.entering`)."""
    return not any(name in _SHELL_OWNED or not _SHELL_NAME.match(name) for name in env)


def _check_program(program: str, path: str | None, cwd: str) -> None:
    """Raise what ``Popen`` would raise for a program exec refuses (blocking): not
    found, not executable, not a format the kernel runs, or a script whose ``#!``
    interpreter is missing. Relative paths are the worker's: under ``cwd``."""
    if "\0" in program or (path and "\0" in path):
        raise ValueError("embedded null byte")
    if os.sep in program:
        candidates = [program]
    else:
        folders = (path if path is not None else os.defpath).split(os.pathsep)
        candidates = [os.path.join(folder, program) for folder in folders]
    denied = False
    for candidate in candidates:
        full = os.path.join(cwd, candidate)
        if os.path.isfile(full) and os.access(full, os.X_OK):
            _check_format(full, program, cwd)
            return
        denied = denied or os.path.exists(full)
    code = errno.EACCES if denied else errno.ENOENT
    raise OSError(code, os.strerror(code), program)


def _check_format(full: str, program: str, cwd: str) -> None:
    """An executable the kernel would refuse: neither ELF nor ``#!`` (``ENOEXEC``;
    a shell would run it as a script), or a ``#!`` naming no executable."""
    try:
        with open(full, "rb") as f:
            head = f.read(256)
    except OSError:
        return  # exec will say
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].lstrip(b" \t")
        interpreter = os.fsdecode(re.split(rb"[ \t]", line, maxsplit=1)[0])
        if not interpreter or not os.access(os.path.join(cwd, interpreter), os.X_OK):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    elif not head.startswith(b"\x7fELF"):
        raise OSError(errno.ENOEXEC, os.strerror(errno.ENOEXEC), program)
