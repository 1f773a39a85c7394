#!/usr/bin/env python3
"""ChangelogEntry: add the task's line to CHANGELOG.md and commit it.

The worker of ``workers/changelog-entry.json``: an implementing run that needs no AI
engine and no network, so that the demo and the tests go the whole way (a change, a
commit, the work kept, reviewed with ``lattice worker diff``, taken with ``lattice
worker apply`` or ``merge``) on any machine. Deterministic: the same task on the same
commit gives the same change, ``- <short id>: <title>`` appended under the file's
first heading (the file and the heading made when missing); a task already listed is
not listed twice, and the run then changes nothing.

It reads the task with ``lattice show --json`` (the ``lattice`` on the worker's PATH)
and commits with the project's identity, or, when the workspace has none, as the
run's actor. Exit 0 on success; non-zero, with the reason on stderr, otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEADER = "# Changelog\n"


def task() -> tuple[str, str]:
    """(the task's short id or id, its title) from the board."""
    task_id = os.environ["LATTICE_TASK_ID"]
    shown = subprocess.run(
        ["lattice", "show", task_id, "--json"], capture_output=True, text=True, check=True
    )
    snapshot = json.loads(shown.stdout)["data"]["task"]
    return str(snapshot.get("short_id") or snapshot["id"]), str(snapshot.get("title") or "")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def main() -> int:
    ref, title = task()
    entry = f"- {ref}: {' '.join(title.split())}\n"
    path = Path("CHANGELOG.md")
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    if entry in text.splitlines(keepends=True):
        print(f"{path} already lists {ref}; nothing to do")
        return 0
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + entry, encoding="utf-8")
    identity: list[str] = []
    if not git("config", "--default", "", "user.email").strip():
        actor = os.environ.get("LATTICE_ACTOR", "agent:changelog-entry")
        who = actor.replace(":", "-")
        identity = ["-c", f"user.name={actor}", "-c", f"user.email={who}@lattice.invalid"]
    git("add", "--", str(path))
    git(*identity, "commit", "-q", "-m", f"{ref}: changelog entry", "-m", f"Task: {title}")
    print(f"{path}: added {entry.strip()!r} and committed it")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as err:
        print(f"changelog-entry: {' '.join(err.cmd)} failed: {err.stderr.strip()}", file=sys.stderr)
        sys.exit(1)
