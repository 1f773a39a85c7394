"""Reused workspaces: a bounded pool per repository, re-pointed instead of re-made.

Why: on a big repository, making a workspace is most of the time from "run" to the
worker's first instruction (``read-tree -u`` writes every file: seconds on 50,000
files), while moving a clean workspace from one commit to another writes only the
files that differ between the two. So a workspace whose run ended (its work already
kept, :meth:`~lattice_workers.actors._attempt.Attempt.end` guarantees that order) is
cleaned and kept here, and the next run takes it.

Never a stale byte: a run in a reused workspace sees what a fresh one gives. Its
``.git`` is written anew exactly as :func:`~._worktree.write_git_dir` writes a fresh
one (HEAD, config, refs copied from the project now, no packed-refs, stash, reflogs,
hooks or ``info/`` of the last run, no object the last run wrote: those were fetched
into the project as its kept work). Only the index is carried over, as a cache of the
files' stat data, so that git rewrites only the files that differ: on release ``git
read-tree -u --reset <commit>`` puts back every tracked file the run changed (git
compares each file's stat data with the index) and ``git clean -ffdx`` removes
untracked and ignored files; then the index must have no entry marked
assume-unchanged or skip-worktree (a run could hide a changed file behind those), and
``git status`` must show nothing. On take, the paths that differ between the two
commits are restored from the new one (:meth:`WorkspacePool._repoint`). Whatever
fails, at any step: the workspace is removed, never reused (and the run gets a fresh
one in the folder its ``process_started`` already named).

Names: a workspace starts in the folder named after its first run (what every run got
before the pool); returned to the pool it is renamed ``pool-<hex>``, which no run id
(``run_<ULID>``) can be. A run that takes it runs in that folder, and the folder is
decided synchronously by :meth:`WorkspacePool.location_for`, the moment the attempt
writes ``process_started`` (which names it), before the workspace is prepared.

Bounds: at most ``size`` idle workspaces (config ``workers.worktree_pool``), least
recently used out first; 0 turns the pool off. A workspace is in at most one run at
a time: taking it removes it from the idle ones, with no checkpoint in between.
``"worktree_reuse": "keep-ignored"`` in a definition keeps git-ignored files (a
``.venv``, a build folder) between runs of that worker: its workspaces go back to a
pool of that worker's alone.

Kept across a stop (config ``workers.keep_pool_on_stop``): a workspace returned to the
pool gets a line ``idle <commit> <pool>`` in its mark (written once it is clean, removed
the moment a run takes it, both before anything else touches it), so that what is idle
on disk is known without a supervisor. ``supervisor stop`` then leaves the idle ones,
and the next start (recovery, even after ``kill -9``) spares those of this board whose
mark says idle and that no open run names, and :meth:`WorkspacePool.adopt` checks each
before it serves: its ``.git`` is written anew, then its index must be in a fresh one's
format with no hidden entry, every mode a fresh checkout's, and ``git status`` empty
(ignored files included, but for a ``keep-ignored`` pool). A check that fails removes
it: adoption checks, it never repairs (a file edited while no supervisor ran is no
run's work to put back).

Known limit: git trusts a file whose stat data (size, mtime, ctime, inode) matches its
index entry, as every ``git status`` does; a run that rewrote the index by hand to
match a changed file could hide that file. Runs are agents that make mistakes, not
adversaries of the supervisor.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from lattice_workers.actors._git import one_line, run_git
from lattice_workers.actors._worktree import (
    _SHA,
    CLEANUP_SECONDS,
    Worktrees,
    _checked,
    _mark,
    _mark_ready,
    _ours_under,
    _Repo,
    _repo_blocking,
    _rmtree,
    write_git_dir,
)
from lattice_workers.errors import LatticeError

log = logging.getLogger("lattice_workers.supervisor.run")

#: The first part of a pooled workspace's folder name (a run id starts with ``run_``).
POOL_PREFIX = "pool-"
#: The pool of the workers that clean everything (the default ``worktree_reuse``).
SHARED = ""
#: git settings for every command in a pooled workspace: nothing of the worker's may
#: run (its config is rewritten before any git command, these cover the user's).
_SAFE = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
)  # fmt: skip
#: Up to how many differing paths a re-point restores them one by one (see
#: :meth:`WorkspacePool._repoint`); past it, a two-tree ``read-tree -m -u``.
REPOINT_PATHS = 1000
#: The word that starts the mark's line of an idle workspace (module docstring).
IDLE = "idle"

#: The longest one git process of cleaning or re-pointing a workspace may take (see
#: :meth:`WorkspacePool._git`); one that takes longer has the workspace removed.
GIT_SECONDS = 300.0


class PoolError(Exception):
    """Why a workspace cannot be reused (it is removed instead)."""


@dataclass(slots=True)
class _Taken:
    """A run's workspace, from :meth:`WorkspacePool.location_for` to its release."""

    name: str
    key: str
    #: The commit the workspace is at: where a pooled one was left, then the run's.
    commit: str | None = None
    #: Whether the folder is a pooled one (re-pointed), not one made for this run.
    reused: bool = False


