"""Detached git worktrees for runs, created and removed without racing each other.

git (2.39 here) takes no lock around its worktree metadata: ``worktree add`` and
``worktree remove`` both walk ``.git/worktrees/`` while others write into it, and in a
stress test 1-4% of concurrent adds and removes failed (``failed to read
.git/worktrees/<other>/commondir``), leaving registrations that ``prune`` did not
clear. So every step that touches that metadata runs under one :class:`trio.Lock` per
repository, and only those: ``add --no-checkout`` is quick, the checkout that writes
the files runs outside the lock (``read-tree -u``, which also runs no hooks), and so
does deleting the files of a worktree before ``worktree remove`` drops what is left.

A worktree never lives inside the project's working tree (the repository would see
it as untracked files, and a recursive tool would walk into it). Cleanup deletes the
worktree's folder and its own ``.git/worktrees/<id>`` entry, never anything else in
the shared ``.git``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import trio

from lattice_workers.actors._git import one_line, run_git, run_git_blocking
from lattice_workers.actors._revisions import RevisionReader
from lattice_workers.errors import Code, LatticeError

log = logging.getLogger("lattice_workers.supervisor.recovery")

#: Names of worktree folders (run ids and the like): no separators, no leading dot.
WORKTREE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: How long a failed create may spend removing what it made, even when cancelled.
CLEANUP_SECONDS = 30
#: The file, in a worktree's own folder of the repository's git directory
#: (``<common>/worktrees/<name>/``, where git ignores what it does not know), that
#: names the board whose supervisor made the worktree: two boards of one repository
#: may share a worktree folder, and each must clean up only its own.
OWNER_FILE = "lattice-board"


class _Repo(NamedTuple):
    top: Path  # the main working tree
    common: Path  # the shared git directory (lock key; holds worktrees/)


class Worktrees:
    """Worktrees of runs, in folders named after the runs under ``base_dir``.

    Use one instance per supervisor: the per-repository locks live in it. ``owner``
    (the board's ``.lattice`` folder) is written beside each worktree it creates, and
    :meth:`existing` then leaves out worktrees another owner made (see
    :data:`OWNER_FILE`); without it, every worktree of the repository counts.
    """

    def __init__(self, base_dir: Path, *, owner: Path | None = None) -> None:
        self.base_dir = _absolute(base_dir)
        # Real path: a doctor started through a symlink names the same board.
        self.owner = os.path.realpath(owner) if owner is not None else None
        self._repos: dict[str, _Repo] = {}
        self._locks: dict[Path, trio.Lock] = {}
        self._busy: set[str] = set()  # names being created
        self._merge_bases: dict[tuple[Path, str, str], str | None] = {}
        #: Revision names to commits; :meth:`serve` keeps its git processes.
        self.revisions = RevisionReader()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the long-lived git processes until cancelled (see :class:`RevisionReader`)."""
        await self.revisions.serve(task_status=task_status)

    @staticmethod
    def default_base_dir(root: Path) -> Path:
        """``$LATTICE_WORKTREE_DIR``, else a folder per project in the user's cache.

        The folder name carries a hash of the root's real path, so two projects with
        the same folder name never share worktrees.
        """
        configured = os.environ.get("LATTICE_WORKTREE_DIR")
        if configured:
            return Path(os.path.abspath(os.path.expanduser(configured)))
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        real = os.path.realpath(root)
        digest = hashlib.sha256(real.encode()).hexdigest()[:8]
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(real))[:40] or "root"
        return Path(cache, "lattice-workers", "worktrees", f"{label}-{digest}")

    # -- queries ----------------------------------------------------------------------

    async def repo_toplevel(self, root: Path) -> Path:
        """The main working tree of the repository ``root`` is in."""
        return (await self._repo(root)).top

    async def resolve_commit(self, root: Path, rev: str | None) -> str:
        """The full sha of the commit ``rev`` names (``HEAD`` when None or empty)."""
        rev = rev or "HEAD"
        _check_rev(rev)
        repo = await self._repo(root)
        done = await run_git(repo.top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        if done.returncode == 0:
            return done.stdout.decode().strip()
        if rev == "HEAD":
            raise LatticeError(
                Code.NOT_FOUND,
                f"the repository at {repo.top} has no commits yet; make a first commit, "
                "or name a revision",
            )
        raise LatticeError(
            Code.NOT_FOUND,
            f"revision {rev!r} is not a commit in the repository at {repo.top}; name a "
            "branch, tag or commit that exists",
        )

    async def resolve_many(self, root: Path, revs: list[str]) -> list[str | None]:
        """The commit sha each of ``revs`` names (None where none).

        A Run request needs HEAD (or its revision) and the base ref; the repository's
        long-lived ``cat-file`` answers both (see :mod:`lattice_workers.actors._revisions`).
        """
        for rev in revs:
            _check_rev(rev)
        repo = await self._repo(root)
        return await self.revisions.commits(repo.top, revs)

    async def merge_base(self, root: Path, base: str, commit: str) -> str | None:
        """The best common ancestor of ``base`` and ``commit``, None when there is none."""
        _check_rev(base)
        _check_rev(commit)
        repo = await self._repo(root)
        key = (repo.top, base, commit)
        if key in self._merge_bases:  # two commit shas always have the same merge base
            return self._merge_bases[key]
        done = await run_git(repo.top, "merge-base", base, commit)
        if done.returncode == 0:
            found = done.stdout.decode().strip() or None
            if _SHA.fullmatch(base) and _SHA.fullmatch(commit):
                if len(self._merge_bases) > 4096:
                    self._merge_bases.clear()
                self._merge_bases[key] = found
            return found
        if done.returncode == 1 and not done.stderr.strip():
            return None
        raise LatticeError(
            Code.NOT_FOUND,
            f"cannot find the merge base of {base!r} and {commit!r} in {repo.top}: "
            f"{one_line(done.stderr)}; name revisions that exist",
        )

    async def existing(self, root: Path) -> list[Path]:
        """This repository's worktrees under ``base_dir``: what crash recovery removes.

        A folder counts when git has it registered or when its ``.git`` file points into
        this repository, so that a ``LATTICE_WORKTREE_DIR`` shared by several projects
        never hands over another project's worktrees; and, with an ``owner``, when no
        other board's name is written beside it (one without a name, from a version
        before the names or a create cut short, still counts: leaking it would be worse).
        """
        repo = await self._repo(root)
        async with self._lock(repo):  # the listing reads the metadata others write
            done = await run_git(repo.top, "worktree", "list", "--porcelain", "-z")
        listed = [
            Path(item[len("worktree ") :])
            for item in done.stdout.decode(errors="replace").split("\0")
            if item.startswith("worktree ")
        ]
        return await trio.to_thread.run_sync(
            _ours_under, self.base_dir, repo.common, listed, self.owner
        )

    # -- changes ----------------------------------------------------------------------

    async def create(self, root: Path, name: str, commit: str) -> Path:
        """A detached worktree at ``commit`` in ``base_dir/name``; nothing is left on failure."""
        if not WORKTREE_NAME.match(name):
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"worktree name {name[:80]!r} is not allowed; use letters, digits, '_', '.' "
                "and '-', starting with a letter or digit",
            )
        _check_rev(commit)
        repo = await self._repo(root)
        # Claimed with no checkpoint after the check: a second create of the same name
        # must not get as far as cleaning up the first one's folder.
        if name in self._busy:
            raise LatticeError(
                Code.CONFLICT, f"the worktree {self.base_dir / name} is already being created"
            )
        self._busy.add(name)
        try:
            # Nothing of ours yet; one thread hop for the folder's checks (a run's fixed cost).
            path = await trio.to_thread.run_sync(_new_folder, self.base_dir, name, repo)
            try:
                await self._add(repo, path, commit)
            except BaseException:
                with trio.move_on_after(CLEANUP_SECONDS) as scope:
                    scope.shield = True
                    await self._discard(repo, path)
                raise
        finally:
            self._busy.discard(name)
        return path

    async def remove(self, root: Path, path: Path) -> None:
        """Remove the worktree ``path``: its files and its registration, nothing else.

        Idempotent: a folder that is gone, half created or never registered is fine.
        """
        path = _absolute(path)
        # Checked and emptied (but for .git, so that git still knows it) in one hop.
        path = await trio.to_thread.run_sync(_checked_and_cleared, self.base_dir, path)
        try:
            repo = await self._repo(root)
        except LatticeError:
            # The repository is gone (or was never one): only the files are left.
            await trio.to_thread.run_sync(_rmtree, path)
            return
        await self._discard(repo, path, cleared=True)

    async def prune(self, root: Path) -> None:
        """``git worktree prune``: forget registrations whose folders are gone."""
        repo = await self._repo(root)
        async with self._lock(repo):
            done = await run_git(repo.top, "worktree", "prune")
        if done.returncode != 0:
            raise LatticeError(
                Code.INTERNAL,
                f"git worktree prune failed in {repo.top}: {one_line(done.stderr)}",
            )

    # -- internals ----------------------------------------------------------------------

    async def _add(self, repo: _Repo, path: Path, commit: str) -> None:
        async with self._lock(repo):
            done = await run_git(
                repo.top, "worktree", "add", "--no-checkout", "--detach", str(path), commit
            )
        if done.returncode != 0:
            raise LatticeError(
                Code.INTERNAL,
                f"cannot create a worktree at {path} for commit {commit}: {one_line(done.stderr)}",
                details={"stage": "add"},
            )
        if self.owner is not None:
            # Before the checkout, which may take long: another board's recovery that
            # lists the worktree meanwhile must already see that it is not its own.
            await trio.to_thread.run_sync(_write_owner, path, self.owner)
        done = await run_git(path, "read-tree", "-u", "--reset", "HEAD")
        if done.returncode != 0:
            raise LatticeError(
                Code.INTERNAL,
                f"cannot check out commit {commit} into the worktree {path}: "
                f"{one_line(done.stderr)}",
                details={"stage": "checkout"},
            )

    async def _discard(self, repo: _Repo, path: Path, *, cleared: bool = False) -> None:
        """Delete ``path`` and its registration, whatever state they are in."""
        # The slow part, the files, outside the lock; keep .git so git still knows it.
        if not cleared:
            await trio.to_thread.run_sync(_clear_except_git, path)
        async with self._lock(repo):
            done = await run_git(repo.top, "worktree", "remove", "--force", "--force", str(path))
            if done.returncode != 0 or await trio.to_thread.run_sync(os.path.lexists, path):
                await trio.to_thread.run_sync(_forget, repo.common, path)

    def _lock(self, repo: _Repo) -> trio.Lock:
        lock = self._locks.get(repo.common)
        if lock is None:
            lock = self._locks[repo.common] = trio.Lock()
        return lock

    async def _repo(self, root: Path) -> _Repo:
        key = str(_absolute(root))
        found = self._repos.get(key)
        if found is not None:
            return found
        if not await trio.to_thread.run_sync(os.path.isdir, key):
            raise LatticeError(Code.NOT_FOUND, f"the project root {key} is not a folder")
        done = await run_git(key, "rev-parse", "--show-toplevel", "--git-common-dir")
        lines = done.stdout.decode().splitlines()
        if done.returncode != 0 or len(lines) != 2:
            raise LatticeError(
                Code.NOT_FOUND,
                f"{key} is not inside a git working tree ({one_line(done.stderr)}); run "
                '`git init` there, or set "worktree": false in the worker definition',
            )

        def real(p: str) -> Path:
            return Path(os.path.realpath(os.path.join(key, p)))

        top, common = await trio.to_thread.run_sync(lambda: (real(lines[0]), real(lines[1])))
        found = self._repos[key] = _Repo(top, common)
        return found


