"""The environment a worker runs with (SPEC section 2).

Why not strip every ``CLAUDE_*`` and ``CODEX_*`` variable, as the first implementation
did: those prefixes also hold the credentials and configuration the engines need
(``CLAUDE_CONFIG_DIR``, ``CLAUDE_CODE_USE_BEDROCK``, ``CODEX_HOME``). Only the
variables that tell a program it is running *inside* an agent session are removed,
because an agent that sees them behaves as a nested session (or refuses to start).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from lattice_workers.actors._definitions import WorkerDefinition

#: Variables that mark a running agent session; a worker must not inherit them.
SESSION_MARKERS = (
    "CLAUDECODE",
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_CODE_SSE_PORT",
    "CODEX_SANDBOX",
    "CODEX_SANDBOX_NETWORK_DISABLED",
)


_MARKERS = frozenset(SESSION_MARKERS)


@functools.lru_cache(maxsize=256)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], object]:
    """Whether a name matches any of ``patterns`` (shell patterns, case-sensitive), as
    one compiled expression: this runs for every variable of every run's environment."""
    if not patterns:
        return _never
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match


def _never(name: str) -> bool:
    return False


def worker_environment(
    base: Mapping[str, str], defn: WorkerDefinition, lattice_vars: Mapping[str, str]
) -> dict[str, str]:
    """``base`` without session markers, inherited ``LATTICE_*`` and ``env_strip``, then
    the definition's ``env``, then ``lattice_vars``.

    ``env_strip`` and ``env_keep`` hold names or shell patterns (``AWS_*``); a name
    matched by ``env_keep`` is never stripped, whatever else matches it. Inherited
    ``LATTICE_*`` variables go because they describe the supervisor's caller (another
    task, another root), not this run.
    """
    inherited = _inherited(defn)
    env = {k: v for k, v in base.items() if inherited(k)}
    env.update(defn.env)
    env.update(lattice_vars)
    return env


def worker_variable(base: Mapping[str, str], defn: WorkerDefinition, name: str) -> str | None:
    """``worker_environment(base, defn, {}).get(name)`` without building the rest: every
    Run request checks the worker's ``PATH`` for its program."""
    if name in defn.env:
        return defn.env[name]
    value = base.get(name)
    return value if value is not None and _inherited(defn)(name) else None


def _inherited(defn: WorkerDefinition) -> Callable[[str], bool]:
    """Whether a variable of the supervisor's environment passes to ``defn``'s workers."""
    keep, strip = _matcher(tuple(defn.env_keep)), _matcher(tuple(defn.env_strip))

    def inherited(name: str) -> bool:
        return bool(
            keep(name) or not (name in _MARKERS or name.startswith("LATTICE_") or strip(name))
        )

    return inherited


def lattice_variables(
    *,
    root: Path | str,
    task_id: str,
    run_id: str,
    started_event_id: str,
    worker: str,
    actor: str,
    commit_sha: str,
    log: Path | str,
    result_file: Path | str,
    short_id: str | None = None,
    base_ref: str | None = None,
    merge_base: str | None = None,
    worktree: Path | str | None = None,
    prompt_file: Path | str | None = None,
    artifact_role: str | None = None,
    report_dir: Path | str | None = None,
    report_prefix: str | None = None,
) -> dict[str, str]:
    """Every ``LATTICE_*`` variable of a run, by name; ``None`` values are left out.

    ``LATTICE_ROOT`` is the project root (the folder that holds ``.lattice/``), which is
    what Lattice's own root discovery expects; the first implementation pointed it at
    ``.lattice/`` and every ``lattice`` call inside a worker failed. Relative
    ``prompt_file`` and ``report_dir`` are made absolute against ``root``: the worker's
    cwd is usually a worktree, which is deleted when the run ends.
    """
    root = os.path.abspath(root)

    def absolute(path: Path | str | None) -> str | None:
        return None if path is None else os.path.join(root, path)

    values = {
        "LATTICE_ROOT": root,
        "LATTICE_TASK_ID": task_id,
        "LATTICE_SHORT_ID": short_id,
        "LATTICE_RUN_ID": run_id,
        "LATTICE_STARTED_EVENT_ID": started_event_id,
        "LATTICE_WORKER": worker,
        "LATTICE_ACTOR": actor,
        "LATTICE_COMMIT_SHA": commit_sha,
        "LATTICE_BASE_REF": base_ref,
        "LATTICE_MERGE_BASE": merge_base,
        "LATTICE_WORKTREE": None if worktree is None else str(worktree),
        "LATTICE_LOG": str(log),
        "LATTICE_RESULT_FILE": str(result_file),
        "LATTICE_PROMPT_FILE": absolute(prompt_file),
        "LATTICE_ARTIFACT_ROLE": artifact_role,
        "LATTICE_REPORT_DIR": absolute(report_dir),
        "LATTICE_REPORT_PREFIX": report_prefix,
    }
    return {k: v for k, v in values.items() if v is not None}


#: Variables that point git at a repository: a run's git must use its worktree's.
GIT_REPOSITORY_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")


def client_base(client: Mapping[str, str], path_extras: tuple[str, ...]) -> dict[str, str]:
    """The base environment of a run whose request carried the client's variables.

    What the supervisor does to its own environment before a run gets it, done to the
    client's: no ``LATTICE_*`` (the client sends none; a peer's are not trusted), no
    variable that points git at a repository, and ``path_extras`` (the folders that
    hold a ``lattice`` command) at the end of ``PATH``. :func:`worker_environment`
    then applies the definition's rules, as to the supervisor's environment.
    """
    env = {
        k: v
        for k, v in client.items()
        if not k.startswith("LATTICE_") and k not in GIT_REPOSITORY_VARIABLES
    }
    parts = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p]
    parts += [folder for folder in path_extras if folder not in parts]
    env["PATH"] = os.pathsep.join(parts)
    return env
