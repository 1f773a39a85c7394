"""The supervisor process: one Trio program per project root.

Its root nursery holds the signal watcher, the registry (which owns every run
actor), the hook runner and the protocol server(s). SIGTERM, SIGINT and a
``Shutdown`` request all set the same flag; the main task then refuses new runs,
cancels (or drains) every run and waits until each actor has cleaned up, and only
then cancels the nursery, which closes the socket and removes its file.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio

from lattice_workers._command import SHIM_FOLDER, add_lattice_to_path
from lattice_workers.actors._cgroup import RunCgroups
from lattice_workers.actors._executor import LocalExecutor
from lattice_workers.actors._journal import Journal
from lattice_workers.actors._leftovers import LeftoverSweeper
from lattice_workers.actors._registry import Registry
from lattice_workers.actors._run import RunContext
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.errors import Code, LatticeError
from lattice_workers.executors.ray._config import ExecutorConfig
from lattice_workers.protocol import default_endpoint
from lattice_workers.protocol._endpoint import curve_key, ipc_path
from lattice_workers.protocol._messages import AnyRequest, Run
from lattice_workers.store import Board
from lattice_workers.supervisor._feed import RunFeed
from lattice_workers.supervisor._handlers import Handlers
from lattice_workers.supervisor._logsummary import RepeatSummarizer, TemplateQueueHandler
from lattice_workers.supervisor._pidlock import PidLock, runtime_dir
from lattice_workers.supervisor._recovery import recover
from lattice_workers.supervisor._server import Handler, Send, serve
from lattice_workers.supervisor._settings import Settings, worktree_base
from lattice_workers.supervisor._watch import Inotify
from lattice_workers.supervisor._zap import ClientKeys
from lattice_workers.supervisor.control import RUN_VARIABLES

log = logging.getLogger("lattice_workers.supervisor")

#: How long subscribers (``Watch``) get, at shutdown, to be sent their last events.
FEED_CLOSE_SECONDS = 2.0

#: The supervisor's log is rotated at this size, keeping this many older files
#: (``supervisor.log.1`` ...): it runs for weeks, and a peer that keeps sending bad
#: requests gets a warning each time, so the log must not be able to fill the disk.
LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 4


@dataclass(frozen=True)
class CurveSettings:
    """CURVE for TCP listeners: the server's secret key and who may connect."""

    secret_key: bytes
    clients: ClientKeys

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> CurveSettings | None:
        """From ``LATTICE_CURVE_SECRET_KEY`` and ``LATTICE_CURVE_CLIENTS`` (both or none)."""
        secret = environ.get("LATTICE_CURVE_SECRET_KEY") or None
        folder = environ.get("LATTICE_CURVE_CLIENTS") or None
        if secret is None and folder is None:
            return None
        if secret is None or folder is None:
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                "CURVE needs both LATTICE_CURVE_SECRET_KEY (the server's secret key, 40 Z85 "
                "characters) and LATTICE_CURVE_CLIENTS (a folder of the public *.key "
                "certificates of the clients allowed in); set both or neither",
            )
        key = curve_key(
            secret,
            "LATTICE_CURVE_SECRET_KEY is not a CURVE secret key (40 Z85 characters, as "
            "zmq.curve_keypair() makes); check the variable",
        )
        return cls(key, ClientKeys(Path(folder)))


