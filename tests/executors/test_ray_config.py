"""``workers.executor`` and a definition's ``executor``: read, refused when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from lattice_workers.errors import Code, LatticeError
from lattice_workers.executors.ray._config import (
    ExecutorConfig,
    board_namespace,
    executor_for,
    parse_executor,
)


def test_local_is_the_default() -> None:
    assert parse_executor({}) == ExecutorConfig()
    assert parse_executor({"executor": "local"}).kind == "local"
    assert parse_executor({"executor": {"kind": "local"}}).kind == "local"


def test_a_ray_executor_with_address_and_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = parse_executor(
        {"executor": {"kind": "ray", "address": "10.0.0.5:6379",
                      "resources": {"CPU": 2, "GPU": 1, "memory": 1e9, "builder": 1}}}
    )
    assert config.kind == "ray" and config.address == "10.0.0.5:6379"
    assert config.reservation() == {"CPU": 2.0, "GPU": 1.0, "memory": 1e9, "builder": 1.0}
    assert parse_executor({"executor": {"kind": "ray"}}).reservation() == {"CPU": 1.0}
    no_cpu = {"executor": {"kind": "ray", "resources": {"CPU": 0, "builder": 1}}}
    assert parse_executor(no_cpu).reservation() == {"builder": 1.0}
    assert config.when_unreachable == "refuse"
    queued = parse_executor({"executor": {"kind": "ray", "when_unreachable": "queue"}})
    assert queued.when_unreachable == "queue"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert parse_executor({"executor": {"kind": "ray"}}).address == "ray://head:10001"


@pytest.mark.parametrize(
    "value",
    [
        "ray",
        3,
        {"kind": "k8s"},
        {"kind": "ray", "adress": "x:1"},
        {"kind": "ray", "when_unreachable": "wait"},
        {"kind": "ray", "address": ""},
        {"kind": "ray", "resources": {"CPU": -1}},
        {"kind": "ray", "resources": {"CPU": True}},
        {"kind": "ray", "resources": []},
    ],
)
def test_a_wrong_executor_is_refused_with_the_forms(value: object) -> None:
    with pytest.raises(LatticeError) as caught:
        parse_executor({"executor": value})
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert "workers.executor" in caught.value.message and '"kind": "ray"' in caught.value.message


def test_a_definition_overrides_the_board_but_ray_needs_a_cluster() -> None:
    ray = ExecutorConfig(kind="ray", address="h:1")
    assert executor_for(ray, None, "Build") == "ray"
    assert executor_for(ray, "local", "Review") == "local"
    assert executor_for(ExecutorConfig(), None, "Build") == "local"
    with pytest.raises(LatticeError) as caught:
        executor_for(ExecutorConfig(), "ray", "Build")
    assert caught.value.code == Code.INVALID_WORKER and "names no cluster" in caught.value.message


def test_a_board_namespace_is_stable_and_its_own(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert board_namespace(tmp_path / "a") == board_namespace(tmp_path / "link")
    assert board_namespace(tmp_path / "a") != board_namespace(tmp_path / "b")