def _absolute(path: os.PathLike[str] | str) -> Path:
    """``path`` made absolute without touching the file system (beyond the cwd)."""
    return Path(os.path.abspath(path))


_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _check_rev(rev: str) -> None:
    """Refuse what git would read as an option or what cannot be a revision at all."""
    if rev.startswith("-") or len(rev) > 256 or any(c in rev for c in "\x00\n\r"):
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"{rev[:80]!r} is not a revision; name a branch, tag or commit sha",
        )


# -- leftovers, blocking: the settle path of recovery and doctor --fix ---------------------


def remove_leftovers(
    base_dir: Path, root: Path, known: Iterable[Path] = (), *, owner: Path | None = None
) -> list[Path]:
    """Remove ``known`` and every worktree of ours under ``base_dir``, then prune; the
    paths removed. Blocking: recovery calls it from a thread, ``doctor --fix`` directly.

    Only while no run is live (recovery before the socket serves, ``doctor --fix``
    under the supervisor's lock): then every worktree of ours is left over, and no
    create or remove of a run can race these git commands, which is why they take
    none of :class:`Worktrees`' locks. ``owner`` leaves out what another board made
    (see :meth:`Worktrees.existing`). A project outside git has none under the base
    folder (``known`` ones are still removed). A path that cannot be removed (say,
    under a base folder of an earlier configuration) is logged and the others are
    still removed.
    """
    base = _absolute(base_dir)
    found = [_absolute(path) for path in known]
    repo: _Repo | None = None
    try:
        repo = _repo_blocking(root)
        done = run_git_blocking(repo.top, "worktree", "list", "--porcelain", "-z")
        listed = [
            Path(item[len("worktree ") :])
            for item in done.stdout.decode(errors="replace").split("\0")
            if item.startswith("worktree ")
        ]
        owner_name = os.path.realpath(owner) if owner is not None else None
        found += _ours_under(base, repo.common, listed, owner_name)
    except LatticeError as exc:  # not a git repository
        log.info("worktree listing skipped: %s", exc.message)
    except OSError as exc:
        log.warning("could not list the worktrees of %s: %s", root, exc)
    removed = []
    for path in dict.fromkeys(found):
        try:
            cleared = _checked_and_cleared(base, path)
            if repo is None:
                _rmtree(cleared)
            else:
                done = run_git_blocking(
                    repo.top, "worktree", "remove", "--force", "--force", str(cleared)
                )
                if done.returncode != 0 or os.path.lexists(cleared):
                    _forget(repo.common, cleared)
            removed.append(path)
        except LatticeError as exc:
            log.warning("could not remove the worktree %s: %s", path, exc.message)
        except OSError as exc:  # files we may not delete (a worker ran a container, say)
            log.warning("could not remove the worktree %s: %s", path, exc)
    if repo is not None:
        done = run_git_blocking(repo.top, "worktree", "prune")
        if done.returncode != 0:
            log.info("git worktree prune skipped: %s", one_line(done.stderr))
    return removed


