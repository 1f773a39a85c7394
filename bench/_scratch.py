"""Scratch projects for the benchmarks: a git repository, a board, worker definitions
and a real supervisor process, plus the statistics and machine facts every table needs.

A board of thousands of tasks is written in bulk (:func:`populate`): the events and
snapshots are built by the store's own functions (``NewEvent.build``, ``apply_event``,
``dumps_event``) and written without an fsync per file, so that setting up 10,000
tasks takes seconds, not minutes. The result is a valid board (the bench test checks
it with ``Board.doctor``); only its durability during set-up is skipped, which no
measurement depends on.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
#: The scratch repository: a small source tree, the size of a small Python project.
REPO_FOLDERS = 10
REPO_FILES_PER_FOLDER = 15
REPO_FILE_BYTES = 4096
#: Worker names of the sleeping workers (several per task make many keys on few tasks).
SLEEPERS = [f"Sleep{i:02d}" for i in range(20)]
PROJECT_CODE = "B"


# ----------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    """Median, p99, min, max and n of ``values`` (latencies or repetitions)."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered) if ordered else float("nan"),
        "p99": percentile(ordered, 99),
        "min": ordered[0] if ordered else float("nan"),
        "max": ordered[-1] if ordered else float("nan"),
    }


# ----------------------------------------------------------------------------- machine


def filesystem_of(path: Path) -> dict[str, Any]:
    """The mount holding ``path``: device, type, and for ext4 whether it has a journal."""
    real = os.path.realpath(path)
    best: tuple[str, str, str] = ("", "?", "/")
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            device, mount, fstype = line.split()[:3]
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[2]):
                best = (device, fstype, mount)
    device, fstype, mount = best
    info: dict[str, Any] = {"path": real, "device": device, "type": fstype, "mount": mount}
    if fstype == "ext4":
        name = os.path.basename(device)
        try:
            journals = os.listdir("/proc/fs/jbd2")
        except OSError:
            journals = []
        info["journal"] = any(j.startswith(name + "-") for j in journals)
        info["label"] = "ext4" + ("" if info["journal"] else " (no journal)")
    else:
        info["label"] = fstype
    return info


def machine(where: Path) -> dict[str, Any]:
    """The facts a reader needs to judge the numbers."""
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git.removeprefix("git version "),
        "filesystem": filesystem_of(where),
    }


def rss_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of a process and of its reaped children, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / hz, (int(fields[13]) + int(fields[14])) / hz


