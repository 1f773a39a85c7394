"""Keeping an attempt's work, on real repositories and workspaces (actors/_keep.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from lattice_workers.actors import _keep
from lattice_workers.actors._keep import (
    GIT_GONE,
    _config_defines_no_filter,
    diff,
    keep_work,
    kept,
    kept_refs,
    merge_into_current,
)
from lattice_workers.actors._worktree import Worktrees
from lattice_workers.errors import LatticeError

RUN = "run_01M8TK00000000000000000000"
ENV = {
    "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "T",
    "GIT_COMMITTER_EMAIL": "t@t", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=ENV
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text("def add(a, b):\n    return a - b\n")
    (root / "README.md").write_text("# app\n")
    (root / ".gitignore").write_text("build/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


@pytest.fixture
def workspace(repo: Path, tmp_path: Path) -> Path:
    """A run's workspace as the supervisor makes it (a repository of its own)."""
    return trio.run(Worktrees(tmp_path / "workspaces").create, repo, "wt", "HEAD")


def keep(repo: Path, workspace: Path, **limits: int):  # type: ignore[no-untyped-def]
    return keep_work(
        workspace=workspace, repo=repo, run_id=RUN, attempt=1,
        base_sha=git(repo, "rev-parse", "HEAD"), actor="agent:impl", task="T-1", **limits,
    )


def user_state(repo: Path) -> tuple[str, ...]:
    """Everything of the user's that keeping must not touch."""
    return (
        git(repo, "status", "--porcelain=v1", "--untracked-files=all"),
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"),
        (repo / ".git" / "index").read_bytes().hex(),
    )


def test_nothing_changed_makes_no_ref(repo: Path, workspace: Path) -> None:
    changes = keep(repo, workspace)
    assert changes.to_event() == {"files_changed": 0}
    assert kept_refs(repo, RUN) == {}


def test_commits_edits_and_new_files_are_kept_and_nothing_else_moves(
    repo: Path, workspace: Path
) -> None:
    before = user_state(repo)
    (workspace / "app.py").write_text("def add(a, b):\n    return a + b\n")
    git(workspace, "commit", "-q", "-am", "fix add")
    (workspace / "README.md").write_text("# app\n\nfixed\n")  # uncommitted
    (workspace / "test_app.py").write_text("from app import add\n")  # new
    (workspace / "build").mkdir()
    (workspace / "build" / "out.bin").write_bytes(b"x" * 100)  # ignored
    wt_index = (git(workspace, "rev-parse", "--git-path", "index"))
    index_before = Path(workspace, wt_index).read_bytes() if not Path(wt_index).is_absolute() \
        else Path(wt_index).read_bytes()
    changes = keep(repo, workspace)
    event = changes.to_event()
    assert event["ref"] == f"refs/lattice/runs/{RUN}/1" and event["commits"] == 1
    assert event["files_changed"] == 3 and event["left_out"] == []
    assert event["head_sha"] == git(workspace, "rev-parse", "HEAD")
    assert git(repo, "rev-parse", f"{event['snapshot_sha']}^") == event["head_sha"]
    files = git(repo, "ls-tree", "-r", "--name-only", event["snapshot_sha"]).splitlines()
    assert "test_app.py" in files and "build/out.bin" not in files
    assert "fixed" in git(repo, "show", f"{event['snapshot_sha']}:README.md")
    assert user_state(repo) == before  # the user's tree, index, HEAD, branches
    after = Path(workspace, wt_index).read_bytes() if not Path(wt_index).is_absolute() \
        else Path(wt_index).read_bytes()
    assert after == index_before  # nor the workspace's own index
    patch = diff(repo, RUN).decode()
    assert "+    return a + b" in patch and "+fixed" in patch and "test_app.py" in patch
    assert "3 files changed" in diff(repo, RUN, stat_only=True).decode()


def test_a_worker_that_moved_head_and_deleted_files_is_kept_as_it_ended(
    repo: Path, workspace: Path
) -> None:
    git(workspace, "switch", "-q", "-c", "feature")
    (workspace / "README.md").unlink()
    git(workspace, "commit", "-q", "-am", "drop readme")
    git(workspace, "commit", "-q", "--amend", "-m", "drop the readme")
    (workspace / "app.py").unlink()  # uncommitted deletion
    event = keep(repo, workspace).to_event()
    files = git(repo, "ls-tree", "-r", "--name-only", event["snapshot_sha"]).splitlines()
    assert files == [".gitignore"] and event["deletions"] == 3 and event["commits"] == 1


