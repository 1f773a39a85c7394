"""A worker gets the environment of the client that asked for it (issue 17).

Not a stale copy from when the supervisor started: a credential exported afterwards
reaches the worker. It is never written to disk, never taken from a plain TCP
connection, and a hook-started run gets the hook's environment.
"""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

from lattice_workers.protocol._messages import Run, RunReply, Wait
from lattice_workers.protocol.client import Client
from tests.e2e.conftest import Project

PROBE = 'printf "%s|%s|%s" "${LATE_SECRET:-unset}" "${LATTICE_SMUGGLED:-unset}" "$PATH" > "$OUT"'


def _probe(project: Project, out: Path) -> None:
    project.write_worker("Probe", command=PROBE, env={"OUT": str(out)})


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def test_a_variable_exported_after_the_start_reaches_the_worker_and_no_disk(
    project: Project, tmp_path: Path
) -> None:
    out = tmp_path / "seen"
    _probe(project, out)
    task = project.create_task()
    project.configure_workers(max_concurrent=1)
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1)
    project.cli("supervisor", "start")
    secret = f"sk-{uuid.uuid4().hex}"
    later = dict(project.env, LATE_SECRET=secret, LATTICE_SMUGGLED="x")
    sleeper = project.json("worker", "run", "Sleeper", project.create_task())["data"]
    queued = json.loads(project.cli("worker", "run", "Probe", task, "--json", env=later).stdout)
    assert queued["data"]["state"] == "queued"
    journal = project.root / ".lattice" / "run" / "journal.jsonl"
    assert queued["data"]["run_id"].encode() in journal.read_bytes()
    assert secret.encode() not in journal.read_bytes()  # the queued run's record
    project.cli("worker", "cancel", sleeper["run_id"])
    project.cli("worker", "wait", queued["data"]["run_id"])
    value, smuggled, path = out.read_text().split("|")
    assert value == secret and smuggled == "unset"
    assert path.split(":")[-1] == str(project.root / ".lattice" / "run" / "bin")  # `lattice`
    # Not in the journal, a log or an event: nowhere under .lattice/.
    project.cli("supervisor", "stop")
    leaked = [
        p for p in _files_under(project.root / ".lattice") if secret.encode() in p.read_bytes()
    ]
    assert leaked == []


def test_a_plain_tcp_connection_carries_no_environment(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "seen"
    _probe(project, out)
    task = project.create_task()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    project.cli("supervisor", "start", "--listen", endpoint)
    # The CLI does not send it in clear...
    over_tcp = dict(project.env, LATE_SECRET="sent-in-clear", LATTICE_ENDPOINT=endpoint)
    project.cli("worker", "run", "Probe", task, "--wait", env=over_tcp)
    assert out.read_text().split("|")[0] == "unset"
    # ...and the supervisor does not take it from a peer that does.
    with Client(endpoint, timeout=30) as client:
        reply = client.request(Run(worker="Probe", task=task, env={"LATE_SECRET": "raw"}))
        assert isinstance(reply, RunReply)
        for _ in client.stream(Wait(run_ids=[reply.run.run_id]), timeout=60):
            pass
    assert out.read_text().split("|")[0] == "unset"


def test_a_hook_started_run_gets_the_hooks_environment(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "seen"
    _probe(project, out)
    path = project.root / ".lattice" / "config.json"
    config = json.loads(path.read_text())
    config["hooks"] = {
        "transitions": {"* -> planned": "lattice worker run Probe $LATTICE_TASK_ID --wait"}
    }
    path.write_text(json.dumps(config))
    task = project.create_task()
    project.cli("supervisor", "start")
    project.cli("status", task, "planned", env=dict(project.env, LATE_SECRET="from-the-hook"))
    assert out.read_text().split("|")[0] == "from-the-hook"


async def test_an_mcp_run_gets_the_mcp_servers_environment(
    project: Project, tmp_path: Path
) -> None:
    import pytest

    pytest.importorskip("mcp")
    from tests.e2e import test_mcp

    out = tmp_path / "seen"
    _probe(project, out)
    task = project.create_task()
    project.cli("supervisor", "start")
    project.env = dict(project.env, LATE_SECRET="from-the-agent")
    async with test_mcp.session(project) as client:
        done = await test_mcp.call(
            client, "run_worker", worker="Probe", task=task, wait=True, wait_seconds=60
        )
    assert done["run"]["state"] == "completed", done
    assert out.read_text().split("|")[0] == "from-the-agent"