# ----------------------------------------------------------------------------- the project


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ``LATTICE_*`` (the bench's own shell may have some).

    Byte-code writing is left on, as for a user: with ``PYTHONDONTWRITEBYTECODE`` an
    editable install recompiles every module on every command and supervisor start,
    which the CLI rows would count.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LATTICE_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(GIT_ENV)
    env.update(extra)
    return env


def lattice_command() -> list[str]:
    """How a user runs us: the ``lattice-workers`` script beside this interpreter."""
    script = Path(sys.executable).parent / "lattice-workers"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lattice_workers"]


class Project:
    """A scratch project: repository, board, workers, and its supervisor when started."""

    def __init__(self, root: Path, worktrees: Path) -> None:
        self.root = root
        self.worktrees = worktrees
        self.env = clean_env(LATTICE_WORKTREE_DIR=str(worktrees), LATTICE_ACTOR="human:bench")
        self.task_ids: list[str] = []
        self.pid: int | None = None

    # -- set-up ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        base: Path,
        name: str,
        *,
        tasks: int,
        max_concurrent: int = 600,
        repo: bool = True,
    ) -> Project:
        """A project with ``tasks`` tasks and the bench's workers, supervisor not started."""
        from lattice_workers.store import Board

        root = base / name
        root.mkdir(parents=True)
        project = cls(root, base / f"{name}-worktrees")
        if repo:
            project.git("init", "-q", "-b", "main")
            write_source_tree(root)
            (root / ".gitignore").write_text(".lattice/\n")
            project.git("add", ".")
            project.git("commit", "-q", "-m", "scratch project")
        board = Board.init(root, project_code=PROJECT_CODE)
        config = json.loads((board.dir / "config.json").read_text())
        config["workers"] = {"max_concurrent": max_concurrent, "keep_finished": 100_000}
        (board.dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        project.task_ids = populate(Board(root), tasks)
        project.write_workers()
        return project

    def write_workers(self) -> None:
        folder = self.root / "workers"
        folder.mkdir(exist_ok=True)
        definitions: list[dict[str, Any]] = [
            {"name": "True", "command": "true", "worktree": False},
            {"name": "TrueWt", "command": "true", "worktree": True},
            *(
                {"name": n, "command": "sleep 600", "worktree": False, "kill_grace_seconds": 5}
                for n in SLEEPERS
            ),
        ]
        for definition in definitions:
            body = {"engine": "script", "timeout_minutes": 30, **definition}
            (folder / f"{str(definition['name']).lower()}.json").write_text(json.dumps(body))

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=self.root,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    # -- the supervisor ----------------------------------------------------------

    @property
    def endpoint(self) -> str:
        from lattice_workers.protocol import default_endpoint

        return default_endpoint(self.root)

    def start(self) -> int:
        """Start the real supervisor (``lattice supervisor start``); its pid."""
        proc = subprocess.run(
            [*lattice_command(), "supervisor", "start", "--json"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"supervisor did not start: {proc.stdout} {proc.stderr}")
        self.pid = int(json.loads(proc.stdout)["data"]["pid"])
        return self.pid

    def stop(self) -> None:
        """Stop the supervisor gracefully; if that fails, kill everything of this project.

        Also when :meth:`start` did not finish (a SIGTERM during it, see
        :func:`exit_on_sigterm`): a supervisor it had already launched is stopped too.
        """
        try:
            subprocess.run(
                [*lattice_command(), "supervisor", "stop"],
                cwd=self.root,
                env=self.env,
                capture_output=True,
                timeout=300,
                check=True,
            )
        except (subprocess.SubprocessError, OSError):
            reap(self.root, self.pid)
        finally:
            self.pid = None
            reap(self.root, None)

    def client(self, timeout: float = 60.0) -> Any:
        from lattice_workers.protocol.client import Client

        return Client(self.endpoint, timeout=timeout)

    def events_of(self, task_id: str) -> list[dict[str, Any]]:
        path = self.root / ".lattice" / "events" / f"{task_id}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_source_tree(root: Path) -> None:
    """A deterministic small source tree (what a worktree has to check out)."""
    line = "# scratch source line for the worktree benchmark, nothing to see here\n"
    body = (line * (REPO_FILE_BYTES // len(line) + 1))[:REPO_FILE_BYTES]
    for i in range(REPO_FOLDERS):
        folder = root / "src" / f"pkg{i:02d}"
        folder.mkdir(parents=True)
        for j in range(REPO_FILES_PER_FOLDER):
            (folder / f"module{j:02d}.py").write_text(f"# {i}/{j}\n{body}")


def populate(board: Any, count: int) -> list[str]:
    """Add ``count`` tasks to ``board`` in bulk (see the module docstring); their ids."""
    from lattice_workers.store import (
        NewEvent,
        apply_event,
        dumps_event,
        dumps_pretty,
        new_id,
        utc_now,
    )

    ids_path = board.dir / "ids.json"
    index = json.loads(ids_path.read_text()) if ids_path.exists() else {}
    mapping: dict[str, str] = index.setdefault("map", {})
    seqs: dict[str, int] = index.setdefault("next_seqs", {})
    seq = int(seqs.get(PROJECT_CODE, 1))
    ts = utc_now()
    lifecycle: list[str] = []
    task_ids = []
    for n in range(count):
        task_id = new_id("task")
        short_id = f"{PROJECT_CODE}-{seq + n}"
        data = {
            "title": f"bench task {seq + n}",
            "status": "backlog",
            "type": "task",
            "priority": "medium",
            "short_id": short_id,
        }
        event = NewEvent("task_created", data, "human:bench").build(task_id, ts)
        line = dumps_event(event)
        (board.dir / "events" / f"{task_id}.jsonl").write_text(line, encoding="ascii")
        snapshot = apply_event(None, event)
        (board.dir / "tasks" / f"{task_id}.json").write_text(dumps_pretty(snapshot))
        lifecycle.append(line)
        mapping[short_id] = task_id
        task_ids.append(task_id)
    with open(board.lifecycle_path, "a", encoding="ascii") as f:
        f.write("".join(lifecycle))
    seqs[PROJECT_CODE] = seq + count
    index["schema_version"] = 2
    ids_path.write_text(dumps_pretty(index))
    return task_ids


def reap(root: Path, supervisor_pid: int | None) -> None:
    """Kill the supervisor (if given) and every process whose environment names ``root``."""
    if supervisor_pid is not None:
        try:
            os.kill(supervisor_pid, signal.SIGKILL)
        except OSError:
            pass
    marker = f"LATTICE_ROOT={root}\0".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if marker in env:
            for kill in (os.killpg, os.kill):
                try:
                    kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


def wait_for(predicate: Any, *, deadline_s: float, what: str, interval: float = 0.05) -> None:
    """Check ``predicate`` until it holds; the supervisor offers no event for "all running"."""
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {deadline_s:g}s waiting for {what}")
        time.sleep(interval)


def exit_on_sigterm() -> None:
    """Make SIGTERM (``kill``, ``timeout``) unwind the bench like an exception, so that
    every ``finally`` runs: scratch supervisors stopped, scratch folders removed.
    Python's default for SIGTERM ends the process at once and leaks both."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def run_main(description: str, measure: Any, prefix: str) -> None:
    """A bench module's command line: ``[--quick | --smoke] [--json PATH]``; ``measure(mode,
    scratch)`` runs in a temporary folder and its result is printed (and written) as JSON."""
    import argparse
    import tempfile

    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        out = measure(mode, Path(tmp))
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
