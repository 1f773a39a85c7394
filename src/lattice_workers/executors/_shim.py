"""The ``lattice`` a worker on another machine calls: the run's task, read and written.

A worker on a Ray node cannot use the board: it lives with the supervisor, and the
node's ``LATTICE_ROOT`` is its worktree. Yet the shipped workers need it (``lattice show
TASK --json`` to read the task, ``lattice attach`` for their report). So the
supervisor ships the task as ``lattice show --json`` shows it when the attempt
starts (:func:`board_info`), the node puts a ``lattice`` of its own first on the
worker's ``PATH`` (:func:`write_shim`: a two-line script run with the node's Python),
and that command:

- answers ``show`` for the run's task from that snapshot (the same JSON, the same text);
- turns ``attach`` and ``comment`` into *calls*: a file per call in the attempt's
  folder (and a copy of the attached file), checked first as the board would check
  them (the task, the role against the board's roles, the actor, the file), so that a
  call the board would refuse fails at once, as locally. ``attach`` chooses the
  artifact's id and answers it, as a local ``attach --json`` does;
- refuses anything else with a sentence naming the limit.

The calls come back with the attempt's files, and the supervisor makes them on the
board when the attempt ends, before its terminal event (:func:`apply_calls`): the
same ``artifact_attached`` event, artifact metadata and payload, with the id the
worker was told, as ``lattice attach`` would have written. Nothing is lost: a call
the board refuses then is logged, and its file stays in the run's output folder.

The node never writes the board; what it reads is the task when the attempt started
(its own calls are not in it until the attempt ends). Outside the ``ray`` package, so
that the command imports nothing of the executor (no Trio, no Ray): any executor whose
workers run away from the board can ship the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lattice_workers.errors import Code, LatticeError, exit_code_for

if TYPE_CHECKING:
    from lattice_workers.store import Board

#: Under the attempt's folder on the node.
FOLDER = "lattice"
TASK_FILE = "task.json"
CALLS = "calls"
#: What the calls of one attempt may carry at most (files, bytes): they come back
#: with the attempt's outputs, within the same bounds.
MAX_CALLS = 100
MAX_BYTES = 50 * 1024 * 1024
_ROLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
LIMIT = (
    "a worker on a Ray node reads its run's task (`lattice show`) and attaches files "
    "or comments to it (`lattice attach`, `lattice comment`, made on the board when "
    "the attempt ends); the board itself lives with the supervisor"
)
RUN_LOCALLY = ' (or run this worker locally: "executor": "local" in its definition)'


# ------------------------------------------------------------------ the supervisor


def board_info(board: Board, task_id: str) -> dict[str, Any]:
    """What the node's ``lattice`` needs (blocking: reads the board): the task as
    ``lattice show --json`` gives it, the board's artifact roles, its default actor.
    A task that cannot be read gives ``error``: the node's ``lattice`` says it."""
    from lattice_workers.store._detail import task_detail
    from lattice_workers.store._workflow import configured_roles

    try:
        detail = task_detail(board, task_id)
    except LatticeError as err:
        return {"error": err.message}
    return {
        "show": json.loads(json.dumps(detail, default=str)),
        "roles": sorted(configured_roles(board.config)),
        "default_actor": board.config.get("default_actor"),
    }


@dataclass
class Applied:
    """What :func:`apply_calls` did."""

    artifacts: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def apply_calls(board: Board, calls: list[dict[str, Any]], keep_in: Path) -> Applied:
    """Make the node's calls on the board, in the order they were made (blocking).

    An attach writes what ``lattice attach`` writes (the payload keeps the file's
    name, so its suffix, content type and default title are the same), with the id
    the worker was told. A call the board refuses is a problem; an attached file it
    refuses stays under ``keep_in``.
    """
    done = Applied()
    for number, call in enumerate(calls, 1):
        command = call.get("command")
        try:
            if command == "attach":
                name = Path(str(call.get("name") or "file")).name or "file"
                folder = keep_in / f"lattice-call-{number}"
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / name
                path.write_bytes(call.get("payload") or b"")
                board.attach(
                    str(call["task"]), path, role=call.get("role"), actor=str(call["actor"]),
                    title=call.get("title"), artifact_id=str(call["artifact_id"]),
                )
                path.unlink()
                folder.rmdir()
                done.artifacts.append(str(call["artifact_id"]))
            elif command == "comment":
                result = board.comment(
                    str(call["task"]), str(call.get("body") or ""), actor=str(call["actor"])
                )
                done.comments.append(str(result.event["id"]))
            else:
                done.problems.append(f"call {number}: unknown command {command!r}")
        except (LatticeError, OSError, KeyError) as err:
            said = err.message if isinstance(err, LatticeError) else str(err)
            kept = f"; its file is in {keep_in}" if command == "attach" else ""
            done.problems.append(f"`lattice {command}` of the worker was not made: {said}{kept}")
    return done


