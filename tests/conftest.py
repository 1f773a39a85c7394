"""Session set-up shared by every test folder."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_PREFIX = "PYTHONPYCACHEPREFIX"
_prefix_key = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Let the Python processes the tests start reuse their compiled bytecode.

    The e2e tests start hundreds of ``lattice`` commands and supervisors. Where
    ``PYTHONDONTWRITEBYTECODE`` is set (as on this machine), each of them compiled
    every module it imports again: ~0.1 s per command. Their bytecode goes to a
    folder of this session instead, never into the source tree; what they do is
    unchanged.
    """
    if "PYTHONDONTWRITEBYTECODE" in os.environ and _PREFIX not in os.environ:
        del os.environ["PYTHONDONTWRITEBYTECODE"]
        os.environ[_PREFIX] = config.stash[_prefix_key] = tempfile.mkdtemp(
            prefix="lattice-tests-pyc-"
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_prefix_key, None)
    if folder is not None:
        os.environ.pop(_PREFIX, None)
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        shutil.rmtree(folder, ignore_errors=True)
