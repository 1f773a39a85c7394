"""The real lattice-tracker 0.2.0, found by LATTICE_TRACKER_BIN or in /work/tracker-venv.

It needs Python 3.12, so it lives in its own virtual environment:
``python3.12 -m venv VENV && VENV/bin/pip install lattice-tracker==0.2.0``, then
``LATTICE_TRACKER_BIN=VENV/bin/lattice``. Without it these tests skip, except under
CI (``CI=1`` or ``CI=true``), where a missing tracker is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DEFAULT_TRACKER = Path("/work/tracker-venv/bin/lattice")


def _tracker_path() -> Path | None:
    env = os.environ.get("LATTICE_TRACKER_BIN")
    if env:
        return Path(env)
    return DEFAULT_TRACKER if DEFAULT_TRACKER.exists() else None


@pytest.fixture(scope="session")
def tracker() -> Path:
    path = _tracker_path()
    if path is None or not path.exists():
        given = os.environ.get("LATTICE_TRACKER_BIN")
        reason = (
            f"lattice-tracker not found (LATTICE_TRACKER_BIN={given!r}, no {DEFAULT_TRACKER}): "
            "install lattice-tracker==0.2.0 into a Python 3.12 venv "
            "and set LATTICE_TRACKER_BIN to its bin/lattice"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}


def run_tracker(tracker: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tracker), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60
    )


def tracker_ok(tracker: Path, *args: str, cwd: Path) -> str:
    proc = run_tracker(tracker, *args, cwd=cwd)
    assert proc.returncode == 0, f"tracker {args}: {proc.stderr}{proc.stdout}"
    return proc.stdout


def tracker_json(tracker: Path, *args: str, cwd: Path) -> Any:
    envelope = json.loads(tracker_ok(tracker, *args, "--json", cwd=cwd))
    assert envelope["ok"] is True
    return envelope["data"]


def ours(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lattice_workers", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def ours_json(*args: str, cwd: Path) -> Any:
    proc = ours(*args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)["data"]


def tracker_doctor_findings(tracker: Path, cwd: Path) -> list[dict[str, Any]]:
    """The tracker's doctor findings (it exits 0 on warnings, so read them)."""
    findings: list[dict[str, Any]] = tracker_json(tracker, "doctor", cwd=cwd)["findings"]
    return findings
