"""The board's configuration defaults and its workflow rules (which status moves are legal).

A board's ``config.json`` ``workflow`` overrides the defaults of
``lattice-format.md``. ``init`` writes the defaults out in full, so that
``lattice-tracker`` (which has no built-in workflow) enforces the same rules on a
board made here.

A status whose transition list is empty is final (``done``, ``cancelled``): nothing
leaves it, not even a universal target, unless forced with a reason.
"""

from __future__ import annotations

from typing import Any

from lattice_workers.errors import Code, LatticeError

STATUSES = (
    "backlog",
    "in_planning",
    "planned",
    "in_progress",
    "review",
    "done",
    "blocked",
    "needs_human",
    "cancelled",
)
TRANSITIONS: dict[str, list[str]] = {
    "backlog": ["in_planning", "planned"],
    "in_planning": ["planned"],
    "planned": ["in_progress", "review", "blocked"],
    "in_progress": ["review", "blocked"],
    "review": ["done", "in_progress"],
    "done": [],
    "blocked": ["in_planning", "planned", "in_progress"],
    "needs_human": ["in_planning", "planned", "in_progress", "review"],
    "cancelled": [],
}
UNIVERSAL_TARGETS = ["needs_human", "cancelled"]
PRIORITIES = ("critical", "high", "medium", "low")
TASK_TYPES = ["task", "bug", "spike", "chore"]


def default_config() -> dict[str, Any]:
    """The config ``init`` writes (``instance_id`` and options are added by the caller)."""
    return {
        "schema_version": 1,
        "default_status": "backlog",
        "default_priority": "medium",
        "task_types": list(TASK_TYPES),
        "workflow": {
            "statuses": list(STATUSES),
            "transitions": {k: list(v) for k, v in TRANSITIONS.items()},
            "universal_targets": list(UNIVERSAL_TARGETS),
        },
    }


class Workflow:
    """The workflow of one board, with the defaults filled in."""

    def __init__(
        self,
        statuses: tuple[str, ...],
        transitions: dict[str, list[str]],
        universal_targets: tuple[str, ...],
        completion_policies: dict[str, Any],
    ) -> None:
        self.statuses = statuses
        self.transitions = transitions
        self.universal_targets = universal_targets
        self.completion_policies = completion_policies

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Workflow:
        wf = config.get("workflow")
        wf = wf if isinstance(wf, dict) else {}
        statuses = wf.get("statuses")
        transitions = wf.get("transitions")
        universal = wf.get("universal_targets")
        policies = wf.get("completion_policies")
        return cls(
            statuses=tuple(statuses) if isinstance(statuses, list) else STATUSES,
            transitions=transitions if isinstance(transitions, dict) else TRANSITIONS,
            universal_targets=tuple(universal)
            if isinstance(universal, list)
            else tuple(UNIVERSAL_TARGETS),
            completion_policies=policies if isinstance(policies, dict) else {},
        )

    def require_status(self, status: str) -> str:
        """``status`` if the board knows it, else INVALID_ARGUMENT naming the statuses."""
        if status not in self.statuses:
            raise LatticeError(
                Code.INVALID_ARGUMENT,
                f"unknown status {status!r}: this board's statuses are {', '.join(self.statuses)}",
            )
        return status

    def is_final(self, status: str) -> bool:
        return status in self.transitions and not self.transitions.get(status)

    def targets(self, current: str) -> list[str]:
        """The statuses a task in ``current`` may move to without ``--force``."""
        if self.is_final(current):
            return []
        out = [s for s in self.transitions.get(current, []) if s != current]
        out += [s for s in self.universal_targets if s not in out and s != current]
        return out

    def check_move(
        self, snapshot: dict[str, Any], new: str, *, force: bool, reason: str | None
    ) -> None:
        """Refuse an illegal move with INVALID_TRANSITION; ``force`` needs a reason."""
        self.require_status(new)
        current = str(snapshot.get("status"))
        if force:
            if not reason or not reason.strip():
                raise LatticeError(
                    Code.INVALID_ARGUMENT,
                    "--force needs --reason: say why the workflow is being overridden",
                )
            return
        allowed = self.targets(current)
        if new not in allowed:
            options = ", ".join(allowed) if allowed else "nothing (it is final)"
            raise LatticeError(
                Code.INVALID_TRANSITION,
                f"task {snapshot.get('short_id') or snapshot.get('id')} cannot move from "
                f"{current} to {new}: from {current} it may move to {options} "
                "(or use --force --reason)",
                details={"from": current, "to": new, "allowed": allowed},
            )
        missing = self.missing_requirements(snapshot, new)
        if missing:
            raise LatticeError(
                Code.INVALID_TRANSITION,
                f"task {snapshot.get('short_id') or snapshot.get('id')} cannot move to "
                f"{new} yet: {'; '.join(missing)} (or use --force --reason)",
                details={"from": current, "to": new, "missing": missing},
            )

    def missing_requirements(self, snapshot: dict[str, Any], new: str) -> list[str]:
        """What the completion policy of ``new`` still needs (universal targets need none)."""
        if new in self.universal_targets:
            return []
        policy = self.completion_policies.get(new)
        if not isinstance(policy, dict):
            return []
        missing: list[str] = []
        roles = evidence_roles(snapshot)
        for role in policy.get("require_roles") or []:
            if role not in roles:
                missing.append(f"it needs an artifact or comment with role {role!r}")
        if policy.get("require_assigned") and not snapshot.get("assigned_to"):
            missing.append("it must be assigned")
        return missing


def evidence_roles(snapshot: dict[str, Any]) -> set[str]:
    """Roles present on a task: evidence refs of either tool, or legacy artifact refs."""
    roles: set[str] = set()
    for key in ("evidence_refs", "artifact_refs"):
        for ref in snapshot.get(key) or []:
            if isinstance(ref, dict) and ref.get("role"):
                roles.add(str(ref["role"]))
    return roles


def configured_roles(config: dict[str, Any]) -> set[str]:
    """Roles a board declares (``workflow.roles`` and policy requirements); empty = any."""
    wf = config.get("workflow")
    if not isinstance(wf, dict):
        return set()
    roles = {str(r) for r in wf.get("roles") or []}
    for policy in (wf.get("completion_policies") or {}).values():
        if isinstance(policy, dict):
            roles.update(str(r) for r in policy.get("require_roles") or [])
    return roles
