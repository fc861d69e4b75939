"""What crosses between machines and how it is counted (issue 5, item 13: mutants of
``avm.core.conserve``).

``transit``/``strip`` must remove exactly what a host would not deliver (a bound ``Self``
away from home, plaintext held in memory) wherever it sits in a batch, keep everything
else *as it is* (the same objects: a rebuilt linear wrapper or discretionary seal is a
new item), and bind a ``Self`` that comes home. ``needs_transit`` must agree with it, and
``Tally`` must count every kind of substructural item the census counts.
"""

from __future__ import annotations

from typing import Any

import pytest

from avm import Behavior, Linear, Map, Relevant, Sim
from avm.core.caps import Capability, CapabilityError, SealingKey, Self, siv_sealer_pair
from avm.core.conserve import OPAQUE, Tally, needs_transit, no_drop, opener_for, strip, transit
from avm.core.values import LINEAR, RELEVANT, Affine, Sealed, record
from avm.testing import census


@record(name="test.mutants.Pair")
class Pair:
    a: Any
    b: Any


keeper = Behavior("mutants.conserve.keeper")


@keeper.init
def _k_init(state, _args):
    return [], Map({"me": None, "seen": (), "key": b"k" * 64})


@keeper.signal("self")
def _k_self(state, me):
    return [], state.set("me", me)


@keeper.on("send_two")
def _k_send_two(state, to, first):
    """One batch: an atom-ish first message, then one holding this machine's bound Self."""
    return [(to, first), (to, ("self_in", Map({"who": state["me"]})))], state


@keeper.on("self_in")
def _k_self_in(state, m):
    s = m["who"]
    try:
        s("anything")
        seen = "bound"
    except CapabilityError:
        seen = "unbound"
    return [], state.set("seen", (*state["seen"], seen))


@keeper.on("mint")
def _k_mint(state):
    me = state["me"]
    sealer, _ = siv_sealer_pair(state["key"])
    kept = (
        me(("l", Linear("lin"))),            # linear capability: counts its context's item
        me(("r", Relevant("rel"))),          # relevant capability
        me(("a", Affine("aff"))),            # affine: not counted
        me("plain"),                          # unrestricted: not counted
        sealer.seal(Linear("sealed-lin")),   # crypto seal of a linear value: one item
        sealer.seal(Relevant("sealed-rel")),
        Sealed("disc", Linear("disc-lin")),  # discretionary seal: its contents count
        Pair(1, Linear("in-record")),
        Linear(Linear("nested")),            # two items
    )
    return [], state.set("kept", kept)


@keeper.otherwise
def _k_any(state, content):
    return [], state


def _sim(hosts=("h0",)) -> Sim:
    sim = Sim(seed=5, hosts=hosts)
    sim.spawn("a", keeper, None, host=hosts[0])
    sim.spawn("b", keeper, None, host=hosts[-1])
    sim.run()
    return sim


def _bound(sim: Sim, name: str) -> Self:
    addr = sim.address(name)
    return Self(addr, 0, SealingKey(0, sim.net.keys[addr][0]))


# ---------------------------------------------------------------------------------------
# Through the simulator: every message of a batch is stripped, not only the first
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [1, ("ping", 1, "x"), Map({"k": 1})])
@pytest.mark.parametrize("hosts", [("h0",), ("h0", "h1")])
def test_a_self_after_a_message_that_needs_nothing_is_still_stripped(first, hosts):
    sim = _sim(hosts)
    sim.send(sim.cap("a"), ("send_two", sim.cap("b"), first))
    sim.run()
    assert sim.state("b")["seen"] == ("unbound",)


def test_the_census_counts_capabilities_and_seals_of_every_kind():
    sim = _sim()
    sim.send(sim.cap("a"), ("mint",))
    sim.run()
    c = census(sim)
    # linear: the linear capability's Linear, the crypto seal, the discretionary seal's
    # Linear, the record's Linear and the nested pair
    assert c.linear == 6
    assert c.relevant == 2  # the relevant capability's Relevant and the crypto seal
    assert c.places["states"] == 6


# ---------------------------------------------------------------------------------------
# transit: the batch as the receiver gets it
# ---------------------------------------------------------------------------------------


