"""A pool of benchmark client processes (``_client.serve_jobs``), released together.

The processes come from a multiprocessing forkserver that has imported the client
once, so starting fifty of them costs forks, not fifty interpreter start-ups (which
on two cores took seconds and perturbed whatever ran next).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from types import TracebackType
from typing import Any, Self

import _client

_context: Any = None


def _mp() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        # "__main__": the forkserver imports the driver's main module once, so that the
        # forked clients do not each import it again (multiprocessing would).
        _context.set_forkserver_preload(["__main__", "_client", "lattice_workers.protocol.client"])
    return _context


class ClientPool:
    """``count`` client processes connected to ``endpoint``, each ready to take jobs."""

    def __init__(self, endpoint: str, count: int) -> None:
        ctx = _mp()
        self.procs: list[Any] = []
        self.conns: list[multiprocessing.connection.Connection] = []
        try:
            for _ in range(count):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=_client.serve_jobs, args=(theirs, endpoint), daemon=True)
                proc.start()
                theirs.close()
                self.procs.append(proc)
                self.conns.append(mine)
            for conn, proc in zip(self.conns, self.procs, strict=True):
                if not conn.poll(120) or conn.recv() != "ready":
                    raise RuntimeError(f"bench client {proc.pid} did not start")
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.procs)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Give job ``i`` to client ``i`` (all sent before any answer is read)."""
        assert len(jobs) <= len(self.procs)
        for conn, job in zip(self.conns, jobs, strict=False):
            conn.send(job)
        results = []
        for conn, proc in zip(self.conns[: len(jobs)], self.procs, strict=False):
            try:
                results.append(conn.recv())
            except EOFError:
                raise RuntimeError(f"bench client {proc.pid} died (exit {proc.exitcode})") from None
        return results

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.procs = []
        self.conns = []
