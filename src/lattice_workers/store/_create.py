"""Creating a task: validation, short-id allocation and the first event, in one write.

The short id is allocated under the ``ids_json`` lock *together with* the task's
own locks (all taken in sorted order), and ``ids.json`` is saved only after the
``task_created`` event is durable. So a crash can at worst leave a task whose short
id ``ids.json`` does not list yet (``doctor`` reports it, ``rebuild`` restores it),
never a short id that points at no task, and two creators never get one number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store._ids import SHORT_ID_RE, new_id, validate_actor
from lattice_workers.store._jsonio import as_dict, atomic_write_json, loads, read_bytes
from lattice_workers.store._write import NewEvent, locked_write

if TYPE_CHECKING:
    from lattice_workers.store._board import Board


def _load_index(board: Board) -> dict[str, Any]:
    raw = read_bytes(board.dir / "ids.json")
    index: Any = None
    if raw is not None:
        try:
            index = loads(raw)
        except ValueError:
            index = None
    if not isinstance(index, dict):
        index = {}
    mapping = as_dict(index.get("map"))
    seqs = as_dict(index.get("next_seqs"))
    if "next_seq" in index and not seqs and mapping:  # schema 1: one counter
        prefix = next(iter(mapping)).rsplit("-", 1)[0]
        seqs = {prefix: index["next_seq"]}
    # Never hand out a number the map already uses, whatever next_seqs says.
    for short_id in mapping:
        if SHORT_ID_RE.fullmatch(short_id):
            prefix, _, num = short_id.rpartition("-")
            seqs[prefix] = max(int(seqs.get(prefix, 1)), int(num) + 1)
    out = {k: v for k, v in index.items() if k != "next_seq"}
    out.update(map=mapping, next_seqs=seqs, schema_version=2)
    return out


def _clean_tags(tags: list[str] | None) -> list[str]:
    out: list[str] = []
    for tag in tags or []:
        text = tag.strip() if isinstance(tag, str) else ""
        if not text:
            msg = f"invalid tag {tag!r}: a tag must not be empty"
            raise LatticeError(Code.INVALID_ARGUMENT, msg)
        if text not in out:
            out.append(text)
    return out


def create_task(
    board: Board,
    title: str,
    *,
    actor: str,
    status: str | None,
    priority: str | None,
    type: str | None,
    description: str | None,
    tags: list[str] | None,
    assigned_to: str | None,
) -> dict[str, Any]:
    """Validate everything, then write ``task_created``; returns the new snapshot."""
    from lattice_workers.store._board import check_priority, check_type

    validate_actor(actor)
    text = title.strip() if isinstance(title, str) else ""
    if not text:
        raise LatticeError(Code.INVALID_ARGUMENT, "a task needs a non-empty title")
    config = board.config
    workflow = board.workflow()
    status = workflow.require_status(status or str(config.get("default_status") or "backlog"))
    priority = check_priority(priority or str(config.get("default_priority") or "medium"))
    task_type = check_type(config, type or "task")
    if assigned_to is not None:
        validate_actor(assigned_to)
    data: dict[str, Any] = {"title": text, "status": status, "type": task_type}
    data["priority"] = priority
    if description:
        data["description"] = description
    clean_tags = _clean_tags(tags)
    if clean_tags:
        data["tags"] = clean_tags
    if assigned_to is not None:
        data["assigned_to"] = assigned_to

    code = config.get("project_code")
    sub = config.get("subproject_code")
    prefix = f"{code}-{sub}" if code and sub else code
    task_id = new_id("task")
    index: dict[str, Any] = {}

    def make(_snap: dict[str, Any] | None) -> list[NewEvent]:
        if prefix:
            index.update(_load_index(board))
            seq = int(index["next_seqs"].get(prefix, 1))
            short_id = f"{prefix}-{seq}"
            index["next_seqs"][prefix] = seq + 1
            index["map"][short_id] = task_id
            data["short_id"] = short_id
        return [NewEvent("task_created", data, actor)]

    def commit(_events: list[dict[str, Any]]) -> None:
        if prefix:
            atomic_write_json(board.dir / "ids.json", index)

    result = locked_write(
        board,
        task_id,
        make,
        types=["task_created"],
        creating=True,
        extra_keys=["ids_json"] if prefix else [],
        commit=commit,
    )
    board.run_hooks(result.events)
    return result.snapshot
