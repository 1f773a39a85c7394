"""Benchmark of the wire: our Trio ROUTER server beside a bare pyzmq REQ/REP echo.

Every server runs in a process of its own, every client too, all over ``ipc://`` in a
temporary folder, measured in the same run so that the machine's noise hits all rows
alike. Rows:

- ``bare REQ/REP echo``: pyzmq's blocking REP socket echoing the bytes of an encoded
  Hello; the floor of any ZeroMQ request on this machine.
- ``lattice server, raw DEALER``: our server and handler, a client that only sends
  and receives bytes (the server's own cost).
- ``lattice server, Client``: the same through :class:`lattice_workers.protocol.client.Client`
  (what the CLI pays: encoding, request ids, deadline, monitor).
- ``zmq-anyio server`` (only with ``--zmq-anyio``, if installed): the same handler
  served through zmq-anyio on Trio, the library we evaluated instead of our wrapper.

Usage: ``python bench/bench_protocol.py [--quick] [--json PATH] [--zmq-anyio]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


# ----------------------------------------------------------------- servers (child processes)


def _hello_handler():  # type: ignore[no-untyped-def]
    from lattice_workers.protocol import PROTOCOL_VERSION, HelloReply

    async def handler(req, send):  # type: ignore[no-untyped-def]
        await send(
            HelloReply(
                rid=req.rid,
                protocol_version=PROTOCOL_VERSION,
                server_version="bench",
                pid=os.getpid(),
                root="/bench",
                socket="",
                started_at=0.0,
            )
        )

    return handler


def serve_bare(endpoint: str) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.REP)
    sock.bind(endpoint)
    print("ready", flush=True)
    while True:
        sock.send(sock.recv())


def serve_lattice(endpoint: str) -> None:
    import trio

    from lattice_workers.supervisor._server import serve

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, endpoint, _hello_handler())
            print("ready", flush=True)

    trio.run(main)


def serve_zmq_anyio(endpoint: str) -> None:
    import trio
    import zmq
    import zmq_anyio

    from lattice_workers.protocol import decode_request, encode

    handler = _hello_handler()

    async def main() -> None:
        ctx = zmq.Context()
        async with zmq_anyio.Socket(ctx.socket(zmq.ROUTER)) as sock, trio.open_nursery() as n:
            sock.bind(endpoint)
            print("ready", flush=True)

            async def one(frames: list[bytes]) -> None:
                async def send(reply) -> None:  # type: ignore[no-untyped-def]
                    await sock.asend_multipart([frames[0], encode(reply)])

                await handler(decode_request(frames[-1]), send)

            while True:
                frames = await sock.arecv_multipart()
                n.start_soon(one, frames)

    trio.run(main)


# ----------------------------------------------------------------- clients (child processes)


def client_main(kind: str, endpoint: str) -> None:
    """A client process: for each line ``N`` on stdin, do N round trips and print their
    latencies (us) as one JSON line. It stays connected between batches."""
    import zmq

    from lattice_workers.protocol import Hello, encode

    payload = encode(Hello(rid=1))
    if kind == "client":
        from lattice_workers.protocol.client import Client

        client = Client(endpoint)

        def once() -> None:
            client.request(Hello())

    else:
        sock = zmq.Context.instance().socket(zmq.REQ if kind == "req" else zmq.DEALER)
        sock.connect(endpoint)

        def once() -> None:
            sock.send(payload)
            sock.recv()

    for _ in range(200):  # warm up: connect, first allocations
        once()
    print("ready", flush=True)
    for line in sys.stdin:
        out = []
        for _ in range(int(line)):
            t0 = time.perf_counter_ns()
            once()
            out.append((time.perf_counter_ns() - t0) / 1000)
        print(json.dumps(out), flush=True)


# ----------------------------------------------------------------- the driver


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


class Clients:
    """``n`` client processes of one kind against one endpoint, kept for the whole run."""

    def __init__(self, kind: str, endpoint: str, n: int) -> None:
        self.procs = [_spawn("--client", kind, endpoint) for _ in range(n)]
        for p in self.procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def batch(self, count: int) -> tuple[list[float], float]:
        """Every client does ``count`` round trips at once: (latencies, wall seconds)."""
        start = time.perf_counter()
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(f"{count}\n")
            p.stdin.flush()
        lat: list[float] = []
        for p in self.procs:
            assert p.stdout is not None
            lat.extend(json.loads(p.stdout.readline()))
        return lat, time.perf_counter() - start

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def _summary(lat: list[float], wall: float) -> dict[str, float]:
    lat = sorted(lat)
    return {
        "p50_us": statistics.median(lat),
        "p99_us": lat[max(0, int(len(lat) * 0.99) - 1)],
        "req_per_s": len(lat) / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--zmq-anyio", action="store_true", help="add the zmq-anyio server rows")
    args = ap.parse_args()
    # Rows take turns, batch by batch, so that the machine's noise (other processes,
    # frequency changes) falls on every row alike.
    rounds, n1, n32 = (4, 500, 50) if args.quick else (20, 1_000, 100)

    rows = [
        ("bare REQ/REP echo", "bare", "req"),
        ("lattice server, raw DEALER", "lattice", "dealer"),
        ("lattice server, Client", "lattice", "client"),
    ]
    if args.zmq_anyio:
        rows.append(("zmq-anyio server, raw DEALER", "zmq-anyio", "dealer"))
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-proto-") as tmp:
        servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
        try:
            for server in dict.fromkeys(server for _, server, _ in rows):
                endpoint = f"ipc://{tmp}/{server}.sock"
                srv = _spawn("--serve", server, endpoint)
                assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
                servers[server] = (srv, endpoint)
            for clients, count in ((1, n1), (32, n32)):
                pools = [Clients(kind, servers[server][1], clients) for _, server, kind in rows]
                try:
                    lat: list[list[float]] = [[] for _ in rows]
                    walls = [0.0 for _ in rows]
                    for _ in range(rounds):
                        for i, pool in enumerate(pools):
                            got, wall = pool.batch(count)
                            lat[i].extend(got)
                            walls[i] += wall
                finally:
                    for pool in pools:
                        pool.close()
                for i, (label, _, _) in enumerate(rows):
                    summary = _summary(lat[i], walls[i])
                    if clients == 1:
                        results.append({"row": label, **summary})
                    else:
                        results[i]["req_per_s_32"] = summary["req_per_s"]
                        results[i]["p50_us_32"] = summary["p50_us"]
        finally:
            for srv, _ in servers.values():
                srv.kill()
                srv.wait()
    floor = float(results[0]["p50_us"])  # type: ignore[arg-type]
    print(
        f"ipc:// in {tempfile.gettempdir()}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; 1 client: {rounds} x {n1} requests; 32 clients (each a "
        f"process): {rounds} x {n32} requests each"
    )
    cols = ["p50 us", "p99 us", "x floor", "req/s 1", "req/s 32", "p50 us 32"]
    print(f"{'':30} " + " ".join(f"{c:>9}" for c in cols))
    for r in results:
        p50 = float(r["p50_us"])  # type: ignore[arg-type]
        print(
            f"{r['row']:30} {p50:9.0f} {r['p99_us']:9.0f} {p50 / floor:9.2f} "
            f"{r['req_per_s']:9.0f} {r['req_per_s_32']:9.0f} {r['p50_us_32']:9.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": results, "quick": args.quick}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        {"bare": serve_bare, "lattice": serve_lattice, "zmq-anyio": serve_zmq_anyio}[sys.argv[2]](
            sys.argv[3]
        )
    elif len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2], sys.argv[3])
    else:
        main()
