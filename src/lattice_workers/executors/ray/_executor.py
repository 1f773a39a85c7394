"""The supervisor's side of runs on a Ray cluster: :class:`RayExecutor`.

It answers what the local executor answers (prepare a workspace at a commit, start the
worker there, signal its group, wait, copy its output into the run's log, keep its
work, give the workspace back), for an attempt whose process lives on a cluster node
inside a named, detached actor (:mod:`._node`, :mod:`._remote`), one per attempt, in
the board's namespace (:func:`~._config.board_namespace`), so that a restarted
supervisor finds them (:meth:`RayExecutor.settle_orphans`).

Nothing blocks the loop: a call to an actor is submitted, and its answer's future
wakes the waiting task (no thread per pending call); what blocks in Ray (joining the
cluster, creating or killing an actor, a large argument) runs in ``trio.to_thread``,
every wait bounded. Waits are long polls (the node answers as soon as something
happens, or after :data:`POLL_SECONDS`), so nothing is polled at a fixed rate while a
run is quiet.

Node loss: an actor whose node dies fails its pending calls with ``RayActorError``
once Ray knows (a raylet killed: about a second; a machine gone silent: Ray's health
check, about 15 s by default); a call that neither answers nor fails for
:data:`UNREACHABLE_SECONDS` counts as lost too. Either ends the attempt with
:class:`NodeLost` (``process_failed`` reason ``node_lost``) within
``UNREACHABLE_SECONDS + POLL_SECONDS`` at most; the guard process on the node (if the
node still lives) kills the worker's group when its actor is gone.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from lattice_workers.actors._executor import Executor, Launch, WorkerLost, Workspace
from lattice_workers.actors._keep import KeepError, not_kept, run_ref
from lattice_workers.actors._logsink import LogSink
from lattice_workers.errors import Code, LatticeError
from lattice_workers.executors.ray._bundle import make_bundle, receive_bundle
from lattice_workers.executors.ray._config import ExecutorConfig, board_namespace
from lattice_workers.executors.ray._node import OUTPUT_VAR, PROMPT_VAR, RESULT_VAR

log = logging.getLogger("lattice_workers.supervisor.ray")

#: How long one long poll (output, wait) lasts on the node before it answers anyway.
POLL_SECONDS = 5.0
#: A call that neither answers nor fails for this long means the node is lost.
UNREACHABLE_SECONDS = 30.0
#: Connecting to the cluster: the TCP check, then ``ray.init``.
CONNECT_SECONDS = 30.0
#: How long an attempt's actor may wait for a node with room before prepare gives up.
SCHEDULE_SECONDS = 300.0
#: Bound of a call that does git work on the node (worktree, snapshot, removal).
GIT_SECONDS = 120.0
LOCATION_PREFIX = "ray://"

T = TypeVar("T")


class NodeLost(WorkerLost):
    """The node that ran the attempt is gone (or unreachable past the bound)."""


@dataclass
class _Remote:
    """One attempt's actor, as this supervisor knows it."""

    name: str
    handle: Any
    node: str
    worktree: str
    #: Its node is gone: the calls that remain (stop, close, keep, release) are skipped.
    lost: bool = field(default=False)


def _ray() -> Any:
    """The ``ray`` module (typed Any: mypy runs with and without the extra installed)."""
    try:
        ray: Any = importlib.import_module("ray")
    except ImportError:
        raise LatticeError(
            Code.ENGINE_NOT_FOUND,
            "this board runs workers on a Ray cluster (workers.executor in "
            ".lattice/config.json) but Ray is not installed: pip install "
            "'lattice-workers[ray]'",
        ) from None
    return ray


