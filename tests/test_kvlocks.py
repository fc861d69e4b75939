"""examples/kvlocks.py: a key-value store whose locks are linear capabilities.

Mutual exclusion over many seeds and every fault kind (no lost update: the counter ends
at clients x rounds), the census of linear values constant, a lock rebuilt from its
bytes refused as spent, and a lock whose holder is stopped taken back so the others go
on."""

from __future__ import annotations

import pytest

import avm
from avm import Map
from avm.core.network import events
from avm.testing import ALL_FAULTS, check_census, watch_census
from test_pubsub import load

kv = load("kvlocks")
TOTAL = len(kv.CLIENTS) * kv.ROUNDS


@pytest.mark.parametrize("seed", range(60))
def test_no_update_is_lost_on_any_seed(seed):
    sim = avm.Sim(seed=seed, faults=None if seed % 3 == 0 else ALL_FAULTS)
    kv.build(sim)  # its invariants run after every step
    watch_census(sim)
    assert sim.run(max_steps=50_000).quiescent
    st = sim.state("store")
    assert st["data"][kv.KEY] == TOTAL
    assert len(st["shots"].outstanding) == 0 and len(st["holder"]) == 0
    seen = sorted(n for c in kv.CLIENTS for n in sim.state(c)["seen"])
    assert seen == list(range(1, TOTAL + 1))  # each value read exactly once: exclusion
    check_census(sim).assert_ok()
    if seed % 3:
        assert sim.stats().get("wire.sent", 0) > 0  # the locks really crossed hosts


def test_a_lock_rebuilt_from_its_bytes_is_spent():
    """A holder that keeps a lock's bytes and rebuilds it later is refused: the right was
    spent with its first use."""
    thief = avm.Behavior("thief")

    @thief.init
    def _init(_s, store):
        return [], Map(store=store, me=None, kept=None)

    @thief.signal("self")
    def _self(state, me):
        return [(state["store"], ("acquire", kv.KEY, me("grant")))], state.set("me", me)

    @thief.on("granted", context="grant")
    def _granted(state, key, lock):
        kept = avm.encode(lock)  # the bytes of a linear capability are an ordinary value
        return [(lock, ("write", 100))], state.set("kept", kept)

    @thief.on("again")
    def _again(state):
        return [(avm.decode(state["kept"]), ("write", 999))], state

    sim = avm.Sim(seed=1)
    sim.spawn("store", kv.store, None)
    sim.spawn("thief", thief, sim.cap("store", "clients"))
    sim.run()
    assert sim.state("store")["data"][kv.KEY] == 100
    sim.send(sim.cap("thief"), ("again",))
    sim.run()
    assert sim.state("store")["data"][kv.KEY] == 100
    (f,) = [e.failure for e in sim.trace
            if type(e) is events.Applied and not e.ok and e.dest == sim.address("store")]
    assert f.error_type == "Spent"


def test_a_lock_granted_to_a_stopped_client_comes_back_and_the_others_go_on():
    sim = avm.Sim(seed=3)
    kv.build(sim)
    watch_census(sim)
    bob = sim.address("bob")

    def bob_waits(s) -> bool:
        st = s.state("store")
        return st is not None and any(r.address == bob for q in st["waiting"].values()
                                      for r in q)

    for _ in range(10_000):  # step until bob waits for the lock, then stop it
        if bob_waits(sim):
            break
        sim.run(max_steps=1)
    assert bob_waits(sim)
    sim.stop("bob")  # the lock it will be granted cannot be delivered
    assert sim.run(max_steps=50_000).quiescent
    st = sim.state("store")
    others = (len(kv.CLIENTS) - 1) * kv.ROUNDS
    assert st["data"][kv.KEY] == others + sim.state("bob")["done"]
    assert len(st["shots"].outstanding) == 0 and kv.KEY not in st["holder"]
    assert sim.stats().get("drop.stopped", 0) >= 1  # the grant was dropped and came back
    check_census(sim).assert_ok()
