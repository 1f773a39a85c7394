"""We and lattice-tracker 0.2.0 (with its ``mcp`` extra) in one environment.

Two real virtual environments on Python 3.12 (the tracker needs it), one per install
order, each with our wheel and the tracker from the package index. In both:
- ``lattice plugins`` lists us, and ``lattice worker run / ps / wait`` drive a real
  supervisor on a board the tracker made, with the envelope and exit codes of our own
  ``lattice-workers``;
- the tracker's commands still work, and every file the tracker installed is
  byte-identical to what its wheel recorded (nothing of it overwritten);
- uninstalling either distribution leaves the other working.

Slow (about a minute: two environments are built), so it has its own marker and its
own line in ``.ci/run``; the default test command leaves it out. The interpreter comes
from ``LATTICE_PLUGIN_PYTHON``, else pyenv's 3.12; without one the tests skip, except
under CI, where that is a failure.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.tracker_plugin

REPO = Path(__file__).resolve().parents[2]
TRACKER = "lattice-tracker[mcp]==0.2.0"
ORDERS = ("tracker-first", "workers-first")


def _python312() -> str | None:
    given = os.environ.get("LATTICE_PLUGIN_PYTHON")
    if given:
        return given
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python")))
    return found[-1] if found else None


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


def _env() -> dict[str, str]:
    """The caller's environment less anything that points at a board or a supervisor."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
    env["LATTICE_ACTOR"] = "human:tester"
    return env


def _run(
    argv: list[str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _ok(argv: list[str], cwd: Path | None = None) -> str:
    proc = _run(argv, cwd)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {proc.stderr}{proc.stdout}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _ok([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)])
    (path,) = out.glob("lattice_workers-*.whl")
    return path


@pytest.fixture(scope="module", params=ORDERS)
def venv(
    request: pytest.FixtureRequest, wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    python = _python312()
    if python is None or not Path(python).exists():
        _fail_or_skip(
            "no Python 3.12 for lattice-tracker (set LATTICE_PLUGIN_PYTHON, or install "
            "pyenv's 3.12): the tracker plugin tests did not run"
        )
    folder = tmp_path_factory.mktemp(request.param) / "venv"
    _ok([str(python), "-m", "venv", str(folder)])
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "-q"]
    installs = [[TRACKER], [str(wheel)]]
    if request.param == "workers-first":
        installs.reverse()
    for words in installs:
        _ok([*pip, *words])
    return folder


def _lattice(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(venv / "bin" / "lattice"), *args], cwd=cwd, timeout=120)


def _ours(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(venv / "bin" / "lattice-workers"), *args], cwd=cwd, timeout=120)


def _tracker_files_intact(venv: Path) -> list[str]:
    """Files of the tracker's wheel whose bytes differ from its RECORD, or are gone."""
    script = textwrap.dedent(
        """
        import base64, hashlib, json
        from importlib.metadata import distribution
        dist = distribution("lattice-tracker")
        bad = []
        for f in dist.files or []:
            if f.hash is None:
                continue
            path = f.locate()
            try:
                data = open(path, "rb").read()
            except OSError:
                bad.append(f"missing {f}")
                continue
            digest = base64.urlsafe_b64encode(hashlib.new(f.hash.mode, data).digest())
            if digest.rstrip(b"=").decode() != f.hash.value:
                bad.append(f"changed {f}")
        print(json.dumps(bad))
        """
    )
    out = _ok([str(venv / "bin" / "python"), "-c", script])
    bad: list[str] = json.loads(out)
    return bad


@pytest.fixture
def project(venv: Path, tmp_path: Path) -> Iterator[Path]:
    """A git project with a board the tracker made, one task (T-1) and two workers."""
    root = tmp_path / "project"
    root.mkdir()
    _ok(["git", "init", "-q", "-b", "main"], cwd=root)
    _ok(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "start",
        ],
        cwd=root,
    )
    init = _lattice(
        venv,
        "init",
        "--actor",
        "human:tester",
        "--project-code",
        "T",
        "--project-name",
        "plugin",
        cwd=root,
    )
    assert init.returncode == 0, init.stderr + init.stdout
    created = _lattice(venv, "create", "Fix it", "--actor", "human:tester", cwd=root)
    assert created.returncode == 0, created.stderr + created.stdout
    workers = root / "workers"
    workers.mkdir()
    for name, code in (("Ok", 0), ("Fails", 3)):
        (workers / f"{name.lower()}.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "actor": f"agent:{name.lower()}",
                    "engine": "script",
                    "command": f"echo hello from {name}; exit {code}",
                    "timeout_minutes": 5,
                }
            )
        )
    _ok(["git", "add", "-A"], cwd=root)
    _ok(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "board"],
        cwd=root,
    )
    try:
        yield root
    finally:
        _ours(venv, "supervisor", "stop", cwd=root)


