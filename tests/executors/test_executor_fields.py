"""A definition's ``executor`` and the board's ``workers.executor`` as the supervisor
reads them (``workers/*.json`` and ``.lattice/config.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lattice_workers.actors._definitions import load_workers
from lattice_workers.errors import Code, LatticeError
from lattice_workers.supervisor._settings import Settings


def definition(root: Path, **fields: object) -> list[str]:
    (root / "workers").mkdir(exist_ok=True)
    body = {"name": "Build", "engine": "script", "command": "make", **fields}
    (root / "workers" / "build.json").write_text(json.dumps(body))
    loaded = load_workers(root).get("build")
    return loaded.problems


def test_a_definition_may_choose_its_executor(tmp_path: Path) -> None:
    assert definition(tmp_path, executor="ray") == []
    assert load_workers(tmp_path).require("build").executor == "ray"
    assert definition(tmp_path, executor="local") == []
    assert definition(tmp_path) == [] and load_workers(tmp_path).require("build").executor is None


def test_an_unknown_executor_or_ray_without_worktree_is_a_problem(tmp_path: Path) -> None:
    [problem] = definition(tmp_path, executor="k8s")
    assert '"local" or "ray"' in problem
    [problem] = definition(tmp_path, executor="ray", worktree=False)
    assert "worktree" in problem and '"executor": "local"' in problem


def test_settings_read_workers_executor() -> None:
    assert Settings({}).executor.kind == "local"
    settings = Settings({"workers": {"executor": {"kind": "ray", "address": "h:6379"}}})
    assert (settings.executor.kind, settings.executor.address) == ("ray", "h:6379")
    with pytest.raises(LatticeError) as caught:
        Settings({"workers": {"executor": "cluster"}})
    assert caught.value.code == Code.INVALID_ARGUMENT
