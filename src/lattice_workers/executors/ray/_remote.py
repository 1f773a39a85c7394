""":class:`~._node.NodeHost` as a Ray actor class (imports Ray: loaded only when a
board's executor is ``ray``).

Threaded (``max_concurrency``): every attempt on the node has an output read and a
wait in flight, and a stop or a start may come at any time; each may block a while.
The class travels by reference, so every node needs ``lattice-workers`` installed
(``pip install 'lattice-workers[ray]'``, the same version as the supervisor's).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from lattice_workers.executors.ray._node import NodeHost

#: Concurrent calls a host serves: two long polls per attempt (output, wait), and room
#: for starts, stops and the rest; about a hundred attempts on one node.
MAX_CONCURRENCY = 256
#: A host's actor name in the board's namespace: ``host.<node id>``.
HOST_PREFIX = "host."


def host_name(node_id: str) -> str:
    return f"{HOST_PREFIX}{node_id}"


class RayNodeHost(NodeHost):
    """A :class:`NodeHost` that knows its Ray node's id (``LATTICE_NODE``)."""

    def __init__(self, namespace: str, base: str | None = None, ident: str = "") -> None:
        ray: Any = importlib.import_module("ray")
        super().__init__(namespace, ray.get_runtime_context().get_node_id(), base, ident)


@functools.cache
def remote_class() -> Any:
    """The Ray actor class (made once per process)."""
    ray: Any = importlib.import_module("ray")  # Any: the extra may not be installed
    return ray.remote(max_concurrency=MAX_CONCURRENCY, max_restarts=0)(RayNodeHost)
