"""A real local Ray cluster for the ``ray`` tests (one per session): a head and two
worker nodes, ``a`` and ``b`` (see :mod:`lattice_workers.executors.ray._local`)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lattice_workers.executors.ray._local import LocalCluster
from tests.e2e.conftest import GIT_ENV, processes_with_variable


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in GIT_ENV.items():  # workers on the nodes commit
            patch.setenv(name, value)
        cluster = LocalCluster.start(tmp_path_factory.mktemp("ray"))
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit (one file large enough to see in a bundle)."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "README.md").write_text("hello\n")
    (root / "data.txt").write_text("".join(f"line {i}\n" for i in range(2000)))
    for args in (("init", "-q", "-b", "main"), ("add", "."), ("commit", "-qm", "first")):
        subprocess.run(
            ["git", "-C", str(root), *args], check=True, capture_output=True,
            env={**os.environ, **GIT_ENV},
        )
    return root


def nothing_left(run_id: str) -> bool:
    """No live process of the run (each has LATTICE_RUN_ID in its environment)."""
    return not processes_with_variable("LATTICE_RUN_ID", run_id)
