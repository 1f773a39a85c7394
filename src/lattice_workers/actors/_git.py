"""Running git from Trio: one function, a clean environment, errors in one line."""

from __future__ import annotations

import os
import subprocess

import trio

from lattice_workers.errors import Code, LatticeError

#: Variables that point git at another repository, index or object store. The
#: supervisor may itself have been started from a git hook, where they are set; a
#: ``git -C <root>`` must not obey them (git clears the same list for submodules).
_REPOSITORY_VARIABLES = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_CONFIG",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_PARAMETERS",
    "GIT_DIR",
    "GIT_GRAFT_FILE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_OBJECT_DIRECTORY",
    "GIT_PREFIX",
    "GIT_REPLACE_REF_BASE",
    "GIT_SHALLOW_FILE",
    "GIT_WORK_TREE",
)


def git_environment() -> dict[str, str]:
    """The supervisor's environment, minus repository overrides, in the C locale.

    The C locale keeps git's messages in English, which is what we show and match.
    ``LATTICE_*`` markers are dropped too: they name a run's processes (recovery and
    the tests find a run's leftovers by them), and git is the supervisor's helper.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _REPOSITORY_VARIABLES and not k.startswith("LATTICE_")
    }
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0")
    return env


async def run_git(
    cwd: os.PathLike[str] | str, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git -C cwd ARGS`` (fed ``stdin``), capturing both streams; never raises for
    an exit code."""
    try:
        return await trio.run_process(
            ["git", "-C", os.fspath(cwd), *args],
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=git_environment(),
        )
    except FileNotFoundError:
        raise LatticeError(
            Code.INTERNAL, "git was not found on PATH; install git to use worktrees"
        ) from None


def one_line(output: bytes, limit: int = 400) -> str:
    """git's output as one line: lines joined with '; ', cut at ``limit`` characters."""
    text = "; ".join(line.strip() for line in output.decode(errors="replace").splitlines())
    text = text.strip("; ") or "(no output)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_git_blocking(cwd: os.PathLike[str] | str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """:func:`run_git` for code that runs no Trio loop (the settle path of ``doctor
    --fix``, and recovery in a thread): blocking, so never call it on the loop."""
    try:
        return subprocess.run(
            ["git", "-C", os.fspath(cwd), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            env=git_environment(),
        )
    except FileNotFoundError:
        raise LatticeError(
            Code.INTERNAL, "git was not found on PATH; install git to use worktrees"
        ) from None
