"""Snapshot materialization: the effect of every event type of lattice-format.md."""

from __future__ import annotations

from typing import Any

from lattice_workers.store import replay

T = "task_01M854QTJN4BXTN7DTFDVA5JR2"
_n = 0


def ev(etype: str, data: dict[str, Any], ts: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    global _n
    _n += 1
    return {
        "schema_version": 1,
        "id": f"ev_01M854QTJN4BXTN7DTFDVA{_n:04d}",
        "ts": ts,
        "type": etype,
        "task_id": T,
        "actor": "human:ana",
        "data": data,
    }


CREATED = {"title": "Fix", "status": "backlog", "priority": "medium", "type": "task"}


def test_task_created_builds_the_format_keys_and_the_tracker_keys() -> None:
    first = ev("task_created", {**CREATED, "short_id": "LAT-1"})
    snap, problems = replay([first])
    assert problems == []
    assert snap is not None
    for key, value in {
        "schema_version": 1,
        "id": T,
        "title": "Fix",
        "status": "backlog",
        "assigned_to": None,
        "created_by": "human:ana",
        "created_at": first["ts"],
        "updated_at": first["ts"],
        "relationships_out": [],
        "artifact_refs": [],
        "branch_links": [],
        "active_processes": [],
        "custom_fields": {},
        "short_id": "LAT-1",
        "last_event_id": first["id"],
        "evidence_refs": [],
        "comment_count": 0,
    }.items():
        assert snap[key] == value, key


def test_short_id_key_is_absent_when_not_given() -> None:
    snap, _ = replay([ev("task_created", CREATED)])
    assert snap is not None and "short_id" not in snap


def test_every_event_moves_last_event_id_and_updated_at() -> None:
    events = [
        ev("task_created", CREATED),
        ev("x_custom", {"a": 1}, ts="2026-01-02T00:00:00Z"),
        ev("unknown_type", {}, ts="2026-01-03T00:00:00Z"),
    ]
    snap, problems = replay(events)
    assert problems == [] and snap is not None
    assert snap["last_event_id"] == events[-1]["id"]
    assert snap["updated_at"] == "2026-01-03T00:00:00Z"


def test_status_assignment_and_fields() -> None:
    snap, problems = replay(
        [
            ev("task_created", CREATED),
            ev("status_changed", {"from": "backlog", "to": "done"}),
            ev("status_changed", {"from": "done", "to": "review"}),
            ev("assignment_changed", {"from": None, "to": "agent:bot"}),
            ev("field_updated", {"field": "title", "from": "Fix", "to": "Fix it"}),
            ev("field_updated", {"field": "custom_fields.area", "from": None, "to": "auth"}),
        ]
    )
    assert problems == [] and snap is not None
    assert snap["status"] == "review"
    assert snap["done_at"] is None and snap["reopened_count"] == 1
    assert snap["assigned_to"] == "agent:bot"
    assert snap["title"] == "Fix it"
    assert snap["custom_fields"] == {"area": "auth"}


def test_protected_field_update_is_skipped_and_reported() -> None:
    snap, problems = replay(
        [ev("task_created", CREATED), ev("field_updated", {"field": "status", "to": "done"})]
    )
    assert snap is not None and snap["status"] == "backlog"
    assert len(problems) == 1 and "protected" in problems[0]


def test_artifacts_are_listed_once_in_both_ref_lists() -> None:
    attach = {"artifact_id": "art_01M854QTJN4BXTN7DTFDVA5JR2", "role": "review"}
    snap, _ = replay(
        [
            ev("task_created", CREATED),
            ev("artifact_attached", attach),
            ev("artifact_attached", attach),
        ]
    )
    assert snap is not None
    assert snap["artifact_refs"] == [{"id": attach["artifact_id"], "role": "review"}]
    assert snap["evidence_refs"] == [
        {"id": attach["artifact_id"], "role": "review", "source_type": "artifact"}
    ]


def test_process_started_is_listed_until_its_end_event() -> None:
    started = ev(
        "process_started",
        {"process_type": "Review", "run_id": "r1", "commit_sha": "abc", "timeout_minutes": 5},
    )
    other = ev("process_started", {"process_type": "Tests", "commit_sha": "abc"})
    snap, _ = replay([ev("task_created", CREATED), started, other])
    assert snap is not None
    assert snap["active_processes"][0] == {
        "process_type": "Review",
        "started_event_id": started["id"],
        "started_at": started["ts"],
        "actor": "human:ana",
        "commit_sha": "abc",
        "timeout_minutes": 5,
        "run_id": "r1",
    }
    done = ev("process_failed", {"started_event_id": started["id"], "reason": "timeout"})
    snap, _ = replay([ev("task_created", CREATED), started, other, done])
    assert snap is not None
    assert [p["started_event_id"] for p in snap["active_processes"]] == [other["id"]]


def test_comments_count_and_role_comments_are_evidence() -> None:
    first = ev("comment_added", {"body": "a"})
    snap, _ = replay(
        [
            ev("task_created", CREATED),
            first,
            ev("comment_added", {"body": "b", "role": "review"}),
            ev("comment_deleted", {"comment_id": first["id"]}),
        ]
    )
    assert snap is not None
    assert snap["comment_count"] == 1
    assert [r["role"] for r in snap["evidence_refs"]] == ["review"]


def test_an_event_before_task_created_is_reported_not_raised() -> None:
    snap, problems = replay([ev("comment_added", {"body": "a"}), ev("task_created", CREATED)])
    assert snap is not None and snap["title"] == "Fix"
    assert len(problems) == 1 and "before the task_created" in problems[0]


def test_malformed_data_is_reported_not_raised() -> None:
    snap, problems = replay(
        [
            ev("task_created", CREATED),
            ev("status_changed", {"from": "backlog"}),
            {**ev("relationship_added", {}), "data": "nope"},
        ]
    )
    assert snap is not None and snap["status"] == "backlog"
    assert len(problems) == 2
