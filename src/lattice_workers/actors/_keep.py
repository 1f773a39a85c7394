"""Keeping an attempt's work: one commit of everything it left, under a ref of its own.

What is kept: the worker's commits (its workspace's final HEAD, wherever it moved), plus
its uncommitted changes to tracked files and its new files that git does not ignore,
as one commit on top of that HEAD, referenced by ``refs/lattice/runs/<run>/<attempt>``
in the user's repository. An attempt that changed nothing (HEAD still at the run's
commit, nothing uncommitted) makes no ref.

How, and why so: nothing here may run code the worker chose, or touch what the user
sees. So the snapshot is built with plumbing only, on a temporary index:
``hash-object --no-filters`` (no clean filter from a ``.gitattributes`` the worker
wrote), ``update-index --index-info``, ``write-tree``, ``commit-tree`` (no hooks), and
every git call runs with ``core.fsmonitor``, ``core.hooksPath`` and the attributes file
of the user's config turned off, and with no optional lock (``git status`` writes no
index), each bounded in time (:data:`GIT_SECONDS`). The workspace's own index and the
user's index, HEAD and branches are never written; the only write to the user's
repository is the ref.

Limits: a file larger than ``max_file_bytes`` is left out, then the largest files until
the total is under ``max_total_bytes``; the event names what was left out. Blocking
(a few git processes): the caller runs :func:`keep_work` in a thread.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lattice_workers.actors._files import read_regular
from lattice_workers.actors._git import git_environment, one_line
from lattice_workers.errors import Code, LatticeError

REF_PREFIX = "refs/lattice/runs"
#: Defaults of the definition fields ``keep_max_file_mib`` and ``keep_max_total_mib``.
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_TOTAL_BYTES = 100 * 1024 * 1024
#: Settings that would make git run a program of the worker's, or read its files.
SAFE_CONFIG = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.untrackedCache=false",
    "core.attributesFile=/dev/null",
    "commit.gpgSign=false",
    "gc.auto=0",
    "maintenance.auto=false",
)
ZERO = "0" * 40
#: A workspace config longer than this is not read as a file: git reads it instead.
CONFIG_READ_LIMIT = 64 * 1024
#: The longest one git process of keeping or taking work may take. A worker can leave
#: a file git reads and blocks on for good (a FIFO named ``.gitignore``); without a
#: bound, its attempt would never end. Generous: a status of 50,000 files takes ~1 s;
#: what an overrun costs is the changes, not the end (see ``Attempt.end``).
GIT_SECONDS = 60.0


class KeepError(Exception):
    """Why an attempt's work could not be kept (said in its terminal event)."""


def not_kept(why: object) -> dict[str, Any]:
    """The ``changes`` of a terminal event whose work could not be kept, and why."""
    return {"files_changed": 0, "error": f"the work could not be kept: {why}"}


def run_ref(run_id: str, attempt: int) -> str:
    return f"{REF_PREFIX}/{run_id}/{attempt}"


@dataclass
class Changes:
    """What an attempt changed: the ``changes`` of its terminal event."""

    files_changed: int = 0
    ref: str | None = None
    head_sha: str | None = None
    snapshot_sha: str | None = None
    base_sha: str | None = None
    commits: int = 0
    insertions: int = 0
    deletions: int = 0
    left_out: list[str] = field(default_factory=list)
    #: What a reader should know that the numbers do not say (the worker deleted its
    #: workspace's ``.git``, so its commits are lost and its files were kept instead).
    note: str | None = None

    def to_event(self) -> dict[str, Any]:
        noted = {"note": self.note} if self.note else {}
        if self.ref is None:
            return {
                "files_changed": 0,
                **({"left_out": self.left_out} if self.left_out else {}),
                **noted,
            }
        return {
            **noted,
            "ref": self.ref,
            "head_sha": self.head_sha,
            "snapshot_sha": self.snapshot_sha,
            "base_sha": self.base_sha,
            "commits": self.commits,
            "files_changed": self.files_changed,
            "insertions": self.insertions,
            "deletions": self.deletions,
            "left_out": self.left_out,
        }