def _repo_blocking(root: Path) -> _Repo:
    """:meth:`Worktrees._repo`, blocking and uncached (the settle path asks once)."""
    key = str(_absolute(root))
    if not os.path.isdir(key):
        raise LatticeError(Code.NOT_FOUND, f"the project root {key} is not a folder")
    done = run_git_blocking(key, "rev-parse", "--show-toplevel", "--git-common-dir")
    lines = done.stdout.decode().splitlines()
    if done.returncode != 0 or len(lines) != 2:
        raise LatticeError(
            Code.NOT_FOUND, f"{key} is not inside a git working tree ({one_line(done.stderr)})"
        )
    top, common = (Path(os.path.realpath(os.path.join(key, p))) for p in lines)
    return _Repo(top, common)


# -- blocking file work, run in threads -----------------------------------------------------


def _ours_under(
    base_dir: Path, common: Path, listed: list[Path], owner: str | None = None
) -> list[Path]:
    base = Path(os.path.realpath(base_dir))
    found = {path for path in listed if path.parent == base and WORKTREE_NAME.match(path.name)}
    try:
        entries = [e for e in os.scandir(base) if WORKTREE_NAME.match(e.name)]
    except (FileNotFoundError, NotADirectoryError):
        entries = []
    for entry in entries:
        admin = _admin_dir(Path(entry.path))
        if admin is not None and common in admin.parents:
            found.add(Path(entry.path))
    if owner is not None:
        found = {path for path in found if _owner_of(path, common) in (None, owner)}
    return sorted(found)


