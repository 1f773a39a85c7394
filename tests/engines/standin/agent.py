#!/usr/bin/env python3
"""A stand-in for the claude, codex and gemini CLIs: replays a recorded stream.

Installed under the engine's name into a folder put first on PATH (a two-line
shell script that execs this file with ``STANDIN_ENGINE`` set, see
``tests/e2e/test_agent_budgets.py``). It
records how it was called (argv, stdin, cwd, LATTICE_OUTPUT_DIR) as one JSON file in
``$STANDIN_RECORD`` and then replays ``$STANDIN_STREAM`` (default: the engine's
``<engine>-success.jsonl`` beside the tests): lines that start with ``{`` on stdout,
the others on stderr, as the real CLIs print them, ``$STANDIN_DELAY`` seconds apart,
and exits ``$STANDIN_EXIT`` (default 0). With ``$STANDIN_REPORT`` set it writes that
text to ``$LATTICE_OUTPUT_DIR/report.md`` first, as an agent following its prompt
would; with ``$STANDIN_TOUCH`` it writes that file in its working folder (work to
keep). With ``$CLAUDE_CONFIG_DIR`` the claude stand-in keeps its session per working
folder and refuses a ``--resume`` it cannot find there, as claude does. With
``$STANDIN_HANG_AFTER`` it then sleeps instead of exiting. ``--version``
prints ``$STANDIN_VERSION`` or the minimum version.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

STREAMS = Path(__file__).resolve().parent.parent / "streams"
VERSIONS = {"claude": "2.1.197 (Claude Code)", "codex": "codex-cli 0.171.0", "gemini": "0.61.0"}


def main() -> int:
    engine = os.environ.get("STANDIN_ENGINE") or Path(sys.argv[0]).name
    if sys.argv[1:] == ["--version"]:
        print(os.environ.get("STANDIN_VERSION") or VERSIONS.get(engine, "0.0.0"))
        return 0
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    record = os.environ.get("STANDIN_RECORD")
    if record:
        folder = Path(record)
        folder.mkdir(parents=True, exist_ok=True)
        call = {
            "engine": engine,
            "argv": sys.argv[1:],
            "stdin": stdin,
            "cwd": os.getcwd(),
            "output_dir": os.environ.get("LATTICE_OUTPUT_DIR"),
            "pid": os.getpid(),
        }
        (folder / f"{engine}-{os.getpid()}.json").write_text(json.dumps(call))
    stream = Path(os.environ.get("STANDIN_STREAM") or STREAMS / f"{engine}-success.jsonl")
    if engine == "claude" and os.environ.get("CLAUDE_CONFIG_DIR"):
        # As claude: sessions live under the working folder's project folder, and
        # --resume finds only those.
        projects = Path(os.environ["CLAUDE_CONFIG_DIR"], "projects")
        here = projects / re.sub(r"[^A-Za-z0-9]", "-", os.getcwd())
        if "--resume" in sys.argv:
            wanted = sys.argv[sys.argv.index("--resume") + 1]
            if not (here / f"{wanted}.jsonl").exists():
                print(f"No conversation found with session ID: {wanted}")
                return 1
        else:
            first = json.loads(stream.read_text().splitlines()[0])
            here.mkdir(parents=True, exist_ok=True)
            (here / f"{first['session_id']}.jsonl").write_text(json.dumps(first) + "\n")
    touch = os.environ.get("STANDIN_TOUCH")
    if touch:
        Path(touch).write_text(f"written by {engine} {os.getpid()}\n")
    report = os.environ.get("STANDIN_REPORT")
    if report and os.environ.get("LATTICE_OUTPUT_DIR"):
        Path(os.environ["LATTICE_OUTPUT_DIR"], "report.md").write_text(report)
    delay = float(os.environ.get("STANDIN_DELAY") or 0)
    for line in stream.read_text().splitlines(keepends=True):
        out = sys.stdout if line.lstrip().startswith("{") else sys.stderr
        out.write(line)
        out.flush()
        if delay:
            time.sleep(delay)
    if os.environ.get("STANDIN_HANG_AFTER"):
        time.sleep(600)  # as a CLI that keeps retrying without printing more
    return int(os.environ.get("STANDIN_EXIT") or 0)


if __name__ == "__main__":
    sys.exit(main())
