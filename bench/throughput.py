"""The throughput rows alone: supervisor, stack ceiling and floor, for quick comparisons.

``python bench/throughput.py [--runs 200] [--reps 2] [--clients 1,4,16] [--runs-wt 4]``
runs only :func:`bench_runs.measure_throughput` on a scratch project and prints one
line per concurrency: runs/s of the supervisor, the ceiling and the floor (spawn + 2
bare writes), the shares, CPU ms per run (process + children), the Run -> accepted
p50, and the worktree runs, with the pool of reused workspaces on and off (switched
by a reload, same repetitions), beside bare ``git worktree add`` + ``remove`` (raise
``--runs-wt`` to compare those). A couple of minutes instead of the full
bench's ten: use it to compare before and after a change, or to see which regime
the machine is in (the floor's "2 bare writes" rate), not for the README's table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import bench_runs
    from _scratch import Project, exit_on_sigterm

    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="runs per repetition and row")
    ap.add_argument("--reps", type=int, default=2, help="measured repetitions")
    ap.add_argument("--clients", default="1,4,16", help="concurrencies, comma-separated")
    ap.add_argument("--runs-wt", type=int, default=4, help="worktree runs per repetition")
    args = ap.parse_args()
    clients = tuple(int(c) for c in args.clients.split(","))
    sizes = bench_runs.Sizes(
        clients, reps=args.reps, runs=args.runs, runs_wt=args.runs_wt, storm=2, store=10
    )
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        scratch = Path(tmp)
        project = Project.create(scratch, "runs", tasks=sizes.tasks + 1)
        try:
            project.start()
            rows = bench_runs.measure_throughput(project, sizes, scratch)
        finally:
            project.stop()
    for r in rows:
        rate = {k: r["runs_per_s"][k]["median"] for k in ("sup", "ceiling", "spawn+append")}
        cpu = r["cpu_ms_per_run"]
        print(
            f"C={r['clients']:<3} runs/s: lattice {rate['sup']:.1f}, "
            f"ceiling {rate['ceiling']:.1f}, floor {rate['spawn+append']:.1f} (2 bare writes "
            f"{r['runs_per_s']['append']['median']:.1f}) | lattice/floor "
            f"{r['share_of_floor']:.0%}, ceiling/floor {r['ceiling_share_of_floor']:.0%}, "
            f"lattice/ceiling {r['share_of_ceiling']:.0%} | CPU ms/run lattice "
            f"{cpu['sup']['self']:.1f}+{cpu['sup']['children']:.1f}, ceiling "
            f"{cpu['ceiling']['self']:.1f}+{cpu['ceiling']['children']:.1f}, floor "
            f"{cpu['spawn+append']['self']:.1f}+{cpu['spawn+append']['children']:.1f} | "
            f"accepted p50 ms lattice {r['run_latency_ms']['median']:.1f}, ceiling "
            f"{r['run_latency_ms_ceiling']['median']:.1f} | worktree runs/s lattice "
            f"pooled {r['runs_per_s']['sup_wt']['median']:.1f}, pool off "
            f"{r['runs_per_s']['sup_wt_fresh']['median']:.1f} (pooled/off "
            f"{r['pool_speedup']:.2f}x), floor {r['runs_per_s']['worktree']['median']:.1f} "
            f"(pooled {r['share_of_floor_worktree']:.0%}, off "
            f"{r['share_of_floor_worktree_fresh']:.0%}) | CPU ms/run worktree pooled "
            f"{cpu['sup_wt']['self']:.1f}+{cpu['sup_wt']['children']:.1f}, off "
            f"{cpu['sup_wt_fresh']['self']:.1f}+{cpu['sup_wt_fresh']['children']:.1f}"
        )


if __name__ == "__main__":  # the client pool's forkserver imports this module
    main()