def _dead_errors() -> tuple[type[BaseException], ...]:
    ray = _ray()
    return (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class RayExecutor:
    """Workers on the nodes of a Ray cluster, each in a worktree of a node's cache."""

    _connect_lock = threading.Lock()

    def __init__(self, root: Path, config: ExecutorConfig, *, namespace: str | None = None):
        self.root = root
        self.config = config
        self.namespace = namespace or board_namespace(root)
        self._remotes: dict[str, _Remote] = {}
        #: Size of each bundle sent to a node (the bench and the tests read it).
        self.bundle_bytes: list[int] = []

    # ------------------------------------------------------------------ the cluster

    async def connect(self) -> None:
        """Join the cluster (once per process); a clear ``CLUSTER_UNAVAILABLE`` when it
        cannot be reached, so that a request is refused before anything is written."""
        await trio.to_thread.run_sync(self._connect_blocking)

    async def check(self) -> None:
        """Whether the cluster answers now: at request time, before anything is
        written, so that a run on a cluster that is down is refused, not failed."""
        address = self.config.address
        if address and address != "auto":
            await trio.to_thread.run_sync(_check_reachable, address)
        await self.connect()

    def _connect_blocking(self) -> None:
        ray = _ray()
        with self._connect_lock:
            if ray.is_initialized():
                return
            address = self.config.address
            if address and address != "auto":
                _check_reachable(address)
            try:
                ray.init(
                    address=address or "auto",
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    include_dashboard=False,
                )
            except Exception as err:  # ConnectionError, RuntimeError, ValueError
                raise LatticeError(
                    Code.CLUSTER_UNAVAILABLE,
                    f"cannot join the Ray cluster at {address or 'auto'}: {err}; start it "
                    "(ray start --head) or fix workers.executor.address in "
                    ".lattice/config.json",
                ) from None

    async def _call(self, method: Any, *args: Any, bound: float, **kwargs: Any) -> Any:
        """``method.remote(...)``'s answer, bounded; ``NodeLost`` when the actor died or
        did not answer within ``bound`` seconds.

        No thread waits: the answer's future wakes this task (``ObjectRef.future()``
        calls back from Ray's own thread). A thread per pending call would not do: each
        live run has a long poll in flight, and Trio's threads are 40 by default.
        """
        ray = _ray()
        if any(isinstance(arg, bytes) and len(arg) > 64 * 1024 for arg in args):
            # Serializing a bundle into the object store takes a while: not on the loop.
            ref = await trio.to_thread.run_sync(lambda: method.remote(*args, **kwargs))
        else:
            ref = method.remote(*args, **kwargs)
        future = ref.future()
        answered = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: object) -> None:
            try:
                token.run_sync_soon(answered.set)
            except trio.RunFinishedError:
                pass  # the supervisor's loop is gone; nobody waits for this answer

        future.add_done_callback(wake)
        with trio.move_on_after(bound):
            await answered.wait()
        if not future.done():
            with contextlib.suppress(Exception):
                ray.cancel(ref)
            raise NodeLost(f"the Ray node did not answer in {bound:g} s")
        try:
            return future.result()
        except _dead_errors() as err:
            gone = f"the Ray node running the worker is gone ({_first_line(err)})"
            raise NodeLost(gone) from None

    # ------------------------------------------------------------------ the seam

    def location_for(self, run_id: str, *, pool: str = "") -> str:
        # ``pool``: the local executor's reuse of workspaces; a node's are fresh.
        return f"{LOCATION_PREFIX}{self.namespace}/{run_id}"

    async def prepare(self, run_id: str, commit: str, *, pool: str = "") -> Workspace:
        """An actor for the attempt on a node with room, and a worktree there at
        ``commit`` (the commit shipped as an incremental bundle when the node's cache
        lacks it). ``LatticeError`` when it cannot be made; nothing is left behind."""
        await self.connect()
        ray = _ray()
        from lattice_workers.executors.ray._remote import remote_class

        name = f"{run_id}.{secrets.token_hex(4)}"
        options = {
            **self.config.actor_options(),
            "name": name,
            "namespace": self.namespace,
            "lifetime": "detached",
            "scheduling_strategy": "SPREAD",
        }
        handle = await trio.to_thread.run_sync(
            lambda: remote_class().options(**options).remote(self.namespace, name)
        )
        try:
            answer = await self._call(
                handle.prepare, run_id, commit, None, bound=SCHEDULE_SECONDS
            )
            if "missing" in answer:
                bundle = await trio.to_thread.run_sync(
                    partial(make_bundle, self.root, commit, answer["missing"])
                )
                self.bundle_bytes.append(len(bundle))
                answer = await self._call(
                    handle.prepare, run_id, commit, bundle, bound=GIT_SECONDS
                )
        except BaseException as err:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(partial(ray.kill, handle, no_restart=True))
            if isinstance(err, NodeLost | KeepError):
                raise LatticeError(
                    Code.INTERNAL, f"no workspace on the Ray cluster for {run_id}: {err}"
                ) from None
            if isinstance(err, ray.exceptions.RayTaskError):
                raise LatticeError(
                    Code.INTERNAL,
                    f"no workspace on the Ray cluster for {run_id}: {_first_line(err)}",
                ) from None
            raise
        location = f"{LOCATION_PREFIX}{answer['node']}{answer['location']}"
        self._remotes[location] = _Remote(name, handle, answer["node"], answer["location"])
        return Workspace(location)

    def start(self, launch: Launch, grace_seconds: float = 10.0) -> RayExecution:
        """Start the worker on the workspace's node (blocking: the seam calls it in a
        thread). Raises ``OSError`` (the program is not on the node) like a local spawn."""
        ray = _ray()
        if launch.workspace is None:
            raise ValueError("a worker on a Ray cluster needs a worktree (\"worktree\": true)")
        if launch.stdin is not None or launch.tap is not None:
            # Not yet: the prompt on stdin and the stream reader live on this machine.
            raise ValueError(
                "agent engines (claude, codex, gemini) do not run on a Ray cluster yet; "
                'give this worker "executor": "local"'
            )
        remote = self._remotes[launch.workspace.location]
        env = dict(launch.env)
        files = {}
        prompt = env.get(PROMPT_VAR)
        if prompt:
            with open(prompt, "rb") as f:
                files[PROMPT_VAR] = f.read()
        roots = [str(self.root), self.location_for(launch.run_id)]
        try:
            ray.get(
                remote.handle.start.remote(
                    list(launch.argv), env, attempt=launch.attempt,
                    grace_seconds=grace_seconds, local_roots=roots, files=files,
                ),
                timeout=GIT_SECONDS,
            )
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if isinstance(err.cause, OSError) else None
            raise cause or OSError(_first_line(err)) from None
        except (ray.exceptions.GetTimeoutError, *_dead_errors()) as err:
            raise OSError(f"the Ray node did not start the worker: {_first_line(err)}") from None
        return RayExecution(self, remote, launch)

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
        """The snapshot made on the node, its bundle fetched into the project's
        ``refs/lattice/runs/<run>/<attempt>``; the terminal event's ``changes``."""
        remote = self._remotes.get(workspace.location)
        if remote is None:
            return None
        if remote.lost:
            return not_kept("its node is gone")
        try:
            kept = await self._call(remote.handle.keep, actor=actor, task=task, bound=GIT_SECONDS)
        except NodeLost as err:
            return not_kept(err)
        return await self._bring_back(kept, run_id, attempt)

    async def _bring_back(self, kept: dict[str, Any] | None, run_id: str, attempt: int) -> Any:
        if kept is None:
            return None
        changes = kept["changes"]
        if kept.get("bundle"):
            try:
                await trio.to_thread.run_sync(
                    partial(receive_bundle, self.root, kept["bundle"], run_ref(run_id, attempt))
                )
            except KeepError as err:
                return not_kept(err)
        return changes

    async def release(self, workspace: Workspace) -> None:
        """Remove the node's worktree and end the actor; a failure is logged."""
        remote = self._remotes.pop(workspace.location, None)
        if remote is None:
            return
        if remote.lost:  # nothing to remove on a node that is gone; the actor is dead
            await trio.to_thread.run_sync(partial(_ray().kill, remote.handle, no_restart=True))
            return
        await self._end(remote.handle, remote.name)

    async def _end(self, handle: Any, name: str) -> None:
        ray = _ray()
        try:
            await self._call(handle.release, bound=GIT_SECONDS)
        except NodeLost:
            pass  # its node is gone, and its worktree with it
        except Exception:
            log.exception("could not remove the node's worktree of %s", name)
        await trio.to_thread.run_sync(partial(ray.kill, handle, no_restart=True))

    # ------------------------------------------------------------------ recovery

    async def settle_orphans(
        self, *, live: Callable[[str], bool] = lambda run_id: False, grace_seconds: float = 10.0,
        actor: str = "agent:worker",
    ) -> list[dict[str, Any]]:
        """End every attempt actor of this board that no live run owns (after a
        supervisor's ``kill -9``): its group stopped, its work kept when its node still
        answers, its worktree removed, the actor killed. One dict per attempt
        (``run_id``, ``attempt``, ``node``, ``changes`` or ``error``) for the recovery
        that closes them as ``orphaned``."""
        await self.connect()
        ray = _ray()

        def names() -> list[str]:
            found = ray.util.list_named_actors(all_namespaces=True)
            return sorted(a["name"] for a in found if a.get("namespace") == self.namespace)

        settled = []
        for name in await trio.to_thread.run_sync(names):
            run_id = name.split(".", 1)[0]
            if live(run_id):
                continue
            entry: dict[str, Any] = {"name": name, "run_id": run_id}
            try:
                handle = await trio.to_thread.run_sync(
                    partial(ray.get_actor, name, namespace=self.namespace)
                )
            except ValueError:
                continue  # ended meanwhile
            try:
                info = await self._call(handle.describe, bound=UNREACHABLE_SECONDS)
                entry.update(attempt=info["attempt"], node=info["node"])
                await self._call(handle.stop, grace_seconds, bound=grace_seconds + 30)
                kept = await self._call(
                    handle.keep, actor=actor, task=run_id, bound=GIT_SECONDS
                )
                entry["changes"] = await self._bring_back(kept, run_id, info["attempt"] or 1)
            except NodeLost as err:
                entry["error"] = str(err)
            await self._end(handle, name)
            settled.append(entry)
        return settled


