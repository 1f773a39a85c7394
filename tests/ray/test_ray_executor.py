"""RayExecutor against a real local Ray cluster (a head and two worker nodes).

Each test drives the executor's calls as an attempt does: prepare, start, copy the
output while waiting, stop (cancel or timeout), close, keep, release; and checks what
is left on the node and in the project afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' for tests/ray")

from lattice_workers.actors._executor import Launch
from lattice_workers.actors._keep import apply_to_branch, run_ref
from lattice_workers.errors import Code, LatticeError
from lattice_workers.executors.ray._config import ExecutorConfig
from lattice_workers.executors.ray._executor import (
    NodeLost,
    RayExecution,
    RayExecutor,
    Workspace,
)
from lattice_workers.store import new_id
from tests.ray.conftest import LocalCluster, nothing_left

pytestmark = pytest.mark.ray


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


#: The executors a test made: their hosts are ended after it, as a supervisor's stop does.
MADE: list[RayExecutor] = []


def executor(cluster: LocalCluster, repo: Path, **resources: float) -> RayExecutor:
    made = RayExecutor(
        repo, ExecutorConfig(kind="ray", address=cluster.address, resources=dict(resources))
    )
    MADE.append(made)
    return made


@pytest.fixture(autouse=True)
async def end_the_hosts() -> AsyncIterator[None]:
    yield
    while MADE:
        await MADE.pop().close()


class Attempt:
    """One attempt's calls, in the order the lifecycle makes them."""

    def __init__(self, ex: RayExecutor, repo: Path, tmp: Path, script: str) -> None:
        self.ex, self.repo, self.script = ex, repo, script
        self.run_id = new_id("run")
        self.log = tmp / f"{self.run_id}.log"
        self.result = tmp / f"{self.run_id}.json"
        self.commit = head(repo)
        self.workspace: Workspace | None = None
        self.execution: RayExecution | None = None

    async def start(self) -> RayExecution:
        self.workspace = await self.ex.prepare(self.run_id, self.commit)
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        env = {
            "PATH": os.environ["PATH"],
            "LATTICE_RUN_ID": self.run_id,
            "LATTICE_ROOT": str(self.repo),
            "LATTICE_RESULT_FILE": str(self.result),
        }
        launch = Launch(["bash", "-c", self.script], env, self.workspace, fd, 10**8, self.run_id, 1)
        try:
            self.execution = await trio.to_thread.run_sync(self.ex.start, launch, 2.0)
        finally:
            os.close(fd)
        return self.execution

    async def end(self, *, stopped: bool = False) -> dict[str, object] | None:
        assert self.execution is not None and self.workspace is not None
        await self.execution.close(stopped=stopped)
        changes = await self.ex.keep(
            self.workspace, run_id=self.run_id, attempt=1, base_sha=self.commit,
            actor="agent:test", task="T-1",
        )
        await self.ex.release(self.workspace)
        return changes

    async def run(self) -> tuple[int, dict[str, object] | None]:
        execution = await self.start()
        async with trio.open_nursery() as copying:
            copying.start_soon(execution.run_output)
            code = await execution.wait()
            copying.cancel_scope.cancel()
        return code, await self.end()


def node_worktrees(cluster: LocalCluster, run_id: str) -> list[Path]:
    """The run's folders on the nodes (they share this machine's disk here)."""
    return sorted(cluster.node_dir.glob(f"*/runs/{run_id}.*"))


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, check=True, text=True, env=env
    ).stdout


async def until(condition: Callable[[], bool], bound: float = 60.0) -> None:
    """Wait (in a thread, bounded) until ``condition()``: what it watches is another
    process's doing (a file, a process on a node) that no event announces here."""

    def poll() -> None:
        deadline = time.monotonic() + bound
        while not condition():
            assert time.monotonic() < deadline, f"not within {bound} s: {condition}"
            time.sleep(0.05)

    await trio.to_thread.run_sync(poll)


def logged(attempt: Attempt, text: bytes) -> Callable[[], bool]:
    return lambda: text in attempt.log.read_bytes()


