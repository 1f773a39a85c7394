"""Workspaces for runs: a private repository per run that borrows the project's objects.

The module and class keep the name "worktree" (the lifecycle and the board call a
run's folder its worktree), but since issue 19 a run's workspace is no ``git
worktree``. A worktree shares its repository's refs, stash, config and hooks: a
worker that ran ``git branch``, ``git stash`` or ``git config core.hooksPath`` in it
changed the user's repository (measured). A workspace is instead a repository of its
own, made by hand in ``base_dir/<name>/.git``: its ``HEAD`` detached at the run's
commit, an ``objects/info/alternates`` naming the project's object store (no object
copied: git reads the project's objects, and writes new ones in the workspace), a copy
of the project's branches and tags, no hooks, a config of a few lines (the project's
``user.name``/``user.email`` copied, so that a worker's commit has the identity it had
in a worktree; in a partial clone, the promisor remote too, so that git fetches the
files the project never downloaded, as a worktree would). Whatever
the worker does with git stays in that folder; its work reaches the project only as
``refs/lattice/runs/<run>/<attempt>``, fetched by :mod:`._keep` with hooks off.

Cost, measured (bench/worktree_cost.py; README "Performance"): writing the ``.git`` by
hand is a few file writes, cheaper than ``git worktree add`` (one git process, a lock
and a registration in the project's ``.git/worktrees``); both check out the commit with
``read-tree -u`` (no hooks), which dominates on a large tree. ``git init`` plus
``clone --shared`` were rejected: they copy hook samples or refs, and cost a process.
Removal is file deletion only: nothing is registered in the project's repository.

Which workspaces are whose: beside each one, ``base_dir/.<name>.lattice-board``
names the project's git directory and the board whose supervisor made it (two boards
of one repository may share a workspace folder, and each must clean up only its own).
It is written before the folder and deleted after it, and lives outside the folder,
so a worker that deletes its ``.git`` cannot make its workspace anybody's. Worktrees
made by an earlier version (a ``.git`` file, a registration in the project's
``.git/worktrees``) are still found and removed, registration and all.

Known limit: the project's ``git gc`` does not see a workspace, so a run started from
a commit that no ref of the project reaches could lose objects to a prune of
unreachable objects older than ``gc.pruneExpire`` (two weeks by default) while it runs.

A workspace never lives inside the project's working tree (the repository would see
it as untracked files, and a recursive tool would walk into it).
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

from lattice_workers.actors._files import read_regular
from lattice_workers.actors._git import one_line, run_git, run_git_blocking
from lattice_workers.actors._revisions import RevisionReader
from lattice_workers.errors import Code, LatticeError

log = logging.getLogger("lattice_workers.supervisor.recovery")

#: Names of worktree folders (run ids and the like): no separators, no leading dot.
WORKTREE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: How long a failed create may spend removing what it made, even when cancelled.
CLEANUP_SECONDS = 30
#: The suffix of the mark beside each workspace, ``base_dir/.<name>.lattice-board``,
#: that names the project's git directory and the board whose supervisor made it; in a
#: worktree of an earlier version, the file in its folder of ``<common>/worktrees/``.
OWNER_FILE = "lattice-board"
#: The project's ``user.*`` settings a workspace's config repeats.
IDENTITY_KEYS = ("user.name", "user.email")
#: The remote's settings a workspace of a partial clone repeats (its promisor remote).
PROMISOR_KEYS = ("url", "promisor", "partialclonefilter")


class _Repo(NamedTuple):
    top: Path  # the main working tree
    common: Path  # the shared git directory (holds objects/, and worktrees/ of old)
    object_format: str = "sha1"
    #: What the workspace's config repeats of the project's: its own user.name/email,
    #: and in a partial clone its promisor remote (see :func:`_settings`).
    settings: tuple[tuple[str, str], ...] = ()


class Worktrees:
    """Workspaces of runs, in folders named after the runs under ``base_dir``.

    Use one instance per supervisor (it caches what it learnt of each repository).
    ``owner`` (the board's ``.lattice`` folder) is written in the mark beside each
    workspace it creates, and :meth:`existing` then leaves out workspaces another
    owner made (see :data:`OWNER_FILE`); without it, every workspace of the
    repository counts.
    """

    def __init__(self, base_dir: Path, *, owner: Path | None = None) -> None:
        self.base_dir = _absolute(base_dir)
        # Real path: a doctor started through a symlink names the same board.
        self.owner = os.path.realpath(owner) if owner is not None else None
        self._repos: dict[str, _Repo] = {}
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
        """This repository's workspaces under ``base_dir``: what crash recovery removes.

        A folder counts when its mark names this repository, or (its mark lost) when
        its ``.git`` borrows this repository's objects or is a worktree of it; a mark
        whose folder is gone counts too, so that removing it removes the mark. With an
        ``owner``, those another board's name is written beside are left out (one
        without a name, from a version before the names, still counts: leaking it
        would be worse). File reads only: no git process.
        """
        repo = await self._repo(root)
        return await trio.to_thread.run_sync(_ours_under, self.base_dir, repo.common, self.owner)

    # -- changes ----------------------------------------------------------------------

    async def create(self, root: Path, name: str, commit: str) -> Path:
        """A workspace at ``commit`` (detached) in ``base_dir/name``; nothing is left on
        failure."""
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
            if not _SHA.fullmatch(commit):  # a name (the registry passes shas)
                commit = await self.resolve_commit(repo.top, commit)
            # The mark, the folder and its .git in one thread hop (a run's fixed cost).
            path = await trio.to_thread.run_sync(
                _new_workspace, self.base_dir, name, repo, commit, self.owner
            )
            try:
                # The files, as the index says, with no hook (git runs none for read-tree).
                done = await run_git(path, "read-tree", "-u", "--reset", "HEAD")
                if done.returncode != 0:
                    raise LatticeError(
                        Code.INTERNAL,
                        f"cannot create a worktree at {path} for commit {commit}: "
                        f"{one_line(done.stderr)}",
                        details={"stage": "checkout"},
                    )
                await trio.to_thread.run_sync(_mark_ready, path)
            except BaseException:
                with trio.move_on_after(CLEANUP_SECONDS) as scope:
                    scope.shield = True
                    await trio.to_thread.run_sync(
                        _remove_blocking, self.base_dir, repo.common, path
                    )
                raise
        finally:
            self._busy.discard(name)
        return path

    async def remove(self, root: Path, path: Path) -> None:
        """Remove the workspace ``path``: its files and its mark (and, for a worktree of
        an earlier version, its registration), nothing else.

        Idempotent: a folder that is gone, half created or never registered is fine.
        """
        path = _absolute(path)
        _checked(self.base_dir, path)  # before anything else: refused means untouched
        try:
            common: Path | None = (await self._repo(root)).common
        except LatticeError:
            common = None  # the repository is gone (or was never one): only the files
        await trio.to_thread.run_sync(_remove_blocking, self.base_dir, common, path)

    async def prune(self, root: Path) -> None:
        """``git worktree prune``: forget registrations whose folders are gone (left by
        an earlier version, or by the user's own worktrees)."""
        repo = await self._repo(root)
        done = await run_git(repo.top, "worktree", "prune")
        if done.returncode != 0:
            raise LatticeError(
                Code.INTERNAL,
                f"git worktree prune failed in {repo.top}: {one_line(done.stderr)}",
            )

    # -- internals ----------------------------------------------------------------------

    async def _repo(self, root: Path) -> _Repo:
        key = str(_absolute(root))
        found = self._repos.get(key)
        if found is not None:
            return found
        if not await trio.to_thread.run_sync(os.path.isdir, key):
            raise LatticeError(Code.NOT_FOUND, f"the project root {key} is not a folder")
        done = await run_git(key, *_REPO_QUERY)
        lines = done.stdout.decode().splitlines()
        if done.returncode != 0 or len(lines) != 3:
            raise LatticeError(
                Code.NOT_FOUND,
                f"{key} is not inside a git working tree ({one_line(done.stderr)}); run "
                '`git init` there, or set "worktree": false in the worker definition',
            )
        settings = await run_git(key, *_SETTINGS_QUERY)

        def real(p: str) -> Path:
            return Path(os.path.realpath(os.path.join(key, p)))

        top, common = await trio.to_thread.run_sync(lambda: (real(lines[0]), real(lines[1])))
        found = self._repos[key] = _Repo(top, common, lines[2], _settings(settings.stdout))
        return found


_REPO_QUERY = ("rev-parse", "--show-toplevel", "--git-common-dir", "--show-object-format")
_SETTINGS_QUERY = (
    "config", "--local", "-z", "--get-regexp",
    r"^(user\.(name|email)|extensions\.partialclone|remote\..+\.(url|promisor|partialclonefilter))$",
)


def _settings(output: bytes) -> tuple[tuple[str, str], ...]:
    """``config -z --get-regexp`` output: the (key, value) pairs a workspace repeats,
    the last of each key. A remote's keys only for a promisor remote of a partial
    clone (``remote.<name>.promisor``, or named by ``extensions.partialclone``): without
    it, a workspace at a commit whose files the project never downloaded could not
    check it out; with it, git fetches them into the workspace, from the project's own
    remote."""
    found: dict[str, str] = {}
    for entry in output.decode(errors="replace").split("\0"):
        key, _, value = entry.partition("\n")
        if key and "\n" not in value:
            found[key] = value
    kept = {k: v for k, v in found.items() if k in IDENTITY_KEYS or k.startswith("extensions.")}
    promisors = {found.get("extensions.partialclone")} | {
        key[len("remote.") : -len(".promisor")]
        for key, value in found.items()
        if key.startswith("remote.") and key.endswith(".promisor") and value.lower() == "true"
    }
    for remote in sorted(name for name in promisors if name):
        for name in PROMISOR_KEYS:
            key = f"remote.{remote}.{name}"
            if key in found:
                kept[key] = found[key]
    return tuple(kept.items())


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
    base_dir: Path,
    root: Path,
    known: Iterable[Path] = (),
    *,
    owner: Path | None = None,
    spare: Iterable[Path] = (),
) -> list[Path]:
    """Remove ``known`` and every workspace of ours under ``base_dir`` but ``spare``
    (idle pooled ones kept for the next start: ``workers.keep_pool_on_stop``; one that
    is also ``known`` still goes); the paths removed. Blocking: recovery calls it from
    a thread, ``doctor --fix`` directly.

    Only while no run is live (recovery before the socket serves, ``doctor --fix``
    under the supervisor's lock): then every workspace of ours is left over. ``owner``
    leaves out what another board made (see :meth:`Worktrees.existing`). A project
    outside git has none under the base folder (``known`` ones are still removed). A
    path that cannot be removed (say, under a base folder of an earlier
    configuration) is logged and the others are still removed. Registrations of
    worktrees of an earlier version whose folders are gone are pruned.
    """
    base = _absolute(base_dir)
    found = [_absolute(path) for path in known]
    repo: _Repo | None = None
    try:
        repo = _repo_blocking(root)
        owner_name = os.path.realpath(owner) if owner is not None else None
        found += _ours_under(base, repo.common, owner_name)
    except LatticeError as exc:  # not a git repository
        log.info("worktree listing skipped: %s", exc.message)
    except OSError as exc:
        log.warning("could not list the worktrees of %s: %s", root, exc)
    known_real = {os.path.realpath(path) for path in known}
    spared = {os.path.realpath(path) for path in spare} - known_real
    removed = []
    for path in dict.fromkeys(found):
        if os.path.realpath(path) in spared:
            continue
        try:
            _checked(base, path)
            _remove_blocking(base, repo.common if repo else None, path)
            removed.append(path)
        except LatticeError as exc:
            log.warning("could not remove the worktree %s: %s", path, exc.message)
        except OSError as exc:  # files we may not delete (a worker ran a container, say)
            log.warning("could not remove the worktree %s: %s", path, exc)
    if repo is not None and os.path.isdir(repo.common / "worktrees"):
        done = run_git_blocking(repo.top, "worktree", "prune")
        if done.returncode != 0:
            log.info("git worktree prune skipped: %s", one_line(done.stderr))
    return removed