def test_large_files_are_left_out_and_named(repo: Path, workspace: Path) -> None:
    (workspace / "big.bin").write_bytes(b"b" * 5000)
    (workspace / "mid.bin").write_bytes(b"m" * 3000)
    (workspace / "small.txt").write_text("s\n")
    event = keep(repo, workspace, max_file_bytes=4000, max_total_bytes=2000).to_event()
    assert event["left_out"] == ["big.bin", "mid.bin"]
    files = git(repo, "ls-tree", "-r", "--name-only", event["snapshot_sha"]).splitlines()
    assert "small.txt" in files and "big.bin" not in files and "mid.bin" not in files


def test_a_repository_the_worker_made_inside_its_workspace_is_named_left_out(
    repo: Path, workspace: Path
) -> None:
    """git lists a nested repository as one folder, and keeps none of its files: the
    event must say so rather than drop them without a word."""
    (workspace / "pkg").mkdir()
    git(workspace / "pkg", "init", "-q")
    (workspace / "pkg" / "lib.py").write_text("work\n")
    (workspace / "a.txt").write_text("a\n")
    event = keep(repo, workspace).to_event()
    assert event["left_out"] == ["pkg/"] and event["files_changed"] == 1


def test_a_folder_made_a_link_out_of_the_workspace_is_kept_as_the_link(
    repo: Path, workspace: Path, tmp_path: Path
) -> None:
    """git says the tracked files under a folder the worker replaced by a link are
    deleted; keep must not read them through the link, from outside the workspace."""
    (workspace / "src").mkdir()
    (workspace / "src" / "a.txt").write_text("tracked\n")
    git(workspace, "add", "src")
    git(workspace, "commit", "-q", "-m", "src")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("not the worker's\n")
    shutil.rmtree(workspace / "src")
    (workspace / "src").symlink_to(outside)
    event = keep(repo, workspace).to_event()
    listed = git(repo, "ls-tree", "-r", event["snapshot_sha"], "src").split()
    assert listed[0] == "120000" and listed[-1] == "src"
    assert git(repo, "cat-file", "-p", listed[2]) == str(outside)


