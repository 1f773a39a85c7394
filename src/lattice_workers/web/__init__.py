"""``lattice web``: a live view of the board and its runs (see :mod:`._app`).

Served by hypercorn's Trio worker (the ``web`` extra); a client of the supervisor,
which it starts on demand like the command line.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from lattice_workers.web._app import WebView

__all__ = ["WebView", "serve"]


def serve(
    root: Path,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    token: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the board at ``root`` until SIGINT or SIGTERM; ``announce`` gets the URL."""
    trio.run(_serve, root, port, host, token, announce or _print)


def _print(url: str) -> None:
    print(url, flush=True)


async def _serve(
    root: Path, port: int, host: str, token: str | None, announce: Callable[[str], None]
) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    from lattice_workers.supervisor import control

    await trio.to_thread.run_sync(control.ensure_running, root, root / ".lattice")
    view = WebView(root, control.endpoint_for(root), token)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    stop = trio.Event()

    async def on_signals(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for _ in signals:
                stop.set()
                return

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(on_signals)
            bound: list[str] = await nursery.start(
                lambda task_status: hypercorn_serve(
                    view.app(),  # type: ignore[arg-type]
                    config,
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                )
            )
            announce(f"{bound[0].rstrip('/')}/?token={view.token}")
            await stop.wait()
            nursery.cancel_scope.deadline = trio.current_time() + 3
    finally:
        with trio.move_on_after(2) as cleanup:
            cleanup.shield = True
            await view.client.aclose()
    print("lattice web: stopped", file=sys.stderr)
