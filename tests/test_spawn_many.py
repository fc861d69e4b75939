"""Spawning checks each value once, shares what it can, and keeps no heavy per-key objects.

A spawn counts its init batch's substructural items from the checks it already made
(the arguments, the env) instead of walking the batch again; the inbox's count must be
what a full walk finds. Every machine of a host gets the same commons env Map. A
SealingKey holds its key bytes, not an AES-SIV object (2 KB of native memory each):
those live in a bounded cache, and a key works the same after the cache was emptied.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from avm import Affine, Linear, Map, Relevant
from avm.core import caps
from avm.core import network as nw
from avm.core.caps import SealingKey, seal_context, unseal_context
from avm.core.netvalue import Env
from avm.core.values import check_value

atoms = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans(), st.none())
values = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.builds(Linear, inner), st.builds(Relevant, inner), st.builds(Affine, inner),
        st.dictionaries(st.text(max_size=2), inner, max_size=3).map(Map),
    ),
    max_leaves=6,
)


@settings(max_examples=80, deadline=None)
@given(args=values, extra=st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=3), values, max_size=2)))
def test_the_init_batch_is_counted_as_a_full_walk_counts_it(args, extra):
    net = nw.new_network(1)
    net, addr, _ = nw.spawn(net, "m", "b", args, env=extra)
    ((key, batch),) = [(k, v) for k, v in net.pending.items() if k[0][1] == addr]
    assert net.pending._subs.get(key, 0) == check_value(batch)
    if extra:
        envmap = batch.messages[2][1][1]
        for k, v in extra.items():
            assert envmap[k] is v


def test_machines_of_a_host_share_one_commons_env():
    net = nw.new_network(1, hosts=("h0", "h1"))
    envs = []
    for i, host in enumerate(("h0", "h0", "h1")):
        net, addr, _ = nw.spawn(net, f"m{i}", "b", None, host=host)
        b = next(v for k, v in net.pending.items() if k[0][1] == addr)
        envs.append(b.messages[2][1][1])
    assert envs[0] is envs[1]
    assert envs[0] is not envs[2] and set(envs[0]) == set(envs[2])
    assert envs[0]["time"].address != envs[2]["time"].address  # each host's own commons


def test_a_sealing_key_works_the_same_after_the_siv_cache_is_emptied(monkeypatch):
    monkeypatch.setattr(caps, "SIV_CACHE_MAX", 2)
    env = Env()
    raws = [bytes([i]) * caps.SEALING_KEY_BYTES for i in range(5)]
    addr = b"\x01" * 32
    made = []
    for raw in raws:
        k = SealingKey(0, raw)
        assert not hasattr(k, "__dict__") and type(k._raw) is bytes
        made.append((k, seal_context(addr, k, ("ctx", raw[0]))))
    assert len(caps._SIVS) <= 2
    for (_k, cap), raw in zip(made, raws, strict=True):
        ring = caps.Keyring(addr, SealingKey(0, raw))
        assert unseal_context(cap, ring) == ("ctx", raw[0])
    # A key of other bytes still refuses it, cache or not.
    other = caps.Keyring(addr, SealingKey(0, b"\x09" * caps.SEALING_KEY_BYTES))
    try:
        unseal_context(made[0][1], other)
    except caps.UnsealError:
        pass
    else:
        raise AssertionError("a capability opened under another key")
    assert env.sealing_key(0, raws[0])._raw is raws[0]


def test_outputs_are_counted_once_and_as_a_full_walk_counts_them():
    """run_batch checked a machine's outputs; the inbox takes its count (0 when plain)."""
    from avm import Behavior, Sim

    emitter = Behavior("emit")

    @emitter.signal("self")
    def keep_self(state, me):
        return [], Map({"me": me})

    @emitter.on("go")
    def go(state, target, how):
        if how == "plain":
            return [(target, ("n", 1, "x", (2, 3)))], state
        if how == "linear":
            return [(target, ("tok", Linear(("t", 1))))], state
        if how == "self":
            return [(target, ("me", state["me"]))], state
        return [(target, ("cap", state["me"](("room", 1))))], state

    sink = Behavior("sink")

    @sink.on("n")
    def n(state, *a):
        return [], state

    sim = Sim(seed=3, hosts=("h0",))
    sim.spawn("e", emitter, None)
    sim.spawn("s", sink, 0)
    sim.run()
    sim.suspend("s")
    target = sim.cap("s")
    for how in ("plain", "linear", "self", "cap", "plain"):
        sim.send(sim.cap("e"), ("go", target, how))
    sim.run()
    queued = [(k, b) for k, b in sim.net.pending.items() if k[0][1] == sim.address("s")]
    assert len(queued) == 5
    counts = [sim.net.pending._subs.get(k, 0) for k, _ in queued]
    assert counts == [check_value(b) for _, b in queued]
    assert sorted(counts) == [0, 0, 0, 0, 1]