def _repo_blocking(root: Path) -> _Repo:
    """:meth:`Worktrees._repo`, blocking and uncached (the settle path asks once), the
    settings left out (it makes no workspace)."""
    key = str(_absolute(root))
    if not os.path.isdir(key):
        raise LatticeError(Code.NOT_FOUND, f"the project root {key} is not a folder")
    done = run_git_blocking(key, *_REPO_QUERY)
    lines = done.stdout.decode().splitlines()
    if done.returncode != 0 or len(lines) != 3:
        raise LatticeError(
            Code.NOT_FOUND, f"{key} is not inside a git working tree ({one_line(done.stderr)})"
        )
    top, common = (Path(os.path.realpath(os.path.join(key, p))) for p in lines[:2])
    return _Repo(top, common, lines[2])


def project_git_dir(root: Path) -> tuple[Path, str]:
    """The git directory (common to its worktrees) and object format of the repository
    ``root`` is in; blocking. For :mod:`._keep`, which rebuilds a deleted ``.git``."""
    repo = _repo_blocking(root)
    return repo.common, repo.object_format


# -- blocking file work, run in threads -----------------------------------------------------


def _mark(base: Path, name: str) -> Path:
    return base / f".{name}.{OWNER_FILE}"


def _read_mark(base: Path, name: str) -> tuple[str, str | None] | None:
    """(the repository's git directory, the owning board or None) from a mark."""
    try:
        lines = _mark(base, name).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    fields = dict(line.partition(" ")[::2] for line in lines)
    if "repo" not in fields:
        return None
    return fields["repo"], fields.get("owner") or None


