"""Size limits (issue 5 item 10): a step cannot make a state or an output that the encoding
cannot store, so no value a step makes can stop a host at commit time.

The check relies on upper bounds every ``Map`` carries (bytes and data items of its
encoding); these tests try hardest to make a bound fall below the truth (overwrites,
deletes, equal keys with different encodings, core updates, decoded maps) and check the
edges of both limits exactly.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import avm
import avm.host
from avm import Linear, Map, ValueLimitError, check_size, decode, encode
from avm.core import values
from avm.core.machine import BATCH_SLACK_BYTES, Message, run_batch
from avm.core.values import BYTES_MAX, ITEMS_MAX, _weigh, exact_size
from test_codec import keys as codec_keys
from test_codec import values as codec_values


def _bound_holds(v) -> None:
    b, i = _weigh(v)
    eb, ei = exact_size(v)
    assert b >= eb and i >= ei, (v, (b, i), (eb, ei))


@settings(max_examples=400, deadline=None)
@given(codec_values())
def test_bound_is_at_least_the_encoding(v):
    _bound_holds(v)
    _bound_holds(decode(encode(v)))  # a decoded map computes its own bounds


# Keys that are equal but encode differently: the map keeps the first one stored.
TRICKY_KEYS = st.sampled_from([1, 1.0, True, 0, 0.0, -0.0, False, 2**64, float(2**64), "a", b"a"])
OPS = st.lists(st.one_of(
    st.tuples(st.just("set"), st.one_of(TRICKY_KEYS, codec_keys), codec_values(6)),
    st.tuples(st.just("update"), st.lists(st.tuples(st.one_of(TRICKY_KEYS, codec_keys),
                                                    codec_values(4)), max_size=4)),
    st.tuples(st.just("delete"), st.one_of(TRICKY_KEYS, codec_keys)),
), max_size=30)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_map_bounds_never_fall_below_the_encoding(ops):
    m = Map()
    for op in ops:
        if op[0] == "set":
            m = m.set(op[1], op[2])
        elif op[0] == "update":
            m = m.update(op[1])
        else:
            m = m.discard(op[1])
        _bound_holds(m)
        _bound_holds(Map({"inner": m, "t": (m, m)}))


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_core_updates_carry_learnt_bounds_that_hold(ops):
    """The core's own updates (_set_plain) have unknown bounds; a learnt bound carried
    forward from one map to the next must stay above the truth."""
    m = Map({"seed": 1})._set_plain("x", 0)  # unknown bounds
    _weigh(m)  # learn them (cached by identity)
    for op in ops:
        if op[0] == "set":
            m = m._set_plain(op[1], op[2])
        elif op[0] == "delete" and op[1] in m:
            m = m.delete(op[1])
        assert m._b == values._WEIGHT_UNKNOWN
        _bound_holds(m)


def _blob_state(n: int) -> Map:
    """A map state whose encoding is exactly ``n`` bytes."""
    data = b"\0" * (n - 8)  # a map head, "x", a byte string head of 5 bytes: 1 + 2 + 5
    m = Map({"x": data})
    assert exact_size(m)[0] == n
    return m


def _set_step(target):
    def step(msg, state):
        return [], target
    return step


def test_a_state_of_exactly_the_byte_limit_commits_one_byte_more_fails():
    ok = _blob_state(BYTES_MAX)
    r = run_batch(_set_step(ok), 0, [Message("in", "go")])
    assert r.ok and r.state == ok
    big = _blob_state(BYTES_MAX + 1)
    r = run_batch(_set_step(big), 0, [Message("in", "go")])
    assert not r.ok
    assert r.failure.rule == "value" and r.failure.path == "$.state"
    assert str(BYTES_MAX) in r.failure.detail


def test_a_state_of_exactly_the_item_limit_commits_one_more_fails():
    ok = (0,) * (ITEMS_MAX - 1)  # the tuple itself is one item
    assert exact_size(ok)[1] == ITEMS_MAX
    assert run_batch(_set_step(ok), 0, [Message("in", "go")]).ok
    r = run_batch(_set_step((0,) * ITEMS_MAX), 0, [Message("in", "go")])
    assert not r.ok and r.failure.path == "$.state" and str(ITEMS_MAX) in r.failure.detail


def test_a_map_of_many_plain_entries_is_bounded_without_measuring(monkeypatch):
    """The bounds of plain entries are tight: half a million small entries (just under
    the item limit) are judged in O(1), never by encoding the map."""
    m = Map((k, k) for k in range(ITEMS_MAX // 2 - 1))
    calls = []
    real = values._exact_measure
    monkeypatch.setattr(values, "_exact_measure", lambda v: calls.append(v) or real(v))
    for k in range(100):
        m = m.set(k, -k)
        assert check_size(m) is m
    assert calls == []
    with pytest.raises(ValueLimitError):
        check_size(m.set(-1, 0).set(-2, 0))  # two entries more: over the item limit


def test_a_map_near_the_limit_is_measured_and_kept_not_refused(monkeypatch):
    """Bounds may pass the limit while the encoding fits (here floats, weighed at 9
    bytes, encode in 3): the batch measures the state, and commits it."""
    filler = b"\0" * (BYTES_MAX - 3_000_000)
    state = Map({"blob": filler, **{f"f{k}": 0.5 for k in range(200_000)}})
    assert _weigh(state)[0] > BYTES_MAX >= exact_size(state)[0]
    calls = []
    real = values._exact_measure
    monkeypatch.setattr(values, "_exact_measure", lambda v: calls.append(1) or real(v))

    def step(msg, s):
        return [], s.set("n", msg[1][1])

    for k in range(3):
        r = run_batch(step, state, [Message("in", ("n", k))])
        assert r.ok and r.state["n"] == k
        state = r.state
    assert len(calls) == 3


@pytest.mark.parametrize("n", [8, 9, 23, 24, 255, 256, 65535, 65536])
def test_long_atoms_are_bounded(n):
    for v in ("x" * n, "é" * n, b"x" * n, ("x" * n,), Map({"x" * n: b"y" * n})):
        _bound_holds(v)


@pytest.mark.parametrize("make", [
    lambda k: (f"k{k:07d}", 2**40 + k),  # 9 + 9 bytes: exactly the light budget
    lambda k: (f"k{k:08d}", "v" * 9),  # 10 + 10 bytes: each just over it
    lambda k: (f"key number {k:06d}", 1.5),  # a long key
    lambda k: (f"k{k:010d}", 2**40 + k),  # a key just too long to be light
    lambda k: (k, (2**40, 2**41, -(2**42))),  # plain ints at their longest in a tuple
])
def test_many_entries_at_the_edge_of_light_are_bounded(make):
    """Per-entry slack hides small errors in one entry; a thousand entries do not."""
    built = Map(make(k) for k in range(1000))
    _bound_holds(built)
    _bound_holds(built._set_plain("extra", 0))  # unknown bounds: measured from the entries
    grown = Map({"x": 0})  # all light: the fast path that reads only the two numbers
    for k in range(1000):
        grown = grown.set(*make(k))
    _bound_holds(grown)


def test_core_overwrites_of_a_text_key_keep_the_learnt_bound():
    m = Map({"seed": 1})._set_plain("a long text key", 0)
    _weigh(m)
    for k in range(200):
        m = m._set_plain("a long text key", (k, "v" * 30))
    _bound_holds(m)
    assert _weigh(m)[0] - exact_size(m)[0] < 64  # and it did not creep up either


def test_updates_give_back_exactly_what_they_took():
    """No drift: setting a key and setting it back, or adding a text key and deleting
    it, restores the bounds exactly (a bound that crept down would one day pass a value
    the encoding refuses; one that crept up would measure for nothing)."""
    light = Map({"a": 1, "b": "eight ch", 5: 2.5, 6: None})  # nothing heavy: (0, 0)
    base = light.update({"blob": b"x" * 100, "t": (1, 2, "three")})
    assert (light._b, light._i) == (0, 0) and base._b > 0
    values_ = [(1, 2, (3, "four")), "a longer text value", 7, "ninechars", None,
               b"bytes" * 9, 8, Map({"x": (1,)}), Linear((1, 2)), 2**70, 7, "short",
               "ninechars", b"ninebytes", 2.5, None]
    for m0 in (light, base):
        for key in ("a", "blob", "t", 5, "new text key", "ninechars", "eight ch",
                    b"new bytes key"):
            for v in values_:
                m = m0.set(key, v)
                _bound_holds(m)
                for w in values_:
                    m = m.set(key, w)
                    _bound_holds(m)
                back = m.set(key, m0[key]) if key in m0 else m.delete(key)
                assert (back._b, back._i) == (m0._b, m0._i), (key, v)
    grown = base
    for k in range(1000):  # int keys give back at least 0: they may only creep up
        grown = grown.set(k, (k, "x" * 20)).delete(k)
    _bound_holds(grown)
    assert grown._b >= base._b


def test_a_map_state_over_the_item_limit_but_small_in_bytes_fails():
    state = Map((k, None) for k in range(ITEMS_MAX // 2 + 1))  # 1,000,003 items, ~3 MB
    r = run_batch(_set_step(state), 0, [Message("in", "go")])
    assert not r.ok and r.failure.path == "$.state" and "items" in r.failure.detail


def test_an_output_too_large_fails_the_batch_and_names_it():
    sender = avm.Behavior("sender")

    @sender.init
    def _init(state, args):
        return [], Map({"to": args})

    @sender.on("go")
    def _go(state, n):
        return [(state["to"], ("data", b"\0" * n))], state

    @sender.on("two")
    def _two(state, n):
        return [(state["to"], ("data", b"\0" * n)), (state["to"], ("data", b"\0" * n))], state

    sink = avm.Behavior("sink")

    @sink.init
    def _sink_init(state, args):
        return [], ()

    @sink.on("data")
    def _data(state, blob):
        return [], (*state, len(blob))

    sim = avm.Sim(seed=1)
    sim.spawn("sink", sink)
    sim.spawn("s", sender, sim.cap("sink"))
    sim.send(sim.cap("s"), ("go", BYTES_MAX))
    sim.run()
    (f,) = sim.failures("s")
    assert f.rule == "value" and f.path == "$.outputs[0].content"
    half = (BYTES_MAX - BATCH_SLACK_BYTES) // 2 + 10
    sim.send(sim.cap("s"), ("two", half))  # each fits; together they do not
    sim.send(sim.cap("s"), ("go", 10))  # and the machine keeps working
    sim.run()
    fs = sim.failures("s")
    assert len(fs) == 2 and fs[1].path == "$.outputs"
    assert sim.state("sink") == (10,)


def test_an_oversized_state_fails_its_batch_on_a_host_which_keeps_running(tmp_path):
    """Before the check, the state reached the store's commit, which refused it: the
    host stopped for good. Now the batch fails and everything else goes on."""
    grow = avm.Behavior("grow")

    @grow.init
    def _init(state, args):
        return [], Map({"blob": b"", "n": 0})

    @grow.on("blob")
    def _blob(state, n):
        return [], state.set("blob", b"\0" * n)

    @grow.on("inc")
    def _inc(state):
        return [], state.set("n", state["n"] + 1)

    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[grow]) as h:
            cap = await h.spawn("g", grow)
            await h.send(cap, ("blob", BYTES_MAX + 1))
            await h.send(cap, ("inc",))
            await h.idle()
            state = await h.state("g")
            failures = h.store.failures()
        return state, failures

    state, failures = asyncio.run(asyncio.wait_for(go(), 120))
    assert state["n"] == 1 and state["blob"] == b""
    assert any(f[4] == "value" and "bytes" in f[5] for f in failures), failures


def test_check_size_is_exact_at_the_edges():
    assert check_size(_blob_state(BYTES_MAX)) == _blob_state(BYTES_MAX)
    with pytest.raises(ValueLimitError) as e:
        check_size(_blob_state(BYTES_MAX + 1), "$.here")
    assert e.value.path == "$.here"
    assert check_size(Linear(1)) == Linear(1)
