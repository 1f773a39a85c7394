"""Child: spawned from a thread, awaited on the loop through a pidfd, reaped once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from lattice_workers.actors._child import Child


def _spawn(tmp_path: Path, script: str) -> tuple[Child, Path]:
    out = tmp_path / "out.log"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        child = Child.spawn(
            ["bash", "-c", script], cwd=str(tmp_path), env={"PATH": os.defpath}, output_fd=fd
        )
    finally:
        os.close(fd)
    return child, out


async def test_wait_returns_the_exit_status_and_reaps(tmp_path: Path) -> None:
    child, out = await trio.to_thread.run_sync(_spawn, tmp_path, "pwd; echo err >&2; exit 3")
    assert child.returncode is None
    assert await child.wait() == 3
    assert child.returncode == 3
    assert out.read_text() == f"{tmp_path}\nerr\n"
    with pytest.raises(ChildProcessError):
        await trio.to_thread.run_sync(os.waitpid, child.pid, os.WNOHANG)  # reaped: no zombie
    assert await child.wait() == 3  # idempotent once reaped


async def test_the_child_leads_its_own_session_and_sees_only_the_given_env(
    tmp_path: Path,
) -> None:
    # The session id is field 6 of /proc/<pid>/stat (the name, field 2, is "(bash)").
    script = 'echo "$$ $(cut -d" " -f6 /proc/$$/stat) ${HOME:-nohome}"; read -t 5 x; echo "[$x]"'
    child, out = await trio.to_thread.run_sync(_spawn, tmp_path, script)
    assert await child.wait() == 0
    pid, sid, home, stdin = out.read_text().split()
    assert int(pid) == child.pid == int(sid)
    assert home == "nohome"
    assert stdin == "[]"  # stdin is /dev/null: read ends at once


async def test_a_cancelled_wait_leaves_the_process_to_a_later_wait(tmp_path: Path) -> None:
    child, _ = await trio.to_thread.run_sync(_spawn, tmp_path, "sleep 30")
    with trio.move_on_after(0.2) as scope:
        await child.wait()
    assert scope.cancelled_caught
    assert child.returncode is None
    os.killpg(child.pid, signal.SIGTERM)
    assert await child.wait() == -signal.SIGTERM


async def test_a_missing_program_raises_oserror_and_leaves_nothing(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "out.log", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(FileNotFoundError):
            Child.spawn(
                [str(tmp_path / "no-such-program")], cwd=str(tmp_path), env={}, output_fd=fd
            )
    finally:
        os.close(fd)


async def test_close_releases_the_pidfd_once(tmp_path: Path) -> None:
    child, _ = await trio.to_thread.run_sync(_spawn, tmp_path, "exit 0")
    fds_before = set(os.listdir("/proc/self/fd"))
    child.close()
    child.close()
    assert len(set(os.listdir("/proc/self/fd")) - fds_before) == 0
    assert len(fds_before - set(os.listdir("/proc/self/fd"))) == 1
    await trio.to_thread.run_sync(os.waitpid, child.pid, 0)  # reap it: wait() needs the pidfd
