"""``doctor`` (find every inconsistency) and ``rebuild`` (replay every log).

Doctor reads everything and changes nothing. It compares each snapshot with the
replay of its log on the keys the replay produces; keys that only one of the two
tools derives are compared only when the snapshot has them, so a board written by
``lattice-tracker`` 0.2 (or its worker-era predecessor) is clean here.

Rebuild takes each task's locks while it replays that task, and the lifecycle lock
while it rewrites the lifecycle log, so it is safe beside live writers; it only
rewrites files whose bytes change, so running it twice changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.errors import LatticeError
from lattice_workers.store._ids import SHORT_ID_RE, parse_prefixed_id
from lattice_workers.store._jsonio import (
    as_dict,
    atomic_write_bytes,
    dumps_event,
    dumps_pretty,
    loads,
    parse_jsonl,
    read_bytes,
)
from lattice_workers.store._locks import locked, task_lock_keys
from lattice_workers.store._materialize import LIFECYCLE_TYPES, replay
from lattice_workers.store._run_events import (
    PROCESS_END_TYPES,
    PROCESS_STARTED,
    ended_data,
    started_data,
)

if TYPE_CHECKING:
    from lattice_workers.store._board import Board

# Keys the replay produces that a snapshot of another tool version may lack; they
# are compared only when present. ``active_processes`` is not among them: a
# snapshot that lost an open run (the tracker's rebuild drops the list) is drift.
_OPTIONAL_KEYS = frozenset(
    {
        "artifact_refs",
        "evidence_refs",
        "comment_count",
        "reopened_count",
        "done_at",
        "last_status_changed_at",
    }
)
_MISSING_DEFAULTS: dict[str, Any] = {"active_processes": []}


@dataclass
class Problem:
    """One inconsistency: ``kind`` (a stable word), the task if any, a sentence."""

    kind: str
    task_id: str | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RebuildReport:
    """What ``rebuild`` did."""

    tasks: int = 0
    rewritten: list[str] = field(default_factory=list)
    lifecycle_events: int = 0
    lifecycle_rewritten: bool = False
    ids_rewritten: bool = False
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _task_logs(folder: Path) -> list[tuple[str, Path]]:
    """(stem, path) of every per-task log in ``folder``, sorted."""
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob("*.jsonl"):
        if path.name == "_lifecycle.jsonl" or path.stem.startswith("res_"):
            continue
        out.append((path.stem, path))
    return sorted(out)


def runs_left_open(task_id: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``process_started`` events of one log that no end event names."""
    ended = {
        ended_data(e).get("started_event_id")
        for e in events
        if e.get("type") in PROCESS_END_TYPES and isinstance(e.get("data"), dict)
    }
    out = []
    for e in events:
        if e.get("type") == PROCESS_STARTED and e.get("id") not in ended:
            data = started_data(e)
            out.append(
                {
                    "task_id": task_id,
                    "started_event_id": e.get("id"),
                    "run_id": data.get("run_id"),
                    "process_type": data.get("process_type"),
                    "started_at": e.get("ts"),
                    "actor": e.get("actor"),
                    "log_path": data.get("log_path"),
                    # For keeping its work (actors/_keep.py), not for its end event.
                    "worktree_path": data.get("worktree_path"),
                    "run_commit": data.get("commit_sha"),
                    "attempt": data.get("attempt"),
                }
            )
    return out


def open_runs(board: Board) -> list[dict[str, Any]]:
    """Open runs of every active task (logs without a ``process_started`` are skipped)."""
    out: list[dict[str, Any]] = []
    for stem, path in _task_logs(board.dir / "events"):
        raw = read_bytes(path)
        if raw is None or b'"process_started"' not in raw:  # PROCESS_STARTED, quoted
            continue
        out.extend(runs_left_open(stem, parse_jsonl(raw, path.name).events))
    return out


