"""Messages between two durable hosts over mutual TLS, beside a raw TLS socket, Ray
actors and Thespian's multiprocTCPBase, in one run (issue 8, bench/net.py).

    python bench/net.py            # two host processes, then two hosts in one process
    python bench/net.py --short    # fewer messages, for a quick run
    python bench/net.py --procs 2 --skip ray thespian

**avm.** Host A and host B (``avm.host.open``) peered over TLS 1.3 with mutual
authentication on 127.0.0.1 (``avm.host.peering``). With ``--procs 2`` (the default
first) host B runs in its own OS process; with ``--procs 1`` both hosts share one
process and one event loop. ``durable`` is a SQLite store with ``durability="full"``
(fsync at every group commit), ``not durable`` a store in memory. Both sides run the
whole protocol: A commits each batch to its outbox before it leaves, B applies it,
commits, and only then acks; A commits the ack.

* **msg/s**: a client on A submits batches of 10 (or 1) ``("add", 1)`` messages to a
  counter on B, 64 submissions in flight (each returns once committed at A), pausing
  while A's outbox holds more than 1,024 batches; the clock
  stops when B's committed counter has them all *and* A's committed outbox is empty
  (every ack back and committed).
* **round trip**: one ``("get", sink)`` to B's counter, whose answer comes back to a
  machine on A; from the submission until the answer is applied on A (three steps,
  two wire crossings, a commit on each side before each crossing). p50 and p99.

**Raw TLS** (asyncio streams, the same mutual-TLS contexts as the hosts, no framing
checks, no store, in one process): a stream of length-prefixed frames of the size of
avm's batch frames, one small ack frame per frame back, 64 frames in flight; and a
one-frame echo for the round trip. **Ray**: an actor called with one batch per call
(``add.remote(batch)``), 64 calls in flight, and ``ray.get(ping.remote())`` for the round
trip. **Thespian**: ``multiprocTCPBase``, an actor ``tell`` one batch per message and an
``ask`` for the count at the end; ``ask`` for the round trip. Contenders that do not
install are reported as skipped, with why.

Ratios are avm over the contender (higher is better for msg/s; for round trips the
contender over avm, so above 1 means avm is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import avm  # noqa: E402
import avm.host  # noqa: E402
from avm.core import codec  # noqa: E402
from avm.core.caps import IdentityKey  # noqa: E402
from avm.core.netvalue import events  # noqa: E402
from avm.host.peering import Peering  # noqa: E402
from avm.wire.transport import HostIdentity, TransportConfig  # noqa: E402

IN_FLIGHT = 64
#: The client on A waits while A's outbox holds more batches than this (four link
#: windows): a producer that outruns the wire only queues.
OUTBOX_MAX = 1024
SEED_A, SEED_B = b"bench-net-host-a", b"bench-net-host-b"
CFG = TransportConfig(frames_per_second_max=10_000_000, idle_seconds=120)

counter = avm.Behavior("counter")


@counter.on("add")
def _add(count, n):
    return [], count + n


@counter.on("get")
def _get(count, reply):
    return [(reply, ("count", count))], count


sink = avm.Behavior("sink")


@sink.on("count")
def _count(seen, n):
    return [], seen + 1


BEHAVIORS = [counter, sink]


def _identities() -> tuple[HostIdentity, HostIdentity]:
    return (HostIdentity(IdentityKey.from_seed(SEED_A), (("host", "a"),)),
            HostIdentity(IdentityKey.from_seed(SEED_B), (("host", "b"),)))


def _open(d: Path, name: str, durable: bool):
    if durable:
        return avm.host.open(d / f"{name}.avm", behaviors=BEHAVIORS, durability="full")
    return avm.host.open(None, behaviors=BEHAVIORS)


async def _until(cond, timeout: float = 600.0, every: float = 0.0005) -> None:
    end = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > end:
            raise TimeoutError("the run did not finish")
        await asyncio.sleep(every)


# ---------------------------------------------------------------------------------------
# avm: host B, here or in a child process
# ---------------------------------------------------------------------------------------


class _HostB:
    """Host B with its counter, and its peering listening for A."""

    async def start(self, d: Path, durable: bool) -> tuple[int, bytes]:
        _, ib = _identities()
        self.cm = _open(d, "b", durable)
        self.h = await self.cm.__aenter__()
        self.cap = await self.h.spawn("counter", counter, 0)
        self.peering = Peering(self.h._rt, ib, CFG)
        port = await self.peering.listen()
        ia, _ = _identities()
        self.peering.add_peer("a", ia.address)
        return port, codec.encode(self.cap)

    async def counter(self) -> int:
        return await self.h.state("counter")

    def add_remote(self, address: bytes) -> None:
        self.peering.add_remote(address, "a")

    async def stop(self) -> None:
        await self.peering.close()
        await self.cm.__aexit__(None, None, None)


def _child_b(conn: Any, d: str, durable: bool) -> None:
    """Host B's process: answers the parent's requests over a pipe."""
    async def main() -> None:
        b = _HostB()
        conn.send(await b.start(Path(d), durable))
        loop = asyncio.get_running_loop()
        while True:
            req = await loop.run_in_executor(None, conn.recv)
            if req[0] == "counter":
                conn.send(await b.counter())
            elif req[0] == "remote":
                b.add_remote(req[1])
                conn.send(True)
            else:
                await b.stop()
                conn.send(True)
                return
    asyncio.run(main())


class _RemoteB:
    def __init__(self, d: Path, durable: bool) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_b, args=(child, str(d), durable), daemon=True)

    async def _ask(self, *req: Any) -> Any:
        loop = asyncio.get_running_loop()
        self.conn.send(req)
        return await loop.run_in_executor(None, self.conn.recv)

    async def start(self, d: Path, durable: bool) -> tuple[int, bytes]:
        self.proc.start()
        return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)

    async def counter(self) -> int:
        return await self._ask("counter")

    def add_remote(self, address: bytes) -> Any:
        return self._ask("remote", address)

    async def stop(self) -> None:
        await self._ask("stop")
        self.proc.join(10)


async def avm_run(procs: int, durable: bool, n10: int, n1: int, rtts: int) -> dict:
    """One pair of hosts: msg/s in 10- and 1-message batches, then round trips."""
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="avm-net-") as tmp:
        d = Path(tmp)
        b: Any = _RemoteB(d, durable) if procs == 2 else _HostB()
        port, cap_bytes = await b.start(d, durable)
        cap = codec.decode(cap_bytes)
        ia, ib = _identities()
        async with _open(d, "a", durable) as a:
            snk = await a.spawn("sink", sink, 0)
            pa = Peering(a._rt, ia, CFG)
            pa.add_peer("b", ib.address, ("127.0.0.1", port))
            pa.add_remote(cap.address, "b")
            r = b.add_remote(snk.address)
            if r is not None:
                await r
            total = 0
            for size, batches in ((10, n10), (1, n1)):
                msgs = [(cap, ("add", 1))] * size
                want = total + size * batches
                t0 = time.perf_counter()
                pending: set = set()
                for _ in range(batches):
                    while len(a._rt.net.outbox) > OUTBOX_MAX:  # the producer's back-pressure
                        await asyncio.sleep(0.0005)
                    pending.add(asyncio.ensure_future(a.submit(msgs)))
                    if len(pending) >= IN_FLIGHT:
                        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        for f in done:
                            f.result()
                if pending:
                    await asyncio.gather(*pending)

                async def done_all(want: int = want) -> bool:
                    return (not (await a._rt.durable()).outbox
                            and await b.counter() == want)
                await _until(done_all, every=0.002)
                dt = time.perf_counter() - t0
                total = want
                out[f"msgs{size}"] = size * batches / dt
            # round trips: the answer is applied on A
            got: list = []
            wake = asyncio.Event()

            def on_step(evs: list, _dirty: Any) -> None:
                for e in evs:
                    if type(e) is events.Applied and e.dest == snk.address:
                        got.append(time.perf_counter())
                        wake.set()
            a._rt.subscribers.append(on_step)
            lat = []
            for i in range(rtts):
                wake.clear()
                t0 = time.perf_counter()
                await a.submit([(cap, ("get", snk))])
                while len(got) <= i:
                    await wake.wait()
                    wake.clear()
                lat.append(got[i] - t0)
            a._rt.subscribers.remove(on_step)
            out["rtt"] = _pcts(lat)
            out["counts"] = dict(pa.counts)
            await pa.close()
        await b.stop()
    return out


def _pcts(lat: list[float]) -> tuple[float, float]:
    lat = sorted(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return statistics.median(lat), p99


# ---------------------------------------------------------------------------------------
# Raw TLS: asyncio streams with the hosts' own mutual-TLS contexts
# ---------------------------------------------------------------------------------------


async def tls_run(frame_bytes: dict[int, int], n10: int, n1: int, rtts: int) -> dict:
    ia, ib = _identities()
    server_ctx, client_ctx = ib.ssl_context(server=True), ia.ssl_context(server=False)
    hdr = struct.Struct(">I")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                n = hdr.unpack(await reader.readexactly(4))[0]
                await reader.readexactly(n)
                writer.write(hdr.pack(8) + b"ack-ack!")
                if len(reader._buffer) < 4:  # type: ignore[attr-defined]
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                   server_hostname="avm")
    out: dict = {}
    for size, frames in ((10, n10), (1, n1)):
        body = os.urandom(frame_bytes[size])
        frame = hdr.pack(len(body)) + body
        acks = asyncio.Semaphore(IN_FLIGHT)
        t0 = time.perf_counter()

        async def read_acks(frames: int = frames, acks: asyncio.Semaphore = acks) -> None:
            for _ in range(frames):
                n = hdr.unpack(await reader.readexactly(4))[0]
                await reader.readexactly(n)
                acks.release()
        rt = asyncio.ensure_future(read_acks())
        for _ in range(frames):
            await acks.acquire()
            writer.write(frame)
            await writer.drain()
        await rt
        out[f"msgs{size}"] = size * frames / (time.perf_counter() - t0)
    lat = []
    ping = hdr.pack(8) + b"ping-pin"
    for _ in range(rtts):
        t0 = time.perf_counter()
        writer.write(ping)
        await writer.drain()
        n = hdr.unpack(await reader.readexactly(4))[0]
        await reader.readexactly(n)
        lat.append(time.perf_counter() - t0)
    out["rtt"] = _pcts(lat)
    writer.close()
    server.close()
    return out


# ---------------------------------------------------------------------------------------
# Ray and Thespian (if they install here)
# ---------------------------------------------------------------------------------------


def ray_run(n10: int, n1: int, rtts: int) -> dict:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    try:
        @ray.remote
        class Counter:
            def __init__(self) -> None:
                self.n = 0

            def add(self, batch: list) -> None:
                for _, k in batch:
                    self.n += k

            def ping(self) -> int:
                return self.n

        c = Counter.remote()  # type: ignore[attr-defined]
        ray.get(c.ping.remote())
        out: dict = {}
        for size, batches in ((10, n10), (1, n1)):
            batch = [("add", 1)] * size
            t0 = time.perf_counter()
            refs: list = []
            for _ in range(batches):
                refs.append(c.add.remote(batch))
                if len(refs) >= IN_FLIGHT:
                    ray.get(refs)  # Ray runs one actor's calls in order
                    refs = []
            ray.get(refs)
            ray.get(c.ping.remote())
            out[f"msgs{size}"] = size * batches / (time.perf_counter() - t0)
        lat = []
        for _ in range(rtts):
            t0 = time.perf_counter()
            ray.get(c.ping.remote())
            lat.append(time.perf_counter() - t0)
        out["rtt"] = _pcts(lat)
        return out
    finally:
        ray.shutdown()


def thespian_run(n10: int, n1: int, rtts: int) -> dict:
    from bench._thespian_actor import CounterActor  # a module Thespian can import
    from thespian.actors import ActorSystem

    asys = ActorSystem("multiprocTCPBase")
    try:
        c = asys.createActor(CounterActor)
        asys.ask(c, "get", 30)
        out: dict = {}
        for size, batches in ((10, n10), (1, n1)):
            batch = [("add", 1)] * size
            want = asys.ask(c, "get", 30) + size * batches
            t0 = time.perf_counter()
            for _ in range(batches):
                asys.tell(c, batch)
            got = asys.ask(c, "get", 120)
            if got != want:
                raise RuntimeError(f"thespian counted {got}, not {want}")
            out[f"msgs{size}"] = size * batches / (time.perf_counter() - t0)
        lat = []
        for _ in range(rtts):
            t0 = time.perf_counter()
            asys.ask(c, "get", 30)
            lat.append(time.perf_counter() - t0)
        out["rtt"] = _pcts(lat)
        return out
    finally:
        asys.shutdown()


# ---------------------------------------------------------------------------------------


def _frame_sizes() -> dict[int, int]:
    """The body bytes of avm's batch frames of 10 and 1 messages, as the bench sends."""
    from avm.core.caps import Capability
    from avm.wire.frames import Batch, encode_frame

    async def one_cap() -> Capability:
        async with avm.host.open(None, behaviors=BEHAVIORS) as h:
            return await h.spawn("counter", counter, 0)
    cap = asyncio.run(one_cap())
    sizes = {}
    for k in (10, 1):
        f = Batch(("client", "x"), cap.address, 1, (1 << 40, 0), 1.0, ((cap, ("add", 1)),) * k)
        sizes[k] = len(encode_frame(f)) - 4
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="fewer messages: a quick run")
    ap.add_argument("--procs", type=int, choices=[1, 2], nargs="*", default=None,
                    help="2: host B in its own process; 1: both hosts in one (default both)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["ray", "thespian", "tls", "memory", "durable"])
    ap.add_argument("--counts", type=int, nargs=3, metavar=("B10", "B1", "RTTS"),
                    help="batches of 10, batches of 1, round trips (overrides --short)")
    args = ap.parse_args(argv)
    n10, n1, rtts = (1000, 2000, 200) if args.short else (5000, 10000, 1000)
    if args.counts:
        n10, n1, rtts = args.counts
    procs = args.procs or [2, 1]
    rows: list[tuple[str, dict | str]] = []
    for p in procs:
        for durable in (True, False):
            if ("durable" if durable else "memory") in args.skip:
                continue
            label = f"avm, {'2 processes' if p == 2 else '1 process'}, {'durable (fsync)' if durable else 'in memory'}"
            print(f"running {label} ...", flush=True)
            rows.append((label, asyncio.run(avm_run(p, durable, n10, n1, rtts))))
    if "tls" not in args.skip:
        print("running raw TLS ...", flush=True)
        rows.append(("raw TLS asyncio, 1 process", asyncio.run(tls_run(_frame_sizes(), n10, n1, rtts))))
    for name, fn in (("ray", ray_run), ("thespian", thespian_run)):
        if name in args.skip:
            continue
        print(f"running {name} ...", flush=True)
        try:
            rows.append((f"{name} actors" if name == "ray" else "thespian multiprocTCPBase",
                         fn(n10, n1, rtts)))
        except ImportError as e:
            rows.append((name, f"skipped: does not import here ({e})"))
        except Exception as e:  # noqa: BLE001 - a contender that fails is reported, not fatal
            rows.append((name, f"skipped: failed here ({type(e).__name__}: {e})"))
    print(f"\n{n10} batches of 10, {n1} of 1, {rtts} round trips; {IN_FLIGHT} in flight")
    print(f"{'':46} {'msg/s 10':>10} {'msg/s 1':>10} {'rtt p50':>9} {'rtt p99':>9}")
    for label, r in rows:
        if isinstance(r, str):
            print(f"{label:46} {r}")
            continue
        p50, p99 = r["rtt"]
        print(f"{label:46} {r['msgs10']:>10,.0f} {r['msgs1']:>10,.0f} "
              f"{p50 * 1e6:>7,.0f}us {p99 * 1e6:>7,.0f}us")
    avm_rows = [(k, r) for k, r in rows if k.startswith("avm") and not isinstance(r, str)]
    others = [(k, r) for k, r in rows if not k.startswith("avm") and not isinstance(r, str)]
    if avm_rows and others:
        print("\nratios (msg/s: avm / other; rtt p50: other / avm; above 1: avm ahead)")
        for k, r in avm_rows:
            for k2, r2 in others:
                print(f"  {k} vs {k2}: 10-msg {r['msgs10'] / r2['msgs10']:.3f}x, "
                      f"1-msg {r['msgs1'] / r2['msgs1']:.3f}x, rtt {r2['rtt'][0] / r['rtt'][0]:.3f}x")
    targets = [("msg/s durable, 10-msg batches", "msgs10", 50_000), ("msg/s durable, 1-msg batches", "msgs1", 10_000)]
    for k, r in avm_rows:
        print(f"\ntargets, {k}:")
        if "durable" in k:
            for name, key, want in targets:
                print(f"  {name} >= {want:,}: {r[key]:,.0f} {'met' if r[key] >= want else 'NOT met'}")
            print(f"  rtt p50 durable <= 2 ms: {r['rtt'][0] * 1e3:.2f} ms "
                  f"{'met' if r['rtt'][0] <= 0.002 else 'NOT met'}")
        else:
            print(f"  rtt p50 without fsync <= 400 us: {r['rtt'][0] * 1e6:.0f} us "
                  f"{'met' if r['rtt'][0] <= 0.0004 else 'NOT met'}")
        print(f"  peering counts: {r['counts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
