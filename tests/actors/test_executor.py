"""The local executor's start: the checks that stand in for exec's behind the cgroup
shell line, and what the worker gets through it (real processes, real cgroups where
this user may make them)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from lattice_workers.actors._cgroup import RunCgroups
from lattice_workers.actors._executor import (
    Launch,
    LocalExecutor,
    _check_program,
    _shell_keeps,
)
from lattice_workers.actors._worktree import Worktrees


def executable(path: Path, text: str | bytes, mode: int = 0o755) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


def test_the_shell_line_is_used_only_for_an_environment_it_passes_on_unchanged() -> None:
    assert _shell_keeps({"PATH": "/bin", "LATTICE_RUN_ID": "r", "_x1": ""})
    assert not _shell_keeps({"PATH": "/bin", "BASH_FUNC_module%%": "() { :; }"})
    assert not _shell_keeps({"A-B": "1"})
    assert not _shell_keeps({"IFS": ":"})


def test_the_program_checks_raise_what_popen_would(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "ok", "#!/bin/sh\necho\n")
    executable(bin_dir / "env-shebang", "#!/usr/bin/env sh\necho\n")
    executable(bin_dir / "spaced", "#! /bin/sh -e\necho\n")
    executable(bin_dir / "crlf", "#!/bin/sh\r\necho\n")
    executable(bin_dir / "no-interpreter", "#!/nonexistent/sh\n")
    executable(bin_dir / "no-format", "echo not a script the kernel runs\n")
    executable(bin_dir / "not-executable", "#!/bin/sh\n", mode=0o644)
    executable(tmp_path / "relative-interpreter", "#!bin/ok\n")
    cwd = str(tmp_path)
    for ok in ("ok", "env-shebang", "spaced"):
        _check_program(ok, "/usr/bin:bin", cwd)  # a relative PATH entry is the worker's
    _check_program("./relative-interpreter", "/usr/bin", cwd)
    _check_program("sh", None, cwd)
    for missing in ("crlf", "no-interpreter", "absent"):
        with pytest.raises(FileNotFoundError):
            _check_program(missing, "bin", cwd)
    with pytest.raises(OSError) as raised:
        _check_program("no-format", "bin", cwd)
    assert raised.value.errno == errno.ENOEXEC
    with pytest.raises(PermissionError):
        _check_program("not-executable", "bin", cwd)
    with pytest.raises(ValueError, match="null byte"):
        _check_program("a\0b", "bin", cwd)


def cgroups_or_skip() -> RunCgroups:
    cgroups = RunCgroups.create()
    if cgroups is None:
        pytest.skip("no cgroup v2 this user may write")
    return cgroups


async def start_and_wait(
    executor: LocalExecutor, tmp_path: Path, argv: list[str], env: dict[str, str]
) -> tuple[int, bytes, int]:
    """Start ``argv`` in the project, wait for it; its pid, its output and its status."""
    log = tmp_path / "log"
    fd = os.open(log, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        launch = Launch(
            argv=argv, env=env, workspace=None, log_fd=fd, log_limit=1 << 20,
            run_id="run_x", attempt=1,
        )
        execution = await trio.to_thread.run_sync(executor.start, launch)
    finally:
        os.close(fd)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(execution.run_output)
        status = await execution.wait()
    await execution.close(stopped=False)
    assert execution.pid is not None
    return execution.pid, log.read_bytes(), status


async def test_through_the_shell_line_the_worker_is_in_its_cgroup_with_its_environment(
    tmp_path: Path,
) -> None:
    cgroups = cgroups_or_skip()
    try:
        executor = LocalExecutor(tmp_path, Worktrees(tmp_path / "wt"), cgroups=cgroups)
        script = executable(
            tmp_path / "show",
            '#!/bin/sh\ncat /proc/self/cgroup | grep "^0::"\nenv\n',
        )
        env = {"PATH": os.environ["PATH"], "CLIENT_VALUE": "a b  c", "PWD": "/elsewhere"}
        _, out, status = await start_and_wait(executor, tmp_path, [str(script)], env)
        assert status == 0
        lines = out.decode().splitlines()
        assert lines[0].startswith("0::") and "lattice-" in lines[0], lines[0]
        assert "CLIENT_VALUE=a b  c" in lines
        assert f"PWD={tmp_path}" in lines  # the folder it runs in, not the client's
    finally:
        cgroups.close()


async def test_an_environment_the_shell_would_change_reaches_the_worker_unchanged(
    tmp_path: Path,
) -> None:
    cgroups = cgroups_or_skip()
    try:
        executor = LocalExecutor(tmp_path, Worktrees(tmp_path / "wt"), cgroups=cgroups)
        env = {"PATH": os.environ["PATH"], "BASH_FUNC_hi%%": "() {  echo hi\n}"}
        pid_out = executable(tmp_path / "show", "#!/usr/bin/env python3\n"
                             "import os; print(os.environ.get('BASH_FUNC_hi%%'))\n")
        _, out, status = await start_and_wait(executor, tmp_path, [str(pid_out)], env)
        assert status == 0
        assert out.decode().strip() == "() {  echo hi\n}".strip()
    finally:
        cgroups.close()


async def test_a_start_that_fails_gives_its_cgroup_back(tmp_path: Path) -> None:
    cgroups = cgroups_or_skip()
    try:
        executor = LocalExecutor(tmp_path, Worktrees(tmp_path / "wt"), cgroups=cgroups)
        fd = os.open(tmp_path / "log", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            launch = Launch(
                argv=["/bin/echo", "a\0b"], env={"PATH": "/bin"}, workspace=None,
                log_fd=fd, log_limit=1 << 20, run_id="run_y", attempt=1,
            )
            with pytest.raises(ValueError):
                executor.start(launch)
        finally:
            os.close(fd)
        assert not cgroups.populated("run_y", 1)
        assert ("run_y", 1) not in cgroups._live
    finally:
        cgroups.close()

