"""A supervisor with CURVE on a TCP listener: only allowed client keys get in over TCP,
and the ``ipc://`` socket (guarded by its file modes) stays as it was for the CLI."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import zmq

from lattice.errors import Code, LatticeError
from lattice.protocol import Hello, HelloReply
from lattice.protocol.client import Client
from tests.e2e.conftest import Project

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq was built without CURVE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def allowed_keypair(folder: Path, name: str) -> tuple[bytes, bytes]:
    public, secret = zmq.curve_keypair()
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.key").write_text(f'curve\n    public-key = "{public.decode()}"\n')
    return public, secret


def hello(endpoint: str, server_key: bytes, keypair: tuple[bytes, bytes]) -> bool:
    with Client(endpoint, curve_server_key=server_key, curve_keypair=keypair) as client:
        try:
            return isinstance(client.request(Hello(), timeout=2), HelloReply)
        except LatticeError as err:
            assert err.code == Code.SUPERVISOR_UNAVAILABLE
            return False


def test_tcp_needs_an_allowed_key_and_the_cli_keeps_its_ipc_socket(
    project: Project, tmp_path: Path
) -> None:
    server_public, server_secret = zmq.curve_keypair()
    clients = tmp_path / "clients"
    ana = allowed_keypair(clients, "ana")
    port = free_port()
    project.env.update(
        LATTICE_CURVE_SECRET_KEY=server_secret.decode(), LATTICE_CURVE_CLIENTS=str(clients)
    )
    project.cli("supervisor", "start", "--listen", f"tcp://0.0.0.0:{port}")
    endpoint = f"tcp://127.0.0.1:{port}"
    assert hello(endpoint, server_public, ana)
    stranger = zmq.curve_keypair()
    assert not hello(endpoint, server_public, stranger)
    assert project.json("worker", "ps")["data"] == []  # the CLI, over ipc://, without keys
    # A certificate added to the folder counts after a reload, without a restart.
    (clients / "bob.key").write_text(f'curve\n    public-key = "{stranger[0].decode()}"\n')
    project.cli("supervisor", "reload")
    assert hello(endpoint, server_public, stranger)


@pytest.mark.parametrize("missing", ["LATTICE_CURVE_SECRET_KEY", "LATTICE_CURVE_CLIENTS"])
def test_half_a_curve_configuration_refuses_to_start(
    project: Project, tmp_path: Path, missing: str
) -> None:
    _, secret = zmq.curve_keypair()
    env = dict(
        project.env,
        LATTICE_CURVE_SECRET_KEY=secret.decode(),
        LATTICE_CURVE_CLIENTS=str(tmp_path),
    )
    del env[missing]
    proc = project.cli("supervisor", "start", check=False, env=env)
    assert proc.returncode != 0
    assert "LATTICE_CURVE_SECRET_KEY" in proc.stderr + proc.stdout
    assert project.cli("supervisor", "status", check=False).returncode == 6  # none runs
