"""The :class:`Engine` base: what the lifecycle asks an adapter, and the shared parts.

Each subclass (one per CLI, in its own module) says how that CLI runs one prompt
unattended. The prompt always goes to standard input, never into argv: argv is visible
to every user through ``ps`` and one argument is capped at 128 KiB on Linux.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import msgspec

from lattice_workers.engines._common import EngineCommand, Limits, StreamReader

if TYPE_CHECKING:
    from lattice_workers.actors._definitions import WorkerDefinition

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class Engine:
    """One agent CLI. Stateless: one instance serves every run."""

    #: The program name, which is also the definition's ``engine``.
    name: ClassVar[str] = ""
    #: The oldest version the flags below were checked against (docs/workers.md).
    minimum_version: ClassVar[tuple[int, int, int]] = (0, 0, 0)
    #: Flags the adapter sets itself: a definition's ``args`` may not repeat them, or
    #: the CLI's last-one-wins parsing would silently undo the streaming output.
    owned_flags: ClassVar[frozenset[str]] = frozenset()
    reader_class: ClassVar[type[StreamReader]] = StreamReader

    def command(
        self,
        definition: WorkerDefinition,
        *,
        output_dir: Path,
        resume_session: str | None = None,
        message: str | None = None,
        prompt: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> EngineCommand:
        """The command for one attempt.

        ``prompt`` is the text of the definition's prompt file (the lifecycle has read
        it); on a resumed session ``message`` is sent instead (the agent already has the
        prompt), defaulting to a short "go on". ``output_dir`` is where the agent must be
        able to write whatever its sandbox. ``env`` is the worker's environment (default:
        this process's): where the CLI keeps its sessions depends on it (``HOME``,
        ``GEMINI_CLI_HOME``), not on the supervisor's. Raises ValueError, with what to
        do, for a session it cannot resume.
        """
        if resume_session is not None:
            text = message if message is not None else CONTINUE_MESSAGE
        elif prompt is not None:
            text = prompt if message is None else prompt + "\n\n" + message
        else:
            raise ValueError(f"{self.name}: a new session needs the prompt text")
        argv = self.argv(
            definition,
            output_dir=output_dir.resolve(),
            resume_session=resume_session,
            env=os.environ if env is None else env,
        )
        return EngineCommand(argv=argv, stdin=text.encode("utf-8"), env=self.env(output_dir))

    def reader(
        self,
        definition: WorkerDefinition | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> StreamReader:
        """A fresh reader for one attempt's output, enforcing ``definition``'s limits."""
        reader = self.reader_class(limits=Limits.of(definition), clock=clock)
        if definition is not None:
            reader.model = model_in_args(definition.args)
        return reader

    def version_problem(self, version_output: str) -> str | None:
        """Why ``<cli> --version`` printing ``version_output`` is too old, or None."""
        found = _VERSION.search(version_output)
        wanted = ".".join(map(str, self.minimum_version))
        if found is None:
            return (
                f"cannot read {self.name}'s version from {version_output.strip()[:80]!r}; "
                f"this worker needs {self.name} {wanted} or newer"
            )
        have = tuple(int(x) for x in found.groups())
        if have < self.minimum_version:
            return (
                f"{self.name} {found.group(0)} is older than {wanted}, the oldest version "
                f"whose flags this worker was checked against; upgrade it (npm install -g "
                f"{NPM_PACKAGES[self.name]}@latest)"
            )
        return None

    def args_problems(self, args: list[str]) -> list[str]:
        """Arguments in a definition's ``args`` that the adapter sets itself."""
        out = []
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag in self.owned_flags:
                out.append(
                    f'"args" passes {flag}, which the {self.name} adapter sets itself '
                    "(streamed output, prompt on stdin); remove it"
                )
        return out

    # -- for the subclasses --------------------------------------------------------

    def argv(
        self,
        definition: WorkerDefinition,
        *,
        output_dir: Path,
        resume_session: str | None,
        env: Mapping[str, str],
    ) -> list[str]:
        raise NotImplementedError

    def env(self, output_dir: Path) -> dict[str, str]:
        return {}


#: What a resumed session is told when ``--continue`` came without ``--message``.
CONTINUE_MESSAGE = "Continue where you left off and finish the task."

NPM_PACKAGES = {
    "claude": "@anthropic-ai/claude-code",
    "codex": "@openai/codex",
    "gemini": "@google/gemini-cli",
}


def model_in_args(args: list[str]) -> str | None:
    """The model a definition's ``args`` ask for (``--model X``, ``-m X``, ``--model=X``)."""
    for i, arg in enumerate(args):
        if arg in ("--model", "-m") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None


def with_run_limits(
    definition: WorkerDefinition, *, max_cost_usd: float | None, max_turns: int | None
) -> WorkerDefinition:
    """``definition`` with a run's ``--max-cost`` / ``--max-turns`` in place of its own."""
    changes: dict[str, object] = {}
    if max_cost_usd is not None:
        changes["max_cost_usd"] = max_cost_usd
    if max_turns is not None:
        changes["max_turns"] = max_turns
    return msgspec.structs.replace(definition, **changes) if changes else definition
