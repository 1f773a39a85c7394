"""``workers.executor`` in ``.lattice/config.json``, and a definition's ``executor``.

No Ray import here: the settings are read (and refused when wrong) whether or not the
``ray`` extra is installed; only a run that goes to the cluster needs it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lattice_workers.errors import Code, LatticeError

KINDS = ("local", "ray")
#: ``when_unreachable``: a run asked for while the cluster does not answer is refused
#: (``CLUSTER_UNAVAILABLE``, nothing written), or accepted and queued until it answers.
WHEN_UNREACHABLE = ("refuse", "queue")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where runs go by default: ``kind`` "local", or "ray" with the cluster's address
    and what each attempt reserves on a node (default one CPU)."""

    kind: str = "local"
    address: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    when_unreachable: str = "refuse"

    def reservation(self) -> dict[str, float]:
        """What an attempt reserves on a node (a placement group's one bundle, in Ray's
        resource names): one CPU unless said otherwise; amounts of 0 are left out."""
        wanted = {"CPU": 1.0, **self.resources}
        return {name: amount for name, amount in wanted.items() if amount > 0}


def _refuse(detail: str) -> LatticeError:
    return LatticeError(
        Code.INVALID_ARGUMENT,
        f"workers.executor in .lattice/config.json {detail}; it must be \"local\" or "
        '{"kind": "ray", "address": "HOST:PORT", "resources": {"CPU": 1}}; fix the file',
    )


def parse_executor(section: dict[str, Any]) -> ExecutorConfig:
    """``workers.executor`` (absent: local); a clear error when it is not one of the forms."""
    value = section.get("executor", "local")
    if value == "local":
        return ExecutorConfig()
    if not isinstance(value, dict):
        raise _refuse(f"is {value!r}")
    unknown = sorted(set(value) - {"kind", "address", "resources", "when_unreachable"})
    if unknown:
        raise _refuse(f"has unknown keys {', '.join(unknown)}")
    kind = value.get("kind")
    if kind not in KINDS:
        raise _refuse(f"has kind {kind!r}")
    if kind == "local":
        return ExecutorConfig()
    address = value.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise _refuse(f"has address {address!r} (a string such as 10.0.0.5:6379, or omit it "
                      "to use RAY_ADDRESS)")
    resources = value.get("resources", {})
    if not isinstance(resources, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
        for k, v in resources.items()
    ):
        raise _refuse(f"has resources {resources!r} (names to amounts of 0 or more)")
    when = value.get("when_unreachable", "refuse")
    if when not in WHEN_UNREACHABLE:
        raise _refuse(f'has when_unreachable {when!r} ("refuse", the default, or "queue")')
    return ExecutorConfig(
        kind="ray",
        address=address or os.environ.get("RAY_ADDRESS"),
        resources={k: float(v) for k, v in resources.items()},
        when_unreachable=when,
    )


def executor_for(config: ExecutorConfig, definition_executor: str | None, worker: str) -> str:
    """The executor a run of ``worker`` uses: its definition's ``executor`` if it has
    one, else the board's. A definition that asks for Ray on a board without a cluster
    is refused (before anything is written)."""
    kind = definition_executor or config.kind
    if kind == "ray" and config.kind != "ray":
        raise LatticeError(
            Code.INVALID_WORKER,
            f"worker {worker!r} says \"executor\": \"ray\" but .lattice/config.json names "
            'no cluster; set workers.executor to {"kind": "ray", "address": "HOST:PORT"}',
        )
    return kind


def board_namespace(root: Path) -> str:
    """The Ray namespace of a board: stable across supervisor restarts (the real path of
    its root), distinct between boards that share a cluster."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(root))).hexdigest()[:16]
    return f"lattice-workers-{digest}"
