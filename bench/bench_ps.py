"""``ps`` latency by board size and live runs, 500 live runs held at once, and CLI wall time.

- ``ps`` latency: Ps requests over the real client, on boards of 10 and 10,000 tasks,
  with 0 and 200 live runs (20 ``sleep 600`` workers on 10 tasks, no worktree).
- Scale: 500 live ``sleep`` runs held at once (``max_concurrent`` 600): the
  supervisor's resident memory (``VmRSS`` from ``/proc``) idle and with them, and
  ``ps`` latency meanwhile.
- CLI wall time on a board of 5,000 tasks with its supervisor running: ``lattice
  worker ps`` and ``lattice worker run`` (the console script a user types) beside
  ``python -c pass`` and ``python -c "import zmq, msgspec"``, interleaved
  repetition by repetition so that the machine's noise hits every row alike.

Usage: ``python bench/bench_ps.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pool import ClientPool
from _scratch import SLEEPERS, Project, lattice_command, rss_kib, run_main, summary, wait_for


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; ``quick`` and ``smoke`` shrink it."""

    big_board: int  # tasks on the large board of the ps measurement
    live: int  # live runs during the ps measurement
    scale: int  # live runs held at once
    ps_count: int  # Ps requests per cell
    cli_reps: int
    cli_board: int

    @classmethod
    def of(cls, mode: str) -> Sizes:
        return {
            "full": cls(10_000, live=200, scale=500, ps_count=2000, cli_reps=15, cli_board=5_000),
            "quick": cls(10_000, live=50, scale=100, ps_count=300, cli_reps=3, cli_board=5_000),
            "smoke": cls(200, live=10, scale=20, ps_count=20, cli_reps=1, cli_board=200),
        }[mode]


# ----------------------------------------------------------------------------- helpers


def hold_live(project: Project, count: int, tasks: list[str]) -> list[str]:
    """Start ``count`` sleeping runs (each key a sleeper x a task); wait until all run."""
    from lattice_workers.protocol import Ps, PsReply, Run, RunReply

    keys = [(w, t) for t in tasks for w in SLEEPERS][:count]
    if len(keys) < count:
        raise RuntimeError(f"{len(tasks)} tasks x {len(SLEEPERS)} sleepers < {count} runs")
    run_ids = []
    with project.client() as client:
        for worker, task in keys:
            reply = client.request(Run(worker=worker, task=task, requested_by="human:bench"))
            assert isinstance(reply, RunReply)
            run_ids.append(reply.run.run_id)

        def all_running() -> bool:
            reply = client.request(Ps())
            assert isinstance(reply, PsReply)
            return sum(r.state == "running" for r in reply.runs) >= count

        wait_for(all_running, deadline_s=30 + count * 0.5, what=f"{count} runs to be running")
    return run_ids


def release(project: Project, run_ids: list[str]) -> None:
    """Cancel the held runs and wait until each has ended."""
    from lattice_workers.protocol import Cancel, Wait

    with project.client() as client:
        for run_id in run_ids:
            client.request(Cancel(run_id=run_id))
        for start in range(0, len(run_ids), 1000):
            for _ in client.stream(Wait(run_ids=run_ids[start : start + 1000]), timeout=120):
                pass


def ps_latency(project: Project, count: int) -> dict[str, Any]:
    """``count`` Ps requests from a client process of their own (after 10 warm-up)."""
    with ClientPool(project.endpoint, 1) as pool:
        pool.run([{"job": "ps", "count": 10}])
        result = pool.run([{"job": "ps", "count": count}])[0]
    return {**summary(result["latencies_ms"]), "runs_listed": result["runs"]}