def drift(snapshot: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    """The keys on which a snapshot file disagrees with the replay of its log."""
    keys = []
    for key, value in replayed.items():
        if key not in snapshot:
            if key in _OPTIONAL_KEYS or _MISSING_DEFAULTS.get(key, object()) == value:
                continue
            keys.append(key)
        elif snapshot[key] != value:
            keys.append(key)
    return sorted(keys)


def _load_json(path: Path) -> tuple[Any, str | None]:  # (value or None, error)
    raw = read_bytes(path)
    if raw is None:
        return None, None
    try:
        return loads(raw), None
    except ValueError as err:
        return None, str(err)


class _Doctor:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.problems: list[Problem] = []
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.lifecycle_in_logs: dict[str, dict[str, Any]] = {}
        self.event_ids: set[str] = set()

    def add(
        self, kind: str, task_id: str | None, message: str, details: dict[str, Any] | None = None
    ) -> None:
        self.problems.append(Problem(kind, task_id, message, details or {}))

    def run(self) -> list[Problem]:
        self.check_config()
        self.check_tasks()
        self.check_archive()
        self.check_lifecycle()
        self.check_short_ids()
        return self.problems

    def check_config(self) -> None:
        config, err = _load_json(self.board.dir / "config.json")
        if err is not None or (config is not None and not isinstance(config, dict)):
            self.add("config", None, f"config.json is not a valid JSON object ({err})")
        elif config is None:
            self.add("config", None, "config.json is missing (run lattice init)")

    def check_tasks(self) -> None:
        d = self.board.dir
        logs = dict(_task_logs(d / "events"))
        files = {p.stem for p in (d / "tasks").glob("*.json")} if (d / "tasks").is_dir() else set()
        for name in sorted(set(logs) | files):
            task_id = parse_prefixed_id(name, "task")
            if task_id != name:
                self.add("malformed_id", None, f"{name!r} in events/ or tasks/ is not a task id")
                continue
            self.check_task(name, logs.get(name))

    def check_task(self, task_id: str, log_path: Path | None) -> None:
        events = self.read_log(task_id, log_path, f"events/{task_id}.jsonl")
        snap_path = self.board.snapshot_path(task_id)
        snap, err = _load_json(snap_path)
        if err is not None or (snap is not None and not isinstance(snap, dict)):
            self.add("corrupt_snapshot", task_id, f"tasks/{task_id}.json cannot be read ({err})")
            snap = None
        elif snap is None:
            self.add("missing_snapshot", task_id, f"task {task_id} has a log but no snapshot")
        if log_path is None:
            self.add("missing_log", task_id, f"task {task_id} has a snapshot but no event log")
            if snap is not None:
                self.snapshots[task_id] = snap
            return
        replayed, problems = replay(events, source=f"events/{task_id}.jsonl")
        for message in problems:
            self.add("bad_event", task_id, message)
        if replayed is None:
            self.add("no_task_created", task_id, f"events/{task_id}.jsonl has no task_created")
        elif snap is not None:
            keys = drift(snap, replayed)
            if keys:
                self.add(
                    "drift",
                    task_id,
                    f"tasks/{task_id}.json differs from the replay of its log on "
                    f"{', '.join(keys)} (run lattice rebuild)",
                    {"keys": keys},
                )
        current = snap if snap is not None else replayed
        if current is not None:
            self.snapshots[task_id] = current
            self.check_artifacts(task_id, current)
        for run in runs_left_open(task_id, events):
            self.add(
                "open_run",
                task_id,
                f"run {run['run_id'] or run['started_event_id']} of {run['process_type']} "
                f"started {run['started_at']} has no process_completed or process_failed",
                run,
            )

    def read_log(self, task_id: str | None, path: Path | None, name: str) -> list[dict[str, Any]]:
        raw = read_bytes(path) if path is not None else None
        if raw is None:
            return []
        log = parse_jsonl(raw, name)
        for message in log.problems:
            self.add("corrupt_line", task_id, message)
        for index, event in enumerate(log.events, start=1):
            ev_id = event.get("id")
            if parse_prefixed_id(ev_id, "ev") is None:
                self.add("malformed_id", task_id, f"{name} event {index} has a bad id {ev_id!r}")
            elif ev_id in self.event_ids and task_id is not None:
                self.add("duplicate_event", task_id, f"{name} repeats event {ev_id}")
            if task_id is not None:
                self.event_ids.add(str(ev_id))
                if event.get("task_id") != task_id:
                    self.add(
                        "wrong_task",
                        task_id,
                        f"{name} event {index} belongs to {event.get('task_id')!r}",
                    )
                if event.get("type") in LIFECYCLE_TYPES:
                    self.lifecycle_in_logs[str(ev_id)] = event
        return log.events

    def check_artifacts(self, task_id: str, snap: dict[str, Any]) -> None:
        meta = self.board.dir / "artifacts" / "meta"
        for key in ("artifact_refs", "evidence_refs"):
            for ref in snap.get(key) or []:
                if not isinstance(ref, dict):
                    continue
                if key == "evidence_refs" and ref.get("source_type") != "artifact":
                    continue
                art_id = parse_prefixed_id(ref.get("id"), "art")
                if art_id is None or not (meta / f"{art_id}.json").exists():
                    self.add(
                        "missing_artifact",
                        task_id,
                        f"task {task_id} references artifact {ref.get('id')!r}, which has no "
                        "metadata file",
                    )

    def check_archive(self) -> None:
        for stem, path in _task_logs(self.board.dir / "archive" / "events"):
            self.read_log(stem, path, f"archive/events/{stem}.jsonl")

    def check_lifecycle(self) -> None:
        events = self.read_log(None, self.board.lifecycle_path, "events/_lifecycle.jsonl")
        in_lifecycle = {str(e.get("id")) for e in events}
        for ev_id, event in self.lifecycle_in_logs.items():
            if ev_id not in in_lifecycle:
                self.add(
                    "lifecycle",
                    event.get("task_id"),
                    f"{event.get('type')} {ev_id} is missing from _lifecycle.jsonl "
                    "(run lattice rebuild)",
                )
        for event in events:
            if str(event.get("id")) not in self.lifecycle_in_logs:
                self.add(
                    "lifecycle",
                    event.get("task_id"),
                    f"_lifecycle.jsonl has {event.get('type')} {event.get('id')}, which no "
                    "task log has",
                )

    def check_short_ids(self) -> None:
        path = self.board.dir / "ids.json"
        index, err = _load_json(path)
        try:
            config = self.board.config
        except LatticeError:
            config = {}
        if err is not None or (index is not None and not isinstance(index, dict)):
            self.add("short_ids", None, f"ids.json cannot be read ({err}); run lattice rebuild")
            return
        if index is None:
            if config.get("project_code"):
                self.add("short_ids", None, "the board has a project code but no ids.json")
            return
        mapping = as_dict(index.get("map"))
        seqs = as_dict(index.get("next_seqs"))
        for short_id, task_id in mapping.items():
            if task_id not in self.snapshots:
                self.add("short_ids", task_id, f"ids.json maps {short_id} to a missing task")
            if SHORT_ID_RE.fullmatch(short_id) is None:
                self.add("short_ids", None, f"ids.json has a malformed short id {short_id!r}")
            else:
                prefix, _, num = short_id.rpartition("-")
                if int(num) >= int(seqs.get(prefix, index.get("next_seq", 1)) or 1):
                    self.add(
                        "short_ids", None, f"ids.json would hand out {short_id} again (next_seqs)"
                    )
        seen: dict[str, str] = {}
        for task_id, snap in self.snapshots.items():
            sid = snap.get("short_id")
            if not isinstance(sid, str) or not sid:
                continue
            short_id = sid
            if mapping.get(short_id) != task_id:
                self.add("short_ids", task_id, f"{short_id} of task {task_id} is not in ids.json")
            if short_id in seen:
                self.add(
                    "short_ids", task_id, f"{short_id} is used by {seen[short_id]} and {task_id}"
                )
            seen[short_id] = task_id


def doctor(board: Board) -> list[Problem]:
    """Every inconsistency of the board; reads only."""
    return _Doctor(board).run()


def _write_if_changed(path: Path, data: bytes) -> bool:
    if read_bytes(path) == data:
        return False
    atomic_write_bytes(path, data)
    return True


def rebuild(board: Board) -> RebuildReport:
    """Replay every log (active and archived); rewrite what differs."""
    report = RebuildReport()
    short_ids: dict[str, str] = {}
    for events_dir, tasks_dir in (
        (board.dir / "events", board.dir / "tasks"),
        (board.dir / "archive" / "events", board.dir / "archive" / "tasks"),
    ):
        for stem, path in _task_logs(events_dir):
            task_id = parse_prefixed_id(stem, "task")
            if task_id != stem:
                report.problems.append(f"{path.name}: not a task id, left alone")
                continue
            with locked(board.locks_dir, task_lock_keys(task_id)):
                raw = read_bytes(path) or b""
                log = parse_jsonl(raw, f"{events_dir.name}/{path.name}")
                snap, problems = replay(log.events, source=path.name)
                report.problems += log.problems + problems
                if snap is None:
                    report.problems.append(f"{path.name}: no task_created, snapshot left alone")
                    continue
                report.tasks += 1
                tasks_dir.mkdir(parents=True, exist_ok=True)
                target = tasks_dir / f"{task_id}.json"
                if _write_if_changed(target, dumps_pretty(snap).encode()):
                    report.rewritten.append(task_id)
            if isinstance(snap.get("short_id"), str):
                short_ids[snap["short_id"]] = task_id
    _rebuild_lifecycle(board, report)
    _rebuild_ids(board, report, short_ids)
    return report


def _rebuild_lifecycle(board: Board, report: RebuildReport) -> None:
    with locked(board.locks_dir, ["events__lifecycle"]):
        found: list[dict[str, Any]] = []
        for folder in (board.dir / "events", board.dir / "archive" / "events"):
            for _stem, path in _task_logs(folder):
                raw = read_bytes(path) or b""
                found += [
                    e for e in parse_jsonl(raw, path.name).events if e["type"] in LIFECYCLE_TYPES
                ]
        found.sort(key=lambda e: (str(e.get("ts", "")), str(e.get("id", ""))))
        report.lifecycle_events = len(found)
        content = "".join(dumps_event(e) for e in found).encode("ascii")
        report.lifecycle_rewritten = _write_if_changed(board.lifecycle_path, content)


def _rebuild_ids(board: Board, report: RebuildReport, short_ids: dict[str, str]) -> None:
    path = board.dir / "ids.json"
    if not short_ids and not path.exists() and not board.config.get("project_code"):
        return
    with locked(board.locks_dir, ["ids_json"]):
        loaded, _ = _load_json(path)
        old: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
        seqs = as_dict(old.get("next_seqs"))
        seqs = {k: v for k, v in seqs.items() if isinstance(v, int)}
        for short_id in short_ids:
            if SHORT_ID_RE.fullmatch(short_id):
                prefix, _, num = short_id.rpartition("-")
                seqs[prefix] = max(seqs.get(prefix, 1), int(num) + 1)
        index = {**old, "map": dict(sorted(short_ids.items())), "next_seqs": seqs}
        index.pop("next_seq", None)
        index["schema_version"] = 2
        report.ids_rewritten = _write_if_changed(path, dumps_pretty(index).encode())
