"""A reload may not move a supervisor to another Ray cluster once it joined one."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lattice_workers.errors import LatticeError
from lattice_workers.executors.ray._config import ExecutorConfig
from lattice_workers.supervisor._main import _executor_change_allowed


@dataclass
class _Cluster:
    """What the check reads of a Ray executor: its config and whether it joined."""

    config: ExecutorConfig
    joined: bool = field(default=True)


def ray_at(address: str) -> ExecutorConfig:
    return ExecutorConfig(kind="ray", address=address)


def test_another_address_is_refused_once_joined() -> None:
    with pytest.raises(LatticeError, match="restart the supervisor"):
        _executor_change_allowed([_Cluster(ray_at("a:6379"))], ray_at("b:6379"))


def test_a_detour_through_local_does_not_forget_the_cluster_joined() -> None:
    # ray at A (joined), reload to local (A retired, no current), reload to ray at B.
    with pytest.raises(LatticeError, match="joined the cluster at a:6379"):
        _executor_change_allowed([None, _Cluster(ray_at("a:6379"))], ray_at("b:6379"))


def test_the_same_cluster_local_or_one_never_joined_is_allowed() -> None:
    _executor_change_allowed([_Cluster(ray_at("a:6379"))], ray_at("a:6379"))
    _executor_change_allowed([_Cluster(ray_at("a:6379"))], ExecutorConfig(kind="local"))
    _executor_change_allowed([_Cluster(ray_at("a:6379"), joined=False)], ray_at("b:6379"))
    _executor_change_allowed([None], ray_at("b:6379"))
