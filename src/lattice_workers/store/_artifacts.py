"""Artifacts: a payload file and its metadata, attached to a task by one event.

The payload and the metadata are written (atomically) *before* the
``artifact_attached`` event, so the board never references an artifact whose files
are missing; if the event cannot be written, both files are removed again.
Metadata has the shape ``lattice-tracker`` writes.
"""

from __future__ import annotations

import mimetypes
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.errors import Code, LatticeError, io_error
from lattice_workers.store._ids import (
    new_id,
    parse_prefixed_id,
    utc_now,
    validate_actor,
    validate_task_id,
)
from lattice_workers.store._jsonio import atomic_write_json, fsync_dir
from lattice_workers.store._workflow import configured_roles
from lattice_workers.store._write import WriteResult

if TYPE_CHECKING:
    from lattice_workers.store._board import Board

_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9_-]{1,16}")
_ROLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def _copy_durably(src: Path, dest: Path) -> int:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp.")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(dest.parent)
    return size


def attach_file(
    board: Board,
    task_id: str,
    path: Path,
    *,
    role: str | None,
    actor: str,
    title: str | None,
    run_hooks: bool = True,
    artifact_id: str | None = None,
) -> WriteResult:
    """Copy ``path`` into ``artifacts/payload``, write its meta, append the event.
    ``run_hooks=False``: the caller runs the board's hooks for the result's events
    (the supervisor does, off its thread hops). ``artifact_id``: the id to use, chosen
    earlier (a worker on a Ray node was told it when it asked; the supervisor attaches
    the file once the attempt ends); a new one by default."""
    task_id = validate_task_id(task_id)
    chosen = None
    if artifact_id is not None:
        chosen = parse_prefixed_id(artifact_id, "art")
        if chosen is None:
            raise LatticeError(Code.INVALID_ID, f"invalid artifact id {artifact_id!r}")
    validate_actor(actor)
    if role is not None:
        if _ROLE_RE.fullmatch(role) is None:
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"invalid role {role!r}: use letters, digits and _.:- (such as review)",
            )
        known = configured_roles(board.config)
        if known and role not in known:
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"unknown role {role!r}: this board's roles are {', '.join(sorted(known))}",
            )
    if not path.is_file():
        raise LatticeError(Code.NOT_FOUND, f"cannot attach {path}: no such file")
    if not board.task_exists(task_id):
        raise LatticeError(Code.NOT_FOUND, f"no task {task_id} on this board")

    art_id = chosen or new_id("art")
    suffix = path.suffix if _SAFE_SUFFIX.fullmatch(path.suffix) else ""
    payload = board.dir / "artifacts" / "payload" / f"{art_id}{suffix}"
    meta_path = board.dir / "artifacts" / "meta" / f"{art_id}.json"
    if chosen is not None and meta_path.exists():
        raise LatticeError(Code.CONFLICT, f"artifact {art_id} is already on this board")
    try:
        payload.parent.mkdir(parents=True, exist_ok=True)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise io_error(err, f"attach {path}") from err
    try:
        try:
            size = _copy_durably(path, payload)
        except OSError as err:
            raise io_error(err, f"attach {path}") from err
        atomic_write_json(
            meta_path,
            {
                "schema_version": 1,
                "id": art_id,
                "type": "file",
                "title": title or path.name,
                "summary": None,
                "created_at": utc_now(),
                "created_by": actor,
                "model": None,
                "tags": [],
                "payload": {
                    "file": payload.name,
                    "content_type": mimetypes.guess_type(path.name)[0],
                    "size_bytes": size,
                },
                "token_usage": None,
                "sensitive": False,
                "custom_fields": {},
            },
        )
        data: dict[str, Any] = {"artifact_id": art_id}
        if role is not None:
            data["role"] = role
        result = board.append(task_id, "artifact_attached", data, actor=actor, hooks=False)
    except BaseException:
        for leftover in (payload, meta_path):
            try:
                leftover.unlink()
            except OSError:
                pass
        raise
    if run_hooks:
        board.run_hooks(result.events)
    return result
