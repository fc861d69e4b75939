"""Moving a machine between two live durable hosts (issue 8, item 5; avm.host.migrate).

    python bench/move.py            # 20 moves, 2,000 batches through the forwarder
    python bench/move.py --short    # fewer

Three hosts A, B, C on 127.0.0.1, each a SQLite store with ``durability="full"``,
peered over TLS 1.3 (``avm.host.peering``), in one process and one event loop.

* **move**: the time of ``B.move("m", to="c")`` (and back, C to B), from the call until
  the source switched: the log written (fsync), the machine suspended and committed,
  its image exported and stored (fsync), sent, committed at the destination and acked,
  the switch committed. ``m`` holds a state of ``--items`` entries and has nothing
  queued. p50 and max.
* **through the forwarder**: a client on A submits ``--batches`` single-message
  batches to ``m`` (32 in flight), addressed to B, after ``m`` moved to C: B relays
  each under its number and acks A only once C acked it. Beside it, the same after A
  was told the new place (straight to C). Batches/s until C committed them all and
  every outbox is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import avm  # noqa: E402
import avm.host  # noqa: E402
from avm.core.caps import IdentityKey  # noqa: E402
from avm.host.migrate import Mover  # noqa: E402
from avm.host.peering import Peering  # noqa: E402
from avm.wire.transport import HostIdentity  # noqa: E402

tally = avm.Behavior("bench.tally")


@tally.on("add")
def _add(state, n):
    return [], (state[0] + n, state[1])


async def main(moves: int, batches: int, items: int) -> None:
    ids = {n: HostIdentity(IdentityKey.from_seed(f"bench-move-{n}".encode()), (("host", n),))
           for n in "abc"}
    with tempfile.TemporaryDirectory() as d:
        hosts, peerings, ports = {}, {}, {}
        for n in "abc":
            hosts[n] = await avm.host.open(Path(d) / f"{n}.avm", behaviors=[tally])
            peerings[n] = Peering(hosts[n]._rt, ids[n])
            ports[n] = await peerings[n].listen()
        for n in "abc":
            for o in "abc":
                if o != n:
                    peerings[n].add_peer(o, ids[o].address, ("127.0.0.1", ports[o]))
        movers = [Mover(hosts[n], peerings[n]) for n in "abc"]
        a, b, c = hosts["a"], hosts["b"], hosts["c"]
        cap = await b.spawn("m", tally, (0, tuple(range(items))))
        peerings["a"].add_remote(cap.address, "b")
        times = []
        where = "b"
        for _ in range(moves):
            to = "c" if where == "b" else "b"
            t0 = time.perf_counter()
            await hosts[where].move("m", to=to)
            times.append(time.perf_counter() - t0)
            where = to
        if where != "c":
            await hosts[where].move("m", to="c")
        print(f"move (state of {items} ints, durable, fsync): p50 "
              f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
              f"over {moves} moves")
        total = 0
        for label, via in (("through the forwarder B", "b"), ("straight to C", "c")):
            peerings["a"].add_remote(cap.address, via)
            sem = asyncio.Semaphore(32)

            async def one() -> None:
                async with sem:
                    await a.send(cap, ("add", 1))
            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(batches)))
            total += batches

            async def done() -> bool:
                st = await c.state("m")
                if st[0] != total:
                    return False
                for h in hosts.values():
                    if (await h._rt.durable()).outbox:
                        return False
                return True
            while not await done():
                await asyncio.sleep(0.005)
            dt = time.perf_counter() - t0
            print(f"{label}: {batches / dt:,.0f} batches/s ({batches} single-message "
                  f"batches, every one committed at C and acked)")
        for x in movers:
            await x.close()
        for p in peerings.values():
            await p.close()
        for h in hosts.values():
            await avm.host.close(h)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--items", type=int, default=1000)
    args = ap.parse_args()
    asyncio.run(main(6 if args.short else 20, 300 if args.short else 2000, args.items))