def test_transit_strips_every_message_that_needs_it_whatever_comes_before():
    sim = _sim()
    a, b = sim.address("a"), sim.address("b")
    s = _bound(sim, "a")
    cap = sim.cap("b")
    for first in (1, ("x", 1), Map({"k": 1}), (Map({"k": 1}),)):
        msgs = ((cap, first), (cap, ("x", s)))
        out = transit(sim.net.keys, b, msgs)
        assert out[0] is msgs[0] and out[1][1][1]._key is None
        # at its own machine it stays bound, and nothing changes
        assert transit(sim.net.keys, a, msgs) is msgs


@pytest.mark.parametrize("content", ["tuple", "pair", "map", "bare"])
def test_transit_finds_a_self_in_any_shape_of_content(content):
    sim = _sim()
    s = _bound(sim, "a")
    shaped = {"tuple": (s,), "pair": ("name", s), "map": Map({"who": s}), "bare": s}[content]
    cap = sim.cap("b")
    [(c2, v2)] = transit(sim.net.keys, sim.address("b"), ((cap, shaped),))
    assert c2 is cap
    found = v2 if type(v2) is Self else v2["who"] if type(v2) is Map else v2[-1]
    assert found == s and found._key is None
    # several non-atoms, all needing nothing: the very same batch
    msgs = ((cap, (Map({"k": 1}), (1, 2))), (cap, Map({"k": (1,)})))
    assert transit(sim.net.keys, sim.address("b"), msgs) is msgs


def test_transit_drops_the_held_plaintext_of_the_target_capability():
    sim = _sim()
    s = _bound(sim, "b")
    held = s(("one", Linear("t")))
    assert held._held
    for content in (1, ("x", 1)):
        [(c2, v2)] = transit(sim.net.keys, sim.address("b"), ((held, content),))
        assert c2 == held and c2._held == () and v2 is content


def test_transit_strips_commons_arguments_and_keeps_clean_ones():
    sim = _sim()
    a, b = sim.address("a"), sim.address("b")
    s = _bound(sim, "a")
    dirty = Capability(a, commons=("time", (1, s)))
    [(c2, v2)] = transit(sim.net.keys, b, ((dirty, 1),))
    assert c2.commons[0] == "time" and c2.address == a and c2.is_commons
    assert c2.commons[1] == (1, s) and c2.commons[1][1]._key is None and v2 == 1
    for args in ((), 5, (1, 2), ("x", Map({"k": 1}))):
        clean = Capability(a, commons=("time", args))
        msgs = ((clean, 1), (clean, ("x", 2)))
        assert transit(sim.net.keys, b, msgs) is msgs
    # a commons capability inside a content is stripped the same way
    [(_, v2)] = transit(sim.net.keys, b, ((sim.cap("b"), ("pass", dirty)),))
    assert v2[1].commons[1][1]._key is None and v2[1].commons[0] == "time"


# ---------------------------------------------------------------------------------------
# strip: one value
# ---------------------------------------------------------------------------------------


def test_strip_unbinds_away_from_home_and_binds_at_home():
    sim = _sim()
    a, b = sim.address("a"), sim.address("b")
    keys = sim.net.keys
    bound, unbound = _bound(sim, "a"), Self(a, 0)
    assert strip(bound, b, keys)._key is None
    assert strip(bound, a, keys) is bound
    home = strip(unbound, a, keys)
    assert home == unbound and home._key is not None and home._key.version == 0
    assert home("ctx") == bound("ctx")  # bound to the machine's real key
    assert strip(unbound, b, keys) is unbound  # nothing to change: the same object
    assert strip(unbound, a, None)._key is None  # no keys: nothing to bind with
    assert strip(Self(a, 7), a, keys)._key is None  # a version the network does not hold
    assert strip(5, b, keys) == 5 and strip("x") == "x"
    assert strip((1, bound), b, keys)[1]._key is None


