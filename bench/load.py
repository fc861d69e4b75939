"""A step's cost against what is queued: does scheduling slow down as channels pile up?

    python bench/load.py

N clients each queue one batch for the same machine (N live channels), then the
simulator runs them all. Printed: microseconds per batch for each N, and the growth
against the smallest N. The step picks through an indexed ready queue
(``avm.core.inbox.Index``), so the growth column should stay near 1x (a plain scan of
the live channels made it grow linearly with N). Next to it, the same batches through one plain
``asyncio.Queue``, whose cost per item does not depend on its length.
"""

from __future__ import annotations

import asyncio
import time

from avm import Behavior, Sim


def sim_cost(n: int) -> float:
    sim = Sim(seed=4, record=False)
    c = Behavior("c")

    @c.on("n")
    def add(state):
        return [], state + 1

    sim.spawn("c", c, 0)
    sim.run()
    cap = sim.cap("c")
    for i in range(n):
        sim.send(cap, ("n",), client=f"client{i}")
    t = time.perf_counter()
    sim.run()
    return (time.perf_counter() - t) / n * 1e6


def queue_cost(n: int) -> float:
    async def main() -> float:
        q: asyncio.Queue = asyncio.Queue()
        for i in range(n):
            q.put_nowait(i)
        t = time.perf_counter()
        total = 0
        while not q.empty():
            total += q.get_nowait()
        return (time.perf_counter() - t) / n * 1e6

    return asyncio.run(main())


def main() -> None:
    sizes = (100, 1000, 3000)
    print(f"{'channels':>9} {'avm us/batch':>13} {'growth':>7} {'queue us/item':>14}")
    base = None
    for n in sizes:
        avm_us = min(sim_cost(n) for _ in range(2))
        base = base or avm_us
        print(f"{n:>9,} {avm_us:>13.1f} {avm_us / base:>6.1f}x {queue_cost(n):>14.3f}")


if __name__ == "__main__":
    main()
