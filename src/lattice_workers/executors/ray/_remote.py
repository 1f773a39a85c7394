""":class:`~._node.NodeAttempt` as a Ray actor class (imports Ray: loaded only when a
board's executor is ``ray``).

Threaded (``max_concurrency``): the supervisor's output reads, its wait and a stop
arrive at once and each may block for a while. The class travels by reference, so
every node needs ``lattice-workers`` installed (``pip install 'lattice-workers[ray]'``,
the same version as the supervisor's).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from lattice_workers.executors.ray._node import NodeAttempt

#: Concurrent calls an attempt's actor serves (output, wait, stop, describe, and room).
MAX_CONCURRENCY = 8


class RayNodeAttempt(NodeAttempt):
    """A :class:`NodeAttempt` that knows its Ray node's id (``LATTICE_NODE``)."""

    def __init__(self, namespace: str, name: str, base: str | None = None) -> None:
        ray: Any = importlib.import_module("ray")
        super().__init__(namespace, name, ray.get_runtime_context().get_node_id(), base)

    def prepare(self, run_id: str, commit: str, bundle: bytes | None = None) -> dict[str, Any]:
        """:meth:`NodeAttempt.prepare`, after removing what attempts whose actors are
        gone left on this node (it died with them, and came back)."""
        if bundle is None:  # once per attempt: its first prepare
            ray: Any = importlib.import_module("ray")
            live = {
                actor["name"]
                for actor in ray.util.list_named_actors(all_namespaces=True)
                if actor.get("namespace") == self.namespace
            }
            self.sweep(live)
        return super().prepare(run_id, commit, bundle)


@functools.cache
def remote_class() -> Any:
    """The Ray actor class (made once per process)."""
    ray: Any = importlib.import_module("ray")  # Any: the extra may not be installed
    return ray.remote(max_concurrency=MAX_CONCURRENCY, max_restarts=0)(RayNodeAttempt)
