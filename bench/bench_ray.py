"""Ray executor overhead on a local test cluster: ``python bench/bench_ray.py [--quick]
[--json PATH]`` (needs the ray extra).

A cluster on this machine (a head and two worker nodes, :mod:`lattice_workers.executors.
ray._local`) measures the overhead per run of going through Ray, not scale: every node
shares this machine's cores. Rows:

- the content's way to a node, first and next run, for this project's own repository:
  an incremental ``git bundle`` through Ray (what the executor does) beside a
  ``git fetch`` into the same empty cache from a path every node reaches (the other
  choice, in its cheapest form: no network);
- Run -> running: ``prepare`` (room reserved, worktree) plus ``start``, per run;
- runs/s at C=1 and C=16: the whole attempt (prepare, start, wait, close, keep,
  release) of ``true``, C at once.

Each of the last two in both shapes, in the same run: one host actor per node (what
the executor does) and a fresh actor per attempt (``host_per_attempt``, what it did
before: the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from lattice_workers.actors._executor import Launch  # noqa: E402
from lattice_workers.executors.ray._bundle import make_bundle  # noqa: E402
from lattice_workers.executors.ray._config import ExecutorConfig  # noqa: E402
from lattice_workers.executors.ray._executor import RayExecutor  # noqa: E402
from lattice_workers.executors.ray._local import LocalCluster  # noqa: E402
from lattice_workers.store import new_id  # noqa: E402

GIT_ENV = {"GIT_AUTHOR_NAME": "B", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "B",
           "GIT_COMMITTER_EMAIL": "b@x"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True,
                          text=True, env={**os.environ, **GIT_ENV}).stdout


async def one_run(ex: RayExecutor, commit: str, logs: Path) -> tuple[float, float]:
    """(Run -> running seconds, whole attempt seconds)."""
    run_id = new_id("run")
    t0 = time.monotonic()
    ws = await ex.prepare(run_id, commit)
    fd = os.open(logs / run_id, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        env = {"PATH": os.environ["PATH"], "LATTICE_RUN_ID": run_id}
        launch = Launch(["true"], env, ws, fd, 10**7, run_id, 1)
        execution = await trio.to_thread.run_sync(ex.start, launch)
    finally:
        os.close(fd)
    running = time.monotonic() - t0
    async with trio.open_nursery() as copying:
        copying.start_soon(execution.run_output)
        await execution.wait()
        copying.cancel_scope.cancel()
    await execution.close(stopped=False)
    await ex.keep(ws, run_id=run_id, attempt=1, base_sha=commit, actor="agent:b", task="T-1")
    await ex.release(ws)
    return running, time.monotonic() - t0


async def throughput(ex: RayExecutor, commit: str, logs: Path, c: int, n: int) -> dict[str, Any]:
    latencies: list[float] = []
    todo = list(range(n))

    async def client() -> None:
        while todo:
            todo.pop()
            running, _ = await one_run(ex, commit, logs)
            latencies.append(running)

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(c):
            nursery.start_soon(client)
    seconds = time.monotonic() - t0
    return {
        "clients": c, "runs": n, "runs_per_s": n / seconds,
        "run_to_running_ms": {
            "median": statistics.median(latencies) * 1000,
            "p90": sorted(latencies)[int(0.9 * (len(latencies) - 1))] * 1000,
        },
    }


def content_paths(source: Path, scratch: Path) -> dict[str, Any]:
    """Bundle beside fetch, first and next run, for ``source``'s HEAD."""
    repo = scratch / "source"
    subprocess.run(["git", "clone", "-q", "--no-local", str(source), str(repo)], check=True)
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "NEXT.md").write_text("one more commit\n")
    git(repo, "add", "NEXT.md")
    git(repo, "commit", "-qm", "next")
    second = git(repo, "rev-parse", "HEAD").strip()
    out: dict[str, Any] = {"commits": int(git(repo, "rev-list", "--count", first)),
                           "files": len(git(repo, "ls-files").splitlines())}
    for name, sha, have in (("first", first, []), ("next", second, [first])):
        t0 = time.monotonic()
        bundle = make_bundle(repo, sha, have)
        cache = scratch / f"cache-{name}.git"
        if have:
            shutil.copytree(scratch / "cache-first.git", cache)
        else:
            git(scratch, "init", "-q", "--bare", str(cache))
        path = scratch / "b.bundle"
        path.write_bytes(bundle)
        git(cache, "bundle", "unbundle", str(path))
        out[f"bundle_{name}"] = {"bytes": len(bundle), "ms": (time.monotonic() - t0) * 1000}
        fetched = scratch / f"fetch-{name}.git"
        if have:
            shutil.copytree(scratch / "fetch-first.git", fetched)
        else:
            git(scratch, "init", "-q", "--bare", str(fetched))
        t0 = time.monotonic()
        git(fetched, "fetch", "-q", str(repo), f"{sha}:refs/cache/{sha}")
        out[f"fetch_{name}"] = {"ms": (time.monotonic() - t0) * 1000}
    return out


