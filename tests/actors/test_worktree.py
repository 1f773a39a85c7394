"""Workspaces on real git repositories: create, remove, failures that leave nothing, races.

A workspace is a repository of its own borrowing the project's objects (see
:mod:`lattice_workers.actors._worktree`); worktrees made by an earlier version are still
found and removed, which the ``legacy_worktree`` cases check."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from lattice_workers.actors._keep import keep_work
from lattice_workers.actors._worktree import Worktrees, remove_leftovers
from lattice_workers.errors import Code, LatticeError
from tests.actors.conftest import commit_file, git


@pytest.fixture
def worktrees(tmp_path: Path) -> Worktrees:
    return Worktrees(tmp_path / "worktrees")


def registered(repo: Path) -> list[str]:
    listing = git(repo, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in listing.splitlines() if line.startswith("worktree ")]


def legacy_worktree(repo: Path, worktrees: Worktrees, name: str, owner: Path | None = None) -> Path:
    """A ``git worktree`` as an earlier version made them, owner file and all."""
    path = worktrees.base_dir / name
    worktrees.base_dir.mkdir(parents=True, exist_ok=True)
    git(repo, "worktree", "add", "-q", "--detach", str(path), "HEAD")
    if owner is not None:
        admin = Path(git(path, "rev-parse", "--absolute-git-dir"))
        (admin / "lattice-board").write_text(f"{os.path.realpath(owner)}\n")
    return path


def assert_only_main(repo: Path, worktrees: Worktrees) -> None:
    assert registered(repo) == [str(repo)]
    admin = repo / ".git" / "worktrees"
    assert not admin.exists() or list(admin.iterdir()) == []
    assert not worktrees.base_dir.exists() or list(worktrees.base_dir.iterdir()) == []


# -- create and remove ----------------------------------------------------------------------


async def test_create_checks_out_a_detached_worktree_at_the_commit(
    repo: Path, worktrees: Worktrees
) -> None:
    first = git(repo, "rev-parse", "HEAD~1")
    path = await worktrees.create(repo, "run_1", first)
    assert path == worktrees.base_dir / "run_1"
    assert (path / "a.txt").read_text() == "one"
    assert not (path / "src").exists()  # that file came in the later commit
    assert git(path, "rev-parse", "HEAD") == first
    assert git(path, "status", "--porcelain") == ""  # index matches the files
    with pytest.raises(subprocess.CalledProcessError):
        git(path, "symbolic-ref", "-q", "HEAD")  # detached: HEAD is no branch
    # A repository of its own: not registered as a worktree, no refs, the objects
    # borrowed from the project's store, none copied.
    assert registered(repo) == [str(repo)]
    assert git(path, "rev-parse", "--absolute-git-dir") == str(path / ".git")
    # Its refs are copies of the project's: the same names, the same commits.
    assert git(path, "for-each-ref") == git(repo, "for-each-ref")
    alternates = (path / ".git" / "objects" / "info" / "alternates").read_text()
    assert alternates == f"{repo / '.git' / 'objects'}\n"
    assert [p for p in (path / ".git" / "objects").iterdir() if p.name != "info"] == []
    await worktrees.remove(repo, path)
    assert_only_main(repo, worktrees)


async def test_remove_deletes_files_changed_by_the_worker(repo: Path, worktrees: Worktrees) -> None:
    path = await worktrees.create(repo, "run_1", git(repo, "rev-parse", "HEAD"))
    (path / "a.txt").write_text("edited")
    (path / "new").mkdir()
    (path / "new" / "file").write_text("untracked")
    (path / "new").chmod(0o500)  # a read-only folder, as some tools leave behind
    await worktrees.remove(repo, path)
    assert not path.exists()
    assert_only_main(repo, worktrees)
    assert (repo / "a.txt").read_text() == "one"


async def test_remove_twice_is_fine(repo: Path, worktrees: Worktrees) -> None:
    path = await worktrees.create(repo, "run_1", "HEAD")
    await worktrees.remove(repo, path)
    await worktrees.remove(repo, path)
    assert_only_main(repo, worktrees)


async def test_remove_of_a_folder_git_never_registered(repo: Path, worktrees: Worktrees) -> None:
    half = worktrees.base_dir / "run_half"
    half.mkdir(parents=True)
    (half / "junk").write_text("x")
    await worktrees.remove(repo, half)
    assert not half.exists()
    assert_only_main(repo, worktrees)


async def test_remove_of_a_registration_whose_folder_is_gone(
    repo: Path, worktrees: Worktrees
) -> None:
    path = await worktrees.create(repo, "run_1", "HEAD")
    shutil.rmtree(path)
    await worktrees.remove(repo, path)
    assert_only_main(repo, worktrees)


async def test_remove_of_a_worktree_without_git_file_and_relative_gitdir(
    repo: Path, worktrees: Worktrees
) -> None:
    """A worktree of an earlier version: git >= 2.48 with ``worktree.useRelativePaths``
    records the worktree's place relative to its folder in ``.git/worktrees``; a worker
    that deleted the worktree's ``.git`` file leaves only that to find it by."""
    path = legacy_worktree(repo, worktrees, "run_1")
    (admin,) = (repo / ".git" / "worktrees").iterdir()
    _make_gitdir_relative(admin, path)
    (path / ".git").unlink()
    await worktrees.remove(repo, path)
    assert_only_main(repo, worktrees)


