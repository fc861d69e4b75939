"""Host throughput beside its peers, in one run: ``python bench/host.py [--hops N]``.

* durable, one message per batch between machines (a ring of machines passing tokens),
  in durability ``full`` and ``normal``: batches/s, with the commits that carried them;
* durable, ten messages per batch: messages/s;
* in memory (no store), one message per batch; and the same with isolated workers (two
  trust domains, each machine's steps in its domain's worker process);
* beside them: raw SQLite (WAL, ``synchronous=FULL``, one row per transaction), Pykka
  actors passing the same tokens with ``tell``, and plain asyncio queues;
* request/response (``--asks N``): the embedded API's ``await h.ask`` beside the same ask
  over the HTTP control API (``POST /machines/k/ask``; the client runs in another process,
  so client and server do not share a core), with ``avm.host.client`` and with a minimal
  keep-alive HTTP/1.1 client (what the server itself sustains), one connection (p50 is
  the round trip) and eight; and Pykka's ``ask``.

Ratios are printed against raw SQLite commits and against Pykka ``tell``. Numbers vary
with the machine's load; run it a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import avm  # noqa: E402
import avm.host  # noqa: E402

ring = avm.Behavior("bench.ring")


@ring.init
def _init(state, args):
    return [], None


@ring.on("next")
def _next(state, cap):
    return [], cap


@ring.on("hop")
def _hop(state, k, width=1):
    if k <= 0:
        return [], state
    return [(state, ("hop", k - 1, width))] * width, state


MACHINES = 8
TOKENS = 8


async def host_ring(mode: str, hops: int, width: int,
                    isolation: str = "inline") -> tuple[float, int, float]:
    """Batches/s (or messages/s with width > 1), commits, and the process's CPU
    microseconds per batch (every thread: the loop and the store's writer), for
    ``hops`` batches. The CPU figure moves less than the rate on a shared machine.

    With ``isolation="workers"`` the ring's machines belong to two trust domains (even
    and odd), so every hop crosses from one worker process to the other.
    """
    d = tempfile.mkdtemp(prefix="avm-bench-")
    path = None if mode == "memory" else os.path.join(d, "b.avm")
    async with avm.host.open(path, behaviors=[ring], durability=mode,
                             isolation=isolation) as h:
        caps = [await h.spawn(f"m{i}", ring, domain=f"d{i % 2}") for i in range(MACHINES)]
        await h.submit([(caps[i], ("next", caps[(i + 1) % MACHINES])) for i in range(MACHINES)])
        await h.idle()
        c0 = h.store.commits
        t = time.perf_counter()
        cpu = time.process_time()
        if width == 1:
            await h.submit([(caps[i % MACHINES], ("hop", hops // TOKENS, 1)) for i in range(TOKENS)])
        else:
            # one token whose every hop is a batch of `width` messages; each message but
            # the first ends its line (k=0), so the ring carries one batch at a time
            await h.submit([(caps[0], ("hop", hops, 1))])
        await h.idle(timeout=600)
        dt = time.perf_counter() - t
        return hops / dt, h.store.commits - c0, (time.process_time() - cpu) / hops * 1e6


@ring.on("wide")
def _wide(state, k, width):
    if k <= 0:
        return [], state
    return [(state, ("wide", k - 1, width))] + [(state, ("hop", 0, 1))] * (width - 1), state


async def host_wide(mode: str, batches: int, width: int) -> tuple[float, float]:
    """Messages/s, and the process's CPU microseconds per message."""
    d = tempfile.mkdtemp(prefix="avm-bench-")
    path = os.path.join(d, "b.avm")
    async with avm.host.open(path, behaviors=[ring], durability=mode) as h:
        caps = [await h.spawn(f"m{i}", ring) for i in range(MACHINES)]
        await h.submit([(caps[i], ("next", caps[(i + 1) % MACHINES])) for i in range(MACHINES)])
        await h.idle()
        t = time.perf_counter()
        cpu = time.process_time()
        await h.submit([(caps[i], ("wide", batches // TOKENS, width)) for i in range(TOKENS)])
        await h.idle(timeout=600)
        n = batches * width
        return n / (time.perf_counter() - t), (time.process_time() - cpu) / n * 1e6


def raw_sqlite(n: int) -> float:
    d = tempfile.mkdtemp(prefix="avm-bench-")
    db = sqlite3.connect(os.path.join(d, "raw.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    t = time.perf_counter()
    for i in range(n):
        with db:
            db.execute("INSERT INTO t VALUES (?, ?)", (i, b"x" * 64))
    return n / (time.perf_counter() - t)


def pykka_ring(hops: int) -> float:
    import pykka

    done = threading.Event()
    left = [TOKENS]
    lock = threading.Lock()

    class Node(pykka.ThreadingActor):
        def __init__(self) -> None:
            super().__init__()
            self.next = None

        def on_receive(self, msg):
            if msg[0] == "next":
                self.next = msg[1]
            elif msg[1] > 0:
                self.next.tell(("hop", msg[1] - 1))
            else:
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()

    nodes = [Node.start() for _ in range(MACHINES)]
    for i, n in enumerate(nodes):
        n.ask(("next", nodes[(i + 1) % MACHINES]))
    t = time.perf_counter()
    for i in range(TOKENS):
        nodes[i % MACHINES].tell(("hop", hops // TOKENS))
    done.wait()
    dt = time.perf_counter() - t
    pykka.ActorRegistry.stop_all()
    return hops / dt


async def asyncio_ring(hops: int) -> float:
    queues = [asyncio.Queue() for _ in range(MACHINES)]
    done = asyncio.Event()
    left = [TOKENS]

    async def node(i: int) -> None:
        q, nxt = queues[i], queues[(i + 1) % MACHINES]
        while True:
            k = await q.get()
            if k > 0:
                nxt.put_nowait(k - 1)
            else:
                left[0] -= 1
                if not left[0]:
                    done.set()

    tasks = [asyncio.create_task(node(i)) for i in range(MACHINES)]
    t = time.perf_counter()
    for i in range(TOKENS):
        queues[i].put_nowait(hops // TOKENS)
    await done.wait()
    dt = time.perf_counter() - t
    for x in tasks:
        x.cancel()
    return hops / dt


asker = avm.Behavior("bench.asker")


@asker.on("get")
def _get(n, reply):
    return [(reply, ("n", n))], n


async def embedded_ask(n: int, mode: str) -> tuple[float, float]:
    """Sequential ``await h.ask`` round trips: (per second, p50 seconds)."""
    d = tempfile.mkdtemp(prefix="avm-bench-")
    path = None if mode == "memory" else os.path.join(d, "a.avm")
    async with avm.host.open(path, behaviors=[asker], durability=mode) as h:
        cap = await h.spawn("k", asker, 0)
        for _ in range(100):
            await h.ask(cap, "get")
        lat = []
        t = time.perf_counter()
        for _ in range(n):
            t1 = time.perf_counter()
            await h.ask(cap, "get")
            lat.append(time.perf_counter() - t1)
        dt = time.perf_counter() - t
    lat.sort()
    return n / dt, lat[len(lat) // 2]


async def http_ask(n: int, mode: str) -> list[tuple[str, float, float]]:
    """The same ask over HTTP, the client in a subprocess (this file, ``--client``)."""
    import subprocess

    from avm.host import http as hh

    d = tempfile.mkdtemp(prefix="avm-bench-")
    path = None if mode == "memory" else os.path.join(d, "a.avm")
    out = []
    async with avm.host.open(path, behaviors=[asker], durability=mode) as h:
        await h.spawn("k", asker, 0)
        async with hh.serve(h) as api:
            for kind, conc in (("client", 1), ("raw", 1), ("raw", 8)):
                p = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--client", kind, api.url, api.tokens.admin,
                    str(n), str(conc), stdout=subprocess.PIPE)
                text, _ = await p.communicate()
                rate, p50 = map(float, text.split())
                label = "avm.host.client" if kind == "client" else "keep-alive HTTP/1.1"
                out.append((f"{label}, {conc} connection{'s' if conc > 1 else ''}", rate, p50))
    return out


async def _client(kind: str, url: str, token: str, n: int, conc: int) -> None:
    """The HTTP side of :func:`http_ask`: prints ``rate p50``."""
    import json

    lat: list[float] = []
    if kind == "client":
        from avm.host.client import Client

        async with Client(url, token) as c:
            async def one() -> None:
                await c.ask("k", '"get"')

            async def worker(k: int) -> None:
                for _ in range(k):
                    t = time.perf_counter()
                    await one()
                    lat.append(time.perf_counter() - t)

            await worker(100)
            lat.clear()
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(n // conc) for _ in range(conc)))
    else:
        host, port = url[len("http://"):].rsplit(":", 1)
        body = json.dumps({"content": '"get"'}).encode()
        req = (f"POST /machines/k/ask HTTP/1.1\r\nHost: {host}\r\n"
               f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

        async def worker(k: int) -> None:  # type: ignore[no-redef]
            r, w = await asyncio.open_connection(host, int(port))
            for _ in range(k):
                t = time.perf_counter()
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
                size = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await r.readexactly(size)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"the host answered {head!r}")
                lat.append(time.perf_counter() - t)
            w.close()

        await worker(100)
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(n // conc) for _ in range(conc)))
    dt = time.perf_counter() - t0
    lat.sort()
    print(len(lat) / dt, lat[len(lat) // 2])


def pykka_ask(n: int) -> tuple[float, float]:
    import pykka

    class Counter(pykka.ThreadingActor):
        def on_receive(self, msg):
            return ("n", 0)

    a = Counter.start()
    for _ in range(100):
        a.ask("get")
    lat = []
    t = time.perf_counter()
    for _ in range(n):
        t1 = time.perf_counter()
        a.ask("get")
        lat.append(time.perf_counter() - t1)
    dt = time.perf_counter() - t
    pykka.ActorRegistry.stop_all()
    lat.sort()
    return n / dt, lat[len(lat) // 2]


def request_response(n: int) -> None:
    rows: list[tuple[str, float, float]] = []
    for mode in ("memory", "normal"):
        rate, p50 = asyncio.run(embedded_ask(n, mode))
        rows.append((f"embedded await h.ask, {mode}", rate, p50))
    for mode in ("memory", "normal"):
        for label, rate, p50 in asyncio.run(http_ask(n, mode)):
            rows.append((f"HTTP ask, {mode}, {label}", rate, p50))
    try:
        pyk, pyk50 = pykka_ask(n)
    except ImportError:
        pyk, pyk50 = float("nan"), float("nan")
    rows.append(("Pykka ask", pyk, pyk50))
    emb = rows[0][1]
    print(f"\n{'request/response (round trips)':<58} {'per s':>9} {'p50 ms':>8} "
          f"{'/ embedded':>11} {'/ Pykka':>8}")
    for name, rate, p50 in rows:
        print(f"{name:<58} {rate:>9,.0f} {p50 * 1000:>8.3f} {rate / emb:>10.2f}x "
              f"{rate / pyk:>7.2f}x")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        kind, url, token, n, conc = sys.argv[2:7]
        asyncio.run(_client(kind, url, token, int(n), int(conc)))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hops", type=int, default=40_000)
    ap.add_argument("--asks", type=int, default=3_000, help="round trips per ask figure")
    ap.add_argument("--only-asks", action="store_true", help="only the request/response table")
    a = ap.parse_args()
    if a.only_asks:
        request_response(a.asks)
        return
    n = a.hops
    raw = raw_sqlite(2000)
    rows: list[tuple[str, float, str]] = []
    for mode in ("full", "normal"):
        rate, commits, cpu = asyncio.run(host_ring(mode, n, 1))
        rows.append((f"host {mode}, 1 message/batch (batches/s)", rate,
                     f"{n / max(commits, 1):.0f} batches per commit, {cpu:.1f} us CPU each"))
    for mode in ("full", "normal"):
        rate, cpu = asyncio.run(host_wide(mode, n // 4, 10))
        rows.append((f"host {mode}, 10 messages/batch (messages/s)", rate,
                     f"{cpu:.1f} us CPU per message"))
    mem, _, cpu = asyncio.run(host_ring("memory", n, 1))
    rows.append(("host in memory, 1 message/batch (batches/s)", mem, f"{cpu:.1f} us CPU each"))
    iso, _, _ = asyncio.run(host_ring("memory", max(n // 10, TOKENS), 1, "workers"))
    rows.append(("in memory, isolated workers, 1 message/batch", iso,
                 f"{iso / mem:.2f}x inline"))
    try:
        pyk = pykka_ring(n)
    except ImportError:
        pyk = float("nan")
    rows.append(("Pykka actors, tell (messages/s)", pyk, ""))
    rows.append(("plain asyncio queues (messages/s)", asyncio.run(asyncio_ring(n)), ""))
    rows.append(("raw SQLite, WAL + FULL, 1 row/commit (commits/s)", raw, ""))
    print(f"{'contender':<52} {'rate':>12} {'/ raw SQLite':>13} {'/ Pykka':>9}")
    for name, rate, note in rows:
        print(f"{name:<52} {rate:>12,.0f} {rate / raw:>12.1f}x {rate / pyk:>8.2f}x  {note}")
    request_response(a.asks)


if __name__ == "__main__":
    main()