def _mark_ready(path: Path) -> None:
    """Say in the mark that the workspace is whole (its checkout done): from here a
    worker may run in it, and its end has work to look for."""
    try:
        with _mark(path.parent, path.name).open("a", encoding="utf-8") as mark:
            mark.write("ready\n")
    except OSError as err:
        raise LatticeError(
            Code.INTERNAL,
            f"cannot record that the worktree {path} is ready: {err}",
            details={"stage": "owner"},
        ) from None


def unfinished(path: Path) -> bool:
    """Whether ``path`` is a workspace whose creation was cut short (a supervisor
    killed during its checkout): no worker ever ran in it, so there is no work to keep,
    and its ``.git`` may be half written. False for a worktree of an earlier version
    and for anything without a mark (nothing says so). True too for a pooled workspace
    whose mark still says it is idle: by construction it holds no run's work (a crash
    between a run's ``process_started`` naming it and the take rewriting its mark
    leaves it so, at the previous run's commit). Blocking (one small read)."""
    try:
        lines = _mark(path.parent, path.name).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return bool(lines) and ("ready" not in lines or any(ln.startswith("idle ") for ln in lines))


def _ours_under(base_dir: Path, common: Path, owner: str | None = None) -> list[Path]:
    """The workspaces of the repository at ``common`` under ``base_dir`` (see
    :meth:`Worktrees.existing`)."""
    base = Path(os.path.realpath(base_dir))
    try:
        names = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    suffix = f".{OWNER_FILE}"
    candidates = {n for n in names if WORKTREE_NAME.match(n)}
    candidates |= {
        n[1 : -len(suffix)]
        for n in names
        if n.startswith(".") and n.endswith(suffix) and WORKTREE_NAME.match(n[1 : -len(suffix)])
    }
    legacy = _registered_under(base, common)
    candidates |= {path.name for path in legacy}
    found = []
    for name in sorted(candidates):
        path = base / name
        mark = _read_mark(base, name)
        if mark is not None:
            repo, made_by = mark
            if Path(repo) != common:
                continue
        elif path in legacy or _borrows_from(path, common) or _worktree_of(path, common):
            made_by = _legacy_owner(path, common)
        else:
            continue
        if owner is None or made_by in (None, owner):
            found.append(path)
    return found


