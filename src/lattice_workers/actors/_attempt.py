"""One attempt of a run: one ``process_started``, then exactly one terminal event.

An :class:`Attempt` is entered once and ended once (``async with``). Between the two,
:meth:`Attempt.execute` writes ``process_started``, has the executor prepare the
workspace and start the worker, and waits for its exit, its deadline or a cancel.
Whatever ends it (an exit, the deadline, a cancel, a failure to start, a bug, the
supervisor's shutdown), :meth:`Attempt.end` runs shielded and under a deadline, and
it is the only way to the terminal event:

1. stop the worker if it is still alive (TERM, grace, KILL to its group);
2. close its execution: kill what is left of it, copy the rest of its output;
3. keep its work (the snapshot ref);
4. give the workspace back while the terminal event is written.

The order is the point (nothing may still write when the work is kept; the event
names what was kept), so the resources are released in this one sequence rather than
from a stack in reverse order of acquisition.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

import msgspec
import trio

from lattice_workers.actors._agent_outputs import attach_outputs, make_output_dir
from lattice_workers.actors._agent_tap import AgentTap
from lattice_workers.actors._context import RunContext
from lattice_workers.actors._definitions import WorkerDefinition, command_for
from lattice_workers.actors._environment import lattice_variables, worker_environment
from lattice_workers.actors._executor import Execution, Launch, WorkerLost, Workspace
from lattice_workers.actors._files import open_run_file
from lattice_workers.actors._journal import JournalRecord, RunRequest
from lattice_workers.actors._keep import not_kept
from lattice_workers.actors._log_tail import read_log_tail
from lattice_workers.actors._patch import attach_diff
from lattice_workers.actors._record import AttemptFacts, Ending, Outcome, RunRecord
from lattice_workers.actors._state import Reason, RunState
from lattice_workers.engines import engine_for, with_run_limits
from lattice_workers.engines._common import agent_of_script
from lattice_workers.engines.claude import carry_session
from lattice_workers.errors import LatticeError
from lattice_workers.store import new_id
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

#: Time allowed for an attempt's end beyond the kill grace: keeping the work, git's
#: removal of a worktree, the terminal event, the journal. Bounded so that shutdown
#: always ends.
CLEANUP_SECONDS = 60.0
#: Of an attempt's end, what is kept for its terminal event (and the workspace's
#: release beside it), whatever came before took.
TERMINAL_SECONDS = 20.0
#: A result file larger than this is refused (SPEC section 2).
RESULT_MAX_BYTES = 64 * 1024
#: The first line of the log of a run that recovery requeued: the environment its
#: client sent was never written down, so it runs with the supervisor's.
REQUEUED_NOTE = (
    b"lattice-workers: this run was queued when the supervisor stopped and was requeued "
    b"by the next one; it runs with the supervisor's environment, not the environment "
    b"of the client that asked for it\n"
)

T = TypeVar("T")


class AttemptOwner(Protocol):
    """What an attempt uses of its run (:class:`~lattice_workers.actors._run.RunActor`):
    what spans attempts, and nothing about processes or files."""

    ctx: RunContext
    definition: WorkerDefinition
    record: RunRecord
    request: RunRequest
    seq: int
    base_env: dict[str, str]
    requeued: bool
    recorded: trio.Event
    accept_recorded: bool
    cancel_reason: Reason | None
    wait_scope: trio.CancelScope | None

    @property
    def run_id(self) -> str: ...

    def set_state(self, state: RunState) -> None: ...

    def cancel_sentence(self, reason: Reason | None = None) -> str: ...


class NotStarted(Exception):
    """The attempt's worker did not start; its outcome says why."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