# ------------------------------------------------------------------ the node


def shim_text(folder: Path, python: str) -> str:
    return (
        "#!/bin/sh\n"
        "# Written by lattice-workers on a Ray node: the run's task, see _shim.py.\n"
        f"exec {shlex.quote(python)} -m lattice_workers.executors._shim "
        f"{shlex.quote(str(folder))} \"$@\"\n"
    )


def write_shim(folder: Path, info: dict[str, Any], python: str | None = None) -> Path:
    """Write ``folder/bin/lattice``, the task it answers and the calls' folder; the
    ``bin`` folder to put first on the worker's ``PATH``."""
    (folder / CALLS).mkdir(parents=True, exist_ok=True)
    (folder / TASK_FILE).write_text(json.dumps(info), encoding="utf-8")
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "lattice"
    shim.write_text(shim_text(folder, python or sys.executable), encoding="utf-8")
    shim.chmod(0o755)
    return bin_dir


def read_calls(folder: Path) -> list[dict[str, Any]]:
    """The calls made under ``folder``, in order, each with its file's bytes as
    ``payload`` (what comes back to the supervisor)."""
    calls_dir = folder / CALLS
    if not calls_dir.is_dir():
        return []
    found = []
    for path in sorted(calls_dir.glob("*.json")):
        try:
            call = json.loads(path.read_text(encoding="utf-8"))
            if call.get("command") == "attach":
                call["payload"] = (calls_dir / path.stem / str(call["name"])).read_bytes()
        except (OSError, ValueError, KeyError, AttributeError):
            continue  # a call cut short by the worker's end: it was never answered
        found.append(call)
    return found


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise LatticeError(Code.INVALID_ARGUMENT, f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lattice", description=LIMIT)
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    p = commands.add_parser("show", help="show the run's task (as the attempt started)")
    p.add_argument("task")
    p = commands.add_parser("attach", help="attach a file to the run's task")
    p.add_argument("task")
    p.add_argument("file", type=Path)
    p.add_argument("--role", required=True)
    p.add_argument("--title")
    p.add_argument("--actor")
    p = commands.add_parser("comment", help="add a comment to the run's task")
    p.add_argument("task")
    p.add_argument("body")
    p.add_argument("--actor")
    return parser


def main(argv: list[str]) -> int:
    """``lattice ARGS`` on the node; ``argv[0]`` is the attempt's folder."""
    folder, args = Path(argv[0]), argv[1:]
    json_mode = "--json" in args
    words = [a for a in args if a != "--json"]
    try:
        if words and words[0] not in ("show", "attach", "comment") and not words[0].startswith(
            "-"
        ):
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"`lattice {words[0]}` is not available here: {LIMIT}{RUN_LOCALLY}",
            )
        parsed = _parser().parse_args(words)
        if parsed.command is None:
            raise LatticeError(Code.INVALID_ARGUMENT, f"lattice: name a command; {LIMIT}")
        info = json.loads((folder / TASK_FILE).read_text(encoding="utf-8"))
        if info.get("error"):
            raise LatticeError(
                Code.NOT_FOUND, f"the run's task could not be read when it started: {info['error']}"
            )
        shown: dict[str, Any] = info["show"]
        task = _task(shown["task"], parsed.task)
        if parsed.command == "show":
            return _ok(json_mode, shown, lambda: _render(shown))
        actor = _actor(parsed.actor, info)
        if parsed.command == "attach":
            return _attach(folder, json_mode, info, task, actor, parsed)
        body = parsed.body.strip()
        if not body:
            raise LatticeError(Code.INVALID_ARGUMENT, "a comment needs a non-empty body")
        _save(folder, {"command": "comment", "task": task["id"], "actor": actor, "body": body})
        return _ok(
            json_mode, {"task": task, "pending": True},
            f"Comment for {_label(task)} made on the board when the attempt ends",
        )
    except LatticeError as err:
        if json_mode:
            print(json.dumps({"ok": False, "error": err.to_dict()}, sort_keys=True, default=str))
        else:
            print(f"lattice: {err.message}", file=sys.stderr)
        return exit_code_for(err.code)
    except OSError as err:
        print(f"lattice: {err}", file=sys.stderr)
        return exit_code_for(Code.IO_ERROR)


