"""Where a run's time goes inside the supervisor: timed spans, and optionally py-spy.

``python bench/profile_runs.py [--worker True|TrueWt] [--clients C] [--runs N]
[--py-spy]`` starts the real supervisor of a scratch project with timers wrapped
around its main steps (the Run handler and its validation, git calls, board appends,
journal writes, the actor's phases), drives N runs through C client processes as
``bench_runs`` does, stops it, and prints milliseconds per run for each step (at
C=1 the steps of one run add up to its wall time; at higher C they overlap and
include queueing). With ``--py-spy``, py-spy samples the supervisor (only threads
holding the GIL, so: where its Python CPU goes) during the measured round, and the
functions with the largest inclusive share are printed.

A diagnostic, not a benchmark: the wrappers cost a little, and they name internal
functions (a name that no longer exists is skipped). Compare before and after a fix.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: (module, class or None, attribute, label): what gets a timer in the supervisor.
SPANS = [
    ("lattice_workers.actors._registry", "Registry", "submit", "Run handler: Registry.submit"),
    ("lattice_workers.actors._registry", "Registry", "_validate", "  Registry._validate"),
    (
        "lattice_workers.actors._registry",
        "Registry",
        "workers",
        "    Registry.workers (definitions)",
    ),
    ("lattice_workers.actors._run", "RunActor", "_prepare_and_run", "RunActor._prepare_and_run"),
    ("lattice_workers.actors._run", "RunActor", "_write_started", "  RunActor._write_started"),
    ("lattice_workers.actors._run", "RunActor", "_spawn", "  RunActor._spawn (in a thread)"),
    (
        "lattice_workers.actors._run",
        "RunActor",
        "_start_in_worktree",
        "  RunActor._start_in_worktree",
    ),
    ("lattice_workers.actors._run", "RunActor", "_finish", "RunActor._finish"),
    ("lattice_workers.actors._run", "RunActor", "_write_terminal", "  RunActor._write_terminal"),
    ("lattice_workers.actors._run", "RunActor", "_journal", "RunActor._journal"),
    ("lattice_workers.actors._worktree", "Worktrees", "create", "Worktrees.create"),
    ("lattice_workers.actors._worktree", "Worktrees", "remove", "Worktrees.remove"),
]


# ----------------------------------------------------------------------------- in the supervisor


def serve(argv: list[str]) -> None:
    """Run ``lattice supervisor run`` with timers; write their totals to $SPANS_OUT at exit."""
    import importlib

    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])

    def add(label: str, seconds: float) -> None:
        totals[label][0] += 1
        totals[label][1] += seconds

    def timed_async(fn: Callable[..., Any], label: Callable[..., str]) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                add(label(*args, **kwargs), time.perf_counter() - t0)

        return wrapper

    def timed(fn: Callable[..., Any], label: Callable[..., str]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                add(label(*args, **kwargs), time.perf_counter() - t0)

        return wrapper

    for module, cls, attr, name in SPANS:
        owner = getattr(importlib.import_module(module), cls)
        if hasattr(owner, attr):
            fn = getattr(owner, attr)
            wrap = timed_async if inspect.iscoroutinefunction(fn) else timed
            setattr(owner, attr, wrap(fn, lambda *a, n=name, **k: n))
    worktree = importlib.import_module("lattice_workers.actors._worktree")
    worktree.run_git = timed_async(worktree.run_git, lambda cwd, *args: f"git {args[0]}")
    from lattice_workers.actors._journal import Journal
    from lattice_workers.store import Board

    Board.append = timed(Board.append, lambda self, task, kind, *a, **k: f"Board.append {kind}")
    Journal.write = timed(
        Journal.write, lambda self, rec, durable=True: f"Journal.write durable={durable}"
    )

    def dump() -> None:
        Path(os.environ["SPANS_OUT"]).write_text(json.dumps(totals))

    from lattice_workers.cli import main

    sys.argv = ["lattice", *argv]
    try:
        main()
    finally:
        dump()


# ----------------------------------------------------------------------------- the driver


def _stacks(raw: Path) -> list[tuple[str, int]]:
    """py-spy's raw output: each sampled stack (frames joined by ``;``) and its count."""
    out = []
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack:
            out.append((stack, int(n)))
    return out


def py_spy_top(raw: Path, count: int, *, leaf: bool = False) -> list[tuple[float, str]]:
    """The functions with the largest inclusive share of py-spy's samples (``leaf``:
    their own share, the innermost frame only)."""
    total = 0
    shares: collections.Counter[str] = collections.Counter()
    for stack, n in _stacks(raw):
        total += n
        names = []
        for frame in stack.split(";"):
            m = re.match(r"(.*) \((.*?):\d+\)$", frame)
            names.append(f"{m.group(1)} ({Path(m.group(2)).name})" if m else frame)
        for name in names[-1:] if leaf else set(names):
            shares[name] += n
    return [(100 * n / total, name) for name, n in shares.most_common(count)]


