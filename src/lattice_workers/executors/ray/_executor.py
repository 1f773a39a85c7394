"""The supervisor's side of runs on a Ray cluster: :class:`RayExecutor`.

It answers what the local executor answers (prepare a workspace at a commit, start the
worker there, signal its group, wait, copy its output into the run's log, keep its
work, give the workspace back), for an attempt whose process lives on a cluster node,
spawned by that node's host: a named, detached actor (:mod:`._node`, :mod:`._remote`),
one per node in the board's namespace (:func:`~._config.board_namespace`), so that a
restarted supervisor finds them and what they host (:meth:`RayExecutor.settle_orphans`).

Where an attempt goes is Ray's scheduling: each attempt reserves what the config says
(one CPU by default) as a placement group of one bundle, which Ray places on a node
with room (a soft target, the node with the fewest of this board's attempts, spreads
them); the attempt then runs under that node's host. A placement group costs a few
milliseconds; an actor per attempt cost 1 to 3 s of process start (``docs/scale.md``).

Nothing blocks the loop: a call to an actor is submitted, and its answer's future
wakes the waiting task (no thread per pending call); what blocks in Ray (joining the
cluster, creating or killing an actor, a large argument) runs in ``trio.to_thread``,
every wait bounded. Waits are long polls (the node answers as soon as something
happens, or after :data:`POLL_SECONDS`), so nothing is polled at a fixed rate while a
run is quiet.

Node loss: a host whose node dies fails its pending calls with ``RayActorError``
once Ray knows (a raylet killed: about a second; a machine gone silent: Ray's health
check, about 15 s by default); a call that neither answers nor fails for
:data:`UNREACHABLE_SECONDS` counts as lost too. Either ends the attempt with
:class:`NodeLost` (``process_failed`` reason ``node_lost``) within
``UNREACHABLE_SECONDS + POLL_SECONDS`` at most; the guard process on the node (if the
node still lives) kills the worker's group when its host is gone.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections import Counter
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
from lattice_workers.executors._shim import board_info
from lattice_workers.executors.ray._bundle import make_bundle, receive_bundle
from lattice_workers.executors.ray._config import ExecutorConfig, board_namespace
from lattice_workers.executors.ray._node import OUTPUT_VAR, PROMPT_VAR, REPORT_VAR, RESULT_VAR

log = logging.getLogger("lattice_workers.supervisor.ray")

#: How long one long poll (output, wait) lasts on the node before it answers anyway.
POLL_SECONDS = 5.0
#: A call that neither answers nor fails for this long means the node is lost.
UNREACHABLE_SECONDS = 30.0
#: Connecting to the cluster: the TCP check, then ``ray.init``.
CONNECT_SECONDS = 30.0
#: How long an attempt may wait for a node with room (or a host's start) before
#: prepare gives up.
SCHEDULE_SECONDS = 300.0
#: Threads that wait for Ray to place attempts, at most (beside Trio's own).
PLACING_THREADS = 16
#: How long the list of the cluster's nodes is reused to choose a soft target.
NODES_SECONDS = 5.0
#: Bound of a call that does git work on the node (worktree, snapshot, removal).
GIT_SECONDS = 120.0
#: How long giving back a placement group may take before it is left to the cluster.
UNRESERVE_SECONDS = 30.0
LOCATION_PREFIX = "ray://"

T = TypeVar("T")


class NodeLost(WorkerLost):
    """The node that ran the attempt is gone (or unreachable past the bound)."""


@dataclass
class _Remote:
    """One attempt on a node, as this supervisor knows it."""

    #: Its name on its host: ``<run>.<token>`` (a restarted supervisor reads the run).
    name: str
    #: Its node's host actor.
    host: Any
    node: str
    worktree: str
    #: The placement group that holds what it reserves on its node (None: nothing).
    group: Any = None
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

    def __init__(
        self, root: Path, config: ExecutorConfig, *, namespace: str | None = None,
        host_per_attempt: bool = False,
    ):
        self.root = root
        self.config = config
        self.namespace = namespace or board_namespace(root)
        self._remotes: dict[str, _Remote] = {}
        #: Each node's host, once made or found (node id -> actor handle).
        self._hosts: dict[str, Any] = {}
        self._host_locks: dict[str, trio.Lock] = {}
        #: This board's attempts per node now, and when each node last got one: the
        #: soft target that spreads them.
        self._per_node: Counter[str] = Counter()
        self._last_used: dict[str, float] = {}
        self._nodes: tuple[float, list[dict[str, Any]]] = (0.0, [])
        #: Threads that wait for a placement (see :meth:`_wait_placed`).
        self._placing = trio.CapacityLimiter(PLACING_THREADS)
        #: The benchmark's baseline: a fresh host actor per attempt, killed at its end
        #: (what one actor per attempt cost, measured in the same run).
        self._host_per_attempt = host_per_attempt
        #: Size of each bundle sent to a node (the bench and the tests read it).
        self.bundle_bytes: list[int] = []

    # ------------------------------------------------------------------ the cluster

    @property
    def joined(self) -> bool:
        """Whether this process has joined a Ray cluster (it joins one for its life)."""
        ray = sys.modules.get("ray")
        return ray is not None and bool(ray.is_initialized())

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
        did not answer within ``bound`` seconds (see :meth:`_answer`)."""
        if any(isinstance(arg, bytes) and len(arg) > 64 * 1024 for arg in args):
            # Serializing a bundle into the object store takes a while: not on the loop.
            ref = await trio.to_thread.run_sync(lambda: method.remote(*args, **kwargs))
        else:
            ref = method.remote(*args, **kwargs)
        return await self._answer(ref, bound)

    async def _answer(self, ref: Any, bound: float) -> Any:
        """The value of ``ref``, bounded; ``NodeLost`` as :meth:`_call` says.

        No thread waits: the answer's future wakes this task (``ObjectRef.future()``
        calls back from Ray's own thread). A thread per pending call would not do: each
        live run has a long poll in flight, and Trio's threads are 40 by default.
        """
        ray = _ray()
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
        """Room reserved on a node, and a worktree there at ``commit`` made by the node's
        host (the commit shipped as an incremental bundle when the node's cache lacks
        it). ``LatticeError`` when it cannot be made; nothing is left behind."""
        await self.connect()
        ray = _ray()
        group, node = await self._place()  # counted on its node from here on
        name = f"{run_id}.{secrets.token_hex(4)}"
        host = None
        try:
            host = await self._host(node, name)
            answer = await self._call(host.prepare, name, run_id, commit, None, bound=GIT_SECONDS)
            if "missing" in answer:
                bundle = await trio.to_thread.run_sync(
                    partial(make_bundle, self.root, commit, answer["missing"])
                )
                self.bundle_bytes.append(len(bundle))
                answer = await self._call(
                    host.prepare, name, run_id, commit, bundle, bound=GIT_SECONDS
                )
        except BaseException as err:
            with trio.CancelScope(shield=True):
                if host is not None:
                    await self._let_go(host, node, name, lost=isinstance(err, NodeLost))
                await self._unreserve(group)
                self._per_node[node] -= 1
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
        self._remotes[location] = _Remote(name, host, node, answer["location"], group)
        return Workspace(location)

    async def _place(self) -> tuple[Any, str]:
        """Reserve what an attempt needs (``resources``, one CPU by default) on a node
        of Ray's choice: ``(placement group, node id)``, the group None when nothing is
        reserved. Waits (bounded) while the cluster has no room, as an actor did."""
        want = self.config.reservation()
        target = self._target(await self._alive_nodes(), want)
        if not want:
            if target is None:
                raise LatticeError(
                    Code.CLUSTER_UNAVAILABLE,
                    "the Ray cluster has no live node; start one (ray start --address ...)",
                )
            self._count(target)
            return None, target
        from ray.util.placement_group import placement_group

        # Counted on the target at once: attempts prepared together spread too.
        if target is not None:
            self._count(target)
        try:
            group = await trio.to_thread.run_sync(
                partial(
                    placement_group, [want], strategy="STRICT_PACK", _soft_target_node_id=target
                )
            )
        except BaseException:
            if target is not None:
                self._per_node[target] -= 1
            raise
        try:
            await self._wait_placed(group, want)
            node = await trio.to_thread.run_sync(_group_node, group)
        except BaseException:
            if target is not None:
                self._per_node[target] -= 1
            with trio.CancelScope(shield=True):
                await self._unreserve(group)
            raise
        if node != target:  # Ray placed it elsewhere: the target was full
            if target is not None:
                self._per_node[target] -= 1
            self._count(node)
        return group, node

    def _count(self, node: str) -> None:
        self._per_node[node] += 1
        self._last_used[node] = time.monotonic()

    async def _wait_placed(self, group: Any, want: dict[str, float]) -> None:
        """Until Ray placed ``group`` (bounded by :data:`SCHEDULE_SECONDS`).

        Asked of Ray's GCS in long polls of :data:`POLL_SECONDS`, each in a thread of a
        limiter of its own (so that a full cluster's waiting runs cannot take the
        threads the board's writes need). Not ``group.ready()``: that runs a task in
        the group, and the worker process Ray starts for it dies with the group, 1 s of
        process start per attempt again.
        """
        deadline = trio.current_time() + SCHEDULE_SECONDS
        while not await trio.to_thread.run_sync(
            partial(group.wait, POLL_SECONDS), limiter=self._placing, abandon_on_cancel=True
        ):
            if trio.current_time() > deadline:
                raise LatticeError(
                    Code.INTERNAL,
                    f"no node of the Ray cluster had room for {want} in "
                    f"{SCHEDULE_SECONDS:g} s; add nodes, or ask for less in "
                    "workers.executor.resources",
                )

    async def _alive_nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes (reused for :data:`NODES_SECONDS`: only a hint)."""
        at, nodes = self._nodes
        if time.monotonic() - at > NODES_SECONDS:
            found = await trio.to_thread.run_sync(_ray().nodes)
            nodes = [node for node in found if node.get("Alive")]
            self._nodes = (time.monotonic(), nodes)
        return nodes

    def _target(self, nodes: list[dict[str, Any]], want: dict[str, float]) -> str | None:
        """The live node with room for ``want`` (in total) that has the fewest of this
        board's attempts, the least recently used first: a spread, as Ray's SPREAD."""
        fits = [
            str(node["NodeID"]) for node in nodes
            if all(node.get("Resources", {}).get(k, 0) >= v for k, v in want.items())
        ]
        if not fits:
            return None
        return min(fits, key=lambda n: (self._per_node[n], self._last_used.get(n, 0.0)))

    async def _host(self, node: str, name: str) -> Any:
        """The board's host on ``node``: found or started (once, whoever asks first),
        and answering."""
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from lattice_workers.executors.ray._remote import host_name, remote_class

        options: dict[str, Any]
        if self._host_per_attempt:
            options = {"name": f"attempt.{name}", "namespace": self.namespace}
            ident = name
        else:
            options = {"name": host_name(node), "namespace": self.namespace,
                       "get_if_exists": True}
            ident = ""
        options.update(
            lifetime="detached", num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        )
        lock = self._host_locks.setdefault(node, trio.Lock())
        async with lock:
            host: Any = None if self._host_per_attempt else self._hosts.get(node)
            if host is None:
                host = await trio.to_thread.run_sync(
                    lambda: remote_class().options(**options).remote(self.namespace, None, ident)
                )
                try:
                    await self._call(host.ready, bound=SCHEDULE_SECONDS)
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(partial(ray.kill, host, no_restart=True))
                    raise
                if not self._host_per_attempt:
                    self._hosts[node] = host
        return host

    async def missing_programs(self, programs: list[str], path: str) -> str | None:
        """Why a run that executes ``programs`` cannot start on the cluster: one of them
        is on no live node with room for a run (asked of each node's host, started if
        need be, as the first run there would), or None. A program that some nodes
        lack is not refused: a run placed there fails to start, naming its node."""
        if not programs:
            return None
        want = self.config.reservation()
        nodes = [
            str(node["NodeID"]) for node in await self._alive_nodes()
            if all(node.get("Resources", {}).get(k, 0) >= v for k, v in want.items())
        ]
        answers: dict[str, list[str]] = {}

        async def ask(node: str) -> None:
            try:
                host = await self._host(node, "")
                answers[node] = await self._call(
                    host.missing, programs, path, bound=UNREACHABLE_SECONDS
                )
            except (NodeLost, LatticeError) as err:
                log.info("could not ask Ray node %s for %s: %s", node, programs, err)

        if self._host_per_attempt:
            return None
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(ask, node)
        for program in programs:
            if answers and all(program in missing for missing in answers.values()):
                shown = ", ".join(sorted(node[:12] for node in answers))
                return (
                    f"program {program!r} is not installed on any node of the Ray cluster "
                    f"(looked for on {len(answers)}: {shown}); install it on the nodes, or "
                    'run this worker here: "executor": "local"'
                )
        return None

    def _forget(self, node: str, host: Any) -> None:
        """Its node is gone, or its host did not answer: the next attempt there finds or
        starts a host again."""
        if self._hosts.get(node) is host:
            del self._hosts[node]

    async def _let_go(self, host: Any, node: str, name: str, *, lost: bool) -> None:
        """End the attempt ``name`` on its host: waited for (bounded) while the host
        answers; when it did not, asked without waiting (a host that still lives ends
        it, and its group), and the host forgotten."""
        if lost:
            with contextlib.suppress(Exception):
                host.release.remote(name)
            self._forget(node, host)
        else:
            await self._end(host, name)
        if self._host_per_attempt:
            with contextlib.suppress(Exception):
                await trio.to_thread.run_sync(partial(_ray().kill, host, no_restart=True))

    async def _unreserve(self, group: Any) -> None:
        """Give back a reservation: shielded (it is called from ends that may already
        be cancelled, and a group left behind holds its CPU for the supervisor's whole
        life) and bounded (a cluster that does not answer is abandoned to its GCS)."""
        if group is None:
            return
        from ray.util.placement_group import remove_placement_group

        with trio.CancelScope(shield=True), trio.move_on_after(UNRESERVE_SECONDS) as bound:
            try:
                await trio.to_thread.run_sync(
                    remove_placement_group, group, abandon_on_cancel=True
                )
            except Exception as err:  # the cluster is gone: it went with it
                log.warning("could not remove a placement group: %s", _first_line(err))
        if bound.cancelled_caught:
            log.warning("a placement group was not removed in %g s", UNRESERVE_SECONDS)

    def start(self, launch: Launch, grace_seconds: float = 10.0) -> RayExecution:
        """Start the worker on the workspace's node (blocking: the seam calls it in a
        thread). Raises ``OSError`` (the program is not on the node) like a local spawn."""
        ray = _ray()
        if launch.workspace is None:
            raise ValueError("a worker on a Ray cluster needs a worktree (\"worktree\": true)")
        remote = self._remotes[launch.workspace.location]
        env = dict(launch.env)
        files = {}
        prompt = env.get(PROMPT_VAR)
        if prompt:
            with open(prompt, "rb") as f:
                files[PROMPT_VAR] = f.read()
        roots = [str(self.root), self.location_for(launch.run_id)]
        outputs = env.get(OUTPUT_VAR)
        local_outputs = [outputs, os.path.realpath(outputs)] if outputs else []
        board = board_info(self._board(), env.get("LATTICE_TASK_ID", ""))
        try:
            ray.get(
                remote.host.call.remote(
                    remote.name, "start", list(launch.argv), env, attempt=launch.attempt,
                    grace_seconds=grace_seconds, local_roots=roots, files=files,
                    stdin=launch.stdin, local_outputs=local_outputs, board=board,
                ),
                timeout=GIT_SECONDS,
            )
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if isinstance(err.cause, OSError) else None
            raise cause or OSError(_first_line(err)) from None
        except (ray.exceptions.GetTimeoutError, *_dead_errors()) as err:
            raise OSError(f"the Ray node did not start the worker: {_first_line(err)}") from None
        return RayExecution(self, remote, launch)

    def _board(self) -> Any:
        from lattice_workers.store import Board

        return Board(self.root)

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
            kept = await self._call(
                remote.host.call, remote.name, "keep", actor=actor, task=task, bound=GIT_SECONDS
            )
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
        """Remove the node's worktree, end the attempt on its host, give back what it
        reserved; a failure is logged."""
        remote = self._remotes.pop(workspace.location, None)
        if remote is None:
            return
        self._per_node[remote.node] -= 1
        try:
            await self._let_go(remote.host, remote.node, remote.name, lost=remote.lost)
        finally:
            await self._unreserve(remote.group)

    async def _end(self, host: Any, name: str) -> None:
        try:
            await self._call(host.release, name, bound=GIT_SECONDS)
        except NodeLost:
            pass  # its node is gone, and its worktree with it
        except Exception:
            log.exception("could not remove the node's worktree of %s", name)

    async def close(self) -> None:
        """End this board's hosts that host nothing (a supervisor's clean stop): each is
        a process on its node; the next run there starts one again. Bounded."""
        hosts, self._hosts = self._hosts, {}
        if not hosts:
            return
        ray = _ray()
        for host in hosts.values():
            try:
                if await self._call(host.attempts, bound=10.0):
                    continue  # not ours to end: a run of it is still there
            except NodeLost:
                continue
            with contextlib.suppress(Exception):
                await trio.to_thread.run_sync(partial(ray.kill, host, no_restart=True))

    # ------------------------------------------------------------------ recovery

    async def settle_orphans(
        self, *, live: Callable[[str], bool] = lambda run_id: False, grace_seconds: float = 10.0,
        actor: str = "agent:worker",
    ) -> list[dict[str, Any]]:
        """End every attempt of this board on the cluster that no live run owns (after a
        supervisor's ``kill -9``), asking each of the board's hosts what it hosts: its
        group stopped, its work kept when its node still answers, its worktree removed.
        One dict per attempt (``run_id``, ``attempt``, ``node``, ``changes`` or
        ``error``) for the recovery that closes them as ``orphaned``. A host that does
        not answer is ended (its guards end its workers); the hosts that do stay."""
        await self.connect()
        ray = _ray()
        from lattice_workers.executors.ray._remote import HOST_PREFIX

        settled = []
        for name in await trio.to_thread.run_sync(self._actor_names):
            try:
                host = await trio.to_thread.run_sync(
                    partial(ray.get_actor, name, namespace=self.namespace)
                )
            except ValueError:
                continue  # ended meanwhile
            if not name.startswith(HOST_PREFIX):
                # A host made for one attempt (the bench's), or an actor of an older
                # version: what it runs ends with it (its guards).
                await trio.to_thread.run_sync(partial(ray.kill, host, no_restart=True))
                continue
            try:
                hosted = await self._call(host.attempts, bound=UNREACHABLE_SECONDS)
            except NodeLost as err:
                log.warning("recovery: the host %s does not answer (%s); ended", name, err)
                await trio.to_thread.run_sync(partial(ray.kill, host, no_restart=True))
                continue
            self._hosts.setdefault(name.removeprefix(HOST_PREFIX), host)
            for info in hosted:
                run_id = info["run_id"] or info["name"].split(".", 1)[0]
                if live(run_id):
                    continue
                settled.append(await self._settle_one(host, info, run_id, grace_seconds, actor))
        return settled

    async def survey(self, *, live: Callable[[str], bool]) -> list[dict[str, Any]]:
        """What of this board is on the cluster (for ``doctor``; changes nothing): one
        dict per attempt that no live run owns (``run_id``, ``attempt``, ``node``,
        ``name``), one per host (``host``, ``node``, ``hosted``: how many attempts), one
        per actor of the board's that is neither (``actor``)."""
        await self.connect()
        ray = _ray()
        from lattice_workers.executors.ray._remote import HOST_PREFIX

        found: list[dict[str, Any]] = []
        for name in await trio.to_thread.run_sync(self._actor_names):
            if not name.startswith(HOST_PREFIX):
                found.append({"actor": name})
                continue
            node = name.removeprefix(HOST_PREFIX)
            try:
                host = await trio.to_thread.run_sync(
                    partial(ray.get_actor, name, namespace=self.namespace)
                )
                hosted = await self._call(host.attempts, bound=UNREACHABLE_SECONDS)
            except ValueError:
                continue  # ended meanwhile
            except NodeLost as err:
                found.append({"host": name, "node": node, "error": str(err)})
                continue
            found.append({"host": name, "node": node, "hosted": len(hosted)})
            for info in hosted:
                run_id = info["run_id"] or info["name"].split(".", 1)[0]
                if not live(run_id):
                    found.append({"run_id": run_id, "attempt": info["attempt"],
                                  "node": node, "name": info["name"]})
        return found

    def _actor_names(self) -> list[str]:
        """The names of this board's live actors on the cluster (blocking)."""
        found = _ray().util.list_named_actors(all_namespaces=True)
        return sorted(a["name"] for a in found if a.get("namespace") == self.namespace)

    async def _make_calls(self, calls: list[dict[str, Any]], run_id: str, attempt: int) -> None:
        """An orphaned attempt's ``lattice attach`` and ``comment`` calls, made on the
        board before recovery closes its run (as its supervisor would have)."""
        if not calls:
            return
        from lattice_workers.actors._agent_outputs import output_dir
        from lattice_workers.executors._shim import apply_calls
        from lattice_workers.store._locate import run_dir as board_run_dir

        board = self._board()
        keep_in = output_dir(board_run_dir(board.dir), run_id, attempt)
        done = await trio.to_thread.run_sync(apply_calls, board, calls, keep_in)
        for problem in done.problems:
            log.warning("recovery: run %s: %s", run_id, problem)

    async def _settle_one(
        self, host: Any, info: dict[str, Any], run_id: str, grace_seconds: float, actor: str
    ) -> dict[str, Any]:
        name = info["name"]
        entry: dict[str, Any] = {
            "name": name, "run_id": run_id, "attempt": info["attempt"], "node": info["node"]
        }
        try:
            await self._call(host.call, name, "stop", grace_seconds, bound=grace_seconds + 30)
            files = await self._call(host.call, name, "files", bound=GIT_SECONDS)
            await self._make_calls(files.get("lattice") or [], run_id, info["attempt"] or 1)
            kept = await self._call(host.call, name, "keep", actor=actor, task=run_id,
                                    bound=GIT_SECONDS)
            entry["changes"] = await self._bring_back(kept, run_id, info["attempt"] or 1)
        except NodeLost as err:
            entry["error"] = str(err)
        except _ray().exceptions.RayTaskError as err:
            entry["error"] = _first_line(err)
        await self._end(host, name)
        return entry


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
        self._report_dir = launch.env.get(REPORT_VAR)
        #: The worker's ``lattice attach`` and ``comment`` calls, brought back at its
        #: end; the attempt makes them on the board
        #: (:func:`~lattice_workers.executors._shim.apply_calls`).
        self.board_calls: list[dict[str, Any]] = []
        # The log is bounded as a local run's is: a LogSink that is fed, not piped; an
        # agent's stream goes through its tap (the reader) here, as locally.
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        os.close(write_fd)
        self._tap = launch.tap
        self.sink = LogSink(read_fd, os.dup(launch.log_fd), launch.log_limit, tap=launch.tap)
        self._copy_lock = trio.Lock()

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def _ask(self, method: str, *args: Any, bound: float) -> Any:
        """The attempt's ``method`` on its node's host, bounded (``NodeLost``)."""
        remote = self._remote
        return await self._executor._call(remote.host.call, remote.name, method, *args, bound=bound)

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
                offset, data, at_end = await self._ask(
                    "read_output", self._offset, wait, bound=wait + UNREACHABLE_SECONDS
                )
            except NodeLost:
                self._at_end = True
                return
            if data:
                # Shielded: these bytes left the node's buffer once acknowledged.
                with trio.CancelScope(shield=True):
                    await self.sink._write(self._tap(data) if self._tap else data)
            self._offset = offset + len(data)
            self._at_end = at_end

    async def wait(self) -> int:
        """Its exit status; ``NodeLost`` when its node died or stopped answering."""
        while self._returncode is None:
            try:
                code = await self._ask(
                    "wait", POLL_SECONDS, bound=POLL_SECONDS + UNREACHABLE_SECONDS
                )
            except NodeLost:
                self._remote.lost = True
                raise
            self._returncode = code
        return self._returncode

    async def signal(self, signum: int) -> bool:
        return bool(await self._ask("signal_group", signum, bound=UNREACHABLE_SECONDS))

    async def stop(self, grace_seconds: float) -> None:
        """TERM to its group on the node, the grace, KILL (done on the node, so a slow
        link does not stretch the grace); returns once it exited or its node is gone."""
        if self._remote.lost:
            return
        with trio.CancelScope(shield=True):
            try:
                code = await self._ask(
                    "stop", grace_seconds, bound=grace_seconds + UNREACHABLE_SECONDS
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
                files = await self._ask("files", bound=GIT_SECONDS)
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
        for folder, key in ((self._output_dir, "outputs"), (self._report_dir, "reports")):
            if not folder:
                continue
            base = Path(folder)
            for rel, content in files.get(key, {}).items():
                target = base / rel
                if ".." in Path(rel).parts or target.is_symlink():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        self.board_calls = list(files.get("lattice") or [])


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


def _group_node(group: Any) -> str:
    """The node a ready placement group's one bundle is on (blocking: asks Ray's GCS)."""
    table = _ray().util.placement_group_table(group)
    return str(table["bundles_to_node_id"][0])


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _fits_the_seam(executor: RayExecutor) -> Executor:
    """Never called: mypy checks here that RayExecutor is an Executor (the supervisor
    holds it as ``Any``, so that Ray is imported only where it is used)."""
    return executor