def _attach(
    folder: Path, json_mode: bool, info: dict[str, Any], task: dict[str, Any], actor: str,
    parsed: argparse.Namespace,
) -> int:
    from lattice_workers.store._ids import new_id

    role = parsed.role
    if _ROLE_RE.fullmatch(role) is None:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"invalid role {role!r}: use letters, digits and _.:- (such as review)",
        )
    known = info.get("roles") or []
    if known and role not in known:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"unknown role {role!r}: this board's roles are {', '.join(sorted(known))}",
        )
    path: Path = parsed.file
    if not path.is_file():
        raise LatticeError(Code.NOT_FOUND, f"cannot attach {path}: no such file")
    calls = folder / CALLS
    used = sum(p.stat().st_size for p in calls.rglob("*") if p.is_file())
    if len(list(calls.glob("*.json"))) >= MAX_CALLS or used + path.stat().st_size > MAX_BYTES:
        raise LatticeError(
            Code.INVALID_ARGUMENT,
            f"cannot attach {path}: a worker on a Ray node attaches at most {MAX_CALLS} "
            f"files, {MAX_BYTES // (1024 * 1024)} MiB in all, per attempt{RUN_LOCALLY}",
        )
    artifact_id = new_id("art")
    call = {
        "command": "attach", "task": task["id"], "actor": actor, "role": role,
        "title": parsed.title, "name": path.name, "artifact_id": artifact_id,
    }
    _save(folder, call, path)
    data = {"artifact_id": artifact_id, "task": task, "pending": True}
    return _ok(
        json_mode, data,
        f"Attached {path} as {artifact_id} (role: {role}) to {_label(task)} "
        "(on the board when the attempt ends)",
    )


def _save(folder: Path, call: dict[str, Any], path: Path | None = None) -> None:
    """One call, its file first, its record last (renamed in whole): a call cut short
    is never read back as made."""
    calls = folder / CALLS
    stem = f"{time.time_ns():020d}-{os.getpid()}"
    if path is not None:
        (calls / stem).mkdir()
        (calls / stem / path.name).write_bytes(path.read_bytes())
    partial = calls / f".{stem}.tmp"
    partial.write_text(json.dumps(call), encoding="utf-8")
    os.replace(partial, calls / f"{stem}.json")


def _task(snapshot: dict[str, Any], asked: str) -> dict[str, Any]:
    names = {str(snapshot.get("id") or "")}
    if snapshot.get("short_id"):
        names.add(str(snapshot["short_id"]).upper())
    if asked in names or asked.upper() in names:
        return snapshot
    raise LatticeError(
        Code.NOT_FOUND,
        f"no task {asked} here: {LIMIT}, for the run's task "
        f"{snapshot.get('short_id') or snapshot.get('id')} alone{RUN_LOCALLY}",
    )


def _actor(given: str | None, info: dict[str, Any]) -> str:
    from lattice_workers.store import validate_actor

    actor = given or os.environ.get("LATTICE_ACTOR") or info.get("default_actor")
    if not actor:
        raise LatticeError(
            Code.INVALID_ACTOR, "no actor: pass --actor (LATTICE_ACTOR is not set)"
        )
    return validate_actor(str(actor))


def _label(task: dict[str, Any]) -> str:
    return str(task.get("short_id") or task.get("id"))


def _render(shown: dict[str, Any]) -> str:
    from lattice_workers.cli.board import _render_show

    return _render_show(shown)


def _ok(json_mode: bool, data: Any, text: Any) -> int:
    if json_mode:
        print(json.dumps({"ok": True, "data": data}, sort_keys=True, default=str))
    else:
        print(text() if callable(text) else text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