def git(
    cwd: Path | str,
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    config: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    """``git -C cwd`` with :data:`SAFE_CONFIG` (and ``config``); a failure raises
    :class:`KeepError`."""
    config = [part for item in (*SAFE_CONFIG, *config) for part in ("-c", item)]
    try:
        proc = subprocess.run(
            ["git", *config, "-C", os.fspath(cwd), *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            # No optional lock: ``git status`` would otherwise write the stat data it
            # refreshed into the index it read (the workspace's own, or the user's
            # when a worker pointed its .git there).
            env={**git_environment(), "GIT_OPTIONAL_LOCKS": "0", **(env or {})},
            check=False,
            timeout=GIT_SECONDS,
        )
    except FileNotFoundError:
        raise KeepError("git was not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise KeepError(
            f"git {args[0]} took more than {GIT_SECONDS:g} s and was stopped (does the "
            "workspace hold a file git waits on for good, a FIFO?)"
        ) from None
    if check and proc.returncode != 0:
        raise KeepError(f"git {args[0]} failed: {one_line(proc.stderr or proc.stdout)}")
    return proc


def no_filters(workspace: Path) -> list[str]:
    """``-c`` settings that empty every filter driver the workspace's config defines.

    ``git status`` hashes a file whose stat data changed through its clean filter, and
    a worker can both write ``.gitattributes`` and define the filter in the config its
    workspace shares: that would run the worker's program in the supervisor. Reading
    the config runs nothing; an empty command is no filter.

    The common case costs no git process (a third of a keep that found nothing):
    when the workspace's own config cannot define a filter (see
    :func:`_config_defines_no_filter`), there is nothing of the worker's to empty. A
    filter of the user's global config is then left as it is: it is the user's own
    program, which their ``git status`` in that folder would run too.
    """
    if _config_defines_no_filter(workspace / ".git"):
        return []
    out = git(workspace, "config", "-z", "--get-regexp", r"^filter\.", check=False).stdout
    names = set()
    for entry in out.split(b"\0"):
        key = entry.split(b"\n", 1)[0].decode(errors="replace")
        driver = key[len("filter.") :].rpartition(".")[0]
        if driver:
            names.add(driver)
    return [f"filter.{n}.{part}=" for n in sorted(names) for part in ("clean", "smudge", "process")]


def _config_defines_no_filter(git_dir: Path) -> bool:
    """Whether ``git_dir`` (a workspace's ``.git``) is a plain folder whose config can
    define no filter driver, read as files. A section name has no escapes, so a
    ``[filter ...]`` or an ``[include...]`` section always spells its name; and git
    reads local config from nowhere else once ``commondir`` (another folder's config),
    ``config.worktree`` and a ``.git`` file or link (another folder altogether) are
    ruled out. Anything else, or anything unreadable, says False: ask git."""
    try:
        if not stat.S_ISDIR(os.lstat(git_dir).st_mode) or not _is_git_directory(git_dir):
            return False
        if os.path.lexists(git_dir / "commondir") or os.path.lexists(
            git_dir / "config.worktree"
        ):
            return False
        text = read_regular(git_dir / "config", CONFIG_READ_LIMIT + 1)
    except OSError:
        return False
    lowered = text.lower()
    return len(text) <= CONFIG_READ_LIMIT and b"filter" not in lowered and b"include" not in lowered


_HEAD_FILE = re.compile(rb"(ref: refs/[^\n]*|[0-9a-f]{40}|[0-9a-f]{64})\n?")


def _is_git_directory(git_dir: Path) -> bool:
    """Whether git takes ``git_dir`` for a repository (git's ``is_git_directory``: a
    HEAD naming a ref or a commit, an ``objects`` and a ``refs`` folder), asked
    stricter (plain files and folders only). When it does not, git looks elsewhere for
    one (the workspace folder itself, its parents) and reads that one's config."""
    try:
        if not all(stat.S_ISDIR(os.lstat(git_dir / name).st_mode) for name in ("objects", "refs")):
            return False
        head = read_regular(git_dir / "HEAD", 4097)
    except OSError:
        return False
    return _HEAD_FILE.fullmatch(head) is not None


def _head_and_changes(
    workspace: Path,
    config: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    worktree_only: bool = False,
) -> tuple[str | None, list[tuple[str, bool]]]:
    """The workspace's HEAD (None when it names no commit yet), and (path, present) for
    every change to a tracked file and every new file that git does not ignore: one
    ``git status`` for both. ``worktree_only``: only the files that differ from the
    index (``env`` names a temporary one), not the index from HEAD."""
    out = git(
        workspace,
        "status",
        "--porcelain=v2",
        "--branch",
        "-z",
        "--untracked-files=all",
        "--no-renames",
        "--ignore-submodules=all",
        config=config,
        env=env,
    ).stdout
    head = ""
    paths = []
    for entry in out.split(b"\0"):
        kind = entry[:2]
        if kind == b"# " and entry.startswith(b"# branch.oid "):
            head = entry[len(b"# branch.oid ") :].decode()
            continue
        # "1 XY sub mH mI mW hH hI path", "u XY sub m1 m2 m3 mW h1 h2 h3 path", "? path"
        fields = {b"1 ": 8, b"u ": 10, b"? ": 1}.get(kind)
        if fields is None or (worktree_only and kind == b"1 " and entry[3:4] == b"."):
            continue
        path = os.fsdecode(entry.split(b" ", fields)[fields])
        paths.append((path, _present(workspace, path)))
    if head == "(initial)":
        return None, paths
    if len(head) not in (40, 64):
        raise KeepError(f"the workspace has no commit checked out ({head or 'no HEAD'})")
    return head, paths


def _present(workspace: Path, path: str) -> bool:
    """Whether ``path`` is in the workspace, reached through real folders only: a file
    under a folder the worker replaced by a link is gone (as git says), never read
    through the link from outside the workspace."""
    folder = workspace
    for part in path.rstrip("/").split("/")[:-1]:
        folder = folder / part
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                return False
        except OSError:
            return False
    return os.path.lexists(workspace / path)


def _choose(
    workspace: Path, paths: list[tuple[str, bool]], max_file: int, max_total: int
) -> tuple[list[tuple[str, bool]], list[str]]:
    """The paths to keep, and those left out: for their size (largest first), and
    the repositories a worker made inside its workspace (``git status`` names one as
    a folder, ``pkg/``, and a snapshot could hold only a link to its commit)."""
    sized: list[tuple[int, str, bool]] = []
    left_out: list[str] = []
    for path, present in paths:
        size = os.lstat(workspace / path).st_size if present else 0
        if path.endswith("/"):  # a repository the worker made inside: git keeps none
            left_out.append(path)  # of its files, so say so
        elif size > max_file:
            left_out.append(path)
        else:
            sized.append((size, path, present))
    total = sum(size for size, _, _ in sized)
    for size, path, _ in sorted(sized, reverse=True):
        if total <= max_total:
            break
        left_out.append(path)
        total -= size
    dropped = set(left_out)
    return [(p, present) for _, p, present in sized if p not in dropped], sorted(left_out)


def _index_lines(workspace: Path, keep: list[tuple[str, bool]]) -> bytes:
    """``update-index --index-info`` lines: each present file as a blob written without
    filters (one ``hash-object`` for all regular files), each deleted one removed."""
    lines: list[bytes] = []
    regular: list[tuple[str, str]] = []
    for path, present in keep:
        if not present:
            lines.append(b"0 " + ZERO.encode() + b"\t" + os.fsencode(path) + b"\0")
            continue
        info = os.lstat(workspace / path)
        if stat.S_ISLNK(info.st_mode):
            target = os.fsencode(os.readlink(workspace / path))
            sha = git(workspace, "hash-object", "-w", "--stdin", stdin=target).stdout
            lines.append(b"120000 " + sha.strip() + b"\t" + os.fsencode(path) + b"\0")
        elif stat.S_ISREG(info.st_mode):
            regular.append(("100755" if info.st_mode & 0o111 else "100644", path))
        # a socket or a fifo: nothing git could keep
    if regular:
        names = b"".join(_c_quoted(os.fsencode(path)) + b"\n" for _, path in regular)
        shas = git(
            workspace, "hash-object", "--no-filters", "-w", "--stdin-paths", stdin=names
        ).stdout.split()
        for (mode, path), sha in zip(regular, shas, strict=True):
            lines.append(mode.encode() + b" " + sha + b"\t" + os.fsencode(path) + b"\0")
    return b"".join(lines)


def _c_quoted(name: bytes) -> bytes:
    """``name`` in C quotes, for a line of ``hash-object --stdin-paths``: git unquotes
    a line that starts with a quote and drops a carriage return before the newline,
    so a name taken as it is could name another file, or none. Every byte but a
    printable ASCII one is written in octal; git reads back exactly ``name``."""
    out = bytearray(b'"')
    for byte in name:
        if byte in b'"\\':
            out += b"\\" + bytes([byte])
        elif 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    return bytes(out + b'"')


#: The ``upload-pack`` a fetch from a workspace runs there: with the settings of
#: :data:`SAFE_CONFIG` too (the workspace's config is the worker's; ``-c`` of the
#: fetching git does not reach the process it starts on the other side).
UPLOAD_PACK = "git " + " ".join(f"-c {item}" for item in SAFE_CONFIG) + " upload-pack"
#: A lost ``.git``, said in the event.
GIT_GONE = (
    "the workspace's .git was deleted (by the worker?): its commits are lost; its files "
    "are kept as changes to the run's commit"
)

#: A HEAD that names no commit, said in the event.
UNBORN = (
    "the workspace's HEAD names no commit (an orphan branch?): its files are kept as "
    "changes to the run's commit"
)


def _rebuild_git_dir(workspace: Path, repo: Path, base_sha: str) -> None:
    """A ``.git`` for a workspace whose worker deleted its own, at the run's commit,
    with an index of that commit (the files stay as the worker left them)."""
    from lattice_workers.actors._worktree import project_git_dir, write_git_dir

    try:
        common, object_format = project_git_dir(repo)
    except LatticeError as err:
        raise KeepError(f"the workspace's .git is gone and {err.message}") from None
    write_git_dir(workspace, common, base_sha, object_format)
    git(workspace, "read-tree", base_sha)


def bring_back(repo: Path, workspace: Path, snapshot: str, ref: str) -> None:
    """Fetch ``snapshot`` (and the worker's commits under it) from the workspace into
    ``ref`` of the user's repository: the one write there. Hooks off on both sides (a
    ``reference-transaction`` hook of the user's would see a ref it never asked for),
    no tags, no FETCH_HEAD, no pruning, no maintenance; protocol v2, which serves a
    commit that no ref names. Objects the user's store has are not sent again."""
    git(
        repo,
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        "--no-prune",
        "--no-auto-gc",
        "--no-write-commit-graph",
        f"--upload-pack={UPLOAD_PACK}",
        os.path.abspath(workspace),
        f"+{snapshot}:{ref}",
        config=("protocol.version=2",),
    )


def keep_work(
    *,
    workspace: Path,
    repo: Path,
    run_id: str,
    attempt: int,
    base_sha: str,
    actor: str,
    task: str,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> Changes:
    """Keep what the attempt in ``workspace`` changed since ``base_sha``, in ``repo``.

    The workspace is a repository of its own (see :mod:`._worktree`): the snapshot's
    objects are written there, then fetched into ``repo`` by :func:`bring_back`. One
    the worker deleted the ``.git`` of is given a new one at ``base_sha`` first, so
    that its files are still kept (the event's ``note`` says what was lost).
    """
    from lattice_workers.actors._worktree import unfinished

    try:
        mode = os.lstat(workspace).st_mode
    except FileNotFoundError:
        raise KeepError("the workspace is gone") from None
    if stat.S_ISLNK(mode):  # never followed: a .git would be rebuilt, files read there
        raise KeepError("the workspace folder was replaced by a link (by the worker?)")
    if not stat.S_ISDIR(mode):
        raise KeepError("the workspace is gone")
    if unfinished(workspace):
        return Changes()  # cut short before its checkout ended: no worker ran there
    note = None
    if not os.path.lexists(workspace / ".git"):
        _rebuild_git_dir(workspace, repo, base_sha)
        note = GIT_GONE
    filters = no_filters(workspace)
    found, paths = _head_and_changes(workspace, filters)
    head = found or base_sha
    if found is None:  # an orphan branch: its files, as changes to the run's commit
        note = UNBORN
        with tempfile.TemporaryDirectory(prefix="lattice-keep-") as tmp:
            index = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            git(workspace, "read-tree", base_sha, env=index)
            _, paths = _head_and_changes(workspace, filters, index, worktree_only=True)
    if not paths and head == base_sha:
        return Changes(note=note)  # the fast path: one config read, one status
    keep, left_out = _choose(workspace, paths, max_file_bytes, max_total_bytes)
    if not keep and head == base_sha:
        return Changes(left_out=left_out, note=note)  # all of it too large to keep
    with tempfile.TemporaryDirectory(prefix="lattice-keep-") as tmp:
        index = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        git(workspace, "read-tree", head, env=index)
        if keep:
            git(
                workspace,
                "update-index",
                "-z",
                "--index-info",
                stdin=_index_lines(workspace, keep),
                env=index,
            )
        tree = git(workspace, "write-tree", env=index).stdout.decode().strip()
    who = actor.replace(":", "-")
    identity = {
        "GIT_AUTHOR_NAME": actor,
        "GIT_AUTHOR_EMAIL": f"{who}@lattice.invalid",
        "GIT_COMMITTER_NAME": actor,
        "GIT_COMMITTER_EMAIL": f"{who}@lattice.invalid",
    }
    message = (
        f"lattice: work of {run_id} (attempt {attempt}) on {task}\n\n"
        f"Lattice-Run: {run_id}\nLattice-Attempt: {attempt}\nLattice-Task: {task}\n"
        f"Lattice-Base: {base_sha}\n"
    )
    # Always one commit on top of the final HEAD, even when the tree is HEAD's: it
    # carries the run, the attempt and the base, which review and take read back.
    snapshot = (
        git(workspace, "commit-tree", tree, "-p", head, stdin=message.encode(), env=identity)
        .stdout.decode()
        .strip()
    )
    ref = run_ref(run_id, attempt)
    bring_back(repo, workspace, snapshot, ref)
    return Changes(
        note=note,
        ref=ref,
        head_sha=head,
        snapshot_sha=snapshot,
        base_sha=base_sha,
        left_out=left_out,
        **_stats(repo, base_sha, head, snapshot),
    )


def _stats(repo: Path, base: str, head: str, snapshot: str) -> dict[str, int]:
    numstat = git(
        repo, "diff", "--no-ext-diff", "--numstat", "-z", "--no-renames", base, snapshot
    ).stdout
    files = insertions = deletions = 0
    for entry in numstat.split(b"\0"):
        parts = entry.split(b"\t")
        if len(parts) < 3:
            continue
        files += 1
        insertions += int(parts[0]) if parts[0].isdigit() else 0
        deletions += int(parts[1]) if parts[1].isdigit() else 0
    commits = int(git(repo, "rev-list", "--count", f"{base}..{head}").stdout.strip() or 0)
    return {
        "files_changed": files,
        "insertions": insertions,
        "deletions": deletions,
        "commits": commits,
    }


# ------------------------------------------------------------------ review and take


def kept_refs(repo: Path, run_id: str) -> dict[int, str]:
    """attempt -> snapshot sha of every kept attempt of ``run_id``."""
    out = git(
        repo, "for-each-ref", "--format=%(refname) %(objectname)", f"{REF_PREFIX}/{run_id}/"
    ).stdout.decode()
    found: dict[int, str] = {}
    for line in out.splitlines():
        name, _, sha = line.partition(" ")
        tail = name.rsplit("/", 1)[-1]
        if tail.isdigit():
            found[int(tail)] = sha
    return found


def kept(repo: Path, run_id: str, attempt: int | None = None) -> tuple[int, str, str]:
    """(attempt, snapshot sha, base sha) of a run's kept work: the last attempt unless
    ``attempt``; NOT_FOUND when none was kept."""
    refs = kept_refs(repo, run_id)
    if not refs:
        raise LatticeError(
            Code.NOT_FOUND,
            f"run {run_id} has no kept work (nothing changed, it ran without a worktree, "
            "or its work was applied or discarded)",
        )
    if attempt is None:
        attempt = max(refs)
    if attempt not in refs:
        raise LatticeError(
            Code.NOT_FOUND,
            f"run {run_id} has no kept work for attempt {attempt} "
            f"(kept: {', '.join(map(str, sorted(refs)))})",
        )
    sha = refs[attempt]
    body = git(repo, "log", "-1", "--format=%B", sha).stdout.decode()
    base = next(
        (
            line.split(": ", 1)[1].strip()
            for line in body.splitlines()
            if line.startswith("Lattice-Base: ")
        ),
        None,
    )
    if base is None:
        raise LatticeError(Code.CONFLICT, f"{sha} under {REF_PREFIX}/{run_id} is not a snapshot")
    return attempt, sha, base


def diff(repo: Path, run_id: str, *, attempt: int | None = None, stat_only: bool = False) -> bytes:
    """The patch (or ``--stat``) from the run's commit to its kept work."""
    _, sha, base = kept(repo, check_run_id(run_id), attempt)
    args: Sequence[str] = ("--stat",) if stat_only else ()
    return git(
        repo, "diff", "--no-ext-diff", "--no-textconv", "--no-color", *args, base, sha
    ).stdout


_RUN_ID = re.compile(r"run_[0-9A-HJKMNP-TV-Z]{26}")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it has the form of one (it becomes part of a ref name)."""
    if not _RUN_ID.fullmatch(run_id):
        raise LatticeError(Code.INVALID_ID, f"not a run id: {run_id!r} (run_ + 26 characters)")
    return run_id


def _drop(repo: Path, run_id: str, attempts: Sequence[int]) -> None:
    for attempt in attempts:
        git(repo, "update-ref", "-d", run_ref(run_id, attempt))


def apply_to_branch(repo: Path, run_id: str, branch: str, attempt: int | None = None) -> str:
    """A new branch ``branch`` at the run's kept work; nothing else changes. The kept
    ref is dropped (the branch holds the work now). Returns the snapshot sha."""
    attempt, sha, _ = kept(repo, check_run_id(run_id), attempt)
    checked = git(repo, "check-ref-format", "--branch", branch, check=False)
    if checked.returncode != 0 or branch.startswith("-"):
        raise LatticeError(Code.INVALID_ARGUMENT, f"{branch!r} is not a branch name git accepts")
    exists = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    if exists.returncode == 0:
        raise LatticeError(Code.CONFLICT, f"branch {branch!r} already exists; choose another name")
    git(repo, "branch", "--no-track", branch, sha)
    _drop(repo, run_id, [attempt])
    return sha


def merge_into_current(repo: Path, run_id: str, attempt: int | None = None) -> str:
    """Merge the run's kept work into the current branch, or change nothing.

    Refused while tracked files (outside ``.lattice/``, which the board itself writes)
    have changes. A conflict is aborted, leaving the tree as it was, and named.
    Returns the merge commit.
    """
    attempt, sha, _ = kept(repo, check_run_id(run_id), attempt)
    busy = _operation_in_progress(repo)
    if busy:
        raise LatticeError(
            Code.CONFLICT,
            f"a {busy} is in progress in the repository; finish or abort it first, or "
            f"take the work on a branch: lattice worker apply {run_id} --branch NAME",
        )
    dirty = git(
        repo,
        "status",
        "--porcelain=v1",
        "--untracked-files=no",
        "--",
        ":/",  # the whole tree, also when the board is in a subfolder of it
        ":!.lattice",
        config=no_filters(repo),
    ).stdout.decode()
    if dirty.strip():
        files = ", ".join(line[3:] for line in dirty.splitlines()[:5])
        raise LatticeError(
            Code.CONFLICT,
            f"the working tree has uncommitted changes ({files}); commit or stash them, "
            f"or take the work on a branch: lattice worker apply {run_id} --branch NAME",
        )
    # The merge computed first, touching nothing (git >= 2.38): a conflict is refused
    # before the index or a file is written, so the tree stays exactly as it was.
    trial = git(repo, "merge-tree", "--write-tree", "--name-only", "HEAD", sha, check=False)
    instead = f"take it on a branch instead: lattice worker apply {run_id} --branch NAME"
    if trial.returncode == 1:
        # The tree's id, the conflicted files, an empty line, then git's messages.
        lines = trial.stdout.decode(errors="replace").split("\n")[1:]
        names = lines[: lines.index("")] if "" in lines else lines
        raise LatticeError(
            Code.CONFLICT,
            f"merging the work of {run_id} conflicts in {', '.join(sorted(set(names)))}; "
            f"nothing was changed ({instead})",
        )
    if trial.returncode == 0:
        in_the_way = _files_in_the_way(repo, trial.stdout.split(b"\n", 1)[0].decode())
        if in_the_way:
            raise LatticeError(
                Code.CONFLICT,
                f"merging the work of {run_id} would overwrite files of yours that git "
                f"ignores or does not track: {', '.join(in_the_way[:5])}; move them away "
                f"and retry; nothing was changed ({instead})",
            )
    merged = git(
        repo, "merge", "--no-ff", "--no-edit", "-m", f"Merge the work of {run_id}", sha,
        check=False,
    )
    if merged.returncode != 0:
        git(repo, "merge", "--abort", check=False)
        raise LatticeError(
            Code.CONFLICT,
            f"merging the work of {run_id} failed ({one_line(merged.stderr or merged.stdout)}); "
            f"nothing was changed ({instead})",
        )
    _drop(repo, run_id, [attempt])
    return git(repo, "rev-parse", "HEAD").stdout.decode().strip()


#: git's marks of an operation under way, and what each is called.
_IN_PROGRESS = (
    ("rebase-merge", "rebase"),
    ("rebase-apply", "rebase"),
    ("MERGE_HEAD", "merge"),
    ("CHERRY_PICK_HEAD", "cherry-pick"),
    ("REVERT_HEAD", "revert"),
    ("BISECT_LOG", "bisect"),
)


def _operation_in_progress(repo: Path) -> str | None:
    """The rebase, merge, cherry-pick, revert or bisect under way in ``repo``, if any:
    stopped at an ``edit``, a rebase has a clean tree and a detached HEAD, and a merge
    there would become part of the user's rewritten history."""
    args = [arg for name, _ in _IN_PROGRESS for arg in ("--git-path", name)]
    out = git(repo, "rev-parse", "--path-format=absolute", *args).stdout.decode()
    for path, (_, what) in zip(out.splitlines(), _IN_PROGRESS, strict=True):
        if os.path.lexists(path):
            return what
    return None


def _files_in_the_way(repo: Path, tree: str) -> list[str]:
    """The user's untracked files (ignored ones too) that merging ``tree`` into HEAD
    would overwrite or delete: ``git merge`` refuses to lose an untracked file but
    overwrites an ignored one (a ``.env``, a build output) without a word, and
    ``--no-overwrite-ignore`` covers only a fast-forward. Looked for where ``tree``
    adds a path: the path itself, and a file where the path needs a folder."""
    if not _SHA_HEX.fullmatch(tree):
        return []
    added = git(
        repo, "diff-tree", "-r", "-z", "--name-only", "--no-renames", "--diff-filter=A",
        "HEAD", tree,
    ).stdout
    top = Path(git(repo, "rev-parse", "--show-toplevel").stdout.decode().strip())
    there: set[str] = set()
    for raw in filter(None, added.split(b"\0")):
        parts = os.fsdecode(raw).split("/")
        for depth in range(1, len(parts) + 1):
            try:
                mode = os.lstat(top.joinpath(*parts[:depth])).st_mode
            except OSError:
                break  # nothing there: nothing in the way below it either
            if depth == len(parts) or not stat.S_ISDIR(mode):
                there.add("/".join(parts[:depth]))
                break
    if not there:
        return []
    # Which of them git does not track (every untracked file under a folder, too);
    # in batches, so that no command line grows past the system's limit.
    names = sorted(there)
    untracked: list[str] = []
    for start in range(0, len(names), 1000):
        out = git(
            top, "--literal-pathspecs", "ls-files", "-z", "--others", "--",
            *names[start : start + 1000],
        ).stdout
        untracked += (os.fsdecode(p) for p in out.split(b"\0") if p)
    return sorted(untracked)


_SHA_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def kept_summary(repo: Path) -> dict[str, int] | None:
    """How many kept-work refs the repository holds, and the bytes on disk of the
    objects only they hold (what discarding them all would let ``git gc`` free); None
    when there are none, or no repository to ask. For ``doctor``.

    Retention: these refs are never deleted but by ``apply``, ``merge`` or
    ``discard``; ``keep_finished_days`` ages out the supervisor's records of finished
    runs, never their work (deleting unreviewed work silently is what issue 19 is
    against), so ``doctor`` says what they hold and lets the user decide.
    """
    try:
        listed = git(repo, "for-each-ref", "--format=%(refname)", f"{REF_PREFIX}/", check=False)
        refs = listed.stdout.split() if listed.returncode == 0 else []
        if not refs:
            return None
        usage = git(
            repo, "rev-list", "--objects", "--disk-usage", f"--glob={REF_PREFIX}/*",
            "--not", "--branches", "--tags", "--remotes", check=False,
        )
    except KeepError:
        return None
    held = usage.stdout.strip()
    return {"refs": len(refs), "bytes": int(held) if held.isdigit() else 0}


def discard(repo: Path, run_id: str, attempt: int | None = None) -> list[int]:
    """Drop the run's kept work (every attempt's, unless ``attempt``); the attempts dropped."""
    refs = kept_refs(repo, check_run_id(run_id))
    if not refs or (attempt is not None and attempt not in refs):
        kept(repo, run_id, attempt)  # raises NOT_FOUND with the right words
    chosen = sorted(refs) if attempt is None else [attempt]
    _drop(repo, run_id, chosen)
    return chosen