def _borrows_from(path: Path, common: Path) -> bool:
    """Whether ``path/.git`` is a repository whose alternates name ``common``'s objects."""
    try:
        text = read_regular(Path(path, ".git", "objects", "info", "alternates")).decode()
    except (OSError, UnicodeDecodeError):
        return False
    wanted = os.path.realpath(common / "objects")
    return any(os.path.realpath(line.strip()) == wanted for line in text.splitlines())


def _worktree_of(path: Path, common: Path) -> bool:
    admin = _admin_dir(path)
    return admin is not None and common in admin.parents


def _registered_under(base: Path, common: Path) -> set[Path]:
    """Worktrees (of an earlier version) under ``base`` registered in ``common``."""
    found: set[Path] = set()
    try:
        entries = list(os.scandir(common / "worktrees"))
    except OSError:
        return found
    for entry in entries:
        try:
            gitdir = Path(entry.path, "gitdir").read_text().strip()
        except OSError:
            continue
        path = Path(os.path.dirname(os.path.realpath(os.path.join(entry.path, gitdir))))
        if path.parent == base and WORKTREE_NAME.match(path.name):
            found.add(path)
    return found


def _admin_dir(path: Path, common: Path | None = None) -> Path | None:
    """A worktree's own folder in the git directory, from its ``.git`` file; or, when
    a worker deleted that file, the folder of ``common/worktrees`` whose ``gitdir``
    names ``path`` (git names it after the worktree's folder, plus a number if taken)."""
    try:
        text = read_regular(Path(path, ".git")).decode(errors="replace")
    except OSError:  # gone, a folder (a workspace's own), a FIFO: not a .git file
        return _admin_dir_naming(path, common) if common is not None else None
    if not text.startswith("gitdir:"):
        return None
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


