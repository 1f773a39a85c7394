"""Gemini CLI (``@google/gemini-cli``): headless with ``--output-format stream-json``.

Checked against 0.61.0. ``-p ""`` selects headless mode and the prompt is read from
stdin (``-p`` is appended to stdin's text). ``stream-json`` prints ``init`` (session
id, model), ``message`` (``role``, ``content``; the assistant's arrives in ``delta``
pieces), ``tool_use`` (``tool_name``, ``parameters``), ``tool_result`` (``status``,
``output``, ``error``), ``error`` (``severity``, ``message``) and one ``result``
(``status``, ``error``, ``stats`` with tokens per model). Gemini reports no cost.

Gemini trusts folders one by one and refuses an untrusted one in headless mode (exit
55), and every worktree is a new folder: ``--skip-trust`` trusts the working folder for
this session only. ``--include-directories`` adds the output folder to its workspace.
Without credentials it exits 41 before printing any JSON ("Please set an Auth method
..." on stderr); with no network it retries on stderr ("Attempt N failed. Retrying with
backoff... fetch failed"), both recorded under ``tests/engines/streams/``.

Gemini keeps sessions under ``<home>/.gemini/tmp/<project>/chats/``, one project per
working folder, where ``<home>`` is ``GEMINI_CLI_HOME`` or else ``HOME`` *of the
worker's environment* (a definition's ``env`` may set either; the supervisor's own home
is not where to look). ``--resume`` only searches the current folder's project, and
every attempt has a new worktree, so a resumed attempt passes the session's file with
``--session-file`` (found by :func:`find_session_file`); a session that is not there
refuses the attempt with a sentence saying where it looked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.engines._common import (
    StreamReader,
    first_argument,
    short,
    tool_line,
)
from lattice_workers.engines._engine import Engine

if TYPE_CHECKING:
    from lattice_workers.actors._definitions import WorkerDefinition

#: Gemini's exit codes (``FatalError`` subclasses) -> ``error_kind``.
_EXIT_CODES = {
    41: ("auth", "no credentials (exit code 41)"),
    53: ("max_turns", "reached max session turns (exit code 53)"),
}
_ERROR_TYPES = {
    "FatalAuthenticationError": "auth",
    "FatalTurnLimitedError": "max_turns",
}


class GeminiReader(StreamReader):
    engine = "gemini"
    login_hint = (
        "set GEMINI_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI / GOOGLE_GENAI_USE_GCA with their "
        "credentials), or run `gemini` once in a terminal to log in"
    )
    _speaking: bool = False
    _partial: str = ""
    _answer: str = ""

    def event(self, obj: dict[str, Any]) -> list[str]:
        kind = obj["type"]
        if kind == "message" and obj.get("role") == "assistant":
            return self._delta(str(obj["content"]))
        lines = self._flush()
        if kind == "init":
            self.session_id = str(obj["session_id"])
            if isinstance(obj.get("model"), str):
                self.model = obj["model"]
            lines.append(f"[gemini] session {self.session_id}, model {self.model}")
        elif kind == "tool_use":
            self.progress()
            lines.append(tool_line(str(obj["tool_name"]), first_argument(obj.get("parameters"))))
        elif kind == "tool_result":
            self.progress()
            if obj.get("status") == "error":
                error = obj.get("error")
                said = error.get("message") if isinstance(error, dict) else obj.get("output")
                lines.append(f"   tool error: {short(str(said), 200)}")
        elif kind == "error":
            message = str(obj.get("message"))
            if "session turns" in message:
                self.fail("max_turns", message)
            lines.append(f"! gemini ({obj.get('severity')}): {short(message, 300)}")
        elif kind == "result":
            lines.extend(self._result(obj))
        return lines

    def _delta(self, piece: str) -> list[str]:
        self.progress()
        if not self._speaking:
            self._speaking = True
            self._answer = ""
            self.turns = (self.turns or 0) + 1
        self._answer += piece
        self.final_message = self._answer
        text = self._partial + piece
        *done, self._partial = text.split("\n")
        return done

    def _flush(self) -> list[str]:
        self._speaking = False
        rest, self._partial = self._partial, ""
        return [rest] if rest else []

    def _result(self, obj: dict[str, Any]) -> list[str]:
        stats = obj.get("stats")
        if isinstance(stats, dict):
            self.set_tokens(
                stats, input_key="input_tokens", output_key="output_tokens", cache_key="cached"
            )
            models = stats.get("models")
            if isinstance(models, dict) and models:
                self.model = max(
                    models,
                    key=lambda m: (
                        (models[m] or {}).get("total_tokens", 0)
                        if isinstance(models[m], dict)
                        else 0
                    ),
                )
        if obj.get("status") == "error":
            self.result_error = True
            raw_error = obj.get("error")
            error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
            said = str(error.get("message") or error.get("type") or "error")
            self.fail(_ERROR_TYPES.get(str(error.get("type")), "agent_error"), said)
            return [f"[gemini] failed: {short(said, 300)}"]
        self.progress()
        return [
            f"[gemini] done: {self.turns or 0} turns, {self.input_tokens or 0} in / "
            f"{self.output_tokens or 0} out tokens"
        ]

    def finish(self) -> bytes:
        out = super().finish()
        rest = self._flush()
        return out + "".join(line + "\n" for line in rest).encode()

    def classify_exit(self, exit_code: int | None) -> tuple[str, str] | None:
        return _EXIT_CODES.get(exit_code) if exit_code is not None else None


class Gemini(Engine):
    name = "gemini"
    minimum_version = (0, 61, 0)
    owned_flags = frozenset(
        {"-p", "--prompt", "-o", "--output-format", "-i", "--prompt-interactive"}
    )
    reader_class = GeminiReader

    def argv(
        self,
        definition: WorkerDefinition,
        *,
        output_dir: Path,
        resume_session: str | None,
        env: Mapping[str, str],
    ) -> list[str]:
        argv = ["gemini", "--output-format", "stream-json", "--skip-trust"]
        argv += ["--include-directories", str(output_dir)]
        if resume_session is not None:
            home = gemini_home(env)
            found = find_session_file(resume_session, home)
            if found is None:
                raise ValueError(
                    f"gemini's session {resume_session} is not under {home / '.gemini' / 'tmp'}"
                    " (gemini keeps sessions under GEMINI_CLI_HOME, else HOME, of the "
                    "worker's environment); it cannot be resumed: run the worker anew"
                )
            argv += ["--session-file", str(found)]
        return [*argv, *definition.args, "-p", ""]


def gemini_home(env: Mapping[str, str]) -> Path:
    """The folder holding gemini's ``.gemini`` in the environment ``env``: as gemini's
    own ``homedir()``, ``GEMINI_CLI_HOME``, else ``HOME``."""
    home = env.get("GEMINI_CLI_HOME") or env.get("HOME")
    return Path(home) if home else Path(os.path.expanduser("~"))


def find_session_file(session_id: str, home: Path) -> Path | None:
    """The file gemini saved session ``session_id`` in, under any project of ``home``
    (see :func:`gemini_home`), or None.

    Gemini names the file ``session-<time>-<first 8 characters of the id>.json``
    (``.jsonl`` in newer versions).
    """
    if not re.fullmatch(r"[A-Za-z0-9-]{1,100}", session_id):
        return None  # not an id gemini makes; and never a pattern for the glob below
    base = home / ".gemini" / "tmp"
    short_id = session_id[:8]
    try:
        candidates = sorted(base.glob(f"*/chats/session-*{short_id}*.json*"))
    except OSError:
        return None
    for path in candidates:
        try:
            if session_id in path.read_text(encoding="utf-8", errors="replace")[:4096]:
                return path
        except OSError:
            continue
    return None
