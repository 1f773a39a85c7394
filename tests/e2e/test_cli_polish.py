"""The command line says true things once, in a person's units (issue 17)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Project, alive

RUN_ID = re.compile(r"run_[0-9A-Z]{26}")


def test_version(project: Project) -> None:
    from lattice_workers import __version__

    proc = project.cli("--version")
    assert proc.stdout.strip() == f"lattice-workers {__version__}"


def test_supervisor_start_help_explains_listen(project: Project) -> None:
    text = project.cli("supervisor", "start", "--help").stdout
    options = text[text.index("options:") :]
    listen = options[options.index("--listen ENDPOINT") :].split("\n  -", 1)[0]
    assert "tcp://HOST:PORT" in " ".join(listen.split())


def test_a_command_that_starts_the_supervisor_says_so(project: Project) -> None:
    proc = project.cli("worker", "ps")
    pid = project.supervisor_pid()
    assert pid is not None and alive(pid)
    assert f"lattice-workers: started supervisor pid {pid}" in proc.stderr
    assert "started supervisor" not in project.cli("worker", "ps").stderr


def test_ps_has_a_header_row(project: Project) -> None:
    assert project.cli("worker", "ps", "-a").stdout == "no runs\n"
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1)
    task = project.create_task()
    run = project.json("worker", "run", "Sleeper", task)["data"]
    lines = project.cli("worker", "ps").stdout.splitlines()
    assert lines[0].split()[:4] == ["RUN", "WORKER", "TASK", "STATE"]
    assert lines[1].split()[:3] == [run["run_id"], "Sleeper", task]
    project.cli("worker", "cancel", run["run_id"])


def test_watch_into_a_pipe_prints_a_plain_snapshot_at_each_change(project: Project) -> None:
    project.write_worker("Quick", command="sleep 0.5", worktree=False)
    task = project.create_task()
    project.cli("supervisor", "start")
    watch = subprocess.Popen(
        [sys.executable, "-m", "lattice_workers", "worker", "ps", "--watch"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline() == b"no live runs\n"
        project.cli("worker", "run", "Quick", task, "--wait")
        seen = b""
        while not seen.endswith(b"\nno live runs\n"):  # the run's states, then its end
            seen += watch.stdout.readline()
    finally:
        watch.kill()
        watch.wait()
    assert b"\x1b[" not in seen
    assert b"  running  " in seen and seen.startswith(b"\n")


def test_cancel_says_what_happened_with_the_ids_the_user_typed(project: Project) -> None:
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1)
    project.write_worker("Quick", command="true")
    task = project.create_task()
    live = project.json("worker", "run", "Sleeper", task)["data"]
    cancelled = project.cli("worker", "cancel", "Sleeper", task)
    # Once it has ended: its final state, with the short id the user typed.
    assert cancelled.stdout.startswith("cancelled "), cancelled.stdout
    line = cancelled.stdout.splitlines()[0]
    assert f"  Sleeper  {task}  failed" in line and "cancelled" in line
    assert live["task_id"] not in cancelled.stdout
    again = project.cli("worker", "cancel", live["run_id"])
    assert again.stdout.startswith(f"{live['run_id']} already ended: ")
    assert "failed" in again.stdout
    done = project.json("worker", "run", "Quick", task, "--wait")["data"][0]
    finished = project.cli("worker", "cancel", done["run_id"])
    assert finished.stdout.startswith(f"{done['run_id']} already ended: ")
    assert "completed" in finished.stdout
    as_json = project.json("worker", "cancel", done["run_id"])["data"]
    assert as_json["state"] == "completed" and as_json["already_ended"] is True
    none_live = project.cli("worker", "cancel", "Sleeper", task.lower(), check=False)
    assert none_live.returncode == 3
    assert f"no live run of worker 'Sleeper' on {task.lower()}" in none_live.stderr


def test_a_duplicate_request_names_the_live_run_once(project: Project) -> None:
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1)
    task = project.create_task()
    live = project.json("worker", "run", "Sleeper", task)["data"]
    refused = project.cli("worker", "run", "Sleeper", task, check=False)
    assert refused.returncode == 5
    assert refused.stderr.count(live["run_id"]) == 1, refused.stderr
    project.cli("worker", "cancel", live["run_id"])


def test_an_unknown_field_is_said_once(project: Project) -> None:
    project.write_worker("Typo", command="true", timeout=5)
    proc = project.cli("worker", "check", check=False)
    line = next(x for x in proc.stdout.splitlines() + proc.stderr.splitlines() if "timeout" in x)
    assert line.count("timeout") == 2, line  # the field, and the close match it suggests
    assert "Object contains unknown field" not in proc.stdout + proc.stderr


def test_stop_removes_the_empty_worktree_folder(project: Project, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {k: v for k, v in project.env.items() if k != "LATTICE_WORKTREE_DIR"}
    env["XDG_CACHE_HOME"] = str(cache)
    project.env = env
    project.write_worker("Quick", command="true")
    task = project.create_task()
    project.json("worker", "run", "Quick", task, "--wait")
    folders = list((cache / "lattice-workers" / "worktrees").iterdir())
    # Only the run's workspace, idle in the pool (and its mark), which stop removes.
    assert len(folders) == 1
    assert all(p.name.lstrip(".").startswith("pool-") for p in folders[0].iterdir())
    project.cli("supervisor", "stop")
    assert list((cache / "lattice-workers" / "worktrees").iterdir()) == []


def test_show_a_run_in_json_keeps_raw_numbers(project: Project) -> None:
    project.write_worker("Quick", command="true")
    task = project.create_task()
    run = project.json("worker", "run", "Quick", task, "--wait")["data"][0]
    raw = project.json("worker", "show", run["run_id"])["data"]
    assert isinstance(raw["duration_seconds"], float)
    assert json.dumps(raw) and os.path.isabs(raw["log_path"])
    assert RUN_ID.fullmatch(raw["run_id"])


def test_watch_on_a_terminal_redraws_in_place(project: Project) -> None:
    import pty

    project.write_worker("Quick", command="true", worktree=False)
    task = project.create_task()
    project.cli("supervisor", "start")
    master, slave = pty.openpty()
    watch = subprocess.Popen(
        [sys.executable, "-m", "lattice_workers", "worker", "ps", "--watch"],
        cwd=project.root,
        env=project.env,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    )
    os.close(slave)
    try:
        seen = os.read(master, 1024)
        while b"no live runs" not in seen:
            seen += os.read(master, 1024)
        project.cli("worker", "run", "Quick", task, "--wait")  # a change: drawn again
        while seen.count(b"no live runs") < 2:
            seen += os.read(master, 1024)
    finally:
        watch.kill()
        watch.wait()
        os.close(master)
    assert seen.count(b"\x1b[2J\x1b[H") >= 2
