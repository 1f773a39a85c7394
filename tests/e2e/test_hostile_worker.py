"""What a hostile or careless worker can do to the supervisor (issue 18), each
reproduction against a real supervisor."""

from __future__ import annotations

import json
import os
import select
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    Project,
    alive,
    make_project,
    processes_with_variable,
    stop_everything,
)


@pytest.fixture
def short_project() -> Iterator[Project]:
    """A project whose socket is inside ``.lattice/run`` (a long temporary path moves
    it to a folder of its own elsewhere, out of the worker's reach)."""
    folder = Path(tempfile.mkdtemp(prefix="lw-", dir="/tmp"))
    project = make_project(folder)
    try:
        yield project
    finally:
        stop_everything(project)
        shutil.rmtree(folder, ignore_errors=True)


def wait_gone(pid: int, timeout: float = 60) -> None:
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"pid {pid} still alive after {timeout}s"
    finally:
        os.close(fd)


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.05)


def test_a_worker_deleting_the_runtime_folder_makes_no_second_supervisor(
    short_project: Project, tmp_path: Path
) -> None:
    """``rm -rf .lattice/run`` took the old lock file with it: the next command started
    a second supervisor, whose recovery killed the first one's live run. Now the lock
    is on ``.lattice/`` itself; the first supervisor notices its socket is gone, lets
    its run end on its own and exits; only then may a new one start."""
    project = short_project
    mark, go = tmp_path / "deleted", tmp_path / "go"
    project.write_worker(
        "Vandal",
        command=f'rm -rf "$LATTICE_ROOT/.lattice/run"; touch {mark}; '
        f"while [ ! -e {go} ]; do sleep 0.05; done; echo finished",
        worktree=False,
    )
    task = project.create_task()
    first = project.json("supervisor", "start")["data"]["pid"]
    run = project.json("worker", "run", "Vandal", task)["data"]
    wait_for(mark)
    refused = project.cli("worker", "ps", "--json", check=False)
    assert refused.returncode == 6, refused.stdout + refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "SUPERVISOR_UNAVAILABLE" and "lost its socket" in error["message"]
    assert alive(first)
    go.touch()
    wait_gone(first)  # it drained: the run ended on its own, then the supervisor went
    ends = [e for e in project.process_events(task) if e["type"] != "process_started"]
    assert [e["type"] for e in ends] == ["process_completed"], ends
    assert ends[0]["data"]["run_id"] == run["run_id"]
    log = (project.root / ".lattice" / "logs" / "supervisor.log").read_text()
    assert "supervisor.sock was removed" in log
    # The next command starts a new supervisor, which finds nothing to recover.
    assert project.json("worker", "ps")["data"] == []
    assert project.supervisor_pid() not in (None, first)
    assert "left by a run that ended" not in (
        project.root / ".lattice" / "logs" / "supervisor.log"
    ).read_text()


