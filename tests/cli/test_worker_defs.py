"""``lattice worker list | check | init`` on real project folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lattice_workers.cli import worker_defs
from lattice_workers.cli._app import main

HEAVY = {
    "name": "CodeReviewHeavy",
    "engine": "script",
    "command": "./workers/code-review-heavy.sh",
    "prompt_file": "prompts/workers/code-review-heavy.md",
}
LITE = {"name": "CodeReviewLite", "engine": "claude", "prompt_file": "prompts/lite.md"}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    (root / ".lattice").mkdir(parents=True)
    (root / "workers").mkdir()
    (root / "prompts").mkdir()
    (root / "prompts" / "lite.md").write_text("Review.\n")
    monkeypatch.delenv("LATTICE_ROOT", raising=False)
    monkeypatch.chdir(root)
    return root


def define(root: Path, file_name: str, content: dict[str, Any]) -> None:
    (root / "workers" / file_name).write_text(json.dumps(content))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in argv else out
    return code, data, err


def test_list_shows_valid_and_invalid_definitions_with_reasons(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    define(project, "code-review-heavy.json", HEAVY)
    define(project, "code-review-lite.json", LITE)
    code, data, _ = run(capsys, "worker", "list", "--json")
    assert code == 0 and data["ok"] is True
    rows = {row["name"]: row for row in data["data"]["workers"]}
    assert rows["CodeReviewLite"]["valid"] is True
    assert rows["CodeReviewLite"]["actor"] == "agent:codereviewlite"
    assert rows["CodeReviewHeavy"]["valid"] is False
    assert len(rows["CodeReviewHeavy"]["problems"]) == 2
    assert rows["CodeReviewHeavy"]["path"] == "workers/code-review-heavy.json"

    code, text, _ = run(capsys, "worker", "list")
    assert code == 0
    assert "CodeReviewHeavy" in text and "INVALID" in text
    assert 'code-review-heavy.sh" does not exist' in text


def test_list_with_no_definitions_says_how_to_get_some(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, _ = run(capsys, "worker", "list")
    assert code == 0 and "lattice worker init" in text


def test_check_fails_with_every_problem_of_every_definition(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    define(project, "code-review-heavy.json", HEAVY)
    define(project, "code-review-lite.json", LITE)
    (project / "workers" / "typo.json").write_text('{"name": "Typo", "engine": "codex",}')
    code, data, _ = run(capsys, "worker", "check", "--json")
    assert code == 4
    assert data["ok"] is False and data["error"]["code"] == "INVALID_WORKER"
    details = data["error"]["details"]
    assert details["invalid"] == 2
    problems = [p for row in details["workers"] for p in row["problems"]]
    assert len(problems) == 3
    assert any("code-review-heavy.sh" in p for p in problems)
    assert any("code-review-heavy.md" in p for p in problems)
    assert any("typo.json is not valid JSON" in p for p in problems)

    code, text, err = run(capsys, "worker", "check")
    assert code == 4
    assert "code-review-heavy.sh" in text and "code-review-heavy.md" in text
    assert err.startswith("lattice-workers: 2 of 3 worker definitions invalid")


def test_check_reports_a_missing_engine_as_a_warning_not_a_failure(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    define(project, "code-review-lite.json", LITE)
    monkeypatch.setenv("PATH", str(project / "no-bin"))
    code, data, _ = run(capsys, "worker", "check", "--json")
    assert code == 0 and data["ok"] is True
    (row,) = data["data"]["workers"]
    assert row["valid"] is True and row["problems"] == []
    assert "program 'claude' was not found" in row["warnings"][0]
    assert data["data"]["warnings"] == 1


def test_check_passes_when_everything_is_valid_and_installed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    define(project, "echo.json", {"name": "Echo", "engine": "script", "command": "echo hi"})
    code, text, _ = run(capsys, "worker", "check")
    assert code == 0
    assert "1 worker definition valid, 0 warnings" in text


def test_worker_commands_need_a_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LATTICE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    code, data, _ = run(capsys, "worker", "list", "--json")
    assert code == 3 and data["error"]["code"] == "NO_BOARD"


# -- init -------------------------------------------------------------------------------------


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    source = tmp_path / "shipped"
    (source / "workers").mkdir(parents=True)
    (source / "prompts" / "workers").mkdir(parents=True)
    (source / "workers" / ".gitkeep").write_text("")
    (source / "workers" / "code-review-lite.json").write_text(
        json.dumps({**LITE, "prompt_file": "prompts/workers/code-review-lite.md"})
    )
    script = source / "workers" / "run-tests.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    (source / "workers" / "run-tests.json").write_text(
        json.dumps({"name": "Tests", "engine": "script", "command": "./workers/run-tests.sh"})
    )
    (source / "prompts" / "workers" / "code-review-lite.md").write_text("Review.\n")
    return source


def test_install_copies_everything_and_keeps_scripts_executable(
    project: Path, shipped: Path
) -> None:
    copied, skipped = worker_defs.install_shipped(project, shipped)
    assert copied == [
        "workers/code-review-lite.json",
        "workers/run-tests.json",
        "workers/run-tests.sh",
        "prompts/workers/code-review-lite.md",
    ]
    assert skipped == []
    assert not (project / "workers" / ".gitkeep").exists()
    assert os.access(project / "workers" / "run-tests.sh", os.X_OK)


def test_install_never_overwrites_a_file_that_is_there(project: Path, shipped: Path) -> None:
    (project / "workers" / "run-tests.sh").write_text("#!/bin/sh\n# my own version\n")
    copied, skipped = worker_defs.install_shipped(project, shipped)
    assert skipped == ["workers/run-tests.sh"]
    assert "my own version" in (project / "workers" / "run-tests.sh").read_text()
    copied, skipped = worker_defs.install_shipped(project, shipped)
    assert copied == [] and len(skipped) == 4


def test_init_command_copies_then_skips_and_the_result_checks_clean(
    project: Path,
    shipped: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_defs, "shipped_source", lambda: shipped)
    code, data, _ = run(capsys, "worker", "init", "--json")
    assert code == 0 and len(data["data"]["copied"]) == 4
    code, text, _ = run(capsys, "worker", "init")
    assert code == 0
    assert "skipped workers/run-tests.sh (already there; not overwritten)" in text
    code, data, _ = run(capsys, "worker", "check", "--json")
    assert code == 0, data
    assert all(row["valid"] for row in data["data"]["workers"])


def test_shipped_source_finds_the_repository_folders_in_an_editable_install() -> None:
    source = worker_defs.shipped_source()
    assert source is not None
    assert (source / "workers").is_dir() or (source / "prompts").is_dir()


# -- the real command, in its own process ----------------------------------------------------


def test_real_command_exits_non_zero_on_the_reviews_broken_definition(project: Path) -> None:
    define(project, "code-review-heavy.json", HEAVY)
    probe = (
        "import sys\n"
        "from lattice_workers.cli._app import main\n"
        "code = main(['worker', 'check'])\n"
        "print('imported trio:', 'trio' in sys.modules, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LATTICE_ROOT"}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4
    assert "code-review-heavy.sh" in done.stdout and "code-review-heavy.md" in done.stdout
    assert "1 of 1 worker definition invalid" in done.stderr
    assert "imported trio: False" in done.stderr  # the CLI side stays light
