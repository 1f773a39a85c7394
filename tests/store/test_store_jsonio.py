"""Serialization: the exact bytes lattice-tracker writes, durable appends, tolerant reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store import append_durable, atomic_write_json, dumps_event, parse_jsonl


def test_event_line_is_sorted_compact_ascii_with_newline() -> None:
    line = dumps_event({"type": "x", "data": {"body": "café", "b": 1, "a": [1, 2]}})
    assert line == '{"data":{"a":[1,2],"b":1,"body":"caf\\u00e9"},"type":"x"}\n'
    assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":")) + "\n"


def test_event_line_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(LatticeError) as err:
        dumps_event({"data": {"x": float("nan")}})
    assert err.value.code == Code.INVALID_ARGUMENT


def test_atomic_json_is_pretty_sorted_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "snap.json"
    atomic_write_json(path, {"b": 1, "a": {"d": 2, "c": 3}})
    atomic_write_json(path, {"b": 2, "a": None})
    assert path.read_text() == '{\n  "a": null,\n  "b": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]


def test_append_after_a_torn_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"type":"a"}\n{"type":"tor')
    append_durable(path, b'{"type":"b"}\n')
    log = parse_jsonl(path.read_bytes(), "log.jsonl")
    assert [e["type"] for e in log.events] == ["a", "b"]
    assert len(log.problems) == 1 and "line 2" in log.problems[0]


def test_corrupt_lines_are_reported_with_their_line_and_the_rest_is_kept() -> None:
    data = b'{"type":"a"}\nnot json\n\n[1,2]\n{"type":"b"}\n{"type":"c"'
    log = parse_jsonl(data, "events/t.jsonl")
    assert [e["type"] for e in log.events] == ["a", "b"]
    assert len(log.problems) == 3
    assert log.problems[0].startswith("events/t.jsonl line 2: not valid JSON")
    assert "line 4" in log.problems[1]
    assert "torn final line" in log.problems[2]
