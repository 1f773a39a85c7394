"""The real agent CLIs, offline: the flags we pass are accepted, failures are classified.

Marker ``agents_real`` (its own line in .ci/run, which npm-installs the pinned CLIs
into a cache folder and points ``LATTICE_AGENT_CLIS`` at its ``node_modules/.bin``).
Nothing is sent anywhere: there is no credential, ``HOME`` is an empty folder, every
proxy variable points at a closed port on the loopback, and this machine resolves no
API host; each run is bounded (seconds) and killed at its bound.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lattice_workers.actors._definitions import WorkerDefinition
from lattice_workers.engines import ENGINES

pytestmark = pytest.mark.agents_real

#: The versions .ci/run installs (and docs/workers.md names as checked).
PINNED = {"claude": "2.1.197", "codex": "0.171.0", "gemini": "0.61.0"}
CLOSED = "http://127.0.0.1:9"


def cli_folder() -> Path:
    folder = os.environ.get("LATTICE_AGENT_CLIS")
    if not folder:
        if os.environ.get("CI"):
            pytest.fail("LATTICE_AGENT_CLIS is not set: .ci/run installs the CLIs and sets it")
        pytest.skip("set LATTICE_AGENT_CLIS to a folder holding claude, codex and gemini")
    return Path(folder)


def offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": f"{cli_folder()}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "TMPDIR": str(tmp_path),
        **{v: CLOSED for v in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy",
                               "http_proxy", "all_proxy")},
        "NO_PROXY": "",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        **extra,
    }


def worktree(tmp_path: Path) -> Path:
    folder = tmp_path / "worktree"
    folder.mkdir()
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return folder


def run_offline(
    engine: str, tmp_path: Path, *, bound: float, limit: float = 60, **env: str
) -> tuple[dict[str, object], str, float]:
    """Run the adapter's command as the supervisor would and read it with its reader.

    Returns (the report, the transcript, seconds taken). The process is killed when the
    reader says stop (``bound`` seconds of network retries) or at ``limit``."""
    adapter = ENGINES[engine]
    defn = WorkerDefinition(
        name="Real", engine=engine, prompt_file="p.md", network_timeout_seconds=bound
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd = adapter.command(
        defn, output_dir=out_dir, resume_session=None, message=None, prompt="Say hi.\n"
    )
    reader = adapter.reader(defn)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd.argv,
        cwd=worktree(tmp_path),
        env={**offline_env(tmp_path), **cmd.env, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(cmd.stdin or b"")
    proc.stdin.close()
    transcript = b""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() - started < limit:
            if selector.select(timeout=0.5):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                transcript += reader.feed(chunk)
            if reader.stop_reason(time.monotonic()) is not None:
                break
        transcript += reader.finish()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.wait()
        selector.close()
    code = proc.returncode if reader.stopped is None else None
    return reader.report(code), transcript.decode(), time.monotonic() - started


@pytest.mark.parametrize("engine", ["claude", "codex", "gemini"])
def test_the_installed_version_is_the_pinned_one(engine: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [engine, "--version"], env=offline_env(tmp_path), capture_output=True, text=True,
        timeout=60,
    )
    assert PINNED[engine] in out.stdout, out.stdout + out.stderr
    assert ENGINES[engine].version_problem(out.stdout) is None


def test_claude_offline_without_credentials_is_auth_in_seconds(tmp_path: Path) -> None:
    report, transcript, seconds = run_offline("claude", tmp_path, bound=20)
    assert "unknown option" not in transcript, transcript
    assert report["error_kind"] == "auth", (report, transcript)
    assert "set ANTHROPIC_API_KEY or run `claude login`" in str(report["error"])
    assert report["session_id"]
    assert seconds < 30


def test_codex_offline_is_network_within_the_bound(tmp_path: Path) -> None:
    report, transcript, seconds = run_offline("codex", tmp_path, bound=10, OPENAI_API_KEY="sk-x")
    assert "unexpected argument" not in transcript, transcript
    assert report["error_kind"] == "network", (report, transcript)
    assert report["session_id"]
    assert seconds < 40


def test_gemini_offline_without_credentials_is_auth_not_trust(tmp_path: Path) -> None:
    report, transcript, seconds = run_offline("gemini", tmp_path, bound=20)
    assert "trusted directory" not in transcript, transcript
    assert report["error_kind"] == "auth", (report, transcript)
    assert "GEMINI_API_KEY" in str(report["error"])
    assert seconds < 30


def test_gemini_offline_with_a_key_is_network_not_trust(tmp_path: Path) -> None:
    report, transcript, seconds = run_offline(
        "gemini", tmp_path, bound=10, GEMINI_API_KEY="not-a-key"
    )
    assert "trusted directory" not in transcript and "Unknown argument" not in transcript
    assert report["error_kind"] == "network", (report, transcript)
    assert seconds < 40


# -- through the supervisor ---------------------------------------------------------------

from tests.e2e.conftest import Project, make_project, stop_everything  # noqa: E402


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    made = make_project(tmp_path)
    try:
        yield made
    finally:
        stop_everything(made)


@pytest.mark.parametrize(
    ("engine", "extra", "kind", "words"),
    [
        ("claude", {}, "auth", "set ANTHROPIC_API_KEY or run `claude login`"),
        ("codex", {"OPENAI_API_KEY": "sk-x"}, "network", "could not reach its API"),
        ("gemini", {}, "auth", "GEMINI_API_KEY"),
    ],
)
def test_an_offline_run_through_the_supervisor_ends_classified(
    project: Project, tmp_path: Path, engine: str, extra: dict[str, str], kind: str, words: str
) -> None:
    (project.root / "p.md").write_text("Say hi.\n")
    project.write_worker(
        "Real", engine=engine, prompt_file="p.md", network_timeout_seconds=10,
        timeout_minutes=2,
    )
    task = project.create_task()
    env = {**project.env, **offline_env(tmp_path), **extra}
    started = time.monotonic()
    proc = project.cli("worker", "run", "Real", task, "--wait", "--json", check=False,
                       timeout=150, env=env)
    took = time.monotonic() - started
    assert proc.returncode == 8, proc.stdout + proc.stderr
    end = project.process_events(task)[-1]
    agent = end["data"]["agent"]
    assert agent["error_kind"] == kind, end
    assert words in end["data"]["error"], end
    assert "trusted directory" not in (end["data"].get("log_tail") or "")
    assert took < 60, took


def test_code_review_heavy_offline_ends_within_two_minutes_saying_what_to_fix(
    project: Project, tmp_path: Path
) -> None:
    # The shipped definition as it is (REVIEW_NETWORK_SECONDS 60), no credentials at
    # all: claude and gemini say `auth` in seconds, codex retries until the bound.
    project.cli("worker", "init")
    (project.root / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    project.git("add", "calc.py")
    project.git("commit", "-q", "-m", "add calc.add")
    task = project.create_task("Add calc.add")
    env = {**project.env, **offline_env(tmp_path)}
    started = time.monotonic()
    proc = project.cli("worker", "run", "CodeReviewHeavy", task, "--wait", "--json",
                       check=False, timeout=240, env=env)
    took = time.monotonic() - started
    print(f"CodeReviewHeavy offline: {took:.1f} s")
    print(project.cli("worker", "logs", json.loads(proc.stdout)["data"][0]["run_id"],
                      env=env).stdout[-6000:])
    assert proc.returncode == 8, proc.stdout + proc.stderr
    end = project.process_events(task)[-1]
    data = end["data"]
    assert data["reason"] == "exit_nonzero", end
    assert data["agent"]["error_kind"] == "auth", end
    error = data["error"]
    assert error.startswith("no reviewer gave a usable review (nothing attached): "), error
    assert "claude (standard, critical) failed (auth): claude is not logged in" in error
    assert "set ANTHROPIC_API_KEY or run `claude login`" in error
    assert "gemini (standard, critical) failed (auth): gemini is not logged in" in error
    assert "codex (standard, critical) failed (network): codex could not reach its API" in error
    assert "trusted directory" not in error
    for reviewer in data["output"]["reviewers"]:
        print(f"  {reviewer['engine']} ({reviewer['pass']}): {reviewer['error_kind']} "
              f"in {reviewer['seconds']} s")
    assert took < 120, took


@pytest.mark.parametrize("worker", ["CodeReviewLite", "Implement"])
def test_each_shipped_claude_worker_offline_ends_auth_saying_what_to_fix(
    project: Project, tmp_path: Path, worker: str
) -> None:
    # The shipped definitions as `worker init` writes them, no credentials at all.
    project.cli("worker", "init")
    task = project.create_task("Add calc.add")
    env = {**project.env, **offline_env(tmp_path)}
    started = time.monotonic()
    proc = project.cli("worker", "run", worker, task, "--wait", "--json", check=False,
                       timeout=150, env=env)
    took = time.monotonic() - started
    print(f"{worker} offline: {took:.1f} s")
    assert proc.returncode == 8, proc.stdout + proc.stderr
    data = project.process_events(task)[-1]["data"]
    assert data["agent"]["engine"] == "claude" and data["agent"]["error_kind"] == "auth", data
    assert "set ANTHROPIC_API_KEY or run `claude login`" in data["error"], data
    assert took < 120, took