#: (part, substrings of a frame): each py-spy sample counts once, for the first part
#: whose substring one of its frames contains (so a board write inside validation
#: counts as a board write). The table of bench/README.md, "Where the time goes".
PARTS = [
    ("Board.append (2 per run)", ["Board.append "]),
    ("spawn (Child.spawn)", ["Child.spawn"]),
    ("validation (Registry._check_files)", ["_check_files"]),
    ("the worker's environment (RunActor._spawn)", ["RunActor._spawn "]),
    ("journal", ["Journal.write", "_journal_now"]),
    ("log, prompt and result files", ["_open_files", "_read_result"]),
    ("revisions (cat-file, merge base)", ["RevisionReader", "resolve_many", "merge_base"]),
    ("thread machinery", ["_thread_cache.py", "to_thread_run_sync", "_threads.py"]),
    ("the server", ["_Server", "Handlers.__call__", "aclient.py", "_codec"]),
    ("the registry", ["Registry."]),
    ("the run actor", ["RunActor."]),
    ("Trio's core", ["trio/_core"]),
]


def py_spy_parts(raw: Path) -> list[tuple[float, str]]:
    """The share of py-spy's samples in each of :data:`PARTS` (and "other")."""
    shares: collections.Counter[str] = collections.Counter()
    for stack, n in _stacks(raw):
        part = next((name for name, keys in PARTS if any(k in stack for k in keys)), "other")
        shares[part] += n
    total = sum(shares.values())
    return [(100 * n / total, name) for name, n in shares.most_common()]


def main() -> None:
    from _pool import ClientPool
    from _scratch import Project, cpu_seconds, exit_on_sigterm
    from bench_runs import supervisor_round

    exit_on_sigterm()

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", default="True", choices=["True", "TrueWt"])
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--py-spy", action="store_true", help="also sample with py-spy (--gil)")
    ap.add_argument("--raw", type=Path, help="keep py-spy's raw stacks in this file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        project = Project.create(Path(tmp), "profile", tasks=32)
        spans_out = Path(tmp) / "spans.json"
        env = {**project.env, "SPANS_OUT": str(spans_out), "LATTICE_ROOT": str(project.root)}
        read_fd, write_fd = os.pipe()
        sup = subprocess.Popen(
            [sys.executable, __file__, "--serve", "supervisor", "run", "--ready-fd", str(write_fd)],
            cwd=project.root,
            env=env,
            pass_fds=(write_fd,),
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(write_fd)
        ready = os.read(read_fd, 500).decode().strip()
        os.close(read_fd)
        if not ready.startswith("ok "):
            raise SystemExit(f"the supervisor did not start: {ready!r}")
        project.pid = sup.pid
        raw = Path(tmp) / "py-spy.txt"
        try:
            with ClientPool(project.endpoint, args.clients) as pool:
                supervisor_round(pool, sup.pid, args.worker, project.task_ids, 2 * args.clients)
                spy = None
                if args.py_spy:
                    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                    spy = subprocess.Popen(
                        [
                            exe,
                            "record",
                            "-p",
                            str(sup.pid),
                            "--gil",
                            "-r",
                            "500",
                            "--format",
                            "raw",
                            "-o",
                            str(raw),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1.0)  # py-spy attaches
                cpu0 = cpu_seconds(sup.pid)
                result = supervisor_round(pool, sup.pid, args.worker, project.task_ids, args.runs)
                cpu1 = cpu_seconds(sup.pid)
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(timeout=60)
        finally:
            project.stop()
            sup.wait(timeout=60)
        spans = json.loads(spans_out.read_text())
        runs = result["runs"]
        all_runs = runs + 2 * args.clients  # the spans also saw the warm-up's runs
        lat = sorted(result["latencies_ms"])
        print(
            f"{args.worker} x {runs} runs, {args.clients} clients: {result['runs_per_s']:.1f} "
            f"runs/s, {1000 / result['runs_per_s']:.1f} ms per run; Run -> accepted p50 "
            f"{lat[len(lat) // 2]:.1f} ms; supervisor CPU {1000 * (cpu1[0] - cpu0[0]) / runs:.1f}"
            f" ms/run, its children {1000 * (cpu1[1] - cpu0[1]) / runs:.1f} ms/run"
        )
        print(f"{'step':48} {'calls/run':>9} {'ms/run':>8} {'ms/call':>8}")
        for label, (calls, seconds) in sorted(spans.items(), key=lambda kv: -kv[1][1]):
            print(
                f"{label:48} {calls / all_runs:9.2f} {1000 * seconds / all_runs:8.2f} "
                f"{1000 * seconds / calls:8.2f}"
            )
        if args.py_spy and raw.exists() and args.raw:
            shutil.copyfile(raw, args.raw)
        if args.py_spy and raw.exists():
            print("\npy-spy --gil, inclusive share of the supervisor's Python CPU:")
            for share, name in py_spy_top(raw, 40):
                print(f"{share:5.1f}%  {name}")
            print("\npy-spy --gil, own share (innermost frame):")
            for share, name in py_spy_top(raw, 30, leaf=True):
                print(f"{share:5.1f}%  {name}")
            print("\npy-spy --gil, by part (each sample once, in the first part it is in):")
            for share, name in py_spy_parts(raw):
                print(f"{share:5.1f}%  {name}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2:])
    else:
        main()