def test_a_fifo_git_would_wait_on_for_good_ends_the_keep_with_why(
    repo: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``.gitignore`` that is a FIFO: git status opens it and waits for a writer
    that never comes; the attempt's end must not wait with it."""
    monkeypatch.setattr(_keep, "GIT_SECONDS", 2.0)
    (workspace / ".gitignore").unlink()
    os.mkfifo(workspace / ".gitignore")
    (workspace / "a.txt").write_text("a\n")
    with pytest.raises(_keep.KeepError, match="took more than 2 s"):
        keep(repo, workspace)
    os.unlink(workspace / ".gitignore")
    for name in ("config", "HEAD"):  # read by keep itself, before any git
        saved = (workspace / ".git" / name).read_bytes()
        os.unlink(workspace / ".git" / name)
        os.mkfifo(workspace / ".git" / name)
        with pytest.raises(_keep.KeepError, match="took more than 2 s"):
            keep(repo, workspace)
        os.unlink(workspace / ".git" / name)
        (workspace / ".git" / name).write_bytes(saved)


def test_a_filter_or_fsmonitor_the_worker_configured_never_runs(
    repo: Path, workspace: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    git(workspace, "config", "core.fsmonitor", f"touch {marker}; false")
    git(workspace, "config", "filter.evil.clean", f"touch {marker}; cat")
    (workspace / ".gitattributes").write_text("* filter=evil\n")
    (workspace / "app.py").write_text("changed\n")
    event = keep(repo, workspace).to_event()
    assert event["files_changed"] == 2
    assert git(repo, "show", f"{event['snapshot_sha']}:app.py") == "changed"
    assert not marker.exists()


def _define_evil_filter(workspace: Path, tmp_path: Path, route: str, command: str) -> None:
    """Define filter ``evil`` for the workspace by one of the routes git reads config
    through (each a way around a check of the workspace's own config file)."""
    git_dir = workspace / ".git"
    section = f'[filter "evil"]\n\tclean = {command}\n'
    if route == "plain":
        git(workspace, "config", "filter.evil.clean", command)
    elif route == "upper case section":
        with open(git_dir / "config", "a") as config:
            config.write(section.replace("[filter", "[FiLtEr"))
    elif route == "include":
        (tmp_path / "included").write_text(section)
        git(workspace, "config", "include.path", str(tmp_path / "included"))
    elif route == "config.worktree":
        git(workspace, "config", "extensions.worktreeConfig", "true")
        (git_dir / "config.worktree").write_text(section)
    elif route == "commondir":
        other = tmp_path / "other-common"  # a whole repository, so that git reads on
        shutil.copytree(git_dir, other)
        with open(other / "config", "a") as config:
            config.write(section)
        (git_dir / "commondir").write_text(str(other) + "\n")
    elif route == "workspace as its own git directory":
        # .git made no repository (no HEAD): git takes the workspace folder itself for
        # one, and reads the config there, not .git/config.
        shutil.copytree(git_dir, workspace, dirs_exist_ok=True)
        with open(workspace / "config", "a") as config:
            config.write(f"[core]\n\tbare = false\n\tworktree = {workspace}\n{section}")
        (git_dir / "HEAD").unlink()


@pytest.mark.parametrize(
    "route",
    [
        "plain",
        "upper case section",
        "include",
        "config.worktree",
        "commondir",
        "workspace as its own git directory",
    ],
)
def test_a_filter_defined_by_any_config_route_never_runs(
    repo: Path, workspace: Path, tmp_path: Path, route: str
) -> None:
    marker = tmp_path / "ran"
    _define_evil_filter(workspace, tmp_path, route, f"touch {marker}; cat")
    (workspace / ".gitattributes").write_text("* filter=evil\n")
    # The same size with a new mtime: git must read the file through its clean filter
    # to know whether it changed.
    original = (workspace / "app.py").read_bytes()
    (workspace / "app.py").write_bytes(original.replace(b"a - b", b"a + b"))
    assert keep(repo, workspace).to_event()["files_changed"] >= 1
    assert not marker.exists()


def test_the_config_read_is_skipped_only_where_git_reads_that_config(
    workspace: Path, tmp_path: Path
) -> None:
    """The fast path of :func:`no_filters` (no git process) stays a fast path on a
    workspace as the supervisor made it, on a branch too, and only there."""
    git_dir = workspace / ".git"
    assert _config_defines_no_filter(git_dir)
    git(workspace, "switch", "-q", "-c", "feature")
    assert _config_defines_no_filter(git_dir)
    (git_dir / "HEAD").write_text("not a head\n")
    assert not _config_defines_no_filter(git_dir)


@pytest.mark.parametrize(
    "name", ['"quoted"', '"unterminated', "carriage\r", "new\nline", "tab\tin", "\udcff-byte"]
)
def test_a_file_name_git_would_unquote_or_split_is_kept_as_itself(
    repo: Path, workspace: Path, name: str
) -> None:
    """``hash-object --stdin-paths`` unquotes a line that starts with a quote and drops
    a carriage return before the newline: every name must still reach git as itself."""
    (workspace / "quoted").write_text("another file\n")
    (workspace / name).write_text("the worker's file\n")
    event = keep(repo, workspace).to_event()
    shown = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "blob", f"{event['snapshot_sha']}:{name}"],
        capture_output=True, check=True, env=ENV,
    ).stdout
    assert shown == b"the worker's file\n" and event["files_changed"] == 2


def test_a_workspace_git_dir_that_names_the_users_leaves_the_users_index_alone(
    repo: Path, workspace: Path
) -> None:
    """A ``.git`` link to the user's: ``git status`` there would refresh the stat data
    of the user's index with the workspace's files (an optional lock git takes)."""
    git(repo, "status")  # the user's index fresh
    index = (repo / ".git" / "index").read_bytes()
    shutil.rmtree(workspace / ".git")
    (workspace / ".git").symlink_to(repo / ".git")
    (workspace / "new.txt").write_text("new\n")
    keep(repo, workspace)
    assert (repo / ".git" / "index").read_bytes() == index


def test_a_worker_on_an_orphan_branch_still_has_its_files_kept(
    repo: Path, workspace: Path
) -> None:
    base = git(repo, "rev-parse", "HEAD")
    git(workspace, "checkout", "-q", "--orphan", "fresh")
    (workspace / "work.txt").write_text("precious\n")
    (workspace / "README.md").unlink()
    before = user_state(repo)
    event = keep(repo, workspace).to_event()
    assert event["head_sha"] == base and git(repo, "rev-parse", f"{event['snapshot_sha']}^") == base
    files = git(repo, "ls-tree", "-r", "--name-only", event["snapshot_sha"]).splitlines()
    assert files == [".gitignore", "app.py", "work.txt"] and event["files_changed"] == 2
    assert event["commits"] == 0 and "no commit" in event["note"]
    assert user_state(repo) == before


