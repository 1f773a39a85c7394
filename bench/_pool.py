"""A pool of benchmark client processes (``bench/_client.py``), released together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

CLIENT = Path(__file__).resolve().parent / "_client.py"


class ClientPool:
    """``count`` client processes connected to ``endpoint``, each ready to take jobs."""

    def __init__(self, endpoint: str, count: int, env: dict[str, str] | None = None) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for _ in range(count):
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(CLIENT), endpoint],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        env=env,
                    )
                )
            for proc in self.procs:
                assert proc.stdout is not None
                line = proc.stdout.readline().strip()
                if line != "ready":
                    raise RuntimeError(f"a bench client did not start (said {line!r})")
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
        """Give job ``i`` to client ``i`` (all written before any answer is read)."""
        assert len(jobs) <= len(self.procs)
        lines = [json.dumps(job) + "\n" for job in jobs]
        for proc, line in zip(self.procs, lines, strict=False):
            assert proc.stdin is not None
            proc.stdin.write(line)
            proc.stdin.flush()
        results = []
        for proc in self.procs[: len(jobs)]:
            assert proc.stdout is not None
            answer = proc.stdout.readline()
            if not answer:
                raise RuntimeError(f"bench client {proc.pid} died (exit {proc.wait()})")
            results.append(json.loads(answer))
        return results

    def close(self) -> None:
        for proc in self.procs:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
