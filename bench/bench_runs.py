"""Run throughput and request latency of the real supervisor, beside the machine's floor.

Throughput: N trivial runs (a script worker running ``true``) over M tasks, submitted
by C client processes at once, each a closed loop (Run, then Wait for that run, then
the next), so that C runs are in flight. Runs per second count from the first Run
request to the last terminal event (Wait answers after the terminal event is
written and the worktree removed). Rows with and without worktrees.

The floor, measured in the same repetition, at the same concurrency, from Trio:
- ``spawn``: ``bash -c true`` spawned and awaited (what the worker itself costs);
- ``2 bare writes`` (JSON kind ``append``): the two durable events a run writes
  (``process_started`` then ``process_completed``), each as a bare canonical task
  write with raw ``os``/``fcntl`` calls and nothing of ours (:func:`bare_write`);
- ``spawn + 2 bare writes`` (kind ``spawn+append``): both, in the order a run does
  them: the floor of a run without a worktree;
- ``worktree add+remove``: bare ``git worktree add --detach`` and ``git worktree
  remove --force`` of the same repository, with no lock of ours around them: the
  floor of a run with a worktree. Concurrent bare adds and removes race each other
  in git's metadata and some fail: only the pairs that worked count.

The stack's ceiling (kind ``ceiling``, a diagnostic): ``bench/_ceiling.py``, a
server that does per run only what any supervisor on the required stack (Trio,
pyzmq, msgspec) must do: receive and decode Run and Wait, write the two events with
the same bare writes, spawn, reply. Driven by the same client processes in the same
repetition. ``ceiling / floor`` is what the stack itself costs; ``supervisor /
ceiling`` is the share of the stack's best that our code keeps.

Why bare writes: the floor is the machine's, not our store's. Earlier versions
wrote the floor's events through ``Board.append`` (its locks, log replay,
validation and formatting), which hid about 2 ms of our own CPU per write (3 ms
against 1 ms for the syscalls, measured by hand) inside the floor.

Store (a diagnostic, not a goal): ``Board.append`` of a ``process_started`` beside
the same bare write, one at a time on fresh tasks of a scratch board, interleaved
in rounds: wall ms (median) and CPU ms per write of each, and their ratio.

Latency: Run request -> accepted reply, from the same clients: idle at C=1 (nothing
else happens in the supervisor while a request is answered), under load at C=16. An
admitted run's reply comes once its ``process_started`` is on the board.

Duplicate storm: K client processes released together ask for the same (task,
worker); replies and the board must both show exactly one started run.

Usage: ``python bench/bench_runs.py [--quick] [--json PATH]`` (``bench/run.py`` runs
this and everything else).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pool import ClientPool
from _scratch import Project, clean_env, cpu_seconds, populate, run_main, summary


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; ``quick`` and ``smoke`` shrink it."""

    concurrency: tuple[int, ...]
    reps: int
    runs: int  # per repetition, without worktrees
    runs_wt: int  # per repetition, with worktrees
    storm: int  # clients in the duplicate storm
    store: int  # writes of each kind in the store diagnostic
    tasks: int = 32

    @classmethod
    def of(cls, mode: str) -> Sizes:
        return {
            "full": cls((1, 4, 16), reps=5, runs=240, runs_wt=64, storm=50, store=300),
            # quick: CI's "the bench still works", one repetition after the warm-up
            "quick": cls((1, 4, 16), reps=1, runs=24, runs_wt=12, storm=50, store=100),
            # smoke: every row and key with minimal counts (the test suite runs it)
            "smoke": cls((1, 4), reps=1, runs=4, runs_wt=4, storm=8, store=20),
        }[mode]


# ----------------------------------------------------------------------------- bare write


def run_event(task: str, started: str | None) -> dict[str, Any]:
    """The envelope of a run's ``process_started`` (``started`` None) or of its
    ``process_completed``, as the supervisor writes them; a new event id and ``ts``."""
    from lattice_workers.store import new_id

    event_id = new_id("ev")
    data: dict[str, Any] = {
        "process_type": "True",
        "run_id": f"run_{event_id[3:]}",
        "commit_sha": None,
        "log_path": "/dev/null",
    }
    if started is None:
        data.update(attempt=1, timeout_minutes=30, base_ref=None, requested_by="human:bench")
    else:
        data.update(started_event_id=started, result="success", exit_code=0, duration_seconds=0.001)
    return {
        "schema_version": 1,
        "id": event_id,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "type": "process_started" if started is None else "process_completed",
        "task_id": task,
        "actor": "agent:true",
        "data": data,
        "agent_meta": {"model": None, "session": data["run_id"]},
    }