class Supervisor:
    """Everything one running supervisor owns."""

    def __init__(
        self, board: Board, *, endpoints: list[str], lock: PidLock | None = None
    ) -> None:
        self.board = board
        self.lock = lock
        self.root = board.root
        self.endpoints = endpoints
        self.endpoint = endpoints[0]
        self.curve = CurveSettings.from_environment(os.environ)
        # Read once; no child (git, hooks, workers) needs the server's secret key.
        os.environ.pop("LATTICE_CURVE_SECRET_KEY", None)
        # Nor do its children (git, hooks) belong to the run whose shell started it.
        for name in RUN_VARIABLES:
            os.environ.pop(name, None)
        self.started_at = time.time()
        self.settings = Settings(board.config)
        self.run_dir = runtime_dir(board.dir)
        base = worktree_base(board, self.settings)
        self.journal = Journal(self.run_dir / "journal.jsonl")
        self._hooks_nursery: trio.Nursery | None = None
        self.cgroups = RunCgroups.create() if os.environ.get("LATTICE_NO_CGROUPS") != "1" else None
        self.sweeper = LeftoverSweeper(cgroups=self.cgroups)
        self.feed = RunFeed()
        worktrees = Worktrees(base, owner=board.dir)
        self.executor = LocalExecutor(
            board.root,
            worktrees,
            cgroups=self.cgroups,
            sweep_leftovers=self.sweeper.attempt_ended,
            pool_size=self.settings.worktree_pool,
        )
        self.ctx = RunContext(
            board=board,
            worktrees=worktrees,
            journal=self.journal,
            results_dir=self.run_dir / "results",
            run_hooks=self._run_hooks,
            environ=_worker_base_environment(self.run_dir),
            on_state=lambda info, kind: self.feed.publish(info, kind),
            path_extras=(str(Path(sys.executable).parent), str(self.run_dir / SHIM_FOLDER)),
            log_max_mib=self.settings.log_max_mib,
            executor=self.executor,
            default_executor=self.settings.executor.kind,
            ray=_ray_executor(board, self.settings),
        )
        self.registry = Registry(
            self.ctx,
            max_concurrent=self.settings.max_concurrent,
            keep_finished=self.settings.keep_finished,
            keep_finished_seconds=self.settings.keep_finished_seconds,
        )
        self._shutdown = trio.Event()
        self._drain = False
        #: Ray executors a reload replaced: their runs go on; their hosts end at the stop.
        self._retired_clusters: list[Any] = []

    def request_shutdown(self, *, drain: bool = False) -> None:
        """Begin the graceful stop (idempotent)."""
        self._drain = self._drain or drain
        self._shutdown.set()

    async def reload(self) -> None:
        """Read ``.lattice/config.json`` and the worker definitions again (``Reload``).

        Caps and retention apply at once (a raised cap admits queued runs); hooks and
        the default base ref are read from the config where they are used; so does
        ``workers.executor`` for the next runs (a run in flight keeps its executor; see
        :func:`_follow_executor`). A config that is refused changes nothing. The
        worktree folder stays the one this supervisor started with: its runs live
        there. The CURVE client certificates are read again too (connections already
        made stay).
        """
        checked: list[Settings] = []

        def check(config: dict[str, Any]) -> None:
            settings = Settings(config)
            _executor_change_allowed(
                [self.ctx.ray, *self._retired_clusters], settings.executor
            )
            checked.append(settings)

        await trio.to_thread.run_sync(self.board.reload_config, check)
        checked[0].worktree_dir = self.settings.worktree_dir  # where the live runs are
        self.settings = checked[0]
        _follow_executor(self.ctx, self.board, self.settings, self._retired_clusters)
        self.registry.cluster_changed()
        self.ctx.log_max_mib = self.settings.log_max_mib
        self.registry.set_limits(
            max_concurrent=self.settings.max_concurrent,
            keep_finished=self.settings.keep_finished,
            keep_finished_seconds=self.settings.keep_finished_seconds,
        )
        await self.registry.reload()
        await self.executor.pool.resize(self.settings.worktree_pool)
        if self.curve is not None:
            await trio.to_thread.run_sync(self.curve.clients.load)

    def _run_hooks(self, events: list[dict[str, Any]]) -> None:
        """Run board hooks for events the actors wrote, without holding up the actor."""
        if self._hooks_nursery is not None and self.board.config.get("hooks"):
            self._hooks_nursery.start_soon(trio.to_thread.run_sync, self.board.run_hooks, events)

    async def run(self, ready: Callable[[], None]) -> None:
        if self.curve is not None:
            await trio.to_thread.run_sync(self.curve.clients.load)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, signals)
                async with trio.open_nursery() as hooks:
                    self._hooks_nursery = hooks
                    await nursery.start(self.ctx.worktrees.serve)
                    await nursery.start(self.sweeper.serve)
                    await nursery.start(self.registry.serve)
                    kept_on_cluster = (
                        await _settle_cluster(self.ctx.ray) if self.ctx.ray is not None else {}
                    )
                    kept_pool = await recover(
                        self.board,
                        self.journal,
                        self.registry,
                        worktree_base=self.ctx.worktrees.base_dir,
                        keep_finished=self.settings.keep_finished,
                        keep_finished_seconds=self.settings.keep_finished_seconds,
                        kept_elsewhere=kept_on_cluster,
                        spare_pool=self.settings.keep_pool_on_stop,
                    )
                    handler = Handlers(
                        self.registry,
                        self.board,
                        self.feed,
                        endpoint=self.endpoint,
                        started_at=self.started_at,
                        reload=self.reload,
                        request_shutdown=lambda drain: self.request_shutdown(drain=drain),
                    )
                    for endpoint in self.endpoints:
                        # CURVE is for TCP; the ipc:// socket is guarded by its file modes.
                        curve = self.curve if endpoint.startswith("tcp://") else None
                        # A client's environment (credentials) is taken only where it
                        # travelled encrypted or on this machine's socket.
                        plain_tcp = endpoint.startswith("tcp://") and curve is None
                        serves = _without_environment(handler) if plain_tcp else handler
                        await nursery.start(
                            lambda task_status, e=endpoint, c=curve, h=serves: serve(
                                e,
                                h,
                                task_status=task_status,
                                log=log,
                                curve_secret_key=c.secret_key if c else None,
                                curve_clients=c.clients if c else None,
                            )
                        )
                    log.info("supervisor %d serving %s", os.getpid(), ", ".join(self.endpoints))
                    nursery.start_soon(self._watch_runtime)
                    # The day's total for ps and show, summed once (the events of the
                    # whole board) beside the first requests.
                    nursery.start_soon(trio.to_thread.run_sync, self.ctx.publish_spend)
                    if (lock := self.lock) is not None:
                        await trio.to_thread.run_sync(lock.mark_serving)
                    ready()
                    adoption = trio.CancelScope()
                    adopted = trio.Event()
                    if kept_pool:
                        # Each is checked, or removed, while the first runs come.
                        nursery.start_soon(self._adopt, kept_pool, adoption, adopted)
                    else:
                        adopted.set()
                    await self._shutdown.wait()
                    log.info("shutting down (drain=%s)", self._drain)
                    await self.registry.close(
                        drain=self._drain, deadline_seconds=self.settings.shutdown_drain_seconds
                    )
                    with trio.CancelScope(shield=True):
                        adoption.cancel()
                        await adopted.wait()
                        # The pool goes with its supervisor, unless configured to stay,
                        await self.executor.close(keep_pool=self.settings.keep_pool_on_stop)
                        # and the board's hosts on the cluster
                        for cluster in [self.ctx.ray, *self._retired_clusters]:
                            if cluster is not None:
                                with trio.move_on_after(SETTLE_CLUSTER_SECONDS):
                                    await cluster.close()
                    self._hooks_nursery = None
                    with trio.move_on_after(FEED_CLOSE_SECONDS):
                        await self.feed.close()  # every subscriber hears End
                nursery.cancel_scope.cancel()
        await trio.to_thread.run_sync(self.journal.close)
        if self.settings.worktree_dir is None:
            # The per-project folder under the user's cache is ours: left empty, it
            # goes (a configured folder is the user's, and stays).
            await trio.to_thread.run_sync(_remove_if_empty, self.ctx.worktrees.base_dir)
        if self.cgroups is not None:
            await trio.to_thread.run_sync(self.cgroups.close)
        log.info("supervisor %d stopped", os.getpid())

    async def _adopt(
        self, kept: list[Path], scope: trio.CancelScope, done: trio.Event
    ) -> None:
        """Check and adopt the pooled workspaces the last supervisor kept (see
        :meth:`~lattice_workers.actors._pool.WorkspacePool.adopt`); ``scope`` stops it
        at shutdown, ``done`` says it is over."""
        pool = self.executor.pool
        try:
            with scope:
                await pool.adopt(kept)
            log.info(
                "%d of %d pooled workspaces kept by the last supervisor adopted",
                pool.adopted,
                len(kept),
            )
        except Exception:  # the repository gone, say: the runs go on without them
            log.exception("could not adopt the pooled workspaces the last supervisor kept")
        finally:
            done.set()

    async def _watch_runtime(self) -> None:
        """Drain and stop when a worker removes our socket (see :mod:`._watch`)."""
        socket = ipc_path(self.endpoint)
        try:
            watcher = Inotify()
        except OSError as exc:
            log.warning("cannot watch the runtime folder (%s); a removed socket goes unseen", exc)
            return
        try:
            folders = {self.run_dir}
            if socket is not None:
                folders.add(socket.parent)
            for folder in folders:
                watcher.watch(folder)
            async for path in watcher.gone():
                if self._shutdown.is_set():
                    return  # our own cleanup removes the socket
                if path in folders or path == socket:
                    log.warning(
                        "%s was removed (did a worker delete .lattice/run?): this supervisor "
                        "can no longer be reached, so it stops accepting runs, lets its %d "
                        "live runs end on their own, and then exits; the next command "
                        "starts a new supervisor",
                        path,
                        len(self.registry.ps()),
                    )
                    self.request_shutdown(drain=True)
                    return
        except OSError as exc:
            log.warning("stopped watching the runtime folder: %s", exc)
        finally:
            watcher.close()

    async def _watch_signals(self, signals: Any) -> None:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            self.request_shutdown()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (a worktree left for recovery), or already gone


