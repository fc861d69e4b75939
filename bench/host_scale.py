"""Many machines on one host, beside Pykka: ``python bench/host_scale.py [--machines N]``.

* **creation**: ``Host.spawn_many`` creates N idle machines (default 100,000) in a store
  (durability ``normal``), each spawned by the core's ``spawn``, initialized by its init
  batch and committed in chunks, then evicted at once. Printed: machines/s, the resident
  memory the process gained per machine (RSS after minus before, after a collection),
  and the machines left in memory; beside it the floor every creation pays here, one
  Ed25519 key pair per machine (its address is the hash of its public key);
* **Pykka**: the RSS 20,000 started ``ThreadingActor``\\ s add per actor, and the ratio;
* **cost against what is queued** (``--queued``, default 10 and 100,000): a ring of 1,000
  machines carrying that many tokens at once, so that many batches stay queued while
  they hop; microseconds per batch over the same number of hops, in memory (the
  scheduler and the runtime, no disk), and the ratio of the two.

Each part runs in a fresh process, so one's memory does not count in another's.
Numbers vary with the machine's load; run it a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import avm  # noqa: E402
import avm.host  # noqa: E402

cell = avm.Behavior("bench.cell")


@cell.init
def _init(state, n):
    return [], n


@cell.on("get")
def _get(n, reply):
    return [(reply, ("n", n))], n


ring = avm.Behavior("bench.scale.ring")


@ring.init
def _ring_init(state, args):
    return [], None


@ring.on("next")
def _next(state, cap):
    return [], cap


@ring.on("hop")
def _hop(state, k):
    return ([(state, ("hop", k - 1))] if k > 0 else []), state


PYKKA_ACTORS = 20_000
RING = 1_000


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def part_create(n: int, chunk: int) -> dict:
    async def go() -> dict:
        d = tempfile.mkdtemp(prefix="avm-scale-")
        async with avm.host.open(os.path.join(d, "s.avm"), behaviors=[cell],
                                 durability="normal") as h:
            await h.idle()
            gc.collect()
            r0 = rss()
            t = time.perf_counter()
            made = await h.spawn_many(cell, ((f"m{i}", i) for i in range(n)), chunk=chunk)
            dt = time.perf_counter() - t
            await h.idle()
            gc.collect()
            r1 = rss()
            out = {"machines": made, "seconds": dt, "rate": made / dt,
                   "rss_per_machine": (r1 - r0) / made, "resident": len(h._rt.net.machines)}
            print(json.dumps(out), flush=True)  # the figures, whatever happens next
            times = []
            for j in range(21):  # asks to evicted machines, each loaded on demand
                i = (n // 21) * j + 7 if n > 21 else j % n
                t = time.perf_counter()
                answer = await h.ask(h.cap(f"m{i}"), "get")
                times.append(time.perf_counter() - t)
                assert answer == ("n", i), answer
            out["ask_evicted_ms"] = sorted(times)[len(times) // 2] * 1e3
            out["loads"] = h._rt.loads
            return out

    return asyncio.run(go())


def part_keys(n: int) -> dict:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    seeds = [os.urandom(32) for _ in range(n)]
    t = time.perf_counter()
    for s in seeds:
        ed25519.Ed25519PrivateKey.from_private_bytes(s).public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)
    return {"rate": n / (time.perf_counter() - t)}


def part_pykka(n: int) -> dict:
    import threading

    import pykka

    class Cell(pykka.ThreadingActor):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k

        def on_receive(self, msg):
            return self.k

    threading.stack_size(0)
    gc.collect()
    r0 = rss()
    t = time.perf_counter()
    actors = [Cell.start(i) for i in range(n)]
    dt = time.perf_counter() - t
    assert actors[n // 2].ask("get") == n // 2
    gc.collect()
    r1 = rss()
    pykka.ActorRegistry.stop_all()
    return {"actors": n, "rate": n / dt, "rss_per_actor": (r1 - r0) / n}


def part_queued(tokens: int, hops: int) -> dict:
    """Microseconds per batch while ``tokens`` batches stay queued (a ring of RING)."""

    async def go() -> dict:
        async with avm.host.open(None, behaviors=[ring]) as h:
            caps = [await h.spawn(f"r{i}", ring) for i in range(RING)]
            await h.submit([(caps[i], ("next", caps[(i + 1) % RING])) for i in range(RING)])
            await h.idle()
            k = 2 * hops // tokens + 2  # every token keeps hopping past the measured ones
            left = tokens
            j = 0
            while left:  # one batch per (client, machine) channel
                n = min(left, RING)
                await h.submit([(caps[i], ("hop", k)) for i in range(n)], client=f"c{j}")
                left -= n
                j += 1
            rt = h._rt
            b0 = rt.counters["batches"]
            t0 = time.perf_counter()
            while rt.counters["batches"] - b0 < hops:
                await asyncio.sleep(0.005)
            dt = time.perf_counter() - t0
            done = rt.counters["batches"] - b0
            queued = len(rt.net.pending)
            return {"tokens": tokens, "us_per_batch": dt / done * 1e6, "batches": done,
                    "queued_at_end": queued}

    return asyncio.run(go())


def run_part(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--part", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machines", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=avm.host.api.SPAWN_CHUNK)
    ap.add_argument("--pykka", type=int, default=PYKKA_ACTORS)
    ap.add_argument("--queued", type=int, nargs="*", default=[10, 100_000])
    ap.add_argument("--hops", type=int, default=20_000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["create", "pykka", "queued"])
    ap.add_argument("--part", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        what, *rest = a.part
        nums = [int(x) for x in rest]
        fn = {"create": part_create, "keys": part_keys, "pykka": part_pykka,
              "queued": part_queued}[what]
        print(json.dumps(fn(*nums)))
        return
    print(f"avm host scale, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    pyk = None
    if "pykka" not in a.skip:
        pyk = run_part(["pykka", str(a.pykka)])
        print(f"Pykka: {pyk['actors']:,} actors started at {pyk['rate']:,.0f}/s, "
              f"{pyk['rss_per_actor']:,.0f} bytes of RSS each")
    if "create" not in a.skip:
        keys = run_part(["keys", "20000"])
        c = run_part(["create", str(a.machines), str(a.chunk)])
        print(f"avm: {c['machines']:,} machines created in {c['seconds']:.1f} s: "
              f"{c['rate']:,.0f} machines/s (target 50,000; one Ed25519 key pair each alone "
              f"runs at {keys['rate']:,.0f}/s here)")
        print(f"avm: {c['rss_per_machine']:,.0f} bytes of RSS per machine "
              f"({c['resident']:,} left in memory; target <= 1,024); an ask to an evicted "
              f"one (loaded on demand, median of 21) {c['ask_evicted_ms']:.1f} ms")
        if pyk is not None:
            print(f"  avm / Pykka memory per machine: "
                  f"{c['rss_per_machine'] / pyk['rss_per_actor']:.3f}x; "
                  f"creation rate: {c['rate'] / pyk['rate']:.2f}x")
    if "queued" not in a.skip and a.queued:
        rows = [run_part(["queued", str(q), str(a.hops)]) for q in a.queued]
        for r in rows:
            print(f"queued {r['tokens']:>7,}: {r['us_per_batch']:6.1f} us per batch "
                  f"({r['batches']:,} batches, {r['queued_at_end']:,} still queued)")
        if len(rows) >= 2:
            ratio = rows[-1]["us_per_batch"] / rows[0]["us_per_batch"]
            print(f"  cost ratio {rows[-1]['tokens']:,} vs {rows[0]['tokens']:,} queued: "
                  f"{ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
