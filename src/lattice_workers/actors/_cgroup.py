"""A cgroup per run, where the system lets the supervisor make one (cgroup v2).

The end of a run kills its process group, then what left the group is found by the
run's marks in its environment (``_settle._kill_where``). A process that left the
group *and* scrubbed its environment escapes that scan; a cgroup does not let it
escape: a process cannot leave its cgroup without write access to another one's
``cgroup.procs``, and ``cgroup.kill`` kills every member at once, forks included.

So when the cgroup v2 hierarchy is mounted and the supervisor may create cgroups
below its own (root, or a delegated subtree such as a systemd user service's), it
makes ``lattice-<pid>/`` there, and each attempt's worker enters a cgroup of its own
before its program starts: a shell line writes its pid into the cgroup, then execs the
worker (one exec of ``/bin/sh`` more per attempt; a move right after the spawn was
measured too late: a shell worker whose first command is put in the background had
forked it already). The environment scan stays, for systems without cgroups. An
attempt whose cgroup still has members once its leader ended waits for the sweep,
which kills the cgroup. Killing
is ``cgroup.kill`` (Linux 5.14+); an empty cgroup goes back to a small pool for the
next attempt, since making and removing one costs ~0.16 ms (measured), more than a
write of a pid. Nothing here imports Trio: the spawn and the sweep call it from
threads.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("lattice_workers.supervisor.cgroup")

#: Empty cgroups kept for reuse at most.
POOL_SIZE = 64
#: The shell line that enters the cgroup whose ``cgroup.procs`` is ``$0``, then
#: becomes the worker (``exec`` keeps its pid, its group and its cgroup).
_ENTER = 'echo $$ >"$0" 2>/dev/null; exec "$@"'
_SHELL = "/bin/sh"


def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                before, _, after = line.partition(" - ")
                if after.split(" ", 1)[0] == "cgroup2":
                    return Path(before.split()[4])
    except OSError:
        return None
    return None


def _own_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


class RunCgroups:
    """``lattice-<pid>/`` under the supervisor's cgroup, and one child per live attempt."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._lock = threading.Lock()
        self._pool: list[Path] = []
        self._live: dict[tuple[str, int], Path] = {}
        self._next = 0
        #: Without a shell the worker is moved in just after its start (:meth:`join`).
        self._shell = os.access(_SHELL, os.X_OK)

    @classmethod
    def create(cls) -> RunCgroups | None:
        """The supervisor's run cgroups, or None (with why, logged) where not possible."""
        mount, own = _cgroup2_mount(), _own_cgroup()
        if mount is None or own is None:
            log.info("runs are not put in cgroups: no cgroup v2 hierarchy is mounted")
            return None
        base = mount / own.lstrip("/") / f"lattice-{os.getpid()}"
        _remove_stale(base.parent)
        try:
            base.mkdir(exist_ok=True)  # one left by a dead process that had our pid: ours
            probe = base / "probe"
            probe.mkdir(exist_ok=True)
            usable = (probe / "cgroup.kill").exists()
            probe.rmdir()
        except OSError as exc:
            log.info("runs are not put in cgroups: cannot create %s (%s)", base, exc.strerror)
            return None
        if not usable:
            base.rmdir()
            log.info("runs are not put in cgroups: this kernel has no cgroup.kill (5.14+)")
            return None
        log.info("each run gets a cgroup under %s", base)
        return cls(base)

    def _claim(self, run_id: str, attempt: int) -> Path:
        """The attempt's cgroup: the one it has, else one from the pool, else a new one."""
        with self._lock:
            group = self._live.get((run_id, attempt))
            if group is None:
                group = self._pool.pop() if self._pool else None
                if group is None:
                    self._next += 1
                    group = self.base / f"run-{self._next}"
                self._live[(run_id, attempt)] = group
        return group

    def entering(self, run_id: str, attempt: int, argv: list[str]) -> list[str]:
        """``argv`` behind a shell line that first moves itself into the attempt's
        cgroup, then execs the worker: nothing the worker forks can start outside it
        (a move after the spawn leaves a moment: a shell whose first command is put in
        the background forks before it). Where the cgroup cannot be made, ``argv``."""
        if not self._shell:
            return argv
        group = self._claim(run_id, attempt)
        try:
            if not group.exists():
                group.mkdir()
        except OSError as exc:
            log.warning("could not create the cgroup %s: %s", group, exc)
            return argv
        return [_SHELL, "-c", _ENTER, str(group / "cgroup.procs"), *argv]

    def join(self, run_id: str, attempt: int, pid: int) -> bool:
        """Move ``pid`` into the attempt's cgroup (blocking). False if not."""
        group = self._claim(run_id, attempt)
        try:
            if not group.exists():
                group.mkdir()
            with open(group / "cgroup.procs", "w", encoding="ascii") as f:
                f.write(str(pid))
        except OSError as exc:
            log.warning("could not put the worker %d in the cgroup %s: %s", pid, group, exc)
            return False
        return True

    def populated(self, run_id: str, attempt: int) -> bool:
        """Whether a process is still in the attempt's cgroup (one read)."""
        with self._lock:
            group = self._live.get((run_id, attempt))
        return group is not None and _populated(group)

    def kill(self, attempts: set[tuple[str, int]]) -> None:
        """``cgroup.kill`` each attempt's cgroup (blocking); kept until :meth:`release`."""
        for key in attempts:
            group = self._live.get(key)
            if group is None or not _populated(group):
                continue  # a run that left nothing behind: one read, no kill
            try:
                with open(group / "cgroup.kill", "w", encoding="ascii") as f:
                    f.write("1")
            except OSError as exc:
                log.warning("could not kill the cgroup %s: %s", group, exc)

    def release(self, attempts: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """Give back the empty cgroups of these attempts; those still populated (their
        killed members not yet gone) are returned, to be released later."""
        busy = set()
        for key in attempts:
            with self._lock:
                group = self._live.get(key)
            if group is None:
                continue
            if _populated(group):
                busy.add(key)
                continue
            with self._lock:
                del self._live[key]
                if len(self._pool) < POOL_SIZE:
                    self._pool.append(group)
                    continue
            _remove(group)
        return busy

    def close(self) -> None:
        """Kill what is left in every cgroup and remove them all (at the supervisor's end)."""
        with self._lock:
            groups = [*self._live.values(), *self._pool]
            self._live.clear()
            self._pool.clear()
        for group in groups:
            try:
                with open(group / "cgroup.kill", "w", encoding="ascii") as f:
                    f.write("1")
            except OSError:
                pass
        for group in groups:
            _remove(group)
        _remove(self.base)


def _populated(group: Path) -> bool:
    try:
        with open(group / "cgroup.events", encoding="ascii") as f:
            return "populated 1" in f.read()
    except OSError:
        return False


def _remove(group: Path) -> None:
    try:
        group.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:  # still populated: a killed process not gone yet
        log.warning("could not remove the cgroup %s: %s", group, exc.strerror)


def _remove_stale(parent: Path) -> None:
    """Remove the empty cgroups of supervisors that died (``kill -9``) under ``parent``."""
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith("lattice-")]
    except OSError:
        return
    for folder in entries:
        pid = folder.name.removeprefix("lattice-")
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        for child in folder.iterdir() if folder.is_dir() else []:
            if child.is_dir() and not _populated(child):
                try:
                    child.rmdir()
                except OSError:
                    pass
        try:
            folder.rmdir()
        except OSError:
            pass
