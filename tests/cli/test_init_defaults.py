"""`lattice-workers init` with no flags makes a board a new user can use at once.

Short ids from the folder's name, a default actor from who the user is to git, a
`.gitignore` that keeps the runtime files out of a commit (issue 17).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lattice_workers.cli._defaults import derive_project_code, guess_actor
from lattice_workers.store import Board


def _env(home: Path, **extra: str) -> dict[str, str]:
    """No LATTICE_*, no global or system git config: only what the test sets."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LATTICE_", "GIT_"))}
    base.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    base.update(extra)
    return base


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lattice_workers", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _git(cwd: Path, *args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def calc(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "calc"
    project.mkdir()
    env = _env(tmp_path)
    _git(project, "init", "-q", env=env)
    _git(project, "config", "user.name", "Ana Lima", env=env)
    return project, env


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("calc", "CALC"),
        ("myapp", "MYAPP"),
        ("calculator", "CALCU"),
        ("lattice-workers", "LW"),
        ("my_app", "MYAPP"),
        ("café", "CAFE"),
        ("a-b-c-d-e-f-g", "ABCDE"),
        ("2024", "T"),
    ],
)
def test_a_project_code_is_derived_from_the_folder_name(name: str, code: str) -> None:
    assert derive_project_code(name) == code


def test_a_plain_init_gives_short_ids_and_a_default_actor_said_once(
    calc: tuple[Path, dict[str, str]],
) -> None:
    project, env = calc
    init = cli("init", cwd=project, env=env)
    assert init.returncode == 0, init.stderr
    assert "project code CALC" in init.stdout and "human:Ana-Lima" in init.stdout
    config = json.loads((project / ".lattice" / "config.json").read_text())
    assert config["project_code"] == "CALC" and config["default_actor"] == "human:Ana-Lima"
    created = cli("create", "Fix the add function", cwd=project, env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("Created CALC-1 (task_") and created.stderr == ""
    moved = cli("status", "CALC-1", "planned", cwd=project, env=env)
    assert moved.returncode == 0 and moved.stdout.strip() == "CALC-1: backlog -> planned"
    again = cli("init", cwd=project, env=env)
    assert again.returncode == 0 and "project code CALC" in again.stdout
    assert "None" not in again.stdout


def test_the_default_actor_comes_from_lattice_actor_then_git_then_user(tmp_path: Path) -> None:
    env = _env(tmp_path, USER="bo")
    env.pop("LOGNAME", None)
    subprocess.run(["git", "init", "-q", str(tmp_path)], env=env, check=True)
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        assert guess_actor(tmp_path) == ("human:bo", "$USER")
        _git(tmp_path, "config", "user.email", "cy@example.com", env=env)
        assert guess_actor(tmp_path) == ("human:cy", "git config user.email")
        _git(tmp_path, "config", "user.name", "Dee", env=env)
        assert guess_actor(tmp_path) == ("human:Dee", "git config user.name")
        os.environ["LATTICE_ACTOR"] = "agent:x"
        assert guess_actor(tmp_path) == ("agent:x", "LATTICE_ACTOR")
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_a_board_without_a_default_actor_guesses_one_and_says_so(tmp_path: Path) -> None:
    Board.init(tmp_path)  # as lattice-tracker or an older version made it
    created = cli("create", "t", cwd=tmp_path, env=_env(tmp_path, USER="bo"))
    assert created.returncode == 0, created.stderr
    assert "acting as human:bo (from $USER)" in created.stderr


def test_init_project_code_on_a_board_without_one_sets_it(tmp_path: Path) -> None:
    env = _env(tmp_path, USER="bo")
    Board.init(tmp_path)
    cli("create", "before", "--actor", "human:bo", cwd=tmp_path, env=env)
    init = cli("init", "--project-code", "t", cwd=tmp_path, env=env)
    assert init.returncode == 0, init.stderr
    assert "None" not in init.stdout and "project code set to T" in init.stdout
    created = cli("create", "after", "--json", "--actor", "human:bo", cwd=tmp_path, env=env)
    assert json.loads(created.stdout)["data"]["short_id"] == "T-1"
    other = cli("init", "--project-code", "Q", cwd=tmp_path, env=env)
    assert other.returncode == 5 and "project code 'T'" in other.stderr
    assert "None" not in other.stderr


def test_the_gitignore_keeps_runtime_files_out_and_board_data_in(
    calc: tuple[Path, dict[str, str]],
) -> None:
    project, env = calc
    assert cli("init", cwd=project, env=env).returncode == 0
    assert cli("create", "t", cwd=project, env=env).returncode == 0
    board = project / ".lattice"
    runtime = [
        board / "run" / "journal.jsonl",
        board / "run" / "supervisor.lock",
        board / "run" / "results" / "run_x.json",
        board / "logs" / "supervisor.log",
        board / "logs" / "workers" / "ev_x.log",
        board / "locks" / "task_x.lock",
        board / "reports" / "tests-CALC-1-run_x.md",
    ]
    for path in runtime:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    _git(project, "add", "-A", env=env)
    tracked = set(_git(project, "ls-files", env=env).split())
    assert {".lattice/config.json", ".lattice/ids.json", ".lattice/.gitignore"} <= tracked
    assert any(p.startswith(".lattice/tasks/") for p in tracked)
    assert any(p.startswith(".lattice/events/task_") for p in tracked)
    assert not [p for p in tracked if p.startswith((".lattice/run", ".lattice/logs"))]
    assert not [p for p in tracked if p.startswith((".lattice/locks", ".lattice/reports"))]


def test_a_users_own_gitignore_is_kept(tmp_path: Path) -> None:
    (tmp_path / ".lattice").mkdir()
    (tmp_path / ".lattice" / ".gitignore").write_text("mine\n")
    Board.init(tmp_path)
    assert (tmp_path / ".lattice" / ".gitignore").read_text() == "mine\n"
