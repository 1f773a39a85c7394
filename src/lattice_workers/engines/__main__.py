"""``python -m lattice_workers.engines run ENGINE``: one agent CLI, unattended.

For scripts that run agents themselves (CodeReviewHeavy's reviewers): the prompt is
read from standard input, the agent runs in the current folder through its engine
adapter (see :func:`lattice_workers.engines._unattended.run_unattended`), its readable
transcript goes to standard error as it happens (each line ``[LABEL] ...``), and one
line of JSON goes to standard output at the end: ``engine``, ``exit_code``,
``seconds``, ``stopped``, ``agent`` (the terminal event's ``agent`` object, with
``error_kind`` and ``error``) and ``answer`` (the agent's final answer, whole).

Exit codes: 0 the agent answered, 1 it failed (``agent.error_kind`` says how), 2 bad
usage (nothing was started).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import IO


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lattice_workers.engines",
        description="Run one agent CLI unattended through its engine adapter.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run ENGINE on the prompt read from stdin")
    run.add_argument("engine", help="claude, codex or gemini")
    run.add_argument(
        "--args", default="", help="more arguments for the CLI, split as a shell would"
    )
    run.add_argument("--output-dir", required=True, help="a folder the agent may write")
    run.add_argument("--timeout", type=float, default=None, help="stop it after SECONDS")
    run.add_argument(
        "--network-seconds", type=float, default=120.0,
        help="stop it after SECONDS of nothing but network retries (default 120)",
    )
    run.add_argument("--kill-grace", type=float, default=10.0, help="SIGTERM to SIGKILL")
    run.add_argument("--label", default=None, help="the transcript's line prefix")
    run.add_argument("--raw", default=None, help="keep the raw stream in this file")
    run.add_argument(
        "--network-knob", default="--network-seconds",
        help="what a network failure's sentence tells the user to raise",
    )
    run.add_argument(
        "--timeout-knob", default="--timeout",
        help="what a timeout's sentence tells the user to raise",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from lattice_workers.engines import ENGINES
    from lattice_workers.engines._unattended import prefixed, run_unattended

    args = _parser().parse_args(argv)
    engine = ENGINES.get(args.engine)
    if engine is None:
        print(f"unknown engine {args.engine!r}; one of: {', '.join(ENGINES)}", file=sys.stderr)
        return 2
    try:
        extra = shlex.split(args.args)
    except ValueError as err:
        print(f"--args: {err}", file=sys.stderr)
        return 2
    for name in ("timeout", "network_seconds", "kill_grace"):
        value = getattr(args, name)
        if value is not None and value < 0:
            print(f"--{name.replace('_', '-')} must be 0 or more", file=sys.stderr)
            return 2
    prompt = sys.stdin.read() if sys.stdin is not None else ""
    # A stop of the caller's run (SIGTERM to its group) ends us through the finally
    # clauses, which take the agent along.
    signal.signal(signal.SIGTERM, _terminate)
    err_fd = sys.stderr.fileno()
    raw: IO[bytes] | None = None
    try:
        if args.raw:
            raw = open(args.raw, "ab")  # noqa: SIM115 (closed below)
        summary = run_unattended(
            engine,
            prompt,
            args=extra,
            output_dir=Path(args.output_dir),
            timeout_seconds=args.timeout,
            network_seconds=args.network_seconds,
            kill_grace=args.kill_grace,
            transcript=prefixed(args.label or engine.name, lambda b: os.write(err_fd, b)),
            raw=raw,
            network_knob=args.network_knob,
            timeout_knob=args.timeout_knob,
        )
    except ValueError as err:
        print(f"{engine.name}: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{engine.name}: {err}", file=sys.stderr)
        return 2
    finally:
        if raw is not None:
            raw.close()
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0 if summary["agent"].get("error_kind") is None else 1


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