async def test_a_worktree_replaced_by_a_symlink_is_removed_without_following_it(
    repo: Path, worktrees: Worktrees, tmp_path: Path
) -> None:
    """A worker may replace its folder by a link to somewhere precious: only the link goes."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    path = await worktrees.create(repo, "run_1", "HEAD")
    shutil.rmtree(path)
    path.symlink_to(precious)
    await worktrees.remove(repo, path)
    assert (precious / "keep.txt").read_text() == "mine"
    assert_only_main(repo, worktrees)


async def test_a_fifo_in_place_of_git_files_is_removed_without_waiting_on_it(
    repo: Path, worktrees: Worktrees
) -> None:
    """Reading a FIFO waits for a writer, for good: a run's ``.git`` made one (or its
    alternates, read when the mark beside it is gone) must not stall the removal or
    the listing of leftovers."""
    first = await worktrees.create(repo, "one", "HEAD")
    shutil.rmtree(first / ".git")
    os.mkfifo(first / ".git")
    second = await worktrees.create(repo, "two", "HEAD")
    alternates = second / ".git" / "objects" / "info" / "alternates"
    alternates.unlink()
    os.mkfifo(alternates)
    (worktrees.base_dir / ".two.lattice-board").unlink()
    with trio.fail_after(30):
        assert await worktrees.existing(repo) == [first]
        await worktrees.remove(repo, first)
        await worktrees.remove(repo, second)
    assert not first.exists() and not second.exists()


def _make_gitdir_relative(admin: Path, path: Path) -> None:
    (admin / "gitdir").write_text(os.path.relpath(path / ".git", admin) + "\n")


async def test_remove_when_the_repository_is_gone_deletes_the_files(
    repo: Path, worktrees: Worktrees
) -> None:
    path = await worktrees.create(repo, "run_1", "HEAD")
    shutil.rmtree(repo)
    await worktrees.remove(repo, path)
    assert not path.exists()


@pytest.mark.parametrize("target", ["repo", "repo/src", "outside"])
async def test_remove_refuses_anything_but_a_worktree_folder(
    repo: Path, worktrees: Worktrees, target: str
) -> None:
    victim = repo.parent / target
    victim.mkdir(exist_ok=True)
    with pytest.raises(LatticeError) as err:
        await worktrees.remove(repo, victim)
    assert err.value.code == Code.INVALID_ARGUMENT
    assert victim.exists() and (repo / "a.txt").exists()


async def test_other_worktrees_and_the_main_checkout_are_untouched(
    repo: Path, worktrees: Worktrees
) -> None:
    mine = repo.parent / "users-own-worktree"
    git(repo, "worktree", "add", "-q", "--detach", str(mine), "HEAD")
    path = await worktrees.create(repo, "run_1", "HEAD")
    await worktrees.remove(repo, path)
    await worktrees.prune(repo)
    assert registered(repo) == [str(repo), str(mine)]
    assert git(repo, "status", "--porcelain") == ""


# -- failures leave nothing -----------------------------------------------------------------


async def test_a_bad_commit_fails_with_gits_reason_and_leaves_nothing(
    repo: Path, worktrees: Worktrees
) -> None:
    with pytest.raises(LatticeError) as err:
        await worktrees.create(repo, "run_1", "deadbeef" * 5)
    assert "\n" not in err.value.message
    assert "cannot create a worktree" in err.value.message
    assert "deadbeef" in err.value.message
    assert_only_main(repo, worktrees)


async def test_a_base_dir_that_is_a_file_fails_and_leaves_nothing(
    repo: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    worktrees = Worktrees(blocker)
    with pytest.raises(LatticeError) as err:
        await worktrees.create(repo, "run_1", "HEAD")
    assert str(blocker) in err.value.message
    assert blocker.read_text() == "not a folder"
    assert registered(repo) == [str(repo)]
    assert not (repo / ".git" / "worktrees").exists()


async def test_a_base_dir_inside_the_repository_is_refused(repo: Path) -> None:
    for base in (repo / "wt", repo / ".git" / "wt"):
        with pytest.raises(LatticeError) as err:
            await Worktrees(base).create(repo, "run_1", "HEAD")
        assert err.value.code == Code.INVALID_ARGUMENT
        assert "outside the project" in err.value.message
        assert not base.exists()


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "", "-rf", "x" * 200])
async def test_unsafe_worktree_names_are_refused(
    repo: Path, worktrees: Worktrees, name: str
) -> None:
    with pytest.raises(LatticeError) as err:
        await worktrees.create(repo, name, "HEAD")
    assert err.value.code == Code.INVALID_ARGUMENT
    assert_only_main(repo, worktrees)


async def test_an_existing_folder_is_never_taken_over_or_deleted(
    repo: Path, worktrees: Worktrees
) -> None:
    taken = worktrees.base_dir / "run_1"
    taken.mkdir(parents=True)
    (taken / "keep").write_text("someone else's")
    with pytest.raises(LatticeError) as err:
        await worktrees.create(repo, "run_1", "HEAD")
    assert err.value.code == Code.CONFLICT
    assert (taken / "keep").read_text() == "someone else's"


async def test_a_create_cancelled_during_checkout_leaves_nothing(
    repo: Path, worktrees: Worktrees, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A git that stops at the checkout step and says so through a FIFO.
    real_git = shutil.which("git")
    assert real_git is not None
    fifo = tmp_path / "reached"
    os.mkfifo(fifo)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$3" = read-tree ]; then echo x > {fifo}; exec sleep 60; fi\n'
        f'exec {real_git} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def wait_for_checkout() -> None:
        with open(fifo) as reader:
            reader.read()

    async with trio.open_nursery() as nursery:
        failure: list[BaseException] = []

        async def create() -> None:
            try:
                await worktrees.create(repo, "run_1", "HEAD")
            except BaseException as exc:
                failure.append(exc)
                raise

        nursery.start_soon(create)
        await trio.to_thread.run_sync(wait_for_checkout)
        assert (worktrees.base_dir / "run_1" / ".git" / "HEAD").is_file()
        nursery.cancel_scope.cancel()
    assert failure
    cancelled = failure[0]
    if isinstance(cancelled, BaseExceptionGroup):  # trio.run_process's own nursery wraps it
        cancelled = cancelled.exceptions[0]
    assert isinstance(cancelled, trio.Cancelled)
    assert_only_main(repo, worktrees)


# -- revisions ---------------------------------------------------------------------------------


async def test_resolve_commit_defaults_to_head_and_accepts_names(
    repo: Path, worktrees: Worktrees
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert await worktrees.resolve_commit(repo, None) == head
    assert await worktrees.resolve_commit(repo, "") == head
    assert await worktrees.resolve_commit(repo, "main") == head
    assert await worktrees.resolve_commit(repo, "HEAD~1") == git(repo, "rev-parse", "HEAD~1")
    assert await worktrees.resolve_commit(repo, head[:10]) == head
    assert await worktrees.resolve_commit(repo / "src", None) == head


async def test_resolve_commit_refuses_unknown_and_malformed_revisions(
    repo: Path, worktrees: Worktrees
) -> None:
    with pytest.raises(LatticeError) as err:
        await worktrees.resolve_commit(repo, "no-such-branch")
    assert err.value.code == Code.NOT_FOUND
    assert "'no-such-branch' is not a commit" in err.value.message
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    with pytest.raises(LatticeError):
        await worktrees.resolve_commit(repo, tree)
    for bad in ("--all", "a\nb"):
        with pytest.raises(LatticeError) as err:
            await worktrees.resolve_commit(repo, bad)
        assert err.value.code == Code.INVALID_ARGUMENT


async def test_no_repository_and_no_commits_are_clear_errors(
    tmp_path: Path, worktrees: Worktrees
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(LatticeError) as err:
        await worktrees.resolve_commit(plain, None)
    assert err.value.code == Code.NOT_FOUND
    assert "is not inside a git working tree" in err.value.message
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(LatticeError) as err:
        await worktrees.resolve_commit(empty, None)
    assert "has no commits yet" in err.value.message


async def test_repo_toplevel_from_a_subfolder(repo: Path, worktrees: Worktrees) -> None:
    assert await worktrees.repo_toplevel(repo / "src") == repo


async def test_merge_base_of_diverged_and_unrelated_history(
    repo: Path, worktrees: Worktrees
) -> None:
    fork = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    feature = commit_file(repo, "f.txt", "feature")
    git(repo, "checkout", "-q", "main")
    commit_file(repo, "m.txt", "main")
    assert await worktrees.merge_base(repo, "main", feature) == fork
    git(repo, "checkout", "-q", "--orphan", "lonely")
    lonely = commit_file(repo, "l.txt", "alone")
    assert await worktrees.merge_base(repo, "main", lonely) is None
    with pytest.raises(LatticeError):
        await worktrees.merge_base(repo, "no-such-ref", lonely)


# -- where worktrees live ----------------------------------------------------------------


def test_default_base_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATTICE_WORKTREE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    one = Worktrees.default_base_dir(tmp_path / "a" / "proj")
    two = Worktrees.default_base_dir(tmp_path / "b" / "proj")
    assert one.parent == tmp_path / "cache" / "lattice-workers" / "worktrees"
    assert one.name.startswith("proj-") and len(one.name) == len("proj-") + 8
    assert one != two
    assert Worktrees.default_base_dir(tmp_path / "a" / "proj") == one
    monkeypatch.setenv("LATTICE_WORKTREE_DIR", str(tmp_path / "mine"))
    assert Worktrees.default_base_dir(tmp_path / "a" / "proj") == tmp_path / "mine"


async def test_existing_lists_this_repositorys_worktrees_only(
    repo: Path, worktrees: Worktrees, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    commit_file(other, "o.txt", "other")
    assert await worktrees.existing(repo) == []
    mine = await worktrees.create(repo, "run_1", "HEAD")
    theirs = await worktrees.create(other, "run_2", "HEAD")
    (worktrees.base_dir / "stray").mkdir()
    unmarked = await worktrees.create(repo, "run_3", "HEAD")
    (worktrees.base_dir / ".run_3.lattice-board").unlink()  # its objects still say whose
    gone = await worktrees.create(repo, "run_4", "HEAD")
    shutil.rmtree(gone)  # the mark beside it remains
    old = legacy_worktree(repo, worktrees, "run_5")
    unregistered = legacy_worktree(repo, worktrees, "run_6")
    git(repo, "worktree", "remove", "--force", str(unregistered))
    unregistered.mkdir()
    (unregistered / ".git").write_text(f"gitdir: {repo}/.git/worktrees/run_6\n")
    ours = [mine, unmarked, gone, old, unregistered]
    assert await worktrees.existing(repo) == ours
    assert await worktrees.existing(other) == [theirs]
    for path in ours:
        await worktrees.remove(repo, path)
    await worktrees.remove(other, theirs)
    assert await worktrees.existing(repo) == []
    assert registered(repo) == [str(repo)] and registered(other) == [str(other)]


# -- races ---------------------------------------------------------------------------------


async def test_forty_concurrent_create_remove_pairs_never_fail(
    repo: Path, worktrees: Worktrees
) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    failures: list[BaseException] = []
    created: list[Path] = []

    async def pair(i: int) -> None:
        try:
            path = await worktrees.create(repo, f"run_{i}", commit)
            created.append(path)
            assert (path / "src" / "b.txt").read_text() == "two"
            await worktrees.remove(repo, path)
        except Exception as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(pair, i)
    assert failures == []
    assert len(created) == 40
    assert_only_main(repo, worktrees)


# -- leftovers after a crash ----------------------------------------------------------------


async def test_leftover_cleanup_goes_on_past_a_path_it_must_refuse(
    repo: Path, worktrees: Worktrees, tmp_path: Path
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    first = await worktrees.create(repo, "run_a", head)
    second = await worktrees.create(repo, "run_b", head)
    elsewhere = tmp_path / "old-base" / "run_c"  # a base folder of an earlier configuration
    elsewhere.mkdir(parents=True)
    removed = await trio.to_thread.run_sync(
        remove_leftovers, worktrees.base_dir, repo, [elsewhere, first]
    )
    assert removed == [first, second]
    assert not first.exists() and not second.exists()
    assert elsewhere.is_dir()  # refused, not deleted: it is not under our base folder
    assert_only_main(repo, worktrees)


# -- owners: boards of one repository sharing a worktree folder --------------------------


async def test_a_shared_folder_gives_each_board_only_its_own_worktrees(
    repo: Path, tmp_path: Path
) -> None:
    base = tmp_path / "shared"
    first = Worktrees(base, owner=tmp_path / "a" / ".lattice")
    second = Worktrees(base, owner=tmp_path / "b" / ".lattice")
    unnamed = Worktrees(base)  # as a version before the owner names made them
    head = git(repo, "rev-parse", "HEAD")
    mine = await first.create(repo, "run_a", head)
    theirs = await second.create(repo, "run_b", head)
    old = await unnamed.create(repo, "run_old", head)
    assert await first.existing(repo) == [mine, old]
    assert await second.existing(repo) == [theirs, old]
    assert await unnamed.existing(repo) == [mine, theirs, old]
    owner = await trio.Path(tmp_path / "a" / ".lattice").resolve()
    mark = (base / ".run_a.lattice-board").read_text()
    assert mark == f"repo {repo / '.git'}\nowner {owner}\nready\n"
    for path in (mine, theirs, old):
        await unnamed.remove(repo, path)
    assert_only_main(repo, unnamed)


async def test_a_worktree_whose_git_file_a_worker_deleted_keeps_its_owner(
    repo: Path, tmp_path: Path
) -> None:
    base = tmp_path / "shared"
    first = Worktrees(base, owner=tmp_path / "a" / ".lattice")
    second = Worktrees(base, owner=tmp_path / "b" / ".lattice")
    head = git(repo, "rev-parse", "HEAD")
    await first.create(repo, "run_a1", head)  # a name that is a prefix of the next one
    mine = await first.create(repo, "run_a", head)
    shutil.rmtree(mine / ".git")  # what a careless worker may do
    assert await second.existing(repo) == []
    assert mine in await first.existing(repo)
    for path in await first.existing(repo):
        await first.remove(repo, path)
    assert_only_main(repo, first)


async def test_an_owner_name_that_cannot_be_written_leaves_no_worktree(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lattice_workers.actors import _worktree

    # A real write that fails after git's add: the owner file in a folder that is not there.
    monkeypatch.setattr(_worktree, "OWNER_FILE", "no-such-folder/lattice-board")
    worktrees = Worktrees(tmp_path / "shared", owner=tmp_path / ".lattice")
    with pytest.raises(LatticeError) as caught:
        await worktrees.create(repo, "run_1", git(repo, "rev-parse", "HEAD"))
    assert caught.value.code == Code.INTERNAL and caught.value.details == {"stage": "owner"}
    assert "cannot record which board owns the worktree" in caught.value.message
    assert_only_main(repo, worktrees)


async def test_another_boards_recovery_during_the_checkout_leaves_the_worktree_alone(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkout of a large commit takes long: the owner is named before it starts."""
    from lattice_workers.actors import _worktree

    base = tmp_path / "shared"
    first = Worktrees(base, owner=tmp_path / "a" / ".lattice")
    second = Worktrees(base, owner=tmp_path / "b" / ".lattice")
    seen_by_second: list[list[Path]] = []
    real_run_git = _worktree.run_git

    async def run_git(cwd: Path | str, *args: str) -> Any:
        if "read-tree" in args:  # the other board's recovery runs now
            seen_by_second.append(await second.existing(repo))
        return await real_run_git(cwd, *args)

    monkeypatch.setattr(_worktree, "run_git", run_git)
    path = await first.create(repo, "run_a", git(repo, "rev-parse", "HEAD"))
    assert seen_by_second == [[]]
    assert await first.existing(repo) == [path]
    await first.remove(repo, path)
    assert_only_main(repo, first)


