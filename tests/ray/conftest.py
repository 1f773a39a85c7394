"""A real local Ray cluster for the ``ray`` tests: a head (no CPUs, so no attempt lands
there) and two worker nodes, ``a`` and ``b``, each marked by a custom resource
(``lw_a``, ``lw_b``) so a test can send an attempt to one of them or kill one.

Every node advertises 127.0.0.2: Ray replaces 127.0.0.1 by the machine's outward
address, 127.0.0.2 is loopback too. Each ``ray start`` runs in a session of its own,
so a node is stopped (or killed mid-run) by its process group, never by ``ray stop``,
which would stop every cluster of the user on the machine. The nodes keep their cache
repositories and worktrees under the session's temporary folder (``LATTICE_RAY_DIR``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import ray
except ImportError:  # the test modules skip, with one line saying why
    ray = None

from tests.e2e.conftest import GIT_ENV, alive, processes_with_variable

pytestmark = pytest.mark.ray

RAY = str(Path(sys.executable).parent / "ray")
HOST = "127.0.0.2"
#: Bound of one ``ray start`` on a loaded two-core machine (measured: 5-15 s).
START_SECONDS = 90


@dataclass
class LocalCluster:
    """The running cluster: its address, its node folder, each node's process group."""

    address: str
    node_dir: Path
    env: dict[str, str]
    groups: dict[str, int] = field(default_factory=dict)

    def start_node(self, name: str) -> None:
        args = [
            RAY, "start", "--address", self.address, "--node-ip-address", HOST,
            "--num-cpus", "4", "--resources", f'{{"lw_{name}": 100}}', "--disable-usage-stats",
        ]
        self.groups[name] = _start(args, self.env)
        # Known to the cluster once its resource shows (ray start returns before).
        deadline = time.monotonic() + START_SECONDS
        while self.node_id(name) is None:
            assert time.monotonic() < deadline, f"node {name} did not join"
            time.sleep(0.2)

    def node_id(self, name: str) -> str | None:
        for node in ray.nodes():
            if node["Alive"] and f"lw_{name}" in node["Resources"]:
                return str(node["NodeID"])
        return None

    def node_name(self, node_id: str) -> str:
        for name in self.groups:
            if name != "head" and self.node_id(name) == node_id:
                return name
        raise AssertionError(f"no live test node has id {node_id}")

    def kill_node(self, name: str) -> None:
        """SIGKILL to every process of the node's ``ray start`` (its raylet, its
        workers, the attempt actors on it): the node dies as a machine would."""
        _kill_group(self.groups.pop(name), signal.SIGKILL)


def _start(args: list[str], env: dict[str, str]) -> int:
    proc = subprocess.Popen(
        args, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate(timeout=START_SECONDS)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    return proc.pid


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    base = tmp_path_factory.mktemp("ray")
    node_dir = base / "nodes"
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "LATTICE_RAY_DIR": str(node_dir),
        **GIT_ENV,
    }
    env.pop("RAY_ADDRESS", None)
    # A short temp folder: Ray's socket paths must fit in 107 bytes.
    temp = Path("/tmp") / f"lw-ray-{os.getpid()}"
    head = _start(
        [
            RAY, "start", "--head", "--port", "0", "--node-ip-address", HOST,
            "--num-cpus", "0", "--include-dashboard", "false", "--temp-dir", str(temp),
            "--disable-usage-stats",
        ],
        env,
    )
    address = (temp / "ray_current_cluster").read_text().strip()
    cluster = LocalCluster(address, node_dir, env, {"head": head})
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        cluster.start_node("a")
        cluster.start_node("b")
        yield cluster
    finally:
        ray.shutdown()
        for name in ("a", "b", "head"):
            if name in cluster.groups:
                _kill_group(cluster.groups[name], signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(temp)], check=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with two commits (the second changes one file)."""
    root = tmp_path / "project"
    root.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(root), *args], check=True, env={**os.environ, **GIT_ENV},
                       capture_output=True)

    git("init", "-q", "-b", "main")
    (root / "README.md").write_text("hello\n")
    (root / "data.txt").write_text("".join(f"line {i}\n" for i in range(2000)))
    git("add", ".")
    git("commit", "-qm", "first")
    return root


def nothing_left(run_id: str) -> bool:
    """No live process of the run (each has LATTICE_RUN_ID in its environment)."""
    return not processes_with_variable("LATTICE_RUN_ID", run_id)


__all__ = ["LocalCluster", "alive", "nothing_left"]
