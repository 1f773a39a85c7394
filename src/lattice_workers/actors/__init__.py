"""One run, from request to cleanup: definitions, environment, worktrees, the actor.

This ``__init__`` stays free of Trio so that the CLI can import the definition
modules cheaply; the Trio-side modules (``_run``, ``_registry``, ``_worktree``) are
imported by the supervisor directly.
"""

from lattice_workers.actors._definitions import (
    LoadedWorker,
    WorkerDefinition,
    WorkerSet,
    command_for,
    load_workers,
    preflight,
    workers_fingerprint,
)
from lattice_workers.actors._environment import (
    SESSION_MARKERS,
    lattice_variables,
    worker_environment,
)
from lattice_workers.actors._state import Reason, RunState

__all__ = [
    "SESSION_MARKERS",
    "LoadedWorker",
    "Reason",
    "RunState",
    "WorkerDefinition",
    "WorkerSet",
    "command_for",
    "lattice_variables",
    "load_workers",
    "preflight",
    "worker_environment",
    "workers_fingerprint",
]
