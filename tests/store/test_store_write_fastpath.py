"""The write path's shortcuts write exactly what the plain way wrote, and miss nothing.

A write formats its snapshot with ``msgspec`` when the process has it (the bytes of
``json.dumps(indent=2)``), keeps the snapshot file's bytes to decode it only when it
changed, grows a log's set of event ids in place, and names its temp files without
``tempfile``. Each test pins what the shortcut must not change.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec  # noqa: F401  (imported: dumps_pretty takes the msgspec way, as in the supervisor)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store import Board, _jsonio, new_id
from lattice_workers.store import _replay_cache as cache

from .conftest import ACTOR


@pytest.fixture(autouse=True)
def _cold_cache() -> Iterator[None]:
    cache.forget_all()
    yield
    cache.forget_all()


def stdlib_pretty(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=2, allow_nan=False) + "\n"


def on_disk(board: Board, task_id: str) -> dict[str, Any]:
    return json.loads(board.snapshot_path(task_id).read_text())


# Any text (lone surrogates and control characters too), floats at their edges,
# integers past 64 bits, nested empty containers, tuples, non-string keys.
_text = st.text(st.characters(blacklist_categories=()), max_size=8)
_floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [1e16, -0.0, 5e-324, 1.7976931348623157e308, 1e-7, 0.1, 1e22, 123456789012345678.0]
)
_scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(-(2**200), 2**200) | _floats | _text
)
_keys = _text | st.integers() | _floats | st.booleans()
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(_text, inner, max_size=4)
        | st.dictionaries(_keys, inner, max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None)
@given(_values)
def test_pretty_json_through_msgspec_is_byte_identical_to_the_stdlib(value: Any) -> None:
    try:
        expected = stdlib_pretty(value)
    except (TypeError, ValueError):  # mixed key types cannot be sorted: refused both ways
        with pytest.raises(LatticeError):
            _jsonio.dumps_pretty(value)
        return
    fast = _jsonio._pretty_with_msgspec(value)
    if fast is not None:
        assert fast + "\n" == expected
    assert _jsonio.dumps_pretty(value) == expected


def test_a_snapshot_takes_the_msgspec_way_and_a_lone_surrogate_the_stdlib_way(
    board: Board, task_id: str
) -> None:
    snapshot = on_disk(board, task_id)
    snapshot["x_note"] = {"empty": {}, "none": [], "text": "café ☃ 😀", "float": 1e16}
    assert _jsonio._pretty_with_msgspec(snapshot) is not None
    assert _jsonio.dumps_pretty(snapshot) == stdlib_pretty(snapshot)
    odd = {"text": "\ud800"}  # msgspec refuses the escape json writes for it
    assert _jsonio._pretty_with_msgspec(odd) is None
    assert _jsonio.dumps_pretty(odd) == stdlib_pretty(odd)
    with pytest.raises(LatticeError) as err:
        _jsonio.dumps_pretty({"x": float("nan")})
    assert err.value.code == Code.INVALID_ARGUMENT


def test_a_cli_write_does_not_import_msgspec(board: Board, task_id: str) -> None:
    script = (
        "import sys; from pathlib import Path; from lattice_workers.store import Board; "
        f"Board(Path(sys.argv[1])).comment({task_id!r}, 'hi', actor={ACTOR!r}); "
        "assert 'msgspec' not in sys.modules, 'msgspec was imported'"
    )
    subprocess.run([sys.executable, "-c", script, str(board.root)], check=True, timeout=60)
    assert on_disk(board, task_id)["comment_count"] == 1


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def loads(data: bytes | str) -> Any:
        calls.append(1)
        return json.loads(data)

    monkeypatch.setattr(cache, "loads", loads)
    return calls


def test_a_write_after_our_own_write_does_not_decode_the_snapshot_file(
    board: Board, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    board.comment(task_id, "first", actor=ACTOR)
    decodes = count_decodes(monkeypatch)
    for n in range(3):
        board.comment(task_id, f"again {n}", actor=ACTOR)
    assert decodes == []
    assert on_disk(board, task_id) == board.replay(task_id)


def test_a_same_size_rewrite_in_place_right_after_our_write_is_noticed(
    board: Board, task_id: str
) -> None:
    """Same inode, same size, same clock tick: only the bytes tell it changed."""
    board.comment(task_id, "ours", actor=ACTOR)
    path = board.snapshot_path(task_id)
    before = path.read_bytes()
    edited = before.replace(b'"tags": null', b'"tagz": null')  # a key replay does not give
    assert len(edited) == len(before) and edited != before
    with path.open("r+b") as fh:
        fh.write(edited)
    board.comment(task_id, "next", actor=ACTOR)
    assert on_disk(board, task_id)["tagz"] is None


def test_a_key_another_tool_adds_is_carried_over_by_every_later_write(
    board: Board, task_id: str
) -> None:
    board.comment(task_id, "ours", actor=ACTOR)
    path = board.snapshot_path(task_id)
    snap = json.loads(path.read_text())
    snap["x_future_key"] = {"nested": [1]}
    path.write_text(json.dumps(snap, indent=2))
    for n in range(3):
        board.comment(task_id, f"c{n}", actor=ACTOR)
        assert on_disk(board, task_id)["x_future_key"] == {"nested": [1]}


def test_changing_a_returned_snapshot_does_not_change_the_next_write(
    board: Board, task_id: str
) -> None:
    path = board.snapshot_path(task_id)
    path.write_text(json.dumps({**json.loads(path.read_text()), "x_future_key": 1}))
    result = board.append(task_id, "process_started", {"process_type": "W"}, actor="agent:w")
    assert result.snapshot["x_future_key"] == 1  # carried over
    del result.snapshot["x_future_key"]
    result.snapshot["active_processes"].append({"started_event_id": "ev_fake"})
    result = board.comment(task_id, "next", actor=ACTOR)
    assert on_disk(board, task_id) == {**board.replay(task_id), "x_future_key": 1}
    result.snapshot["x_not_on_disk"] = 1
    board.comment(task_id, "again", actor=ACTOR)
    after = on_disk(board, task_id)
    assert "x_not_on_disk" not in after
    assert len(after["active_processes"]) == 1
    assert after == {**board.replay(task_id), "x_future_key": 1}


def test_an_unfinished_line_counts_for_one_write_but_not_for_the_next(
    board: Board, task_id: str
) -> None:
    """Its id is refused while the line is there; the remembered ids never keep it."""
    chosen = new_id("ev")
    board.comment(task_id, "ours", actor=ACTOR)
    log = board.events_path(task_id)
    clean = log.read_bytes()
    line = {
        "schema_version": 1,
        "id": chosen,
        "ts": "2026-11-24T03:00:00Z",
        "type": "comment_added",
        "task_id": task_id,
        "actor": "human:other",
        "data": {"body": "in flight"},
    }
    log.write_bytes(clean + json.dumps(line).encode())  # no newline yet
    with pytest.raises(LatticeError) as err:
        board.append(task_id, "x_note", {}, actor=ACTOR, event_id=chosen)
    assert err.value.code == Code.CONFLICT
    log.write_bytes(clean)  # the other tool's write never completed
    board.append(task_id, "x_note", {}, actor=ACTOR, event_id=chosen)
    assert on_disk(board, task_id)["last_event_id"] == chosen


def test_the_event_budget_counts_each_remembered_id_once(board: Board) -> None:
    def remembered() -> int:
        return sum(len(mark.ids) for mark in cache._marks._by_log.values())

    tasks = [board.create_task(f"t{n}", actor=ACTOR)["id"] for n in range(2)]
    for n in range(5):
        for task in tasks:
            board.comment(task, f"c{n}", actor=ACTOR)
    lines = sum(len(board.events_path(t).read_bytes().splitlines()) for t in tasks)
    # A mark holds the log as its last write read it: all but that write's own line.
    assert cache._marks._events == remembered() == lines - len(tasks)
    copy = board.events_path(tasks[0]).read_bytes()
    board.events_path(tasks[0]).unlink()
    board.events_path(tasks[0]).write_bytes(copy)  # a new inode: replayed from the start
    board.comment(tasks[0], "after a copy", actor=ACTOR)
    assert cache._marks._events == remembered() == lines - len(tasks) + 1


def test_snapshots_are_written_0600_through_a_fresh_temp_name(
    board: Board, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import itertools

    tasks = board.dir / "tasks"
    monkeypatch.setattr(_jsonio, "_temp_numbers", itertools.count())
    stale = tasks / f".tmp.{os.getpid()}.0"  # as a crashed process with our pid left it
    stale.write_bytes(b"stale")
    board.comment(task_id, "hi", actor=ACTOR)
    assert stale.read_bytes() == b"stale"
    assert sorted(p.name for p in tasks.iterdir() if p.name.startswith(".tmp.")) == [stale.name]
    assert stat.S_IMODE(board.snapshot_path(task_id).stat().st_mode) == 0o600
    assert on_disk(board, task_id)["comment_count"] == 1


def test_string_paths_name_the_same_files_as_the_path_helpers(board: Board) -> None:
    task_id = "task_" + "0" * 26
    assert board.events_file(task_id) == os.fspath(board.events_path(task_id))
    assert board.snapshot_file(task_id) == os.fspath(board.snapshot_path(task_id))
    assert not board.task_exists(task_id)


def test_a_durable_append_creates_a_missing_log(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    _jsonio.append_durable(os.fspath(path), b'{"type":"a"}\n')
    _jsonio.append_durable(path, b'{"type":"b"}\n')
    assert path.read_bytes() == b'{"type":"a"}\n{"type":"b"}\n'
