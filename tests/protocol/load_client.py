"""Load-test clients in one process: ``python load_client.py ENDPOINT sync|async CLIENTS N``.

Each client does N ``Get`` round trips, each with its own run id, and checks that the
reply names that run id. Prints one JSON line: {"ok": count, "wrong": [...]}.
Sync clients run in threads (the CLI's client), async ones as Trio tasks.
"""

from __future__ import annotations

import json
import sys
import threading

from lattice_workers.protocol import Get, RunReply


def _check(reply: object, run_id: str, wrong: list[str]) -> None:
    if not (isinstance(reply, RunReply) and reply.run.run_id == run_id):
        wrong.append(f"{run_id}: {reply!r}")


def run_sync(endpoint: str, clients: int, count: int) -> tuple[int, list[str]]:
    from lattice_workers.protocol.client import Client

    wrong: list[str] = []
    done = [0] * clients

    def one(who: int) -> None:
        with Client(endpoint, timeout=60) as client:
            for i in range(count):
                run_id = f"s{who}-{i}"
                _check(client.request(Get(run_id=run_id)), run_id, wrong)
                done[who] += 1

    threads = [threading.Thread(target=one, args=(who,)) for who in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done), wrong


def run_async(endpoint: str, clients: int, count: int) -> tuple[int, list[str]]:
    import trio

    from lattice_workers.protocol.aclient import AsyncClient

    wrong: list[str] = []
    done = 0

    async def one(who: int) -> None:
        nonlocal done
        async with AsyncClient(endpoint, timeout=60) as client:
            for i in range(count):
                run_id = f"a{who}-{i}"
                _check(await client.request(Get(run_id=run_id)), run_id, wrong)
                done += 1

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for who in range(clients):
                nursery.start_soon(one, who)

    trio.run(main)
    return done, wrong


if __name__ == "__main__":
    endpoint, mode, clients, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ok, wrong = (run_sync if mode == "sync" else run_async)(endpoint, clients, count)
    print(json.dumps({"ok": ok, "wrong": wrong[:10]}), flush=True)