@settings(max_examples=120, deadline=None)
@given(name=st.one_of(st.text(max_size=12), st.text(min_size=250, max_size=300)))
def test_a_machine_address_is_the_hash_of_its_resource(name):
    # spawn writes the identity resource's encoding directly (caps.name_address): the
    # address must be the one the general path (build the Map, encode it, hash) gives.
    ident = caps.IdentityKey.from_seed(b"x" * 32)
    try:
        want = caps.address_of(ident.resource((("name", name),)))
    except Exception as e:  # a name the codec refuses: the fast path refuses it alike
        try:
            caps.name_address(ident, name)
        except Exception as e2:
            assert type(e2) is type(e)
        else:
            raise AssertionError("name_address accepted what address_of refused") from e
        return
    assert caps.name_address(ident, name) == want


def _cell_sim():
    from avm import Behavior, Sim

    cell = Behavior("test.cell")

    @cell.init
    def init(state, i):
        return [], i

    return Sim(seed=3), cell


def test_spawn_many_is_spawn_in_a_loop():
    a, cell = _cell_sim()
    b, _ = _cell_sim()
    pairs = [(f"m{i}", i) for i in range(25)]
    got = a.spawn_many(cell, iter(pairs))
    want = [b.spawn(name, cell, arg) for name, arg in pairs]
    assert got == want
    assert [type(e) for e in a.trace] == [type(e) for e in b.trace]
    a.run()
    b.run()
    assert all(a.state(n) == b.state(n) == i for n, i in pairs)
    assert a.net.machines.keys() == b.net.machines.keys()


def test_spawn_many_refuses_what_spawn_refuses_and_keeps_what_came_before():
    import pytest

    from avm.core.errors import AvmError, UsageError

    sim, cell = _cell_sim()
    with pytest.raises(AvmError, match="already exists"):
        sim.spawn_many(cell, [("a", 1), ("b", 2), ("a", 3)])
    assert sim.address("a") and sim.address("b")
    with pytest.raises(UsageError, match="pairs"):
        sim.spawn_many(cell, [("c", 1, 2)])


def test_the_collector_is_paced_while_the_simulator_loops_and_restored_after():
    import gc

    from avm.core import sim as simmod

    seen = []
    sim, cell = _cell_sim()
    cell_probe = sim.behavior(lambda msg, state: (seen.append(gc.get_threshold()[0]) or [], state),
                              name="probe")
    before = gc.get_threshold()
    sim.spawn("p", cell_probe)
    sim.run()
    assert gc.get_threshold() == before  # put back
    assert seen and all(t == max(before[0], simmod.GC_GEN0_THRESHOLD) for t in seen)
    # A caller's own higher threshold, or a disabled collector, is left alone.
    gc.set_threshold(10 * simmod.GC_GEN0_THRESHOLD, *before[1:])
    try:
        seen.clear()
        sim.spawn("q", cell_probe)
        sim.run()
        assert set(seen) == {10 * simmod.GC_GEN0_THRESHOLD}
    finally:
        gc.set_threshold(*before)
    gc.disable()
    try:
        sim.spawn("r", cell_probe)
        sim.run()
        assert not gc.isenabled() and gc.get_threshold() == before
    finally:
        gc.enable()
