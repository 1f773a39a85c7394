"""The long-lived ``git cat-file`` behind revision lookups, on real repositories.

What matters: an answer is never stale (commits, new branches and packed refs made
after the process started are seen), one process serves a repository, a dead process
costs no answer, and the processes die with the reader.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from lattice_workers.actors._revisions import RevisionReader
from lattice_workers.errors import Code, LatticeError
from tests.actors.conftest import commit_file, git


def batch_pid(reader: RevisionReader, top: Path) -> int | None:
    batch = reader._batches.get(top)
    return batch.process.pid if batch is not None else None


def alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return text.rsplit(")", 1)[1].split()[0] != "Z"


async def test_answers_follow_commits_branches_and_packed_refs(repo: Path) -> None:
    reader = RevisionReader()
    async with trio.open_nursery() as nursery:
        await nursery.start(reader.serve)
        first = git(repo, "rev-parse", "HEAD")
        assert await reader.commits(repo, ["HEAD", "main", "nope"]) == [first, first, None]
        pid = batch_pid(reader, repo)
        assert pid is not None

        second = commit_file(repo, "b.txt", "two")  # a new loose object and a moved ref
        git(repo, "branch", "feature", first)  # a ref that did not exist
        assert await reader.commits(repo, ["HEAD", "feature"]) == [second, first]

        git(repo, "pack-refs", "--all")  # refs move into packed-refs...
        third = commit_file(repo, "c.txt", "three")
        git(repo, "update-ref", "refs/heads/feature", third)
        git(repo, "tag", "-a", "-m", "t", "v1", second)  # ...and a tag must peel to its commit
        assert await reader.commits(repo, ["feature", "main", "v1"]) == [third, third, second]
        assert batch_pid(reader, repo) == pid  # one process answered all of it
        nursery.cancel_scope.cancel()
    assert not alive(pid)


async def test_a_killed_process_costs_no_answer_and_is_replaced(repo: Path) -> None:
    reader = RevisionReader()
    head = git(repo, "rev-parse", "HEAD")
    async with trio.open_nursery() as nursery:
        await nursery.start(reader.serve)
        assert await reader.commits(repo, ["HEAD"]) == [head]
        pid = batch_pid(reader, repo)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert await reader.commits(repo, ["HEAD"]) == [head]
        assert await reader.commits(repo, ["main"]) == [head]
        replacement = batch_pid(reader, repo)
        assert replacement is not None and replacement != pid
        nursery.cancel_scope.cancel()


async def test_concurrent_questions_get_their_own_answers(repo: Path) -> None:
    reader = RevisionReader()
    shas = {}
    for i in range(5):
        git(repo, "branch", f"b{i}")
        shas[f"b{i}"] = commit_file(repo, f"f{i}.txt", str(i))
        git(repo, "update-ref", f"refs/heads/b{i}", shas[f"b{i}"])
    answers: dict[str, list[str | None]] = {}

    async def ask(name: str) -> None:
        answers[name] = await reader.commits(repo, [name, "missing-" + name])

    async with trio.open_nursery() as nursery:
        await nursery.start(reader.serve)
        async with trio.open_nursery() as askers:
            for _ in range(4):
                for name in shas:
                    askers.start_soon(ask, name)
        assert len(reader._batches) == 1
        nursery.cancel_scope.cancel()
    assert answers == {name: [sha, None] for name, sha in shas.items()}


async def test_without_serve_each_question_runs_its_own_git(repo: Path) -> None:
    reader = RevisionReader()
    head = git(repo, "rev-parse", "HEAD")
    assert await reader.commits(repo, ["HEAD", "main"]) == [head, head]
    assert reader._batches == {}


async def test_a_folder_that_is_not_a_repository_is_a_clear_error(tmp_path: Path) -> None:
    reader = RevisionReader()
    async with trio.open_nursery() as nursery:
        await nursery.start(reader.serve)
        with pytest.raises(LatticeError) as caught:
            await reader.commits(tmp_path, ["HEAD"])
        assert caught.value.code == Code.NOT_FOUND
        assert str(tmp_path) in caught.value.message
        nursery.cancel_scope.cancel()
