"""Issue 5, item 10: ``check_value`` accepts exactly what ``encode`` can store.

Before, the simulator accepted values that ``encode`` refuses (an int over 1024 bytes,
text with a lone surrogate, nesting deeper than 64, a map with more than 16 keys of one
hash), so the reference semantics accepted runs that a host would refuse at commit, and
``encode(sim.snapshot())`` then failed. Now each such value fails the batch that made it
(rule ``value``, with a path), or is refused by ``Sim.submit``/``Map.set``/``Map()``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avm
from avm import Behavior, Linear, Map, Sim
from avm.core import codec, values
from avm.core.caps import commons_cap
from avm.core.errors import CodecError, ValueRuleError
from avm.core.machine import Message, run_batch
from avm.core.nest import ROUTE, inner_network, inner_state
from avm.core.nest import nest as nest_network
from avm.core.values import (
    DEPTH_MAX,
    INT_BYTES_MAX,
    KEY_HASH_COLLISIONS_MAX,
    Fraction,
    Sealer,
    ValueLimitError,
    check_value,
    record,
)

P = 2**61 - 1  # ints equal modulo P share one Python hash
TOP = 2 ** (8 * INT_BYTES_MAX)  # the first magnitude over the size limit
BIG = 2**64  # the first int the codec writes as a bignum (a tag: one level)


@record(name="tests.trust_limits.Cell")
class Cell:
    inner: Any


def nest(depth: int, leaf: Any = 0) -> Any:
    v = leaf
    for _ in range(depth):
        v = (v,)
    return v


def encodes(v: Any) -> bool:
    """Can the codec store ``v`` and load it back? Asked of the codec's own checks (what
    ``encode`` does after ``check_value``), so that comparing with ``check_value`` is not
    comparing it with itself."""
    try:
        data = codec._encode_trusted(v)
    except CodecError:
        return False
    assert codec.encode(codec.decode(data)) == data
    return True


def accepted(v: Any) -> bool:
    try:
        check_value(v)
    except ValueRuleError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# The attack: a machine keeps or echoes what a host could never store
# ---------------------------------------------------------------------------------------

HUGE = 2**20000
SURROGATE = "\ud800"
DEEP = nest(200)


MAKERS = {
    "huge": lambda: 2**20000,
    "surrogate": lambda: chr(0xD800),
    "deep": lambda: nest(200),
    "deep65": lambda: nest(65),
    "fraction": lambda: Fraction(2**9000, 3),
    "sealer": lambda: Sealer(chr(0xDC00)),
    "key": lambda: Map({"ok": 1}).set(2**9000, 1),
}


def _machine() -> tuple[Sim, Any, Any]:
    b = Behavior("t")

    @b.on("echo")
    def echo(s, reply, v):
        return [(reply, v)], s

    @b.on("keep")
    def keep(s, v):
        return [], v

    @b.on("make")
    def make(s, what, reply):
        v = MAKERS[what]()
        return ([], v) if reply is None else ([(reply, v)], s)

    sim = Sim(seed=1)
    sim.spawn("t", b, 0)
    sim.run()
    return sim, sim.cap("t"), sim.probe("p")


@pytest.mark.parametrize("what", sorted(MAKERS))
@pytest.mark.parametrize("where", ["state", "out"])
def test_a_step_that_makes_an_unstorable_value_fails_its_batch(what, where):
    sim, cap, probe = _machine()
    before = sim.state("t")
    sim.send(cap, ("make", what, None if where == "state" else probe))
    sim.run()
    fails = sim.failures("t")
    assert fails, f"{what} in the {where} was accepted"
    f = fails[-1]
    assert f.rule == "value", f
    if what != "key":  # Map.set raised inside the step: no path of the step's result
        assert f.path.startswith("$.state" if where == "state" else "$.outputs[0].content"), f
    assert sim.state("t") == before  # nothing of the batch was applied
    assert sim.state("p") == ()  # nothing was sent
    avm.encode(sim.snapshot())  # the network is still storable


@pytest.mark.parametrize("value", [HUGE, SURROGATE, DEEP, (1, ("a", SURROGATE)), (Linear(HUGE),)],
                         ids=["int", "text", "deep", "text-inside", "int-in-linear"])
def test_submit_refuses_unstorable_contents_with_a_path(value):
    sim, cap, probe = _machine()
    for msg in [("echo", probe, value), ("keep", value)]:
        with pytest.raises(ValueRuleError) as e:
            sim.send(cap, msg)
        assert e.value.path.startswith("$[0].content")
    assert sim.run().quiescent
    assert sim.failures("t") == []
    avm.encode(sim.snapshot())


@pytest.mark.parametrize("value", [HUGE, SURROGATE], ids=["int", "text"])
def test_submit_refuses_an_unstorable_atom_content(value):
    sim, cap, _ = _machine()
    with pytest.raises(ValueRuleError) as e:
        sim.send(cap, value)
    assert e.value.path == "$[0].content"


def test_the_attack_script_leaves_a_storable_network():
    sim, cap, probe = _machine()
    for v in [-0.0, float("nan"), HUGE, SURROGATE, DEEP, Fraction(1, 3)]:
        for msg in [("echo", probe, v), ("keep", v)]:
            try:
                sim.send(cap, msg)
            except ValueRuleError:
                continue
            sim.run()
    avm.encode(sim.snapshot())  # before: "surrogates not allowed"


# ---------------------------------------------------------------------------------------
# The limits, one by one, at their edges
# ---------------------------------------------------------------------------------------


def test_the_limits_are_the_codecs():
    assert DEPTH_MAX == codec.DEFAULT_LIMITS.depth_max
    assert INT_BYTES_MAX == codec.INT_BYTES_MAX
    assert KEY_HASH_COLLISIONS_MAX == codec.KEY_HASH_COLLISIONS_MAX
    assert issubclass(ValueLimitError, ValueRuleError)
    assert issubclass(ValueLimitError, CodecError)


def _int_id(n: int) -> str:
    return f"{'-' if n < 0 else ''}{abs(n).bit_length()}bits"


@pytest.mark.parametrize("n", [TOP, -TOP - 1, HUGE, -HUGE], ids=_int_id)
def test_ints_over_the_limit_are_refused_everywhere(n):
    for ok in [TOP - 1, -TOP, BIG - 1, BIG, -BIG, -BIG - 1, 0, -1]:  # the edges stay values
        assert accepted(ok) and encodes(ok)
        assert accepted((ok,)) and accepted(Map({ok: ok})) and accepted(Fraction(ok, 7))
    for v in [n, (1, n), Linear(n), Cell(n), Fraction(n, 3), Fraction(3, n)]:
        with pytest.raises(ValueLimitError, match="exceeds the limit"):
            check_value(v)
        assert not encodes(v)
    with pytest.raises(ValueLimitError):
        Map({"a": n})
    with pytest.raises(ValueLimitError):
        Map().set(n, 1)
    with pytest.raises(ValueLimitError):
        Map().set("a", (n,))
    with pytest.raises(ValueLimitError):
        Map().update({(1, n): 2})


@pytest.mark.parametrize("s", ["\ud800", "a\udfff", "é\ud83d", "\udc00x"])
def test_text_with_lone_surrogates_is_refused_everywhere(s):
    for ok in ["", "ascii", "é", "日本語", "\U0001f600"]:  # any text with a UTF-8 form
        assert accepted(ok) and encodes(ok) and accepted(Map({ok: ok}))
    for v in [s, (s,), Linear(s), Cell(s), Sealer(s), commons_cap(bytes(32), s),
              Cell((1, s))]:
        with pytest.raises(ValueLimitError, match="surrogate"):
            check_value(v)
        assert not encodes(v)
    with pytest.raises(ValueLimitError, match="surrogate"):
        Sealer("x").seal(s)
    for build in [lambda: Map({s: 1}), lambda: Map().set(s, 1), lambda: Map().set(1, s),
                  lambda: Map({1: 2}).update({(s,): 1})]:
        with pytest.raises(ValueLimitError):
            build()
    with pytest.raises(ValueRuleError):
        record(name=s)(type("Named", (), {"__annotations__": {"x": int}}))


@pytest.mark.parametrize("wrap, cost", [
    (lambda v: (v,), 1),
    (lambda v: Map({"k": v}), 1),
    (Linear, 1),
    (lambda v: Sealer("s").seal(v), 2),
    (Cell, 2),
], ids=["tuple", "map", "linear", "sealed", "record"])
def test_depth_is_counted_as_the_codec_counts_it(wrap, cost):
    # The deepest value of each kind is a value and encodes; one level more is neither.
    levels = DEPTH_MAX // cost
    leaf_room = DEPTH_MAX - levels * cost
    v: Any = nest(leaf_room)
    for _ in range(levels):
        v = wrap(v)
    assert accepted(v) and encodes(v)
    deeper = (v,) if leaf_room == 0 else None
    if deeper is None:
        w: Any = nest(leaf_room + 1)
        try:
            for _ in range(levels):
                w = wrap(w)
        except ValueLimitError:  # Map refuses to be built that deep
            return
        deeper = w
    with pytest.raises(ValueLimitError, match="deeper than 64"):
        check_value(deeper)
    assert not encodes(deeper)


def test_keys_count_in_their_maps_depth():
    assert Map({nest(63): 1})._d == 64 and encodes(Map({nest(63): 1}))
    with pytest.raises(ValueLimitError, match="deeper"):
        Map({nest(64): 1})
    with pytest.raises(ValueLimitError, match="deeper"):
        Map({"a": 1}).set(nest(64), 1)
    assert accepted(nest(1, Map({nest(62): 1}))) and not accepted(nest(2, Map({nest(62): 1})))
    assert not encodes(nest(2, Map({nest(62): 1})))
    assert Map({Cell(nest(61)): 1})._d == 64
    with pytest.raises(ValueLimitError, match="deeper"):
        Map({Cell(nest(62)): 1})


def test_a_bignum_and_a_fraction_are_levels_too():
    assert accepted(nest(63, BIG)) and encodes(nest(63, BIG))
    assert not accepted(nest(64, BIG)) and not encodes(nest(64, BIG))
    assert accepted(nest(64, BIG - 1))
    assert accepted(nest(62, Fraction(1, 3))) and not accepted(nest(63, Fraction(1, 3)))
    assert accepted(nest(61, Fraction(BIG, 3))) and not accepted(nest(62, Fraction(BIG, 3)))
    assert not encodes(nest(62, Fraction(BIG, 3)))


def test_a_deep_value_fails_with_the_path_where_it_crosses_the_limit():
    with pytest.raises(ValueLimitError) as e:
        check_value(nest(65))
    assert e.value.path == "$" + "[0]" * 64


def test_maps_remember_their_depth_and_are_trusted_in_o1():
    inner = Map({"a": nest(10)})
    assert inner._d == 11
    assert Map({"x": inner})._d == 12
    assert Map({nest(5): 1})._d == 6
    big = Map({i: (i,) for i in range(50_000)})
    assert big._d == 2
    calls = []
    real = values._walk_entries
    values._walk_entries = lambda m, room: calls.append(room) or real(m, room)
    try:
        for _ in range(100):
            check_value(big)
            check_value(nest(62, big))
            Map({"big": big}).set("again", big)
        assert calls == []  # never re-walked
        with pytest.raises(ValueLimitError):
            check_value(nest(63, big))
    finally:
        values._walk_entries = real


def test_a_stale_depth_bound_never_refuses_a_storable_value():
    # Deleting the deepest entry leaves the bound high: the checker then counts exactly.
    m = Map({"deep": nest(40), "flat": 1}).delete("deep")
    assert m._d == 41
    v = nest(63, m)
    assert encodes(v) and accepted(v)
    assert not accepted(nest(64, m)) and not encodes(nest(64, m))
    # and a map the core updated without measuring
    core = Map()._set_plain("k", nest(3))
    assert core._d > DEPTH_MAX
    assert accepted(nest(60, core)) and encodes(nest(60, core))
    assert not accepted(nest(61, core)) and not encodes(nest(61, core))


def test_map_set_refuses_going_too_deep():
    m = Map({"a": 1})
    m.set("b", nest(63))
    with pytest.raises(ValueLimitError, match="deeper"):
        m.set("b", nest(64))
    with pytest.raises(ValueLimitError, match="deeper"):
        m.set(nest(64), 1)
    with pytest.raises(ValueLimitError, match="deeper"):
        m.update({"b": nest(64)})


def test_maps_refuse_more_colliding_keys_than_the_codec():
    for n in (KEY_HASH_COLLISIONS_MAX, KEY_HASH_COLLISIONS_MAX + 1):
        _colliding_maps(n)


def _colliding_maps(n: int) -> None:
    same_hash = [k * P + 1 for k in range(n)]  # one Python hash
    same_fold = [(i << 32) | i for i in range(n)]  # other hashes, one 32-bit fold
    plain = [f"k{i}" for i in range(40)]
    for keys in (same_hash, same_fold):
        builds = [
            lambda ks: Map({k: 0 for k in ks + plain}),
            lambda ks: Map(plain=1).update({k: 0 for k in ks}),
            lambda ks: _set_all(Map({p: 0 for p in plain}), ks),
            lambda ks: _set_all(Map(), ks[::-1]),
        ]
        for build in builds:
            if n > KEY_HASH_COLLISIONS_MAX:
                with pytest.raises(ValueLimitError, match="share one hash"):
                    build(keys)
            else:
                m = build(keys)
                assert accepted(m) and encodes(m)


def _set_all(m: Map, keys: list) -> Map:
    for k in keys:
        m = m.set(k, k)
    return m


def test_a_full_bucket_takes_updates_but_no_new_key():
    m = Map({k * P + 1: 0 for k in range(KEY_HASH_COLLISIONS_MAX)})
    m = m.set(P + 1, 5).set(1, 6)  # existing keys: fine
    assert m[P + 1] == 5 and len(m) == KEY_HASH_COLLISIONS_MAX
    with pytest.raises(ValueLimitError, match="17 keys share one hash"):
        m.set(16 * P + 1, 0)
    m = m.delete(1).set(16 * P + 1, 0)  # one out, another in
    assert encodes(m)


def test_run_batch_checks_the_final_state_and_every_output():
    def bump(msg, s):
        return (), s * msg.content

    r = run_batch(bump, 2, [Message(None, 2**4000)] * 3)
    assert not r.ok and r.failure.rule == "value" and r.failure.path == "$.state"
    # a big intermediate state that the batch does not commit is not stored: fine
    r = run_batch(lambda m, s: ((), s * m.content), 1, [Message(None, HUGE), Message(None, 0)])
    assert r.ok and r.state == 0
    cap = commons_cap(bytes(32), "null")
    r = run_batch(lambda m, s: ([(cap, m.content)], s), 0, [Message(None, 1), Message(None, HUGE)])
    assert not r.ok and r.failure.index == 1 and r.failure.path == "$.outputs[0].content"
    r = run_batch(lambda m, s: ((), s + SURROGATE), "", [Message(None, 1)])
    assert not r.ok and r.failure.rule == "value"


# ---------------------------------------------------------------------------------------
# The property: check_value accepts iff encode succeeds, near every limit
# ---------------------------------------------------------------------------------------

INTS = st.sampled_from([0, -1, BIG - 1, BIG, -BIG, -BIG - 1, TOP - 1, TOP, -TOP, -TOP - 1])
TEXT = st.one_of(
    st.text(max_size=6),
    st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=4),
)
LEAF = st.one_of(INTS, TEXT, st.none(), st.floats(), st.binary(max_size=3),
                 INTS.map(lambda n: Fraction(n, 3) if n else Fraction(1, 3)),
                 TEXT.map(Sealer), st.just(()), st.just(Map()))

LAYERS = ["tuple", "map", "key", "linear", "record", "sealed", "stale", "core", "pair"]


def _layer(kind: str, v: Any, junk: int) -> Any:
    if kind == "tuple":
        return (v,)
    if kind == "map":
        return Map({"k": v})
    if kind == "key":  # as a key, where the value can be one
        try:
            return Map({(v,): 1})
        except ValueLimitError:
            raise
        except ValueRuleError:
            return (v,)
    if kind == "linear":
        return Linear(v)
    if kind == "record":
        return Cell(v)
    if kind == "sealed":
        return Sealer("s").seal(v)
    if kind == "stale":  # a map whose bound is higher than its depth
        return Map({"v": v, "junk": nest(junk)}).delete("junk")
    if kind == "core":  # a map the core updated without measuring
        return Map()._set_counted("v", v, check_value(v))
    return (1, v, "x")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LEAF, st.integers(55, 70), st.lists(st.sampled_from(LAYERS), min_size=1, max_size=8),
       st.integers(0, 62))
def test_check_value_accepts_exactly_what_encode_stores(leaf, depth, kinds, junk):
    v = leaf
    try:
        for i in range(depth):
            v = _layer(kinds[i % len(kinds)], v, junk)
    except ValueLimitError:
        # Map and Sealer refuse to be built around what cannot be stored; the same
        # nesting of tuples then cannot be stored either.
        return
    assert accepted(v) == encodes(v)


@settings(max_examples=200, deadline=None)
@given(st.integers(14, 19), st.lists(st.sampled_from(["hash", "fold", "plain"]), min_size=1),
       st.sampled_from(["new", "set", "update"]))
def test_maps_refuse_exactly_the_key_sets_the_codec_refuses(n, mix, how):
    keys: list = []
    for i in range(n):
        kind = mix[i % len(mix)]
        keys.append(i * P + 7 if kind == "hash" else (i << 32) | i if kind == "fold" else f"p{i}")
    keys = list(dict.fromkeys(keys))
    expected = codec.map_key_problem(keys)
    try:
        if how == "new":
            m = Map({k: 0 for k in keys})
        elif how == "set":
            m = _set_all(Map(), keys)
        else:
            m = Map().update({k: 0 for k in keys})
    except ValueLimitError as e:
        assert expected is not None, e
        return
    assert expected is None
    assert encodes(m)


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.one_of(INTS, TEXT, st.none(), st.booleans(), st.floats(), st.binary(max_size=4)),
    lambda ch: st.one_of(
        st.lists(ch, max_size=3).map(tuple), ch.map(Linear), ch.map(Cell),
        st.dictionaries(st.text(max_size=3), ch, max_size=3).map(lambda d: _try_map(d))),
    max_leaves=30))
def test_random_values_agree(v):
    assert accepted(v) == encodes(v)


def _try_map(d: dict) -> Any:
    try:
        return Map(d)
    except ValueLimitError:
        return tuple(d.values())


# ---------------------------------------------------------------------------------------
# Maps the core updates without measuring: a nested network's state
# ---------------------------------------------------------------------------------------


def _nested() -> tuple[Sim, Any]:
    def build(sim: Sim) -> None:
        b = Behavior("deep")

        @b.on("keep")
        def keep(s, n):
            return [], nest(n)

        sim.spawn("d", b, 0)

    outer = Sim(seed=2)
    outer.spawn("box", nest_network(build, name="box"), 3)
    outer.run()
    return outer, outer.cap("box", (ROUTE, "d", None))


def test_a_nested_network_is_exactly_as_deep_as_its_encoding():
    # Inside a nest, a state sits several levels down the nesting machine's state, so the
    # deepest inner state the nest can store is shallower than 64: the check must find
    # exactly where, through the core's maps whose bound it does not track.
    outer, cap = _nested()
    results = {}
    for n in range(50, 67):
        failed = len(outer.failures("box"))
        outer.send(cap, ("keep", n))
        outer.run()
        state = outer.state("box")
        results[n] = (inner_state(state, "d") == nest(n), len(outer.failures("box")) > failed)
        avm.encode(state)  # whatever happened, the nesting machine's state is storable
    deepest = max(n for n, (kept, _) in results.items() if kept)
    assert 50 < deepest < DEPTH_MAX
    for n, (kept, nest_failed) in results.items():
        if n <= deepest:
            assert kept and not nest_failed
        elif n <= DEPTH_MAX:  # the inner network took it; the nest's state could not hold it
            assert not kept and nest_failed
            assert outer.failures("box")[-1].rule == "value"
        else:  # the inner network refused it already
            assert not kept and not nest_failed
    # (net,) nests exactly as deep as the nesting machine's state Map({"net": net})
    net = inner_network(outer.state("box"))
    addr = net.names["d"]
    for n, ok in [(deepest, True), (deepest + 1, False)]:
        rec = avm.replace_fields(net.machines[addr], state=nest(n))
        v = (avm.replace_fields(net, machines=net.machines.set(addr, rec)),)
        assert accepted(v) == encodes(v) == ok


def test_a_nested_step_does_not_rewalk_the_inner_network():
    outer, cap = _nested()
    outer.send(cap, ("keep", 3))
    outer.run()
    calls = []
    real = values._walk_entries
    values._walk_entries = lambda m, room: calls.append(len(m)) or real(m, room)
    try:
        for i in range(20):
            outer.send(cap, ("keep", i % 5))
            outer.run()
    finally:
        values._walk_entries = real
    assert not outer.failures("box")
    # the core's maps carry a learnt bound from update to update: at most the few maps
    # whose new entries were too big to measure cheaply are descended into again
    assert sum(calls) < 20 * 5, calls


def _codec_depth(v: Any) -> int:
    """How deep the codec says ``v`` nests: the least depth_max its encode accepts."""
    for k in range(DEPTH_MAX + 1):
        try:
            codec.encode(v, codec.Limits(depth_max=k))
        except CodecError:
            continue
        return k
    raise AssertionError("deeper than the limit")


def test_every_value_type_measures_its_depth_as_the_codec_does():
    from avm.core.caps import Self

    examples = [row.example() for row in values.VALUE_TYPES.values() if row.example is not None]
    examples += [Cell(nest(3)), Cell(BIG), Fraction(BIG, 3), Fraction(-BIG - 1, 7),
                 commons_cap(bytes(32), "random", (1, (2, (3,)))), Self(bytes(32), 7),
                 Sealer("s").seal(nest(5)), Linear(Map({"a": nest(2)})), Map({nest(4): BIG}),
                 (), Map(), nest(10, BIG), Map({"k": Map({"j": ()})})]
    assert len(examples) > 20
    for v in examples:
        assert values._depth(v) == _codec_depth(v), v
        assert accepted(nest(DEPTH_MAX - _codec_depth(v), v))
        assert not accepted(nest(DEPTH_MAX - _codec_depth(v) + 1, v))
