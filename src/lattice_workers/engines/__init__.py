"""Engine adapters: the one place that knows each agent CLI (claude, codex, gemini).

The lifecycle asks :func:`engine_for` for a definition's engine (None for a script),
then ``engine.command(...)`` for the argv, stdin and environment of one attempt and
``engine.reader(...)`` for a :class:`StreamReader` that it feeds the attempt's output:
the reader gives back the readable transcript for the log, says when to stop the
attempt (:meth:`StreamReader.stop_reason`) and, at the end, the terminal event's
``agent`` object (:meth:`StreamReader.report`). docs/workers.md lists every flag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lattice_workers.engines._common import (
    DEFAULT_NETWORK_TIMEOUT_SECONDS,
    ERROR_KINDS,
    FINAL_MESSAGE_MAX_BYTES,
    EngineCommand,
    Limits,
    StreamReader,
    strip_ansi,
)
from lattice_workers.engines._engine import CONTINUE_MESSAGE, NPM_PACKAGES, Engine, with_run_limits
from lattice_workers.engines.claude import Claude
from lattice_workers.engines.codex import Codex
from lattice_workers.engines.gemini import Gemini

if TYPE_CHECKING:
    from lattice_workers.actors._definitions import WorkerDefinition

ENGINES: dict[str, Engine] = {e.name: e for e in (Claude(), Codex(), Gemini())}


def engine_for(definition: WorkerDefinition) -> Engine | None:
    """The adapter for ``definition``'s engine; None for ``script`` (a plain program)."""
    return ENGINES.get(definition.engine)


__all__ = [
    "CONTINUE_MESSAGE",
    "DEFAULT_NETWORK_TIMEOUT_SECONDS",
    "ENGINES",
    "ERROR_KINDS",
    "FINAL_MESSAGE_MAX_BYTES",
    "NPM_PACKAGES",
    "Claude",
    "Codex",
    "Engine",
    "EngineCommand",
    "Gemini",
    "Limits",
    "StreamReader",
    "engine_for",
    "strip_ansi",
    "with_run_limits",
]