# -- a repository of its own -----------------------------------------------------------------


async def test_git_in_a_workspace_never_reaches_the_project(
    repo: Path, worktrees: Worktrees
) -> None:
    """Branches, tags, stash, notes, remotes, config and hooks made in a workspace are
    the workspace's: the project's refs, config bytes, hooks and index stay as they were."""
    git(repo, "branch", "users-other")
    state = _repo_state(repo)
    path = await worktrees.create(repo, "run_1", git(repo, "rev-parse", "HEAD"))
    (path / "a.txt").write_text("edited")
    for args in (
        ("branch", "leak"), ("tag", "leak"), ("stash",), ("branch", "-D", "users-other"),
        ("config", "core.leakcheck", "yes"), ("config", "core.hooksPath", "/tmp/x"),
        ("notes", "add", "-m", "leak"), ("remote", "add", "leak", "/tmp/leak"),
    ):
        git(path, *args)
    assert "leak" in git(path, "branch") and git(path, "stash", "list")
    assert "users-other" not in git(path, "branch") and git(path, "rev-parse", "main")
    assert _repo_state(repo) == state
    await worktrees.remove(repo, path)
    assert _repo_state(repo) == state
    assert_only_main(repo, worktrees)


def _repo_state(repo: Path) -> tuple[str, ...]:
    hooks = repo / ".git" / "hooks"
    return (
        git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        git(repo, "stash", "list"),
        (repo / ".git" / "config").read_text(),
        "\n".join(sorted(p.name for p in hooks.iterdir())) if hooks.exists() else "",
        (repo / ".git" / "index").read_bytes().hex(),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
    )