def _without_environment(handler: Handler) -> Handler:
    """``handler``, with the environment a Run request carries dropped (a plain TCP
    listener: what crossed the network in clear is not given to a worker)."""

    async def handle(req: AnyRequest, send: Send) -> None:
        if isinstance(req, Run) and req.env is not None:
            req = msgspec.structs.replace(req, env=None)
        await handler(req, send)

    return handle


def _worker_base_environment(run_dir: Path) -> dict[str, str]:
    """The supervisor's environment, with a ``lattice`` command reachable.

    A worker is told to call ``lattice show $LATTICE_TASK_ID``; that must work even
    when the virtual environment we run from is not on the user's PATH and when
    lattice-tracker (whose executable that is) is not installed: see
    :mod:`lattice_workers._command`.
    """
    env = dict(os.environ)
    # A supervisor started from a git hook inherits variables that would point the
    # worker's git at the main repository instead of its worktree.
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"):
        env.pop(name, None)
    add_lattice_to_path(env, run_dir)
    return env


def _start_logging(board: Board, foreground: bool) -> logging.handlers.QueueListener:
    """Log lines go through a queue to a listener thread, so the Trio loop never writes files."""
    log_dir = board.dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        log_dir / "supervisor.log",
        maxBytes=LOG_MAX_BYTES,
        backupCount=LOG_BACKUPS,
        encoding="utf-8",
    )
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [file_handler]
    if foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(formatter)
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root_logger = logging.getLogger("lattice_workers")
    root_logger.setLevel(logging.INFO)
    root_logger.handlers[:] = [TemplateQueueHandler(q)]
    # Repeated warnings are counted, not written one by one (see _logsummary).
    listener = logging.handlers.QueueListener(q, RepeatSummarizer(handlers))
    listener.start()
    return listener