async def measure(quick: bool, scratch: Path) -> dict[str, Any]:
    source = Path(git(HERE, "rev-parse", "--show-toplevel").strip())
    result: dict[str, Any] = {"content": content_paths(source, scratch)}
    t0 = time.monotonic()
    cluster = await trio.to_thread.run_sync(LocalCluster.start, scratch / "cluster")
    result["cluster_start_s"] = time.monotonic() - t0
    try:
        repo = scratch / "source"
        commit = git(repo, "rev-parse", "HEAD").strip()
        logs = scratch / "logs"
        logs.mkdir()
        n1, n16 = (10, 32) if quick else (30, 96)
        result["shapes"] = {}
        for shape, per_attempt in (("host per node", False), ("actor per attempt", True)):
            ex = RayExecutor(repo, ExecutorConfig(kind="ray", address=cluster.address),
                             host_per_attempt=per_attempt)
            first, _ = await one_run(ex, commit, logs)  # a node's cache (and host) here
            second, _ = await one_run(ex, commit, logs)
            result["shapes"][shape] = {
                "first_two_runs_to_running_ms": [first * 1000, second * 1000],
                "bundles_sent_bytes": list(ex.bundle_bytes),
                "throughput": [
                    await throughput(ex, commit, logs, 1, n1),
                    await throughput(ex, commit, logs, 16, n16),
                ],
            }
            await ex.close()
    finally:
        await trio.to_thread.run_sync(cluster.stop)
    return result


def table(r: dict[str, Any]) -> str:
    c = r["content"]
    lines = [
        "| Ray executor, local test cluster (2 nodes, this machine) | value |",
        "|---|---|",
        f"| repository ({c['commits']} commits, {c['files']} files): bundle, first run | "
        f"{c['bundle_first']['bytes'] / 1024:.0f} KiB, {c['bundle_first']['ms']:.0f} ms |",
        f"| same, git fetch from a path, first run | {c['fetch_first']['ms']:.0f} ms |",
        f"| one new commit: bundle, next run | {c['bundle_next']['bytes']} bytes, "
        f"{c['bundle_next']['ms']:.0f} ms |",
        f"| same, git fetch from a path, next run | {c['fetch_next']['ms']:.0f} ms |",
    ]
    for shape, m in r["shapes"].items():
        lines.append(
            f"| {shape}: Run -> running, first run / next (node cache warm) | "
            f"{m['first_two_runs_to_running_ms'][0]:.0f} / "
            f"{m['first_two_runs_to_running_ms'][1]:.0f} ms |"
        )
        for row in m["throughput"]:
            lines.append(
                f"| {shape}: runs/s, C={row['clients']} ({row['runs']} runs of `true`) | "
                f"{row['runs_per_s']:.1f} (Run -> running p50 "
                f"{row['run_to_running_ms']['median']:.0f} ms, "
                f"p90 {row['run_to_running_ms']['p90']:.0f} ms) |"
            )
    lines.append(f"| cluster start (head + 2 nodes) | {r['cluster_start_s']:.1f} s |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lattice-bench-ray-") as tmp:
        result = trio.run(measure, args.quick, Path(tmp))
    result["table"] = table(result)
    print(result["table"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
