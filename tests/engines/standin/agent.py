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
keep); with ``$STANDIN_COMMIT`` it writes ``$STANDIN_EDIT`` (``file=text``) and commits
everything with that message, with real git. With ``$CLAUDE_CONFIG_DIR`` the claude
stand-in keeps its session per working folder and refuses a ``--resume`` it cannot
find there, as claude does; with ``$STANDIN_SESSIONS`` the codex and gemini stand-ins
keep theirs as those CLIs do (see :func:`sessions`). With ``$STANDIN_HANG_AFTER`` it
then sleeps instead of exiting; with ``$STANDIN_DAEMON`` (seconds) it leaves a child
behind that holds its output open that long. ``--version``
prints ``$STANDIN_VERSION`` or the minimum version.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
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
    if os.environ.get("STANDIN_SESSIONS") and engine in ("codex", "gemini"):
        problem = sessions(engine, stream)
        if problem:
            print(problem, file=sys.stderr)
            return 1
    touch = os.environ.get("STANDIN_TOUCH")
    if touch:
        Path(touch).write_text(f"written by {engine} {os.getpid()}\n")
    commit = os.environ.get("STANDIN_COMMIT")
    if commit:
        # As an implementing agent: its change (STANDIN_EDIT: "file=text"), committed
        # with real git in its working folder.
        name, _, text = os.environ.get("STANDIN_EDIT", "").partition("=")
        if name:
            Path(name).write_text(text.replace("\\n", "\n"))
        subprocess.run(["git", "add", "-A"], check=True)
        subprocess.run(["git", "commit", "-q", "-m", commit], check=True)
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
    if os.environ.get("STANDIN_DAEMON"):  # a helper it started and left running
        subprocess.Popen(["sleep", os.environ["STANDIN_DAEMON"]], start_new_session=True)
    return int(os.environ.get("STANDIN_EXIT") or 0)


def sessions(engine: str, stream: Path) -> str | None:
    """As codex and gemini keep sessions: codex under ``$CODEX_HOME/sessions`` (default
    ``~/.codex``), any folder resuming any session; gemini under ``<GEMINI_CLI_HOME or
    HOME>/.gemini/tmp/<project of the working folder>/chats``, ``--resume`` looking only
    in the current folder's project and ``--session-file`` reading the file it names.
    Returns the CLI's complaint when the session to resume is not there."""
    first = json.loads(stream.read_text().splitlines()[0])
    argv = sys.argv[1:]
    if engine == "codex":
        home = Path(os.environ.get("CODEX_HOME") or Path(os.environ["HOME"], ".codex"))
        folder = home / "sessions"
        if argv[:2] == ["exec", "resume"]:
            wanted = argv[2]
            if not (folder / f"rollout-{wanted}.jsonl").exists():
                return f"Error: thread/resume failed: no rollout found for thread id {wanted}"
            return None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rollout-{first['thread_id']}.jsonl").write_text(json.dumps(first) + "\n")
        return None
    home = Path(os.environ.get("GEMINI_CLI_HOME") or os.environ["HOME"])
    chats = home / ".gemini" / "tmp" / re.sub(r"[^A-Za-z0-9]", "-", os.getcwd()) / "chats"
    if "--session-file" in argv:
        named = Path(argv[argv.index("--session-file") + 1])
        if not named.is_file():
            return f"Error loading session file {named}: not found"
        return None
    if "--resume" in argv:
        wanted = argv[argv.index("--resume") + 1]
        if not list(chats.glob(f"session-*-{wanted[:8]}.jsonl")):
            return f'Error resuming session: Invalid session identifier "{wanted}".'
        return None
    chats.mkdir(parents=True, exist_ok=True)
    sid = first["session_id"]
    (chats / f"session-2026-12-02T07-12-{sid[:8]}.jsonl").write_text(
        json.dumps({"sessionId": sid}) + "\n"
    )
    return None


if __name__ == "__main__":
    sys.exit(main())