def _admin_dir(path: Path, common: Path | None = None) -> Path | None:
    """The worktree's own folder in the git directory, from its ``.git`` file; or, when
    a worker deleted that file, the folder of ``common/worktrees`` whose ``gitdir``
    names ``path`` (git names it after the worktree's folder, plus a number if taken)."""
    try:
        text = Path(path, ".git").read_text()
    except OSError:
        return _admin_dir_naming(path, common) if common is not None else None
    return Path(os.path.realpath(os.path.join(path, text.removeprefix("gitdir:").strip())))


def _admin_dir_naming(path: Path, common: Path) -> Path | None:
    real = os.path.realpath(path)
    try:
        candidates = [
            e.path for e in os.scandir(common / "worktrees") if e.name.startswith(path.name)
        ]
    except OSError:
        return None
    for candidate in candidates:
        try:
            gitfile = Path(candidate, "gitdir").read_text().strip()
        except OSError:
            continue
        if os.path.realpath(os.path.dirname(os.path.join(candidate, gitfile))) == real:
            return Path(candidate)
    return None


def _write_owner(path: Path, owner: str) -> None:
    admin = _admin_dir(path)
    try:
        if admin is None:
            raise OSError(f"{path}/.git cannot be read after git created it")
        (admin / OWNER_FILE).write_text(owner + "\n", encoding="utf-8")
    except OSError as err:
        raise LatticeError(
            Code.INTERNAL,
            f"cannot record which board owns the worktree {path}: {err}",
            details={"stage": "owner"},
        ) from None


