"""The registry: at most one live run per (task, worker), caps, and the queue.

Why a duplicate run is impossible: :meth:`Registry.submit` validates first (that
part awaits: files, git), then checks the key and inserts the new actor in
:attr:`Registry.live` in straight-line code with no ``await`` between the check and
the insert. Trio switches tasks only at checkpoints, so no other request can slip in
between. No lock is involved, so there is no lock to forget.

Admission is first in, first out, under a global cap and per-worker caps. A queued
run whose worker is at its own cap does not hold back runs of other workers behind
it; among runs that can start, the oldest starts first.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, OrderedDict

import msgspec
import trio
from trio_util import AsyncValue

from lattice_workers.actors._definitions import (
    AGENT_ENGINES,
    LoadedWorker,
    WorkerDefinition,
    WorkerSet,
    load_workers,
    preflight,
    programs_of,
)
from lattice_workers.actors._environment import client_base, worker_variable
from lattice_workers.actors._journal import JournalRecord, RunRequest
from lattice_workers.actors._record import RunRecord
from lattice_workers.actors._run import RunActor, RunContext
from lattice_workers.actors._state import Reason, RunState
from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol._messages import Run, RunInfo, WorkerInfo
from lattice_workers.store import new_id, validate_actor
from lattice_workers.store._run_events import PROCESS_END_TYPES, ended_data, started_data

log = logging.getLogger("lattice_workers.supervisor.registry")


class Registry:
    """Owns every run actor (in its nursery) and every decision about starting one."""

    def __init__(
        self,
        ctx: RunContext,
        *,
        max_concurrent: int = 8,
        keep_finished: int = 1000,
        keep_finished_seconds: float = 7 * 24 * 3600,
        actor_class: type[RunActor] = RunActor,
    ) -> None:
        self.ctx = ctx
        #: What runs a run: :class:`RunActor`, or a stand-in in the tests of the queue.
        self.actor_class = actor_class
        self.max_concurrent = max_concurrent
        self.keep_finished = keep_finished
        self.keep_finished_seconds = keep_finished_seconds
        self.live: dict[tuple[str, str], RunActor] = {}
        self.by_id: dict[str, RunActor] = {}
        self.finished: OrderedDict[str, RunInfo] = OrderedDict()
        self.live_count: AsyncValue[int] = AsyncValue(0)
        self.closing = False
        self._queue: list[RunActor] = []
        self._admitted: dict[str, trio.Event] = {}
        self._running_total = 0
        self._running_by_worker: Counter[str] = Counter()
        self._by_idempotency: dict[str, str] = {}
        self._seq = 0
        self._workers: WorkerSet | None = None
        self._nursery: trio.Nursery | None = None
        self._compacting = False
        #: Today's spend of the board's agents, for ``workers.daily_budget_usd`` (made
        #: at the first question: most boards set no budget).
        #: The Ray cluster did not answer and ``when_unreachable`` is "queue": runs
        #: that go there stay queued until it answers (:meth:`_wait_for_cluster`).
        self.cluster_down = False
        self._cluster_changed = trio.Event()

    # ------------------------------------------------------------------ nursery

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery that owns every actor until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def restore_finished(self, records: list[JournalRecord]) -> None:
        """Load finished runs from the journal for ``ps -a``, ``show`` and idempotency."""
        for record in records:
            info = record.run
            self.finished[info.run_id] = info
            if info.idempotency_key:
                self._by_idempotency[info.idempotency_key] = info.run_id
            self._seq = max(self._seq, record.seq)
        self._trim_finished()

    # ------------------------------------------------------------------ definitions

    async def workers(self) -> WorkerSet:
        """The definitions, re-read when any file in workers/ changed."""
        return await trio.to_thread.run_sync(self._current_workers)

    def _current_workers(self) -> WorkerSet:
        """The one place definitions are (re)loaded; blocking, so called from threads."""
        current = self._workers
        if current is None or current.stale():
            current = self._workers = load_workers(self.ctx.board.root)
        return current

    async def reload(self) -> WorkerSet:
        self._workers = None
        return await self.workers()

    def set_limits(
        self, *, max_concurrent: int, keep_finished: int, keep_finished_seconds: float
    ) -> None:
        """New caps and retention, applied now: a raised cap admits queued runs at once.

        A lowered cap stops nothing that runs; it holds back new admissions until the
        running count is under it.
        """
        self.max_concurrent = max_concurrent
        self.keep_finished = keep_finished
        self.keep_finished_seconds = keep_finished_seconds
        self._trim_finished()
        self._dispatch()

    async def worker_infos(self) -> list[WorkerInfo]:
        workers = await self.workers()
        return [_worker_info(w) for w in workers.workers.values()]

    # ------------------------------------------------------------------ submit

    async def submit(self, req: Run) -> tuple[RunActor | RunInfo, bool]:
        """Accept a run, or return the run an idempotency key names.

        Raises ``ALREADY_RUNNING`` (details: the live run) when the key has a live run.
        """
        # The client's environment lives in the actor's memory only: the request the
        # journal keeps (RunRequest) has no field for it.
        client_env = req.env
        if self.closing:
            raise LatticeError(Code.SHUTTING_DOWN, "the supervisor is shutting down; no new runs")
        if req.idempotency_key and (seen := self._lookup_idempotent(req.idempotency_key)):
            return seen, False
        resume: tuple[str, str | None] | None = None
        if req.continue_run is not None:
            commit_sha, session, cwd = await trio.to_thread.run_sync(self._continuation, req)
            req = msgspec.structs.replace(req, revision=commit_sha)
            resume = (session, cwd)
        worker, task_id, short_id, actor, commit, base, merge_base = await self._validate(
            req, client_env
        )
        # ---- no await from here to the insert: this is what makes duplicates impossible
        if self.closing:
            raise LatticeError(Code.SHUTTING_DOWN, "the supervisor is shutting down; no new runs")
        if req.idempotency_key and (seen := self._lookup_idempotent(req.idempotency_key)):
            return seen, False
        key = (task_id, worker.name.lower())
        live = self.live.get(key)
        if live is not None:
            raise LatticeError(
                Code.ALREADY_RUNNING,
                f"worker '{worker.name}' already has a live run on {short_id or task_id}: "
                f"{live.run_id} ({live.record.state})",
                details=live.view(),
            )
        self._seq += 1
        record = RunRecord(
            run_id=new_id("run"),
            task_id=task_id,
            short_id=short_id,
            worker=worker.name,
            actor=actor,
            requested_by=req.requested_by,
            commit_sha=commit,
            base_ref=base,
            merge_base=merge_base,
            created_at=time.time(),
            idempotency_key=req.idempotency_key,
        )
        request = RunRequest.from_wire(req)
        if resume is not None:
            request = msgspec.structs.replace(
                request, resume_session=resume[0], resume_cwd=resume[1]
            )
        run = self.actor_class(
            self.ctx,
            record,
            worker,
            request,
            self._seq,
            on_exit=self._on_exit,
            wait_admitted=self._wait_admitted,
            client_env=client_env,
        )
        self._insert(run)
        self._dispatch()  # admits it at once when a slot is free
        info = run.view()
        self.ctx.on_state(info, "started")
        # ---- inserted; now make the acceptance durable before anyone hears of it
        if not run.admitted:
            # Queued: the journal alone records it, before its actor exists (so that no
            # later record of the actor can land before this one).
            try:
                entry = JournalRecord(seq=run.seq, run=info, request=request)
                await trio.to_thread.run_sync(lambda: self.ctx.journal.write(entry, durable=True))
            except OSError as exc:
                self._abandon(run)
                raise LatticeError(Code.INTERNAL, f"could not record the run: {exc}") from exc
            run.accept_recorded = True
        assert self._nursery is not None
        self._nursery.start_soon(run.run, name=f"run {info.run_id}")
        # Admitted at once: its process_started on the board (durable) records the
        # acceptance, with its first journal record in the same thread hop; the
        # reply waits for it, so a reply means the run is on the board.
        if not run.accept_recorded:
            await run.recorded.wait()
        return run, True

    async def requeue(self, record: JournalRecord) -> None:
        """Queue again a run a previous supervisor accepted but never started."""
        info = record.run
        self._seq = max(self._seq, record.seq)
        try:
            worker = (await self.workers()).get(info.worker)
            if not worker.valid:
                raise LatticeError(Code.INVALID_WORKER, "; ".join(worker.problems))
        except LatticeError as err:
            ended = msgspec.structs.replace(
                record,
                run=msgspec.structs.replace(
                    info,
                    state=str(RunState.FAILED),
                    reason="cancelled",
                    error=f"could not be requeued after a restart: {err.message}",
                    ended_at=time.time(),
                ),
            )
            await trio.to_thread.run_sync(self.ctx.journal.write, ended)
            self.restore_finished([ended])
            return
        key = (info.task_id, worker.name.lower())
        if key in self.live:
            return  # already requeued (a duplicate record)
        run = self.actor_class(
            self.ctx,
            RunRecord.from_view(info),
            worker,
            record.request,  # a RunRequest: never with the client's environment
            record.seq,
            on_exit=self._on_exit,
            wait_admitted=self._wait_admitted,
            requeued=True,
        )
        run.accept_recorded = True  # the journal it came from holds its acceptance
        self._insert(run)
        assert self._nursery is not None
        self._nursery.start_soon(run.run, name=f"run {info.run_id}")
        ray = self.ctx.ray
        if not self.cluster_down and self._goes_to_cluster(run) and (
            ray.config.when_unreachable == "queue"
        ):
            try:
                await ray.check()
            except LatticeError:
                self._hold_for_cluster()  # it waits in the queue, as it did before
        self._dispatch()

    def _insert(self, run: RunActor) -> None:
        self.live[run.key] = run
        self.by_id[run.run_id] = run
        if run.record.idempotency_key:
            self._by_idempotency[run.record.idempotency_key] = run.run_id
        self._queue.append(run)
        self._admitted[run.run_id] = trio.Event()
        self.live_count.value = len(self.live)

    def _lookup_idempotent(self, key: str) -> RunActor | RunInfo | None:
        run_id = self._by_idempotency.get(key)
        if run_id is None:
            return None
        return self.by_id.get(run_id) or self.finished.get(run_id)

    async def _validate(
        self, req: Run, client_env: dict[str, str] | None = None
    ) -> tuple[LoadedWorker, str, str | None, str, str | None, str | None, str | None]:
        """Everything a Run is refused for, before anything is written.

        The file work (definitions, task, actor, engine on PATH) happens in one thread
        hop, then the revisions are asked of the repository's ``cat-file`` (plus a
        cached merge-base): a trivial run's cost is dominated by such fixed costs, so
        they are counted. Overlapping the two gains nothing: the hop's work holds the
        GIL that reading the answer needs (measured: the same wall time, more CPU).
        """
        worker, task_id, short_id, actor, path_env = await trio.to_thread.run_sync(
            self._check_files, req, client_env
        )
        defn = worker.definition
        assert defn is not None
        if self.ctx.executor_kind(defn) == "ray":
            await self._check_cluster(defn, path_env)
        root = self.ctx.board.root
        worktrees = self.ctx.worktrees
        revision = req.revision
        if req.from_run is not None:
            revision = await self._kept_snapshot(req)
        bases = [req.base] if req.base else self._default_bases()
        revs = [revision or "HEAD", *bases]
        try:
            commit, *base_shas = await worktrees.resolve_many(root, revs)
        except LatticeError:
            if revision is not None or req.base is not None or defn.worktree:
                raise
            return worker, task_id, short_id, actor, None, None, None  # no git: fine here
        if commit is None:
            if revision is None and not defn.worktree:
                return worker, task_id, short_id, actor, None, None, None
            await worktrees.resolve_commit(root, revision)  # raises the clear error
        if req.base and base_shas[0] is None:
            raise LatticeError(
                Code.NOT_FOUND, f"base {req.base!r} is not a commit in this repository"
            )
        base, base_sha = next(
            ((name, sha) for name, sha in zip(bases, base_shas, strict=True) if sha), (None, None)
        )
        merge_base = None
        if base_sha and commit:
            merge_base = await worktrees.merge_base(root, base_sha, commit)
        return worker, task_id, short_id, actor, commit, base, merge_base

    async def _kept_snapshot(self, req: Run) -> str:
        """The snapshot sha of the work ``req.from_run`` kept (its last attempt's): the
        commit the new run starts at. Refused with ``revision`` (two starting points),
        for an id that is no run's, a run unknown here with nothing kept, and a run
        that kept nothing (or whose work was applied or discarded)."""
        from lattice_workers.actors._keep import KeepError, check_run_id, kept

        assert req.from_run is not None
        if req.revision is not None:
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"--from {req.from_run} and --commit {req.revision} both say where the run "
                "starts; give one of them",
            )
        from_run = check_run_id(req.from_run)
        try:
            _, sha, _ = await trio.to_thread.run_sync(kept, self.ctx.board.root, from_run)
        except KeepError as err:
            raise LatticeError(
                Code.NOT_FOUND, f"cannot read the kept work of {from_run}: {err}"
            ) from None
        except LatticeError as err:
            known = from_run in self.by_id or from_run in self.finished
            if err.code is Code.NOT_FOUND and not known:
                raise LatticeError(
                    Code.NOT_FOUND,
                    f"no run {from_run} is known here and no work of it is kept; name a "
                    "run that kept work (see `lattice worker ps -a`)",
                ) from None
            raise
        return sha

    async def _check_cluster(self, defn: WorkerDefinition, path_env: str) -> None:
        """A run on the Ray cluster, before anything is written: the cluster answers
        (else ``CLUSTER_UNAVAILABLE``, or, when ``when_unreachable`` says "queue", the
        run is accepted and waits in the queue), and the programs it executes are on
        its nodes (else ``ENGINE_NOT_FOUND``, as for a program missing here)."""
        ray = self.ctx.ray
        try:
            await ray.check()
        except LatticeError as err:
            if err.code is not Code.CLUSTER_UNAVAILABLE or ray.config.when_unreachable != "queue":
                raise
            log.warning("the Ray cluster does not answer; runs for it wait: %s", err.message)
            self._hold_for_cluster()
            return
        programs = [p for p in programs_of(defn) if "/" not in p]
        problem = await ray.missing_programs(programs, path_env)
        if problem:
            raise LatticeError(
                Code.ENGINE_NOT_FOUND, f"worker {defn.name!r} cannot start: {problem}"
            )

    def _hold_for_cluster(self) -> None:
        """Hold back the runs that go to the cluster until it answers again."""
        if self.cluster_down:
            return
        self.cluster_down = True
        assert self._nursery is not None
        self._nursery.start_soon(self._wait_for_cluster, name="waiting for the Ray cluster")

    def cluster_changed(self) -> None:
        """``workers.executor`` was reloaded: a waiting run asks the cluster now."""
        self._cluster_changed.set()

    async def _wait_for_cluster(self) -> None:
        """Ask the cluster again after 1, 2, 4 ... up to 30 s (or at once when the config
        changed) until it answers, then admit the runs queued for it. Asked, not told:
        nothing tells this machine that a cluster came (back) up."""
        delay = 1.0
        while self.ctx.ray is not None:
            with trio.move_on_after(delay):
                await self._cluster_changed.wait()
            self._cluster_changed = trio.Event()
            try:
                await self.ctx.ray.check()
            except LatticeError:
                delay = min(delay * 2, 30.0)
                continue
            log.info("the Ray cluster answers again; the runs queued for it start")
            break
        self.cluster_down = False
        self._dispatch()

    def _goes_to_cluster(self, run: RunActor) -> bool:
        try:
            return self.ctx.executor_kind(run.definition) == "ray"
        except LatticeError:
            return False

    def _check_files(
        self, req: Run, client_env: dict[str, str] | None = None
    ) -> tuple[LoadedWorker, str, str | None, str, str]:
        """The blocking part of validation; runs in a thread."""
        board = self.ctx.board
        worker = self._current_workers().get(req.worker)
        if not worker.valid or worker.definition is None:
            raise LatticeError(
                Code.INVALID_WORKER,
                f"worker '{worker.name}' cannot start: " + "; ".join(worker.problems),
                details={"problems": worker.problems},
            )
        defn = worker.definition
        if defn.engine not in AGENT_ENGINES and (
            req.max_cost_usd is not None or req.max_turns is not None
        ):
            raise LatticeError(
                Code.INVALID_REQUEST,
                f"worker '{worker.name}' is a script: --max-cost and --max-turns only apply "
                "to agent workers (claude, codex, gemini)",
            )
        task_id = board.resolve_task(req.task)
        if defn.engine in AGENT_ENGINES:
            self._check_budget()
        short_id = board.read_snapshot(task_id).get("short_id")
        actor = validate_actor(req.actor or worker.actor)
        # The engine is looked for on the PATH the worker will have: the client's.
        base = (
            self.ctx.environ
            if client_env is None
            else client_base({"PATH": client_env.get("PATH", "")}, self.ctx.path_extras)
        )
        path_env = worker_variable(base, defn, "PATH")
        if path_env is None:  # an empty PATH finds nothing, here as in the worker's exec
            path_env = os.defpath
        # On a cluster, the nodes look for the programs on PATH (_check_cluster); the
        # ones named by a path in the project are looked for here.
        remote = self.ctx.executor_kind(defn) == "ray"
        problem = preflight(defn, board.root, path_env, paths_only=remote)
        if problem:
            raise LatticeError(Code.ENGINE_NOT_FOUND, problem)
        return worker, task_id, short_id, actor, path_env

    def _continuation(self, req: Run) -> tuple[str, str, str | None]:
        """``--continue RUN``: (the commit to start at, the agent's session, the folder
        RUN ran in), or a clear error (blocking: reads the task's events).

        The commit is RUN's kept work (its last attempt's snapshot) when it changed
        files, else the commit it ran at."""
        run_id = str(req.continue_run)
        if req.revision is not None:
            raise LatticeError(
                Code.INVALID_REQUEST,
                "--continue starts at the kept work of the run it continues; leave out --commit",
            )
        defn = self._current_workers().get(req.worker).definition
        if defn is None or defn.engine not in AGENT_ENGINES:
            raise LatticeError(
                Code.INVALID_REQUEST,
                f"worker '{req.worker}' is not an agent: only claude, codex and gemini "
                "sessions can be continued",
            )
        if run_id in self.by_id:
            raise LatticeError(
                Code.CONFLICT,
                f"run {run_id} is still live; wait for it (`lattice worker wait {run_id}`) "
                "before continuing it",
            )
        board = self.ctx.board
        task_id = board.resolve_task(req.task)
        events = board.read_events(task_id).events
        ended = [
            e for e in events
            if e.get("type") in PROCESS_END_TYPES and ended_data(e).get("run_id") == run_id
        ]
        if not ended:
            raise LatticeError(
                Code.NOT_FOUND,
                f"no finished run {run_id} on task {req.task}; `lattice show {req.task}` "
                "lists its runs",
            )
        last = ended_data(ended[-1])
        if str(last.get("process_type") or "").lower() != defn.name.lower():
            raise LatticeError(
                Code.INVALID_REQUEST,
                f"run {run_id} is a run of {last.get('process_type')}, not of {defn.name}; "
                "continue it with its own worker",
            )
        agent = last.get("agent")
        session = agent.get("session_id") if isinstance(agent, dict) else None
        if not isinstance(session, str) or not session:
            raise LatticeError(
                Code.INVALID_REQUEST,
                f"run {run_id} recorded no agent session (its agent never started one); "
                "start a new run instead",
            )
        started = next(
            (e for e in events if e.get("id") == last.get("started_event_id")), None
        )
        started_data_ = started_data(started) if started is not None else None
        changes = last.get("changes")
        commit = None
        if isinstance(changes, dict) and changes.get("ref"):
            commit = changes.get("snapshot_sha")
        commit = commit or last.get("commit_sha") or "HEAD"
        cwd = started_data_.get("worktree_path") if started_data_ is not None else None
        return str(commit), session, str(cwd) if cwd else str(board.root)

    def _check_budget(self) -> None:
        """``BUDGET_EXCEEDED`` when ``workers.daily_budget_usd`` is spent today (UTC).

        Only agent runs are refused: a script reports no cost. Blocking (reads the
        events appended since the last question); runs in the validation thread.
        """
        section = self.ctx.board.config.get("workers")
        budget = section.get("daily_budget_usd") if isinstance(section, dict) else None
        if not isinstance(budget, int | float) or isinstance(budget, bool):
            return
        spent = self.ctx.spend.spent()
        if spent >= budget:
            raise LatticeError(
                Code.BUDGET_EXCEEDED,
                f"the board's daily budget is spent: ${spent:.2f} of ${budget:.2f} today "
                "(UTC); raise workers.daily_budget_usd in .lattice/config.json (then "
                "`lattice supervisor reload`), or wait until midnight UTC",
                details={"spent_usd": spent, "daily_budget_usd": budget},
            )

    def _default_bases(self) -> list[str]:
        configured = self.ctx.board.config.get("workers", {})
        if isinstance(configured, dict) and isinstance(configured.get("base_ref"), str):
            return [str(configured["base_ref"])]
        return ["main", "master"]

    # ------------------------------------------------------------------ admission

    async def _wait_admitted(self, run: RunActor) -> None:
        event = self._admitted.get(run.run_id)
        if event is not None:
            await event.wait()

    def _dispatch(self) -> None:
        """Admit, oldest first, every queued run that its caps allow."""
        for run in list(self._queue):
            if self._running_total >= self.max_concurrent:
                break
            if self.cluster_down and self._goes_to_cluster(run):
                continue  # like a worker at its cap: holds back no run behind it
            name = run.worker.name.lower()
            cap = run.definition.max_concurrent
            if cap is not None and self._running_by_worker[name] >= cap:
                continue
            self._queue.remove(run)
            self._running_total += 1
            self._running_by_worker[name] += 1
            run.admitted = True
            self._admitted.pop(run.run_id).set()

    def queue_position(self, run: RunActor) -> int | None:
        try:
            return self._queue.index(run) + 1
        except ValueError:
            return None

    def _on_exit(self, run: RunActor) -> None:
        if run.admitted:
            self._running_total -= 1
            self._running_by_worker[run.worker.name.lower()] -= 1
        self._forget(run)
        self.finished[run.run_id] = run.view()
        self._trim_finished()
        self._dispatch()
        self._maybe_compact_journal()

    def _maybe_compact_journal(self) -> None:
        """Keep the append-only journal bounded while the supervisor runs for weeks."""
        journal = self.ctx.journal
        if self._nursery is None or self._compacting:
            return
        if journal.appended < max(1000, 4 * (self.keep_finished + len(self.live))):
            return
        self._compacting = True

        async def compact() -> None:
            try:
                await trio.to_thread.run_sync(
                    lambda: journal.compact_now(
                        keep_finished=self.keep_finished,
                        max_age_seconds=self.keep_finished_seconds,
                    )
                )
            except OSError:
                log.exception("could not compact the run journal")
            finally:
                self._compacting = False

        self._nursery.start_soon(compact)

    def _abandon(self, run: RunActor) -> None:
        """Undo :meth:`submit`'s insert of a run that was never recorded or started."""
        if run.admitted:
            self._running_total -= 1
            self._running_by_worker[run.worker.name.lower()] -= 1
        self._forget(run)
        self._dispatch()

    def _forget(self, run: RunActor) -> None:
        if self.live.get(run.key) is run:
            del self.live[run.key]
        self.by_id.pop(run.run_id, None)
        if run in self._queue:
            self._queue.remove(run)
        self._admitted.pop(run.run_id, None)
        self.live_count.value = len(self.live)

    def _trim_finished(self) -> None:
        horizon = time.time() - self.keep_finished_seconds
        while self.finished:
            oldest_id, oldest = next(iter(self.finished.items()))
            if len(self.finished) > self.keep_finished or (oldest.ended_at or 0) < horizon:
                del self.finished[oldest_id]
                if oldest.idempotency_key:
                    self._by_idempotency.pop(oldest.idempotency_key, None)
            else:
                break

    # ------------------------------------------------------------------ queries

    def get(self, run_id: str) -> RunActor | RunInfo:
        run = self.by_id.get(run_id)
        if run is not None:
            return run
        info = self.finished.get(run_id)
        if info is None:
            raise LatticeError(Code.NOT_FOUND, f"no run {run_id!r} (see `lattice worker ps -a`)")
        return info

    def info(self, run: RunActor | RunInfo) -> RunInfo:
        """A run's public record, with its live queue position."""
        if isinstance(run, RunInfo):
            return run
        return run.view(self.queue_position(run))

    def ps(self, *, include_finished: bool = False, task_id: str | None = None) -> list[RunInfo]:
        """Queued runs in queue order, then the others: costs the live runs, not the board."""
        waiting = set(self._queue)
        queued = [self.info(r) for r in self._queue]
        others = [self.info(r) for r in self.live.values() if r not in waiting]
        runs = queued + sorted(others, key=lambda i: i.created_at)
        if include_finished:
            runs += list(reversed(self.finished.values()))
        if task_id is not None:
            runs = [r for r in runs if r.task_id == task_id]
        return runs

    def find_live(self, task_id: str, worker: str) -> RunActor:
        run = self.live.get((task_id, worker.lower()))
        if run is None:
            raise LatticeError(Code.NOT_FOUND, f"no live run of worker '{worker}' on {task_id}")
        return run

    # ------------------------------------------------------------------ control

    def cancel(self, run: RunActor, reason: Reason = Reason.CANCELLED) -> None:
        """Cancel one run; a queued one leaves the queue and writes nothing."""
        run.cancel(reason)
        if run in self._queue:
            self._queue.remove(run)
            event = self._admitted.pop(run.run_id, None)
            if event is not None:
                event.set()

    async def close(self, *, drain: bool = False, deadline_seconds: float = 60.0) -> None:
        """Refuse new runs, then cancel (or, with ``drain``, wait for) every live run."""
        self.closing = True
        if drain:
            with trio.move_on_after(deadline_seconds):
                await self.live_count.wait_value(0)
        for run in list(self.live.values()):
            self.cancel(run, Reason.SUPERVISOR_SHUTDOWN)
        await self.live_count.wait_value(0)


def _worker_info(worker: LoadedWorker) -> WorkerInfo:
    defn = worker.definition
    return WorkerInfo(
        name=worker.name,
        path=str(worker.path),
        valid=worker.valid,
        problems=list(worker.problems),
        engine=defn.engine if defn else None,
        description=defn.description if defn else None,
        actor=worker.actor if defn else None,
        worktree=defn.worktree if defn else True,
        max_concurrent=defn.max_concurrent if defn else None,
    )
