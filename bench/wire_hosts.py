"""Messages between two durable hosts over the wire, beside the same work on one host.

    python bench/wire_hosts.py                     # 2,000 batches of 10 messages
    python bench/wire_hosts.py --batches 5000 --size 1 --durability normal

Two hosts (``avm.host.open`` on SQLite stores in a temporary folder) in one process
and one event loop, peered over TLS on 127.0.0.1 (``avm.host.peering``). A client on
host A submits ``--batches`` batches of ``--size`` ``("add", 1)`` messages to a counter
machine on host B; the figure is messages per second until B's committed counter shows
them all and A's outbox is empty (every batch committed at A, carried, committed at B,
acknowledged, and the acknowledgement committed at A). The peer is the same
submissions to a counter on A itself (no wire). Prints both and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from examples.counter import counter  # noqa: E402

import avm.host  # noqa: E402
from avm.host.peering import Peering  # noqa: E402
from avm.wire.transport import HostIdentity, TransportConfig  # noqa: E402


async def _wait(cond, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > end:
            raise TimeoutError("the run did not finish")
        await asyncio.sleep(0.002)


async def run(batches: int, size: int, durability: str, d: Path) -> tuple[float, float]:
    total = batches * size
    msgs = [("add", 1)] * size
    # one host: the peer figure
    async with avm.host.open(d / "solo.avm", behaviors=[counter], durability=durability) as h:
        cap = await h.spawn("counter", counter, 0)
        t0 = time.perf_counter()
        for _ in range(batches):
            await h.submit([(cap, m) for m in msgs])

        async def solo_done() -> bool:
            return await h.state("counter") == total
        await _wait(solo_done)
        solo = time.perf_counter() - t0
    # two hosts over the wire
    ia, ib = HostIdentity.generate(), HostIdentity.generate()
    cfg = TransportConfig(frames_per_second_max=10_000_000)
    async with avm.host.open(d / "a.avm", behaviors=[counter], durability=durability) as a, \
            avm.host.open(d / "b.avm", behaviors=[counter], durability=durability) as b:
        cap = await b.spawn("counter", counter, 0)
        pa, pb = Peering(a._rt, ia, cfg), Peering(b._rt, ib, cfg)
        port = await pb.listen()
        pb.add_peer("a", ia.address)
        pa.add_peer("b", ib.address, ("127.0.0.1", port))
        pa.add_remote(cap.address, "b")
        t0 = time.perf_counter()
        for _ in range(batches):
            await a.submit([(cap, m) for m in msgs])

        async def wire_done() -> bool:
            return (await b.state("counter") == total
                    and not (await a._rt.durable()).outbox)
        await _wait(wire_done)
        wire = time.perf_counter() - t0
        await pa.close()
        await pb.close()
    return solo, wire


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--size", type=int, default=10)
    ap.add_argument("--durability", default="normal", choices=["full", "normal"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="avm-bench-") as d:
        solo, wire = asyncio.run(run(args.batches, args.size, args.durability, Path(d)))
    total = args.batches * args.size
    print(f"{args.batches} batches of {args.size} messages, durability {args.durability}")
    print(f"  one host (no wire):        {total / solo:,.0f} messages/s")
    print(f"  host A -> host B over TLS: {total / wire:,.0f} messages/s "
          f"({args.batches / wire:,.0f} batches/s)")
    print(f"  ratio wire / one host: {solo / wire:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