def _owner_of(path: Path, common: Path) -> str | None:
    """The board named beside the worktree at ``path``, None when none is."""
    admin = _admin_dir(path, common)
    try:
        return (admin / OWNER_FILE).read_text(encoding="utf-8").strip() if admin else None
    except (OSError, UnicodeDecodeError):
        return None


def _new_folder(base_dir: Path, name: str, repo: _Repo) -> Path:
    """``base_dir/name`` for a new worktree, its parent made: refused inside the
    repository, or when something is already there."""
    base = Path(os.path.realpath(base_dir))
    for inside in (repo.top, repo.common):
        if base == inside or inside in base.parents:
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"the worktree folder {base} is inside the repository at {inside}; "
                "worktrees must live outside the project (set LATTICE_WORKTREE_DIR to a "
                "folder elsewhere)",
            )
    path = base / name
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LatticeError(
            Code.INTERNAL,
            f"cannot create the worktree folder {base}: {err.strerror}; fix it or set "
            "LATTICE_WORKTREE_DIR to a folder that can be created",
            details={"stage": "folder"},
        ) from None
    if os.path.lexists(path):
        raise LatticeError(
            Code.CONFLICT,
            f"the worktree folder {path} already exists; remove it, or let the supervisor's "
            "recovery remove it, and retry",
            details={"stage": "folder"},
        )
    return path


def _checked_and_cleared(base_dir: Path, path: Path) -> Path:
    """``path`` as a worktree folder under ``base_dir`` (real), emptied but for ``.git``."""
    base = Path(os.path.realpath(base_dir))
    if path.parent not in (base_dir, base) or not WORKTREE_NAME.match(path.name):
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"{path} is not a worktree folder under {base_dir}; refusing to remove it",
        )
    path = base / path.name
    _clear_except_git(path)
    return path


def _clear_except_git(path: Path) -> None:
    if os.path.islink(path):  # put there by a worker: never follow it out of the folder
        os.unlink(path)
        return
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name != ".git":
            _rmtree(Path(entry.path))


def _forget(common: Path, path: Path) -> None:
    """Delete the ``worktrees/<id>`` entries that point at ``path``, then ``path``.

    An entry's ``gitdir`` is absolute, or relative to the entry (git >= 2.48 with
    ``worktree.useRelativePaths``); ``os.path.join`` reads both.
    """
    target = os.path.realpath(os.path.join(path, ".git"))
    admin = common / "worktrees"
    try:
        entries = list(os.scandir(admin))
    except (FileNotFoundError, NotADirectoryError):
        entries = []
    for entry in entries:
        try:
            gitdir = Path(entry.path, "gitdir").read_text().strip()
        except OSError:
            continue
        if os.path.realpath(os.path.join(entry.path, gitdir)) == target:
            _rmtree(Path(entry.path))
    _rmtree(path)


def _rmtree(path: Path) -> None:
    """Delete a file or folder tree, making read-only folders writable on the way."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return

    def retry(func: Callable[..., Any], failed: str, _exc: object) -> None:
        if not os.path.lexists(failed):
            return
        os.chmod(os.path.dirname(failed), stat.S_IRWXU)
        if os.path.isdir(failed) and not os.path.islink(failed):
            os.chmod(failed, stat.S_IRWXU)
        func(failed)

    handler: dict[str, Any] = (
        {"onexc": retry} if sys.version_info >= (3, 12) else {"onerror": retry}
    )
    shutil.rmtree(path, **handler)
