"""Runs on a Ray cluster through the real supervisor and the real command: a board
whose ``workers.executor`` names the local test cluster, definitions with
``"executor": "ray"``. Same records, same commands as locally."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' for tests/ray")

from lattice_workers.executors.ray._local import LocalCluster
from tests.e2e.conftest import Project, alive, make_project, stop_everything
from tests.ray.conftest import nothing_left

pytestmark = pytest.mark.ray


def until(condition: Callable[[], Any], bound: float = 60.0) -> Any:
    deadline = time.monotonic() + bound
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {bound} s"
        time.sleep(0.1)
    return value


@pytest.fixture
def board(ray_cluster: LocalCluster, tmp_path: Path) -> Iterator[Project]:
    project = make_project(tmp_path)
    project.configure_workers(executor={"kind": "ray", "address": ray_cluster.address})
    project.write_worker(
        "Build",
        executor="ray",
        kill_grace_seconds=1,
        command='echo "built on $LATTICE_NODE"; echo built > out.txt; '
        'echo \'{"ok": true}\' > "$LATTICE_RESULT_FILE"; sleep "${PAUSE:-0}"',
    )
    project.write_worker("Sleeper", executor="ray", kill_grace_seconds=1,
                         command='echo kept > kept.txt; lattice comment "$LATTICE_TASK_ID" '
                         '"before the end"; echo up; sleep 600')
    project.write_worker("Here", executor="local", command="echo local")
    project.write_worker("Nowhere", executor="ray", command="no-such-engine-xyz --go")
    project.git("add", "workers")
    project.git("commit", "-qm", "workers")
    project.cli("supervisor", "start")
    try:
        yield project
    finally:
        stop_everything(project)


def test_a_run_on_the_cluster_has_the_records_and_commands_of_a_local_one(
    board: Project, ray_cluster: LocalCluster
) -> None:
    task = board.create_task()
    run = board.json("worker", "run", "Build", task, "--wait", timeout=180)["data"][0]
    assert run["state"] == "completed", run
    node = run["node"]
    assert ray_cluster.node_name(node) in {"a", "b"}
    assert run["worktree_path"].startswith("ray://")
    assert run["result"] == {"ok": True}
    logs = board.cli("worker", "logs", run["run_id"]).stdout
    assert f"built on {node}" in logs
    started, ended = board.process_events(task)
    assert started["type"] == "process_started" and ended["type"] == "process_completed"
    changes = ended["data"]["changes"]
    assert changes["ref"] == f"refs/lattice/runs/{run['run_id']}/1"
    assert "out.txt" in board.cli("worker", "diff", run["run_id"]).stdout
    table = board.cli("worker", "ps", "-a").stdout
    assert "NODE" in table.splitlines()[0] and node[:12] in table
    # The log streams while it runs: --follow prints it as locally, until the end.
    followed = board.cli("worker", "run", "Build", board.create_task("again"), "--follow",
                         timeout=180)
    assert "built on " in followed.stdout
    # A definition that says "local" still runs here, beside the cluster's.
    here = board.json("worker", "run", "Here", task, "--wait", timeout=60)["data"][0]
    assert here["state"] == "completed" and "node" not in here
    # A program that no node has is refused as one missing here is: nothing written.
    other = board.create_task("nowhere")
    proc = board.cli("worker", "run", "Nowhere", other, "--json", check=False)
    reply = json.loads(proc.stdout)
    assert reply["error"]["code"] == "ENGINE_NOT_FOUND", reply
    assert "'no-such-engine-xyz' is not installed on any node of the Ray cluster" in (
        reply["error"]["message"]
    )
    assert board.process_events(other) == []


def test_runs_spread_over_both_nodes_and_a_duplicate_storm_starts_one(
    board: Project, ray_cluster: LocalCluster
) -> None:
    tasks = [board.create_task(f"t{i}") for i in range(4)]
    env = {**board.env, "PAUSE": "0"}
    # Eight requests for one key at once: exactly one run.
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(
            lambda _: json.loads(board.cli("worker", "run", "Build", tasks[0], "--json",
                                           check=False, env=env).stdout),
            range(8),
        ))
    created = [r["data"] for r in replies if r["ok"] and r["data"].get("created")]
    assert len(created) == 1, replies
    winner = created[0]["run_id"]
    for reply in replies:
        if not reply["ok"]:
            assert reply["error"]["code"] == "ALREADY_RUNNING", reply
            assert winner in reply["error"]["message"]
        else:
            assert reply["data"]["run_id"] == winner
    started = {winner}
    runs = [board.json("worker", "run", "Build", t)["data"]["run_id"] for t in tasks[1:]]
    board.cli("worker", "wait", *started, *runs, "--timeout", "240", timeout=300)
    starts = [e for e in board.process_events(tasks[0]) if e["type"] == "process_started"]
    assert len(starts) == 1
    finished = board.json("worker", "ps", "-a")["data"]
    nodes = {ray_cluster.node_name(r["node"]) for r in finished if r.get("node")}
    assert nodes == {"a", "b"}
    assert len([r for r in finished if r["worker"] == "Build"]) == 4


def test_cancel_kills_the_remote_group_and_an_unreachable_cluster_is_refused(
    board: Project, tmp_path: Path
) -> None:
    task = board.create_task()
    run = board.json("worker", "run", "Sleeper", task)["data"]
    until(lambda: "up" in board.cli("worker", "logs", run["run_id"]).stdout, 120)
    board.cli("worker", "cancel", run["run_id"])
    done = board.json("worker", "wait", run["run_id"], "--timeout", "120", check=False,
                      timeout=150)["data"]
    ended = done[0]
    assert ended["reason"] == "cancelled", ended
    assert nothing_left(run["run_id"])
    # A second board, its cluster down: refused before anything is written.
    (tmp_path / "other").mkdir()
    other = make_project(tmp_path / "other")
    try:
        other.configure_workers(executor={"kind": "ray", "address": "127.0.0.1:1"})
        other.write_worker("Build", executor="ray", command="true")
        other.cli("supervisor", "start")
        task = other.create_task()
        proc = other.cli("worker", "run", "Build", task, "--json", check=False)
        reply = json.loads(proc.stdout)
        assert reply["error"]["code"] == "CLUSTER_UNAVAILABLE", reply
        assert proc.returncode == 6
        assert other.process_events(task) == []
    finally:
        stop_everything(other)


def test_a_supervisor_killed_9_is_settled_by_the_next_start(
    board: Project, ray_cluster: LocalCluster
) -> None:
    task = board.create_task()
    run = board.json("worker", "run", "Sleeper", task)["data"]
    run_id = run["run_id"]
    until(lambda: "up" in board.cli("worker", "logs", run_id).stdout, 120)
    pid = board.supervisor_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    until(lambda: not alive(pid), 30)
    assert not nothing_left(run_id)  # its worker still runs on its node
    board.cli("supervisor", "start", timeout=240)
    ended = board.process_events(task)[-1]
    assert ended["type"] == "process_failed" and ended["data"]["reason"] == "orphaned"
    assert nothing_left(run_id)
    # Its worker's `lattice comment` came back too, made before its end.
    events = board.events(task)
    said = [e for e in events if e["type"] == "comment_added"]
    assert [e["data"]["body"] for e in said] == ["before the end"]
    assert said[0]["actor"] == board.process_events(task)[0]["actor"]
    assert events.index(said[0]) < events.index(ended)
    # Its work came back from the node before the actor went, named by its end.
    assert board.git("show", f"refs/lattice/runs/{run_id}/1:kept.txt") == "kept"
    assert ended["data"]["changes"]["ref"] == f"refs/lattice/runs/{run_id}/1"
    assert not list(ray_cluster.node_dir.glob(f"*/runs/{run_id}.*"))  # nor its worktree


def test_doctor_reports_what_a_dead_supervisor_left_on_the_cluster_and_fix_settles_it(
    board: Project, ray_cluster: LocalCluster
) -> None:
    task = board.create_task()
    run_id = board.json("worker", "run", "Sleeper", task)["data"]["run_id"]
    until(lambda: "up" in board.cli("worker", "logs", run_id).stdout, 120)
    assert board.cli("doctor", check=False, timeout=120).returncode == 0  # all owned
    board.kill_supervisor()
    env = dict(board.env, LATTICE_NO_AUTOSTART="1")
    report = board.cli("doctor", "--json", env=env, check=False, timeout=120)
    problems = json.loads(report.stdout)["error"]["details"]
    kinds = sorted(p["kind"] for p in problems)
    # The hosts of both nodes (a request asks every node for its program), the run.
    assert kinds == ["cluster_host", "cluster_host", "cluster_run", "open_run"], kinds
    assert any(p["kind"] == "cluster_run" and p["details"]["run_id"] == run_id for p in problems)
    assert not nothing_left(run_id)  # a report changes nothing
    fixed = board.cli("doctor", "--fix", env=env, check=False, timeout=240)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert nothing_left(run_id)
    ended = board.process_events(task)[-1]
    assert ended["data"]["reason"] == "orphaned"
    assert ended["data"]["changes"]["ref"] == f"refs/lattice/runs/{run_id}/1"
    assert board.git("show", f"refs/lattice/runs/{run_id}/1:kept.txt") == "kept"
    assert board.cli("doctor", env=env, check=False, timeout=120).returncode == 0  # hosts gone


def test_a_node_killed_mid_run_ends_it_as_node_lost(
    board: Project, ray_cluster: LocalCluster
) -> None:
    board.write_worker("OnB", executor="ray", kill_grace_seconds=1,
                       command="echo up; sleep 600")
    board.configure_workers(
        executor={"kind": "ray", "address": ray_cluster.address, "resources": {"lw_b": 1}}
    )
    board.cli("supervisor", "stop", timeout=120)
    board.cli("supervisor", "start")
    task = board.create_task()
    run = board.json("worker", "run", "OnB", task)["data"]
    until(lambda: "up" in board.cli("worker", "logs", run["run_id"]).stdout, 120)
    try:
        ray_cluster.kill_node("b")
        started = time.monotonic()
        done = board.json("worker", "wait", run["run_id"], "--timeout", "90", check=False,
                          timeout=120)["data"]
        ended = done[0]
        assert ended["reason"] == "node_lost", ended
        assert time.monotonic() - started < 45
        until(lambda: nothing_left(run["run_id"]), 20)
        events = board.process_events(task)
        assert events[-1]["data"]["reason"] == "node_lost"
    finally:
        ray_cluster.start_node("b")



def test_with_when_unreachable_queue_a_run_waits_for_the_cluster_named_on_reload(
    ray_cluster: LocalCluster, tmp_path: Path
) -> None:
    """``when_unreachable: "queue"``: a run asked for while the cluster does not answer
    is accepted and queued, nothing on the board; once the config (reloaded: the
    executor follows it) names a cluster that answers, it starts there."""
    project = make_project(tmp_path)
    down = {"kind": "ray", "address": "127.0.0.1:1", "when_unreachable": "queue"}
    project.configure_workers(executor=down)
    project.write_worker("Build", executor="ray", command="echo built on $LATTICE_NODE")
    project.write_worker("Here", executor="local", command="echo local")
    project.git("add", "workers")
    project.git("commit", "-qm", "workers")
    project.cli("supervisor", "start")
    try:
        task = project.create_task()
        run = project.json("worker", "run", "Build", task)["data"]
        assert run["state"] == "queued", run
        # A local run is not held back behind it.
        here = project.json("worker", "run", "Here", task, "--wait", timeout=60)["data"][0]
        assert here["state"] == "completed"
        assert project.json("worker", "show", run["run_id"])["data"]["state"] == "queued"
        on_board = {e["data"]["run_id"] for e in project.process_events(task)}
        assert on_board == {here["run_id"]}  # nothing of the queued one
        project.configure_workers(executor={**down, "address": ray_cluster.address})
        project.cli("supervisor", "reload")
        done = project.json("worker", "wait", run["run_id"], "--timeout", "120",
                            timeout=150)["data"][0]
        assert done["state"] == "completed", done
        assert ray_cluster.node_name(done["node"]) in {"a", "b"}
        # Joined now: another address is refused at reload, and changes nothing.
        project.configure_workers(executor={**down, "address": "127.0.0.1:2"})
        refused = project.cli("supervisor", "reload", check=False)
        assert refused.returncode != 0 and "restart the supervisor" in refused.stderr
        again = project.json("worker", "run", "Build", project.create_task("again"), "--wait",
                             timeout=150)["data"][0]
        assert again["state"] == "completed", again
    finally:
        stop_everything(project)


def test_an_agent_runs_on_the_cluster_with_its_prompt_stream_and_report(
    board: Project, ray_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The prompt goes to the node on stdin, the stream comes back through the agent's
    reader (the log is a transcript, the terminal event has ``agent``), the report
    written into the node's output folder is attached."""
    from tests.e2e.test_agent_budgets import install_standins
    from tests.e2e.test_agent_runs import PROMPT

    bin_dir = install_standins(tmp_path / "bin")
    calls = tmp_path / "calls"
    board.env = {**board.env, "PATH": f"{bin_dir}{os.pathsep}{board.env['PATH']}",
                 "STANDIN_RECORD": str(calls), "STANDIN_REPORT": "# Review\nVerdict: ok\n"}
    (board.root / "prompt.md").write_text(PROMPT)
    board.write_worker("Agent", engine="codex", prompt_file="prompt.md", executor="ray",
                       artifact_role="review")
    board.git("add", "prompt.md", "workers")
    board.git("commit", "-qm", "agent")
    task = board.create_task()
    run = board.json("worker", "run", "Agent", task, "--wait", timeout=180)["data"][0]
    assert run["state"] == "completed", run
    assert ray_cluster.node_name(run["node"]) in {"a", "b"}
    [call] = [json.loads(p.read_text()) for p in calls.iterdir()]
    assert call["stdin"] == PROMPT
    node_outputs = call["output_dir"]
    assert "/runs/" in node_outputs and node_outputs.endswith("/outputs")  # the node's
    # Its sandbox was told of the node's folder, not the supervisor's.
    assert call["argv"][call["argv"].index("--add-dir") + 1] == node_outputs
    ended = board.process_events(task)[-1]
    assert ended["data"]["agent"]["engine"] == "codex"
    assert ended["data"]["agent"]["error_kind"] is None
    log = board.cli("worker", "logs", run["run_id"]).stdout
    assert '"type":' not in log, "the log is a transcript, not the raw stream"
    payloads = list((board.root / ".lattice" / "artifacts" / "payload").iterdir())
    assert [p.read_text() for p in payloads] == ["# Review\nVerdict: ok\n"]