class RayExecution:
    """A worker running on a node: its exit, its output, its group's signals."""

    pid: int | None = None
    start_time: int | None = None

    def __init__(self, executor: RayExecutor, remote: _Remote, launch: Launch) -> None:
        self._executor = executor
        self._remote = remote
        self.node = remote.node
        self.run_id = launch.run_id
        self._returncode: int | None = None
        self._offset = 0
        self._at_end = False
        self._result_file = launch.env.get(RESULT_VAR)
        self._output_dir = launch.env.get(OUTPUT_VAR)
        # The log is bounded as a local run's is: a LogSink that is fed, not piped.
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        os.close(write_fd)
        self.sink = LogSink(read_fd, os.dup(launch.log_fd), launch.log_limit)
        self._copy_lock = trio.Lock()

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def log_truncated(self) -> bool:
        return self.sink.truncated

    @property
    def log_cut(self) -> int | None:
        return self.sink.head if self.sink.truncated else None

    async def run_output(self) -> None:
        """Copy the node's output into the log as it comes, until its end."""
        while not self._at_end:
            await self._copy_once(POLL_SECONDS)

    async def _copy_once(self, wait: float) -> None:
        async with self._copy_lock:
            try:
                offset, data, at_end = await self._executor._call(
                    self._remote.handle.read_output, self._offset, wait,
                    bound=wait + UNREACHABLE_SECONDS,
                )
            except NodeLost:
                self._at_end = True
                return
            if data:
                # Shielded: these bytes left the node's buffer once acknowledged.
                with trio.CancelScope(shield=True):
                    await self.sink._write(data)
            self._offset = offset + len(data)
            self._at_end = at_end

    async def wait(self) -> int:
        """Its exit status; ``NodeLost`` when its node died or stopped answering."""
        while self._returncode is None:
            try:
                code = await self._executor._call(
                    self._remote.handle.wait, POLL_SECONDS,
                    bound=POLL_SECONDS + UNREACHABLE_SECONDS,
                )
            except NodeLost:
                self._remote.lost = True
                raise
            self._returncode = code
        return self._returncode

    async def signal(self, signum: int) -> bool:
        return bool(
            await self._executor._call(
                self._remote.handle.signal_group, signum, bound=UNREACHABLE_SECONDS
            )
        )

    async def stop(self, grace_seconds: float) -> None:
        """TERM to its group on the node, the grace, KILL (done on the node, so a slow
        link does not stretch the grace); returns once it exited or its node is gone."""
        if self._remote.lost:
            return
        with trio.CancelScope(shield=True):
            try:
                code = await self._executor._call(
                    self._remote.handle.stop, grace_seconds,
                    bound=grace_seconds + UNREACHABLE_SECONDS,
                )
            except NodeLost:
                self._remote.lost = True
                return
            if code is not None:
                self._returncode = code

    async def close(self, *, stopped: bool) -> None:
        """Kill what is left of its group, copy the rest of its output (bounded), bring
        its result file and outputs into the supervisor's paths."""
        if self._remote.lost:
            await self.sink.finish()
            return
        try:
            with trio.move_on_after(UNREACHABLE_SECONDS):
                files = await self._executor._call(self._remote.handle.files, bound=GIT_SECONDS)
                await trio.to_thread.run_sync(self._write_files, files)
                while not self._at_end:
                    await self._copy_once(0.5)
        except NodeLost as err:
            log.warning("run %s: %s", self.run_id, err)
        finally:
            await self.sink.finish()

    def _write_files(self, files: dict[str, Any]) -> None:
        if self._result_file and files.get("result") is not None:
            Path(self._result_file).write_bytes(files["result"])
        if self._output_dir:
            base = Path(self._output_dir)
            for rel, content in files.get("outputs", {}).items():
                target = base / rel
                if ".." in Path(rel).parts or target.is_symlink():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)


def _check_reachable(address: str) -> None:
    """A TCP connection to the cluster's address, so that a down cluster is said in
    seconds (``ray.init`` retries for a minute)."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as err:
        raise LatticeError(
            Code.CLUSTER_UNAVAILABLE,
            f"the Ray cluster at {address} does not answer ({err}); start it (ray start "
            "--head) or fix workers.executor.address in .lattice/config.json",
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__



def _fits_the_seam(executor: RayExecutor) -> Executor:
    """Never called: mypy checks here that RayExecutor is an Executor (the supervisor
    holds it as ``Any``, so that Ray is imported only where it is used)."""
    return executor
