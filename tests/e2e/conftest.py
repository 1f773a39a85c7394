"""A real project for end-to-end tests: a git repository, a board, worker definitions,
the real ``lattice`` command in subprocesses, and a real supervisor process.

Every project checks on teardown that its supervisor is gone, that no process whose
environment names this project (every worker gets ``LATTICE_ROOT``) is alive, that
``git worktree list`` shows only the main worktree, and that no run's workspace is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
    env.update(GIT_ENV)
    env.update(extra)
    return env


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process its parent has not reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def open_files_under(pid: int | str, folder: Path) -> list[str]:
    """The files under ``folder`` that process ``pid`` ("self": this one) holds open."""
    prefix = str(folder)
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            found.append(target)
    return found


def processes_with_root(root: Path) -> list[int]:
    """Pids of live processes whose environment has LATTICE_ROOT=<root>."""
    return processes_with_variable("LATTICE_ROOT", str(root))


def processes_with_variable(name: str, value: str) -> list[int]:
    """Pids of live (not zombie) processes, but this one, whose environment has
    ``name=value``."""
    marker = f"{name}={value}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read() + b"\0"
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in env and state != b"Z":
            found.append(int(entry))
    return found


class Project:
    """A scratch repository with a board; ``cli`` runs the real command in it."""

    def __init__(self, root: Path, worktrees: Path) -> None:
        self.root = root
        self.worktrees = worktrees
        self.env = clean_env(LATTICE_WORKTREE_DIR=str(worktrees), LATTICE_ACTOR="human:test")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.root, env=self.env, check=True, capture_output=True,
            text=True,
        ).stdout.strip()

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "lattice_workers", *args],
            cwd=self.root,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"lattice {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def json(self, *args: str, check: bool = True, timeout: float = 60) -> Any:
        proc = self.cli(*args, "--json", check=check, timeout=timeout)
        return json.loads(proc.stdout)

    def create_task(self, title: str = "A task") -> str:
        data = self.json("create", title)["data"]
        return str(data.get("short_id") or data["id"])

    def configure_workers(self, **workers: Any) -> None:
        """Set the ``workers`` section of ``.lattice/config.json`` (read at start/reload)."""
        path = self.root / ".lattice" / "config.json"
        data = json.loads(path.read_text())
        data["workers"] = workers
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def one_running_one_queued(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Cap 1, then two ``sleep`` runs on two tasks: the first runs, the second waits.

        Returns the two Run replies (the second is ``queued``).
        """
        self.configure_workers(max_concurrent=1)
        self.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1)
        first, second = self.create_task("one"), self.create_task("two")
        running = self.json("worker", "run", "Sleeper", first)["data"]
        queued = self.json("worker", "run", "Sleeper", second)["data"]
        assert queued["state"] == "queued", queued
        return running, queued

    def write_worker(self, name: str, **fields: Any) -> Path:
        definition = {"name": name, "engine": "script", **fields}
        path = self.root / "workers" / f"{name.lower()}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(definition, indent=2))
        return path

    def events(self, task: str) -> list[dict[str, Any]]:
        task_id = self.snapshot(task)["id"]
        lines = (self.root / ".lattice" / "events" / f"{task_id}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def process_events(self, task: str) -> list[dict[str, Any]]:
        return [e for e in self.events(task) if e["type"].startswith("process_")]

    def snapshot(self, task: str) -> dict[str, Any]:
        return dict(self.json("show", task)["data"]["task"])

    def worktree_list(self) -> list[str]:
        return [
            line for line in self.git("worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")
        ]

    def workspaces(self) -> list[Path]:
        """The runs' workspace folders (each a repository of its own, see
        actors/_worktree.py), without the marks beside them."""
        if not self.worktrees.is_dir():
            return []
        return sorted(p for p in self.worktrees.iterdir() if not p.name.startswith("."))

    def supervisor_pid(self) -> int | None:
        lock = self.root / ".lattice" / "run" / "supervisor.lock"
        try:
            text = lock.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def kill_supervisor(self) -> None:
        """SIGKILL the project's supervisor, as a crash or the OOM killer would, and
        return once it is gone (its runs' processes live on, orphaned)."""
        pid = self.supervisor_pid()
        assert pid is not None, "no supervisor to kill"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(pid), f"the supervisor (pid {pid}) outlived SIGKILL"


def make_project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    project = Project(root, tmp_path / "worktrees")
    project.git("init", "-q", "-b", "main")
    (root / "README.md").write_text("# scratch project\n")
    (root / ".gitignore").write_text(".lattice/run/\n.lattice/logs/\n")
    project.git("add", ".")
    project.git("commit", "-q", "-m", "first commit")
    project.cli("init", "--project-code", "T")
    return project


def stop_everything(project: Project) -> None:
    """Stop the supervisor, then assert nothing of this project is left alive."""
    project.cli("supervisor", "stop", check=False, timeout=120)
    pid = project.supervisor_pid()
    leftovers = processes_with_root(project.root)
    for leftover in leftovers:
        try:
            os.killpg(leftover, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(leftover, signal.SIGKILL)
        except OSError:
            pass
    assert not leftovers, f"processes left alive by the test: {leftovers} (supervisor pid {pid})"
    trees = project.worktree_list()
    assert len(trees) == 1, f"worktrees left behind: {trees}"
    if project.worktrees.is_dir():  # run workspaces and the marks beside them
        left = sorted(p.name for p in project.worktrees.iterdir())
        assert left == [], f"workspaces left behind: {left}"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = make_project(tmp_path)
    try:
        yield p
    finally:
        stop_everything(p)