def test_shipped_workers_use_lattice_on_a_node_with_the_records_of_a_local_run(
    board: Project, ray_cluster: LocalCluster
) -> None:
    """TestRunner calls ``lattice attach``, ChangelogEntry ``lattice show --json``: on
    a node they reach the node's ``lattice`` (the run's task, calls made on the board
    at the attempt's end), and the board gets what a local run gives it."""
    from tests.e2e.test_shipped_workers import TESTS_OK, artifact_text, attachments

    board.cli("worker", "init")
    shipped = json.loads((board.root / "workers" / "test-runner.json").read_text())
    here = {**shipped, "name": "TestRunnerHere", "executor": "local"}
    (board.root / "workers" / "test-runner-here.json").write_text(json.dumps(here))
    (board.root / "tests").mkdir()
    (board.root / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (board.root / "tests" / "test_calc.py").write_text(TESTS_OK)
    board.git("add", "workers", "calc.py", "tests")
    board.git("commit", "-qm", "shipped workers, calc and its test")
    board.cli("supervisor", "reload")
    task = board.create_task("Add calc")

    there = board.json("worker", "run", "TestRunner", task, "--wait", timeout=180)["data"][0]
    local = board.json("worker", "run", "TestRunnerHere", task, "--wait", timeout=180)["data"][0]
    assert there["state"] == local["state"] == "completed", (there, local)
    assert ray_cluster.node_name(there["node"]) in {"a", "b"} and "node" not in local
    first, second = attachments(board, task)
    # The id the worker was told is the one on the board, attached before the run ended.
    assert there["result"]["artifact_id"] == first["data"]["artifact_id"]
    assert local["result"]["artifact_id"] == second["data"]["artifact_id"]
    events = board.events(task)
    ended = next(e for e in events if e["type"] == "process_completed")
    assert ended["data"]["run_id"] == there["run_id"]
    assert events.index(first) < events.index(ended)

    def record(event: dict[str, Any]) -> dict[str, Any]:
        art = event["data"]["artifact_id"]
        meta = json.loads(
            (board.root / ".lattice" / "artifacts" / "meta" / f"{art}.json").read_text()
        )
        return {
            "actor": event["actor"], "type": event["type"], "data": sorted(event["data"]),
            "role": event["data"]["role"], "payload": meta["payload"]["file"].removeprefix(art),
            "content_type": meta["payload"]["content_type"],
            "meta": {k: v for k, v in meta.items() if k not in ("id", "created_at", "payload")},
            "head": artifact_text(board, event).splitlines()[0],
        }

    assert record(first) == record(second)
    assert record(first)["role"] == "tests" and record(first)["actor"] == "agent:test-runner"
    assert record(first)["head"] == "# Tests: passed (1 passed)"
    # The report is in the project's report folder, as locally; it is no work of the run.
    reports = board.root / ".lattice" / "reports"
    for run in (there, local):
        assert (reports / f"tests-{task}-{run['run_id']}.md").is_file()
    changes = [e["data"].get("changes") or {} for e in board.process_events(task)[1::2]]
    assert [c.get("ref") for c in changes] == [None, None], changes

    # ChangelogEntry reads its task with `lattice show --json` on the node.
    other = board.create_task("Ship the changelog")
    run = board.json("worker", "run", "ChangelogEntry", other, "--wait", timeout=180)["data"][0]
    assert run["state"] == "completed", run
    assert ray_cluster.node_name(run["node"]) in {"a", "b"}
    assert f"+- {other}: Ship the changelog" in board.cli("worker", "diff", run["run_id"]).stdout
    assert nothing_left(there["run_id"]) and nothing_left(run["run_id"])