def test_the_tracker_lists_us_as_a_plugin_and_keeps_its_own_executable(venv: Path) -> None:
    plugins = json.loads(_ok([str(venv / "bin" / "lattice"), "plugins", "--json"]))
    assert {"name": "workers", "value": "lattice_workers.plugin:register"} in (
        plugins["data"]["cli_plugins"]
    )
    assert _tracker_files_intact(venv) == []
    # Our requirements and the tracker's (with mcp) agree: pip finds nothing broken.
    _ok([str(venv / "bin" / "python"), "-m", "pip", "check"])
    script = (venv / "bin" / "lattice").read_text()
    assert "lattice.cli.main" in script and "lattice_workers" not in script
    assert (venv / "bin" / "lattice-workers").exists()
    # Nothing of ours under the tracker's import package.
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not [
        p.name
        for p in (site / "lattice").iterdir()
        if p.name in ("actors", "supervisor", "protocol", "store")
    ]


def test_worker_commands_run_through_the_trackers_cli(venv: Path, project: Path) -> None:
    started = _lattice(venv, "worker", "run", "Ok", "T-1", "--json", cwd=project)
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["data"]["run_id"]
    ps = _lattice(venv, "worker", "ps", "-a", "--json", cwd=project)
    assert ps.returncode == 0 and run_id in ps.stdout
    waited = _lattice(venv, "worker", "wait", run_id, "--json", cwd=project)
    assert waited.returncode == 0, waited.stderr + waited.stdout
    assert json.loads(waited.stdout)["data"][0]["state"] == "completed"
    logs = _lattice(venv, "worker", "logs", run_id, cwd=project)
    assert "hello from Ok" in logs.stdout

    failing = _lattice(venv, "worker", "run", "Fails", "T-1", "--wait", cwd=project)
    assert failing.returncode == 8, failing.stderr + failing.stdout

    # The tracker reads the runs' events on its own board.
    shown = _lattice(venv, "show", "T-1", "--json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("process_started") >= 2


def test_errors_have_our_envelope_and_exit_codes_through_either_door(
    venv: Path, project: Path
) -> None:
    for args, code in (
        (("worker", "run", "Nope", "T-1", "--json"), 3),
        (("worker", "show", "run_nope", "--json"), 3),
        (("worker", "frobnicate", "--json"), 2),
    ):
        via_tracker = _lattice(venv, *args, cwd=project)
        via_ours = _ours(venv, *args, cwd=project)
        assert (via_tracker.returncode, via_tracker.stdout) == (
            via_ours.returncode,
            via_ours.stdout,
        )
        assert via_tracker.returncode == code, via_tracker.stdout
        assert json.loads(via_tracker.stdout)["ok"] is False
    usage = _lattice(venv, "worker", "run", cwd=project)
    assert usage.returncode == 2
    assert usage.stderr.startswith("lattice: worker run: the following arguments are required")
    helped = _lattice(venv, "worker", "run", "--help", cwd=project)
    assert helped.returncode == 0 and "--wait" in helped.stdout


def test_the_trackers_own_commands_still_work(venv: Path, project: Path) -> None:
    assert "T-1" in _lattice(venv, "next", "--actor", "human:tester", cwd=project).stdout
    assert "Fix it" in _lattice(venv, "show", "T-1", cwd=project).stdout
    dashboard = _lattice(venv, "dashboard", "--help", cwd=project)
    assert dashboard.returncode == 0 and "dashboard" in dashboard.stdout.lower()
    assert _lattice(venv, "list", cwd=project).returncode == 0


def test_uninstalling_either_leaves_the_other_working(venv: Path, tmp_path: Path) -> None:
    """Runs last in each environment (it removes one distribution from it)."""
    python = str(venv / "bin" / "python")
    root = tmp_path / "p"
    root.mkdir()
    _ok(["git", "init", "-q", "-b", "main"], cwd=root)
    if venv.parent.name.startswith("tracker-first"):
        _ok([python, "-m", "pip", "uninstall", "-q", "-y", "lattice-workers"])
        assert not (venv / "bin" / "lattice-workers").exists()
        assert _tracker_files_intact(venv) == []
        assert (
            _lattice(venv, "init", "--actor", "human:t", "--project-code", "U", cwd=root).returncode
            == 0
        )
        assert (
            _lattice(venv, "create", "Still here", "--actor", "human:t", cwd=root).returncode == 0
        )
        assert "Still here" in _lattice(venv, "show", "U-1", cwd=root).stdout
        plugins = json.loads(_ok([str(venv / "bin" / "lattice"), "plugins", "--json"]))
        assert plugins["data"]["cli_plugins"] == []
    else:
        _ok([python, "-m", "pip", "uninstall", "-q", "-y", "lattice-tracker"])
        assert not (venv / "bin" / "lattice").exists()
        assert (
            _ours(venv, "init", "--actor", "human:t", "--project-code", "U", cwd=root).returncode
            == 0
        )
        assert _ours(venv, "create", "Still here", "--actor", "human:t", cwd=root).returncode == 0
        assert "Still here" in _ours(venv, "show", "U-1", cwd=root).stdout
        assert _ours(venv, "worker", "list", cwd=root).returncode == 0
