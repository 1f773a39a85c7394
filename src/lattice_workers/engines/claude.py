"""Claude Code (``@anthropic-ai/claude-code``): ``claude -p`` with ``stream-json`` output.

Checked against 2.1.197. ``-p --output-format stream-json --verbose`` prints one JSON
object per line as the session goes (``--verbose`` is required with stream-json in
print mode): a ``system``/``init`` line (session id, model), ``assistant`` and ``user``
messages (text, tool calls, tool results), ``system``/``api_retry`` lines while the API
cannot be reached, and one ``result`` line (turns, usage, ``total_cost_usd``, the final
answer, ``is_error``, ``subtype`` such as ``error_max_turns``). Without credentials the
assistant message carries ``"error": "authentication_failed"`` and the CLI exits 1 in
about a second (recorded in ``tests/engines/streams/claude-auth.jsonl``).

Claude keeps a session in ``$CLAUDE_CONFIG_DIR/projects/<working folder, every
non-alphanumeric character as ->/<session>.jsonl`` and ``--resume ID`` looks only in the
folder of the current working folder, so :func:`carry_session` copies the session's
file to the new worktree's folder before a resumed attempt.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice_workers.engines._common import (
    StreamReader,
    as_float,
    as_int,
    first_argument,
    short,
    tool_line,
)
from lattice_workers.engines._engine import Engine

if TYPE_CHECKING:
    from lattice_workers.actors._definitions import WorkerDefinition

#: ``error`` on an assistant message -> ``error_kind``.
_MESSAGE_ERRORS = {
    "authentication_failed": "auth",
    "rate_limit": "rate_limit",
    "billing_error": "agent_error",
}
#: ``subtype`` of a failed ``result`` -> ``error_kind``.
_RESULT_SUBTYPES = {
    "error_max_turns": "max_turns",
    "error_max_budget_usd": "budget",
}


class ClaudeReader(StreamReader):
    engine = "claude"
    login_hint = "set ANTHROPIC_API_KEY or run `claude login`"

    def enforces_turns(self) -> bool:
        return True  # --max-turns

    def event(self, obj: dict[str, Any]) -> list[str]:
        kind = obj["type"]
        if isinstance(obj.get("session_id"), str):
            self.session_id = obj["session_id"]
        if kind == "system":
            return self._system(obj)
        if kind == "assistant":
            return self._assistant(obj)
        if kind == "user":
            return self._user(obj)
        if kind == "result":
            return self._result(obj)
        return []

    def _system(self, obj: dict[str, Any]) -> list[str]:
        subtype = obj.get("subtype")
        if subtype == "init":
            if isinstance(obj.get("model"), str):
                self.model = obj["model"]
            return [f"[claude] session {self.session_id}, model {self.model}"]
        if subtype == "api_retry":
            status = obj.get("error_status")
            said = f"API error {status or obj.get('error')}, retry {obj.get('attempt')}/" + str(
                obj.get("max_retries")
            )
            if status in (401, 403):
                self.fail("auth", said)
            elif status == 429:
                self.fail("rate_limit", said)
            elif status is None:
                self.network_retry(said)
            return [f"! claude: {said}"]
        return []

    def _assistant(self, obj: dict[str, Any]) -> list[str]:
        message = obj["message"]
        content = message["content"]
        if not isinstance(content, list):
            raise TypeError("assistant content is not a list")
        model = message.get("model")
        if isinstance(model, str) and not model.startswith("<"):
            self.model = model
        texts: list[str] = []
        lines: list[str] = []
        for block in content:
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
                lines.extend(block["text"].splitlines())
            elif block.get("type") == "tool_use":
                lines.append(tool_line(str(block.get("name")), first_argument(block.get("input"))))
        error = obj.get("error")
        if isinstance(error, str):
            self.fail(_MESSAGE_ERRORS.get(error, "agent_error"), " ".join(texts) or error)
            return [f"! claude: {error}: {short(' '.join(texts), 300)}"]
        self.progress()
        if texts:
            self.final_message = "\n".join(texts)
        return lines

    def _user(self, obj: dict[str, Any]) -> list[str]:
        self.progress()
        content = obj["message"]["content"]
        lines: list[str] = []
        if isinstance(content, list):
            for block in content:
                if block.get("type") == "tool_result" and block.get("is_error"):
                    lines.append(f"   tool error: {short(_text_of(block.get('content')), 200)}")
        return lines

    def _result(self, obj: dict[str, Any]) -> list[str]:
        turns = as_int(obj.get("num_turns"))
        if turns is not None:
            self.turns = turns
        cost = as_float(obj.get("total_cost_usd"))
        if cost is not None:
            self.cost_usd = cost
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.set_tokens(
                usage,
                input_key="input_tokens",
                output_key="output_tokens",
                cache_key="cache_read_input_tokens",
            )
        result = obj.get("result")
        if isinstance(result, str) and result.strip():
            self.final_message = result
        subtype = str(obj.get("subtype") or "")
        if obj.get("is_error") or subtype.startswith("error"):
            self.result_error = True
            self.fail(_RESULT_SUBTYPES.get(subtype, "agent_error"), result or subtype)
            label = f" ({subtype})" if subtype.startswith("error") else ""
            return [f"[claude] failed{label}: {short(str(result or ''), 300)}"]
        self.progress()
        return [f"[claude] done: {_figures(self)}"]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return str(content)


def _figures(reader: StreamReader) -> str:
    parts = [f"{reader.turns} turns" if reader.turns is not None else "turns unknown"]
    if reader.input_tokens is not None or reader.output_tokens is not None:
        parts.append(f"{reader.input_tokens or 0} in / {reader.output_tokens or 0} out tokens")
    if reader.cost_usd is not None:
        parts.append(f"${reader.cost_usd:.4f}")
    return ", ".join(parts)


class Claude(Engine):
    name = "claude"
    minimum_version = (2, 1, 197)
    owned_flags = frozenset({"-p", "--print", "--output-format", "--input-format", "--verbose"})
    reader_class = ClaudeReader

    def argv(
        self,
        definition: WorkerDefinition,
        *,
        output_dir: Path,
        resume_session: str | None,
        env: Mapping[str, str],
    ) -> list[str]:
        # -p: print mode (one prompt, no terminal); the prompt comes on stdin.
        # --add-dir: the output folder is outside the worktree; let the tools write there.
        argv = ["claude", "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--add-dir", str(output_dir)]
        if definition.max_turns is not None:
            argv += ["--max-turns", str(definition.max_turns)]
        if definition.max_cost_usd is not None:
            argv += ["--max-budget-usd", f"{definition.max_cost_usd:g}"]
        if resume_session is not None:
            argv += ["--resume", resume_session]
        return [*argv, *definition.args]


def project_folder(config_dir: Path, cwd: Path) -> Path:
    """Where claude keeps the sessions started in ``cwd``."""
    return config_dir / "projects" / re.sub(r"[^A-Za-z0-9]", "-", str(cwd))


def config_dir(env: dict[str, str]) -> Path:
    """Claude's configuration folder in the worker's environment ``env``."""
    configured = env.get("CLAUDE_CONFIG_DIR")
    if configured:
        return Path(configured)
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".claude"


def carry_session(
    session_id: str, *, old_cwd: Path, new_cwd: Path, env: dict[str, str]
) -> str | None:
    """Copy session ``session_id`` from ``old_cwd``'s folder to ``new_cwd``'s, so that
    ``claude --resume`` finds it from the new worktree. Returns why not, or None.

    Blocking (file copies): run it off the event loop.
    """
    if not re.fullmatch(r"[A-Za-z0-9-]{1,100}", session_id):
        return f"claude session id {session_id!r} is not a session id"
    base = config_dir(env)
    source = project_folder(base, old_cwd) / f"{session_id}.jsonl"
    target = project_folder(base, new_cwd) / f"{session_id}.jsonl"
    if target.exists():
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    except FileNotFoundError:
        return (
            f"claude's session {session_id} is not in {source.parent} (claude keeps sessions "
            "per working folder, under CLAUDE_CONFIG_DIR or ~/.claude); it cannot be resumed"
        )
    except OSError as err:
        return f"cannot copy claude's session {session_id} to {target.parent}: {err.strerror}"
    return None
