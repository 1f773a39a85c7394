"""The one benchmark entry point: ``python bench/run.py [--quick] [--json-out PATH]``.

Runs, in this order and in one process tree, every measurement of the supervisor
beside the floor of this machine (``bench_runs``: throughput, floors, request
latency, duplicate storm, ``Board.append`` beside a bare write; ``bench_ps``: ``ps``
latency, 500 live runs, CLI wall time; ``bench_bigrepo``, full mode only: Run -> worker
running on a 50,000-file repository, fresh, pooled and bare ``git worktree add``),
then the board benchmark (``bench_board.py``), the wire benchmark
(``bench_protocol.py``) and the workspace benchmark (``bench_workspace.py``: a run's
workspace beside a git worktree) as they are, in subprocesses. Prints one table
(markdown, ready for the README's Performance section) with the issue's goals beside
the measurements, then the other benchmarks' own tables, and writes everything as
JSON (default ``bench/results.json``; ``--json-out`` elsewhere).

Scratch projects live in a temporary folder (``--dir`` chooses the parent, so that
another filesystem can be measured); the table names the filesystem.
``--smoke`` is the smallest subset (every row, tiny counts, the other two benchmarks
skipped): the test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_bigrepo  # noqa: E402
import bench_ps  # noqa: E402
import bench_runs  # noqa: E402
from _scratch import exit_on_sigterm, machine  # noqa: E402

OTHERS = ("bench_board.py", "bench_protocol.py", "bench_workspace.py")


def run_other(script: str, quick: bool, scratch: Path) -> dict[str, Any]:
    """Run another benchmark as it is; its printed table, and its JSON when it writes one."""
    path = HERE / script
    if not path.exists():
        return {"skipped": f"{script} does not exist yet"}
    helptext = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    argv = [sys.executable, str(path)]
    if quick and "--quick" in helptext:
        argv.append("--quick")
    json_path = scratch / f"{path.stem}.json"
    if "--json" in helptext:
        argv += ["--json", str(json_path)]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    out: dict[str, Any] = {
        "argv": argv[1:],
        "exit_code": proc.returncode,
        "seconds": time.monotonic() - t0,
        "table": proc.stdout,
    }
    if proc.returncode != 0:
        out["stderr"] = proc.stderr[-4000:]
    if json_path.exists():
        try:
            out["json"] = json.loads(json_path.read_text())
        except ValueError:
            pass
    return out


# ----------------------------------------------------------------------------- the table


def _rate(stats: dict[str, float]) -> str:
    return f"{stats['median']:.1f} ({stats['min']:.1f}-{stats['max']:.1f})"


def _ms(stats: dict[str, float]) -> str:
    return f"{stats['median']:.2f} / {stats['p99']:.2f}"


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, each with its measured value and whether it is met."""
    out: list[dict[str, Any]] = []
    for row in result["runs"]["throughput"]:
        c = row["clients"]
        cpu = row["cpu_ms_per_run"]
        cpu_ratio = sum(cpu["sup"].values()) / sum(cpu["ceiling"].values())
        out += [
            {
                "goal": f"runs/s >= 80% of the stack ceiling, C={c}",
                "value": row["share_of_ceiling"],
                "met": row["share_of_ceiling"] >= 0.8,
            },
            {
                "goal": f"CPU per run <= 1.3x the stack ceiling's, C={c}",
                "value": cpu_ratio,
                "met": cpu_ratio <= 1.3,
            },
            {
                "goal": f"runs/s with worktree >= 95% of bare worktree add+remove, C={c}",
                "value": row["share_of_floor_worktree"],
                "met": row["share_of_floor_worktree"] >= 0.95,
            },
        ]
    ps = {(r["tasks"], r["live"]): r["latency_ms"]["median"] for r in result["ps"]}
    small, big = min(t for t, _ in ps), max(t for t, _ in ps)
    for live in sorted({lv for _, lv in ps}):
        ratio = ps[(big, live)] / ps[(small, live)]
        out.append(
            {
                "goal": f"ps at {big} tasks <= 1.1x ps at {small} tasks, {live} live",
                "value": ratio,
                "met": ratio <= 1.1,
            }
        )
    scale = result["scale"]
    out.append(
        {
            "goal": f"{scale['live_runs']} live runs: RSS < 200 MB",
            "value": scale["rss_live_mib"],
            "met": scale["rss_live_mib"] < 200,
        }
    )
    out.append(
        {
            "goal": f"{scale['live_runs']} live runs: ps < 100 ms (p99)",
            "value": scale["ps_latency_ms"]["p99"],
            "met": scale["ps_latency_ms"]["p99"] < 100,
        }
    )
    wall = result["cli"]["wall_ms"]
    stack = wall["python -c 'import zmq, msgspec'"]["median"]
    for name, limit in (("lattice worker ps", 1.2), ("lattice worker run", 1.3)):
        ratio = wall[name]["median"] / stack
        out.append(
            {
                "goal": f"{name} <= {limit}x python -c 'import zmq, msgspec'",
                "value": ratio,
                "met": ratio <= limit,
            }
        )
    big = result.get("big_repo", {})
    if "pooled_share_of_bare_add" in big:
        out.append(
            {
                "goal": f"{big['files']:,} files: pooled Run -> running <= 10% of a bare "
                "git worktree add (p50)",
                "value": big["pooled_share_of_bare_add"],
                "met": big["pooled_share_of_bare_add"] <= 0.10,
            }
        )
    storm = result["runs"]["storm"]
    out.append(
        {
            "goal": f"duplicate storm of {storm['clients']}: exactly 1 run started",
            "value": storm["process_started_on_board"],
            "met": storm["ok"],
        }
    )
    return out


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    fs = m["filesystem"]
    load = ", ".join(f"{x:.1f}" for x in m["loadavg_at_start"])
    load_end = ", ".join(f"{x:.1f}" for x in m.get("loadavg_at_end", []))
    lines = [
        f"Machine: {m['cpus']} CPUs (load average {load} at start, {load_end} at end), "
        f"Python {m['python']}, "
        f"git {m['git']}; scratch projects and worktrees on {fs['label']} ({fs['mount']}). "
        f"Mode: {result['mode']}, {result['seconds']:.0f} s.",
        "",
        "| measurement | lattice | floor / baseline | ratio | goal |",
        "|---|---|---|---|---|",
    ]

    def row(*cells: str) -> None:
        lines.append("| " + " | ".join(cells) + " |")

    runs = result["runs"]
    for r in runs["throughput"]:
        s = r["runs_per_s"]
        row(
            f"runs/s, no worktree, C={r['clients']} ({r['runs']} runs x {r['reps']})",
            _rate(s["sup"]),
            f"spawn + 2 bare writes {_rate(s['spawn+append'])}",
            f"{r['share_of_floor']:.0%}",
            "(floor)",
        )
    for r in runs["throughput"]:
        s = r["runs_per_s"]
        row(
            f"runs/s, worktree (pooled), C={r['clients']} "
            f"({r['runs_worktree']} runs x {r['reps']})",
            _rate(s["sup_wt"]),
            f"git worktree add+remove {_rate(s['worktree'])}"
            + (
                f" ({n} failed git pairs, not counted)"
                if (n := r["floor_worktree_git_failures"])
                else ""
            ),
            f"{r['share_of_floor_worktree']:.0%}",
            ">= 95%",
        )
    for r in runs["throughput"]:
        s = r["runs_per_s"]
        if "sup_wt_fresh" not in s:
            continue
        row(
            f"runs/s, worktree (pool off), C={r['clients']} "
            f"({r['runs_worktree']} runs x {r['reps']})",
            _rate(s["sup_wt_fresh"]),
            f"git worktree add+remove {_rate(s['worktree'])}; pooled is "
            f"{r['pool_speedup']:.2f}x this",
            f"{r['share_of_floor_worktree_fresh']:.0%}",
            "(diagnostic)",
        )
    for r in runs["throughput"]:
        s = r["runs_per_s"]
        row(
            f"stack ceiling (bench/_ceiling.py), C={r['clients']}",
            f"lattice is {r['share_of_ceiling']:.0%} of it",
            f"ceiling {_rate(s['ceiling'])}",
            f"{r['ceiling_share_of_floor']:.0%} of the floor",
            "lattice >= 80% of it",
        )
    for r in runs["throughput"]:
        s = r["runs_per_s"]
        row(
            f"floor parts, C={r['clients']}",
            "",
            f"spawn {_rate(s['spawn'])}; 2 bare writes {_rate(s['append'])}",
            "",
            "",
        )
    for r in runs["throughput"]:
        cpu = r["cpu_ms_per_run"]
        for sup, fl, label in (
            ("sup", "spawn+append", ""),
            ("ceiling", "spawn+append", ", stack ceiling"),
            ("sup_wt", "worktree", ", worktree (pooled)"),
            ("sup_wt_fresh", "worktree", ", worktree (pool off)"),
        ):
            if sup not in cpu:
                continue
            mine, base = cpu[sup], cpu[fl]
            total, base_total = sum(mine.values()), sum(base.values())
            row(
                f"CPU ms per run (process + children){label}, C={r['clients']}",
                f"{mine['self']:.1f} + {mine['children']:.1f}",
                f"{'spawn + 2 bare writes' if fl != 'worktree' else 'worktree add+remove'} "
                f"{base['self']:.1f} + {base['children']:.1f}",
                f"{total / base_total:.1f}x" if base_total else "",
                "<= 1.3x the ceiling's" if sup == "sup" else "",
            )
    if store := runs.get("store"):
        ours, bare = store["board_append"], store["bare_write"]
        row(
            f"Board.append vs bare write, wall ms per write, median ({store['writes']} each)",
            f"{ours['wall_ms']['median']:.2f}",
            f"bare write {bare['wall_ms']['median']:.2f}",
            f"{store['ratio_wall']:.1f}x",
            "(diagnostic)",
        )
        row(
            "Board.append vs bare write, CPU ms per write",
            f"{ours['cpu_ms_per_write']:.2f}",
            f"bare write {bare['cpu_ms_per_write']:.2f}",
            f"{store['ratio_cpu']:.1f}x",
            "(diagnostic)",
        )
    first, last = runs["throughput"][0], runs["throughput"][-1]
    row(
        f"Run -> accepted p50 / p99 ms, idle (C={first['clients']})",
        _ms(first["run_latency_ms"]),
        "",
        "",
        "",
    )
    row(
        f"Run -> accepted p50 / p99 ms, under load (C={last['clients']})",
        _ms(last["run_latency_ms"]),
        "",
        "",
        "",
    )
    row(
        f"Run -> accepted p50 / p99 ms, under load with worktrees (C={last['clients']})",
        _ms(last["run_latency_ms_worktree"]),
        "",
        "",
        "",
    )
    ps = {(r["tasks"], r["live"]): r["latency_ms"] for r in result["ps"]}
    small = min(t for t, _ in ps)
    for (tasks, live), stats in sorted(ps.items()):
        base = ps[(small, live)]
        ratio = stats["median"] / base["median"]
        row(
            f"ps p50 / p99 ms, {tasks:,} tasks, {live} live runs",
            _ms(stats),
            "" if tasks == small else f"{small} tasks: {_ms(base)}",
            "" if tasks == small else f"{ratio:.2f}x",
            "" if tasks == small else "<= 1.1x",
        )
    sc = result["scale"]
    row(
        f"{sc['live_runs']} live runs: supervisor RSS MiB",
        f"{sc['rss_live_mib']:.1f}",
        f"idle {sc['rss_idle_mib']:.1f}",
        "",
        "< 200 MB",
    )
    row(
        f"{sc['live_runs']} live runs: ps p50 / p99 ms",
        _ms(sc["ps_latency_ms"]),
        f"idle {_ms(sc['ps_latency_idle_ms'])}",
        "",
        "< 100 ms",
    )
    row(
        f"{sc['live_runs']} live runs: seconds until all running",
        f"{sc['seconds_to_all_running']:.1f}",
        "",
        "",
        "",
    )
    cli = result["cli"]
    wall = cli["wall_ms"]
    stack_name = "python -c 'import zmq, msgspec'"
    base_ms = wall[stack_name]["median"]
    for name, goal in (
        ("lattice worker ps", "<= 1.2x"),
        ("lattice worker run", "<= 1.3x"),
        ("lattice supervisor status", ""),
        ("python -c pass", ""),
    ):
        if name not in wall:
            continue
        s = wall[name]
        row(
            f"`{name}` ms, board of {cli['tasks']:,} tasks",
            f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})",
            f"`{stack_name}` {base_ms:.0f}",
            f"{s['median'] / base_ms:.1f}x",
            goal,
        )
    for cells in bench_bigrepo.rows(result.get("big_repo", {"skipped": "not measured"})):
        row(*cells)
    st = runs["storm"]
    replies = ", ".join(f"{n} {code}" for code, n in sorted(st["replies"].items()))
    row(
        f"duplicate storm: {st['clients']} processes, one key",
        f"{st['runs_created']} started",
        f"replies: {replies}; process_started on the board: {st['process_started_on_board']}",
        "",
        "exactly 1",
    )
    missed = [g for g in result["goals"] if not g["met"]]
    lines += ["", f"Goals met: {len(result['goals']) - len(missed)} of {len(result['goals'])}."]
    for g in missed:
        lines.append(f"- not met: {g['goal']} (measured {g['value']:.2f})")
    return "\n".join(lines)


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts: under a minute")
    ap.add_argument("--smoke", action="store_true", help="the smallest subset (for tests)")
    ap.add_argument("--json-out", type=Path, default=HERE / "results.json")
    ap.add_argument("--dir", type=Path, default=None, help="parent of the scratch folder")
    ap.add_argument(
        "--ray", action="store_true", help="also bench_ray.py: a local Ray cluster (ray extra)"
    )
    ap.add_argument(
        "--skip-others",
        action="store_true",
        help="do not run bench_board.py, bench_protocol.py and bench_workspace.py",
    )
    args = ap.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lattice-bench-", dir=args.dir) as tmp:
        scratch = Path(tmp)
        result: dict[str, Any] = {
            "version": 1,
            "mode": mode,
            "started_at": time.time(),
            "machine": machine(scratch),
        }
        result["runs"] = bench_runs.measure(mode, scratch / "runs")
        result.update(bench_ps.measure(mode, scratch / "ps"))
        if mode == "full":  # making its repository alone outlasts the quick bench
            result["big_repo"] = bench_bigrepo.measure(mode, scratch / "big")
        else:
            result["big_repo"] = {"skipped": f"not run with --{mode} (bench/bench_bigrepo.py)"}
        others: dict[str, Any] = {}
        for script in (*OTHERS, "bench_ray.py") if args.ray else OTHERS:
            if mode == "smoke" or args.skip_others:
                why = "--smoke" if mode == "smoke" else "--skip-others"
                others[Path(script).stem] = {"skipped": f"not run with {why}"}
            else:
                others[Path(script).stem] = run_other(script, mode == "quick", scratch)
        result["others"] = others
    result["seconds"] = time.monotonic() - started
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    result["goals"] = goals(result)
    result["table"] = table(result)
    print(result["table"])
    for name, other in others.items():
        print(f"\n## {name}")
        print(other.get("table") or other.get("skipped") or other.get("stderr", ""))
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {args.json_out}")


if __name__ == "__main__":
    main()