def run_supervisor(
    board: Board, *, listen: list[str] | None = None, ready_fd: int | None = None
) -> int:
    """Run a supervisor in this process until it is told to stop. Returns the exit code.

    ``ready_fd``: a pipe on which ``ok <pid> <endpoint>`` or ``error <sentence>`` is
    written once, so that ``lattice supervisor start`` returns exactly when the
    supervisor answers (or has failed), without polling.
    """

    def tell(line: str) -> None:
        if ready_fd is not None:
            try:
                os.write(ready_fd, (line + "\n").encode())
                os.close(ready_fd)
            except OSError:
                pass

    lock = PidLock(board.dir)
    try:
        lock.acquire()
    except LatticeError as err:
        tell(f"error {err.message}")
        raise
    listener = _start_logging(board, foreground=ready_fd is None)
    try:
        endpoints = [default_endpoint(board.root), *(listen or [])]
        supervisor = Supervisor(board, endpoints=endpoints, lock=lock)
        trio.run(supervisor.run, lambda: tell(f"ok {os.getpid()} {supervisor.endpoint}"))
        return 0
    except LatticeError as err:
        tell(f"error {err.message}")
        log.error("%s", err.message)
        raise
    except BaseException as exc:
        tell(f"error {exc}")
        log.exception("supervisor failed")
        raise
    finally:
        listener.stop()
        for handler in listener.handlers:
            handler.close()  # the summaries of repeated warnings still counting
        lock.release()