def test_strip_reaches_into_every_container_and_keeps_what_needs_nothing():
    sim = _sim()
    b = sim.address("b")
    keys = sim.net.keys
    s = _bound(sim, "a")
    lin, rel = Linear(5), Relevant((1, 2))
    sealer, _ = siv_sealer_pair(b"k" * 64)
    crypto = sealer.seal(Linear("c"))
    crypto_clean = Sealed(crypto.sealer, crypto.payload, True, crypto.kind)
    disc = Sealed("d", (1, 2))
    rec = Pair((1,), 2)
    m = Map({i: i for i in range(10)}).set(10, s).set(11, (1,))
    value = (lin, rel, crypto_clean, disc, rec, Linear(s), Sealed("d", (1, s)), Pair(1, s), m,
             Relevant(Pair(2, s)))
    out = strip(value, b, keys)
    assert out == value
    # what needed nothing is the very same object (a new wrapper would be a new item)
    for i in range(5):
        assert out[i] is value[i]
    assert out[5].value._key is None and type(out[5]) is Linear
    assert out[6].sealer == "d" and out[6].payload[1]._key is None and not out[6].crypto
    assert type(out[7]) is Pair and out[7].a == 1 and out[7].b._key is None
    assert out[8][10]._key is None and out[8][11] is m[11] and out[8][3] == 3 and len(out[8]) == 12
    assert type(out[9]) is Relevant and out[9].value.b._key is None
    # a crypto seal loses its held plaintext, and keeps its kind and ciphertext
    c2 = strip(crypto, b, keys)
    assert c2 == crypto and c2._held == () and c2.crypto and c2.kind == LINEAR
    assert c2.payload == crypto.payload and c2.sealer == crypto.sealer
    # a record field after an atom field, and a record holding a record
    deep = Pair(Pair(1, 2), Pair(3, s))
    d2 = strip(deep, b, keys)
    assert d2.a is deep.a and d2.b.a == 3 and d2.b.b._key is None


# ---------------------------------------------------------------------------------------
# needs_transit agrees with strip
# ---------------------------------------------------------------------------------------


def test_needs_transit_says_exactly_when_strip_would_change_something():
    sim = _sim()
    a, b = sim.address("a"), sim.address("b")
    keys = sim.net.keys
    s = _bound(sim, "a")
    sealer, _ = siv_sealer_pair(b"k" * 64)
    crypto = sealer.seal(Linear("c"))
    held_cap = _bound(sim, "b")(("one", Linear("t")))
    big_clean = Map({i: (i,) for i in range(40)})
    big_dirty = big_clean.set(40, (s,))
    no = [
        Linear(5), Relevant("x"), Affine(1), (1, (2, 3)), ((1,), (2,)), Map({"a": (1,)}),
        Map({"a": Linear(1)}), big_clean, Sealed("d", 1), Sealed("d", (1, 2)),
        Sealed(crypto.sealer, crypto.payload, True, crypto.kind), sim.cap("b"),
        Capability(a, commons=("time", (1, 2))), Capability(a, commons=("time", 5)),
        Pair(1, 2), Pair((1,), Pair(2, 3)),
    ]
    yes = [
        s, Self(a, 0), (1, s), (s,), ((1,), (s,)), Map({"a": 1, "b": s}), big_dirty,
        Linear(s), Relevant((1, s)), Sealed("d", (1, s)), crypto, held_cap,
        Capability(a, commons=("time", (1, s))), Pair(1, s), Pair(s, 1), Pair(1, Pair(2, s)),
        Pair(Map({"x": 1}), s),
    ]
    for v in no:
        assert needs_transit(v) is False, v
        assert strip(v, b, keys) is v, v
        assert needs_transit(v) is False, v  # a large map remembers its answer
    for v in yes:
        assert needs_transit(v) is True, v
        assert needs_transit(v) is True, v
    assert needs_transit(1) is False and needs_transit(None) is False


# ---------------------------------------------------------------------------------------
# Tally and the opener
# ---------------------------------------------------------------------------------------


def test_tally_counts_each_kind_of_item_under_its_own_key():
    sim = _sim()
    me = _bound(sim, "a")
    sealer, _ = siv_sealer_pair(b"k" * 64)
    lin_cap, rel_cap = me(("l", Linear(1))), me(("r", Relevant(2)))
    aff_cap, plain_cap = me(("a", Affine(3))), me("plain")
    s_lin, s_rel = sealer.seal(Linear("a")), sealer.seal(Relevant("b"))
    s_aff = sealer.seal(Affine("c"))
    rel, lin = Relevant("x"), Linear("y")

    t = Tally().add((lin_cap, rel_cap, aff_cap, plain_cap, s_lin, s_rel, s_aff))
    assert t.linear == {lin_cap: 1, s_lin: 1}
    assert t.relevant == {rel_cap: 1, s_rel: 1}

    t = Tally().add((rel, Linear(lin), Pair(1, lin), Pair((1,), Relevant(lin)),
                     Sealed("d", Linear("z")), Sealed("d", (1, 2))))
    assert t.relevant[rel] == 1 and t.n_relevant == 2
    assert t.linear[lin] == 3 and t.n_linear == 5

    t = Tally().add(Capability(me.address, commons=("null", (Linear(1), Relevant(2)))))
    assert t.n_linear == 1 and t.n_relevant == 1
    assert not Tally().add((1, "x", Map({"k": 1}), Pair(1, 2), plain_cap))
    assert no_drop(Linear(1)) and not no_drop(5) and not no_drop(None) and not no_drop(Affine(1))


