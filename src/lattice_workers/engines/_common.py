"""What every engine adapter shares: the command it builds, and the reader of its stream.

An adapter knows one CLI; this module knows none. :class:`StreamReader` turns the raw
bytes a CLI prints into a readable transcript for the run's log, keeps the figures the
CLI reports (session, model, turns, tokens, cost, final answer), and decides two things
the supervisor cannot see from an exit code: when an attempt must be stopped (network
retries only, for too long; a budget spent) and why an attempt failed (``error_kind``).

Pure logic, no Trio and no I/O: the lifecycle feeds it the worker's output as it
arrives, in chunks of any size, and asks it questions.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from lattice_workers.actors._definitions import WorkerDefinition

#: ``agent.error_kind`` values (SPEC section 9).
ERROR_KINDS = ("auth", "network", "rate_limit", "max_turns", "budget", "agent_error")
#: ``agent.final_message`` keeps at most this many bytes (UTF-8).
FINAL_MESSAGE_MAX_BYTES = 2048
#: An agent that reports nothing but network retries for this long is stopped.
DEFAULT_NETWORK_TIMEOUT_SECONDS = 120.0
#: A tool call's argument is cut to this many characters in the transcript.
TOOL_ARGUMENT_CHARS = 120
#: A line longer than this is cut in the transcript (the raw stream keeps it whole).
TRANSCRIPT_LINE_CHARS = 4000
#: A partial line longer than this is emitted as it is: a CLI that never prints a
#: newline must not make the reader hold its whole output.
MAX_PENDING_BYTES = 1 << 20

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


@dataclass(frozen=True)
class EngineCommand:
    """What the lifecycle executes: ``argv``, bytes for stdin (None: ``/dev/null``), and
    variables to add to the worker's environment."""

    argv: list[str]
    stdin: bytes | None
    env: dict[str, str]


@dataclass(frozen=True)
class Limits:
    """What a reader enforces from the stream (the CLI's own flags come first)."""

    max_cost_usd: float | None = None
    max_turns: int | None = None
    network_timeout_seconds: float = DEFAULT_NETWORK_TIMEOUT_SECONDS

    @classmethod
    def of(cls, definition: WorkerDefinition | None) -> Limits:
        if definition is None:
            return cls()
        return cls(
            max_cost_usd=definition.max_cost_usd,
            max_turns=definition.max_turns,
            network_timeout_seconds=definition.network_timeout_seconds,
        )


#: A script's ``agent.error`` is cut to this many characters.
SCRIPT_ERROR_MAX_CHARS = 4000


def agent_of_script(result: object) -> dict[str, Any] | None:
    """The ``agent`` object a script worker that runs agents itself (CodeReviewHeavy)
    put in its result file, checked and cut to the terminal event's shape; None when
    there is none or it is not an object.

    Only the known fields are kept, each of the right type (a wrong one becomes None):
    the board's readers, the daily budget among them, trust what is on the record.
    """
    if not isinstance(result, dict):
        return None
    agent = result.get("agent")
    if not isinstance(agent, dict):
        return None

    def text(key: str, limit: int) -> str | None:
        value = agent.get(key)
        return cut_utf8(value, limit) if isinstance(value, str) and value else None

    def count(key: str) -> int | None:
        value = as_int(agent.get(key))
        return value if value is not None and value >= 0 else None

    cost = as_float(agent.get("cost_usd"))
    kind = agent.get("error_kind")
    return {
        "engine": text("engine", 200) or "script",
        "model": text("model", 200),
        "session_id": text("session_id", 200),
        "turns": count("turns"),
        "input_tokens": count("input_tokens"),
        "output_tokens": count("output_tokens"),
        "cache_read_tokens": count("cache_read_tokens"),
        "cost_usd": cost if cost is not None and cost >= 0 else None,
        "final_message": text("final_message", FINAL_MESSAGE_MAX_BYTES),
        "error_kind": kind if kind in ERROR_KINDS else None,
        "error": text("error", SCRIPT_ERROR_MAX_CHARS),
    }


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves, titles)."""
    return _ANSI.sub("", text)


def short(text: str, limit: int = TOOL_ARGUMENT_CHARS) -> str:
    """One line of at most ``limit`` characters."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def cut_utf8(text: str, limit: int = FINAL_MESSAGE_MAX_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def as_int(value: Any) -> int | None:
    """An integer count from a CLI, or None when it sent something else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


@dataclass
class Failure:
    """The most telling failure seen so far: its kind and the CLI's own words."""

    kind: str
    said: str