def _write_fsync_close(fd: int, data: bytes) -> None:
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"short write of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def bare_write(lattice_dir: str, task: str, snapshot: bytes, event: dict[str, Any]) -> None:
    """The canonical task write of lattice-format.md with raw syscalls, nothing of ours.

    What any writer of the format must do and no more: ``flock`` the task's two lock
    files in sorted order, append the event line (``O_APPEND``, fsync), replace the
    snapshot (temp file, fsync, ``os.replace``, fsync of ``tasks/``), unlock and close
    in reverse order. No replay, no validation: ``snapshot`` is the task's file as read
    before timing, written back as it is. Lock files are opened ``O_CLOEXEC`` so that
    a concurrent spawn cannot inherit them.
    """
    line = json.dumps(event, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"
    held: list[int] = []
    try:
        for key in sorted((f"events_{task}", f"tasks_{task}")):
            fd = os.open(
                f"{lattice_dir}/locks/{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666
            )
            held.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        append = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        _write_fsync_close(os.open(f"{lattice_dir}/events/{task}.jsonl", append, 0o644), line)
        tasks_dir = f"{lattice_dir}/tasks"
        tmp = f"{tasks_dir}/.tmp.bench.{task}"  # one writer per task: it holds the locks
        create = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        _write_fsync_close(os.open(tmp, create, 0o644), snapshot)
        os.replace(tmp, f"{tasks_dir}/{task}.json")
        fd = os.open(tasks_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        for fd in reversed(held):
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


# ----------------------------------------------------------------------------- floors


async def spawn_true() -> int:
    """``bash -c true`` in a session of its own, from Trio, awaited: a trivial worker."""
    import trio

    proc = await trio.lowlevel.open_process(
        ["bash", "-c", "true"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return await proc.wait()


def _plan(tasks: list[str], clients: int, total: int) -> list[list[str]]:
    """Client ``i``'s tasks: ``tasks[i::clients]`` cycled, ``total // clients`` of them.

    Disjoint subsets, so that no two clients ever ask for the same key at once.
    """
    per = max(1, total // clients)
    plans = []
    for i in range(clients):
        mine = tasks[i::clients]
        plans.append([mine[k % len(mine)] for k in range(per)])
    return plans


async def _floor(
    kind: str,
    clients: int,
    total: int,
    *,
    board: Any,
    tasks: list[str],
    snapshots: dict[str, bytes],
    repo: Path,
    base: Path,
) -> dict[str, Any]:
    import trio

    failures = 0
    lattice_dir = str(board.dir)

    def write(task: str, started: str | None) -> str:
        """One bare write of a run's event; the event id is made here, inside the timing."""
        event = run_event(task, started)
        bare_write(lattice_dir, task, snapshots[task], event)
        return str(event["id"])

    async def git(*args: str) -> bool:
        done = await trio.run_process(
            ["git", "-C", str(repo), *args], check=False, capture_stdout=True, capture_stderr=True
        )
        return done.returncode == 0

    async def one_client(i: int, mine: list[str]) -> None:
        nonlocal failures
        for k, task in enumerate(mine):
            if kind == "spawn":
                await spawn_true()
            elif kind == "append":  # 2 bare writes
                started = await trio.to_thread.run_sync(write, task, None)
                await trio.to_thread.run_sync(write, task, started)
            elif kind == "spawn+append":  # spawn + 2 bare writes
                started = await trio.to_thread.run_sync(write, task, None)
                await spawn_true()
                await trio.to_thread.run_sync(write, task, started)
            elif kind == "worktree":
                path = base / f"floor-{i}-{k}"
                ok = await git("worktree", "add", "--detach", str(path), "HEAD")
                ok = await git("worktree", "remove", "--force", str(path)) and ok
                failures += not ok

    plans = _plan(tasks, clients, total)
    cpu0 = cpu_seconds(os.getpid())
    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for i, mine in enumerate(plans):
            nursery.start_soon(one_client, i, mine)
    elapsed = time.monotonic() - start
    cpu1 = cpu_seconds(os.getpid())
    done = sum(len(p) for p in plans)
    if kind == "worktree":
        await git("worktree", "prune")
        await trio.to_thread.run_sync(lambda: shutil.rmtree(base, ignore_errors=True))
    return {
        # Only pairs that worked count: a failed git call is quick, not a run.
        "runs_per_s": (done - failures) / elapsed,
        "runs": done,
        "seconds": elapsed,
        "failures": failures,
        "cpu_s": [cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]],
    }


def floor(kind: str, clients: int, total: int, **where: Any) -> dict[str, Any]:
    import trio

    return trio.run(lambda: _floor(kind, clients, total, **where))


# ----------------------------------------------------------------------------- supervisor


def supervisor_round(
    pool: ClientPool, pid: int, worker: str, tasks: list[str], total: int
) -> dict[str, Any]:
    """One closed-loop round of ``total`` runs by the pool's clients, against supervisor ``pid``."""
    plans = _plan(tasks, len(pool), total)
    cpu0 = cpu_seconds(pid)
    results = pool.run([{"job": "runs", "pairs": [[worker, t] for t in p]} for p in plans])
    cpu1 = cpu_seconds(pid)
    first = min(r["first"] for r in results)
    last = max(r["last"] for r in results)
    done = sum(len(p) for p in plans)
    states: dict[str, int] = {}
    for r in results:
        for state, n in r["states"].items():
            states[state] = states.get(state, 0) + n
    latencies = [x for r in results for x in r["latencies_ms"]]
    return {
        "runs_per_s": done / (last - first),
        "runs": done,
        "seconds": last - first,
        "latencies_ms": latencies,
        "states": states,
        "cpu_s": [cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]],
    }


class _Row:
    """The repetitions of one concurrency: rates, latencies, CPU, problems."""

    KINDS = (
        "sup",
        "sup_wt",
        "sup_wt_fresh",
        "ceiling",
        "spawn",
        "append",
        "spawn+append",
        "worktree",
    )

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {k: [] for k in self.KINDS}
        self.cpu: dict[str, list[float]] = {k: [0.0, 0.0, 0.0] for k in self.KINDS}
        self.latencies: dict[str, list[float]] = {
            "sup": [],
            "sup_wt": [],
            "sup_wt_fresh": [],
            "ceiling": [],
        }
        self.problems: list[str] = []
        self.git_failures = 0  # bare concurrent git races itself (see actors/_worktree.py)

    def add(self, kind: str, result: dict[str, Any]) -> None:
        self.samples[kind].append(result["runs_per_s"])
        cpu = self.cpu[kind]
        cpu[0] += result["cpu_s"][0]
        cpu[1] += result["cpu_s"][1]
        cpu[2] += result["runs"]
        self.git_failures += result.get("failures", 0)
        if "states" in result:
            self.latencies[kind] += result["latencies_ms"]
            if set(result["states"]) != {"completed"}:
                self.problems.append(f"{kind}: runs not all completed: {result['states']}")

    def cpu_per_run(self) -> dict[str, dict[str, float]]:
        """CPU ms per run of the supervisor (for a floor: this process) and of the children
        it reaped (git, workers), over every repetition."""
        return {
            k: {"self": 1000 * v[0] / v[2], "children": 1000 * v[1] / v[2]}
            for k, v in self.cpu.items()
        }


class CeilingProcess:
    """``bench/_ceiling.py`` serving a board of its own: the stack's best (see its docstring)."""

    def __init__(self, lattice_dir: Path, endpoint: str) -> None:
        self.endpoint = endpoint
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("_ceiling.py")),
                endpoint,
                str(lattice_dir),
            ],
            stdout=subprocess.PIPE,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        try:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the ceiling server did not start (exit {self.proc.wait()})")
            self.pid = int(json.loads(line)["ready"])
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> CeilingProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def set_pool(project: Project, size: int | None) -> None:
    """``workers.worktree_pool`` (None: the default, ``max_concurrent``), applied by a
    ``Reload``: the supervisor, its caches and the clients stay, so that the runs with
    and without the pool differ by the pool alone. 0 removes the idle ones at once."""
    from lattice_workers.protocol import Reload

    path = project.root / ".lattice" / "config.json"
    config = json.loads(path.read_text())
    workers = config.setdefault("workers", {})
    workers.pop("worktree_pool", None)
    if size is not None:
        workers["worktree_pool"] = size
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    with project.client() as client:
        client.request(Reload())


def measure_throughput(project: Project, sizes: Sizes, scratch: Path) -> list[dict[str, Any]]:
    """Every (C, worktree) row: supervisor and floors, interleaved repetition by repetition.

    Runs with a workspace twice per repetition: with the pool off (``sup_wt_fresh``:
    each run's workspace made and removed, as before the pool) and on (``sup_wt``, the
    default), switched by a reload; after switching it on, one round of C runs (not
    counted) fills the pool, as a supervisor that has been running has it."""
    from lattice_workers.store import Board

    (scratch / "floor-board").mkdir()
    floor_board = Board.init(scratch / "floor-board", project_code="F")
    floor_tasks = populate(floor_board, sizes.tasks)
    where = {
        "board": floor_board,
        "tasks": floor_tasks,
        # read once, before any timing: the bare write puts these bytes back
        "snapshots": {t: floor_board.snapshot_path(t).read_bytes() for t in floor_tasks},
        "repo": project.root,
        "base": scratch / "floor-worktrees",
    }
    tasks = project.task_ids[: sizes.tasks]
    pid = project.pid
    assert pid is not None
    rows = []
    (scratch / "ceiling-board").mkdir()
    ceiling_board = Board.init(scratch / "ceiling-board", project_code="C")
    ceiling_tasks = populate(ceiling_board, sizes.tasks)
    with CeilingProcess(ceiling_board.dir, f"ipc://{scratch}/ceiling.sock") as ceiling:
        for c in sizes.concurrency:
            acc = _Row()
            with (
                ClientPool(project.endpoint, c) as pool,
                ClientPool(ceiling.endpoint, c) as ceiling_pool,
            ):
                # warm-up: every path once at this concurrency (imports, caches, git's files)
                supervisor_round(pool, pid, "True", tasks, 2 * c)
                set_pool(project, 0)
                supervisor_round(pool, pid, "TrueWt", tasks, c)
                set_pool(project, None)
                supervisor_round(pool, pid, "TrueWt", tasks, c)
                supervisor_round(ceiling_pool, ceiling.pid, "True", ceiling_tasks, 2 * c)
                for kind in ("spawn", "append", "spawn+append", "worktree"):
                    floor(kind, c, c, **where)
                for _ in range(sizes.reps):
                    for kind in ("spawn", "append", "spawn+append"):
                        acc.add(kind, floor(kind, c, sizes.runs, **where))
                    acc.add("sup", supervisor_round(pool, pid, "True", tasks, sizes.runs))
                    acc.add(
                        "ceiling",
                        supervisor_round(
                            ceiling_pool, ceiling.pid, "True", ceiling_tasks, sizes.runs
                        ),
                    )
                    acc.add("worktree", floor("worktree", c, sizes.runs_wt, **where))
                    set_pool(project, 0)
                    acc.add(
                        "sup_wt_fresh", supervisor_round(pool, pid, "TrueWt", tasks, sizes.runs_wt)
                    )
                    set_pool(project, None)
                    supervisor_round(pool, pid, "TrueWt", tasks, c)  # fills the pool
                    acc.add("sup_wt", supervisor_round(pool, pid, "TrueWt", tasks, sizes.runs_wt))
            stats = {k: summary(v) for k, v in acc.samples.items()}
            rows.append(
                {
                    "clients": c,
                    "runs": sizes.runs,
                    "runs_worktree": sizes.runs_wt,
                    "reps": sizes.reps,
                    "runs_per_s": stats,
                    "share_of_floor": stats["sup"]["median"] / stats["spawn+append"]["median"],
                    "share_of_floor_worktree": stats["sup_wt"]["median"]
                    / stats["worktree"]["median"],
                    "share_of_floor_worktree_fresh": stats["sup_wt_fresh"]["median"]
                    / stats["worktree"]["median"],
                    "pool_speedup": stats["sup_wt"]["median"] / stats["sup_wt_fresh"]["median"],
                    "ceiling_share_of_floor": stats["ceiling"]["median"]
                    / stats["spawn+append"]["median"],
                    "share_of_ceiling": stats["sup"]["median"] / stats["ceiling"]["median"],
                    "run_latency_ms": summary(acc.latencies["sup"]),
                    "run_latency_ms_worktree": summary(acc.latencies["sup_wt"]),
                    "run_latency_ms_worktree_fresh": summary(acc.latencies["sup_wt_fresh"]),
                    "run_latency_ms_ceiling": summary(acc.latencies["ceiling"]),
                    "cpu_ms_per_run": acc.cpu_per_run(),
                    "problems": acc.problems,
                    "floor_worktree_git_failures": acc.git_failures,
                }
            )
    return rows


def measure_store(sizes: Sizes, scratch: Path) -> dict[str, Any]:
    """Diagnostic, not a goal: our ``Board.append`` beside the bare write it must do.

    One ``process_started`` per fresh task (so no log replay grows with the
    measurement), one write at a time in this thread, the two kinds interleaved in
    rounds of 10 whose order alternates, after a warm-up of 5 of each. Wall time per
    write and CPU time of this process (``time.process_time``) per write.
    """
    from lattice_workers.store import Board

    root = scratch / "store-board"
    root.mkdir()
    board = Board.init(root, project_code="S")
    lattice_dir = str(board.dir)
    n, per_round, warm = sizes.store, 10, 5
    rounds = max(1, n // per_round)
    fresh = iter(populate(board, 2 * (warm + rounds * per_round)))

    def board_append(task: str) -> None:
        event = run_event(task, None)
        board.append(
            task,
            event["type"],
            event["data"],
            actor=event["actor"],
            hooks=False,
            event_id=event["id"],
            agent_meta=event["agent_meta"],
        )

    snapshots: dict[str, bytes] = {}

    def bare(task: str) -> None:
        bare_write(lattice_dir, task, snapshots[task], run_event(task, None))

    kinds = {"board_append": board_append, "bare_write": bare}
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, float] = dict.fromkeys(kinds, 0.0)

    def batch(kind: str, count: int, record: bool = True) -> None:
        tasks = [next(fresh) for _ in range(count)]
        if kind == "bare_write":
            snapshots.update({t: board.snapshot_path(t).read_bytes() for t in tasks})
        write = kinds[kind]
        for task in tasks:
            c0, t0 = time.process_time(), time.perf_counter()
            write(task)
            t1, c1 = time.perf_counter(), time.process_time()
            if record:
                walls[kind].append(1000 * (t1 - t0))
                cpu[kind] += c1 - c0

    for kind in kinds:
        batch(kind, warm, record=False)
    for r in range(rounds):
        for kind in kinds if r % 2 == 0 else reversed(kinds):
            batch(kind, per_round)
    out: dict[str, Any] = {"writes": rounds * per_round, "rounds": rounds}
    for kind in kinds:
        out[kind] = {
            "wall_ms": summary(walls[kind]),
            "cpu_ms_per_write": 1000 * cpu[kind] / len(walls[kind]),
        }
    a, b = out["board_append"], out["bare_write"]
    out["ratio_wall"] = a["wall_ms"]["median"] / b["wall_ms"]["median"]
    out["ratio_cpu"] = a["cpu_ms_per_write"] / b["cpu_ms_per_write"]
    return out


def measure_storm(project: Project, clients: int) -> dict[str, Any]:
    """K processes ask for one key at the same moment; count what started."""
    from lattice_workers.protocol import Cancel, RunReply, Wait

    task = project.task_ids[-1]  # a task of its own: the throughput rounds use the others
    with ClientPool(project.endpoint, clients) as pool:
        results = pool.run([{"job": "run", "worker": "Sleep00", "task": task}] * clients)
    created = [r for r in results if r.get("created")]
    codes: dict[str, int] = {}
    for r in results:
        codes[r["code"]] = codes.get(r["code"], 0) + 1
    with project.client() as client:
        for r in created:
            client.request(Cancel(run_id=r["run_id"]))
        for r in created:
            for done in client.stream(Wait(run_ids=[r["run_id"]]), timeout=60):
                assert isinstance(done, RunReply)
    started = [
        e
        for e in project.events_of(task)
        if e["type"] == "process_started" and e["data"]["process_type"] == "Sleep00"
    ]
    spread = max(r["t0"] for r in results) - min(r["t0"] for r in results)
    return {
        "clients": clients,
        "runs_created": len(created),
        "replies": codes,
        "process_started_on_board": len(started),
        "requests_sent_within_ms": spread * 1000,
        "ok": len(created) == 1 and len(started) == 1,
    }


def measure(mode: str, scratch: Path) -> dict[str, Any]:
    sizes = Sizes.of(mode)
    project = Project.create(scratch, "runs", tasks=sizes.tasks + 1)
    t_store = time.monotonic()
    store = measure_store(sizes, scratch)  # before the supervisor starts: a quiet process
    try:
        project.start()
        t0 = time.monotonic()
        throughput = measure_throughput(project, sizes, scratch)
        t1 = time.monotonic()
        storm = measure_storm(project, sizes.storm)
        t2 = time.monotonic()
        left = project.git("worktree", "list", "--porcelain").count("worktree ")
    finally:
        project.stop()
    return {
        "throughput": throughput,
        "storm": storm,
        "store": store,
        "worktrees_left": left - 1,
        "tasks": sizes.tasks,
        "phase_seconds": {"store": t0 - t_store, "throughput": t1 - t0, "storm": t2 - t1},
    }


def main() -> None:
    run_main(__doc__.splitlines()[0], measure, "bench-runs-")


if __name__ == "__main__":
    main()