def test_tally_opens_capabilities_with_its_opener():
    sim = _sim()
    me = _bound(sim, "a")
    two = me(("two", Linear(1), Linear(2)))
    rel = me(("r", Relevant(3)))
    seen = []

    def opener(cap):
        seen.append(cap)
        return cap._held[0]

    t = Tally(opener).add((two, rel))
    assert t.n_linear == 2 and t.n_relevant == 1 and two not in t.linear
    assert seen == [two, rel]
    assert Tally(lambda cap: OPAQUE).add(two).linear == {two: 1}


def test_opener_for_unseals_with_the_networks_keys():
    sim = _sim()
    me = _bound(sim, "a")
    ctx = ("two", Linear(1), Linear(2))
    cap = me(ctx)
    opener = opener_for(sim.net, sim.env)
    assert opener(cap) == ctx
    t = Tally(opener).add(cap)
    assert t.n_linear == 2
    # another machine's address or a tampered ciphertext: opaque, not an error
    assert opener(Capability(b"\7" * 32, 0, LINEAR, 0.0, cap.sealed)) is OPAQUE
    forged = Capability(cap.address, 0, LINEAR, 0.0, bytes(len(cap.sealed)))
    assert opener(forged) is OPAQUE
    assert Tally(opener).add(forged).linear == {forged: 1}
    assert Tally(opener).add(Capability(cap.address, 0, RELEVANT, 0.0, b"x" * 20)).n_relevant == 1


def test_merge_adds_and_cancels():
    one, two = Linear(1), Linear(2)
    t = Tally().add((one, two))
    t.merge(Tally().add(one), -1)
    assert t.linear == {two: 1}
    t.merge(Tally().add((one, one)))
    assert t.linear == {two: 1, one: 2}


# ---------------------------------------------------------------------------------------
# The cache of needs_transit answers for large maps stays bounded and accounted
# ---------------------------------------------------------------------------------------


def _check_cache(cache_mod, max_entries: int, max_keys: int) -> None:
    entries = cache_mod._NEEDS
    assert len(entries) <= max_entries
    assert cache_mod._needs_keys == sum(len(m) for m, _ in entries.values()) <= max_keys
    assert all(id(m) == k for k, (m, _) in entries.items())


def test_the_large_map_cache_is_bounded_in_entries_and_keys(monkeypatch):
    import avm.core.conserve as cv

    size = cv._NEEDS_MIN + 8
    monkeypatch.setattr(cv, "_NEEDS", {})
    monkeypatch.setattr(cv, "_needs_keys", 0)
    monkeypatch.setattr(cv, "_NEEDS_ENTRIES_MAX", 4)
    monkeypatch.setattr(cv, "_NEEDS_KEYS_MAX", 100 * size)
    s = Self(b"\1" * 32, 0)
    maps = [Map({i: (i, j) for i in range(size)}) for j in range(10)]
    for j, m in enumerate(maps):
        dirty = j % 3 == 0
        if dirty:
            maps[j] = m = m.set(0, (s,))
        assert needs_transit(m) is dirty
        assert needs_transit(m) is dirty  # asked again: answered from the cache, not re-added
        _check_cache(cv, 4, 100 * size)
    assert len(cv._NEEDS) == 4 and id(maps[-1]._m) in cv._NEEDS  # the oldest went first
    assert id(maps[0]._m) not in cv._NEEDS

    # bounded by keys: exactly at the bound still fits, one more map evicts the oldest
    monkeypatch.setattr(cv, "_NEEDS", {})
    monkeypatch.setattr(cv, "_needs_keys", 0)
    monkeypatch.setattr(cv, "_NEEDS_ENTRIES_MAX", 100)
    monkeypatch.setattr(cv, "_NEEDS_KEYS_MAX", 3 * size)
    for m in maps[1:4]:
        needs_transit(m)
    assert len(cv._NEEDS) == 3 and cv._needs_keys == 3 * size
    needs_transit(maps[4])
    _check_cache(cv, 100, 3 * size)
    assert len(cv._NEEDS) == 3 and id(maps[1]._m) not in cv._NEEDS
