"""The README's "Using it" block, run verbatim in a fresh project: it keeps the README honest.

The block is read from README.md, not copied here. The set-up is what the README's
text before the block says (a git repository named ``calc`` with passing tests, a
first commit, ``lattice-workers init``, ``lattice-workers worker init``); the only
substitution is the placeholder the block names, ``RUN`` (the run id ``worker run``
printed). ``lattice-workers`` is our executable, put first on the PATH.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, clean_env, stop_everything

README = Path(__file__).resolve().parents[2] / "README.md"
RUN_ID = re.compile(r"\brun_[0-9A-HJKMNP-TV-Z]{26}\b")

CALC = "def add(a, b):\n    return a + b\n"
TEST_CALC = (
    "import unittest\n\nfrom calc import add\n\n\n"
    "class AddTest(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
)


def using_it_block() -> list[str]:
    """The command lines of the first ``sh`` block of the "Using it" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert block is not None, "README's Using it section has no sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture
def calc(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    shim = tmp_path / "bin"
    shim.mkdir()
    exe = shim / "lattice-workers"
    exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m lattice_workers "$@"\n')
    exe.chmod(0o755)
    root = tmp_path / "calc"
    (root / "tests").mkdir(parents=True)
    env = clean_env(LATTICE_WORKTREE_DIR=str(tmp_path / "worktrees"))
    env["PATH"] = f"{shim}:{env.get('PATH', '')}"
    project = Project(root, tmp_path / "worktrees")
    project.env = env
    (root / "calc.py").write_text(CALC)
    (root / "tests" / "test_calc.py").write_text(TEST_CALC)
    project.git("init", "-q", "-b", "main")
    project.git("add", ".")
    project.git("commit", "-q", "-m", "first commit")
    for setup in (["init"], ["worker", "init"]):
        proc = subprocess.run(
            ["lattice-workers", *setup], cwd=root, env=env, capture_output=True, text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    try:
        yield root, env
    finally:
        stop_everything(project)


def test_every_line_of_the_readme_block_works_as_written(
    calc: tuple[Path, dict[str, str]],
) -> None:
    root, env = calc
    lines = using_it_block()
    assert any("RUN" in shlex.split(line, comments=True) for line in lines)
    run_id: str | None = None
    for line in lines:
        argv = shlex.split(line, comments=True)
        if "RUN" in argv:
            assert run_id is not None, f"{line!r} needs a run id no line before it printed"
            argv = [run_id if word == "RUN" else word for word in argv]
        proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{line}\nexit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        if argv[1:3] == ["worker", "run"] and "--wait" not in argv:
            found = RUN_ID.search(proc.stdout)
            assert found, proc.stdout
            run_id = found.group(0)


def test_the_readme_cites_only_what_the_repository_holds() -> None:
    text = README.read_text(encoding="utf-8")
    assert "SPEC section" not in text  # the SPEC is not in the repository
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith("http"):
            assert (README.parent / link).exists(), link
