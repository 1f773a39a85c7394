"""One agent CLI, run unattended outside the supervisor, through its engine adapter.

For workers that run agents themselves (CodeReviewHeavy starts one reviewer per engine
and pass): the same argv as a run of that engine (prompt on stdin, streamed output,
trust and sandbox flags), the same stream reader (transcript, figures, ``error_kind``
and the sentence that says what to do), the same network bound, plus a time limit.
``python -m lattice_workers.engines run ENGINE`` is its command line (see
:mod:`lattice_workers.engines.__main__`).

The CLI stays in the caller's process group (no new session), so whatever stops the
caller's run (a cancel, a deadline) reaches it too; stopping it here signals it and
what it started, found through ``/proc``, never the whole group (which holds the
caller and its other agents).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from lattice_workers.engines._common import DEFAULT_NETWORK_TIMEOUT_SECONDS, short
from lattice_workers.engines._engine import Engine

#: Seconds between SIGTERM and SIGKILL when an agent is stopped.
DEFAULT_KILL_GRACE = 10.0
#: How long the output is still read once the agent has exited or been killed (a
#: daemon it left may hold the pipe open for good).
DRAIN_SECONDS = 2.0
#: A transcript line written to the caller is cut to this many characters, so that
#: each line is one write of less than PIPE_BUF bytes: lines of agents sharing one pipe
#: never interleave.
LINE_CHARS = 900


def run_unattended(
    engine: Engine,
    prompt: str,
    *,
    args: list[str],
    output_dir: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_seconds: float | None = None,
    network_seconds: float = DEFAULT_NETWORK_TIMEOUT_SECONDS,
    kill_grace: float = DEFAULT_KILL_GRACE,
    transcript: Callable[[str], None] | None = None,
    raw: IO[bytes] | None = None,
    network_knob: str = "--network-seconds",
    timeout_knob: str = "--timeout",
) -> dict[str, Any]:
    """Run ``engine`` on ``prompt`` until it ends, is stopped by its reader (network
    retries only for ``network_seconds``), or passes ``timeout_seconds``.

    Returns the summary: ``engine``, ``exit_code`` (None when it was stopped),
    ``seconds``, ``stopped`` (``network``, ``timeout`` or None), ``agent`` (the
    terminal event's ``agent`` object, with ``error_kind`` and ``error``) and
    ``answer`` (the agent's whole final answer, "" for none). Raises ValueError for
    ``args`` the adapter sets itself. The sentences name ``network_knob`` and
    ``timeout_knob`` as what to raise (the caller's names for the two bounds).
    """
    from lattice_workers.actors._definitions import WorkerDefinition

    problems = engine.args_problems(args)
    if problems:
        raise ValueError("; ".join(problems))
    definition = WorkerDefinition(
        name="Unattended",
        engine=engine.name,
        prompt_file="-",
        args=args,
        network_timeout_seconds=network_seconds,
    )
    environ = dict(os.environ if env is None else env)
    output_dir.mkdir(parents=True, exist_ok=True)
    command = engine.command(definition, output_dir=output_dir, prompt=prompt, env=environ)
    reader = engine.reader(definition)
    started = time.monotonic()
    say = transcript or (lambda line: None)
    try:
        proc = subprocess.Popen(
            command.argv,
            cwd=cwd,
            env={**environ, **command.env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as err:
        report = reader.report(None)
        report["error_kind"] = "agent_error"
        report["error"] = (
            f"could not start {engine.name}: {err.strerror or err}; install it "
            f"(npm install -g {_package(engine)}) or put it on PATH"
        )
        return _summary(engine, None, started, None, report, "")
    assert proc.stdin is not None and proc.stdout is not None
    # Written by a thread: a long prompt fills the pipe before the CLI reads it, and
    # the CLI's output must be read meanwhile.
    feeder = threading.Thread(target=_feed, args=(proc.stdin, command.stdin or b""), daemon=True)
    feeder.start()
    stopped: str | None = None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)

    def take(chunk: bytes) -> None:
        if raw is not None:
            raw.write(chunk)
            raw.flush()
        for line in reader.feed(chunk).decode("utf-8", "replace").splitlines():
            say(line)

    try:
        while True:
            if selector.select(timeout=0.5):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                take(chunk)
            now = time.monotonic()
            why = reader.stop_reason(now)
            if why is not None:
                stopped = why[0] if why[0] == "network" else "budget"
                break
            if timeout_seconds is not None and now - started >= timeout_seconds:
                stopped = "timeout"
                break
            if proc.poll() is not None:
                break  # it exited: a child it left may hold the pipe (the drain is bounded)
        if stopped is not None:
            stop_family(proc, kill_grace)
        _drain(proc, selector, take)
        for line in reader.finish().decode("utf-8", "replace").splitlines():
            say(line)
    finally:
        if proc.poll() is None:  # interrupted (SIGTERM to us): take the agent along
            stop_family(proc, kill_grace)
        selector.close()
        proc.stdout.close()
    exit_code = proc.returncode if stopped is None else None
    report = reader.report(exit_code)
    if isinstance(report["error"], str):
        # The reader speaks of a worker definition; here the bound is the caller's.
        report["error"] = report["error"].replace(
            'the definition\'s "network_timeout_seconds"', network_knob
        )
    if stopped == "timeout" and report["error_kind"] is None:
        report["error_kind"] = "agent_error"
        report["error"] = (
            f"{engine.name} gave no answer within its time limit of {timeout_seconds:g} s "
            f"and was stopped; raise {timeout_knob}, or narrow the prompt"
        )
    answer = reader.final_message or ""
    if report["error_kind"] is None and exit_code == 0 and not answer.strip():
        report["error_kind"] = "agent_error"
        report["error"] = f"{engine.name} finished without an answer; see its transcript"
    return _summary(engine, exit_code, started, stopped, report, answer)


def _summary(
    engine: Engine,
    exit_code: int | None,
    started: float,
    stopped: str | None,
    report: dict[str, Any],
    answer: str,
) -> dict[str, Any]:
    return {
        "engine": engine.name,
        "exit_code": exit_code,
        "seconds": round(time.monotonic() - started, 3),
        "stopped": stopped,
        "agent": report,
        "answer": answer,
    }


def _package(engine: Engine) -> str:
    from lattice_workers.engines._engine import NPM_PACKAGES

    return NPM_PACKAGES.get(engine.name, engine.name)


def _feed(stdin: IO[bytes], data: bytes) -> None:
    try:
        stdin.write(data)
    except OSError:
        pass  # it exited (or closed stdin) before reading it all: its output says why
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def _drain(
    proc: subprocess.Popen[bytes], selector: selectors.BaseSelector, take: Callable[[bytes], None]
) -> None:
    """Read what is left of the output until EOF, at most :data:`DRAIN_SECONDS` after
    the agent's end."""
    assert proc.stdout is not None
    try:
        proc.wait(timeout=DRAIN_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        take(chunk)
    if proc.returncode is None:
        proc.wait()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), children first."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def stop_family(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to ``proc`` and what it started, SIGKILL to what is left after
    ``grace`` seconds; waits for ``proc``."""
    family = [proc.pid, *descendants(proc.pid)]
    _signal(family, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _signal([*family, *descendants(proc.pid)], signal.SIGKILL)
    proc.wait()


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def prefixed(label: str, write: Callable[[bytes], object]) -> Callable[[str], None]:
    """A transcript sink that writes each line as ``[label] line`` in one write."""

    def say(line: str) -> None:
        write(f"[{label}] {short(line, LINE_CHARS) if len(line) > LINE_CHARS else line}\n"
              .encode("utf-8", "replace"))

    return say