async def test_a_workspace_has_the_projects_identity_and_excludes(
    repo: Path, worktrees: Worktrees
) -> None:
    git(repo, "config", "user.name", 'Ana "the" Dev\\')
    git(repo, "config", "user.email", "ana@example.com")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("*.scratch\n")
    path = await worktrees.create(repo, "run_1", "HEAD")
    assert git(path, "config", "user.name") == 'Ana "the" Dev\\'
    assert git(path, "config", "user.email") == "ana@example.com"
    (path / "x.scratch").write_text("ignored as in the project")
    assert git(path, "status", "--porcelain") == ""
    await worktrees.remove(repo, path)


async def test_a_workspace_of_a_sha256_repository(tmp_path: Path, worktrees: Worktrees) -> None:
    repo = tmp_path / "r256"
    repo.mkdir()
    git(repo, "init", "-q", "--object-format=sha256", "-b", "main")
    head = commit_file(repo, "a.txt", "one")
    assert len(head) == 64
    path = await worktrees.create(repo, "run_1", head)
    assert git(path, "rev-parse", "HEAD") == head and (path / "a.txt").read_text() == "one"
    await worktrees.remove(repo, path)
    assert_only_main(repo, worktrees)


async def test_leftover_cleanup_removes_workspaces_and_worktrees_of_an_earlier_version(
    repo: Path, tmp_path: Path
) -> None:
    base = tmp_path / "shared"
    mine = Worktrees(base, owner=tmp_path / "a" / ".lattice")
    other = Worktrees(base, owner=tmp_path / "b" / ".lattice")
    made = await mine.create(repo, "run_a", "HEAD")
    theirs = await other.create(repo, "run_b", "HEAD")
    old = legacy_worktree(repo, mine, "run_old", owner=tmp_path / "a" / ".lattice")
    old_theirs = legacy_worktree(repo, mine, "run_old_b", owner=tmp_path / "b" / ".lattice")
    removed = await trio.to_thread.run_sync(
        lambda: remove_leftovers(base, repo, owner=tmp_path / "a" / ".lattice")
    )
    assert removed == [made, old]
    assert theirs.is_dir() and old_theirs.is_dir()
    assert registered(repo) == [str(repo), str(old_theirs)]
    for path in (theirs, old_theirs):
        await other.remove(repo, path)
    assert_only_main(repo, other)