def _legacy_owner(path: Path, common: Path) -> str | None:
    """The board named beside a worktree of an earlier version, None when none is."""
    admin = _admin_dir(path, common)
    try:
        return (admin / OWNER_FILE).read_text(encoding="utf-8").strip() if admin else None
    except (OSError, UnicodeDecodeError):
        return None


def _new_workspace(base_dir: Path, name: str, repo: _Repo, commit: str, owner: str | None) -> Path:
    """``base_dir/name`` with its mark beside it and its own ``.git``, detached at
    ``commit`` with no files checked out yet: refused inside the repository, or when
    something is already there. On failure, nothing of it is left."""
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
    # The mark first: another board's recovery that lists the folder meanwhile must
    # already see that it is not its own (a mark left by a crash is rewritten).
    try:
        _mark(base, name).write_text(
            f"repo {repo.common}\n" + (f"owner {owner}\n" if owner else ""), encoding="utf-8"
        )
    except OSError as err:
        raise LatticeError(
            Code.INTERNAL,
            f"cannot record which board owns the worktree {path}: {err}",
            details={"stage": "owner"},
        ) from None
    try:
        write_git_dir(path, repo.common, commit, repo.object_format, repo.settings)
    except BaseException as err:
        _remove_blocking(base, repo.common, path)
        if isinstance(err, OSError):
            raise LatticeError(
                Code.INTERNAL,
                f"cannot create a worktree at {path} for commit {commit}: {err}",
                details={"stage": "add"},
            ) from None
        raise
    return path


