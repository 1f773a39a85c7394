"""Benchmark of the wire: our Trio ROUTER server beside a bare pyzmq REQ/REP echo.

Every server runs in a process of its own, every client too, all over ``ipc://`` in a
temporary folder, measured in the same run so that the machine's noise hits all rows
alike. Rows:

- ``bare REQ/REP echo``: pyzmq's blocking REP socket echoing the bytes of an encoded
  Hello; the floor of any ZeroMQ request on this machine.
- ``lattice server, raw DEALER``: our server and handler, a client that only sends
  and receives bytes (the server's own cost).
- ``lattice server, Client``: the same through :class:`lattice.protocol.client.Client`
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
    from lattice.protocol import PROTOCOL_VERSION, HelloReply

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

    from lattice.supervisor._server import serve

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, endpoint, _hello_handler())
            print("ready", flush=True)

    trio.run(main)


def serve_zmq_anyio(endpoint: str) -> None:
    import trio
    import zmq
    import zmq_anyio

    from lattice.protocol import decode_request, encode

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


def client_main(kind: str, endpoint: str, count: int) -> None:
    """Wait for 'go' on stdin, do ``count`` round trips, print the latencies (us) as JSON."""
    import zmq

    from lattice.protocol import Hello, encode

    payload = encode(Hello(rid=1))
    if kind == "client":
        from lattice.protocol.client import Client

        client = Client(endpoint)

        def once() -> None:
            client.request(Hello())

    else:
        sock = zmq.Context.instance().socket(zmq.REQ if kind == "req" else zmq.DEALER)
        sock.connect(endpoint)

        def once() -> None:
            sock.send(payload)
            sock.recv()

    for _ in range(min(200, count)):  # warm up: connect, first allocations
        once()
    print("ready", flush=True)
    sys.stdin.readline()
    out = []
    for _ in range(count):
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


def measure(kind: str, endpoint: str, clients: int, count: int) -> dict[str, float]:
    procs = [_spawn("--client", kind, endpoint, str(count)) for _ in range(clients)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        lat: list[float] = []
        for p in procs:
            assert p.stdout is not None
            lat.extend(json.loads(p.stdout.readline()))
        wall = time.perf_counter() - start
    finally:
        for p in procs:
            p.kill()
            p.wait()
    lat.sort()
    return {
        "p50_us": statistics.median(lat),
        "p99_us": lat[int(len(lat) * 0.99) - 1],
        "req_per_s": len(lat) / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--zmq-anyio", action="store_true", help="add the zmq-anyio server rows")
    args = ap.parse_args()
    n1, n32 = (2_000, 200) if args.quick else (20_000, 1_000)

    servers = [
        ("bare REQ/REP echo", "bare", "req"),
        ("lattice server, raw DEALER", "lattice", "dealer"),
    ]
    servers.append(("lattice server, Client", "lattice", "client"))
    if args.zmq_anyio:
        servers.append(("zmq-anyio server, raw DEALER", "zmq-anyio", "dealer"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-proto-") as tmp:
        for i, (label, server, client) in enumerate(servers):
            endpoint = f"ipc://{tmp}/s{i}.sock"
            srv = _spawn("--serve", server, endpoint)
            try:
                assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
                one = measure(client, endpoint, 1, n1)
                many = measure(client, endpoint, 32, n32)
            finally:
                srv.kill()
                srv.wait()
            rows.append(
                {
                    "row": label,
                    "p50_us": one["p50_us"],
                    "p99_us": one["p99_us"],
                    "req_per_s_1": one["req_per_s"],
                    "req_per_s_32": many["req_per_s"],
                    "p50_us_32": many["p50_us"],
                }
            )
    floor = rows[0]["p50_us"]
    print(
        f"transport ipc:// in {tempfile.gettempdir()}; {os.cpu_count()} CPUs; "
        f"{n1} requests x 1 client, {n32} x 32 clients (each its own process)"
    )
    cols = ["p50 us", "p99 us", "x floor", "req/s 1", "req/s 32", "p50 us 32"]
    print(f"{'':32} " + " ".join(f"{c:>9}" for c in cols))
    for r in rows:
        print(
            f"{r['row']:32} {r['p50_us']:9.0f} {r['p99_us']:9.0f} {r['p50_us'] / floor:9.2f} "
            f"{r['req_per_s_1']:9.0f} {r['req_per_s_32']:9.0f} {r['p50_us_32']:9.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "quick": args.quick}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        {"bare": serve_bare, "lattice": serve_lattice, "zmq-anyio": serve_zmq_anyio}[sys.argv[2]](
            sys.argv[3]
        )
    elif len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