async def test_a_run_on_a_node_streams_its_log_and_brings_back_result_and_work(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    script = (
        'echo "first on $LATTICE_NODE in $PWD"; '
        "while [ ! -e go ]; do sleep 0.05; done; "
        "echo changed >> README.md; echo new > new.txt; "
        "git -c user.name=w -c user.email=w@x commit -qam 'worker commit'; "
        "echo untracked > more.txt; "
        'printf \'{"verdict": "ok"}\' > "$LATTICE_RESULT_FILE"; echo last'
    )
    attempt = Attempt(executor(ray_cluster, repo), repo, tmp_path, script)
    execution = await attempt.start()
    assert attempt.workspace is not None
    worktree = Path(attempt.workspace.location.split(execution.node, 1)[1])
    async with trio.open_nursery() as copying:
        copying.start_soon(execution.run_output)
        # Live: the first line is in the local log while the worker still runs.
        await until(logged(attempt, b"first on"))
        assert execution.returncode is None
        await trio.to_thread.run_sync((worktree / "go").write_text, "")
        code = await execution.wait()
        copying.cancel_scope.cancel()
    changes = await attempt.end()
    assert code == 0
    log = attempt.log.read_text()
    assert f"first on {execution.node} in {worktree}" in log
    assert log.rstrip().endswith("last")
    assert attempt.result.read_text() == '{"verdict": "ok"}'
    assert changes is not None and changes["ref"] == run_ref(attempt.run_id, 1)
    assert changes["commits"] == 1 and changes["files_changed"] == 4  # go, README, new, more
    # Kept work is in the project, and applies there.
    apply_to_branch(repo, attempt.run_id, "from-ray")
    assert git(repo, "show", "from-ray:more.txt") == "untracked\n"
    assert node_worktrees(ray_cluster, attempt.run_id) == []  # worktree and folder gone
    assert nothing_left(attempt.run_id)


async def test_a_non_zero_exit_is_its_status_and_nothing_changed_keeps_nothing(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    attempt = Attempt(executor(ray_cluster, repo), repo, tmp_path, "echo failing >&2; exit 3")
    code, changes = await attempt.run()
    assert code == 3
    assert changes == {"files_changed": 0}
    assert "failing" in attempt.log.read_text()
    assert not attempt.result.exists()


async def test_stop_terms_the_remote_group_then_kills_it_after_the_grace(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    # The leader ignores TERM; a child in its group too: only KILL ends them.
    script = "trap '' TERM; (trap '' TERM; sleep 600) & echo up; wait"
    attempt = Attempt(executor(ray_cluster, repo), repo, tmp_path, script)
    execution = await attempt.start()
    async with trio.open_nursery() as copying:
        copying.start_soon(execution.run_output)
        await until(logged(attempt, b"up"))
        copying.cancel_scope.cancel()
    started = time.monotonic()
    await execution.stop(2.0)
    took = time.monotonic() - started
    assert execution.returncode == -9
    assert 2.0 <= took < 30
    await attempt.end(stopped=True)
    assert nothing_left(attempt.run_id)


async def test_a_worker_that_exits_on_term_ends_within_the_grace(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    attempt = Attempt(executor(ray_cluster, repo), repo, tmp_path, "echo up; exec sleep 600")
    execution = await attempt.start()
    while b"up" not in attempt.log.read_bytes():
        await execution._copy_once(1.0)
    await execution.stop(60.0)
    assert execution.returncode == -15  # TERM, long before the grace ran out
    await attempt.end(stopped=True)
    assert nothing_left(attempt.run_id)


async def test_attempts_spread_over_both_worker_nodes(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    ex = executor(ray_cluster, repo)
    attempts = [Attempt(ex, repo, tmp_path, "sleep 1") for _ in range(4)]
    async with trio.open_nursery() as nursery:
        for attempt in attempts:
            nursery.start_soon(attempt.run)
    nodes = {ray_cluster.node_name(a.execution.node) for a in attempts if a.execution}
    assert nodes == {"a", "b"}
    # One host per node served them all; it stays for the next attempt there.
    hosts = await trio.to_thread.run_sync(ex._actor_names)
    assert hosts == sorted({f"host.{a.execution.node}" for a in attempts if a.execution})
    await ex.close()
    await until(lambda: ex._actor_names() == [], 30)  # ray.kill returns before the end


async def test_the_commit_goes_as_an_incremental_bundle_once_per_node(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    ex = executor(ray_cluster, repo, lw_a=1)
    first = Attempt(ex, repo, tmp_path, "true")
    await first.run()
    again = Attempt(ex, repo, tmp_path, "test -f data.txt")
    code, _ = await again.run()
    assert code == 0
    await trio.to_thread.run_sync((repo / "README.md").write_text, "second\n")
    git(repo, "commit", "-qam", "second")
    third = Attempt(ex, repo, tmp_path, "grep -q second README.md")
    code, _ = await third.run()
    assert code == 0
    sent = ex.bundle_bytes
    assert len(sent) == 2, sent  # the first commit once, then the new one; none in between
    assert sent[1] < sent[0] / 4  # only what is new: not data.txt again


async def test_a_program_missing_on_the_node_is_a_spawn_error_naming_the_node(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    ex = executor(ray_cluster, repo)
    attempt = Attempt(ex, repo, tmp_path, "")
    attempt.workspace = await ex.prepare(attempt.run_id, attempt.commit)
    launch = Launch(["no-such-engine-xyz"], {"PATH": "/usr/bin:/bin"}, attempt.workspace, 1, 10,
                    attempt.run_id, 1)
    with pytest.raises(FileNotFoundError, match="not installed on Ray node"):
        await trio.to_thread.run_sync(ex.start, launch)
    await ex.release(attempt.workspace)
    assert node_worktrees(ray_cluster, attempt.run_id) == []


async def test_an_unreachable_cluster_is_a_clear_error(repo: Path) -> None:
    ex = RayExecutor(repo, ExecutorConfig(kind="ray", address="127.0.0.1:1"))
    started = time.monotonic()
    with pytest.raises(LatticeError) as caught:
        await ex.check()
    assert caught.value.code == Code.CLUSTER_UNAVAILABLE
    assert "ray start --head" in caught.value.message
    assert time.monotonic() - started < 10


SUPERVISOR = """
import os, sys, trio
from pathlib import Path
from lattice_workers.executors.ray._config import ExecutorConfig
from lattice_workers.executors.ray._executor import RayExecutor
from tests.ray.test_ray_executor import Launch

async def main(address, repo, commit, run_id, log):
    ex = RayExecutor(Path(repo), ExecutorConfig(kind="ray", address=address))
    ws = await ex.prepare(run_id, commit)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
    script = "echo kept > kept.txt; echo up; exec sleep 600"
    env = {"PATH": os.environ["PATH"], "LATTICE_RUN_ID": run_id}
    ex.start(Launch(["bash", "-c", script], env, ws, fd, 10**6, run_id, 1))
    print("started", flush=True)
    await trio.sleep_forever()

trio.run(main, *sys.argv[1:])
"""


async def test_after_a_supervisor_kill_9_the_next_one_settles_its_actors(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    run_id = new_id("run")
    proc = subprocess.Popen(  # noqa: ASYNC220 (it runs alone; killed below)
        [sys.executable, "-c", SUPERVISOR, ray_cluster.address, str(repo), head(repo), run_id,
         str(tmp_path / "log")],
        stdout=subprocess.PIPE, cwd=Path(__file__).parents[2],
    )
    assert proc.stdout is not None
    with trio.fail_after(120):
        line = await trio.to_thread.run_sync(proc.stdout.readline)
    assert line == b"started\n"
    proc.kill()  # kill -9: no cleanup of any kind
    proc.wait()
    assert not nothing_left(run_id)  # the worker still runs on its node
    ex = executor(ray_cluster, repo)
    settled = await ex.settle_orphans(live=lambda rid: False, grace_seconds=1.0)
    ours = [entry for entry in settled if entry["run_id"] == run_id]
    assert len(ours) == 1 and ours[0]["attempt"] == 1
    changes = ours[0]["changes"]
    assert isinstance(changes, dict) and changes["ref"] == run_ref(run_id, 1)
    assert nothing_left(run_id)
    assert node_worktrees(ray_cluster, run_id) == []
    assert await ex.settle_orphans() == []  # nothing of the board's is left on the cluster


async def test_a_node_that_dies_mid_run_ends_the_attempt_as_node_lost(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    attempt = Attempt(executor(ray_cluster, repo, lw_b=1), repo, tmp_path, "echo up; sleep 600")
    execution = await attempt.start()
    assert ray_cluster.node_name(execution.node) == "b"
    while b"up" not in attempt.log.read_bytes():
        await execution._copy_once(1.0)
    try:
        ray_cluster.kill_node("b")
        started = time.monotonic()
        with pytest.raises(NodeLost):
            await execution.wait()
        lost_after = time.monotonic() - started
        assert lost_after < 45, lost_after  # the stated bound: 30 s unanswered + 5 s poll
        await attempt.end(stopped=True)
        # The guard killed the worker's group when its actor died with the node.
        await until(lambda: nothing_left(attempt.run_id), 20)
    finally:
        ray_cluster.start_node("b")
    # The node came back with the lost attempt's worktree on its disk: the next attempt
    # there sweeps it.
    assert node_worktrees(ray_cluster, attempt.run_id)
    again = Attempt(executor(ray_cluster, repo, lw_b=1), repo, tmp_path, "true")
    assert (await again.run())[0] == 0
    assert node_worktrees(ray_cluster, attempt.run_id) == []


async def test_waiting_for_a_node_holds_no_thread(
    ray_cluster: LocalCluster, repo: Path, tmp_path: Path
) -> None:
    """Each live run has a long poll in flight; were each a thread, Trio's 40 would cap
    the runs a supervisor can follow. With every thread taken, a run still ends."""
    attempt = Attempt(executor(ray_cluster, repo), repo, tmp_path, "sleep 1; echo done")
    execution = await attempt.start()
    limiter = trio.to_thread.current_default_thread_limiter()
    held = limiter.total_tokens
    release = trio.Event()

    async def hold_one() -> None:
        async with limiter:
            await release.wait()

    try:
        async with trio.open_nursery() as holders:
            for _ in range(held):
                holders.start_soon(hold_one)
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.available_tokens == 0
            with trio.fail_after(60):
                assert await execution.wait() == 0
                await execution.run_output()
            release.set()
    finally:
        release.set()
    await attempt.end()
    assert "done" in attempt.log.read_text()