@dataclass(slots=True)
class _Idle:
    key: str
    commit: str


class WorkspacePool:
    """The workspaces of one repository's runs, reused (see the module docstring).

    ``size`` 0: every run gets a fresh workspace, removed at its end (as before the
    pool). One instance per executor, on the Trio loop.
    """

    def __init__(self, worktrees: Worktrees, root: Path, size: int = 0) -> None:
        self.worktrees = worktrees
        self.root = root
        self.size = size
        self._idle: collections.OrderedDict[str, _Idle] = collections.OrderedDict()
        self._taken: dict[str, _Taken] = {}  # run id -> its workspace
        #: Kept workspaces :meth:`adopt` has not checked yet (neither idle nor removed).
        self._pending: list[Path] = []
        self._closed = False
        #: The format version of a fresh workspace's index (git's config decides it).
        self._index_version: int | None = None
        #: How many runs got a reused workspace, and how many reuses failed (doctor,
        #: tests, the bench).
        self.reused = 0
        self.discarded = 0
        #: How many kept workspaces a start adopted (:meth:`adopt`).
        self.adopted = 0

    # -- which folder ------------------------------------------------------------------

    def location_for(self, run_id: str, key: str = SHARED) -> str:
        """The folder of ``run_id``'s workspace, decided now for good: an idle pooled
        one of ``key`` (the most recently used: its files are the likeliest to be in
        the page cache), else one named after the run. No checkpoint: two runs can
        never take the same one."""
        taken = self._taken.get(run_id)
        if taken is None:
            taken = _Taken(run_id, key)
            if not self._closed:
                for name in reversed(self._idle):
                    idle = self._idle[name]
                    if idle.key == key:
                        del self._idle[name]
                        taken = _Taken(name, key, idle.commit, reused=True)
                        break
            self._taken[run_id] = taken
        return str(self.worktrees.base_dir / taken.name)

    def idle(self) -> list[Path]:
        """The idle pooled workspaces, least recently used first."""
        return [self.worktrees.base_dir / name for name in self._idle]

    # -- prepare, release ----------------------------------------------------------------

    async def prepare(self, run_id: str, commit: str, key: str = SHARED) -> Path:
        """``run_id``'s workspace at ``commit``, in the folder :meth:`location_for`
        named: a pooled one re-pointed, else (none idle, or its re-pointing failed)
        a fresh one. Nothing is left taken on failure or cancel."""
        self.location_for(run_id, key)
        taken = self._taken[run_id]
        path = self.worktrees.base_dir / taken.name
        try:
            if not _SHA.fullmatch(commit):  # a name ("HEAD"): the pool keeps shas
                commit = await self.worktrees.resolve_commit(self.root, commit)
            if taken.reused:
                assert taken.commit is not None
                try:
                    await self._repoint(path, taken.commit, commit)
                except (PoolError, LatticeError, OSError) as err:
                    log.warning("run %s: cannot reuse the workspace %s (%s); making a new one",
                                run_id, path, err)
                    self.discarded += 1
                    await self._remove(path)
                    taken.reused = False
                else:
                    taken.commit = commit
                    self.reused += 1
                    return path
            made = await self.worktrees.create(self.root, taken.name, commit)
            taken.commit = commit
            if self._index_version is None and self.size > 0:
                self._index_version = await trio.to_thread.run_sync(index_version, made)
            return made
        except BaseException:
            del self._taken[run_id]
            if taken.reused:  # interrupted while re-pointing: its state is unknown
                await self._remove(path)
            raise

    async def release(self, path: Path) -> None:
        """Clean ``path`` and keep it idle, or remove it (pool off or full of more
        recent ones, the supervisor stopping, or any step of cleaning failed)."""
        run_id = next((r for r, t in self._taken.items() if t.name == path.name), None)
        taken = self._taken.pop(run_id) if run_id is not None else None
        if taken is None or taken.commit is None or self._closed or self.size <= 0:
            await self._remove(path)
            return
        name = taken.name
        try:
            await self._clean(path, taken.commit, keep_ignored=taken.key != SHARED)
            name = await trio.to_thread.run_sync(self._enter_idle, path, taken.commit, taken.key)
        except (PoolError, LatticeError, OSError) as err:
            log.warning("cannot return the workspace %s to the pool (%s); removing it", path, err)
            self.discarded += 1
            await self._remove(self.worktrees.base_dir / name)
            return
        except BaseException:  # cancelled half-way: neither idle nor anybody's, so gone
            await self._remove(self.worktrees.base_dir / name)
            raise
        if self._closed:  # the supervisor began stopping meanwhile
            await self._remove(self.worktrees.base_dir / name)
            return
        self._idle[name] = _Idle(taken.key, taken.commit)
        await self._trim(self.size)

    async def resize(self, size: int) -> None:
        """A new bound (``workers.worktree_pool`` reloaded); the excess goes now."""
        self.size = size
        await self._trim(size)

    async def close(self, *, keep: bool = False) -> None:
        """Remove every idle workspace, or with ``keep`` (``workers.keep_pool_on_stop``)
        leave them on disk, each marked idle, for the next start to check and adopt;
        those of runs still live are removed at their release (``supervisor stop``)."""
        self._closed = True
        if keep:
            self._idle.clear()
        else:
            await self._trim(0)
            while self._pending:  # an adoption cut short by the stop
                await self._remove(self._pending.pop())

    async def adopt(self, paths: list[Path]) -> None:
        """Make ``paths``, the workspaces a stopped (or killed) supervisor left idle and
        recovery spared (:func:`kept_under`), idle ones of this pool, each only once it
        passed every check (module docstring); the others are removed, never reused.
        Least recently returned first, so the bound keeps the most recent.

        Cancellable (the supervisor stops while it adopts): those not checked yet stay
        pending, and :meth:`close` leaves or removes them with the idle ones. The
        supervisor runs it beside its first runs, not before them: at 50,000 files a
        check takes about a second (two walks of the tree: the modes and ``git
        status``), and a run that comes meanwhile gets a fresh workspace, as it would
        with nothing kept."""
        self._pending = list(paths)
        self._pending = await trio.to_thread.run_sync(_by_age, paths)
        common = str((await self.worktrees._repo(self.root)).common)
        fresh_version = self._index_version
        while self._pending and not self._closed:
            path = self._pending[0]
            try:
                commit, key = await trio.to_thread.run_sync(self._check_kept, path, common)
                await self._reset(path, commit)
                if fresh_version is None:
                    fresh_version = await self._fresh_index_version(path)
                await self._check_clean(path, fresh_version, keep_ignored=key != SHARED)
            except (PoolError, LatticeError, OSError) as err:
                log.warning("the workspace %s kept from the last supervisor is not reused (%s); "
                            "removing it", path, err)
                self.discarded += 1
                self._pending.pop(0)
                await self._remove(path)
                continue
            self._pending.pop(0)
            self._index_version = fresh_version
            self._idle[path.name] = _Idle(key, commit)
            self.adopted += 1
            await self._trim(self.size)

    async def _trim(self, size: int) -> None:
        while len(self._idle) > max(size, 0):
            name, _ = self._idle.popitem(last=False)
            await self._remove(self.worktrees.base_dir / name)

    # -- the work --------------------------------------------------------------------------

    async def _remove(self, path: Path) -> None:
        """Remove a workspace (bounded, shielded: a half-cleaned one must never stay)."""
        with trio.move_on_after(CLEANUP_SECONDS) as scope:
            scope.shield = True
            try:
                await self.worktrees.remove(self.root, path)
            except Exception:
                log.exception("could not remove the worktree %s", path)

    async def _git(self, path: Path, *args: str, stdin: bytes | None = None) -> bytes:
        # Bounded: a run can leave a file git waits on for good (a FIFO named
        # .gitignore in a folder that ``git clean`` reads), and the run ends only
        # once its workspace is given back.
        with trio.move_on_after(GIT_SECONDS) as scope:
            done = await run_git(path, *_SAFE, *args, stdin=stdin)
        if scope.cancelled_caught:
            raise PoolError(f"git {args[0]} took more than {GIT_SECONDS:g} s and was stopped")
        if done.returncode != 0:
            raise PoolError(f"git {args[0]} failed: {one_line(done.stderr or done.stdout)}")
        return done.stdout

    async def _reset(self, path: Path, commit: str, *, taking: bool = False) -> None:
        """``path/.git`` anew at ``commit``; ``taking``: a run takes it from the idle ones,
        so its mark stops saying idle, and ready, first (in the same thread hop): until
        the re-point is done its ``.git`` or files are half moved, and a crash then must
        find a workspace whose making was cut short (nothing to keep), not one with a
        run's work in it (``_worktree.unfinished``)."""
        repo = await self.worktrees._repo(self.root)

        def reset() -> None:
            if taking:
                _write_idle(_checked(self.worktrees.base_dir, path), None)
            reset_git_dir(path, repo, commit)

        await trio.to_thread.run_sync(reset)

    async def _clean(self, path: Path, commit: str, *, keep_ignored: bool) -> None:
        """``path`` back to exactly a fresh workspace at ``commit`` (module docstring)."""
        await self._reset(path, commit)
        await self._git(path, "read-tree", "-u", "--reset", commit)
        fresh = self._index_version
        if fresh is not None and await trio.to_thread.run_sync(index_version, path) != fresh:
            await self._git(path, "update-index", "--index-version", str(fresh))
        if await trio.to_thread.run_sync(index_version, path) != fresh:
            raise PoolError(f"its index is not in a fresh one's format (version {fresh})")
        await self._git(path, "clean", "-ffdq" if keep_ignored else "-ffdxq")
        # git keeps no folder's mode and of a file's only its x bit: the rest, as a
        # fresh checkout makes them (a run's chmod 700 on a folder would stay).
        await trio.to_thread.run_sync(fix_modes, path)
        await self._check_clean(path, None, keep_ignored=keep_ignored, modes=False)

    async def _check_clean(
        self, path: Path, index_format: int | None, *, keep_ignored: bool, modes: bool = True
    ) -> None:
        """Raise :class:`PoolError` unless ``path`` is a fresh workspace at its HEAD,
        changing nothing but the index's stat data (``git status`` refreshes it):
        ``index_format`` (when given) its index's version, no hidden index entry, a
        fresh checkout's modes, and nothing for ``git status`` to show."""
        if index_format is not None:
            found = await trio.to_thread.run_sync(index_version, path)
            if found != index_format:
                raise PoolError(f"its index is in format {found}, a fresh one's is {index_format}")
        flags = await self._git(path, "ls-files", "-v", "-z")
        hidden = [e for e in flags.split(b"\0") if e and not e.startswith(b"H ")]
        if hidden:
            raise PoolError(
                f"{len(hidden)} index entries are marked assume-unchanged or skip-worktree"
            )
        wrong = await trio.to_thread.run_sync(partial(fix_modes, path, fix=False)) if modes else 0
        if wrong:
            raise PoolError(f"{wrong} files or folders have modes a fresh checkout does not give")
        status = ["status", "--porcelain", "-z", "-uall"]
        left = await self._git(path, *status, "--ignored=no" if keep_ignored else "--ignored")
        if left:
            shown = one_line(left.replace(b"\0", b" "))
            raise PoolError(f"files are left after cleaning: {shown}")

    async def _repoint(self, path: Path, old: str, new: str) -> None:
        """A clean workspace at ``old`` moved to ``new``, its ``.git`` fresh.

        Only the paths that differ are touched: ``diff-tree`` lists them (it skips
        every subtree the two commits share), then one ``git restore --staged
        --worktree`` from ``new`` writes, replaces and deletes them in the index and the
        files. A two-tree ``read-tree -m -u`` did the same but walked both whole trees
        and rebuilt the index's whole cache tree: on 50,000 files it took about 110 ms
        of CPU against about 60 ms for this pair, and that CPU is what a busy machine
        stretches into the tail of Run -> running (bench/bench_bigrepo.py). Past
        :data:`REPOINT_PATHS` paths, or with a submodule among them, ``read-tree -m
        -u`` again: pathspec matching costs per path, a gitlink wants its folder, and
        where a file becomes a folder (or back) ``restore`` refuses the path that the
        other replaced."""
        await self._reset(path, new, taking=True)
        await self._move(path, old, new)
        await trio.to_thread.run_sync(_mark_ready, path)

    async def _move(self, path: Path, old: str, new: str) -> None:
        """The files and index of ``path`` from commit ``old`` to ``new`` (see
        :meth:`_repoint`)."""
        if old == new:
            return
        raw = await self._git(path, "diff-tree", "-r", "-z", "--raw", "--no-renames", old, new)
        fields = raw.split(b"\0")
        paths = fields[1::2][: len(fields) // 2]
        gitlink = any(b"160000" in meta.split(b" ")[:2] for meta in fields[0::2] if meta)
        if not paths:
            return  # two commits of one tree
        if len(paths) > REPOINT_PATHS or gitlink or _file_and_folder(paths):
            await self._git(path, "read-tree", "-m", "-u", old, new)
            return
        await self._git(
            path,
            "--literal-pathspecs",
            "restore",
            "--quiet",
            f"--source={new}",
            "--staged",
            "--worktree",
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
            stdin=b"\0".join(paths),
        )

    async def _fresh_index_version(self, path: Path) -> int:
        """The index format a fresh checkout of ``path``'s HEAD gets from git's config
        (a scratch index beside its own, removed after)."""
        scratch = path / ".git" / "index.lattice-fresh"
        try:
            await self._git(path, "read-tree", f"--index-output={scratch}", "HEAD")
            found = await trio.to_thread.run_sync(index_version, path, scratch.name)
        finally:
            await trio.to_thread.run_sync(partial(scratch.unlink, missing_ok=True))
        if found is None:
            raise PoolError("git wrote no readable index for a fresh checkout of it")
        return found

    def _check_kept(self, path: Path, common: str) -> tuple[str, str]:
        """The commit and pool key of a workspace kept idle across a stop, read from its
        mark, or :class:`PoolError` when it is not one of this board's pooled ones, not
        marked idle, or its ``.git`` is not a workspace's at that commit. Blocking."""
        base = Path(os.path.realpath(self.worktrees.base_dir))
        path = _checked(self.worktrees.base_dir, path)
        if not path.name.startswith(POOL_PREFIX):
            raise PoolError("its name is not a pooled workspace's")
        try:
            lines = _mark(base, path.name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise PoolError(f"its mark cannot be read: {err}") from None
        fields = {line.partition(" ")[0]: line.partition(" ")[2] for line in lines}
        if fields.get("repo") != common or fields.get("owner") != self.worktrees.owner:
            raise PoolError("its mark names another repository or board")
        if "ready" not in fields:
            raise PoolError("its checkout never finished")
        commit, _, key = fields.get(IDLE, "").partition(" ")
        if not _SHA.fullmatch(commit) or not key:
            raise PoolError("its mark does not say it was left idle")
        head = path / ".git" / "HEAD"
        for item, kind in ((path / ".git", stat.S_ISDIR), (head, stat.S_ISREG)):
            if not kind(os.lstat(item).st_mode):
                raise PoolError(f"{item} is not what a workspace has")
        if head.read_text(encoding="ascii", errors="replace") != commit + "\n":
            raise PoolError(f"its HEAD is no longer {commit}")
        return commit, "" if key == "-" else key

    def _enter_idle(self, path: Path, commit: str, key: str) -> str:
        """Mark a clean workspace idle at ``commit`` in pool ``key``, under a pooled
        name (renamed from its first run's); its name. Blocking."""
        path = _checked(self.worktrees.base_dir, path)
        if not path.name.startswith(POOL_PREFIX):
            path = path.parent / self._rename(path)
        _write_idle(path, (commit, key))
        return path.name

    def _rename(self, path: Path) -> str:
        """Move a run's workspace to a pooled name (its mark first, as at creation:
        a recovery that lists the folder meanwhile still sees whose it is). Blocking."""
        base = _checked(self.worktrees.base_dir, path).parent
        while True:
            name = f"{POOL_PREFIX}{secrets.token_hex(6)}"
            if not os.path.lexists(base / name):
                break
        old_mark = _mark(base, path.name)
        new_mark = _mark(base, name)
        new_mark.write_bytes(old_mark.read_bytes())
        try:
            os.rename(path, base / name)
        except BaseException:
            new_mark.unlink(missing_ok=True)
            raise
        old_mark.unlink(missing_ok=True)
        return name


def reset_git_dir(path: Path, repo: _Repo, commit: str) -> None:
    """Write ``path/.git`` anew as a fresh workspace's at ``commit``, keeping only its
    index (a stat cache: see the module docstring). Blocking. Raises
    :class:`PoolError` when ``.git`` or its index is not what a workspace has (a
    link, a file: the run replaced it)."""
    git_dir = path / ".git"
    index = git_dir / "index"
    for item, kind in ((path, stat.S_ISDIR), (git_dir, stat.S_ISDIR), (index, stat.S_ISREG)):
        try:
            mode = os.lstat(item).st_mode
        except FileNotFoundError:
            raise PoolError(f"{item} is gone") from None
        if not kind(mode):
            raise PoolError(f"{item} is not what a workspace has")
    for entry in os.listdir(git_dir):
        if entry != "index":
            _rmtree(git_dir / entry)
    write_git_dir(path, repo.common, commit, repo.object_format, repo.settings)


def _file_and_folder(paths: list[bytes]) -> bool:
    """Whether one of ``paths`` is a folder of another (a file that became a folder)."""
    named = set(paths)
    for path in paths:
        cut = path.rfind(b"/")
        while cut > 0:
            path = path[:cut]
            if path in named:
                return True
            cut = path.rfind(b"/")
    return False


def _write_idle(path: Path, idle: tuple[str, str] | None) -> None:
    """Say in ``path``'s mark that it is idle at ``(commit, pool key)``, or (None) that a
    run takes it (neither idle nor ready). The mark is replaced whole (written beside,
    then renamed): a crash leaves the old or the new one, never one without its
    repository; the one beside is named as the mark of a folder that does not exist,
    so that if a crash leaves it, the next cleanup of leftovers removes it as such.
    Blocking."""
    mark = _mark(path.parent, path.name)
    old = mark.read_text(encoding="utf-8").splitlines()
    # Taken (None): neither idle nor ready until the re-point is done (see _reset).
    dropped = (IDLE,) if idle is not None else (IDLE, "ready")
    lines = [line for line in old if line.partition(" ")[0] not in dropped]
    if idle is None and len(lines) == len(old):
        return  # not marked idle: nothing to write
    if idle is not None:
        commit, key = idle
        lines.append(f"{IDLE} {commit} {key or '-'}")
    scratch = _mark(path.parent, f"{path.name}.new")
    scratch.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.replace(scratch, mark)


def _by_age(paths: list[Path]) -> list[Path]:
    """``paths`` by the time their marks were last written, oldest first (a missing mark
    first: its check fails anyway). Blocking."""

    def written(path: Path) -> float:
        try:
            return os.stat(_mark(path.parent, path.name)).st_mtime
        except OSError:
            return 0.0

    return sorted(paths, key=written)


def index_version(path: Path, name: str = "index") -> int | None:
    """The format version in ``path/.git/<name>``'s header (the index), None if
    unreadable. Blocking."""
    try:
        with open(path / ".git" / name, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return int.from_bytes(head[4:8], "big") if head[:4] == b"DIRC" and len(head) == 8 else None


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, for every
    thread at once); git's checkout applies it to the modes it creates."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def fix_modes(path: Path, *, fix: bool = True) -> int:
    """Give every folder and regular file under ``path`` (but ``.git``) the mode a
    fresh checkout gives: ``0777``/``0666`` (x bits kept for files) less the umask; how
    many had another (``fix`` False: only counted). Blocking; one ``lstat`` per entry,
    a ``chmod`` only where a run changed one."""
    wrong = 0
    mask = _umask()
    want_dir = 0o777 & ~mask
    stack = [os.fspath(path)]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_symlink():
                    continue
                if entry.is_dir():
                    if folder == os.fspath(path) and entry.name == ".git":
                        continue
                    if stat.S_IMODE(entry.stat().st_mode) != want_dir:
                        wrong += 1
                        if fix:
                            os.chmod(entry.path, want_dir)
                    stack.append(entry.path)
                elif entry.is_file():
                    mode = stat.S_IMODE(entry.stat().st_mode)
                    want = (0o777 if mode & stat.S_IXUSR else 0o666) & ~mask
                    if mode != want:
                        wrong += 1
                        if fix:
                            os.chmod(entry.path, want)
    return wrong


def pooled_under(base_dir: Path, root: Path, owner: Path | None = None) -> list[Path]:
    """The pooled workspaces of the repository ``root`` is in under ``base_dir`` (of
    the board ``owner``), for ``doctor``: idle, or taken by a live run. Blocking; file
    reads and one git process. With no supervisor running, they are left over from a
    crash: its next start (or ``doctor --fix``) removes them."""
    try:
        repo = _repo_blocking(root)
    except LatticeError:
        return []
    owned = os.path.realpath(owner) if owner is not None else None
    return [p for p in _ours_under(base_dir, repo.common, owned) if p.name.startswith(POOL_PREFIX)]


def kept_under(
    base_dir: Path, root: Path, owner: Path, in_use: Iterable[os.PathLike[str] | str] = ()
) -> list[Path]:
    """The pooled workspaces of the board ``owner`` under ``base_dir`` whose marks say
    they were left idle, but those ``in_use`` names (the worktrees of runs still open:
    a run that took one may have worked in it): what recovery spares with
    ``workers.keep_pool_on_stop`` for :meth:`WorkspacePool.adopt` to check. Blocking."""
    busy = {os.path.realpath(p) for p in in_use}
    found = []
    for path in pooled_under(base_dir, root, owner):
        if os.path.realpath(path) in busy:
            continue
        try:
            lines = _mark(path.parent, path.name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        if any(line.partition(" ")[0] == IDLE for line in lines):
            found.append(path)
    return found
