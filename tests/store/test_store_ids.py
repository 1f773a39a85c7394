"""Ids, actors and timestamps: what may reach a file path, and what may not."""

from __future__ import annotations

import re

import pytest

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store import (
    new_id,
    utc_now,
    validate_actor,
    validate_event_id,
    validate_task_id,
)

ULID = "01M854QTJN4BXTN7DTFDVA5JR2"


def test_task_id_is_accepted_in_any_case_and_canonicalized() -> None:
    assert validate_task_id(f"task_{ULID}") == f"task_{ULID}"
    assert validate_task_id(f"TASK_{ULID.lower()}") == f"task_{ULID}"


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "task_junk",
        f"task_{ULID}/../x",
        f"ev_{ULID}",
        f"task_{ULID[:-1]}",
        "task_01M854QTJN4BXTN7DTFDVA5JRI",  # I is not Crockford base32
        "",
        f"task_{ULID}\n",
        f"task_{ULID[:-1]}\u212a",  # the Kelvin sign case-folds to k, but is not ASCII
        f"tas\u212a_{ULID}",
    ],
)
def test_malformed_task_ids_are_invalid_id(bad: str) -> None:
    with pytest.raises(LatticeError) as err:
        validate_task_id(bad)
    assert err.value.code == Code.INVALID_ID
    assert repr(bad) in err.value.message


def test_event_id_needs_the_ev_prefix() -> None:
    assert validate_event_id(f"ev_{ULID}") == f"ev_{ULID}"
    with pytest.raises(LatticeError) as err:
        validate_event_id(f"task_{ULID}")
    assert err.value.code == Code.INVALID_ID


@pytest.mark.parametrize("good", ["human:ana", "agent:review-bot", "team:core", "agent:a:b"])
def test_valid_actors(good: str) -> None:
    assert validate_actor(good) == good


@pytest.mark.parametrize(
    "bad", ["ana", ":ana", "human:", "robot:x", "human: ", "human:a\nb", "Human:ana", ""]
)
def test_invalid_actors_are_invalid_actor(bad: str) -> None:
    with pytest.raises(LatticeError) as err:
        validate_actor(bad)
    assert err.value.code == Code.INVALID_ACTOR


def test_new_ids_are_prefixed_ulids_and_unique() -> None:
    ids = {new_id("ev") for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"ev_[0-9A-HJKMNP-TV-Z]{26}", i) for i in ids)


def test_utc_now_has_whole_seconds_and_z() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now())