#: What a line that is not JSON may say, checked in order (stderr shares the pipe).
_TEXT_SIGNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "auth",
        re.compile(
            r"not logged in|please run /login|invalid api key|invalid x-api-key|"
            r"401 unauthorized|\bunauthorized\b|authentication (failed|error)|"
            r"please set an auth method|api key not valid|missing bearer",
            re.I,
        ),
    ),
    ("rate_limit", re.compile(r"\b429\b|rate.?limit|too many requests|quota exceeded", re.I)),
)
#: A line that says the CLI is retrying because the API cannot be reached.
_NETWORK_RETRY = re.compile(
    r"reconnecting\.\.\.|retrying with backoff|fetch failed|ENOTFOUND|EAI_AGAIN|"
    r"ECONNREFUSED|ETIMEDOUT|name does not resolve|failed to lookup address|"
    r"error sending request|network is unreachable|connection (refused|reset|failed)",
    re.I,
)


@dataclass
class StreamReader:
    """Reads one attempt's output; subclassed once per engine.

    ``feed`` takes raw bytes in any chunking and returns the transcript lines that
    became complete; a line that is not the engine's JSON is kept verbatim (ANSI
    stripped): stderr shares the pipe, and a CLI may print a warning anywhere.
    ``clock`` stamps the first network retry; ``stop_reason(now)`` compares ``now``
    from the same clock.
    """

    engine: ClassVar[str] = ""
    #: What the user must do when the CLI has no credentials.
    login_hint: ClassVar[str] = ""

    limits: Limits = field(default_factory=Limits)
    clock: Callable[[], float] = time.monotonic

    model: str | None = None
    session_id: str | None = None
    turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cost_usd: float | None = None
    final_message: str | None = None
    failure: Failure | None = None
    #: Set when the reader asked for the attempt to be stopped: (reason, sentence, kind).
    stopped: tuple[str, str, str] | None = None
    #: When the current run of network retries began (None: progress since).
    retrying_since: float | None = None
    last_retry: str | None = None
    #: The engine's final result said the run failed (even if the CLI exits 0).
    result_error: bool = False
    _pending: bytearray = field(default_factory=bytearray)

    # -- the lifecycle's API -----------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        """Transcript bytes for the complete lines in ``chunk`` (and what came before)."""
        self._pending += chunk
        out: list[str] = []
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                break
            line = bytes(self._pending[:end])
            del self._pending[: end + 1]
            out.extend(self._line(line))
        if len(self._pending) > MAX_PENDING_BYTES:
            line = bytes(self._pending)
            self._pending.clear()
            out.extend(self._line(line))
        return _encode(out)

    def finish(self) -> bytes:
        """Transcript bytes for a last line that had no newline."""
        if not self._pending:
            return b""
        line = bytes(self._pending)
        self._pending.clear()
        return _encode(self._line(line))

    def stop_reason(self, now: float) -> tuple[str, str] | None:
        """``(reason, sentence)`` when the attempt must be stopped now, else None.

        ``network``: only network retries for longer than the bound; ``budget_exceeded``:
        the cost or the turns went past the limit (for CLIs without a flag for it).
        Once returned, the same answer is given again, and :meth:`report` names it.
        """
        if self.stopped is not None:
            return self.stopped[0], self.stopped[1]
        bound = self.limits.network_timeout_seconds
        if self.retrying_since is not None and now - self.retrying_since >= bound:
            said = f" (last: {short(self.last_retry, 200)})" if self.last_retry else ""
            sentence = (
                f"{self.engine} could not reach its API: it did nothing but retry the "
                f"network for {now - self.retrying_since:.0f} s{said}; check this machine's "
                "network, DNS and proxy (HTTPS_PROXY), or raise the definition's "
                '"network_timeout_seconds"'
            )
            self.stopped = ("network", sentence, "network")
            return self.stopped[0], self.stopped[1]
        limit = self.limits.max_cost_usd
        if limit is not None and self.cost_usd is not None and self.cost_usd > limit:
            sentence = (
                f"{self.engine} spent ${self.cost_usd:.4f}, more than its budget of "
                f'${limit:.4f}; raise "max_cost_usd" in the definition or `--max-cost`'
            )
            self.stopped = ("budget_exceeded", sentence, "budget")
            return self.stopped[0], self.stopped[1]
        turns = self.limits.max_turns
        if (
            turns is not None
            and self.turns is not None
            and self.turns > turns
            and not (self.enforces_turns())
        ):
            sentence = (
                f'{self.engine} went past its limit of {turns} turns; raise "max_turns" '
                "in the definition or `--max-turns`, or narrow the prompt"
            )
            self.stopped = ("budget_exceeded", sentence, "max_turns")
            return self.stopped[0], self.stopped[1]
        return None

    def report(self, exit_code: int | None) -> dict[str, Any]:
        """The terminal event's ``agent`` object (SPEC section 9), plus ``error``: a
        sentence that says what to do, when ``error_kind`` is set."""
        kind, sentence = self._classify(exit_code)
        return {
            "engine": self.engine,
            "model": self.model,
            "session_id": self.session_id,
            "turns": self.turns,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cost_usd": self.cost_usd,
            "final_message": cut_utf8(self.final_message) if self.final_message else None,
            "error_kind": kind,
            "error": sentence,
        }

    # -- for the engines ---------------------------------------------------------

    def enforces_turns(self) -> bool:
        """Whether the CLI itself stops at ``max_turns`` (then the reader need not)."""
        return False

    def event(self, obj: dict[str, Any]) -> list[str]:
        """Transcript lines for one JSON object of the engine's stream."""
        raise NotImplementedError

    def classify_exit(self, exit_code: int | None) -> tuple[str, str] | None:
        """An engine's reading of its exit code alone, or None."""
        return None

    def progress(self) -> None:
        """The agent did something real: a run of network retries, if any, is over."""
        self.retrying_since = None
        self.last_retry = None

    def network_retry(self, said: str) -> None:
        if self.retrying_since is None:
            self.retrying_since = self.clock()
        self.last_retry = strip_ansi(said).strip()

    def fail(self, kind: str, said: str) -> None:
        """Note a failure; a more specific kind than ``agent_error`` is never replaced
        by ``agent_error``."""
        said = strip_ansi(said).strip()
        if self.failure is None or self.failure.kind == "agent_error":
            self.failure = Failure(kind, said)

    def add_tokens(
        self, usage: dict[str, Any], *, input_key: str, output_key: str, cache_key: str
    ) -> None:
        for attr, key in (
            ("input_tokens", input_key),
            ("output_tokens", output_key),
            ("cache_read_tokens", cache_key),
        ):
            value = as_int(usage.get(key))
            if value is not None:
                setattr(self, attr, (getattr(self, attr) or 0) + value)

    def set_tokens(
        self, usage: dict[str, Any], *, input_key: str, output_key: str, cache_key: str
    ) -> None:
        for attr, key in (
            ("input_tokens", input_key),
            ("output_tokens", output_key),
            ("cache_read_tokens", cache_key),
        ):
            value = as_int(usage.get(key))
            if value is not None:
                setattr(self, attr, value)

    # -- inside ------------------------------------------------------------------

    def _line(self, raw: bytes) -> list[str]:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        stripped = text.strip()
        if not stripped:
            return []
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                try:
                    return [_cut(line) for line in self.event(obj)]
                except (AttributeError, KeyError, TypeError, ValueError):
                    pass  # JSON, but not in the shape this engine prints: keep it as is
        return self._text(text)

    def _text(self, text: str) -> list[str]:
        """A line that is not the engine's JSON: kept verbatim, and read for signs."""
        clean = strip_ansi(text)
        if _NETWORK_RETRY.search(clean):
            self.network_retry(clean)
        else:
            for kind, pattern in _TEXT_SIGNS:
                if pattern.search(clean):
                    self.fail(kind, clean)
                    break
        return [_cut(clean)]

    def _classify(self, exit_code: int | None) -> tuple[str | None, str | None]:
        if self.stopped is not None:
            return self.stopped[2], self.stopped[1]
        failure = self.failure
        if failure is None:
            by_exit = self.classify_exit(exit_code)
            failure = Failure(*by_exit) if by_exit is not None else None
        if exit_code == 0 and not self.result_error:
            return None, None  # retries or warnings on the way, but it finished
        if failure is None and self.retrying_since is not None:
            failure = Failure("network", self.last_retry or "")
        if failure is None:
            if exit_code is None:
                return None, None  # stopped from outside (cancel, deadline): not the agent's
            failure = Failure("agent_error", "")
        return failure.kind, self._sentence(failure, exit_code)

    def _sentence(self, failure: Failure, exit_code: int | None) -> str:
        said = f' ({self.engine} said: "{short(failure.said, 200)}")' if failure.said else ""
        name = self.engine
        if failure.kind == "auth":
            return f"{name} is not logged in{said}: {self.login_hint}"
        if failure.kind == "network":
            return (
                f"{name} could not reach its API{said}; check this machine's network, DNS "
                "and proxy (HTTPS_PROXY)"
            )
        if failure.kind == "rate_limit":
            return (
                f"{name} was refused by its API for too many requests or an exhausted "
                f"quota{said}; wait and run again, or lower the worker's max_concurrent"
            )
        if failure.kind == "max_turns":
            turns = f" after {self.turns} turns" if self.turns is not None else ""
            return (
                f'{name} stopped at its turn limit{turns}{said}; raise "max_turns" in the '
                "definition or `--max-turns`, or narrow the prompt"
            )
        if failure.kind == "budget":
            cost = f" after spending ${self.cost_usd:.4f}" if self.cost_usd is not None else ""
            return (
                f'{name} stopped at its cost limit{cost}{said}; raise "max_cost_usd" in the '
                "definition or `--max-cost`"
            )
        code = f"exit code {exit_code}" if exit_code is not None else "no exit code"
        return f"{name} failed ({code}){said}; see the run's log for what it did"


def _cut(line: str) -> str:
    return line if len(line) <= TRANSCRIPT_LINE_CHARS else line[: TRANSCRIPT_LINE_CHARS - 3] + "..."


def _encode(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


def tool_line(name: str, argument: str | None) -> str:
    """One transcript line for one tool call: its name and a short argument."""
    arg = short(argument) if argument else ""
    return f"-> {name}" + (f": {arg}" if arg else "")


def first_argument(params: Any) -> str | None:
    """The most telling argument of a tool call: a command, a path, a pattern, a URL."""
    if not isinstance(params, dict):
        return None if params is None else str(params)
    for key in (
        "command",
        "cmd",
        "file_path",
        "path",
        "absolute_path",
        "pattern",
        "url",
        "query",
        "description",
        "prompt",
    ):
        value = params.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return " ".join(value)
    for value in params.values():
        if isinstance(value, str) and value:
            return value
    return None


def writable_output_dir(output_dir: Path) -> str:
    """``output_dir`` as the absolute path an agent's sandbox is told about."""
    return str(output_dir.resolve())
