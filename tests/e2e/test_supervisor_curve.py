"""A supervisor with CURVE on a TCP listener: only allowed client keys get in over TCP,
and the ``ipc://`` socket (guarded by its file modes) stays as it was for the CLI."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import zmq

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol import Hello, HelloReply
from lattice_workers.protocol.client import Client
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


def test_the_cli_speaks_curve_to_a_tcp_endpoint(project: Project, tmp_path: Path) -> None:
    import zmq.auth

    server_public, server_secret = zmq.curve_keypair()
    allowed, keys = tmp_path / "clients", tmp_path / "mine"
    allowed.mkdir()
    keys.mkdir()
    public_file, secret_file = zmq.auth.create_certificates(keys, "cli")
    Path(public_file).rename(allowed / "cli.key")
    port = free_port()
    project.env.update(
        LATTICE_CURVE_SECRET_KEY=server_secret.decode(), LATTICE_CURVE_CLIENTS=str(allowed)
    )
    project.cli("supervisor", "start", "--listen", f"tcp://0.0.0.0:{port}")
    project.write_worker("Hi", command="echo hi", worktree=False)
    task = project.create_task()
    remote = dict(
        project.env,
        LATTICE_ENDPOINT=f"tcp://127.0.0.1:{port}",
        LATTICE_CURVE_SERVER_KEY=server_public.decode(),
        LATTICE_CURVE_CLIENT_CERT=str(secret_file),
    )
    run = json.loads(
        project.cli("worker", "run", "Hi", task, "--wait", "--json", env=remote).stdout
    )
    assert run["ok"] and run["data"][0]["state"] == "completed"
    assert json.loads(project.cli("worker", "ps", "-a", "--json", env=remote).stdout)["ok"]
    status = json.loads(project.cli("supervisor", "status", "--json", env=remote).stdout)
    assert status["ok"]
    # A certificate the supervisor does not know: refused at the handshake, said so.
    _, stranger = zmq.auth.create_certificates(keys, "stranger")
    refused = project.cli(
        "worker",
        "ps",
        "--json",
        env=dict(remote, LATTICE_CURVE_CLIENT_CERT=str(stranger)),
        check=False,
    )
    error = json.loads(refused.stdout)["error"]
    assert refused.returncode == 6 and error["code"] == "SUPERVISOR_UNAVAILABLE"
    assert "LATTICE_CURVE_CLIENTS" in error["message"]


@pytest.mark.parametrize(
    ("server_key", "cert", "said"),
    [
        ("good", None, "set both or neither"),
        ("not-a-key", "secret", "LATTICE_CURVE_SERVER_KEY is not a CURVE public key"),
        ("good", "public", "holds no secret key"),
        ("good", "missing", "cannot read the CURVE client certificate"),
    ],
)
def test_a_bad_curve_client_setting_is_refused_clearly(
    project: Project, tmp_path: Path, server_key: str, cert: str | None, said: str
) -> None:
    import zmq.auth

    public_file, secret_file = zmq.auth.create_certificates(tmp_path, "cli")
    certs = {"secret": str(secret_file), "public": str(public_file), "missing": "/nonexistent"}
    env = dict(
        project.env,
        LATTICE_ENDPOINT="tcp://127.0.0.1:9",  # never reached: the settings are refused first
        LATTICE_NO_AUTOSTART="1",
        LATTICE_CURVE_SERVER_KEY=zmq.curve_keypair()[0].decode()
        if server_key == "good"
        else server_key,
    )
    if cert is not None:
        env["LATTICE_CURVE_CLIENT_CERT"] = certs[cert]
    project.cli("supervisor", "start")
    proc = project.cli("worker", "ps", "--json", env=env, check=False)
    out = json.loads(proc.stdout)
    assert not out["ok"] and out["error"]["code"] == "INVALID_ARGUMENT", out
    assert said in out["error"]["message"]