class Attempt:
    """One attempt of its owner's run (see the module docstring)."""

    def __init__(self, run: AttemptOwner, number: int) -> None:
        self.run = run
        self.ctx = run.ctx
        self.definition = run.definition
        self.executor = run.ctx.executor_for(self.definition)
        #: What the run's record shows of this attempt; its ``ended`` is set by :meth:`end`.
        self.facts = AttemptFacts(number=number)
        run.record.attempt = self.facts
        self.outcome: Outcome | None = None
        #: Whether this attempt ends the run (the run decides before the end).
        self.final = True
        #: Whether the run's last journal record went with the terminal event.
        self.journaled = False
        self._execution: Execution | None = None
        self._workspace: Workspace | None = None
        self._stopped = False  # the supervisor stopped the worker (cancel, deadline, shutdown)
        self._started_mono: float | None = None
        #: The log, opened for a worker that starts once its workspace is ready.
        self._log_fd: int | None = None
        self._ended = False
        #: An agent engine's adapter (None for a script), and for its attempt: the
        #: tap that reads its stream, its output folder, why its reader stopped it,
        #: and the ``agent`` object of its terminal event.
        self._engine = engine_for(self.definition)
        self._tap: AgentTap | None = None
        self._output_dir: Path | None = None
        self._agent_stop: tuple[Reason, str] | None = None
        self._agent: dict[str, Any] | None = None

    @property
    def execution(self) -> Execution | None:
        return self._execution

    # ------------------------------------------------------------------ the body

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, Exception) and self.outcome is None and self.facts.started_event_id:
            # A bug of ours after process_started: the attempt still ends on the record
            # (the run logs it). Before it, nothing is on the board to close.
            self.outcome = Outcome(Reason.SPAWN_ERROR, f"internal error: {exc}")
        with trio.move_on_after(self.definition.kill_grace_seconds + CLEANUP_SECONDS) as s:
            s.shield = True
            await self.end()
        if s.cancelled_caught:
            log.error("run %s: cleanup did not finish in time", self.run.run_id)

    async def execute(self) -> None:
        """Start the worker and wait for its end; :attr:`outcome` says how it went."""
        run = self.run
        run.set_state(RunState.PREPARING)
        self.facts.started_at = time.time()
        self._started_mono = trio.current_time()
        try:
            if self.definition.worktree:
                await self._start_in_workspace()
            else:
                await self._write_started(start_here=True)
        except NotStarted as why:
            self.outcome = why.outcome
            return
        except (LatticeError, OSError) as exc:  # a lock held too long, a full disk
            self.outcome = self._refused(exc)
            return
        finally:
            run.recorded.set()
        execution = self._execution
        assert execution is not None
        run.set_state(RunState.RUNNING)
        timeout_min = run.request.timeout_minutes or self.definition.timeout_minutes
        async with trio.open_nursery() as copying:
            copying.start_soon(execution.run_output)  # the output flows while it lives
            if self._tap is not None:
                copying.start_soon(self._tap.watch)  # a quiet agent's reader is asked too
            with trio.CancelScope(deadline=self._started_mono + timeout_min * 60) as scope:
                run.wait_scope = scope
                if run.cancel_reason is not None:
                    scope.cancel()
                try:
                    await execution.wait()
                except WorkerLost as lost:
                    self.outcome = Outcome(Reason.NODE_LOST, str(lost))
            run.wait_scope = None
            if self.outcome is not None:
                pass  # its node is gone: nothing of it to stop or wait for
            elif execution.returncode is None:
                if run.cancel_reason is not None:
                    reason, sentence = run.cancel_reason, run.cancel_sentence()
                elif self._agent_stop is not None:
                    reason, sentence = self._agent_stop
                else:
                    reason = Reason.TIMEOUT
                    sentence = f"the worker ran past its deadline of {timeout_min:g} minutes"
                await self._stop(execution)
                self.outcome = Outcome(reason, sentence, signal=_signal_of(execution.returncode))
            else:
                self.outcome = _outcome_of_exit(execution.returncode)
            # What is left in the pipe is copied once the group is killed (end): a daemon
            # the worker left may hold the pipe open for good.
            copying.cancel_scope.cancel()

    def _refused(self, exc: LatticeError | OSError) -> Outcome:
        """The outcome of an attempt whose ``process_started`` could not be written.

        Mostly nothing is on the board, so there is nothing to close there: the run
        ends failed, with the reason on its record. When the event's log line went
        down after all, the end writes its terminal event as for any started attempt.
        """
        message = exc.message if isinstance(exc, LatticeError) else str(exc)
        if self.facts.started_event_id is not None:
            sentence = (
                "process_started is in the task's log but the task's snapshot could "
                f"not be written after it: {message}"
            )
        else:
            sentence = f"could not write process_started: {message}"
        log.error("run %s: %s", self.run.run_id, sentence)
        return Outcome(Reason.SPAWN_ERROR, sentence)

    async def _start_in_workspace(self) -> None:
        """``process_started`` and the workspace at once, then the worker in it.

        The two are independent (the event names the workspace beforehand), so the
        executor prepares it while the event's thread hop writes: a run with a worktree
        starts one board write sooner. A crash in between leaves a worktree that no run
        owns, which recovery removes, or a started run without one, which it closes.
        """
        run = self.run
        prepared: LatticeError | None = None
        opened: tuple[int, str] | None = None
        refused: NotStarted | LatticeError | OSError | None = None

        async def prepare() -> None:
            nonlocal prepared
            try:
                self._workspace = await self.executor.prepare(
                    run.run_id, run.record.commit_sha or "HEAD", pool=self._pool()
                )
            except LatticeError as exc:
                prepared = exc
            else:  # from here, the end gives it back
                self.facts.worktree_path = self._workspace.location

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(prepare)
                try:
                    opened = await self._write_started(start_here=False)
                except (LatticeError, OSError) as exc:
                    # Raised below, not from inside the nursery (which would wrap it).
                    refused = exc
                    nursery.cancel_scope.cancel()  # no run: the workspace is not needed
                except NotStarted as exc:
                    # On the board: it ends there, with its workspace kept and named,
                    # so the workspace is made (and given back by the end) as for any.
                    refused = exc
                finally:
                    run.recorded.set()  # the reply need not wait for git
            if refused is not None:
                raise refused
            if prepared is not None:
                raise NotStarted(Outcome(Reason.WORKTREE_ERROR, f"worktree: {prepared.message}"))
            if run.cancel_reason is not None or self._workspace is None:
                raise NotStarted(self._cancelled())
            assert opened is not None
            log_fd, prompt_text = opened
            await trio.to_thread.run_sync(self._start_and_note, prompt_text, log_fd)
        finally:
            self._close_log()  # the worker has its own copy

    def _close_log(self) -> None:
        """Close the log's descriptor the attempt opened for the worker, if still open."""
        fd, self._log_fd = self._log_fd, None
        if fd is not None:
            os.close(fd)

    def _pool(self) -> str:
        """Which reused workspaces may serve this run: the shared ones, or (with
        ``"worktree_reuse": "keep-ignored"``) its worker's own."""
        defn = self.definition
        return defn.name if defn.worktree_reuse == "keep-ignored" else ""

    def _cancelled(self) -> Outcome:
        run = self.run
        return Outcome(run.cancel_reason or Reason.CANCELLED, run.cancel_sentence())

    def _start_and_note(self, prompt_text: str, log_fd: int) -> None:
        """Start the worker, then note it in the journal for recovery (blocking)."""
        self._start(prompt_text, log_fd)
        self._journal_quietly()

    def _start(self, prompt_text: str, log_fd: int) -> None:
        """Have the executor start the worker (blocking). Raises :class:`NotStarted`."""
        run = self.run
        if run.cancel_reason is not None:
            raise NotStarted(self._cancelled())
        board = self.ctx.board
        defn = self.definition
        record = run.record
        facts = self.facts
        workspace = self._workspace
        lattice_vars = lattice_variables(
            root=board.root,
            task_id=record.task_id,
            run_id=record.run_id,
            started_event_id=facts.started_event_id or "",
            worker=record.worker,
            actor=record.actor,
            commit_sha=record.commit_sha or "",
            log=Path(facts.log_path or ""),
            result_file=self._result_path(),
            short_id=record.short_id,
            base_ref=record.base_ref,
            merge_base=record.merge_base,
            worktree=workspace.location if workspace else None,
            prompt_file=self._prompt_path(),
            artifact_role=defn.artifact_role,
            report_dir=defn.report_dir,
            report_prefix=defn.report_prefix,
        )
        lattice_vars["LATTICE_ATTEMPT"] = str(facts.number)
        # A Python with this package, for scripts that run agents through the engine
        # adapters (python -m lattice_workers.engines): the python3 on PATH may not be.
        lattice_vars["LATTICE_PYTHON"] = sys.executable
        try:
            if run.requeued and facts.number == 1:
                os.write(log_fd, REQUEUED_NOTE)
            if self._engine is not None:
                launch = self._agent_launch(prompt_text, lattice_vars, log_fd)
            else:
                launch = Launch(
                    argv=command_for(defn, board.root, prompt_text),
                    env=worker_environment(run.base_env, defn, lattice_vars),
                    workspace=workspace,
                    log_fd=log_fd,
                    log_limit=self._log_limit(),
                    run_id=record.run_id,
                    attempt=facts.number,
                )
            execution = self.executor.start(launch)
        except Exception as exc:  # OSError, or ValueError for a NUL in argv or env
            raise NotStarted(
                Outcome(Reason.SPAWN_ERROR, f"could not start the worker: {exc}")
            ) from exc
        self._execution = execution
        facts.pid = execution.pid
        facts.node = getattr(execution, "node", None)

    def _agent_launch(
        self, prompt_text: str, lattice_vars: dict[str, str], log_fd: int
    ) -> Launch:
        """An agent engine's launch (blocking): its adapter's argv, the prompt on stdin,
        an output folder it may write whatever its sandbox (``LATTICE_OUTPUT_DIR``,
        the result file inside it), and a tap that reads its stream into the log."""
        assert self._engine is not None
        run = self.run
        request = run.request
        defn = with_run_limits(
            self.definition, max_cost_usd=request.max_cost_usd, max_turns=request.max_turns
        )
        self._output_dir = make_output_dir(
            self.ctx.results_dir.parent, run.run_id, self.facts.number
        )
        lattice_vars["LATTICE_OUTPUT_DIR"] = str(self._output_dir)
        lattice_vars["LATTICE_RESULT_FILE"] = str(self._result_path())
        env = worker_environment(run.base_env, defn, lattice_vars)
        session = request.resume_session
        if session is not None and self._engine.name == "claude" and request.resume_cwd:
            # Claude finds a session only under the folder it ran in: carry it over.
            here = self._workspace.location if self._workspace else str(self.ctx.board.root)
            problem = carry_session(
                session, old_cwd=Path(request.resume_cwd), new_cwd=Path(here), env=env
            )
            if problem is not None:
                raise ValueError(problem)
        command = self._engine.command(
            defn,
            output_dir=self._output_dir,
            resume_session=session,
            message=request.message,
            prompt=prompt_text,
            env=env,  # where the worker's CLI keeps its sessions, not the supervisor's
        )
        env = {**env, **command.env}
        log_path = Path(self.facts.log_path or "")
        self._tap = AgentTap(
            self._engine.reader(defn, clock=time.monotonic),
            log_path.with_suffix(".jsonl") if self.facts.log_path else None,
            self._log_limit(),
            self._stop_agent,
            time.monotonic,
        )
        return Launch(
            argv=command.argv,
            env=env,
            workspace=self._workspace,
            log_fd=log_fd,
            log_limit=self._log_limit(),
            run_id=run.run_id,
            attempt=self.facts.number,
            stdin=command.stdin,
            tap=self._tap,
        )

    def _stop_agent(self, reason: str, sentence: str) -> None:
        """The agent's reader asks for a stop (network retries only, a budget spent):
        end the wait as a cancel would, with the reader's reason and sentence."""
        if self._agent_stop is not None:
            return
        self._agent_stop = (Reason(reason), sentence)
        scope = self.run.wait_scope
        if scope is not None:
            scope.cancel()

    def _agent_report(self, outcome: Outcome) -> dict[str, Any] | None:
        """The terminal event's ``agent`` object, once the output is all read."""
        tap = self._tap
        if tap is None:
            return None
        tap.close()
        reader = tap.reader
        if self._agent_stop is None or outcome.error != self._agent_stop[1]:
            reader.stopped = None  # it asked too late: the attempt ended otherwise
        exit_code = outcome.exit_code if reader.stopped is None else None
        return reader.report(exit_code)

    async def _attach_outputs(self, agent: dict[str, Any] | None) -> dict[str, Any] | None:
        """Attach what the agent left in its output folder (or its final answer)."""
        folder = self._output_dir
        if folder is None:
            return None
        record = self.run.record
        done = await trio.to_thread.run_sync(
            partial(
                attach_outputs,
                self.ctx.board,
                record.task_id,
                folder,
                role=self.definition.artifact_role,
                actor=record.actor,
                # A failed agent's last words are its error, not an answer to keep.
                final_message=None
                if agent is None or agent.get("error_kind")
                else agent.get("final_message"),
                skip=(self._result_path().name,),
            )
        )
        if not done.artifacts and not done.problems:
            return None
        return {"artifacts": done.artifacts, "problems": done.problems}

    def _log_limit(self) -> int:
        mib = self.definition.log_max_mib
        return int((mib if mib is not None else self.ctx.log_max_mib) * 1024 * 1024)

    def _prompt_path(self) -> Path | None:
        prompt_file = self.definition.prompt_file
        return self.ctx.board.root / prompt_file if prompt_file else None

    def _result_path(self) -> Path:
        if self._output_dir is not None:
            # An agent's sandbox may not reach the board's folder: the result file is
            # in the output folder it may write.
            return self._output_dir / "result.json"
        return self.ctx.results_dir / f"{self.run.run_id}.json"

    def _open_files(self) -> tuple[int, str]:
        """The log (opened for the worker), a clean result file, the prompt (blocking)."""
        log_path = Path(self.facts.log_path or "")
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
            error = exc if isinstance(exc, OSError) else OSError(f"prompt file: {exc}")
            raise NotStarted(
                Outcome(Reason.SPAWN_ERROR, f"could not start the worker: {error}")
            ) from exc

    async def _stop(self, execution: Execution) -> None:
        """Stop the worker: TERM to its group, the grace period, then KILL."""
        self.run.set_state(RunState.STOPPING)
        self._stopped = True
        await execution.stop(self.definition.kill_grace_seconds)

    # ------------------------------------------------------------------ the end

    async def end(self) -> None:
        """End the attempt: the only way to its terminal event (module docstring).

        Runs once, shielded and bounded by :meth:`__aexit__`. When :attr:`final`, the
        run's last journal record goes in the terminal event's thread hop.
        """
        if self._ended:
            return
        self._ended = True
        self._close_log()
        run = self.run
        execution = self._execution
        if execution is not None and execution.returncode is None:
            # Only a cancel of the whole supervisor (or a bug) gets here with it alive.
            reason = run.cancel_reason or Reason.SUPERVISOR_SHUTDOWN
            await self._stop(execution)
            # An outcome already set here is an internal error after the start: keep it.
            self.outcome = self.outcome or Outcome(
                reason,
                "the supervisor shut down while the run was in progress"
                if reason is Reason.SUPERVISOR_SHUTDOWN
                else run.cancel_sentence(),
                signal=_signal_of(execution.returncode),
            )
        if execution is not None:
            await execution.close(stopped=self._stopped)
        if self.facts.started_event_id is None:
            # Nothing on the board to close; a workspace made beside a process_started
            # that could not be written is not needed.
            if self._workspace is not None:
                await self.executor.release(self._workspace)
            if self.outcome is not None:
                self.facts.ended = Ending(
                    at=time.time(), reason=str(self.outcome.reason), error=self.outcome.error
                )
            return
        if self.outcome is None:
            reason = run.cancel_reason or Reason.SUPERVISOR_SHUTDOWN
            self.outcome = Outcome(reason, run.cancel_sentence(reason))
        outcome = self.outcome
        self._agent = self._agent_report(outcome)
        if self._agent is not None and self._agent.get("error") and outcome.reason in (
            Reason.EXIT_NONZERO,
        ):
            # "exited with code 1" says nothing; the agent's own failure says what to do.
            outcome = Outcome(
                outcome.reason, str(self._agent["error"]), outcome.exit_code, outcome.signal
            )
        changes: dict[str, Any] | None = None
        # Outputs and the kept work get what is left of the end's budget but the
        # terminal event's reserve: a keep that overruns (a git call blocked on a file
        # the worker left, bounded by its own timeout in a thread nothing can cancel)
        # costs its changes, never the end on the record. Shielded with a deadline of
        # its own: a Cancelled of the spent outer budget would pass through an
        # unshielded scope (trio leaves it to the outermost cancelled scope) and take
        # the terminal event with it.
        end_budget = trio.current_effective_deadline()
        with trio.CancelScope(shield=True, deadline=end_budget - TERMINAL_SECONDS) as work:
            if execution is not None:
                await self._make_board_calls(execution)
            outputs = await self._attach_outputs(self._agent)
            if outputs is not None and self._agent is not None:
                self._agent["outputs"] = outputs
            # Its work is kept before its workspace goes, and said in its terminal event.
            changes = await self._keep()
        if work.cancelled_caught and self._workspace is not None and changes is None:
            changes = not_kept("keeping it took longer than the end of the attempt allows")
        # The workspace goes while the terminal event is written: the worker is gone,
        # and each is needed only by the next attempt and the final state, which wait
        # for both. A crash in between leaves what recovery redoes for a run not live.
        # Shielded on its own: written even when the end's budget is already spent
        # (then with its reserve; else with what is left of the budget, as before).
        last = max(end_budget, trio.current_time() + TERMINAL_SECONDS)
        with trio.CancelScope(shield=True, deadline=last):
            async with trio.open_nursery() as nursery:
                if self._workspace is not None:
                    nursery.start_soon(self.executor.release, self._workspace)
                self.journaled = await self._write_terminal(outcome, changes)
                cost = (self._agent or {}).get("cost_usd")
                if isinstance(cost, int | float) and cost > 0:  # ps and show read it
                    nursery.start_soon(trio.to_thread.run_sync, self.run.ctx.publish_spend)
        if self._output_dir is not None:
            await trio.to_thread.run_sync(_remove_if_empty, self._output_dir)

    async def _make_board_calls(self, execution: Execution) -> None:
        """Make on the board the ``lattice attach`` and ``comment`` calls of a worker
        that could not reach it (on a Ray node: ``executors/_shim.py``), as those
        commands would have, before the terminal event. What the board refuses is
        logged, and an attached file it refused stays in the run's output folder."""
        calls = getattr(execution, "board_calls", None)
        if not calls:
            return
        from lattice_workers.actors._agent_outputs import output_dir
        from lattice_workers.executors._shim import apply_calls

        keep_in = output_dir(self.ctx.results_dir.parent, self.run.run_id, self.facts.number)
        done = await trio.to_thread.run_sync(apply_calls, self.ctx.board, calls, keep_in)
        for problem in done.problems:
            log.warning("run %s: %s", self.run.run_id, problem)
        if not done.problems and self._output_dir is None:  # an agent's goes at the end
            await trio.to_thread.run_sync(_remove_if_empty, keep_in)

    async def _keep(self) -> dict[str, Any] | None:
        """The ``changes`` of the terminal event, or None without a workspace."""
        record = self.run.record
        if self._workspace is None or not record.commit_sha:
            return None
        changes = await self.executor.keep(
            self._workspace,
            run_id=record.run_id,
            attempt=self.facts.number,
            base_sha=record.commit_sha,
            actor=record.actor,
            task=record.short_id or record.task_id,
        )
        if changes is not None and changes.get("ref"):  # its patch, for people (_patch.py)
            ctx = self.run.ctx
            await attach_diff(ctx.board, ctx.run_hooks, record.view(), changes)
        return changes

    # ------------------------------------------------------------------ writes

    async def _write_started(self, *, start_here: bool) -> tuple[int, str] | None:
        """``process_started``, the worker's files, and (``start_here``) the worker and
        its journal record: one thread hop.

        Without ``start_here`` (the workspace is still being made) returns the open
        log's descriptor and the prompt, for :meth:`_start_in_workspace`.

        When the registry did not record the acceptance (the run was admitted at
        once), this hop's journal record is its first. It needs no fsync of its own
        unless the request has an idempotency key, which only the journal keeps: the
        ``process_started`` before it is durable, and recovery settles a run that is
        open on the board but missing from the journal (it writes its end, kills by
        run id, and removes every worktree of ours that no live run owns). The page
        cache keeps the record through a supervisor's death; after a reboot no
        process of it is left.
        """
        run = self.run
        record = run.record
        facts = self.facts
        defn = self.definition
        board = self.ctx.board
        event_id = new_id("ev")
        facts.log_path = str(board.worker_log_dir() / f"{event_id}.log")
        data = ProcessStarted(
            process_type=record.worker,
            run_id=record.run_id,
            attempt=facts.number,
            commit_sha=record.commit_sha,
            base_ref=record.base_ref,
            timeout_minutes=run.request.timeout_minutes or defn.timeout_minutes,
            log_path=facts.log_path,
            requested_by=record.requested_by,
        )
        if defn.worktree:
            # The folder the workspace gets (a reused one's): decided here, for good.
            data["worktree_path"] = self.executor.location_for(record.run_id, pool=self._pool())

        def files_then_worker() -> tuple[int, str] | None:
            facts.started_event_id = event_id  # on the board: from now on it has an end
            log_fd, prompt_text = self._open_files()
            if not start_here:
                self._log_fd = log_fd  # owned by the attempt until the worker starts
                return log_fd, prompt_text
            try:
                self._start(prompt_text, log_fd)
            finally:
                os.close(log_fd)  # the worker has its own copy
            return None

        try:
            opened = await self._append(
                PROCESS_STARTED,
                data,
                event_id=event_id,
                journal=True,
                durable=run.request.idempotency_key is not None and not run.accept_recorded,
                then=files_then_worker,
            )
        except OSError:
            # The log line is written (durable) before the snapshot: a full disk may
            # refuse the second only. Then the run is on the board and must end there.
            with trio.CancelScope(shield=True):
                if await trio.to_thread.run_sync(self._logged, event_id):
                    facts.started_event_id = event_id
            raise
        run.accept_recorded = True
        return opened

    def _logged(self, event_id: str) -> bool:
        """Whether the task's log holds the event ``event_id`` (blocking)."""
        try:
            events = self.ctx.board.read_events(self.run.record.task_id).events
        except OSError:
            return False  # unknown: the next start's recovery closes it if it is there
        return any(event.get("id") == event_id for event in events)

    async def _write_terminal(self, outcome: Outcome, changes: dict[str, Any] | None) -> bool:
        """The attempt's one terminal event; whether the run's last journal record went
        with it (only when :attr:`final`)."""
        record = self.run.record
        facts = self.facts
        assert facts.started_event_id is not None
        ending = Ending(
            at=time.time(),
            reason=None if outcome.reason is None else str(outcome.reason),
            error=None if outcome.reason is None else outcome.error,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            changes=changes,
        )
        if self._started_mono is not None:
            ending.duration_seconds = round(trio.current_time() - self._started_mono, 3)
        facts.ended = ending
        ended = ProcessEnded(
            process_type=record.worker,
            started_event_id=facts.started_event_id,
            run_id=record.run_id,
            attempt=facts.number,
            commit_sha=record.commit_sha,
            duration_seconds=ending.duration_seconds,
            log_path=facts.log_path,
        )
        if self._execution is not None and self._execution.log_truncated:
            ended["log_truncated"] = True
        if changes is not None:
            ended["changes"] = changes
        if self._agent is not None:
            ended["agent"] = ending.agent = self._agent
        data: ProcessCompleted | ProcessFailed
        if outcome.reason is None:
            data = ProcessCompleted(**ended, result="success", exit_code=0)
            event_type = PROCESS_COMPLETED
        else:
            data = failed = ProcessFailed(**ended, reason=str(outcome.reason), error=outcome.error)
            if outcome.exit_code is not None:
                failed["exit_code"] = outcome.exit_code
            if outcome.signal is not None:
                failed["signal"] = outcome.signal
            event_type = PROCESS_FAILED
        end = RunState.COMPLETED if outcome.reason is None else RunState.FAILED
        try:
            await self._append(
                event_type,
                data,
                ending=ending,
                journal=self.final,
                final=end if self.final else None,
            )
        except Exception:
            # The board refused the write (disk full, lock timeout): say so loudly; the
            # run stays open on the board and recovery or `doctor --fix` settles it.
            log.exception("run %s: could not write %s", record.run_id, event_type)
            return False
        return self.final

    def _read_result(self) -> tuple[dict[str, Any] | None, str | None]:
        path = self._result_path()
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
        ending: Ending | None = None,
        journal: bool = False,
        durable: bool = False,
        final: RunState | None = None,
        then: Callable[[], T] | None = None,
    ) -> T | None:
        """Write one event (and what goes with it) in one thread hop; ``then()``'s value.

        ``ending``: a terminal event's; the worker's result and the log's tail go into
        both it and ``data`` first. ``journal``: record the run in the journal after
        ``then`` (``durable``, ``final``: see :meth:`_journal_now`). ``then``: more
        blocking work for the same hop, after the event is written (it may start the
        worker, whose pid the record notes); what it raises comes out after the hooks
        ran. Thread hops are a fixed cost of every run (a fifth of a millisecond of CPU
        each, measured), so a run's steps that belong together share one.
        """
        record = self.run.record
        board = self.ctx.board

        def write() -> tuple[dict[str, Any], T | None, NotStarted | None]:
            if ending is not None:
                terminal = cast(ProcessEnded, data)
                result, result_error = self._read_result()
                if result is not None:
                    ending.result = terminal["output"] = result
                if result_error:
                    terminal["output_error"] = result_error
                if self._engine is None:
                    self._lift_script_agent(result, event_type, data, ending)
                if event_type == PROCESS_FAILED and self.facts.log_path:
                    # Why it failed, in the worker's own last words (a new field: the
                    # fields above keep their bytes).
                    tail = read_log_tail(self.facts.log_path)
                    if tail:
                        ending.log_tail = cast(ProcessFailed, data)["log_tail"] = tail
            written = board.append(
                record.task_id,
                event_type,
                data,
                actor=record.actor,
                agent_meta={
                    "model": (self._agent or {}).get("model"),
                    "session": record.run_id,
                },
                provenance={"triggered_by": record.requested_by} if record.requested_by else None,
                hooks=False,
                event_id=event_id,
            )
            value: T | None = None
            refused: NotStarted | None = None
            try:
                value = then() if then is not None else None
            except NotStarted as why:
                refused = why
            finally:
                if journal:
                    self._journal_quietly(event_id=event_id, durable=durable, final=final)
            return written.event, value, refused

        event, value, refused = await trio.to_thread.run_sync(write)
        self.ctx.run_hooks([event])
        if refused is not None:
            raise refused
        return value

    def _lift_script_agent(
        self,
        result: dict[str, Any] | None,
        event_type: str,
        data: ProcessStarted | ProcessCompleted | ProcessFailed,
        ending: Ending,
    ) -> None:
        """A script that runs agents itself (CodeReviewHeavy) reports them as an agent
        run does: its result's ``agent`` becomes the terminal event's (so its cost
        counts against the daily budget), and when it exited non-zero, the sentence
        in ``agent.error`` replaces "the worker exited with code N"."""
        agent = agent_of_script(result)
        if agent is None:
            return
        self._agent = agent
        cast(ProcessEnded, data)["agent"] = ending.agent = agent
        failed = cast(ProcessFailed, data)
        if (
            event_type == PROCESS_FAILED
            and agent["error"]
            and failed.get("reason") == str(Reason.EXIT_NONZERO)
        ):
            failed["error"] = ending.error = agent["error"]

    def _journal_quietly(
        self, *, event_id: str | None = None, durable: bool = False, final: RunState | None = None
    ) -> None:
        """:meth:`_journal_now`, with a failure logged, never raised: the board is the
        record that matters, and recovery reads it."""
        try:
            self._journal_now(event_id=event_id, durable=durable, final=final)
        except OSError:
            log.exception("run %s: could not write the journal", self.run.run_id)

    def _journal_now(
        self, *, event_id: str | None = None, durable: bool = False, final: RunState | None = None
    ) -> None:
        """Record the run as it is now (blocking); see :meth:`Journal.write` for ``durable``.

        ``event_id``: the ``process_started`` just written. ``final``: the state the
        run is about to end in (the record is written before the workspace's removal,
        which recovery redoes for any run that is not live).
        """
        run = self.run
        view = run.record.view()
        if event_id is not None:  # the event is on the board: the record may say so
            view = msgspec.structs.replace(view, started_event_id=event_id)
        if final is not None:
            view = msgspec.structs.replace(view, state=str(final), pid=None)
        execution = self._execution
        record = JournalRecord(
            seq=run.seq,
            run=view,
            request=run.request,
            pid_start_time=execution.start_time if execution is not None else None,
        )
        self.ctx.journal.write(record, durable=durable)


def _remove_if_empty(folder: Path) -> None:
    """An agent's output folder, then its run's, once all was attached (what could not
    be stays, and so do the folders that hold it)."""
    for path in (folder, folder.parent):
        try:
            path.rmdir()
        except OSError:
            return


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
