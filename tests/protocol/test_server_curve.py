"""CURVE on TCP: encryption, and an allow-list of client keys (ZAP) deciding who gets in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import zmq
import zmq.auth

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol import Hello, HelloReply
from lattice_workers.protocol.aclient import AsyncClient
from lattice_workers.supervisor._main import CurveSettings
from lattice_workers.supervisor._server import serve
from lattice_workers.supervisor._zap import ClientKeys
from tests.protocol.fake_supervisor import FakeSupervisor

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq was built without CURVE")


def keypair_with_certificate(folder: Path, name: str) -> tuple[bytes, bytes]:
    public, secret = zmq.curve_keypair()
    (folder / f"{name}.key").write_text(
        f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
    )
    return public, secret


async def says_hello(endpoint: str, server_key: bytes, keypair: tuple[bytes, bytes] | None) -> bool:
    async with AsyncClient(endpoint, curve_server_key=server_key, curve_keypair=keypair) as c:
        try:
            return isinstance(await c.request(Hello(), timeout=1.5), HelloReply)
        except LatticeError as err:
            assert err.code == Code.SUPERVISOR_UNAVAILABLE  # the handshake never completes
            return False


async def test_only_clients_whose_key_is_in_the_folder_get_in(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    public, secret = zmq.curve_keypair()
    allowed = keypair_with_certificate(tmp_path, "ana")
    clients = ClientKeys(tmp_path)
    assert clients.load() == 1
    bound = await nursery.start(
        lambda task_status: serve(
            "tcp://0.0.0.0:*",
            FakeSupervisor(),
            curve_secret_key=secret,
            curve_clients=clients,
            task_status=task_status,
        )
    )
    endpoint = "tcp://127.0.0.1:" + bound.rsplit(":", 1)[1]
    assert await says_hello(endpoint, public, allowed)
    stranger = zmq.curve_keypair()
    assert not await says_hello(endpoint, public, stranger)
    assert not await says_hello(endpoint, public, None)  # a fresh pair is a stranger too
    # Reading the folder again (what `lattice supervisor reload` does) lets a new key in
    # and shuts a removed one out.
    (tmp_path / "bob.key").write_text(
        f'curve\n    public-key = "{stranger[0].decode()}"\n'
    )
    (tmp_path / "ana.key").unlink()
    assert clients.load() == 1
    assert await says_hello(endpoint, public, stranger)
    assert not await says_hello(endpoint, public, allowed)


async def test_curve_without_an_allow_list_is_refused_beyond_loopback() -> None:
    _, secret = zmq.curve_keypair()
    with pytest.raises(LatticeError) as info:
        await serve("tcp://0.0.0.0:*", FakeSupervisor(), curve_secret_key=secret)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "LATTICE_CURVE_CLIENTS" in info.value.message


async def test_curve_on_loopback_encrypts_without_an_allow_list(nursery: trio.Nursery) -> None:
    public, secret = zmq.curve_keypair()
    bound = await nursery.start(
        lambda task_status: serve(
            "tcp://127.0.0.1:*", FakeSupervisor(), curve_secret_key=secret, task_status=task_status
        )
    )
    assert await says_hello(bound, public, None)
    async with AsyncClient(bound) as plain:  # no CURVE at all: no handshake
        with pytest.raises(LatticeError) as info:
            await plain.request(Hello(), timeout=0.5)
    assert info.value.code == Code.SUPERVISOR_UNAVAILABLE


def test_a_missing_certificate_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LatticeError) as info:
        ClientKeys(tmp_path / "nope").load()
    assert info.value.code == Code.INVALID_ARGUMENT
    assert str(tmp_path / "nope") in info.value.message


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"LATTICE_CURVE_SECRET_KEY": "x" * 40}, "both"),
        ({"LATTICE_CURVE_CLIENTS": "/keys"}, "both"),
        ({"LATTICE_CURVE_SECRET_KEY": "not a key", "LATTICE_CURVE_CLIENTS": "/k"}, "40 Z85"),
        ({"LATTICE_CURVE_SECRET_KEY": "~" * 40, "LATTICE_CURVE_CLIENTS": "/k"}, "40 Z85"),
    ],
)
def test_curve_settings_are_both_or_none_and_the_key_is_checked(
    environ: dict[str, str], fragment: str
) -> None:
    with pytest.raises(LatticeError) as info:
        CurveSettings.from_environment(environ)
    assert info.value.code == Code.INVALID_ARGUMENT and fragment in info.value.message


def test_curve_settings_from_a_good_environment() -> None:
    _, secret = zmq.curve_keypair()
    assert CurveSettings.from_environment({}) is None
    settings = CurveSettings.from_environment(
        {"LATTICE_CURVE_SECRET_KEY": secret.decode(), "LATTICE_CURVE_CLIENTS": "/keys"}
    )
    assert settings is not None and settings.secret_key == secret
    assert settings.clients.folder == Path("/keys")


def test_refusals_are_logged_at_most_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clients = ClientKeys(tmp_path)
    allowed = keypair_with_certificate(tmp_path, "ana")[0]
    clients.load()
    caplog.set_level("WARNING", logger="lattice_workers.supervisor.zap")
    assert clients.callback("", allowed)
    assert not any(clients.callback("", b"x" * 40) for _ in range(500))
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "refused 1 " in refusals[0].getMessage()
    assert clients.refused == 499  # counted, to be reported with the next warning


def test_the_supervisor_keeps_its_secret_key_out_of_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lattice_workers.store import Board
    from lattice_workers.supervisor._main import Supervisor

    _, secret = zmq.curve_keypair()
    monkeypatch.setenv("LATTICE_CURVE_SECRET_KEY", secret.decode())
    monkeypatch.setenv("LATTICE_CURVE_CLIENTS", str(tmp_path))
    board = Board.init(tmp_path, project_code="LAT")
    sup = Supervisor(board, endpoints=["tcp://127.0.0.1:0"])
    assert sup.curve is not None and sup.curve.secret_key == secret
    assert "LATTICE_CURVE_SECRET_KEY" not in os.environ  # hooks and git inherit it
    assert "LATTICE_CURVE_SECRET_KEY" not in sup.ctx.environ  # workers start from this


async def test_refusals_counted_in_between_are_reported_when_the_minute_is_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    from lattice_workers.supervisor import _zap

    caplog.set_level("WARNING", logger="lattice_workers.supervisor.zap")
    clients = ClientKeys(tmp_path)
    clients.load()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth = _zap.start_authenticator(ctx, clients)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_zap.answer, auth, clients)
            for _ in range(3):  # a burst, then silence
                clients.callback("", b"y" * 40)
            assert clients.refused == 2  # the first was logged at once
            await trio.sleep(_zap.REFUSAL_LOG_INTERVAL_S + 1)  # virtual time: no handshake
            assert clients.refused == 0
            nursery.cancel_scope.cancel()
    finally:
        auth.stop()
        ctx.term()
    messages = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(messages) == 2
    assert messages[0].startswith("refused 1 ") and messages[1].startswith("refused 2 ")
