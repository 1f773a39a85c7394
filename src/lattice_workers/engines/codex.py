"""Codex (``@openai/codex``): ``codex exec --json``, the prompt read from stdin (``-``).

Checked against 0.171.0. ``--json`` prints one event per line: ``thread.started``
(the session id, ``thread_id``), ``turn.started``, ``item.started`` / ``item.completed``
for each step (``agent_message``, ``reasoning``, ``command_execution``, ``file_change``,
``mcp_tool_call``, ``web_search``, ``todo_list``, ``error``), ``turn.completed`` with
``usage`` (``input_tokens``, ``cached_input_tokens``, ``output_tokens``), and
``turn.failed`` / ``error`` with a message. Codex reports no cost and no model.

With no network it never gives up on its own: ``{"type":"error","message":"Reconnecting...
2/5 (...)"}`` and then ``Reconnecting... waiting for network`` for as long as it is left
running (recorded in ``tests/engines/streams/codex-network.jsonl``); the reader stops it
after ``network_timeout_seconds``.

``--sandbox workspace-write`` lets the agent write only its working folder and ``/tmp``;
``--add-dir`` adds the attempt's output folder (``codex exec resume`` has no such flag,
so a resumed attempt sets the same through ``-c sandbox_mode`` and
``-c sandbox_workspace_write.writable_roots``). Codex keeps sessions under
``$CODEX_HOME/sessions`` (default ``~/.codex``) by date, not by working folder, so a
session resumes from any worktree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.engines._common import StreamReader, short, tool_line
from lattice_workers.engines._engine import Engine

if TYPE_CHECKING:
    from lattice_workers.actors._definitions import WorkerDefinition

_AUTH = re.compile(r"401|unauthorized|not logged in|api key|authentication|login", re.I)
_RATE = re.compile(r"429|rate limit|too many requests|usage limit|quota", re.I)
_NET = re.compile(r"reconnecting|stream disconnected|error sending request|lookup address", re.I)
#: Items that are one step of the agent (what ``turns`` counts for codex).
_STEPS = frozenset(
    {"agent_message", "command_execution", "file_change", "mcp_tool_call", "web_search"}
)


class CodexReader(StreamReader):
    engine = "codex"
    login_hint = "set OPENAI_API_KEY (or CODEX_API_KEY) or run `codex login`"

    def event(self, obj: dict[str, Any]) -> list[str]:
        kind = obj["type"]
        if kind == "thread.started":
            self.session_id = str(obj["thread_id"])
            return [f"[codex] session {self.session_id}"]
        if kind in ("item.started", "item.completed"):
            return self._item(kind, obj["item"])
        if kind == "turn.completed":
            self.progress()
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.add_tokens(
                    usage,
                    input_key="input_tokens",
                    output_key="output_tokens",
                    cache_key="cached_input_tokens",
                )
            return [
                f"[codex] turn done: {self.input_tokens or 0} in / "
                f"{self.output_tokens or 0} out tokens"
            ]
        if kind == "turn.failed":
            error = obj.get("error")
            said = str(error.get("message") if isinstance(error, dict) else error)
            self.result_error = True
            self._classify_text(said)
            return [f"! codex: turn failed: {short(said, 300)}"]
        if kind == "error":
            said = str(obj.get("message"))
            self._classify_text(said)
            return [f"! codex: {short(said, 300)}"]
        return []

    def _classify_text(self, said: str) -> None:
        if _NET.search(said) and not _AUTH.search(said):
            self.network_retry(said)
        elif _AUTH.search(said):
            self.fail("auth", said)
        elif _RATE.search(said):
            self.fail("rate_limit", said)
        else:
            self.fail("agent_error", said)

    def _item(self, kind: str, item: dict[str, Any]) -> list[str]:
        itype = item.get("type")
        if itype == "error":
            said = str(item.get("message"))
            if _NET.search(said):
                self.network_retry(said)
            return [f"! codex: {short(said, 300)}"]
        if itype == "reasoning":
            return []
        self.progress()
        if kind == "item.started":
            if itype == "command_execution":
                return [tool_line("shell", str(item.get("command")))]
            return []
        if itype in _STEPS:
            self.turns = (self.turns or 0) + 1
        if itype == "agent_message":
            text = str(item.get("text", ""))
            self.final_message = text
            return text.splitlines()
        if itype == "command_execution":
            code = item.get("exit_code")
            return [f"   exit code {code}"] if code not in (0, None) else []
        if itype == "file_change":
            changes = item.get("changes") or []
            return [
                tool_line("edit", f"{c.get('path')} ({c.get('kind')})")
                for c in changes
                if isinstance(c, dict)
            ]
        if itype == "mcp_tool_call":
            name = f"{item.get('server')}.{item.get('tool')}"
            return [tool_line(name, short(json.dumps(item.get("arguments")), 100))]
        if itype == "web_search":
            return [tool_line("web_search", str(item.get("query")))]
        return []


class Codex(Engine):
    name = "codex"
    minimum_version = (0, 171, 0)
    owned_flags = frozenset({"--json"})
    reader_class = CodexReader

    def argv(
        self,
        definition: WorkerDefinition,
        *,
        output_dir: Path,
        resume_session: str | None,
        env: Mapping[str, str],
    ) -> list[str]:
        # --skip-git-repo-check: a worker without a worktree may run outside git.
        # The final "-": read the prompt from stdin.
        if resume_session is None:
            head = ["codex", "exec", "--json", "--sandbox", "workspace-write"]
            head += ["--add-dir", str(output_dir)]
        else:
            head = ["codex", "exec", "resume", resume_session, "--json"]
            head += ["-c", 'sandbox_mode="workspace-write"']
            head += [
                "-c",
                f"sandbox_workspace_write.writable_roots={json.dumps([str(output_dir)])}",
            ]
        head.append("--skip-git-repo-check")
        return [*head, *definition.args, "-"]
