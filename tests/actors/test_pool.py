"""Reused workspaces on real git repositories (see :mod:`lattice_workers.actors._pool`).

The core check, :func:`test_a_reused_workspace_is_a_fresh_one_byte_for_byte`: a run
leaves every kind of leftover git and the file system keep, and the next run's reused
workspace equals a fresh one, file by file and in all of git's state."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from lattice_workers.actors import _pool
from lattice_workers.actors._pool import POOL_PREFIX, WorkspacePool, index_version, kept_under
from lattice_workers.actors._worktree import Worktrees, remove_leftovers, unfinished
from tests.actors.conftest import git


@pytest.fixture
def big_repo(repo: Path) -> Path:
    """The actor tests' repository, with ignore rules, a script and a second commit
    that changes, adds and deletes files (the re-point writes that difference)."""
    (repo / ".gitignore").write_text("*.log\nbuild/\n.venv/\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(repo / "run.sh", 0o755)
    for n in range(30):
        (repo / "src" / f"f{n}.txt").write_text(f"file {n}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "more files")
    (repo / "src" / "f1.txt").write_text("changed\n")
    (repo / "src" / "new.txt").write_text("new\n")
    git(repo, "rm", "-q", "src/f2.txt")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "second")
    git(repo, "tag", "v1")
    return repo


def pool_of(tmp_path: Path, repo: Path, size: int = 4) -> WorkspacePool:
    return WorkspacePool(Worktrees(tmp_path / "worktrees"), repo, size)


def sh(path: Path, script: str) -> None:
    """What a worker does, as a worker does it: a shell in its workspace."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "w",
        "GIT_AUTHOR_EMAIL": "w@example.com",
        "GIT_COMMITTER_NAME": "w",
        "GIT_COMMITTER_EMAIL": "w@example.com",
    }
    done = subprocess.run(["bash", "-ec", script], cwd=path, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr


#: Every kind of leftover of the issue: untracked and ignored files (and folders, a
#: nested repository, a link), tracked files edited, deleted, made executable, a
#: commit, branches, a tag, a stash, the workspace's config (a filter, a hooks path,
#: an identity), a hook, info/ files, reflogs, a packed ref, the index's version.
LEFTOVERS = r"""
echo junk > untracked.txt
mkdir -p deep/er && echo x > deep/er/file.txt
echo log > debug.log
mkdir -p build/out && echo o > build/out/a.o
mkdir -p .venv/bin && echo py > .venv/bin/python
ln -s /etc/hostname link-out
mkdir nested && git -C nested init -q && echo n > nested/n.txt
echo edited >> a.txt
rm src/b.txt
chmod +x src/f3.txt
echo stash-me >> src/f4.txt && git stash -q
git switch -q -c feature
echo committed > committed.txt && git add committed.txt && git commit -q -m work
git tag -a mytag -m tag
git branch other
git pack-refs --all
git config core.hooksPath .myhooks
git config user.name worker
git config filter.evil.clean 'touch /tmp/never'
git config alias.x status
mkdir -p .git/hooks && echo '#!/bin/sh' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit
echo '*.txt' >> .git/info/exclude
echo 'src/' > .git/info/sparse-checkout
git update-index --index-version 4
echo staged > staged.txt && git add -f staged.txt
echo after-commit >> src/f5.txt
chmod 700 src && chmod 600 src/f6.txt && chmod 4755 src/f7.txt
"""


def state(path: Path) -> dict[str, Any]:
    """What a run sees of its workspace: every file outside ``.git`` (bytes, mode,
    link target), every file of ``.git`` but the index (bytes), and the index as git
    reads it (entries with their flags, its version)."""
    files: dict[str, Any] = {}
    for folder, dirs, names in os.walk(path):
        for name in sorted(dirs + names):
            full = Path(folder, name)
            rel = str(full.relative_to(path))
            if rel == ".git/index":
                continue
            info = os.lstat(full)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                files[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(info.st_mode):
                files[rel] = ("dir", mode)
            else:
                files[rel] = ("file", mode, full.read_bytes())
    return {
        "files": files,
        "index": git(path, "ls-files", "-s", "-v"),
        "index_version": index_version(path),
        "status": git(path, "status", "--porcelain", "--ignored", "-uall"),
        "head": git(path, "rev-parse", "HEAD"),
        "refs": git(path, "for-each-ref"),
        "stash": git(path, "stash", "list"),
        "config": git(path, "config", "--local", "--list"),
        "reflog": git(path, "reflog", "--all"),
    }


async def test_a_reused_workspace_is_a_fresh_one_byte_for_byte(
    tmp_path: Path, big_repo: Path
) -> None:
    pool = pool_of(tmp_path, big_repo)
    old = git(big_repo, "rev-parse", "HEAD~1")
    new = git(big_repo, "rev-parse", "HEAD")
    first = await pool.prepare("run_A", old)
    assert first == pool.worktrees.base_dir / "run_A"
    sh(first, LEFTOVERS)
    project_refs = git(big_repo, "for-each-ref")
    await pool.release(first)
    [idle] = pool.idle()
    assert idle.name.startswith(POOL_PREFIX) and not first.exists()

    # The next run takes it: the name is decided before the workspace is prepared.
    location = pool.location_for("run_B")
    assert location == str(idle)
    reused = await pool.prepare("run_B", new)
    assert reused == idle and pool.reused == 1 and pool.discarded == 0
    fresh = await Worktrees(tmp_path / "fresh").create(big_repo, "run_C", new)
    assert state(reused) == state(fresh)
    assert (reused / "src" / "new.txt").read_text() == "new\n"
    assert not (reused / "src" / "f2.txt").exists()
    # Nothing of it reached the project.
    assert git(big_repo, "for-each-ref") == project_refs
    assert git(big_repo, "status", "--porcelain") == ""


async def test_keep_ignored_keeps_ignored_files_for_its_worker_only(
    tmp_path: Path, big_repo: Path
) -> None:
    pool = pool_of(tmp_path, big_repo)
    head = git(big_repo, "rev-parse", "HEAD")
    path = await pool.prepare("run_A", head, "builder")
    sh(path, "mkdir -p .venv/bin build && echo py > .venv/bin/python && echo o > build/a.o"
       " && echo junk > untracked.txt && echo edit >> a.txt")
    await pool.release(path)
    # Another worker, or the shared pool, never gets it.
    assert pool.location_for("run_B") == str(pool.worktrees.base_dir / "run_B")
    again = await pool.prepare("run_C", head, "builder")
    assert again.name.startswith(POOL_PREFIX)
    assert (again / ".venv" / "bin" / "python").read_text() == "py\n"
    assert (again / "build" / "a.o").read_text() == "o\n"
    assert not (again / "untracked.txt").exists()
    assert (again / "a.txt").read_text() == "one"
    assert git(again, "status", "--porcelain", "-uall") == ""


async def test_a_fifo_git_would_wait_on_has_the_workspace_removed_not_hung(
    tmp_path: Path, big_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``git clean`` of a keep-ignored workspace reads each untracked folder's
    ``.gitignore``: one a run made a FIFO would stall the run's end for good."""
    monkeypatch.setattr(_pool, "GIT_SECONDS", 2.0)
    pool = pool_of(tmp_path, big_repo)
    head = git(big_repo, "rev-parse", "HEAD")
    path = await pool.prepare("run_A", head, "builder")
    (path / "sub").mkdir()
    os.mkfifo(path / "sub" / ".gitignore")
    with trio.fail_after(60):
        await pool.release(path)
    assert not path.exists() and pool.idle() == [] and pool.discarded == 1


async def test_two_runs_never_share_a_workspace(tmp_path: Path, big_repo: Path) -> None:
    pool = pool_of(tmp_path, big_repo)
    head = git(big_repo, "rev-parse", "HEAD")
    await pool.release(await pool.prepare("run_A", head))
    [idle] = pool.idle()
    assert pool.location_for("run_B") == str(idle)
    assert pool.location_for("run_C") == str(pool.worktrees.base_dir / "run_C")
    assert pool.location_for("run_B") == str(idle)  # decided for good
    async with trio.open_nursery() as nursery:
        for run in ("run_B", "run_C"):
            nursery.start_soon(pool.prepare, run, head)
    assert sorted(p.name for p in pool.worktrees.base_dir.iterdir() if p.name[0] != ".") == [
        idle.name,
        "run_C",
    ]


async def test_the_pool_is_bounded_least_recently_used_out_first(
    tmp_path: Path, big_repo: Path
) -> None:
    pool = pool_of(tmp_path, big_repo, size=2)
    head = git(big_repo, "rev-parse", "HEAD")
    paths = [await pool.prepare(f"run_{n}", head) for n in range(3)]
    for path in paths:
        await pool.release(path)
    idle = pool.idle()
    assert len(idle) == 2
    on_disk = sorted(p for p in pool.worktrees.base_dir.iterdir() if p.name[0] != ".")
    assert on_disk == sorted(idle)
    # The most recently returned serves first; the oldest went.
    assert pool.location_for("run_x") == str(idle[-1])
    await pool.resize(0)
    assert pool.idle() == []
    await pool.release(await pool.prepare("run_x", head))
    assert [p.name for p in pool.worktrees.base_dir.iterdir()] == []


async def test_a_named_commit_is_pooled_at_its_sha(tmp_path: Path, big_repo: Path) -> None:
    pool = pool_of(tmp_path, big_repo)
    await pool.release(await pool.prepare("run_A", "HEAD"))
    again = await pool.prepare("run_B", "HEAD~1")
    assert pool.reused == 1
    assert git(again, "rev-parse", "HEAD") == git(big_repo, "rev-parse", "HEAD~1")
    assert git(again, "status", "--porcelain") == ""


async def test_size_zero_removes_each_workspace(tmp_path: Path, big_repo: Path) -> None:
    pool = pool_of(tmp_path, big_repo, size=0)
    path = await pool.prepare("run_A", git(big_repo, "rev-parse", "HEAD"))
    await pool.release(path)
    assert list(pool.worktrees.base_dir.iterdir()) == []


@pytest.mark.parametrize(
    "hide",
    [
        "echo x >> a.txt && git update-index --assume-unchanged a.txt",
        "git update-index --skip-worktree a.txt && rm a.txt",
        "rm -rf .git",
        "rm .git/index && ln -s /dev/null .git/index",
    ],
)
async def test_what_cannot_be_cleaned_is_removed_never_reused(
    tmp_path: Path, big_repo: Path, hide: str
) -> None:
    pool = pool_of(tmp_path, big_repo)
    head = git(big_repo, "rev-parse", "HEAD")
    path = await pool.prepare("run_A", head)
    sh(path, hide)
    await pool.release(path)
    assert pool.idle() == [] and pool.discarded == 1
    assert list(pool.worktrees.base_dir.iterdir()) == []


async def test_a_failed_repoint_gives_a_fresh_workspace_in_the_named_folder(
    tmp_path: Path, big_repo: Path
) -> None:
    pool = pool_of(tmp_path, big_repo)
    head = git(big_repo, "rev-parse", "HEAD")
    await pool.release(await pool.prepare("run_A", head))
    [idle] = pool.idle()
    # Its .git's index is no file: re-pointing refuses it.
    (idle / ".git" / "index").unlink()
    (idle / ".git" / "index").mkdir()
    location = pool.location_for("run_B")
    path = await pool.prepare("run_B", git(big_repo, "rev-parse", "HEAD~1"))
    assert str(path) == location and pool.discarded == 1 and pool.reused == 0
    at = git(path, "rev-parse", "HEAD")
    fresh = await Worktrees(tmp_path / "fresh").create(big_repo, "x", at)
    assert state(path) == state(fresh)


async def test_a_cancelled_prepare_leaves_nothing_taken(tmp_path: Path, big_repo: Path) -> None:
    pool = pool_of(tmp_path, big_repo)
    head = git(big_repo, "rev-parse", "HEAD")
    await pool.release(await pool.prepare("run_A", head))
    [idle] = pool.idle()
    with trio.CancelScope() as scope:
        scope.cancel()
        await pool.prepare("run_B", head)
    assert pool.idle() == [] and not idle.exists()  # state unknown: removed
    assert list(pool.worktrees.base_dir.iterdir()) == []
    path = await pool.prepare("run_B", head)  # the run may try again
    assert path.name == "run_B"


async def test_a_release_cancelled_while_cleaning_removes_the_workspace(
    tmp_path: Path, big_repo: Path
) -> None:
    pool = pool_of(tmp_path, big_repo)
    path = await pool.prepare("run_A", git(big_repo, "rev-parse", "HEAD"))
    with trio.CancelScope() as scope:
        scope.cancel()
        await pool.release(path)
    assert pool.idle() == [] and list(pool.worktrees.base_dir.iterdir()) == []


async def test_close_removes_the_idle_and_then_each_released_one(
    tmp_path: Path, big_repo: Path
) -> None:
    pool = pool_of(tmp_path, big_repo)
    head = git(big_repo, "rev-parse", "HEAD")
    live = await pool.prepare("run_A", head)
    await pool.release(await pool.prepare("run_B", head))
    await pool.close()
    assert [p.name for p in pool.worktrees.base_dir.iterdir() if p.name[0] != "."] == ["run_A"]
    await pool.release(live)
    assert list(pool.worktrees.base_dir.iterdir()) == []
    assert pool.location_for("run_C").endswith("run_C")


# -- kept across a stop (workers.keep_pool_on_stop) ------------------------------------------


def board_pool(tmp_path: Path, repo: Path, size: int = 4) -> WorkspacePool:
    """A pool whose workspaces are marked as one board's, as a supervisor's are."""
    owner = tmp_path / "board" / ".lattice"
    owner.mkdir(parents=True, exist_ok=True)
    return WorkspacePool(Worktrees(tmp_path / "worktrees", owner=owner), repo, size)


def on_disk(pool: WorkspacePool) -> list[str]:
    return sorted(p.name for p in pool.worktrees.base_dir.iterdir() if p.name[0] != ".")


async def kept_pool(tmp_path: Path, repo: Path, runs: int = 1) -> tuple[list[Path], WorkspacePool]:
    """``runs`` runs that leave every leftover, their workspaces kept by a stop; what
    recovery would spare, and the next supervisor's pool."""
    pool = board_pool(tmp_path, repo)
    head = git(repo, "rev-parse", "HEAD")
    paths = [await pool.prepare(f"run_{n}", head) for n in range(runs)]
    for path in paths:
        sh(path, LEFTOVERS)
        await pool.release(path)
    await pool.close(keep=True)
    owner = pool.worktrees.owner
    assert owner is not None
    spared = kept_under(pool.worktrees.base_dir, repo, Path(owner))
    assert sorted(spared) == sorted(pool.idle() or spared) and len(spared) == runs
    return spared, board_pool(tmp_path, repo)


async def test_a_kept_pool_is_adopted_and_serves_as_a_fresh_workspace(
    tmp_path: Path, big_repo: Path
) -> None:
    spared, pool = await kept_pool(tmp_path, big_repo, runs=2)
    await pool.adopt(spared)
    assert pool.adopted == 2 and pool.discarded == 0
    assert sorted(pool.idle()) == sorted(spared)
    new = git(big_repo, "rev-parse", "HEAD~1")
    path = await pool.prepare("run_next", new)
    assert path in spared and pool.reused == 1
    fresh = await Worktrees(tmp_path / "fresh").create(big_repo, "x", new)
    assert state(path) == state(fresh)


async def test_a_taken_workspace_is_not_marked_idle(tmp_path: Path, big_repo: Path) -> None:
    """What a kill -9 leaves of a workspace a run took is never spared: its work is the
    run's (recovery keeps it), and it is removed."""
    pool = board_pool(tmp_path, big_repo)
    head = git(big_repo, "rev-parse", "HEAD")
    await pool.release(await pool.prepare("run_A", head))
    owner = Path(pool.worktrees.owner or "")
    [idle] = kept_under(pool.worktrees.base_dir, big_repo, owner)
    taken = await pool.prepare("run_B", head)
    assert taken == idle
    assert kept_under(pool.worktrees.base_dir, big_repo, owner) == []
    # And one named by an open run is not spared either, whatever its mark says.
    await pool.release(taken)
    assert kept_under(pool.worktrees.base_dir, big_repo, owner, in_use=[str(taken)]) == []


#: What may happen to a kept workspace while no supervisor runs, each a failed check.
TAMPERED = {
    "a tracked file edited": "echo x >> a.txt",
    "a tracked file deleted": "rm src/b.txt",
    "an untracked file": "echo x > new.txt",
    "an ignored file": "echo x > debug.log",
    "a folder's mode": "chmod 700 src",
    "a file's mode": "chmod 600 a.txt",
    "a staged change": "echo x > staged.txt && git add staged.txt",
    "a hidden change": "echo x >> a.txt && git update-index --assume-unchanged a.txt",
    "its HEAD moved": "git -c user.name=u -c user.email=u@x commit -q --allow-empty -m x",
    "its index format": "git update-index --index-version 4",
    "its .git replaced": "rm -rf .git && echo 'gitdir: /elsewhere' > .git",
}


@pytest.mark.parametrize("tamper", TAMPERED.values(), ids=TAMPERED.keys())
async def test_a_kept_workspace_that_fails_a_check_is_removed(
    tmp_path: Path, big_repo: Path, tamper: str
) -> None:
    spared, pool = await kept_pool(tmp_path, big_repo)
    sh(spared[0], tamper)
    await pool.adopt(spared)
    assert pool.adopted == 0 and pool.discarded == 1 and pool.idle() == []
    assert on_disk(pool) == []
    assert list(pool.worktrees.base_dir.iterdir()) == []  # its mark too


@pytest.mark.parametrize("mark", ["not idle", "another board", "another repository"])
async def test_a_workspace_whose_mark_does_not_say_it_is_ours_and_idle_is_removed(
    tmp_path: Path, big_repo: Path, mark: str
) -> None:
    spared, pool = await kept_pool(tmp_path, big_repo)
    path = spared[0]
    mark_file = path.parent / f".{path.name}.lattice-board"
    lines = mark_file.read_text().splitlines()
    if mark == "not idle":
        lines = [line for line in lines if not line.startswith("idle ")]
    elif mark == "another board":
        lines = [line for line in lines if not line.startswith("owner ")] + ["owner /else"]
    else:
        lines = [line for line in lines if not line.startswith("repo ")] + ["repo /else/.git"]
    mark_file.write_text("".join(f"{line}\n" for line in lines))
    await pool.adopt(spared)
    assert pool.adopted == 0 and pool.idle() == [] and on_disk(pool) == []


async def test_keep_ignored_workspaces_are_adopted_with_their_ignored_files(
    tmp_path: Path, big_repo: Path
) -> None:
    pool = board_pool(tmp_path, big_repo)
    head = git(big_repo, "rev-parse", "HEAD")
    path = await pool.prepare("run_A", head, "builder")
    sh(path, "mkdir -p .venv/bin && echo py > .venv/bin/python")
    await pool.release(path)
    await pool.close(keep=True)
    spared = kept_under(pool.worktrees.base_dir, big_repo, Path(pool.worktrees.owner or ""))
    again = board_pool(tmp_path, big_repo)
    await again.adopt(spared)
    assert again.adopted == 1
    # Its worker's pool, not the shared one.
    assert again.location_for("run_B").endswith("run_B")
    taken = await again.prepare("run_C", head, "builder")
    assert taken == spared[0] and (taken / ".venv" / "bin" / "python").read_text() == "py\n"


async def test_adoption_keeps_the_most_recent_within_the_bound(
    tmp_path: Path, big_repo: Path
) -> None:
    spared, _ = await kept_pool(tmp_path, big_repo, runs=3)
    pool = board_pool(tmp_path, big_repo, size=1)
    newest = max(spared, key=lambda p: (p.parent / f".{p.name}.lattice-board").stat().st_mtime)
    await pool.adopt(spared)
    assert pool.idle() == [newest] and on_disk(pool) == [newest.name]


async def test_close_without_keep_still_removes_the_idle(tmp_path: Path, big_repo: Path) -> None:
    spared, pool = await kept_pool(tmp_path, big_repo)
    await pool.adopt(spared)
    await pool.close()
    assert list(pool.worktrees.base_dir.iterdir()) == []


def test_remove_leftovers_spares_the_kept_pool_but_not_a_known_workspace(
    tmp_path: Path, big_repo: Path
) -> None:
    async def make() -> tuple[list[Path], Path]:
        spared, pool = await kept_pool(tmp_path, big_repo, runs=2)
        stray = await pool.worktrees.create(big_repo, "run_stray", "HEAD")
        return spared, stray

    spared, stray = trio.run(make)
    base = spared[0].parent
    owner = tmp_path / "board" / ".lattice"
    removed = remove_leftovers(base, big_repo, [spared[1]], owner=owner, spare=spared)
    assert sorted(removed) == sorted([stray, spared[1]])
    assert sorted(p.name for p in base.iterdir() if p.name[0] != ".") == [spared[0].name]


#: Names a pathspec would read as patterns or magic, or git as an option.
ODD_NAMES = ["*.txt", "-dash", "sp ace", ":(glob)x", "[ab]", "q?"]


@pytest.mark.parametrize(
    ("bound", "turn", "how"),
    [(1000, False, "restore"), (0, True, "read-tree"), (1000, True, "read-tree")],
    ids=["few-paths", "past-the-bound", "file-becomes-folder"],
)
async def test_a_repoint_changes_exactly_the_paths_that_differ(
    tmp_path: Path,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    bound: int,
    turn: bool,
    how: str,
) -> None:
    """Odd names, a symlink, an x bit (and a file that becomes a folder and back):
    both ways of re-pointing give a fresh workspace's state."""
    monkeypatch.setattr(_pool, "REPOINT_PATHS", bound)
    commands: list[str] = []
    plain = WorkspacePool._git

    async def spy(self: WorkspacePool, path: Path, *args: str, stdin: bytes | None = None) -> bytes:
        commands.append(next(a for a in args if not a.startswith("-")))
        return await plain(self, path, *args, stdin=stdin)

    monkeypatch.setattr(WorkspacePool, "_git", spy)
    for name in ODD_NAMES:
        (repo / name).write_text(f"{name}\n")
    (repo / "a.txt").write_text("matched by *.txt\n")
    (repo / "turn").write_text("a file\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "odd names")
    old = git(repo, "rev-parse", "HEAD")
    for name in ODD_NAMES[::2]:
        (repo / name).write_text("changed\n")
    for name in ODD_NAMES[1::2]:
        (repo / name).unlink()
    if turn:
        (repo / "turn").unlink()
        (repo / "turn").mkdir()
        (repo / "turn" / "inside").write_text("now a folder\n")
    (repo / "link").symlink_to("a.txt")
    os.chmod(repo / "src" / "b.txt", 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "changes")
    new = git(repo, "rev-parse", "HEAD")
    pool = pool_of(tmp_path, repo)
    for n, (start, goal) in enumerate([(old, new), (new, old)]):
        await pool.release(await pool.prepare(f"run_{n}a", start))
        reused = pool.reused
        commands.clear()
        path = await pool.prepare(f"run_{n}b", goal)
        assert pool.reused == reused + 1 and pool.discarded == 0
        assert how in commands
        fresh = await Worktrees(tmp_path / f"fresh{n}").create(repo, "x", goal)
        assert state(path) == state(fresh)
        await pool.release(path)


async def test_a_repoint_between_two_commits_of_one_tree_changes_no_file(
    tmp_path: Path, repo: Path
) -> None:
    old = git(repo, "rev-parse", "HEAD")
    git(repo, "commit", "-q", "--allow-empty", "-m", "same tree")
    new = git(repo, "rev-parse", "HEAD")
    pool = pool_of(tmp_path, repo)
    await pool.release(await pool.prepare("run_A", old))
    path = await pool.prepare("run_B", new)
    assert pool.reused == 1 and pool.discarded == 0
    assert git(path, "rev-parse", "HEAD") == new
    fresh = await Worktrees(tmp_path / "fresh").create(repo, "x", new)
    assert state(path) == state(fresh)


def test_a_mark_half_rewritten_by_a_crash_is_a_leftover_like_any(
    tmp_path: Path, big_repo: Path
) -> None:
    spared, _ = trio.run(kept_pool, tmp_path, big_repo)
    base = spared[0].parent
    mark = base / f".{spared[0].name}.lattice-board"
    scratch = base / f".{spared[0].name}.new.lattice-board"
    scratch.write_bytes(mark.read_bytes())  # what _write_idle writes before its rename
    owner = tmp_path / "board" / ".lattice"
    remove_leftovers(base, big_repo, owner=owner, spare=spared)
    assert sorted(p.name for p in base.iterdir()) == sorted([spared[0].name, mark.name])


@pytest.mark.parametrize("keep", [False, True])
async def test_a_stop_during_adoption_removes_or_keeps_those_not_checked_yet(
    tmp_path: Path, big_repo: Path, keep: bool
) -> None:
    spared, pool = await kept_pool(tmp_path, big_repo, runs=2)
    with trio.CancelScope() as scope:
        scope.cancel()
        await pool.adopt(spared)
    assert pool.adopted == 0 and pool.idle() == []
    await pool.close(keep=keep)
    assert on_disk(pool) == (sorted(p.name for p in spared) if keep else [])


async def test_a_workspace_being_re_pointed_has_no_work_to_keep_until_it_is_ready(
    tmp_path: Path, big_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash while a run's pooled workspace is re-pointed leaves its ``.git`` or files
    half moved: recovery must see a workspace whose making was cut short (as a fresh
    one's checkout), not a run's work to keep."""
    pool = board_pool(tmp_path, big_repo)
    await pool.release(await pool.prepare("run_A", git(big_repo, "rev-parse", "HEAD~1")))
    [idle] = pool.idle()
    # Idle, its mark says so: a crash before the take rewrites the mark (the next run's
    # process_started already names it) must find nothing of that run's to keep.
    assert unfinished(idle)
    seen: list[bool] = []
    plain = WorkspacePool._move

    async def spy(self: WorkspacePool, path: Path, old: str, new: str) -> None:
        seen.append(unfinished(path))
        await plain(self, path, old, new)

    monkeypatch.setattr(WorkspacePool, "_move", spy)
    path = await pool.prepare("run_B", git(big_repo, "rev-parse", "HEAD"))
    assert path == idle and seen == [True]
    assert not unfinished(path)