def test_worker_logs_does_not_follow_a_symlink_the_worker_put_in_place_of_its_log(
    project: Project, tmp_path: Path
) -> None:
    """A worker replaced its log by a symlink to a file outside the project; ``worker
    logs`` printed that file. The supervisor now opens a run's files with O_NOFOLLOW."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret\n")
    project.write_worker(
        "Linker",
        command=f'echo hello; rm "$LATTICE_LOG"; ln -s {secret} "$LATTICE_LOG"; '
        f'ln -s {secret} "$LATTICE_RESULT_FILE"',
        worktree=False,
    )
    task = project.create_task()
    run = project.json("worker", "run", "Linker", task, "--wait")["data"][0]
    assert run["state"] == "completed"
    shown = project.cli("worker", "logs", run["run_id"], "--json", check=False)
    assert "the secret" not in shown.stdout + shown.stderr
    assert shown.returncode != 0
    assert "symbolic link" in json.loads(shown.stdout)["error"]["message"]
    tail = project.cli("worker", "logs", run["run_id"], "--tail", "5", check=False)
    assert "the secret" not in tail.stdout + tail.stderr and tail.returncode != 0
    # Nor was the result file's target read into the terminal event.
    end = project.process_events(task)[-1]
    assert "the secret" not in json.dumps(end)
    assert "symbolic link" in end["data"]["output_error"]


def test_doctor_fix_sets_a_torn_last_line_aside_and_the_run_keeps_its_exit_0(
    project: Project,
) -> None:
    """A task log whose last line was cut mid-write made ``doctor`` exit 7 forever
    (``--fix`` and ``rebuild`` left the line), and recovery closed the run as
    ``orphaned`` though its worker had exited 0. Now ``--fix`` moves the line into a
    dated file beside the log, recovery writes the end the journal recorded, and
    ``doctor`` passes."""
    project.write_worker("Ok", command="echo ok", worktree=False)
    task = project.create_task()
    run = project.json("worker", "run", "Ok", task, "--wait")["data"][0]
    assert run["state"] == "completed"
    project.cli("supervisor", "stop")
    task_id = project.snapshot(task)["id"]
    log = project.root / ".lattice" / "events" / f"{task_id}.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[-1])["type"] == "process_completed"
    torn = lines[-1][: len(lines[-1]) // 2]
    log.write_bytes(b"".join(lines[:-1]) + torn)
    before = project.cli("doctor", "--json", check=False)
    assert before.returncode == 7
    kinds = {p["kind"] for p in json.loads(before.stdout)["error"]["details"]}
    assert "corrupt_line" in kinds
    project.cli("doctor", "--fix", "--json", check=False)
    after = project.cli("doctor", "--json", check=False)
    assert after.returncode == 0, after.stdout
    asides = list(log.parent.glob(f"{log.name}.aside-*"))
    assert len(asides) == 1 and asides[0].read_bytes() == torn + b"\n"
    ends = [e for e in project.process_events(task) if e["type"] != "process_started"]
    assert [e["type"] for e in ends] == ["process_completed"], ends
    assert ends[0]["data"]["run_id"] == run["run_id"] and ends[0]["data"]["exit_code"] == 0
    assert project.snapshot(task)["active_processes"] == []


def test_a_runs_log_is_bounded_and_the_worker_runs_on(project: Project) -> None:
    """``yes | head -c 2G`` wrote 2 GiB into a run's log. With ``workers.log_max_mib``
    the log keeps its beginning and its latest part, says how much was dropped, the
    terminal event says ``log_truncated``, and the worker is not stopped for it."""
    project.configure_workers(log_max_mib=0.0625)  # 64 KiB
    project.write_worker(
        "Chatty", command="echo FIRST; yes | head -c 3000000; echo; echo LAST", worktree=False
    )
    project.write_worker("Quiet", command="echo only", worktree=False, log_max_mib=1)
    task = project.create_task()
    run = project.json("worker", "run", "Chatty", task, "--wait")["data"][0]
    assert run["state"] == "completed"
    log = Path(run["log_path"]).read_bytes()
    assert len(log) <= 64 * 1024
    assert log.startswith(b"FIRST\n") and log.endswith(b"LAST\n")
    assert b"bytes of output dropped here" in log
    end = project.process_events(task)[-1]
    assert end["type"] == "process_completed" and end["data"]["log_truncated"] is True
    quiet = project.json("worker", "run", "Quiet", task, "--wait")["data"][0]
    assert Path(quiet["log_path"]).read_bytes() == b"only\n"
    assert "log_truncated" not in project.process_events(task)[-1]["data"]


def test_nothing_of_a_cancelled_run_outlives_worker_wait_even_a_setsid_storm(
    project: Project, tmp_path: Path
) -> None:
    """Descendants that keep forking new sessions outlived the run's end by seconds: the
    sweep stopped after a scan that killed nothing new, and a pid that exited between
    listing and kill (having forked its successor) did not count. Now the scan repeats
    until it finds none, and a cancelled run's end waits for it. Four chains of
    short-lived ``setsid`` hops, each bounded to 2000 hops so the test stays cheap."""
    mark = tmp_path / "storming"
    hop = 'sleep 0.02; [ "$H" -gt 0 ] && H=$((H-1)) setsid bash -c "$HOP" & sleep 0.05'
    project.write_worker(
        "Storm",
        command=f"export H=2000 HOP='{hop}'; "
        'for i in 1 2 3 4; do setsid bash -c "$HOP" & done; '
        f"sleep 0.5; touch {mark}; sleep 300",
        worktree=False,
        kill_grace_seconds=1,
    )
    task = project.create_task()
    run = project.json("worker", "run", "Storm", task)["data"]
    wait_for(mark)
    marks = processes_with_variable("LATTICE_RUN_ID", run["run_id"])
    assert len(marks) > 4, marks  # the chains are hopping
    project.cli("worker", "cancel", run["run_id"])
    ended = project.json("worker", "wait", run["run_id"], check=False)["data"][0]
    assert ended["state"] == "failed" and ended["reason"] == "cancelled"
    assert processes_with_variable("LATTICE_RUN_ID", run["run_id"]) == []


def test_a_daemon_that_left_the_group_and_scrubbed_its_environment_dies_with_its_run(
    project: Project, tmp_path: Path
) -> None:
    """Only a cgroup reaches it: no group, no marks in its environment. Skipped where
    the supervisor cannot make cgroups (then the /proc scan is all there is)."""
    from lattice_workers.actors._cgroup import RunCgroups

    probe = RunCgroups.create()
    if probe is None:
        pytest.skip("no cgroup v2 this user may write: runs rely on the /proc scan here")
    probe.close()
    pid_file = tmp_path / "daemon.pid"
    project.write_worker(
        "Hider",
        # Its first command: the worker is in its cgroup before its first instruction.
        command=f"setsid env -i sleep 300 & echo $! > {pid_file}; sleep 300",
        worktree=False,
        kill_grace_seconds=1,
    )
    task = project.create_task()
    run = project.json("worker", "run", "Hider", task)["data"]
    wait_for(pid_file)
    daemon = int(pid_file.read_text())
    assert alive(daemon)
    project.cli("worker", "cancel", run["run_id"])
    project.json("worker", "wait", run["run_id"], check=False)
    assert not alive(daemon)


def test_a_run_that_simply_exits_leaving_a_hidden_daemon_ends_only_once_it_is_dead(
    project: Project, tmp_path: Path
) -> None:
    """The worker exits 0 at once, leaving a daemon in a session of its own with no
    marks in its environment. Its end used to be written at once, the daemon killed
    about a tenth of a second later by the batched sweep; now an attempt whose cgroup
    still has members waits for the sweep, so ``wait`` returns with the daemon dead."""
    from lattice_workers.actors._cgroup import RunCgroups

    probe = RunCgroups.create()
    if probe is None:
        pytest.skip("no cgroup v2 this user may write: runs rely on the /proc scan here")
    probe.close()
    pid_file = tmp_path / "daemon.pid"
    project.write_worker(
        "Leaver",
        command=f"setsid env -i sleep 300 & echo $! > {pid_file}; sleep 0.3",
        worktree=False,
    )
    task = project.create_task()
    ended = project.json("worker", "run", "Leaver", task, "--wait")["data"][0]
    assert ended["state"] == "completed", ended
    daemon = int(pid_file.read_text())
    assert not alive(daemon)


def test_following_a_log_that_gets_cut_still_shows_its_end(project: Project) -> None:
    """``worker logs --follow`` was past the end of a log that shrank when its middle
    was dropped: it now goes on from the marker line, and sees the last line."""
    project.configure_workers(log_max_mib=0.0625)  # 64 KiB
    project.write_worker(
        "Chatty",
        command="echo FIRST; for i in 1 2 3 4 5 6; do head -c 30000 /dev/zero | tr '\\0' y; "
        "echo; sleep 0.3; done; echo LAST",
        worktree=False,
    )
    task = project.create_task()
    run = project.json("worker", "run", "Chatty", task)["data"]
    followed = project.cli("worker", "logs", run["run_id"], "--follow").stdout
    assert followed.startswith("FIRST\n") and followed.endswith("LAST\n")
    assert "bytes of output dropped here" in followed
