"""Commit shas of revision names, answered by one long-lived git process per repository.

Every Run request names a revision (``HEAD`` by default) and a base ref, and a git
process per request costs more than the rest of a trivial run's acceptance (a fork
of the supervisor, git's start-up, a thread hop). ``git cat-file --batch-check``
answers one line per name on stdin for as long as it lives, and it reads the refs
from disk for every name (loose refs each time, ``packed-refs`` whenever its stat
changes) and looks objects up again when they are missing, so a commit made or a
branch moved after it started is seen at the next question.

The processes live in :meth:`RevisionReader.serve`'s nursery and die with it. A
question that fails half way (the process died, the repository moved, a cancel
arrived between the question and its answer) kills that process, so that a later
answer can never be read as the answer to another question; the next question
starts a new one.
"""

from __future__ import annotations

import os
import subprocess
from functools import partial
from pathlib import Path

import trio

from lattice_workers.actors._git import git_environment, one_line, run_git
from lattice_workers.errors import Code, LatticeError

#: How long one batch of questions may take before its process is killed.
ANSWER_SECONDS = 10.0
#: ``--batch-check`` output: the object's sha and type, or ``<name> missing``.
_FORMAT = "--batch-check=%(objectname) %(objecttype)"


class _Batch:
    """One ``cat-file`` process and what it has answered but we have not read yet."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lock = trio.Lock()
        self.buffer = bytearray()

    async def ask(self, names: list[str]) -> list[bytes]:
        assert self.process.stdin is not None and self.process.stdout is not None
        await self.process.stdin.send_all("".join(f"{n}\n" for n in names).encode())
        while self.buffer.count(b"\n") < len(names):
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise EOFError("git cat-file exited")
            self.buffer += chunk
        lines = bytes(self.buffer).split(b"\n")
        self.buffer = bytearray(b"\n".join(lines[len(names) :]))
        return lines[: len(names)]


class RevisionReader:
    """Resolves revision names to commit shas; one ``git cat-file`` per repository.

    Call :meth:`serve` in a nursery first (the processes live in it); without it,
    every question runs a git process of its own.
    """

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._batches: dict[Path, _Batch] = {}
        self._starting: dict[Path, trio.Lock] = {}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the git processes until cancelled; cancelling kills them."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                self._batches.clear()

    async def commits(self, top: Path, revs: list[str]) -> list[str | None]:
        """The commit each of ``revs`` names in the repository at ``top`` (None where none)."""
        names = [f"{rev}^{{commit}}" for rev in revs]
        batch = await self._batch(top)
        if batch is None:
            return [_commit_of(line) for line in await _ask_once(top, names)]
        async with batch.lock:
            if self._batches.get(top) is not batch:  # dropped while this one waited
                return [_commit_of(line) for line in await _ask_once(top, names)]
            ok = False
            try:
                with trio.fail_after(ANSWER_SECONDS):
                    lines = await batch.ask(names)
                ok = True
            except (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError,
                    trio.TooSlowError):
                lines = await _ask_once(top, names)  # this question still gets its answer
            finally:
                if not ok:  # a late answer must never be read as the next question's
                    self._drop(top, batch)
        return [_commit_of(line) for line in lines]

    def _drop(self, top: Path, batch: _Batch) -> None:
        batch.process.kill()
        if self._batches.get(top) is batch:
            del self._batches[top]

    async def _batch(self, top: Path) -> _Batch | None:
        """The process for ``top``, started on first use; None when there can be none."""
        batch = self._batches.get(top)
        if batch is not None:
            return batch
        starting = self._starting.setdefault(top, trio.Lock())
        async with starting:  # two first questions at once start one process
            batch = self._batches.get(top)
            nursery = self._nursery
            if batch is not None or nursery is None:
                return batch
            try:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        ["git", "-C", os.fspath(top), "cat-file", _FORMAT],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        check=False,
                        env=git_environment(),
                    )
                )
            except OSError:
                return None  # no git: the one-off path says so clearly
            batch = self._batches[top] = _Batch(process)
            return batch


async def _ask_once(top: Path, names: list[str]) -> list[bytes]:
    """The same questions to a git process of their own."""
    done = await run_git(top, "cat-file", _FORMAT, stdin="".join(f"{n}\n" for n in names).encode())
    lines = done.stdout.split(b"\n")[: len(names)]
    if done.returncode != 0 or len(lines) != len(names):
        raise LatticeError(
            Code.NOT_FOUND, f"git could not read revisions in {top}: {one_line(done.stderr)}"
        )
    return lines


def _commit_of(line: bytes) -> str | None:
    sha, _, kind = line.decode(errors="replace").partition(" ")
    return sha if kind == "commit" else None
