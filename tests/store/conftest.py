"""Fixtures for the store tests: a real board in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from lattice_workers.store import Board

ACTOR = "human:ana"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LATTICE_ROOT", "LATTICE_ACTOR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def board(tmp_path: Path) -> Board:
    return Board.init(tmp_path, project_code="LAT", default_actor=ACTOR)


@pytest.fixture
def task_id(board: Board) -> str:
    return str(board.create_task("Fix login", actor=ACTOR)["id"])


def board_bytes(board: Board) -> dict[str, bytes]:
    """Every file of the board except lock files: to prove a refused write wrote nothing."""
    out = {}
    for path in sorted(board.dir.rglob("*")):
        if path.is_file() and "locks" not in path.parts:
            out[str(path.relative_to(board.dir))] = path.read_bytes()
    return out