def ps_latency_side_by_side(projects: list[Project], count: int) -> list[dict[str, Any]]:
    """Ps latency of several supervisors, in alternating batches (noise hits all alike)."""
    rounds = 10
    pools = [ClientPool(p.endpoint, 1) for p in projects]
    try:
        samples: list[list[float]] = [[] for _ in projects]
        listed = [0 for _ in projects]
        for pool in pools:
            pool.run([{"job": "ps", "count": 10}])  # warm-up
        for round_ in range(rounds):
            order = list(enumerate(pools))
            for i, pool in order if round_ % 2 else reversed(order):
                result = pool.run([{"job": "ps", "count": max(1, count // rounds)}])[0]
                samples[i] += result["latencies_ms"]
                listed[i] = result["runs"]
    finally:
        for pool in pools:
            pool.close()
    return [{**summary(s), "runs_listed": n} for s, n in zip(samples, listed, strict=True)]


# ----------------------------------------------------------------------------- measurements


def measure_ps(scratch: Path, sizes: Sizes) -> list[dict[str, Any]]:
    """Boards of 10 and ``big_board`` tasks, each with its supervisor, measured together."""
    sizes_ = (10, sizes.big_board)
    projects = [Project.create(scratch, f"ps{n}", tasks=n) for n in sizes_]
    held: list[list[str]] = []
    try:
        for project in projects:
            project.start()
        idle = ps_latency_side_by_side(projects, sizes.ps_count)
        held = [hold_live(p, sizes.live, p.task_ids[:10]) for p in projects]
        live = ps_latency_side_by_side(projects, sizes.ps_count)
        for project, runs in zip(projects, held, strict=True):
            release(project, runs)
    finally:
        for project in projects:
            project.stop()
    rows = []
    for n, a, b in zip(sizes_, idle, live, strict=True):
        rows.append({"tasks": n, "live": 0, "latency_ms": a})
        rows.append({"tasks": n, "live": sizes.live, "latency_ms": b})
    return rows


def measure_scale(scratch: Path, sizes: Sizes) -> dict[str, Any]:
    tasks = -(-sizes.scale // len(SLEEPERS))
    project = Project.create(scratch, "scale", tasks=tasks)
    try:
        pid = project.start()
        idle = ps_latency(project, 20)  # the same client traffic before the idle reading
        rss_idle = rss_kib(pid)
        t0 = time.monotonic()
        held = hold_live(project, sizes.scale, project.task_ids)
        to_running = time.monotonic() - t0
        rss_live = rss_kib(pid)
        live = ps_latency(project, sizes.ps_count)
        t0 = time.monotonic()
        release(project, held)
        to_released = time.monotonic() - t0
    finally:
        project.stop()
    return {
        "live_runs": sizes.scale,
        "rss_idle_mib": rss_idle["VmRSS"] / 1024,
        "rss_live_mib": rss_live["VmRSS"] / 1024,
        "rss_peak_mib": rss_live["VmHWM"] / 1024,
        "ps_latency_ms": live,
        "ps_latency_idle_ms": idle,
        "seconds_to_all_running": to_running,
        "seconds_to_cancel_all": to_released,
    }


def measure_cli(scratch: Path, sizes: Sizes) -> dict[str, Any]:
    project = Project.create(scratch, "cli", tasks=sizes.cli_board)
    lattice = lattice_command()
    tasks = iter(project.task_ids)
    commands: dict[str, Any] = {
        "python -c pass": lambda: [sys.executable, "-c", "pass"],
        "python -c 'import zmq, msgspec'": lambda: [sys.executable, "-c", "import zmq, msgspec"],
        "lattice worker ps": lambda: [*lattice, "worker", "ps"],
        "lattice worker run": lambda: [*lattice, "worker", "run", "True", next(tasks)],
        "lattice supervisor status": lambda: [*lattice, "supervisor", "status"],
    }
    env = {**project.env, "LATTICE_NO_AUTOSTART": "1"}
    times: dict[str, list[float]] = {name: [] for name in commands}
    try:
        project.start()
        for rep in range(sizes.cli_reps + 2):  # two warm-up rounds
            for name, argv in commands.items():
                t0 = time.perf_counter()
                proc = subprocess.run(argv(), cwd=project.root, env=env, capture_output=True)
                elapsed = (time.perf_counter() - t0) * 1000
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} failed: {proc.stderr.decode()[-500:]}")
                if rep >= 2:
                    times[name].append(elapsed)
    finally:
        project.stop()
    stats = {name: summary(values) for name, values in times.items()}
    base = stats["python -c pass"]["median"]
    return {
        "tasks": sizes.cli_board,
        "reps": sizes.cli_reps,
        "wall_ms": stats,
        "times_python_pass": {name: s["median"] / base for name, s in stats.items()},
    }


def measure(mode: str, scratch: Path) -> dict[str, Any]:
    sizes = Sizes.of(mode)
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name, fn in (("ps", measure_ps), ("scale", measure_scale), ("cli", measure_cli)):
        t0 = time.monotonic()
        out[name] = fn(scratch, sizes)
        seconds[name] = time.monotonic() - t0
    out["phase_seconds"] = seconds
    return out


def main() -> None:
    run_main(__doc__.splitlines()[0], measure, "bench-ps-")


if __name__ == "__main__":
    main()