async def test_a_workspace_of_a_partial_clone_fetches_the_files_it_never_had(
    repo: Path, tmp_path: Path, worktrees: Worktrees
) -> None:
    # A blob-less clone has the files of its checkout only; a run at an older commit
    # needs the others, which a `git worktree` would have fetched from the remote.
    commit_file(repo, "old.txt", "only in the past")
    past = git(repo, "rev-parse", "HEAD")
    (repo / "old.txt").unlink()
    git(repo, "commit", "-q", "-am", "old.txt goes")
    git(repo, "config", "uploadpack.allowFilter", "true")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--filter=blob:none", f"file://{repo}", str(clone))
    missing = git(clone, "rev-list", "--objects", "--missing=print", past)
    assert any(line.startswith("?") for line in missing.splitlines())  # truly partial
    path = await worktrees.create(clone, "run_partial", past)
    assert (path / "old.txt").read_text() == "only in the past"
    assert git(path, "status", "--porcelain") == ""
    # The project's own config and refs are untouched; the workspace names the remote.
    assert git(path, "config", "remote.origin.promisor") == "true"
    assert git(clone, "for-each-ref", "refs/lattice") == ""
    # Its work comes back into the partial clone like any other.
    (path / "old.txt").write_text("changed in the run\n")
    changes = keep_work(
        workspace=path, repo=clone, run_id="run_01M8TK00000000000000000000", attempt=1,
        base_sha=past, actor="agent:t", task="T-1",
    ).to_event()
    assert changes["files_changed"] == 1
    assert git(clone, "show", f"{changes['snapshot_sha']}:old.txt") == "changed in the run"
