"""A Ray cluster on this machine, for the tests and the benchmark: a head with no CPUs
(no attempt lands there) and worker nodes, each marked by a custom resource
``lw_<name>`` so that an attempt can be sent to one node, or a node killed.

Every node advertises 127.0.0.2: Ray replaces 127.0.0.1 by the machine's outward
address, and 127.0.0.2 is loopback too (Ray still binds some of its servers to every
interface; nothing here talks to them but this machine). Each ``ray start`` runs in a
session of its own, so a node is stopped, or killed as a machine dies, by its process
group: never by ``ray stop``, which stops every cluster of the user on the machine.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.2"
#: Bound of one ``ray start`` on a loaded two-core machine (measured: 5-15 s).
START_SECONDS = 90.0
RAY = str(Path(sys.executable).parent / "ray")


def _ray() -> Any:
    return importlib.import_module("ray")


@dataclass
class LocalCluster:
    """The running cluster: its address, the nodes' folder, each node's process group."""

    address: str
    node_dir: Path
    env: dict[str, str]
    temp: Path
    groups: dict[str, int] = field(default_factory=dict)
    #: Ids of nodes killed by :meth:`kill_node` (Ray marks them dead a while later).
    killed: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, base: Path, nodes: tuple[str, ...] = ("a", "b"), cpus: int = 4) -> LocalCluster:
        """A head and ``nodes``, joined from this process (``ray.init``)."""
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "LATTICE_RAY_DIR": str(base / "nodes"),
        }
        env.pop("RAY_ADDRESS", None)
        # A short folder: Ray's socket paths must fit in 107 bytes.
        temp = Path("/tmp") / f"lw-ray-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        head = _start(
            [RAY, "start", "--head", "--port", "0", "--node-ip-address", HOST, "--num-cpus", "0",
             "--include-dashboard", "false", "--temp-dir", str(temp), "--disable-usage-stats"],
            env,
        )
        address = (temp / "ray_current_cluster").read_text().strip()
        cluster = cls(address, base / "nodes", env, temp, {"head": head})
        try:
            _ray().init(address=address, log_to_driver=False, logging_level="WARNING")
            for name in nodes:
                cluster.start_node(name, cpus)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def start_node(self, name: str, cpus: int = 4) -> None:
        self.groups[name] = _start(
            [RAY, "start", "--address", self.address, "--node-ip-address", HOST,
             "--num-cpus", str(cpus), "--resources", f'{{"lw_{name}": 100}}',
             "--disable-usage-stats"],
            self.env,
        )
        deadline = time.monotonic() + START_SECONDS
        # ray start returns before the node shows; a node of that name killed before
        # must be known dead too, or an actor for it could still be sent there.
        while not self._only_new(name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {name} did not join the cluster")
            time.sleep(0.2)

    def _only_new(self, name: str) -> bool:
        alive = [
            str(node["NodeID"])
            for node in _ray().nodes()
            if node["Alive"] and f"lw_{name}" in node["Resources"]
        ]
        return bool(alive) and not self.killed.intersection(alive)

    def node_id(self, name: str) -> str | None:
        for node in _ray().nodes():
            if node["Alive"] and f"lw_{name}" in node["Resources"]:
                return str(node["NodeID"])
        return None

    def node_name(self, node_id: str) -> str:
        for name in self.groups:
            if name != "head" and self.node_id(name) == node_id:
                return name
        raise LookupError(f"no live node of this cluster has id {node_id}")

    def kill_node(self, name: str) -> None:
        """SIGKILL to every process of the node (its raylet, its workers, the attempt
        actors on it): the node dies as a machine would."""
        node = self.node_id(name)
        if node is not None:
            self.killed.add(node)
        _kill_group(self.groups.pop(name))

    def stop(self) -> None:
        ray = _ray()
        if ray.is_initialized():
            ray.shutdown()
        for name in [n for n in self.groups if n != "head"] + ["head"]:
            if name in self.groups:
                _kill_group(self.groups.pop(name))
        shutil.rmtree(self.temp, ignore_errors=True)


def _start(args: list[str], env: dict[str, str]) -> int:
    proc = subprocess.Popen(
        args, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate(timeout=START_SECONDS)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{out.decode(errors='replace')[-3000:]}")
    return proc.pid


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
