"""A file the CLI cannot read or write is a sentence and exit code 10, never a traceback.

Run as root in CI, so permission bits stop nothing here: the tests put a plain file
where the command needs a folder (``ENOTDIR``/``EEXIST``), which fails for root too.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from lattice_workers.errors import Code, io_error
from tests.cli.test_board_bad_input import lattice, snapshot_of


@pytest.fixture
def board(tmp_path: Path) -> Path:
    for args in (("init", "--project-code", "T", "--actor", "human:ana"), ("create", "A task")):
        proc = lattice(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    (tmp_path / "notes.md").write_text("notes\n")
    return tmp_path


def test_attach_into_an_unwritable_store_is_a_clear_error(board: Path) -> None:
    artifacts = board / ".lattice" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    if (artifacts / "payload").is_dir():
        (artifacts / "payload").rmdir()
    (artifacts / "payload").write_text("in the way\n")
    before = snapshot_of(board / ".lattice")
    proc = lattice("attach", "T-1", "notes.md", "--role", "review", cwd=board)
    assert proc.returncode == 10, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("lattice-workers: cannot attach ")
    assert "notes.md" in proc.stderr and "payload" in proc.stderr
    assert snapshot_of(board / ".lattice") == before, "nothing written"
    out = json.loads(
        lattice("attach", "T-1", "notes.md", "--role", "review", "--json", cwd=board).stdout
    )
    assert out["ok"] is False and out["error"]["code"] == "IO_ERROR"


def test_any_command_turns_an_oserror_into_exit_10(board: Path) -> None:
    events = board / ".lattice" / "events"
    events.rename(board / ".lattice" / "events-aside")
    events.write_text("")
    proc = lattice("comment", "T-1", "hello", cwd=board)
    assert proc.returncode == 10, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Not a directory" in proc.stderr and "lattice-workers comment" in proc.stderr


def test_a_read_only_folder_points_a_sandboxed_agent_to_its_output_folder() -> None:
    err = io_error(OSError(errno.EROFS, "Read-only file system", "/p/.lattice"), "attach x")
    assert err.code == Code.IO_ERROR
    assert err.message.startswith("cannot attach x: Read-only file system (/p/.lattice)")
    assert "$LATTICE_OUTPUT_DIR" in err.message
