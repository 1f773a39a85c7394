"""``lattice-workers mcp`` through the official SDK's own client, over stdio, against a
real supervisor (started on demand by the server, as the command line does)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

mcp = pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from lattice_workers.mcp import TOOL_NAMES  # noqa: E402
from tests.e2e.conftest import Project  # noqa: E402


@asynccontextmanager
async def session(project: Project) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "lattice_workers", "mcp"],
        cwd=str(project.root),
        env=project.env,
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        yield client


async def call(client: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.isError, result.content
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


async def error_of(client: ClientSession, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.isError, result.content
    text = str(result.content[0].text)  # type: ignore[union-attr]
    return text.removeprefix(f"Error executing tool {tool}: ")  # the SDK's own words


async def test_tools_are_listed_with_descriptions_and_schemas(project: Project) -> None:
    async with session(project) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == set(TOOL_NAMES)
    for tool in tools.values():
        assert tool.description and len(tool.description) > 30, tool.name
        assert tool.inputSchema["type"] == "object"
    assert set(tools["run_worker"].inputSchema["required"]) == {"worker", "task"}


async def test_an_agent_starts_waits_reads_and_cancels_runs(project: Project) -> None:
    project.write_worker("Hello", command="echo hello from the run; exit 0")
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "workers")
    task = project.create_task("one")
    async with session(project) as client:
        workers = await call(client, "list_workers")
        assert {w["name"] for w in workers["workers"]} == {"Hello", "Sleeper"}
        tasks = await call(client, "list_tasks")
        assert [t["short_id"] for t in tasks["tasks"]] == [task]

        done = await call(client, "run_worker", worker="Hello", task=task, wait=True,
                          wait_seconds=60)
        assert done["created"] and done["ended"], done
        assert done["run"]["state"] == "completed"
        run_id = done["run"]["run_id"]
        logs = await call(client, "run_logs", run_id=run_id)
        assert "hello from the run" in logs["log"] and logs["more"] is False
        part = await call(client, "run_logs", run_id=run_id, max_bytes=5)
        assert part["more"] is True and len(part["log"]) == 5 and part["next_offset"] == 5

        sleeping = await call(client, "run_worker", worker="Sleeper", task=task)
        sleeper_id = sleeping["run"]["run_id"]
        live = await call(client, "list_runs")
        assert [r["run_id"] for r in live["runs"]] == [sleeper_id]
        refused = await error_of(client, "run_worker", worker="Sleeper", task=task)
        assert refused.startswith("ALREADY_RUNNING:") and sleeper_id in refused
        await call(client, "cancel_run", run_id=sleeper_id)
        waited = await call(client, "wait_runs", run_ids=[sleeper_id], timeout_seconds=60)
        assert [r["state"] for r in waited["ended"]] == ["failed"]
        assert waited["ended"][0]["reason"] == "cancelled" and waited["still_live"] == []

        everything = await call(client, "list_runs", finished=True)
        assert {r["run_id"] for r in everything["runs"]} == {run_id, sleeper_id}
        assert (await call(client, "get_run", run_id=run_id))["state"] == "completed"
        shown = await call(client, "show_task", task=task)
        assert [r["worker"] for r in shown["runs"]].count("Hello") == 1


async def test_errors_carry_the_protocols_code_and_change_nothing(project: Project) -> None:
    project.write_worker("Hello", command="echo hi")
    task = project.create_task("one")
    async with session(project) as client:
        assert (await error_of(client, "run_worker", worker="Nope", task=task)).startswith(
            "NOT_FOUND: no worker named 'Nope'"
        )
        assert (await error_of(client, "get_run", run_id="run_nope")).startswith("NOT_FOUND:")
        assert (await error_of(client, "show_task", task="T-99")).startswith("NOT_FOUND:")
        assert (await error_of(client, "show_task", task="../../etc")).split(":")[0] in (
            "INVALID_ID", "NOT_FOUND"
        )
        assert (await error_of(client, "cancel_run")).startswith("INVALID_ARGUMENT:")
        # Out-of-range arguments are refused by the schema, before any request.
        await error_of(client, "wait_runs", run_ids=["run_x"], timeout_seconds=10_000)
        assert (await call(client, "list_runs", finished=True))["runs"] == []
    assert project.process_events(task) == []


async def test_a_wait_returns_at_its_bound_with_the_runs_still_live(project: Project) -> None:
    project.write_worker("Sleeper", command="sleep 300", kill_grace_seconds=1)
    task = project.create_task("one")
    async with session(project) as client:
        started = await call(client, "run_worker", worker="Sleeper", task=task)
        run_id = started["run"]["run_id"]
        begun = time.monotonic()
        waited = await call(client, "wait_runs", run_ids=[run_id], timeout_seconds=1)
        took = time.monotonic() - begun
        assert waited == {"ended": [], "still_live": [run_id]}
        assert took < 20, took  # bounded: 1 s asked, generous for a loaded machine
        other = project.create_task("two")
        bounded = await call(client, "run_worker", worker="Sleeper", task=other, wait=True,
                             wait_seconds=0.5)
        assert bounded["created"] is True and bounded["ended"] is False
        assert bounded["run"]["state"] in ("preparing", "running")


async def test_run_diff_shows_the_work_a_run_kept(project: Project) -> None:
    project.write_worker("Edit", command="echo kept line > new.txt")
    project.write_worker("Look", command="true")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "workers")
    task = project.create_task("one")
    async with session(project) as client:
        edited = await call(client, "run_worker", worker="Edit", task=task, wait=True)
        run_id = edited["run"]["run_id"]
        patch = await call(client, "run_diff", run_id=run_id)
        assert "+kept line" in patch["diff"] and patch["more"] is False
        summary = await call(client, "run_diff", run_id=run_id, stat=True)
        assert "1 file changed" in summary["diff"]
        looked = await call(client, "run_worker", worker="Look", task=task, wait=True)
        nothing = await error_of(client, "run_diff", run_id=looked["run"]["run_id"])
        assert nothing.startswith("NOT_FOUND:") and "no kept work" in nothing
        assert (await error_of(client, "run_diff", run_id="../x")).startswith("INVALID_ID:")


async def test_a_follow_up_run_starts_at_the_work_a_run_kept(project: Project) -> None:
    """``from_run``: the new run's workspace holds what the first run left."""
    project.write_worker("Edit", command="echo kept line > new.txt")
    project.write_worker("Read", command='cat new.txt > "$LATTICE_LOG.seen"')
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "workers")
    task = project.create_task("one")
    async with session(project) as client:
        edited = await call(client, "run_worker", worker="Edit", task=task, wait=True)
        first = edited["run"]["run_id"]
        follow = await call(
            client, "run_worker", worker="Read", task=task, from_run=first, wait=True
        )
        assert follow["run"]["state"] == "completed", follow
        assert follow["run"]["commit_sha"] == edited["run"]["changes"]["snapshot_sha"]
        seen = trio.Path(follow["run"]["log_path"] + ".seen")
        assert await seen.read_bytes() == b"kept line\n"
        refused = await error_of(
            client, "run_worker", worker="Read", task=task, from_run=first, commit="HEAD"
        )
        assert refused.startswith("INVALID_ARGUMENT:"), refused