def test_a_deleted_dot_git_still_keeps_the_files_and_says_what_was_lost(
    repo: Path, workspace: Path
) -> None:
    import shutil

    base = git(repo, "rev-parse", "HEAD")
    (workspace / "app.py").write_text("committed, then lost\n")
    git(workspace, "commit", "-q", "-am", "a commit that goes with .git")
    (workspace / "README.md").unlink()
    (workspace / "new.txt").write_text("new\n")
    shutil.rmtree(workspace / ".git")
    before = user_state(repo)
    event = keep(repo, workspace).to_event()
    assert event["note"] == GIT_GONE and event["commits"] == 0
    assert event["head_sha"] == base and git(repo, "rev-parse", f"{event['snapshot_sha']}^") == base
    files = git(repo, "ls-tree", "-r", "--name-only", event["snapshot_sha"]).splitlines()
    assert files == [".gitignore", "app.py", "new.txt"] and event["files_changed"] == 3
    assert git(repo, "show", f"{event['snapshot_sha']}:app.py") == "committed, then lost"
    assert user_state(repo) == before


def test_a_workspace_made_a_link_elsewhere_is_never_followed(
    repo: Path, workspace: Path, tmp_path: Path
) -> None:
    """A worker that replaced its workspace folder by a link to another folder (its
    user's home, say): keep must not rebuild a .git there, nor read it as the work."""
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    (elsewhere / "private.txt").write_text("the user's\n")
    shutil.rmtree(workspace)
    workspace.symlink_to(elsewhere)
    with pytest.raises(_keep.KeepError, match="link"):
        keep(repo, workspace)
    assert sorted(os.listdir(elsewhere)) == ["private.txt"]
    assert kept_refs(repo, RUN) == {}


def test_a_deleted_dot_git_with_nothing_changed_keeps_nothing(
    repo: Path, workspace: Path
) -> None:
    import shutil

    shutil.rmtree(workspace / ".git")
    assert keep(repo, workspace).to_event() == {"files_changed": 0, "note": GIT_GONE}
    assert kept_refs(repo, RUN) == {}


def test_review_of_a_run_without_kept_work_is_not_found(repo: Path) -> None:
    with pytest.raises(LatticeError, match="has no kept work"):
        kept(repo, "run_nothing")


# ------------------------------------------------------------------ the commands


