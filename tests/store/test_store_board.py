"""Finding, creating and reading a board."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store import Board

from .conftest import ACTOR, board_bytes


def test_open_walks_up_from_a_subfolder(board: Board) -> None:
    sub = board.root / "src" / "deep"
    sub.mkdir(parents=True)
    assert Board.open(sub).root == board.root.resolve()


def test_open_without_a_board_is_no_board(tmp_path: Path) -> None:
    with pytest.raises(LatticeError) as err:
        Board.open(tmp_path)
    assert err.value.code == Code.NO_BOARD
    assert "lattice init" in err.value.message


def test_lattice_root_names_the_project_root(
    board: Board, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.setenv("LATTICE_ROOT", str(board.root))
    assert Board.open(elsewhere).root == board.root


def test_lattice_root_without_a_board_fails_with_no_fallback(
    board: Board, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATTICE_ROOT", str(tmp_path_factory.mktemp("empty")))
    with pytest.raises(LatticeError) as err:
        Board.open(board.root)  # a board is right here, but LATTICE_ROOT wins
    assert err.value.code == Code.NO_BOARD


def test_lattice_root_pointing_at_dot_lattice_says_to_use_the_parent(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATTICE_ROOT", str(board.dir))
    with pytest.raises(LatticeError) as err:
        Board.open()
    assert f"use {board.root}" in err.value.message


def test_init_writes_config_with_workflow_and_ids(board: Board) -> None:
    config = json.loads((board.dir / "config.json").read_text())
    assert config["project_code"] == "LAT"
    assert config["default_actor"] == ACTOR
    assert config["instance_id"].startswith("inst_")
    assert "done" in config["workflow"]["statuses"]
    assert config["workflow"]["universal_targets"] == ["needs_human", "cancelled"]
    assert json.loads((board.dir / "ids.json").read_text()) == {
        "map": {},
        "next_seqs": {},
        "schema_version": 2,
    }
    for sub in ("tasks", "events", "artifacts/meta", "artifacts/payload", "locks", "logs/workers"):
        assert (board.dir / sub).is_dir()
    assert (board.dir / "events" / "_lifecycle.jsonl").read_bytes() == b""


def test_init_twice_keeps_the_board(board: Board) -> None:
    board.create_task("keep me", actor=ACTOR)
    before = board_bytes(board)
    Board.init(board.root, project_code="lat")
    assert board_bytes(board) == before


def test_init_with_another_project_code_is_a_conflict_and_changes_nothing(board: Board) -> None:
    before = board_bytes(board)
    with pytest.raises(LatticeError) as err:
        Board.init(board.root, project_code="XYZ")
    assert err.value.code == Code.CONFLICT
    assert board_bytes(board) == before


@pytest.mark.parametrize("code", ["TOOLONG", "L4T", ""])
def test_init_with_a_bad_project_code_creates_nothing(tmp_path: Path, code: str) -> None:
    with pytest.raises(LatticeError) as err:
        Board.init(tmp_path, project_code=code)
    assert err.value.code == Code.INVALID_ARGUMENT
    assert list(tmp_path.iterdir()) == []


def test_short_ids_are_sequential_and_resolve_in_any_case(board: Board) -> None:
    ids = [board.create_task(f"t{i}", actor=ACTOR)["id"] for i in range(3)]
    assert board.resolve_task("lat-2") == ids[1]
    assert board.resolve_task(" LAT-3 ") == ids[2]
    assert board.resolve_task(ids[0].lower()) == ids[0]
    assert board.read_snapshot(ids[2])["short_id"] == "LAT-3"
    index = json.loads((board.dir / "ids.json").read_text())
    assert index["next_seqs"] == {"LAT": 4}
    assert index["map"] == {"LAT-1": ids[0], "LAT-2": ids[1], "LAT-3": ids[2]}


def test_resolve_unknown_and_malformed(board: Board) -> None:
    with pytest.raises(LatticeError) as err:
        board.resolve_task("LAT-99")
    assert err.value.code == Code.NOT_FOUND
    with pytest.raises(LatticeError) as err:
        board.resolve_task("task_01M854QTJN4BXTN7DTFDVA5JR2")
    assert err.value.code == Code.NOT_FOUND
    for bad in ("../../etc/passwd", "task_junk", "LAT", "12"):
        with pytest.raises(LatticeError) as err:
            board.resolve_task(bad)
        assert err.value.code == Code.INVALID_ID


def test_board_without_project_code_has_no_short_ids(tmp_path: Path) -> None:
    board = Board.init(tmp_path)
    snap = board.create_task("plain", actor=ACTOR)
    assert "short_id" not in snap
    assert not (board.dir / "ids.json").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"title": "  "},
        {"status": "shipped"},
        {"priority": "urgent"},
        {"type": "epic"},
        {"actor": "ana"},
        {"assigned_to": "nobody"},
        {"tags": ["ok", " "]},
    ],
)
def test_bad_create_input_is_refused_and_writes_nothing(board: Board, kwargs: dict) -> None:
    before = board_bytes(board)
    args = {"title": "t", "actor": ACTOR, **kwargs}
    with pytest.raises(LatticeError) as err:
        board.create_task(args.pop("title"), **args)
    assert err.value.code in (Code.INVALID_ARGUMENT, Code.INVALID_ACTOR)
    assert board_bytes(board) == before


def test_create_fills_defaults_and_options(board: Board) -> None:
    snap = board.create_task(
        " Title ",
        actor=ACTOR,
        priority="high",
        type="bug",
        description="why",
        tags=["a", "a", "b"],
        assigned_to="agent:bot",
        status="planned",
    )
    assert snap["title"] == "Title"
    assert (snap["status"], snap["priority"], snap["type"]) == ("planned", "high", "bug")
    assert snap["tags"] == ["a", "b"]
    assert snap["assigned_to"] == "agent:bot"
    assert snap["description"] == "why"


def test_list_filters_by_status_and_refuses_unknown_status(board: Board) -> None:
    a = board.create_task("a", actor=ACTOR)
    board.create_task("b", actor=ACTOR, status="planned")
    assert [s["id"] for s in board.list_snapshots(status="backlog")] == [a["id"]]
    assert len(board.list_snapshots()) == 2
    with pytest.raises(LatticeError) as err:
        board.list_snapshots(status="shipped")
    assert err.value.code == Code.INVALID_ARGUMENT


def test_a_corrupt_snapshot_file_is_read_from_the_log(board: Board, task_id: str) -> None:
    board.snapshot_path(task_id).write_text("{ not json")
    assert board.read_snapshot(task_id)["title"] == "Fix login"
    snaps, problems = board.scan_snapshots()
    assert snaps == [] and len(problems) == 1


def test_unknown_config_keys_survive_and_are_visible(board: Board) -> None:
    path = board.dir / "config.json"
    config = json.loads(path.read_text())
    config["x_future"] = {"keep": True}
    path.write_text(json.dumps(config))
    fresh = Board(board.root)
    fresh.create_task("t", actor=ACTOR)
    assert fresh.config["x_future"] == {"keep": True}
    assert json.loads(path.read_text())["x_future"] == {"keep": True}


def test_default_actor_comes_from_env_before_config(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert board.default_actor() == ACTOR
    monkeypatch.setenv("LATTICE_ACTOR", "agent:env")
    assert board.default_actor() == "agent:env"


def test_worker_log_dir_is_under_dot_lattice(board: Board) -> None:
    assert board.worker_log_dir() == board.dir / "logs" / "workers"


def test_the_store_never_imports_trio_or_zmq(tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from lattice_workers.store import Board\n"
        f"b = Board.init(Path({str(tmp_path)!r}), project_code='LAT')\n"
        "t = b.create_task('t', actor='human:a')['id']\n"
        "b.comment(t, 'x', actor='human:a'); b.doctor(); b.rebuild(); b.task_rows()\n"
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('trio', 'zmq')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
