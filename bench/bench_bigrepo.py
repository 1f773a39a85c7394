"""Big-repository rows: Run -> worker running on a generated repository of 50,000 files.

``python bench/bench_bigrepo.py [--quick | --smoke] [--json PATH]``; ``bench/run.py``
runs it in its full mode only (``--quick``, which CI runs, leaves it out: making the
repository alone takes longer than the whole quick bench).

The repository is made once per bench run (not timed) with ``git fast-import``:
``FILES`` files of about 1.5 KB in 500 folders, then a second commit that changes 10
of them. Runs alternate between the two commits, so a pooled workspace is really
re-pointed every time. Measured side by side, each as p50 and p99 of its repetitions:

- ``git worktree add --detach`` alone (and its ``remove``): what every peer pays per
  attempt, and what a workspace cost here before the pool;
- Run -> worker running with ``workers.worktree_pool`` 0 (a fresh workspace per run);
- Run -> worker running with the pool (after one run that fills it, not counted);
- runs per second with the pool, ``CLIENTS`` clients each running one run at a time.

"Worker running" is the worker's first command: it writes the wall clock
(``CLOCK_REALTIME``, as ``time.time()`` here before the Run request is sent).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _scratch import Project, run_main, summary  # noqa: E402

#: Per mode: files in the repository, repetitions of bare add, fresh runs, pooled
#: runs (100 in full: a p99 of 20 is their maximum), throughput runs per client.
SIZES = {
    "full": (50_000, 5, 5, 100, 5),
    "quick": (2_000, 3, 3, 10, 5),
    "smoke": (200, 2, 2, 3, 2),
}
CLIENTS = 4
#: What the measured worker runs first: the wall clock into a file named after its run.
MARK = 'date +%s.%N > "$BENCH_MARKS/$LATTICE_RUN_ID"'


def make_repository(root: Path, files: int) -> tuple[str, str]:
    """``root`` as a repository of ``files`` files (one commit), then a second commit
    changing 10 of them; the two commits' shas. Not timed."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    body = "".join(f"line {n} of a generated source file, to have some bytes\n" for n in range(28))
    chunks: list[bytes] = []

    def blob(mark: int, text: str) -> None:
        data = text.encode()
        chunks.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))

    for i in range(files):
        blob(i + 1, f"file {i}\n{body}")
    blob(files + 1, ".lattice/\n")
    chunks.append(
        b"commit refs/heads/main\nmark :%d\n"
        b"committer bench <bench@example.com> 1700000000 +0000\ndata 6\nfirst\n" % (files + 2)
    )
    chunks.append(b"M 100644 :%d .gitignore\n" % (files + 1))
    for i in range(files):
        chunks.append(b"M 100644 :%d %s\n" % (i + 1, _path(i).encode()))
    chunks.append(b"\n")
    changed = range(0, files, max(files // 10, 1))[:10]
    for n, i in enumerate(changed):
        blob(files + 3 + n, f"file {i}, changed\n{body}")
    chunks.append(
        b"commit refs/heads/main\nmark :%d\n"
        b"committer bench <bench@example.com> 1700000100 +0000\ndata 7\nsecond\n"
        b"from :%d\n" % (files + 20, files + 2)
    )
    for n, i in enumerate(changed):
        chunks.append(b"M 100644 :%d %s\n" % (files + 3 + n, _path(i).encode()))
    chunks.append(b"\n")
    subprocess.run(
        ["git", "-C", str(root), "fast-import", "--quiet"], input=b"".join(chunks), check=True
    )
    # The project's own checkout, as a user has one (not timed either).
    subprocess.run(["git", "-C", str(root), "reset", "-q", "--hard"], check=True)
    heads = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD~1", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return heads[0], heads[1]


def _path(i: int) -> str:
    return f"d{i % 500:03d}/s{(i // 500) % 4}/f{i}.txt"


def bare_worktree(root: Path, where: Path, commits: tuple[str, str], reps: int) -> dict[str, Any]:
    """``git worktree add --detach`` and ``remove --force``, ``reps`` times each."""
    add, remove = [], []
    where.mkdir()
    for n in range(reps):
        path = where / f"bare-{n}"
        t0 = time.monotonic()
        subprocess.run(
            [*("git", "-C", str(root), "worktree", "add", "-q", "--detach"), str(path),
             commits[n % 2]],
            check=True,
            capture_output=True,
        )
        t1 = time.monotonic()
        subprocess.run(
            ["git", "-C", str(root), "worktree", "remove", "--force", str(path)],
            check=True,
            capture_output=True,
        )
        t2 = time.monotonic()
        add.append((t1 - t0) * 1000)
        remove.append((t2 - t1) * 1000)
    return {"add_ms": summary(add), "remove_ms": summary(remove), "reps": reps}


def run_to_running(
    project: Project, marks: Path, task: str, commits: tuple[str, str], reps: int
) -> list[float]:
    """Run -> worker running, ms, for ``reps`` runs one after another."""
    from lattice_workers.protocol import Run, RunReply, Wait

    out = []
    with project.client(timeout=600) as client:
        for n in range(reps):
            t0 = time.time()
            reply = client.request(
                Run(worker="Mark", task=task, revision=commits[n % 2], requested_by="human:bench")
            )
            assert isinstance(reply, RunReply)
            run_id = reply.run.run_id
            for done in client.stream(Wait(run_ids=[run_id]), timeout=600):
                assert isinstance(done, RunReply) and done.run.state == "completed", done
            out.append((float((marks / run_id).read_text()) - t0) * 1000)
    return out


def throughput(project: Project, tasks: list[str], commits: tuple[str, str], each: int) -> float:
    """Runs per second, one client per task, each running ``each`` runs in a row."""
    from lattice_workers.protocol import Run, RunReply, Wait

    failures: list[BaseException] = []

    def client_loop(task: str) -> None:
        try:
            with project.client(timeout=600) as client:
                for n in range(each):
                    rev = commits[n % 2]
                    reply = client.request(Run(worker="Quick", task=task, revision=rev))
                    assert isinstance(reply, RunReply)
                    for _ in client.stream(Wait(run_ids=[reply.run.run_id]), timeout=600):
                        pass
        except BaseException as err:  # re-raised below
            failures.append(err)

    threads = [threading.Thread(target=client_loop, args=(t,)) for t in tasks]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - t0
    if failures:
        raise failures[0]
    return len(tasks) * each / elapsed


def configure(project: Project, **workers: Any) -> None:
    path = project.root / ".lattice" / "config.json"
    config = json.loads(path.read_text())
    config["workers"] = {"max_concurrent": CLIENTS, "keep_finished": 100_000, **workers}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def measure(mode: str, scratch: Path) -> dict[str, Any]:
    files, bare_reps, fresh_reps, pooled_reps, each = SIZES[mode]
    project = Project.create(scratch, "big", tasks=CLIENTS + 1, repo=False)
    t_make = time.monotonic()
    commits = make_repository(project.root, files)
    made_s = time.monotonic() - t_make
    marks = scratch / "marks"
    marks.mkdir()
    definitions = {
        "Mark": {"command": MARK, "env": {"BENCH_MARKS": str(marks)}},
        "Quick": {"command": "true"},
    }
    for name, fields in definitions.items():
        body = {"name": name, "engine": "script", "worktree": True, **fields}
        (project.root / "workers" / f"{name.lower()}.json").write_text(json.dumps(body))
    task = project.task_ids[-1]
    bare = bare_worktree(project.root, scratch / "bare", commits, bare_reps)
    result: dict[str, Any] = {"files": files, "repository_seconds": made_s, "bare": bare}
    try:
        configure(project, worktree_pool=0)
        project.start()
        result["fresh_ms"] = summary(run_to_running(project, marks, task, commits, fresh_reps))
        project.stop()
        configure(project)  # the default pool: max_concurrent
        project.start()
        run_to_running(project, marks, task, commits, 1)  # fills the pool: not counted
        result["pooled_ms"] = summary(run_to_running(project, marks, task, commits, pooled_reps))
        tasks = project.task_ids[:CLIENTS]
        throughput(project, tasks, commits, 1)  # a pooled workspace per client: not counted
        result["pooled_runs_per_s"] = throughput(project, tasks, commits, each)
        result["clients"] = CLIENTS
        result["runs_per_client"] = each
    finally:
        project.stop()
    add = bare["add_ms"]
    result["pooled_share_of_bare_add"] = result["pooled_ms"]["median"] / add["median"]
    result["pooled_share_of_bare_add_p99"] = result["pooled_ms"]["p99"] / add["p99"]
    result["bare_pairs_per_s"] = 1000 / statistics.fmean(
        [bare["add_ms"]["median"] + bare["remove_ms"]["median"]]
    )
    return result


def rows(big: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The table rows of :func:`measure`'s result (for ``bench/run.py``)."""
    if "skipped" in big:
        return [("big repository", big["skipped"], "", "", "")]

    def ms(s: dict[str, float]) -> str:
        return f"{s['median']:.0f} / {s['p99']:.0f}"

    n = f"{big['files']:,} files"
    add = big["bare"]["add_ms"]
    return [
        (f"{n}: bare `git worktree add` p50 / p99 ms", ms(add),
         f"remove {ms(big['bare']['remove_ms'])}", "", "(baseline)"),
        (f"{n}: Run -> worker running, fresh workspace, p50 / p99 ms", ms(big["fresh_ms"]),
         f"bare add {ms(add)}", f"{big['fresh_ms']['median'] / add['median']:.0%}", ""),
        (f"{n}: Run -> worker running, pooled, p50 / p99 ms", ms(big["pooled_ms"]),
         f"bare add {ms(add)}", f"{big['pooled_share_of_bare_add']:.0%}", "<= 10%"),
        (f"{n}: runs/s with the pool, C={big['clients']}", f"{big['pooled_runs_per_s']:.1f}",
         f"bare add+remove, one at a time {big['bare_pairs_per_s']:.2f}/s",
         f"{big['pooled_runs_per_s'] / big['bare_pairs_per_s']:.0f}x", ""),
    ]  # fmt: skip


def main() -> None:
    run_main(__doc__.splitlines()[0], measure, "bench-bigrepo-")


if __name__ == "__main__":
    main()
