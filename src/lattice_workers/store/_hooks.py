"""Board hooks, run as ``lattice-tracker`` runs them: after a write, outside the locks.

For each event, in order: ``hooks.post_event``, ``hooks.on.<type>``, then for a
``status_changed`` the ``hooks.transitions`` that match (exact ``"from -> to"``,
``"* -> to"``, ``"from -> *"``, ``"* -> *"``). A value may be one command or a list.
Each command runs with ``sh -c`` in the project root, the event's JSON on stdin
and ``LATTICE_*`` variables in its environment, under a deadline; a failing,
hanging or missing hook is logged and never fails the write that triggered it.

Two deliberate differences from the tracker: ``LATTICE_ROOT`` is the project root
(the tracker passes ``.lattice/``, the very bug that broke the first workers;
``LATTICE_DIR`` carries ``.lattice/``), and the hook's output goes to files, not
pipes, so a hook that starts a background process (``lattice worker run`` starting
the supervisor) cannot make the write wait for that process to exit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from lattice_workers._command import add_lattice_to_path
from lattice_workers.store._ids import actor_display
from lattice_workers.store._jsonio import as_dict
from lattice_workers.store._locate import LATTICE_DIR, run_dir

log = logging.getLogger("lattice_workers.hooks")

HOOK_TIMEOUT_S = 10.0


def _commands(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v.strip()]
    return []


def _transition_commands(transitions: dict[str, Any], old: str, new: str) -> list[str]:
    ranked: list[list[str]] = [[], [], [], []]
    for pattern, value in transitions.items():
        left, sep, right = str(pattern).partition("->")
        src, dst = left.strip(), right.strip()
        if not sep or not src or not dst or "->" in right:
            continue
        if src not in ("*", old) or dst not in ("*", new):
            continue
        ranked[(src == "*") + 2 * (dst == "*")].extend(_commands(value))
    # exact, "* -> to", "from -> *", "* -> *"
    return ranked[0] + ranked[1] + ranked[2] + ranked[3]


def hook_commands(config: dict[str, Any], event: dict[str, Any]) -> list[str]:
    """The commands the board's hooks run for ``event``, in order."""
    hooks = config.get("hooks")
    if not isinstance(hooks, dict):
        return []
    out = _commands(hooks.get("post_event"))
    on = hooks.get("on")
    if isinstance(on, dict):
        out += _commands(on.get(str(event.get("type"))))
    transitions = hooks.get("transitions")
    data = as_dict(event.get("data"))
    if event.get("type") == "status_changed" and isinstance(transitions, dict):
        old, new = data.get("from"), data.get("to")
        if isinstance(old, str) and isinstance(new, str) and old and new:
            out += _transition_commands(transitions, old, new)
    return out


def hook_env(root: Path, event: dict[str, Any]) -> dict[str, str]:
    """The environment of a hook: ours plus the event's ``LATTICE_*`` variables, with a
    ``lattice`` command on its ``PATH`` (see :mod:`lattice_workers._command`)."""
    env = dict(os.environ)
    add_lattice_to_path(env, run_dir(root / LATTICE_DIR))
    env.update(
        LATTICE_ROOT=str(root),
        LATTICE_DIR=str(root / ".lattice"),
        LATTICE_TASK_ID=str(event.get("task_id", "")),
        LATTICE_EVENT_TYPE=str(event.get("type", "")),
        LATTICE_EVENT_ID=str(event.get("id", "")),
        LATTICE_ACTOR=actor_display(event.get("actor")) if event.get("actor") else "",
    )
    data = as_dict(event.get("data"))
    if event.get("type") == "status_changed":
        env["LATTICE_FROM_STATUS"] = str(data.get("from") or "")
        env["LATTICE_TO_STATUS"] = str(data.get("to") or "")
    return env


def run_hook(command: str, root: Path, event: dict[str, Any], timeout: float) -> None:
    """Run one hook command to completion or its deadline. Never raises."""
    payload = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    try:
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
            stdin.write(payload)
            stdin.seek(0)
            proc = subprocess.Popen(
                command,
                shell=True,
                cwd=root,
                env=hook_env(root, event),
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                log.warning("hook timed out after %g s and was killed: %s", timeout, command)
                return
            if code != 0:
                stderr.seek(0)
                tail = stderr.read()[-400:].decode("utf-8", "replace").strip()
                log.warning("hook exited with %s: %s%s", code, command, f": {tail}" if tail else "")
    except Exception as err:  # a hook must never fail the write
        log.warning("hook could not run: %s: %s", command, err)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_hooks(
    config: dict[str, Any], root: Path, events: list[dict[str, Any]], timeout: float | None = None
) -> None:
    """Run every hook of every event in order (``hooks.timeout_seconds`` or 10 s each)."""
    if timeout is None:
        hooks = config.get("hooks")
        configured: Any = as_dict(hooks).get("timeout_seconds")
        ok = isinstance(configured, int | float) and not isinstance(configured, bool)
        timeout = float(configured) if ok and float(configured) > 0 else HOOK_TIMEOUT_S
    for event in events:
        for command in hook_commands(config, event):
            run_hook(command, root, event, timeout)