def write_git_dir(
    path: Path,
    common: Path,
    commit: str,
    object_format: str = "sha1",
    settings: Iterable[tuple[str, str]] = (),
) -> None:
    """Make ``path/.git`` a repository of its own that borrows ``common``'s objects,
    its HEAD detached at ``commit`` (see the module's docstring). Refs, stash, config
    and hooks are its own. Copied from the project, as files (no git process): its
    branches, tags and remote-tracking branches as they are now (a worker's ``git diff
    main`` reads as in a worktree; a ``git branch -D`` deletes only the copy), its
    ``info/exclude`` (the worker's ``git status`` ignores what the user's does) and
    ``shallow`` (a shallow history still reads). A repository with the reftable
    format has no ref files: its workspaces have no branches."""
    git_dir = path / ".git"
    os.makedirs(git_dir / "objects" / "info")
    for folder in ("refs/heads", "refs/tags", "info"):
        os.makedirs(git_dir / folder, exist_ok=True)
    extensions = [("extensions.objectformat", object_format)] if object_format != "sha1" else []
    extensions += [(k, v) for k, v in settings if k.startswith("extensions.")]
    version = 1 if extensions else 0
    config = (
        "[core]\n"
        f"\trepositoryformatversion = {version}\n"
        "\tfilemode = true\n"
        "\tbare = false\n"
        "\tlogallrefupdates = true\n"
    ) + _config_sections([*extensions, *((k, v) for k, v in settings if (k, v) not in extensions)])
    (git_dir / "config").write_text(config, encoding="utf-8")
    (git_dir / "objects" / "info" / "alternates").write_text(
        os.path.realpath(common / "objects") + "\n", encoding="utf-8"
    )
    for name in ("info/exclude", "shallow", "packed-refs"):
        try:
            shutil.copyfile(common / name, git_dir / name)
        except FileNotFoundError:
            pass
    for kind in ("heads", "tags", "remotes"):
        if os.path.isdir(common / "refs" / kind):
            shutil.copytree(
                common / "refs" / kind,
                git_dir / "refs" / kind,
                symlinks=True,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("*.lock"),
            )
    (git_dir / "HEAD").write_text(commit + "\n", encoding="ascii")


def _config_sections(pairs: Iterable[tuple[str, str]]) -> str:
    """``section[.subsection].name`` = value pairs as git config text, one header per
    section (a subsection, such as a remote's name, may hold dots: the name is last)."""
    sections: dict[tuple[str, str], list[str]] = {}
    for key, value in pairs:
        section, _, rest = key.partition(".")
        subsection, _, name = rest.rpartition(".")
        sections.setdefault((section, subsection), []).append(f"\t{name} = {_quoted(value)}\n")
    return "".join(
        (f"[{section} {_quoted(sub)}]\n" if sub else f"[{section}]\n") + "".join(lines)
        for (section, sub), lines in sections.items()
    )


def _quoted(value: str) -> str:
    """A git config value, quoted so that any character reads back as itself."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _checked(base_dir: Path, path: Path) -> Path:
    """``path`` as a workspace folder under ``base_dir`` (real), or refused."""
    base = Path(os.path.realpath(base_dir))
    if path.parent not in (base_dir, base) or not WORKTREE_NAME.match(path.name):
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"{path} is not a worktree folder under {base_dir}; refusing to remove it",
        )
    return base / path.name


def _remove_blocking(base_dir: Path, common: Path | None, path: Path) -> None:
    """Delete the workspace ``path`` (never following a link out of it), then, for a
    worktree of an earlier version, its registration, then its mark."""
    path = _checked(base_dir, path)
    admin = _admin_dir(path, common) if common is not None else None
    _rmtree(path)
    if admin is not None and common is not None and common / "worktrees" in admin.parents:
        _rmtree(admin)
    try:
        _mark(path.parent, path.name).unlink()
    except FileNotFoundError:
        pass


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