def _ray_executor(board: Board, settings: Settings) -> Any:
    """The Ray cluster's executor when ``workers.executor`` names one, else None.

    Made without joining the cluster: the first run that goes there joins (and a
    cluster that does not answer refuses that run, not the supervisor's start). A
    reload makes another when the address changes (:func:`_follow_executor`).
    """
    if settings.executor.kind != "ray":
        return None
    from lattice_workers.executors.ray._executor import RayExecutor

    return RayExecutor(board.root, settings.executor)


def _executor_change_allowed(executors: list[Any], new: ExecutorConfig) -> None:
    """Refuse a reload that moves this supervisor to another Ray cluster once it has
    joined one: a process joins one Ray cluster for its life (``ray.init``), and its
    runs there are followed through that connection. ``executors``: the current one
    and those retired by earlier reloads (a detour through "local" does not leave the
    cluster joined before)."""
    current = next((e for e in executors if e is not None and e.joined), None)
    if current is None or new.kind != "ray":
        return
    if new.address != current.config.address:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"workers.executor.address changed from {current.config.address} to "
            f"{new.address}, but this supervisor has joined the cluster at "
            f"{current.config.address} (a process joins one Ray cluster); restart the "
            "supervisor (lattice-workers supervisor stop, then start) to use the new one",
        )


def _follow_executor(
    ctx: RunContext, board: Board, settings: Settings, retired: list[Any]
) -> None:
    """``workers.executor`` after a reload, for the runs that start from now on; an
    attempt in flight holds the executor it started with. The same cluster keeps its
    executor (its hosts, its connection) with the new resources and
    ``when_unreachable``; another one (allowed only before joining the first, see
    :func:`_executor_change_allowed`) or none retires it."""
    new = settings.executor
    ctx.default_executor = new.kind
    current = ctx.ray
    if new.kind == "ray" and current is not None and current.config.address == new.address:
        current.config = new
        return
    if current is not None:
        retired.append(current)
    ctx.ray = _ray_executor(board, settings)


#: How long the start waits at most for the cluster's orphans to be settled.
SETTLE_CLUSTER_SECONDS = 120.0


async def _settle_cluster(ray: Any) -> dict[tuple[str, int], dict[str, Any]]:
    """End what a previous supervisor of this board left on the cluster (after its
    ``kill -9``): every attempt actor in the board's namespace, its work kept as
    ``refs/lattice/runs/<run>/<attempt>`` when its node answers. Recovery then closes
    those runs on the board as ``orphaned``, their terminal events naming the work
    kept (the ``changes`` returned, by run id and attempt). Bounded; a cluster that
    does not answer is logged and settled by a later start."""
    try:
        with trio.fail_after(SETTLE_CLUSTER_SECONDS):
            settled = await ray.settle_orphans()
    except (LatticeError, trio.TooSlowError) as err:
        log.warning("recovery: could not settle this board's runs on the Ray cluster: %s", err)
        return {}
    kept: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in settled:
        if entry.get("changes") and entry.get("attempt"):
            kept[(entry["run_id"], int(entry["attempt"]))] = entry["changes"]
        log.info(
            "recovery: ended %s on Ray node %s (%s)", entry["run_id"], entry.get("node", "?"),
            "work kept" if (entry.get("changes") or {}).get("ref") else
            entry.get("error") or "nothing to keep",
        )
    return kept