def lattice(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
    env.update(ENV, PATH=os.environ["PATH"], LATTICE_ACTOR="human:t")
    return subprocess.run(
        [sys.executable, "-m", "lattice_workers", *args], cwd=root, env=env,
        capture_output=True, text=True, timeout=60,
    )




@pytest.fixture
def kept_run(repo: Path, workspace: Path) -> Path:
    assert lattice(repo, "init", "--project-code", "T").returncode == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")
    base = git(repo, "rev-parse", "HEAD")
    git(workspace, "checkout", "-q", "--detach", base)
    (workspace / "app.py").write_text("def add(a, b):\n    return a + b\n")
    keep_work(workspace=workspace, repo=repo, run_id=RUN, attempt=1, base_sha=base,
              actor="agent:impl", task="T-1")
    return repo


def test_diff_apply_and_discard_from_the_command_line(kept_run: Path) -> None:
    repo = kept_run
    shown = lattice(repo, "worker", "diff", RUN)
    assert shown.returncode == 0 and "+    return a + b" in shown.stdout
    assert "1 file changed" in lattice(repo, "worker", "diff", RUN, "--stat").stdout
    before = user_state(repo)
    applied = lattice(repo, "worker", "apply", RUN, "--branch", "fix-add")
    assert applied.returncode == 0, applied.stderr
    assert "return a + b" in git(repo, "show", "fix-add:app.py")
    assert user_state(repo)[:3] == before[:3] and user_state(repo)[4] == before[4]
    # Applied: the kept ref is gone; review again is NOT_FOUND.
    assert lattice(repo, "worker", "diff", RUN).returncode == 3


def test_diff_is_plain_text_whatever_the_users_color_setting(kept_run: Path) -> None:
    git(kept_run, "config", "color.ui", "always")
    for args in ((), ("--stat",)):
        shown = lattice(kept_run, "worker", "diff", RUN, *args)
        assert shown.returncode == 0 and "\x1b[" not in shown.stdout, shown.stdout


def test_apply_refuses_an_existing_branch_and_a_bad_name(kept_run: Path) -> None:
    repo = kept_run
    git(repo, "branch", "taken")
    for branch, code in (("taken", 5), ("bad..name", 2), ("-x", 2)):
        refused = lattice(repo, "worker", "apply", RUN, "--branch", branch)
        assert refused.returncode == code, (branch, refused.stderr)
    assert lattice(repo, "worker", "diff", RUN).returncode == 0  # still kept
    assert lattice(repo, "worker", "discard", RUN).returncode == 0
    assert lattice(repo, "worker", "diff", RUN).returncode == 3


def test_merge_with_a_conflict_leaves_the_tree_byte_identical(kept_run: Path) -> None:
    repo = kept_run
    (repo / "app.py").write_text("def add(a, b):\n    return b + a  # mine\n")
    git(repo, "commit", "-q", "-am", "my own fix")
    before = user_state(repo), (repo / "app.py").read_bytes()
    refused = lattice(repo, "worker", "merge", RUN)
    assert refused.returncode == 5 and "conflicts in app.py" in refused.stderr
    assert (user_state(repo), (repo / "app.py").read_bytes()) == before
    assert not (repo / ".git" / "MERGE_HEAD").exists()


def test_merge_never_overwrites_a_file_the_user_ignores(repo: Path, workspace: Path) -> None:
    """The worker committed a file at a path the user's .gitignore names (git add -f):
    a plain ``git merge`` would overwrite the user's own file there without a word."""
    assert lattice(repo, "init", "--project-code", "T").returncode == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")
    base = git(repo, "rev-parse", "HEAD")
    git(workspace, "checkout", "-q", "--detach", base)
    (workspace / "build").mkdir()
    (workspace / "build" / "secret.env").write_text("the worker's\n")
    git(workspace, "add", "-f", "build/secret.env")
    git(workspace, "commit", "-q", "-m", "build output")
    keep_work(workspace=workspace, repo=repo, run_id=RUN, attempt=1, base_sha=base,
              actor="agent:impl", task="T-1")
    (repo / "build").mkdir()
    (repo / "build" / "secret.env").write_text("the user's own\n")
    before = user_state(repo)
    refused = lattice(repo, "worker", "merge", RUN)
    assert refused.returncode == 5 and "build/secret.env" in refused.stderr, refused.stderr
    assert (repo / "build" / "secret.env").read_text() == "the user's own\n"
    assert user_state(repo) == before and not (repo / ".git" / "MERGE_HEAD").exists()
    assert lattice(repo, "worker", "diff", RUN).returncode == 0  # still kept


def test_merge_counts_only_untracked_files_in_the_way(repo: Path, workspace: Path) -> None:
    """A tracked folder the work makes a file (and a tracked file it makes a folder)
    is no file of the user's in the way; an ignored file in that folder is."""
    (repo / "docs").mkdir()
    (repo / "docs" / "a.md").write_text("a\n")
    git(repo, "add", "docs")
    git(repo, "commit", "-q", "-m", "docs")
    base = git(repo, "rev-parse", "HEAD")
    git(workspace, "checkout", "-q", "--detach", base)
    shutil.rmtree(workspace / "docs")
    (workspace / "docs").write_text("one file now\n")
    (workspace / "README.md").unlink()
    (workspace / "README.md").mkdir()
    (workspace / "README.md" / "index.md").write_text("# app\n")
    keep_work(workspace=workspace, repo=repo, run_id=RUN, attempt=1, base_sha=base,
              actor="agent:impl", task="T-1")
    (repo / "docs" / "build").mkdir()
    (repo / "docs" / "build" / "cache").write_text("the user's\n")  # ignored: build/
    with pytest.raises(LatticeError, match="docs/build/cache"):
        merge_into_current(repo, RUN)
    assert (repo / "docs" / "build" / "cache").read_text() == "the user's\n"
    shutil.rmtree(repo / "docs" / "build")
    merge_into_current(repo, RUN)
    assert (repo / "docs").read_text() == "one file now\n"
    assert (repo / "README.md" / "index.md").read_text() == "# app\n"


def test_merge_from_a_board_in_a_subfolder_sees_the_whole_tree(
    repo: Path, workspace: Path
) -> None:
    """A board in a subfolder of the repository: an edit outside that folder is
    still an uncommitted change of the working tree."""
    (workspace / "app.py").write_text("def add(a, b):\n    return a + b\n")
    keep(repo, workspace)
    (repo / "sub").mkdir()
    (repo / "README.md").write_text("local edit\n")
    with pytest.raises(LatticeError, match="uncommitted changes"):
        merge_into_current(repo / "sub", RUN)
    assert (repo / "app.py").read_text().endswith("a - b\n")


def test_merge_refuses_while_a_rebase_is_stopped(repo: Path, workspace: Path) -> None:
    """A rebase stopped at an ``edit``: a clean tree, a detached HEAD; a merge there
    would go into the history the rebase is rewriting."""
    (workspace / "new.txt").write_text("new\n")
    keep(repo, workspace)
    for text in ("2\n", "3\n"):
        (repo / "README.md").write_text(text)
        git(repo, "commit", "-q", "-am", text)
    subprocess.run(
        ["git", "-C", str(repo), "rebase", "-q", "-i", "HEAD~2"], capture_output=True,
        env={**ENV, "GIT_SEQUENCE_EDITOR": "sed -i 1s/^pick/edit/"}, check=True,
    )
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(LatticeError, match="a rebase is in progress"):
        merge_into_current(repo, RUN)
    assert git(repo, "rev-parse", "HEAD") == head
    git(repo, "rebase", "--abort")
    merge_into_current(repo, RUN)
    assert (repo / "new.txt").read_text() == "new\n"


def test_merge_refuses_a_dirty_tree_then_merges_a_clean_one(kept_run: Path) -> None:
    repo = kept_run
    (repo / "README.md").write_text("local edit\n")
    refused = lattice(repo, "worker", "merge", RUN)
    assert refused.returncode == 5 and "uncommitted changes (README.md)" in refused.stderr
    git(repo, "checkout", "--", "README.md")
    merged = lattice(repo, "worker", "merge", RUN)
    assert merged.returncode == 0, merged.stderr
    assert "return a + b" in (repo / "app.py").read_text()
    assert lattice(repo, "worker", "diff", RUN).returncode == 3


def test_bad_run_ids_are_refused_before_git_sees_them(repo: Path) -> None:
    lattice(repo, "init", "--project-code", "T")
    for bad in ("../../heads/main", "run_x", "refs/heads/main"):
        refused = lattice(repo, "worker", "diff", bad, "--json")
        assert refused.returncode == 4 and "INVALID_ID" in refused.stdout


def test_a_worker_that_reset_its_head_below_the_base_is_kept_as_it_ended(
    repo: Path, workspace: Path
) -> None:
    (repo / "app.py").write_text("v2\n")
    git(repo, "commit", "-q", "-am", "v2")  # the run's commit, one after the first
    base = git(repo, "rev-parse", "HEAD")
    git(workspace, "checkout", "-q", "--detach", base)
    (workspace / "app.py").write_text("v3\n")
    git(workspace, "commit", "-q", "-am", "v3")
    git(workspace, "reset", "-q", "--hard", "HEAD~2")  # below where the run started
    event = keep_work(
        workspace=workspace, repo=repo, run_id=RUN, attempt=1, base_sha=base,
        actor="agent:impl", task="T-1",
    ).to_event()
    assert event["head_sha"] == git(repo, "rev-parse", "HEAD~1") and event["commits"] == 0
    kept_app = git(repo, "show", f"{event['snapshot_sha']}:app.py")
    assert kept_app == "def add(a, b):\n    return a - b" and event["files_changed"] == 1


def test_a_workspace_cut_short_before_its_checkout_ended_has_nothing_to_keep(
    repo: Path, workspace: Path
) -> None:
    """A supervisor killed while it made a workspace: the mark beside it never says
    ready, its .git may be half written, and recovery must not fail on it."""
    mark = workspace.parent / f".{workspace.name}.lattice-board"
    mark.write_text(mark.read_text().replace("ready\n", ""))
    (workspace / ".git" / "HEAD").unlink()
    (workspace / "app.py").unlink()  # half checked out
    assert keep(repo, workspace).to_event() == {"files_changed": 0}
    assert kept_refs(repo, RUN) == {}
