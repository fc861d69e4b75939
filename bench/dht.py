"""Hops and lookups per second of the naming DHT, simulated in one process (issue 8).

    python bench/dht.py                      # 1,000 nodes, both wires
    python bench/dht.py --nodes 2000 --wire direct --lookups 1000

Builds a Kademlia network with :mod:`avm.naming.sim` (the ``kademlia`` package's
protocol, routing tables and crawls; nodes join one by one through a random earlier
node), publishes signed routing records from random nodes and looks them up from other
random nodes. Prints, per wire (``datagram``: rpcudp and MessagePack over an in-memory
datagram transport; ``direct``: the same handlers without the encoding):

* hops (rounds of the iterative lookup until the first valid record) p50, p90 and max,
  beside the bound the issue sets, log2(N);
* with ``--hostile F`` (0.25 by default), a network where that fraction of nodes forges
  every FIND_VALUE answer: how many lookups return the real record, and how many a wrong
  one, for avm's lookup and for the package's;
* lookups per second of avm's lookup (every value verified: signature, address, expiry;
  the newest kept) beside the package's own ``ValueSpiderCrawl`` over the same network
  (no verification: it returns the first value it sees), and the ratio; the three kinds
  of lookup take turns in rotating order, so none profits from copies another left.

One process plays every node, so lookups/s is the cost of the whole network's work per
lookup (every node's handlers run here), not one node's. Verified records are cached by
their exact bytes (:data:`avm.naming.records.VERIFIED_CACHE_MAX`), shared by the nodes of
the process; the "cold" figure empties that cache before each lookup, so every
signature on the way (the resolver's and the caching STORE's) is checked afresh.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from kademlia.crawling import ValueSpiderCrawl  # noqa: E402
from kademlia.node import Node  # noqa: E402

from avm.core.caps import IdentityKey  # noqa: E402
from avm.naming import records as naming_records  # noqa: E402
from avm.naming.records import dht_key, make_record  # noqa: E402
from avm.naming.sim import ForgingProtocol, build  # noqa: E402


def pct(xs: list[int], q: float) -> int:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def measure(n: int, wire: str, records: int, lookups: int, seed: int) -> dict:
    t0 = time.perf_counter()
    net, nodes = await build(n, seed=seed, wire=wire)
    join = time.perf_counter() - t0
    rng = random.Random(seed + 1)
    now = 1_700_000_000_000
    recs = []
    for i in range(records):
        key = IdentityKey.from_seed(b"bench-dht" + i.to_bytes(8, "big") * 4)
        rec = make_record(key, [f"127.0.0.1:{7000 + i}"], seq=1, issued_ms=now, ttl_ms=3600_000)
        await nodes[rng.randrange(n)].put(rec)
        recs.append(rec)
    plan = [(recs[rng.randrange(records)], nodes[rng.randrange(n)]) for _ in range(lookups)]

    # avm's lookup and the package's own (no verification) over the same network, in
    # alternating order, so that neither profits from the copies the other one's caching
    # step leaves behind
    hops, found, theirs_found = [], 0, 0
    ours = theirs = cold = 0.0
    msgs_ours = msgs_theirs = 0
    orders = [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    for i, (rec, asker) in enumerate(plan):
        for side in orders[i % 3]:
            sent = net.datagrams
            if side == 2:  # cold: no record verified before in this process
                naming_records._VERIFIED.clear()
                t = time.perf_counter()
                await asker.get(rec.address)
                cold += time.perf_counter() - t
                continue
            t = time.perf_counter()
            if side == 0:
                got = await asker.get(rec.address)
                ours += time.perf_counter() - t
                msgs_ours += net.datagrams - sent
                found += got.record is not None and got.record.data == rec.data
                hops.append(got.found_in_round or 0)
            else:
                target = Node(dht_key(rec.address))
                nearest = asker.protocol.router.find_neighbors(target)
                value = await ValueSpiderCrawl(asker.protocol, target, nearest, asker.ksize,
                                               asker.alpha).find()
                theirs += time.perf_counter() - t
                msgs_theirs += net.datagrams - sent
                theirs_found += value == rec.data
    per_lookup = (msgs_ours / lookups, msgs_theirs / lookups)
    for d in nodes:
        d.stop()
    return dict(n=n, wire=wire, join=join, contacts=sum(d.contacts() for d in nodes) / n,
                found=found, theirs_found=theirs_found, lookups=lookups, hops=hops,
                ours=lookups / ours, theirs=lookups / theirs, cold=lookups / cold, per_lookup=per_lookup)


async def measure_hostile(n: int, records: int, lookups: int, seed: int,
                          hostile: float) -> dict:
    net, nodes = await build(n, seed=seed, hostile=hostile)
    rng = random.Random(seed + 1)
    now = 1_700_000_000_000
    recs = []
    for i in range(records):
        key = IdentityKey.from_seed(b"bench-dht" + i.to_bytes(8, "big") * 4)
        rec = make_record(key, [f"127.0.0.1:{7000 + i}"], seq=1, issued_ms=now, ttl_ms=3600_000)
        await nodes[rng.randrange(n)].put(rec)
        recs.append(rec)
    out = dict(hostile=sum(isinstance(d.protocol, ForgingProtocol) for d in nodes), found=0,
               wrong=0, refused=0, hops=[], theirs_found=0, theirs_wrong=0)
    for _ in range(lookups):
        rec, asker = recs[rng.randrange(records)], nodes[rng.randrange(n)]
        got = await asker.get(rec.address)
        ok = got.record is not None and got.record.data == rec.data
        out["found"] += ok
        out["wrong"] += got.record is not None and not ok
        out["refused"] += got.invalid
        out["hops"].append(got.found_in_round or 0)
        target = Node(dht_key(rec.address))
        value = await ValueSpiderCrawl(asker.protocol, target,
                                       asker.protocol.router.find_neighbors(target),
                                       asker.ksize, asker.alpha).find()
        out["theirs_found"] += value == rec.data
        out["theirs_wrong"] += value is not None and value != rec.data
    for d in nodes:
        d.stop()
    return out


def main() -> None:
    # the package's crawl warns on every lookup that meets forgeries ("Got multiple values")
    logging.getLogger("kademlia.crawling").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--wire", choices=["direct", "datagram", "both"], default="both")
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--lookups", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hostile", type=float, default=0.25,
                    help="then a run with this fraction of nodes forging every answer")
    a = ap.parse_args()
    wires = ["direct", "datagram"] if a.wire == "both" else [a.wire]
    bound = math.log2(a.nodes)
    print(f"# {a.nodes} nodes, k=20, alpha=3, {a.records} records, {a.lookups} lookups, "
          f"seed {a.seed}; bound log2(N) = {bound:.2f} hops")
    print(f"{'wire':9} {'join s':>7} {'contacts':>8} {'found':>9} {'hops p50':>8} {'p90':>4} "
          f"{'max':>4} {'msgs/lookup':>11} {'avm lookups/s':>13} {'package/s':>10} {'ratio':>6}")
    print(f"{'':9} {'':>7} {'':>8} {'':>9} {'':>8} {'':>4} {'':>4} {'avm/package':>11}")
    for wire in wires:
        r = asyncio.run(measure(a.nodes, wire, a.records, a.lookups, a.seed))
        h = r["hops"]
        print(f"{wire:9} {r['join']:7.1f} {r['contacts']:8.1f} {r['found']:>4}/{r['lookups']:<4} "
              f"{pct(h, .5):8} {pct(h, .9):4} {max(h):4} "
              f"{r['per_lookup'][0]:5.1f}/{r['per_lookup'][1]:<5.1f} "
              f"{r['ours']:13.0f} {r['theirs']:10.0f} {r['ours'] / r['theirs']:6.2f}")
        print(f"{'':9} cold (every record verified afresh): {r['cold']:.0f} lookups/s, "
              f"ratio {r['cold'] / r['theirs']:.2f}")
        print(f"{'':9} package lookup found {r['theirs_found']}/{r['lookups']}; "
              f"max hops {max(h)} {'<=' if max(h) <= bound else '>'} log2(N) {bound:.2f}")
    if a.hostile > 0:
        h = asyncio.run(measure_hostile(a.nodes, a.records, a.lookups, a.seed, a.hostile))
        print(f"# hostile: {h['hostile']}/{a.nodes} nodes answer every FIND_VALUE with a "
              f"forgery (direct wire): a tampered copy, or their own record")
        print(f"avm: found {h['found']}/{a.lookups}, wrong records returned {h['wrong']}, "
              f"forgeries refused {h['refused']}, hops p50 {pct(h['hops'], .5)} "
              f"max {max(h['hops'])}")
        print(f"package ValueSpiderCrawl: found {h['theirs_found']}/{a.lookups}, wrong values "
              f"returned {h['theirs_wrong']}")


if __name__ == "__main__":
    main()
