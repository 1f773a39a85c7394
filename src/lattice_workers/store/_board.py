"""The board: one ``.lattice/`` folder, read directly and written through the locks.

:class:`Board` is the Python API the CLI and the supervisor share. Reads go straight
to the files (a snapshot per task, an event log per task); every write goes through
:func:`~lattice_workers.store._write.locked_write`. Nothing here parses command lines or
prints; every error is a :class:`~lattice_workers.errors.LatticeError`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store._ids import (
    PROJECT_CODE_RE,
    is_short_id,
    new_id,
    parse_prefixed_id,
    validate_actor,
    validate_task_id,
)
from lattice_workers.store._jsonio import (
    EventLog,
    atomic_write_json,
    loads,
    parse_jsonl,
    read_bytes,
)
from lattice_workers.store._locate import LATTICE_DIR, find_root, run_dir
from lattice_workers.store._materialize import replay
from lattice_workers.store._workflow import PRIORITIES, TASK_TYPES, Workflow, default_config

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from lattice_workers.store._integrity import Problem, RebuildReport
    from lattice_workers.store._write import Check, NewEvent, WriteResult

# The write path (and its dataclasses, ulid) is imported by the methods
# that write, so that `lattice list` and `lattice show` load only what reads.

_SUBDIRS = (
    "tasks",
    "events",
    "artifacts/meta",
    "artifacts/payload",
    "notes",
    "archive/tasks",
    "archive/events",
    "archive/notes",
    "locks",
    "logs/workers",
)


#: ``.lattice/.gitignore``: what the supervisor and the writers keep for themselves
#: (the run journal, sockets and lock under ``run/``, logs, lock files, the reports a
#: worker writes before attaching a copy) stays out of git; the board's data (config,
#: tasks, events, artifacts, notes, archive, ``ids.json``) is meant to be committed.
GITIGNORE = """\
# Written by `lattice-workers init`. Runtime files stay out of git;
# the board's data (config.json, ids.json, tasks/, events/, artifacts/,
# notes/, archive/) is meant to be committed.
run/
logs/
locks/
reports/
*.lock
*.sock
.tmp.*
"""


def write_gitignore(board_dir: Path) -> bool:
    """Write ``GITIGNORE`` to ``board_dir/.gitignore`` unless there is one (a user's
    own is never replaced); True when written."""
    path = board_dir / ".gitignore"
    try:
        with open(path, "x", encoding="utf-8") as out:
            out.write(GITIGNORE)
    except FileExistsError:
        return False
    return True


class Board:
    """A Lattice board rooted at ``root`` (the folder that holds ``.lattice/``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / LATTICE_DIR
        self._config: dict[str, Any] | None = None
        # Built once: a write names these on every call, and pathlib joins cost more
        # than the rest of a write's own Python work.
        self._dir_str = os.fspath(self.dir)
        self._locks_dir = self.dir / "locks"
        self._lifecycle_path = self.dir / "events" / "_lifecycle.jsonl"

    def __repr__(self) -> str:
        return f"Board({str(self.root)!r})"

    # ----------------------------------------------------------------- finding
    @classmethod
    def open(cls, start: Path | None = None) -> Board:
        """The board named by ``LATTICE_ROOT``, else the nearest one above ``start``.

        ``LATTICE_ROOT`` names the project root; when it is set there is no fallback.
        """
        return cls(find_root(start))

    @classmethod
    def init(
        cls, root: Path, *, project_code: str | None = None, default_actor: str | None = None
    ) -> Board:
        """Create a board in ``root`` (an existing folder); an existing board is kept.

        Initializing twice is harmless; asking for a different project code than the
        board has is a CONFLICT, because it would silently change every new short id.
        """
        if project_code is not None:
            project_code = project_code.upper()
            if PROJECT_CODE_RE.fullmatch(project_code) is None:
                raise LatticeError(
                    Code.INVALID_ARGUMENT,
                    f"invalid project code {project_code!r}: use 1 to 5 letters, such as LAT",
                )
        if default_actor is not None:
            validate_actor(default_actor)
        if not root.is_dir():
            raise LatticeError(Code.NOT_FOUND, f"cannot create a board in {root}: no such folder")
        board = cls(root.absolute())
        if board.dir.exists() and not board.dir.is_dir():
            raise LatticeError(
                Code.CONFLICT, f"cannot create a board: {board.dir} exists and is not a folder"
            )
        if (board.dir / "config.json").exists():
            have = board.config.get("project_code")
            if project_code is not None and have is None:
                # A board without short ids gets them from now on: nothing already
                # written changes, and the next task is CODE-1.
                config = dict(board.config, project_code=project_code)
                if not (board.dir / "ids.json").exists():
                    atomic_write_json(
                        board.dir / "ids.json", {"map": {}, "next_seqs": {}, "schema_version": 2}
                    )
                atomic_write_json(board.dir / "config.json", config)
                board._config = config
            elif project_code is not None and have != project_code:
                raise LatticeError(
                    Code.CONFLICT,
                    f"this board already exists with project code {have!r}; it was left "
                    f"unchanged (not switched to {project_code!r})",
                )
            write_gitignore(board.dir)
            return board
        for sub in _SUBDIRS:
            (board.dir / sub).mkdir(parents=True, exist_ok=True)
        board.lifecycle_path.touch()
        config = default_config()
        config["instance_id"] = new_id("inst")
        if project_code:
            config["project_code"] = project_code
            atomic_write_json(
                board.dir / "ids.json", {"map": {}, "next_seqs": {}, "schema_version": 2}
            )
        if default_actor:
            config["default_actor"] = default_actor
        write_gitignore(board.dir)
        atomic_write_json(board.dir / "config.json", config)  # last: it marks the board done
        board._config = config
        return board

    # ----------------------------------------------------------------- paths
    @property
    def locks_dir(self) -> Path:
        return self._locks_dir

    @property
    def lifecycle_path(self) -> Path:
        return self._lifecycle_path

    def events_path(self, task_id: str) -> Path:
        return self.dir / "events" / f"{task_id}.jsonl"

    def snapshot_path(self, task_id: str) -> Path:
        return self.dir / "tasks" / f"{task_id}.json"

    def events_file(self, task_id: str) -> str:
        """:meth:`events_path` as a string, for the write path (equal to its ``fspath``)."""
        return f"{self._dir_str}/events/{task_id}.jsonl"

    def snapshot_file(self, task_id: str) -> str:
        """:meth:`snapshot_path` as a string, for the write path (equal to its ``fspath``)."""
        return f"{self._dir_str}/tasks/{task_id}.json"

    def worker_log_dir(self) -> Path:
        """``.lattice/logs/workers``, where each run's log lives (a path only: the
        supervisor asks for it on its event loop and creates it in a thread)."""
        return self.dir / "logs" / "workers"

    # ----------------------------------------------------------------- config
    @property
    def config(self) -> dict[str, Any]:
        """``config.json`` as a dict (unknown keys kept); defaults when it is missing.

        Read once and kept: a long-lived reader (the supervisor) sees later edits only
        through :meth:`reload_config`.
        """
        if self._config is None:
            self._config = self._read_config()
        return self._config

    def reload_config(
        self, check: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Read ``config.json`` again; ``check`` may refuse it (raise), and then the
        config in use stays as it was."""
        config = self._read_config()
        if check is not None:
            check(config)
        self._config = config
        return config

    def _read_config(self) -> dict[str, Any]:
        raw = read_bytes(self.dir / "config.json")
        if raw is None:
            return default_config()
        try:
            config = loads(raw)
        except ValueError as err:
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"{self.dir / 'config.json'} is not valid JSON ({err}); fix the file",
            ) from None
        if not isinstance(config, dict):
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"{self.dir / 'config.json'} must hold a JSON object; fix the file",
            )
        return config

    def workflow(self) -> Workflow:
        return Workflow.from_config(self.config)

    def default_actor(self) -> str | None:
        """``LATTICE_ACTOR`` if set, else the config's ``default_actor`` (not validated)."""
        env = os.environ.get("LATTICE_ACTOR")
        if env:
            return env
        actor = self.config.get("default_actor")
        return actor if isinstance(actor, str) and actor else None

    # ----------------------------------------------------------------- reading
    def short_ids(self) -> dict[str, str]:
        """``ids.json``'s map from short id (``LAT-3``) to task id (empty when absent)."""
        raw = read_bytes(self.dir / "ids.json")
        if raw is None:
            return {}
        try:
            mapping = loads(raw).get("map")
        except (ValueError, AttributeError):
            return {}
        return mapping if isinstance(mapping, dict) else {}

    def task_exists(self, task_id: str) -> bool:
        return _exists(self.events_file(task_id)) or _exists(self.snapshot_file(task_id))

    def resolve_task(self, ref: str) -> str:
        """The canonical task id of ``ref``: a task id in any case, or a short id."""
        text = ref.strip() if isinstance(ref, str) else ""
        task_id = parse_prefixed_id(text, "task")
        if task_id is None and is_short_id(text):
            found = self.short_ids().get(text.upper())
            if found is None:
                raise LatticeError(Code.NOT_FOUND, f"no task has the short id {text.upper()}")
            task_id = parse_prefixed_id(found, "task")
            if task_id is None:
                raise LatticeError(
                    Code.INVALID_ID,
                    f"ids.json maps {text.upper()} to {found!r}, which is not a task id "
                    "(run lattice rebuild)",
                )
        if task_id is None:
            raise LatticeError(
                Code.INVALID_ID,
                f"{ref!r} is not a task id (task_ followed by a 26-character ULID) or a "
                "short id such as LAT-42",
            )
        if not self.task_exists(task_id):
            if (self.dir / "archive" / "tasks" / f"{task_id}.json").exists():
                raise LatticeError(Code.NOT_FOUND, f"task {task_id} is archived")
            raise LatticeError(Code.NOT_FOUND, f"no task {task_id} on this board")
        return task_id

    def read_events(self, task_id: str) -> EventLog:
        """The task's events in file order; unreadable lines land in ``problems``."""
        task_id = validate_task_id(task_id)
        raw = read_bytes(self.events_path(task_id))
        if raw is None:
            return EventLog()
        return parse_jsonl(raw, f"events/{task_id}.jsonl")

    def replay(self, task_id: str) -> dict[str, Any] | None:
        """The snapshot the task's log materializes to (what ``rebuild`` would write)."""
        snap, _ = replay(self.read_events(task_id).events)
        return snap

    def read_snapshot(self, task_id: str) -> dict[str, Any]:
        """The task's snapshot file; the replay of its log if the file is unreadable."""
        task_id = validate_task_id(task_id)
        raw = read_bytes(self.snapshot_path(task_id))
        if raw is not None:
            try:
                snap = loads(raw)
                if isinstance(snap, dict):
                    return snap
            except ValueError:
                pass
        snap = self.replay(task_id)
        if snap is None:
            raise LatticeError(Code.NOT_FOUND, f"no task {task_id} on this board")
        return snap

    def scan_snapshots(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Every active snapshot, sorted by id, and the files that could not be read."""
        snaps: list[dict[str, Any]] = []
        problems: list[str] = []
        tasks = self.dir / "tasks"
        try:
            entries = [e.name for e in os.scandir(tasks)]
        except FileNotFoundError:
            return snaps, problems
        for name in entries:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                with open(tasks / name, "rb") as fh:
                    snap = loads(fh.read())
            except (OSError, ValueError) as err:
                problems.append(f"tasks/{name}: cannot be read ({err})")
                continue
            if isinstance(snap, dict):
                snaps.append(snap)
            else:
                problems.append(f"tasks/{name}: not a JSON object")
        snaps.sort(key=lambda s: str(s.get("id")))
        return snaps, problems

    def task_rows(self, *, status: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """The listed fields of every active task (see :mod:`._rows`) and unreadable files."""
        from lattice_workers.store._rows import read_rows

        if status is not None:
            self.workflow().require_status(status)
        cache = str(run_dir(self.dir) / "rows-cache.json")
        return read_rows(str(self.dir / "tasks"), status, cache)

    def list_snapshots(self, *, status: str | None = None) -> list[dict[str, Any]]:
        """Active tasks' snapshots sorted by id, optionally only those in ``status``."""
        if status is not None:
            self.workflow().require_status(status)
        snaps, _ = self.scan_snapshots()
        return [s for s in snaps if status is None or s.get("status") == status]

    # ----------------------------------------------------------------- writing
    def append(
        self,
        task_id: str,
        event_type: str,
        data: Mapping[str, Any],
        *,
        actor: str,
        agent_meta: dict[str, Any] | None = None,
        provenance: dict[str, Any] | None = None,
        check: Check | None = None,
        hooks: bool = True,
        event_id: str | None = None,
    ) -> WriteResult:
        """Append one event through the canonical write path (see :mod:`._write`).

        ``check(snapshot)`` runs inside the locks on the current state and may raise
        a LatticeError, in which case nothing is written. Hooks run after the locks
        are released unless ``hooks`` is false. ``event_id`` fixes the new event's id
        (a CONFLICT if the log already has it, so a retried write cannot double).
        """
        from lattice_workers.store._write import NewEvent

        item = NewEvent(event_type, data, actor, agent_meta, provenance, event_id)
        return self.append_many(task_id, [item], check=check, hooks=hooks)

    def append_many(
        self,
        task_id: str,
        events: list[NewEvent],
        *,
        check: Check | None = None,
        hooks: bool = True,
    ) -> WriteResult:
        """Append several events in one locked write: all of them or none."""
        from lattice_workers.store._write import locked_write

        task_id = validate_task_id(task_id)
        for item in events:
            item.validate()
            if item.type == "task_created":
                raise LatticeError(Code.INVALID_ARGUMENT, "use create_task to create a task")
            if item.type in ("task_archived", "task_unarchived"):
                raise LatticeError(
                    Code.INVALID_ARGUMENT,
                    f"{item.type} moves files; archive tasks with lattice-tracker",
                )
        result = locked_write(
            self, task_id, lambda _snap: list(events), types=[e.type for e in events], check=check
        )
        if hooks:
            self.run_hooks(result.events)
        return result

    def create_task(
        self,
        title: str,
        *,
        actor: str,
        status: str | None = None,
        priority: str | None = None,
        type: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        assigned_to: str | None = None,
    ) -> dict[str, Any]:
        """Create a task (allocating its short id when the board has a project code)."""
        from lattice_workers.store._create import create_task

        return create_task(
            self,
            title,
            actor=actor,
            status=status,
            priority=priority,
            type=type,
            description=description,
            tags=tags,
            assigned_to=assigned_to,
        )

    def change_status(
        self,
        task_id: str,
        new: str,
        *,
        actor: str,
        force: bool = False,
        reason: str | None = None,
    ) -> WriteResult:
        """Move a task to ``new`` by the workflow rules; the same status writes nothing."""
        from lattice_workers.store._write import NewEvent, locked_write

        task_id = validate_task_id(task_id)
        validate_actor(actor)
        workflow = self.workflow()
        workflow.require_status(new)
        if force and not (reason and reason.strip()):
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                "--force needs --reason: say why the workflow is being overridden",
            )

        def make(snap: dict[str, Any] | None) -> list[NewEvent]:
            assert snap is not None
            if snap.get("status") == new:
                return []
            workflow.check_move(snap, new, force=force, reason=reason)
            data: dict[str, Any] = {"from": snap.get("status"), "to": new}
            if force:
                data.update(force=True, reason=reason)
            prov = {"reason": reason} if reason else None
            return [NewEvent("status_changed", data, actor, provenance=prov)]

        result = locked_write(self, task_id, make, types=["status_changed"])
        self.run_hooks(result.events)
        return result

    def comment(self, task_id: str, body: str, *, actor: str) -> WriteResult:
        """Add a comment (its id is its event id)."""
        text = body.strip() if isinstance(body, str) else ""
        if not text:
            raise LatticeError(Code.INVALID_ARGUMENT, "a comment needs a non-empty body")
        return self.append(task_id, "comment_added", {"body": text}, actor=actor)

    def attach(
        self,
        task_id: str,
        path: Path,
        *,
        role: str | None,
        actor: str,
        title: str | None = None,
        run_hooks: bool = True,
        artifact_id: str | None = None,
    ) -> WriteResult:
        """Copy ``path`` into the board as an artifact and attach it to the task
        (``run_hooks=False``: the caller runs the hooks for its events;
        ``artifact_id``: an id chosen earlier, see :func:`attach_file`)."""
        from lattice_workers.store._artifacts import attach_file

        return attach_file(
            self, task_id, Path(path), role=role, actor=actor, title=title,
            run_hooks=run_hooks, artifact_id=artifact_id,
        )

    def run_hooks(self, events: list[dict[str, Any]]) -> None:
        """Run the board's hooks for ``events`` (what a write does after unlocking).

        Never raises: a broken config or a failing hook is logged, not propagated.
        """
        if not events:
            return
        from lattice_workers.store._hooks import log, run_hooks

        try:
            run_hooks(self.config, self.root, events)
        except Exception as err:
            log.warning("hooks were not run: %s", err)

    # ----------------------------------------------------------------- integrity
    def rebuild(self) -> RebuildReport:
        """Replay every log: rewrite snapshots, the lifecycle log and ``ids.json``."""
        from lattice_workers.store._integrity import rebuild

        return rebuild(self)

    def doctor(self) -> list[Problem]:
        """Every inconsistency of the board, as :class:`Problem` records (none = healthy)."""
        from lattice_workers.store._integrity import doctor

        return doctor(self)

    def repair_snapshot(self, task_id: str) -> bool:
        """Rewrite the snapshot from the log if they disagree (a crash between the
        append and the snapshot write leaves them so). True when it was rewritten."""
        from lattice_workers.store._jsonio import atomic_write_json
        from lattice_workers.store._locks import locked, task_lock_keys
        from lattice_workers.store._write import current_state

        task_id = validate_task_id(task_id)
        with locked(self.locks_dir, task_lock_keys(task_id)):
            snap, ids = current_state(self, task_id)
            if snap is None or ids is None:
                return False
            path = self.snapshot_path(task_id)
            try:
                on_disk = loads(path.read_bytes())
            except (OSError, ValueError):
                on_disk = None
            if on_disk == snap:
                return False
            atomic_write_json(path, snap)
            return True

    def set_aside_bad_lines(self, task_id: str) -> tuple[Path, int] | None:
        """Move the log's unreadable lines into a dated file beside it (see ``_aside``)."""
        from lattice_workers.store._aside import set_aside_bad_lines

        return set_aside_bad_lines(self, task_id)

    def open_runs(self) -> list[dict[str, Any]]:
        """Every ``process_started`` of an active task that no end event names."""
        from lattice_workers.store._integrity import open_runs

        return open_runs(self)


def _exists(path: str) -> bool:
    """``Path(path).exists()`` without building a Path: the same errors mean "no"."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno in _NOT_THERE:
            return False
        raise
    except ValueError:  # a NUL in the path
        return False
    return True


#: The errors ``Path.exists`` reads as "does not exist" (others are raised).
_NOT_THERE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})


def check_priority(priority: str) -> str:
    if priority not in PRIORITIES:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"unknown priority {priority!r}: use one of {', '.join(PRIORITIES)}",
        )
    return priority


def check_type(config: dict[str, Any], task_type: str) -> str:
    types = config.get("task_types")
    known = types if isinstance(types, list) and types else TASK_TYPES
    if task_type not in known:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"unknown task type {task_type!r}: this board's types are {', '.join(known)}",
        )
    return task_type
