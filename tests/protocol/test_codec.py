"""The codec: every message survives a round trip; every bad frame is a typed error."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lattice_workers.errors import Code
from lattice_workers.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    End,
    Error,
    Get,
    Hello,
    HelloReply,
    ListWorkers,
    LogChunk,
    Logs,
    Ok,
    ProtocolError,
    Ps,
    PsReply,
    Reload,
    Run,
    RunInfo,
    RunReply,
    Shutdown,
    Wait,
    WorkerInfo,
    WorkersReply,
    decode_reply,
    decode_request,
    encode,
)

RUN = RunInfo(
    run_id="run_1",
    task_id="task_1",
    worker="W",
    state="failed",
    actor="agent:w",
    exit_code=2,
    result={"a": [1, 2.5, None, "x"]},
)

REQUESTS = [
    Hello(rid=1, client="cli"),
    ListWorkers(rid=2),
    Run(rid=3, worker="W", task="LAT-1", revision="HEAD", timeout_minutes=0.5, idempotency_key="k"),
    Cancel(rid=4, run_id="run_1"),
    Cancel(rid=5, worker="W", task="LAT-1"),
    Ps(rid=6, all=True, task="LAT-1"),
    Get(rid=7, run_id="run_1"),
    Wait(rid=8, run_ids=["run_1", "run_2"]),
    Logs(rid=9, run_id="run_1", offset=10, tail=5, follow=True),
    Reload(rid=10),
    Shutdown(rid=2**63 - 1, drain=True),
]

REPLIES = [
    HelloReply(
        rid=1,
        protocol_version=1,
        server_version="0.1",
        pid=42,
        root="/r",
        socket="ipc:///r/s",
        started_at=1.5,
    ),
    WorkersReply(rid=2, workers=[WorkerInfo(name="W", path="p", valid=False, problems=["x"])]),
    RunReply(rid=3, run=RUN, created=True),
    PsReply(rid=4, runs=[RUN, RUN]),
    LogChunk(rid=5, offset=7, data=b"\x00\xffbytes"),
    Ok(rid=6, message="done"),
    End(rid=7),
    Error(rid=8, code="ALREADY_RUNNING", message="already", run=RUN),
]


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_survives_a_round_trip(req: object) -> None:
    assert decode_request(encode(req)) == req  # type: ignore[arg-type]


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: type(r).__name__)
def test_every_reply_survives_a_round_trip(reply: object) -> None:
    assert decode_reply(encode(reply)) == reply  # type: ignore[arg-type]


def test_a_request_is_a_map_tagged_by_type_with_version_and_rid() -> None:
    wire = msgspec.msgpack.decode(encode(Get(rid=5, run_id="r")))
    assert wire == {"type": "get", "v": PROTOCOL_VERSION, "rid": 5, "run_id": "r"}


def _refused(raw: object) -> ProtocolError:
    frame = raw if isinstance(raw, bytes) else msgspec.msgpack.encode(raw)
    with pytest.raises(ProtocolError) as info:
        decode_request(frame)
    return info.value


def test_undecodable_bytes_are_an_invalid_request_with_rid_zero() -> None:
    err = _refused(b"\xc1\xc1 not msgpack")
    assert (err.code, err.rid) == (Code.INVALID_REQUEST, 0)
    assert "not valid msgpack" in err.message


def test_wrong_shape_names_the_field_and_keeps_the_rid() -> None:
    err = _refused({"type": "run", "v": 1, "rid": 7, "worker": 5, "task": "t"})
    assert (err.code, err.rid) == (Code.INVALID_REQUEST, 7)
    assert "$.worker" in err.message


def test_unknown_type_is_an_invalid_request() -> None:
    err = _refused({"type": "launch_missiles", "v": 1, "rid": 3})
    assert (err.code, err.rid) == (Code.INVALID_REQUEST, 3)
    assert "launch_missiles" in err.message


def test_unknown_field_is_an_invalid_request_not_ignored() -> None:
    err = _refused({"type": "hello", "v": 1, "rid": 3, "clinet": "typo"})
    assert err.code == Code.INVALID_REQUEST and "clinet" in err.message


def test_unknown_version_is_refused_before_the_body_is_read() -> None:
    err = _refused({"type": "from_the_future", "v": 2, "rid": 9})
    assert (err.code, err.rid) == (Code.UNSUPPORTED_VERSION, 9)
    assert "version 2" in err.message


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "hello", "rid": 4},  # no v
        {"type": "hello", "v": 1},  # no rid
        {"type": "hello", "v": "1", "rid": 4},  # v of the wrong type
        {"type": "hello", "v": 1, "rid": -1},  # rid out of range
        ["hello", 1, 4],  # not a map
    ],
)
def test_missing_or_bad_header_is_an_invalid_request(raw: object) -> None:
    err = _refused(raw)
    assert err.code == Code.INVALID_REQUEST
    assert err.rid == (4 if isinstance(raw, dict) and raw.get("rid") == 4 else 0)


def test_deeply_nested_input_is_an_error_not_a_crash() -> None:
    # {"type": "hello", "v": 1, "rid": 1, "x": [[[[...100,000 deep...]]]]}
    frame = b"\x84\xa4type\xa5hello\xa1v\x01\xa3rid\x01\xa1x" + b"\x91" * 100_000 + b"\x00"
    assert _refused(frame).code == Code.INVALID_REQUEST


def test_an_unreadable_reply_is_an_internal_error_naming_the_version_question() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reply(msgspec.msgpack.encode({"type": "new_reply_kind", "rid": 3}))
    assert (info.value.code, info.value.rid) == (Code.INTERNAL, 3)
    assert "same version" in info.value.message


@given(st.binary(max_size=300))
def test_decode_request_raises_only_protocol_errors_on_arbitrary_bytes(frame: bytes) -> None:
    try:
        decode_request(frame)
    except ProtocolError as exc:
        assert exc.code in (Code.INVALID_REQUEST, Code.UNSUPPORTED_VERSION)
        assert 0 <= exc.rid < 2**63


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["type", "v", "rid", "run_id", "worker", "task", "run_ids", "follow"]),
        _json | st.sampled_from(["hello", "run", "get", "wait", "logs", 1]),
    )
)
def test_decode_request_raises_only_protocol_errors_on_arbitrary_maps(
    raw: dict[str, object],
) -> None:
    try:
        req = decode_request(msgspec.msgpack.encode(raw))
    except ProtocolError:
        return
    assert raw["v"] == PROTOCOL_VERSION and req.rid == raw["rid"]
