"""The scheduler's caches never change a result, and a step's cost does not depend on them.

``_pick`` reads each head batch's authenticated priority and score from the Env's cache;
a run that swaps in a cold Env at any step must pick exactly what the warm one picks,
whatever happened to the machines meanwhile (stopped, suspended, rotated keys).
"""

from __future__ import annotations

import pytest

from avm import Behavior, Sim
from avm.core.netvalue import Env


def _counter() -> Behavior:
    b = Behavior("counter")

    @b.on("add")
    def add(state, n):
        return [], state + n

    return b


def _build(seed: int) -> Sim:
    sim = Sim(seed=seed, hosts=("h0", "h1"), record=True)
    b = _counter()
    for name, host in (("a", "h0"), ("b", "h1"), ("c", "h0")):
        sim.spawn(name, b, 0, host=host)
    sim.run()
    for i in range(30):
        for name, prio in (("a", 1.0), ("b", -0.5), ("c", 0.25)):
            sim.send(sim.cap(name, None, prio if i % 3 else 0.0), ("add", i),
                     client=f"cl{i % 7}")
    return sim


def _events(sim: Sim) -> list:
    return [repr(e) for e in sim.trace]


@pytest.mark.parametrize("cold_at", [1, 5, 17, 40])
def test_a_cold_env_picks_what_the_warm_one_picks(cold_at):
    warm, cold = _build(7), _build(7)
    for sim in (warm, cold):
        for k in range(60):
            if k == 10:
                sim.stop("c")
            if k == 20:
                sim.suspend("b")
            if k == 30:
                sim.resume("b")
            if k == 35:
                sim.rotate_key("a")
            if sim is cold and k % cold_at == 0:
                fresh = Env(sim.env.behaviors)
                sim.env = fresh
            sim.step()
        sim.run()
    assert _events(warm) == _events(cold)
    assert warm.net == cold.net
