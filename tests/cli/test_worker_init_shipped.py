"""The shipped workers pass ``lattice worker check`` where they ship and where
``lattice worker init`` puts them, and their prompts diff the right commits.

The real command, in its own process, on real folders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED_NAMES = {"CodeReviewLite", "CodeReviewHeavy", "TestRunner", "Implement", "ChangelogEntry"}


def lattice(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
    return subprocess.run(
        [sys.executable, "-m", "lattice_workers", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def lattice_json(cwd: Path, *args: str) -> Any:
    proc = lattice(cwd, *args, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["data"]


def shipped_files() -> list[str]:
    return sorted(
        p.relative_to(REPO).as_posix()
        for folder in ("workers", "prompts")
        for p in (REPO / folder).rglob("*")
        if p.is_file() and p.name != ".gitkeep" and "__pycache__" not in p.parts
    )


@pytest.fixture
def board(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    assert lattice(root, "init").returncode == 0
    return root


def assert_checks_clean(root: Path) -> dict[str, dict[str, Any]]:
    data = lattice_json(root, "worker", "check")
    rows = {row["name"]: row for row in data["workers"]}
    assert set(rows) == SHIPPED_NAMES
    assert data["invalid"] == 0, [row["problems"] for row in rows.values()]
    # Only a missing engine may warn: `worker run` refuses it, `check` must not.
    for row in rows.values():
        assert all("was not found on the worker's PATH" in w for w in row["warnings"]), row
    return rows


def test_the_repository_definitions_pass_check_as_shipped(board: Path) -> None:
    for folder in ("workers", "prompts"):
        shutil.copytree(REPO / folder, board / folder)
    rows = assert_checks_clean(board)
    assert rows["CodeReviewLite"]["engine"] == "claude"
    assert rows["CodeReviewHeavy"]["engine"] == "script"
    assert rows["TestRunner"]["engine"] == "script"
    assert rows["Implement"]["engine"] == "claude"
    assert rows["ChangelogEntry"]["engine"] == "script"


def test_worker_init_in_a_fresh_project_copies_everything_and_checks_clean(board: Path) -> None:
    data = lattice_json(board, "worker", "init")
    assert sorted(data["copied"]) == shipped_files() and data["skipped"] == []
    assert "workers/code-review-heavy.py" in data["copied"]
    scripts = ("code-review-heavy.py", "test-runner.py", "changelog-entry.py")
    for script in (f"workers/{name}" for name in scripts):
        assert os.access(board / script, os.X_OK), script
    assert_checks_clean(board)


def test_worker_init_again_overwrites_nothing(board: Path) -> None:
    lattice_json(board, "worker", "init")
    mine = board / "prompts" / "workers" / "code-review-lite.md"
    mine.write_text("my own review prompt\n")
    again = lattice(board, "worker", "init")
    assert again.returncode == 0, again.stderr
    assert "skipped prompts/workers/code-review-lite.md (already there; not overwritten)" in (
        again.stdout
    )
    assert "0 files copied" in again.stdout
    assert mine.read_text() == "my own review prompt\n"


def test_definitions_attach_reports_inside_the_board_with_their_roles() -> None:
    definitions = {
        d["name"]: d
        for d in (json.loads(p.read_text()) for p in sorted((REPO / "workers").glob("*.json")))
    }
    assert set(definitions) == SHIPPED_NAMES
    reporting = {"TestRunner", "CodeReviewLite", "CodeReviewHeavy"}  # the others commit
    assert {d["report_dir"] for d in definitions.values() if d["name"] in reporting} == {
        ".lattice/reports"
    }
    assert not any("report_dir" in definitions[name] for name in SHIPPED_NAMES - reporting)
    assert definitions["TestRunner"]["artifact_role"] == "tests"
    assert definitions["CodeReviewLite"]["artifact_role"] == "review"
    assert definitions["CodeReviewHeavy"]["artifact_role"] == "review"
    for d in definitions.values():
        command = d.get("command")
        if command:
            assert command.startswith("./workers/"), command
            assert (REPO / command).is_file()


def test_scripts_are_executable_in_git() -> None:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-s", "workers"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    modes = {line.split("\t")[1]: line.split()[0] for line in listed}
    scripts = [path for path in modes if path.endswith((".py", ".sh"))]
    assert scripts, listed
    assert all(modes[path] == "100755" for path in scripts), modes


@pytest.mark.parametrize("prompt", ["code-review-lite.md", "code-review-heavy.md"])
def test_prompts_diff_merge_base_to_commit_and_never_a_branch(prompt: str) -> None:
    text = (REPO / "prompts" / "workers" / prompt).read_text()
    assert 'git diff "$LATTICE_MERGE_BASE" "$LATTICE_COMMIT_SHA"' in text
    assert 'lattice show "$LATTICE_TASK_ID"' in text
    git_lines = [line.strip() for line in text.splitlines() if line.strip().startswith("git ")]
    assert git_lines
    for line in git_lines:
        assert "$LATTICE_COMMIT_SHA" in line, line
        assert not re.search(r"\b(main|master|origin/|HEAD)\b", line), line


def test_implement_prompt_reads_the_task_runs_checks_and_commits_naming_it() -> None:
    text = (REPO / "prompts" / "workers" / "implement.md").read_text()
    assert 'lattice show "$LATTICE_TASK_ID"' in text
    assert "Run the project's checks" in text
    assert 'git commit -m "$LATTICE_SHORT_ID: ' in text


def test_lite_prompt_names_the_report_attachment_and_result() -> None:
    text = (REPO / "prompts" / "workers" / "code-review-lite.md").read_text()
    assert '"$LATTICE_REPORT_DIR/$LATTICE_REPORT_PREFIX-' in text
    assert '--role "$LATTICE_ARTIFACT_ROLE"' in text
    assert '"$LATTICE_RESULT_FILE"' in text


def test_shipped_folders_travel_inside_the_package() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    included = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["workers"] == "lattice_workers/_shipped/workers"
    assert included["prompts"] == "lattice_workers/_shipped/prompts"
