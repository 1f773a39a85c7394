"""The shipped TestRunner never reports success for tests it did not run (issue 17).

The script is run directly (no supervisor: its inputs are environment variables), with
a stand-in ``lattice`` on its PATH for the attach, in small scratch projects.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_shipped_workers import _load_test_runner

SCRIPT = Path(__file__).resolve().parents[2] / "workers" / "test-runner.py"
FAKE_LATTICE = '#!/bin/sh\necho \'{"ok": true, "data": {"artifact_id": "art_fake"}}\'\n'


def _exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def run_runner(
    project: Path, tmp_path: Path, python: str = sys.executable, **env: str
) -> tuple[int, dict[str, Any], list[str]]:
    """Run the script in ``project``; (exit code, result JSON, log lines)."""
    bin_dir = tmp_path / "bin"
    _exe(bin_dir / "lattice", FAKE_LATTICE)
    _exe(bin_dir / "python3", f'#!/bin/sh\nexec "{python}" "$@"\n')
    result = tmp_path / "result.json"
    variables = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LATTICE_ROOT": str(project),
        "LATTICE_TASK_ID": "task_01AAAAAAAAAAAAAAAAAAAAAAAA",
        "LATTICE_RUN_ID": "run_x",
        "LATTICE_RESULT_FILE": str(result),
        "LATTICE_REPORT_DIR": str(tmp_path / "reports"),
        **env,
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=project,
        env=variables,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    return proc.returncode, json.loads(result.read_text()), proc.stdout.splitlines()


def stdlib_python(tmp_path: Path) -> str:
    """An interpreter that cannot import pytest (no site-packages)."""
    return str(
        _exe(tmp_path / "stdlib" / "python", f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    )


def test_unittest_that_ran_nothing_is_a_failure_that_names_the_missing_pytest(
    tmp_path: Path,
) -> None:
    project = tmp_path / "p"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_x.py").write_text("def test_x():\n    assert 1 == 2\n")
    code, result, log = run_runner(project, tmp_path, stdlib_python(tmp_path))
    python = tmp_path / "bin" / "python3"  # the first python3 on the worker's PATH
    assert code == 2
    assert result["outcome"] == "no_tests"
    assert result["error"] == f"unittest ran 0 tests (pytest is not installed for {python})"
    assert log[-1] == f"test-runner: FAILED: {result['error']}"
    assert any(line.startswith(f"test-runner: Python is {python} (") for line in log)


def test_pytest_collecting_nothing_is_a_failure(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "conftest.py").write_text("")
    code, result, log = run_runner(project, tmp_path)
    assert code == 2 and result["outcome"] == "no_tests"
    assert result["error"] == "pytest collected no tests"
    assert log[-1] == "test-runner: FAILED: pytest collected no tests"


def test_no_tests_at_all_fails_unless_allowed(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    code, result, log = run_runner(project, tmp_path)
    assert (code, result["outcome"], result["error"]) == (2, "no_tests", "no tests found")
    assert log[-1] == "test-runner: FAILED: no tests found"
    code, result, _ = run_runner(project, tmp_path, TEST_ALLOW_NONE="1")
    assert code == 0 and "error" not in result


def test_output_without_counts_is_not_a_success(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    code, result, log = run_runner(project, tmp_path, TEST_COMMAND="echo all good")
    assert code == 2 and result["outcome"] == "error"
    assert (
        result["error"] == "could not read how many tests `bash -c 'echo all good'` ran "
        "(no counts in its output)"
    )
    assert log[-1].startswith("test-runner: FAILED: could not read how many tests")


def test_a_passing_run_ends_with_its_verdict(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_x.py").write_text(
        "import unittest\n\nclass T(unittest.TestCase):\n    def test_x(self):\n        pass\n"
    )
    code, result, log = run_runner(project, tmp_path, stdlib_python(tmp_path))
    assert code == 0 and result["outcome"] == "passed" and "error" not in result
    assert log[-1] == "test-runner: Tests: passed (1 passed)"


# ----------------------------------------------------------------------------- the interpreter


@pytest.fixture
def runner() -> Any:
    return _load_test_runner()


def test_the_worktrees_venv_comes_first_then_the_projects(
    runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worktree, root = tmp_path / "wt", tmp_path / "root"
    monkeypatch.delenv("TEST_PYTHON", raising=False)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.setenv("LATTICE_ROOT", str(root))
    project_python = _exe(root / "venv" / "bin" / "python", "#!/bin/sh\n")
    assert runner.python_interpreter(worktree) == (
        [str(project_python)],
        "the project's virtual environment venv/",
    )
    own = _exe(worktree / ".venv" / "bin" / "python", "#!/bin/sh\n")
    assert runner.python_interpreter(worktree) == (
        [str(own)],
        "the worktree's virtual environment .venv/",
    )
    monkeypatch.setenv("TEST_PYTHON", "/opt/py")
    assert runner.python_interpreter(worktree) == (["/opt/py"], "TEST_PYTHON is set")


def test_uv_runs_a_uv_project_only_when_uv_is_installed(
    runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / "uv.lock").write_text("")
    for name in ("TEST_PYTHON", "VIRTUAL_ENV", "LATTICE_ROOT"):
        monkeypatch.delenv(name, raising=False)
    bin_dir = tmp_path / "bin"
    _exe(bin_dir / "python3", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    python, why = runner.python_interpreter(worktree)
    assert python == [str(bin_dir / "python3")]
    assert why == (
        "no .venv or venv in the worktree or the project, it uses uv (uv.lock) but uv is "
        "not installed: python3 on PATH"
    )
    _exe(bin_dir / "uv", "#!/bin/sh\n")
    assert runner.python_interpreter(worktree) == (
        ["uv", "run", "python"],
        "the project uses uv (uv.lock) and uv is installed",
    )


@pytest.mark.parametrize(
    ("framework", "code", "counts", "verdict"),
    [
        ("pytest", 5, None, ("no_tests", 2, "pytest collected no tests")),
        ("unittest", 0, (0, 0, 0, 0), ("no_tests", 2, "unittest ran 0 tests")),
        ("pytest", 1, (3, 1, 0, 0), ("failed", 1, "tests failed: 1 failed, 3 passed")),
        (
            "make",
            2,
            None,
            ("failed", 1, "`make test` exited with code 2 and printed no test counts"),
        ),
        (
            "make",
            0,
            None,
            ("error", 2, "could not read how many tests `make test` ran (no counts in its output)"),
        ),
        ("pytest", 0, (3, 0, 0, 1), ("passed", 0, "")),
    ],
)
def test_the_verdict_needs_tests_that_ran(
    runner: Any,
    framework: str,
    code: int,
    counts: tuple[int, int, int, int] | None,
    verdict: tuple[str, int, str],
) -> None:
    plan = runner.Plan(framework, ["make", "test"] if framework == "make" else ["x"], "why")
    found = (
        None
        if counts is None
        else dict(zip(("passed", "failed", "errors", "skipped"), counts, strict=True))
    )
    assert runner.judge(plan, code, found) == verdict
