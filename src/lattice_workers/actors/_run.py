"""One run of one worker on one task, from the queue to the last cleanup step.

A :class:`RunActor` is a Trio task in the registry's nursery. It owns everything the
run creates (its ``process_started`` event, its worktree, its process group, its log
file) and gives each back in its own ``finally``: whatever ends the run (exit,
deadline, cancel, spawn failure, supervisor shutdown), ``_finish`` runs shielded and
under a deadline, kills what is left of the process group, writes exactly one
terminal event, removes the worktree, and only then makes the final state visible.

State is a :class:`trio_util.AsyncValue`: waiters (``Wait``, ``--wait``, the
shutdown path) wait on it instead of polling.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import msgspec
import trio
from trio_util import AsyncValue

from lattice_workers.actors._cgroup import RunCgroups
from lattice_workers.actors._child import Child
from lattice_workers.actors._definitions import LoadedWorker, WorkerDefinition, command_for
from lattice_workers.actors._environment import (
    client_base,
    lattice_variables,
    worker_environment,
)
from lattice_workers.actors._files import open_run_file
from lattice_workers.actors._journal import Journal, JournalRecord, RunRequest
from lattice_workers.actors._keep import KeepError, keep_work
from lattice_workers.actors._log_tail import read_log_tail
from lattice_workers.actors._logsink import DEFAULT_MAX_MIB, LogSink
from lattice_workers.actors._process_group import kill_group, process_start_time
from lattice_workers.actors._state import Reason, RunState
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.errors import LatticeError
from lattice_workers.protocol._messages import RunInfo
from lattice_workers.store import Board, new_id
from lattice_workers.store._run_events import (
    PROCESS_COMPLETED,
    PROCESS_FAILED,
    PROCESS_STARTED,
    ProcessCompleted,
    ProcessEnded,
    ProcessFailed,
    ProcessStarted,
)

log = logging.getLogger("lattice_workers.supervisor.run")

#: Time allowed for cleanup beyond the kill grace: git's removal of a worktree, the
#: terminal event, the journal. Bounded so that shutdown always ends.
CLEANUP_SECONDS = 60.0
#: How long an attempt's end waits at most for the scan for its leftovers (that scan
#: has its own bound, ``_settle.KILL_SECONDS``).
SWEEP_WAIT_SECONDS = 15.0
#: A result file larger than this is refused (SPEC section 2).
RESULT_MAX_BYTES = 64 * 1024
#: The first line of the log of a run that recovery requeued: the environment its
#: client sent was never written down, so it runs with the supervisor's.
REQUEUED_NOTE = (
    b"lattice-workers: this run was queued when the supervisor stopped and was requeued "
    b"by the next one; it runs with the supervisor's environment, not the environment "
    b"of the client that asked for it\n"
)

#: What an attempt's spawn gives: the process, why it could not start, or None when
#: a cancel came first.
Spawned = Child | Exception | None


@dataclass
class RunContext:
    """What every actor shares: the board, git, the journal, the hook runner."""

    board: Board
    worktrees: Worktrees
    journal: Journal
    results_dir: Path
    run_hooks: Callable[[list[dict[str, Any]]], None]
    environ: dict[str, str]
    #: Told (run id, attempt) when an attempt's process group is killed, so that what
    #: left the group dies too (:class:`~lattice_workers.actors._leftovers.LeftoverSweeper`).
    sweep_leftovers: Callable[[str, int], trio.Event | None] = lambda run_id, attempt: None
    #: Told each time a run's state changes, its record up to date (the ``Watch`` feed);
    #: the second argument is ``"started"`` for a run just accepted, else None.
    on_state: Callable[[RunInfo, str | None], None] = lambda info, kind: None
    #: The folders :attr:`environ`'s PATH ends with so that workers find ``lattice``;
    #: added to a client's PATH too (:func:`client_base`).
    path_extras: tuple[str, ...] = ()
    #: ``workers.log_max_mib``: a run's log keeps at most this much (a definition's
    #: own ``log_max_mib`` wins); see :mod:`~lattice_workers.actors._logsink`.
    log_max_mib: float = DEFAULT_MAX_MIB
    #: A cgroup per attempt where the system allows one (:mod:`._cgroup`).
    cgroups: RunCgroups | None = None


@dataclass
class Outcome:
    """How a started run ended; becomes its terminal event."""

    reason: Reason | None  # None means success
    error: str = ""
    exit_code: int | None = None
    signal: int | None = None


class RunActor:
    """The task that owns one run. Created and started only by the registry."""

    def __init__(
        self,
        ctx: RunContext,
        info: RunInfo,
        worker: LoadedWorker,
        request: RunRequest,
        seq: int,
        *,
        on_exit: Callable[[RunActor], None],
        wait_admitted: Callable[[RunActor], Awaitable[None]],
        client_env: dict[str, str] | None = None,
        requeued: bool = False,
    ) -> None:
        assert worker.definition is not None
        self.ctx = ctx
        self.info = info
        self.worker = worker
        self.definition: WorkerDefinition = worker.definition
        self.request = request
        #: The requesting client's environment (held in memory only, never journaled),
        #: else the supervisor's.
        self.base_env = (
            ctx.environ if client_env is None else client_base(client_env, ctx.path_extras)
        )
        #: Queued by a previous supervisor, requeued by recovery: the client's
        #: environment is gone with it (the log says so).
        self.requeued = requeued
        self.seq = seq
        self.state: AsyncValue[RunState] = AsyncValue(RunState(info.state))
        self._on_exit = on_exit
        self._wait_admitted = wait_admitted
        self._cancel_reason: Reason | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._process: Child | None = None
        self._sink: LogSink | None = None
        #: The supervisor stopped the attempt's process (cancel, timeout, shutdown).
        self._stopped = False
        self._pid_start_time: int | None = None
        self._outcome: Outcome | None = None
        self._started_mono: float | None = None
        #: Set by the registry when the run leaves the queue and holds a slot.
        self.admitted = False
        #: Whether the journal already holds the acceptance durably (the registry wrote
        #: it for a queued run); if not, the run's first write does.
        self.accept_recorded = False
        #: Set once the run is recorded (its first write) or has ended without one.
        self.recorded = trio.Event()
        self._attempt_closed = False

    # ------------------------------------------------------------------ identity

    @property
    def key(self) -> tuple[str, str]:
        return (self.info.task_id, self.worker.name.lower())

    @property
    def run_id(self) -> str:
        return self.info.run_id

    def _set_state(self, state: RunState) -> None:
        self.info.state = str(state)
        self.state.value = state
        self.ctx.on_state(self.info, None)

    # ------------------------------------------------------------------ control

    def cancel(self, reason: Reason = Reason.CANCELLED) -> None:
        """Ask the run to end. Idempotent; the actor does the stopping."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    @property
    def log_cut(self) -> int | None:
        """Where the log's marker line is once its middle was dropped (``log_max_mib``):
        a follower past the end of a log that shrank goes on from there."""
        sink = self._sink
        return sink.head if sink is not None and sink.truncated else None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """The whole life of the run. Never raises except ``Cancelled``.

        Each attempt is its own ``process_started`` ... end pair. A definition's
        ``retries`` start another attempt after ``exit_nonzero`` or ``timeout`` only,
        never after a cancel; the run ends as its last attempt ended.
        """
        try:
            await self._wait_admitted(self)
            while self._cancel_reason is None:
                await self._prepare_and_run()
                if not self._should_retry():
                    break
                with trio.move_on_after(CLEANUP_SECONDS) as closing:
                    closing.shield = True  # bounded, as in _finish: a hung git must not
                    await self._close_attempt()  # hold the supervisor's shutdown
                backoff = self.definition.retry_backoff_seconds * (2 ** (self.info.attempt - 1))
                with trio.CancelScope(deadline=trio.current_time() + backoff) as scope:
                    self._wait_scope = scope
                    if self._cancel_reason is None:
                        await trio.sleep_forever()
                self._wait_scope = None
                if self._cancel_reason is not None:
                    break
                self._next_attempt()
        except Exception as exc:  # a bug of ours: the run still ends on the record
            log.exception("run %s: unexpected error", self.run_id)
            if self.info.started_event_id is not None and self._outcome is None:
                self._outcome = Outcome(Reason.SPAWN_ERROR, f"internal error: {exc}")
        finally:
            with trio.move_on_after(self.definition.kill_grace_seconds + CLEANUP_SECONDS) as s:
                s.shield = True
                await self._finish()
            if s.cancelled_caught:
                log.error("run %s: cleanup did not finish in time", self.run_id)
            self.recorded.set()
            self._on_exit(self)

    def _should_retry(self) -> bool:
        outcome = self._outcome
        return (
            self._cancel_reason is None
            and outcome is not None
            and outcome.reason in (Reason.EXIT_NONZERO, Reason.TIMEOUT)
            and self.info.attempt <= self.definition.retries
        )

    def _next_attempt(self) -> None:
        """Forget the closed attempt; the record keeps its run id, key and request."""
        info = self.info
        info.attempt += 1
        for name in (
            "started_event_id", "log_path", "worktree_path", "pid", "started_at", "ended_at",
            "duration_seconds", "exit_code", "signal", "reason", "error", "result",
            "log_tail",
        ):
            setattr(info, name, None)
        self._process = None
        self._sink = None
        self._stopped = False
        self._pid_start_time = None
        self._outcome = None
        self._attempt_closed = False

    async def _prepare_and_run(self) -> None:
        self._set_state(RunState.PREPARING)
        self.info.started_at = time.time()
        self._started_mono = trio.current_time()
        try:
            if self.definition.worktree:
                started = await self._start_in_worktree()
            else:
                spawned = await self._write_started()
                assert not isinstance(spawned, tuple)  # without a worktree the hop spawns
                started = spawned
        except (LatticeError, OSError) as exc:  # a lock held too long, a full disk
            # Mostly nothing is on the board, so there is nothing to close there: the run
            # ends here, failed, with the reason on its record. When the event's log line
            # went down after all (see _write_started), the outcome ends it there too.
            message = exc.message if isinstance(exc, LatticeError) else str(exc)
            if self.info.started_event_id is not None:
                # The log line went down; what failed is the snapshot written after it.
                sentence = (
                    "process_started is in the task's log but the task's snapshot could "
                    f"not be written after it: {message}"
                )
            else:
                sentence = f"could not write process_started: {message}"
            log.error("run %s: %s", self.run_id, sentence)
            self.info.reason = str(Reason.SPAWN_ERROR)
            self.info.error = sentence
            self._outcome = Outcome(Reason.SPAWN_ERROR, self.info.error)
            return
        finally:
            self.recorded.set()
        if started is None or isinstance(started, Exception):
            if started is None:
                reason = self._cancel_reason or Reason.CANCELLED
                self._outcome = Outcome(reason, self._cancel_sentence())
            elif self._outcome is None:
                self._outcome = Outcome(
                    Reason.SPAWN_ERROR, f"could not start the worker: {started}"
                )
            return
        process = self._process = started
        self._set_state(RunState.RUNNING)
        timeout_min = self.request.timeout_minutes or self.definition.timeout_minutes
        async with trio.open_nursery() as copying:
            if self._sink is not None:  # the output flows while the process lives
                copying.start_soon(self._sink.pump)
            with trio.CancelScope(deadline=self._started_mono + timeout_min * 60) as scope:
                self._wait_scope = scope
                if self._cancel_reason is not None:
                    scope.cancel()
                await process.wait()
            self._wait_scope = None
            if process.returncode is None:
                reason = self._cancel_reason or Reason.TIMEOUT
                sentence = (
                    self._cancel_sentence()
                    if self._cancel_reason
                    else f"the worker ran past its deadline of {timeout_min:g} minutes"
                )
                await self._stop_process(process)
                self._outcome = Outcome(
                    reason, sentence, exit_code=None, signal=_signal_of(process.returncode)
                )
            else:
                self._outcome = _outcome_of_exit(process.returncode)
            # What is left in the pipe is copied once the group is killed (_close_attempt):
            # a daemon the worker left may hold the pipe open for good.
            copying.cancel_scope.cancel()

    async def _start_in_worktree(self) -> Spawned:
        """``process_started`` and the worktree at once, then the process in the worktree.

        The two are independent (the event names the worktree's folder beforehand), so
        git makes the worktree while the event's thread hop writes: a worktree run
        starts one board write sooner. A crash in between leaves a worktree that no
        run owns, which recovery removes, or a started run without one, which it
        closes. Raises why a ``process_started`` could not be written (a worktree made
        meanwhile is then removed by :meth:`_finish`); sets the outcome when the
        worktree fails; None when a cancel came first.
        """
        made: Path | LatticeError | None = None
        refused: LatticeError | OSError | None = None
        files: Spawned | tuple[int, str] = None

        async def make_worktree() -> None:
            nonlocal made
            try:
                made = await self.ctx.worktrees.create(
                    self.ctx.board.root, self.run_id, self.info.commit_sha or "HEAD"
                )
            except LatticeError as exc:
                made = exc
                return
            self.info.worktree_path = str(made)  # from here, cleanup removes it

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(make_worktree)
                try:
                    files = await self._write_started()
                except (LatticeError, OSError) as exc:
                    refused = exc
                    nursery.cancel_scope.cancel()  # no run: the worktree is not needed
                finally:
                    self.recorded.set()  # the reply need not wait for git
            if refused is not None:
                raise refused
            if not isinstance(files, tuple):
                return files  # the log could not be opened
            if isinstance(made, LatticeError):
                self._outcome = Outcome(Reason.WORKTREE_ERROR, f"worktree: {made.message}")
                return made
            if self._cancel_reason is not None or made is None:
                return None
            path, (log_fd, prompt_text) = made, files

            def spawn_and_note() -> Spawned:
                child = self._spawn(path, prompt_text, log_fd)
                if isinstance(child, Child):
                    self._journal_quietly()
                return child

            return await trio.to_thread.run_sync(spawn_and_note)
        finally:
            if isinstance(files, tuple):
                os.close(files[0])  # the worker has its own copy

    def _cancel_sentence(self) -> str:
        if self._cancel_reason is Reason.SUPERVISOR_SHUTDOWN:
            return "the supervisor shut down while the run was in progress"
        return "the run was cancelled on request"

    def _spawn(self, cwd: Path, prompt_text: str, log_fd: int) -> Spawned:
        """Start the worker in ``cwd`` and note its pid for recovery (blocking).

        None when a cancel came first; the error when it could not start.
        """
        if self._cancel_reason is not None:
            return None
        board = self.ctx.board
        defn = self.definition
        info = self.info
        prompt_path = self._prompt_path()
        log_path = Path(info.log_path or "")
        result_file = self._result_path()
        lattice_vars = lattice_variables(
            root=board.root,
            task_id=info.task_id,
            run_id=info.run_id,
            started_event_id=info.started_event_id or "",
            worker=info.worker,
            actor=info.actor,
            commit_sha=info.commit_sha or "",
            log=log_path,
            result_file=result_file,
            short_id=info.short_id,
            base_ref=info.base_ref,
            merge_base=info.merge_base,
            worktree=info.worktree_path,
            prompt_file=prompt_path,
            artifact_role=defn.artifact_role,
            report_dir=defn.report_dir,
            report_prefix=defn.report_prefix,
        )
        lattice_vars["LATTICE_ATTEMPT"] = str(info.attempt)
        try:
            if self.requeued and info.attempt == 1:
                os.write(log_fd, REQUEUED_NOTE)
            env = worker_environment(self.base_env, defn, lattice_vars)
            argv = command_for(defn, board.root, prompt_text)
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            try:
                child = Child.spawn(argv, cwd=str(cwd), env=env, output_fd=write_fd)
            except BaseException:
                os.close(read_fd)
                raise
            finally:
                os.close(write_fd)  # the worker has its own copies (stdout, stderr)
        except Exception as exc:  # OSError, or ValueError for a NUL in argv or env
            return exc
        # Owned from here: whatever fails before the loop takes the returned child (a
        # hook, the journal), ``_finish`` still stops and reaps it.
        self._process = child
        info.pid = child.pid
        self._pid_start_time = process_start_time(child.pid)
        if self.ctx.cgroups is not None:
            self.ctx.cgroups.join(info.run_id, info.attempt, child.pid)
        try:
            self._sink = LogSink(read_fd, os.dup(log_fd), self._log_limit())
        except OSError:  # out of descriptors: the output is lost, the run goes on
            log.exception("run %s: cannot copy its output into its log", self.run_id)
            os.close(read_fd)
        return child

    def _log_limit(self) -> int:
        mib = self.definition.log_max_mib
        return int((mib if mib is not None else self.ctx.log_max_mib) * 1024 * 1024)

    def _prompt_path(self) -> Path | None:
        prompt_file = self.definition.prompt_file
        return self.ctx.board.root / prompt_file if prompt_file else None

    def _result_path(self) -> Path:
        return self.ctx.results_dir / f"{self.run_id}.json"

    def _open_files(self) -> tuple[int, str] | OSError:
        """The log (opened for the worker), a clean result file, the prompt (blocking)."""
        log_path = Path(self.info.log_path or "")
        prompt_path = self._prompt_path()
        try:
            for folder, mode in ((log_path.parent, 0o777), (self.ctx.results_dir, 0o700)):
                if not os.path.isdir(folder):  # one stat, where mkdir(exist_ok) costs two
                    folder.mkdir(mode=mode, parents=True, exist_ok=True)
            self._result_path().unlink(missing_ok=True)
            prompt = prompt_path.read_text(encoding="utf-8") if prompt_path else ""
            # Written by the supervisor alone (the worker writes into a pipe), so not
            # O_APPEND: the LogSink moves the latest part down when the log is full.
            fd = os.open(log_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            return fd, prompt
        except (OSError, UnicodeDecodeError) as exc:
            return exc if isinstance(exc, OSError) else OSError(f"prompt file: {exc}")

    async def _stop_process(self, process: Child) -> None:
        """SIGTERM to the group, the grace period, then SIGKILL to the group."""
        self._set_state(RunState.STOPPING)
        self._stopped = True
        with trio.CancelScope(shield=True):
            kill_group(process.pid, signal.SIGTERM)
            with trio.move_on_after(self.definition.kill_grace_seconds):
                await process.wait()
            kill_group(process.pid, signal.SIGKILL)
            await process.wait()

    # ------------------------------------------------------------------ the end

    async def _finish(self) -> None:
        """Runs shielded whatever ended the run; see the module docstring."""
        process = self._process
        if process is not None and process.returncode is None:
            # Only a cancel of the whole supervisor gets here with the process alive.
            reason = self._cancel_reason or Reason.SUPERVISOR_SHUTDOWN
            await self._stop_process(process)
            # An outcome already set here is an internal error after the spawn: keep it.
            self._outcome = self._outcome or Outcome(
                reason,
                "the supervisor shut down while the run was in progress"
                if reason is Reason.SUPERVISOR_SHUTDOWN
                else self._cancel_sentence(),
                signal=_signal_of(process.returncode),
            )
        started = self.info.started_event_id is not None
        journaled = False
        if started:
            journaled = await self._close_attempt(final=True)
        else:
            # Nothing on the board; a worktree made beside a process_started that could
            # not be written is not needed.
            await self._remove_worktree()
        if not started and self.info.reason is None:
            # Never left the queue: nothing was written to the board.
            self.info.reason = str(self._cancel_reason or Reason.SUPERVISOR_SHUTDOWN)
            self.info.error = (
                "cancelled while queued"
                if self._cancel_reason is Reason.CANCELLED
                else "the supervisor shut down before the run started"
            )
        if not started:
            self.info.ended_at = time.time()
        final = RunState.COMPLETED if self.info.reason is None and started else RunState.FAILED
        self.info.state = str(final)
        self.info.pid = None
        if not journaled:
            await self._journal()
        self.state.value = final
        self.ctx.on_state(self.info, None)

    async def _close_attempt(self, *, final: bool = False) -> bool:
        """End the current attempt: the rest of its group, its terminal event, its worktree.

        ``final``: this attempt ends the run, so the run's last journal record goes in
        the terminal event's thread hop. Returns whether that record was written.
        """
        if self._attempt_closed:
            return False
        self._attempt_closed = True
        swept: trio.Event | None = None
        if self._process is not None:
            # Whatever the leader left behind in its group (a forked grandchild) dies now,
            # and what left the group soon after.
            group_left = kill_group(self._process.pid, signal.SIGKILL)
            self._process.close()
            swept = self.ctx.sweep_leftovers(self.run_id, self.info.attempt)
            if not (group_left or self._stopped):
                swept = None  # it simply exited: its end need not wait for the scan
        if self._sink is not None:
            try:
                await self._sink.finish()
            except OSError:
                log.exception("run %s: could not copy the end of its output", self.run_id)
        if swept is not None:
            # Stopped by us, or it left processes behind: nothing of it may be alive once
            # its end is visible (the scan repeats until it finds none, bounded).
            with trio.move_on_after(SWEEP_WAIT_SECONDS):
                await swept.wait()
        outcome = self._outcome or Outcome(
            self._cancel_reason or Reason.SUPERVISOR_SHUTDOWN, self._cancel_sentence()
        )
        # Its work is kept before its worktree goes, and said in its terminal event.
        changes = await self._keep_work()
        # The worktree goes while the terminal event is written: the process is gone,
        # and each is needed only by the next attempt and the final state, which wait
        # for both. A crash in between leaves what recovery redoes for a run not live.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._remove_worktree)
            journaled = await self._write_terminal(outcome, final=final, changes=changes)
        return journaled

    async def _keep_work(self) -> dict[str, Any] | None:
        """Keep what the attempt changed in its worktree (see :mod:`._keep`); the
        ``changes`` of its terminal event, or None when it had no worktree."""
        path = self.info.worktree_path
        if not path or not self.info.commit_sha:
            return None
        try:
            kept = await trio.to_thread.run_sync(
                partial(
                    keep_work,
                    workspace=Path(path),
                    repo=self.ctx.board.root,
                    run_id=self.run_id,
                    attempt=self.info.attempt,
                    base_sha=self.info.commit_sha,
                    actor=self.info.actor,
                    task=self.info.short_id or self.info.task_id,
                )
            )
        except KeepError as err:
            if not await trio.to_thread.run_sync(os.path.isdir, path):
                return None  # never made (the attempt failed before its worktree)
            log.warning("run %s: its work could not be kept: %s", self.run_id, err)
            return {"files_changed": 0, "error": f"the work could not be kept: {err}"}
        except OSError as err:
            log.warning("run %s: its work could not be kept: %s", self.run_id, err)
            return {"files_changed": 0, "error": f"the work could not be kept: {err}"}
        return kept.to_event()

    async def _remove_worktree(self) -> None:
        """Remove the attempt's worktree, if it has one; a failure is logged."""
        if not self.info.worktree_path:
            return
        try:
            await self.ctx.worktrees.remove(self.ctx.board.root, Path(self.info.worktree_path))
        except Exception:
            log.exception("run %s: could not remove worktree", self.run_id)

    # ------------------------------------------------------------------ writes

    async def _write_started(self) -> Spawned | tuple[int, str]:
        """``process_started``, the worker's files, the process, the journal: one hop.

        Returns the spawned :class:`Child` (or why there is none, see :meth:`_spawn`);
        when the definition wants a worktree, which git makes on the loop, the open
        log's descriptor and the prompt instead, for :meth:`_start_in_worktree`.

        When the registry did not record the acceptance (the run was admitted at
        once), this hop's journal record is its first. It needs no fsync of its own
        unless the request has an idempotency key, which only the journal keeps: the
        ``process_started`` before it is durable, and recovery settles a run that is
        open on the board but missing from the journal (it writes its end, kills by
        run id, and removes every worktree of ours that no live run owns). The page
        cache keeps the record through a supervisor's death; after a reboot no
        process of it is left.
        """
        board = self.ctx.board
        info = self.info
        defn = self.definition
        event_id = new_id("ev")
        info.log_path = str(board.worker_log_dir() / f"{event_id}.log")
        data = ProcessStarted(
            process_type=info.worker,
            run_id=info.run_id,
            attempt=info.attempt,
            commit_sha=info.commit_sha,
            base_ref=info.base_ref,
            timeout_minutes=self.request.timeout_minutes or defn.timeout_minutes,
            log_path=info.log_path,
            requested_by=info.requested_by,
        )
        if defn.worktree:
            data["worktree_path"] = str(self.ctx.worktrees.base_dir / info.run_id)

        def files_then_process() -> Spawned | tuple[int, str]:
            info.started_event_id = event_id  # on the board: from now on it has an end
            files = self._open_files()
            if isinstance(files, OSError) or defn.worktree:
                return files
            log_fd, prompt_text = files
            try:
                return self._spawn(board.root, prompt_text, log_fd)
            finally:
                os.close(log_fd)  # the worker has its own copy

        try:
            started: Spawned | tuple[int, str] = await self._append(
                PROCESS_STARTED,
                data,
                event_id=event_id,
                journal=True,
                durable=self.request.idempotency_key is not None and not self.accept_recorded,
                then=files_then_process,
            )
        except OSError:
            # The log line is written (durable) before the snapshot: a full disk may
            # refuse the second only. Then the run is on the board and must end there.
            with trio.CancelScope(shield=True):
                if await trio.to_thread.run_sync(self._logged, event_id):
                    info.started_event_id = event_id
            raise
        self.accept_recorded = True
        return started

    def _logged(self, event_id: str) -> bool:
        """Whether the task's log holds the event ``event_id`` (blocking)."""
        try:
            events = self.ctx.board.read_events(self.info.task_id).events
        except OSError:
            return False  # unknown: the next start's recovery closes it if it is there
        return any(event.get("id") == event_id for event in events)

    async def _write_terminal(
        self, outcome: Outcome, *, final: bool, changes: dict[str, Any] | None = None
    ) -> bool:
        info = self.info
        info.ended_at = time.time()
        if self._started_mono is not None:
            info.duration_seconds = round(trio.current_time() - self._started_mono, 3)
        info.exit_code = outcome.exit_code
        info.signal = outcome.signal
        if info.started_event_id is None:  # never: an attempt ends only once it started
            log.error("run %s: an end without a process_started was not written", self.run_id)
            return False
        ended = ProcessEnded(
            process_type=info.worker,
            started_event_id=info.started_event_id,
            run_id=info.run_id,
            attempt=info.attempt,
            commit_sha=info.commit_sha,
            duration_seconds=info.duration_seconds,
            log_path=info.log_path,
        )
        if self._sink is not None and self._sink.truncated:
            ended["log_truncated"] = True
        if changes is not None:
            ended["changes"] = changes
        data: ProcessCompleted | ProcessFailed
        if outcome.reason is None:
            data = ProcessCompleted(**ended, result="success", exit_code=0)
            event_type = PROCESS_COMPLETED
        else:
            info.reason = str(outcome.reason)
            info.error = outcome.error
            data = failed = ProcessFailed(**ended, reason=info.reason, error=outcome.error)
            if outcome.exit_code is not None:
                failed["exit_code"] = outcome.exit_code
            if outcome.signal is not None:
                failed["signal"] = outcome.signal
            event_type = PROCESS_FAILED
        end = RunState.COMPLETED if outcome.reason is None else RunState.FAILED
        try:
            await self._append(
                event_type, data, result_file=True, journal=final, final=end if final else None
            )
        except Exception:
            # The board refused the write (disk full, lock timeout): say so loudly; the
            # run stays open on the board and recovery or `doctor --fix` settles it.
            log.exception("run %s: could not write %s", self.run_id, event_type)
            return False
        return final

    def _read_result(self) -> tuple[dict[str, Any] | None, str | None]:
        path = self.ctx.results_dir / f"{self.run_id}.json"
        try:
            with open_run_file(path, "result file") as f:
                raw = f.read(RESULT_MAX_BYTES + 1)
        except FileNotFoundError:
            return None, None
        except LatticeError as exc:  # a symlink: never read what it points to
            return None, f"{exc.message}; it was ignored"
        finally:
            path.unlink(missing_ok=True)
        if len(raw) > RESULT_MAX_BYTES:
            return None, f"result file larger than {RESULT_MAX_BYTES} bytes was ignored"
        try:
            value = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            return None, f"result file is not valid JSON and was ignored: {exc}"
        if not isinstance(value, dict):
            return None, "result file must hold a JSON object and was ignored"
        return value, None

    async def _append(
        self,
        event_type: str,
        data: ProcessStarted | ProcessCompleted | ProcessFailed,
        *,
        event_id: str | None = None,
        journal: bool = False,
        durable: bool = False,
        final: RunState | None = None,
        result_file: bool = False,
        then: Callable[[], Any] | None = None,
    ) -> Any:
        """Write one event (and what goes with it) in one thread hop; ``then()``'s value.

        ``result_file``: read the worker's result into ``data`` first; ``journal``:
        record the run in the journal after ``then`` (``durable``, ``final``: see
        :meth:`_journal_now`); ``then``: more blocking work for the same hop, after
        the event is written (it may spawn the worker, whose pid the record notes). Thread
        hops are a fixed cost of every run (a fifth of a millisecond of CPU each,
        measured), so a run's steps that belong together share one.
        """
        info = self.info
        board = self.ctx.board

        def write() -> tuple[dict[str, Any], Any]:
            if result_file:
                ended = cast(ProcessEnded, data)
                result, result_error = self._read_result()
                if result is not None:
                    info.result = result
                    ended["output"] = result
                if result_error:
                    ended["output_error"] = result_error
            if event_type == PROCESS_FAILED and info.log_path:
                # Why it failed, in the worker's own last words (a new field: the
                # fields above keep their bytes).
                tail = read_log_tail(info.log_path)
                if tail:
                    info.log_tail = cast(ProcessFailed, data)["log_tail"] = tail
            written = board.append(
                info.task_id,
                event_type,
                data,
                actor=info.actor,
                agent_meta={"model": None, "session": info.run_id},
                provenance={"triggered_by": info.requested_by} if info.requested_by else None,
                hooks=False,
                event_id=event_id,
            )
            try:
                value = then() if then is not None else None
            finally:
                if journal:
                    self._journal_quietly(event_id=event_id, durable=durable, final=final)
            return written.event, value

        event, value = await trio.to_thread.run_sync(write)
        self.ctx.run_hooks([event])
        return value

    async def _journal(self) -> None:
        """Record the run in the journal, in a thread hop (see :meth:`_journal_quietly`)."""
        await trio.to_thread.run_sync(self._journal_quietly)

    def _journal_quietly(
        self, *, event_id: str | None = None, durable: bool = False, final: RunState | None = None
    ) -> None:
        """:meth:`_journal_now`, with a failure logged, never raised: the board is the
        record that matters, and recovery reads it."""
        try:
            self._journal_now(event_id=event_id, durable=durable, final=final)
        except OSError:
            log.exception("run %s: could not write the journal", self.run_id)

    def _journal_now(
        self, *, event_id: str | None = None, durable: bool = False, final: RunState | None = None
    ) -> None:
        """Record the run as it is now (blocking); see :meth:`Journal.write` for ``durable``.

        ``event_id``: the ``process_started`` just written. ``final``: the state the
        run is about to end in (the record is written before the worktree's removal,
        which recovery redoes for any run that is not live).
        """
        run = self.info
        if event_id is not None:  # the event is on the board: the record may say so
            run = msgspec.structs.replace(run, started_event_id=event_id)
        if final is not None:
            run = msgspec.structs.replace(run, state=str(final), pid=None)
        record = JournalRecord(
            seq=self.seq, run=run, request=self.request, pid_start_time=self._pid_start_time
        )
        self.ctx.journal.write(record, durable=durable)


def _signal_of(returncode: int | None) -> int | None:
    return -returncode if returncode is not None and returncode < 0 else None


def _outcome_of_exit(returncode: int) -> Outcome:
    if returncode == 0:
        return Outcome(None, exit_code=0)
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
        return Outcome(
            Reason.EXIT_NONZERO,
            f"the worker was killed by signal {-returncode} {name}".rstrip(),
            signal=-returncode,
        )
    return Outcome(
        Reason.EXIT_NONZERO, f"the worker exited with code {returncode}", exit_code=returncode
    )
