"""Arbitrary frames thrown at a live server: it answers what it can and keeps serving."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lattice_workers.protocol import Error, Hello, HelloReply, decode_reply, encode
from lattice_workers.protocol.client import Client
from tests.protocol.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
# Maps that look like requests get past the first checks more often than random bytes.
_request_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["hello", "run", "get", "wait", "logs", "ps", "nope"]) | _values,
        "v": st.sampled_from([1, 2, 0]) | _values,
        "rid": st.integers(0, 2**63 - 1) | _values,
        "run_id": _values,
        "run_ids": _values,
        "worker": _values,
        "task": _values,
        "follow": _values,
    },
).map(msgspec.msgpack.encode)
_frame = st.binary(max_size=2_000) | _request_like | _values.map(msgspec.msgpack.encode)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from lattice_workers.protocol import default_endpoint
    from tests.protocol.conftest import start_server_process

    server = start_server_process(default_endpoint(tmp_path_factory.mktemp("fuzz")))
    try:
        yield server
    finally:
        server.stop()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.lists(_frame, min_size=1, max_size=3), min_size=1, max_size=4))
def test_arbitrary_frames_never_stop_the_server_answering_hello(
    fuzz_server: ServerProcess, messages: list[list[bytes]]
) -> None:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(fuzz_server.endpoint)
    try:
        for frames in messages:
            sock.send_multipart(frames)
        # Then a good request on the same connection: whatever came before, its answer
        # arrives (the garbage got Errors, or well-formed answers when it was valid).
        sock.send(encode(Hello(rid=424242)))
        while True:
            assert sock.poll(30_000), "the server stopped answering"
            reply = decode_reply(sock.recv_multipart()[-1])
            if reply.rid == 424242 and not isinstance(reply, Error):
                assert isinstance(reply, HelloReply)
                break
    finally:
        sock.close()
    assert fuzz_server.proc.poll() is None
    with Client(fuzz_server.endpoint, timeout=30) as client:
        assert isinstance(client.request(Hello()), HelloReply)
