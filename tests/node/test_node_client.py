"""A client in another language, written from docs/protocol.md, against a real supervisor.

``client.js`` (Node.js, npm's ``zeromq`` and ``@msgpack/msgpack``) sends every request
type and provokes every error code the page lists (but ``INTERNAL``, a bug), checking
each reply against the page. Whatever the page and the server disagree on fails here,
so the two cannot drift apart.

The npm packages are installed on demand with ``npm ci`` from the committed lock file
into ``tests/node/node_modules`` (not committed), once: a stamp of the lock file says
whether it is current. Without node or npm (or without a registry to install from)
the tests skip, except under CI, where that is a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lattice_workers.protocol import default_endpoint
from tests.e2e.conftest import Project, alive, make_project, stop_everything

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "protocol.md"
STAMP = HERE / "node_modules" / ".lattice-lock-sha256"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with the client's packages installed next to it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("no node/npm on PATH (apt-get install nodejs npm)")
    assert node is not None and npm is not None
    lock = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()
    if not (STAMP.exists() and STAMP.read_text() == lock):
        # --ignore-scripts: zeromq 6 ships its prebuilt binary inside the package.
        done = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE, capture_output=True, text=True, timeout=300,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            _unavailable(f"npm ci failed in {HERE}: {last}")
        STAMP.write_text(lock)
    return node


def run_client(node: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [node, str(HERE / "client.js"), *args],
        capture_output=True, text=True, timeout=100, env=env,
    )
    assert done.returncode == 0, f"client.js {args[0]}: {done.stdout}\n{done.stderr}"
    return done.stdout


# ------------------------------------------------------------------ the page's tables


def _table_rows(heading: str) -> list[list[str]]:
    """The rows of the first table under ``heading`` in the page (header excluded)."""
    text = DOC.read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def _tag(cell: str) -> str:
    found = re.fullmatch(r"`(\w+)`", cell)
    assert found, f"not a `name` cell: {cell!r}"
    return found.group(1)


def documented_requests() -> set[str]:
    return {_tag(row[0]) for row in _table_rows("## Requests")}


def documented_errors() -> set[str]:
    return {_tag(row[0]) for row in _table_rows("## Errors")}


# ------------------------------------------------------------------ the tests


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = make_project(tmp_path)
    try:
        yield p
    finally:
        stop_everything(p)


def test_a_node_client_written_from_the_page_runs_every_request_and_error(
    node: str, project: Project
) -> None:
    tasks = [project.create_task(f"task {i}") for i in range(1, 5)]
    # A budget of 0 is spent before anything runs: an agent worker is refused.
    project.configure_workers(max_concurrent=2, daily_budget_usd=0)
    bin_dir = project.root.parent / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "claude").chmod(0o755)
    project.env = {**project.env, "PATH": f"{bin_dir}{os.pathsep}{project.env['PATH']}"}
    (project.root / "agent.md").write_text("Say hi.\n")
    project.write_worker("Agent", engine="claude", prompt_file="agent.md")
    result = 'echo \'{"tests": 3}\' > "$LATTICE_RESULT_FILE"'
    project.write_worker(
        "Echo", command=f"echo hello from echo; echo second line; {result}", worktree=False
    )
    project.write_worker("Sleeper", command="sleep 300", worktree=False, kill_grace_seconds=1)
    project.write_worker(
        "Gate", command='until [ -e "$LATTICE_ROOT/.gate" ]; do sleep 0.05; done; echo through'
    )
    project.write_worker("Broken", command="true", timeout_minutes=-1)
    project.write_worker("Ghost", command="no-such-program-lattice-21 --now")
    project.cli("supervisor", "start")
    pid = project.supervisor_pid()

    out = run_client(node, "exercise", str(project.root), *tasks)
    report: dict[str, Any] = json.loads(out)

    assert report["failures"] == []
    assert report["endpoint"] == default_endpoint(project.root)
    # Every request the page lists was answered as the page says...
    assert set(report["requests"]) == documented_requests()
    # ...and every error it lists was provoked, but INTERNAL (a bug of ours).
    assert set(report["errors"]) == documented_errors() - {"INTERNAL"}
    # The shutdown it sent stops the supervisor (its watch streams have ended: it is
    # on its way out).
    deadline = time.monotonic() + 30
    while pid is not None and alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid is not None and not alive(pid)


def test_the_node_client_computes_the_default_endpoint_as_the_page_says(
    node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = tmp_path / "p"
    deep = tmp_path / ("a-folder-with-a-long-name-" * 5) / "project"
    runtime = tmp_path / "xdg"
    for folder in (short, deep, runtime):
        folder.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(short)
    roots = [short, deep, link]
    for xdg in (None, str(runtime), "relative/xdg", str(runtime / ("x" * 120))):
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        if xdg is None:
            monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        else:
            env["XDG_RUNTIME_DIR"] = xdg
            monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
        lines = run_client(node, "endpoint", *map(str, roots), env=env).splitlines()
        assert lines == [default_endpoint(root) for root in roots], xdg
