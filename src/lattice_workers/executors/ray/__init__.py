"""Runs on a Ray cluster (``workers.executor`` ``{"kind": "ray", ...}``).

:class:`RayExecutor` is the supervisor's side, :class:`~._node.NodeAttempt` the node's.
Importing this package needs no Ray; starting a run on the cluster does
(``pip install 'lattice-workers[ray]'``).
"""

from lattice_workers.executors.ray._config import ExecutorConfig, executor_for, parse_executor
from lattice_workers.executors.ray._executor import NodeLost, RayExecution, RayExecutor

__all__ = [
    "ExecutorConfig",
    "NodeLost",
    "RayExecution",
    "RayExecutor",
    "executor_for",
    "parse_executor",
]
