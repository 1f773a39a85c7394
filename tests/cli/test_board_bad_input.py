"""Every bad input: one clear sentence, a non-zero exit, and nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def lattice(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
    return subprocess.run(
        [sys.executable, "-m", "lattice_workers", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "locks" not in p.parts
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("board")
    for args in (
        ("init", "--project-code", "LAT", "--actor", "human:ana"),
        ("create", "Fix login"),
        ("status", "LAT-1", "planned"),
    ):
        assert lattice(*args, cwd=root).returncode == 0
    return root


CASES = [
    # (arguments, exit code, error code, words the sentence must contain)
    (("show", "LAT-99"), 3, "NOT_FOUND", "LAT-99"),
    (("show", "../../etc/passwd"), 4, "INVALID_ID", "'../../etc/passwd' is not a task id"),
    (("status", "task_junk", "done"), 4, "INVALID_ID", "'task_junk'"),
    (("comment", "LAT-1", "hi", "--actor", "nobody"), 4, "INVALID_ACTOR", "'nobody'"),
    (("comment", "LAT-1", "hi", "--actor", "robot:x"), 4, "INVALID_ACTOR", "'robot:x'"),
    (("status", "LAT-1", "done"), 4, "INVALID_TRANSITION", "cannot move from planned to done"),
    (("status", "LAT-1", "shipped"), 2, "INVALID_ARGUMENT", "unknown status 'shipped'"),
    (("status", "LAT-1", "done", "--force"), 2, "INVALID_ARGUMENT", "--force needs --reason"),
    (("create", "x", "--priority", "urgent"), 2, "INVALID_ARGUMENT", "unknown priority"),
    (("create", "   "), 2, "INVALID_ARGUMENT", "non-empty title"),
    (("attach", "LAT-1", "nope.md", "--role", "review"), 3, "NOT_FOUND", "nope.md"),
    (("comment", "LAT-1", " "), 2, "INVALID_ARGUMENT", "non-empty body"),
    (("list", "--status", "shipped"), 2, "INVALID_ARGUMENT", "unknown status"),
    (("status", "LAT-1"), 2, "INVALID_ARGUMENT", "required"),
    (("init", "--project-code", "TOOLONG"), 2, "INVALID_ARGUMENT", "project code"),
    (("init", "--project-code", "XYZ"), 5, "CONFLICT", "project code 'LAT'"),
]


@pytest.mark.parametrize(("args", "exit_code", "code", "words"), CASES, ids=lambda c: str(c))
def test_bad_input_is_one_sentence_an_exit_code_and_no_write(
    project: Path, args: tuple[str, ...], exit_code: int, code: str, words: str
) -> None:
    before = snapshot_of(project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
    text, as_json = (
        subprocess.Popen(
            [sys.executable, "-m", "lattice_workers", *args, *extra],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ((), ("--json",))
    )
    out, err = text.communicate(timeout=60)
    assert text.returncode == exit_code, err
    message = err.strip()
    assert message.startswith("lattice-workers: ") and "\n" not in message
    assert words in message
    assert out == ""
    out, _ = as_json.communicate(timeout=60)
    assert as_json.returncode == exit_code
    envelope = json.loads(out)
    assert envelope["ok"] is False and envelope["error"]["code"] == code
    assert snapshot_of(project) == before


def test_a_writing_command_without_any_actor_says_who_it_acts_as(tmp_path: Path) -> None:
    """No --actor, no LATTICE_ACTOR, no default_actor: a guess, said with how to choose."""
    assert lattice("init", cwd=tmp_path).returncode == 0
    config = json.loads((tmp_path / ".lattice" / "config.json").read_text())
    del config["default_actor"]
    (tmp_path / ".lattice" / "config.json").write_text(json.dumps(config))
    proc = lattice("create", "t", "--json", cwd=tmp_path, env={"USER": "zed"})
    assert proc.returncode == 0, proc.stderr
    assert "pass --actor or set default_actor in .lattice/config.json" in proc.stderr
    actor = json.loads(proc.stdout)["data"]["created_by"]
    assert actor.startswith("human:") and actor in proc.stderr


@pytest.mark.parametrize("args", [("list",), ("show", "LAT-1"), ("create", "t"), ("doctor",)])
def test_no_board_is_a_clear_error(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = (
        lattice(*args, "--actor", "human:a", cwd=tmp_path)
        if args[0] == "create"
        else (lattice(*args, cwd=tmp_path))
    )
    assert proc.returncode == 3
    assert "no Lattice board here" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_lattice_root_without_a_board_does_not_fall_back(project: Path, tmp_path: Path) -> None:
    proc = lattice("list", cwd=project, env={"LATTICE_ROOT": str(tmp_path)})
    assert proc.returncode == 3
    assert f"LATTICE_ROOT={tmp_path} has no .lattice/ folder" in proc.stderr


def test_a_corrupt_log_line_does_not_break_show_or_list(tmp_path: Path) -> None:
    assert (
        lattice("init", "--project-code", "LAT", "--actor", "human:a", cwd=tmp_path).returncode == 0
    )
    assert lattice("create", "t", cwd=tmp_path).returncode == 0
    log = next((tmp_path / ".lattice" / "events").glob("task_*.jsonl"))
    with log.open("a") as fh:
        fh.write('{"broken": \n')
    assert lattice("comment", "LAT-1", "still writable", cwd=tmp_path).returncode == 0
    shown = lattice("show", "LAT-1", cwd=tmp_path)
    assert shown.returncode == 0
    assert "Problems (run lattice doctor):" in shown.stdout and "line 2" in shown.stdout
    assert '"still writable"' in shown.stdout
    assert lattice("list", cwd=tmp_path).returncode == 0
    doctor = lattice("doctor", cwd=tmp_path)
    assert doctor.returncode == 7 and "corrupt_line" in doctor.stdout
