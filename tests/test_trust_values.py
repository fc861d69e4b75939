"""Issue 5, value side: real immutability, exact types, one table of value types,
conservation by what a value *is*, avm.Fraction, records as tuples, and the mutants of
the substructural fast paths (items 2, 3, 4, 10, 13, 15; decisions D1, D2, D3, D5)."""

from __future__ import annotations

import dataclasses
import fractions
import math
from dataclasses import field
from typing import Any, ClassVar

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import avm
from avm.core import codec, values
from avm.core.caps import Capability, Keyring, SealingKey, Self, SivSealer, seal_context
from avm.core.commons import reflect
from avm.core.errors import SubstructuralError, UsageError, ValueRuleError
from avm.core.machine import Message, _same_substructure, run_batch
from avm.core.netvalue import Batch, new_batch
from avm.core.values import (
    LINEAR,
    VALUE_TYPES,
    Affine,
    Fraction,
    Linear,
    Map,
    Relevant,
    Sealed,
    Sealer,
    Unsealer,
    check_conservation,
    check_value,
    display,
    item_identity,
    kind_of,
    order_key,
    record,
    record_fields,
    replace_fields,
    substructural_items,
    value_type_for_tag,
)

ADDR = bytes(range(32))
KEY = SealingKey.from_seed(b"trust-values")
RING = Keyring(ADDR, KEY)


@record(name="tests.trust_values.Box")
class Box:
    item: Any
    note: str = ""


@record(name="tests.trust_values.Pt")
class Pt:
    x: Any
    y: Any


@record(name="tests.trust_values.Other")
class Other:
    x: Any
    y: Any


def a_cap(ctx: Any = "ctx", priority: float = 0.0) -> Capability:
    return seal_context(ADDR, KEY, ctx, priority)


def samples() -> list:
    """One live instance of every tuple-based value type."""
    siv = SivSealer(bytes(64))
    return [
        Box(Linear(1)), Map({"a": 1}), Linear(1), Affine(2), Relevant(3),
        Sealer("s").seal(1), siv.seal(Linear(5)), Sealer("s"), Unsealer("s"),
        a_cap(), a_cap(Linear(1)), Self(ADDR, 0, KEY), Fraction(1, 3),
    ]


# -- items 2 and 4, D1/D2: immutable for real ----------------------------------------------


@pytest.mark.parametrize("v", samples(), ids=lambda v: type(v).__name__)
def test_no_value_can_be_rewritten_in_place(v):
    before = codec.encode(v) if type(v) is not Self else (v.address, v.keyver)
    assert not hasattr(v, "__dict__")
    for name in ("value", "item", "_m", "_subs", "_tok", "name", "sealer", "payload", "kind",
                 "sealed", "priority", "keyver", "address", "_held", "numerator", "x", "extra"):
        with pytest.raises((AttributeError, TypeError)):
            object.__setattr__(v, name, 0)
        with pytest.raises((AttributeError, TypeError)):
            object.__delattr__(v, name)
    for other in (Linear, Affine, Map, tuple, Box, Fraction):
        with pytest.raises((AttributeError, TypeError)):
            object.__setattr__(v, "__class__", other)
    assert v.__class__ is type(v)
    after = codec.encode(v) if type(v) is not Self else (v.address, v.keyver)
    assert after == before


def test_a_record_count_cannot_be_hidden_and_no_record_keeps_extra_state():
    box = Box(Linear("coin"))
    assert check_value(box) == 1
    with pytest.raises(AttributeError):
        box.__dict__["_avm_n"] = 0  # item 4: today this hides the coin from the check
    with pytest.raises(AttributeError):
        object.__setattr__(box, "_avm_n", 0)
    assert check_value(box) == 1 and kind_of(box) == LINEAR


def test_a_step_that_tries_to_hide_a_linear_value_fails_and_keeps_nothing():
    """The step drops the coin after trying to make its box look empty; the batch fails
    (the write raises) and no attribute survives on the state."""
    state = Map({"box": Box(Linear("coin"))})

    def sneaky(msg, st):
        b = st["box"]
        try:
            b.__dict__["_avm_n"] = 0
        except AttributeError:
            pass
        try:
            object.__setattr__(b, "extra", "kept across rollback")
        except AttributeError:
            pass
        return [], Map({"box": Box(None), "other": b.note})

    r = run_batch(sneaky, state, [Message("ctx", "go")])
    assert not r.ok and r.failure.rule == "substructural"
    assert not hasattr(state["box"], "extra")


def test_fractions_are_avm_fractions_and_python_fractions_are_refused():
    assert avm.Fraction is Fraction
    with pytest.raises(ValueRuleError) as ei:
        check_value((1, fractions.Fraction(1, 3)))
    assert ei.value.path == "$[1]" and "avm.Fraction" in ei.value.detail
    with pytest.raises(ValueRuleError):
        Map({"f": fractions.Fraction(1, 2)})
    f = Fraction(2, 6)
    py = fractions.Fraction(1, 3)
    assert (f.numerator, f.denominator) == (1, 3) and check_value(f) == 0
    assert f == py and py == f and hash(f) == hash(py)
    assert Fraction(4, 2) == 2 and hash(Fraction(4, 2)) == hash(2)
    assert Fraction(1, 2) == 0.5 and hash(Fraction(1, 2)) == hash(0.5)
    assert f != (1, 3) and (1, 3) != f
    for got, want in [(f + 1, py + 1), (1 + f, 1 + py), (f - py, 0), (f * 3, 1), (f / 2, py / 2),
                      (2 / f, 6), (f ** 2, py ** 2), (-f, -py), (abs(-f), py), (f // 1, 0),
                      (Fraction(7, 2) % 1, fractions.Fraction(1, 2)), (py + f, 2 * py)]:
        assert got == want
        if type(got) in (Fraction, fractions.Fraction):
            assert type(got) is Fraction, (got, want)
    assert f < 0.5 and f > 0 and 0.5 > f and f <= py and not bool(Fraction(0))
    assert float(f) == 1 / 3 and int(Fraction(7, 2)) == 3 and math.floor(Fraction(-1, 2)) == -1
    assert str(f) == "1/3" and repr(f) == "Fraction(1, 3)"
    assert Fraction("0.25") == Fraction(1, 4) and Fraction(0.5) == Fraction(1, 2)
    # tag 30, lowest terms, decodes to avm.Fraction
    assert codec.encode(f).hex() == "d81e820103"
    back = codec.decode(codec.encode(f))
    assert type(back) is Fraction and back == f
    assert Map({f: 1})[py] == 1


# -- item 10: exact types, and check_value accepts what encode stores ----------------------


class MyLinear(Linear):
    pass


class MyMap(Map):
    pass


class MyTuple(tuple):
    pass


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyBytes(bytes):
    pass


def _subclass_values() -> list:
    my_map = tuple.__new__(MyMap, tuple.__iter__(Map({"a": 1})))  # Map() makes only Maps
    return [MyLinear(1), my_map, MyTuple((1,)), MyStr("x"), MyInt(3), MyBytes(b"x")]


@pytest.mark.parametrize("v", _subclass_values(), ids=lambda v: type(v).__name__)
def test_subclasses_of_value_types_are_not_values(v):
    with pytest.raises(ValueRuleError) as ei:
        check_value(("ok", v))
    assert ei.value.path == "$[1]"
    assert "subclass" in ei.value.detail or "not an AVM value" in ei.value.detail
    with pytest.raises(avm.AvmError):
        codec.encode(("ok", v))


def _forged() -> list:
    """Values built with tuple.__new__, bypassing constructors: the walk checks their shape."""
    new = tuple.__new__
    good = a_cap()
    fields = list(good)
    caps = []
    for i, bad in [(0, b"short"), (1, True), (1, 1.0), (1, -1), (2, True), (2, 4), (3, 0),
                   (3, 2.0), (3, float("nan")), (4, "text"), (5, ("svc",)), (6, [])]:
        f = list(fields)
        f[i] = bad
        caps.append(new(Capability, f))
    return [
        *caps,
        new(Capability, fields[:6]),
        new(Self, (b"x", 0, None)),
        new(Self, (ADDR, True, None)),
        new(Pt, (1,)),
        new(Pt, (1, 2, 3)),
        new(Linear, ()),
        new(Linear, (1, 2)),
        new(Sealed, ("s", (Linear(1),), False, 0, ())),  # claims unrestricted
        new(Sealed, ("s", 1, False, 3, ())),  # claims linear
        new(Sealed, ("s", "not bytes", True, 0, ())),
        new(Sealed, ("s", b"x", True, True, ())),
        new(Sealer, (1,)),
        new(Unsealer, ()),
        new(Fraction, (2, 4)),
        new(Fraction, (1, 0)),
        new(Fraction, (1, -3)),
        new(Fraction, (1.0, 3)),
        new(Map, ({"a": 1}, values._EMPTY_IMAP, None)),
        new(Map, (values._EMPTY_IMAP, None, None)),
        new(Map, ()),
    ]


@pytest.mark.parametrize("v", _forged(), ids=lambda v: f"{type(v).__name__}")
def test_forged_shapes_are_refused_cleanly(v):
    with pytest.raises(ValueRuleError) as ei:
        check_value((v,))
    assert ei.value.path.startswith("$[0]")
    with pytest.raises(avm.AvmError):
        codec.encode((v,))


_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=4),
    st.binary(max_size=4), st.floats(allow_nan=False),
    st.fractions().map(lambda f: Fraction(f.numerator, f.denominator)),
    st.sampled_from([Sealer("s"), Unsealer("u"), fractions.Fraction(1, 2), [1], {"a": 1},
                     MyLinear(1), MyTuple(()), MyStr("s"), object()]),
)
_vals = st.recursive(_leaf, lambda ch: st.one_of(
    st.lists(ch, max_size=3).map(tuple),
    st.tuples(ch).map(lambda t: Linear(t[0])),
    st.tuples(ch, ch).map(lambda t: Pt(*t)),
    st.tuples(ch).map(lambda t: Sealer("s").seal(t[0]) if _is_value(t[0]) else t[0]),
    st.dictionaries(st.text(max_size=3), ch, max_size=3).map(
        lambda d: Map(d) if all(_is_value(x) for x in d.values()) else d),
), max_leaves=8)


def _is_value(v: Any) -> bool:
    try:
        check_value(v)
        return True
    except ValueRuleError:
        return False


@settings(max_examples=200, deadline=None)
@given(_vals)
def test_check_value_accepts_exactly_what_encode_stores(v):
    ok = _is_value(v)
    try:
        data = codec.encode(v)
        stored = True
    except avm.AvmError:
        stored = False
    assert ok == stored, v
    if stored:
        assert codec.decode(data) == v


def test_reflect_knows_every_value_type_including_sealers():
    assert reflect(Sealer("s"))["type"] == "sealer"
    assert reflect(Unsealer("s"))["type"] == "unsealer"
    assert reflect(Box(1))["name"] == "tests.trust_values.Box"
    assert reflect(Linear(1)) == Map({"kind": "linear", "type": "linear"})
    assert reflect(Fraction(1, 3))["type"] == "fraction"


# -- item 15: one table, every dispatcher knows every registered type ----------------------


def test_every_dispatcher_knows_every_registered_type():
    for t, row in list(VALUE_TYPES.items()):
        assert row.type is t
        v = row.example() if row.example is not None else None
        if row.shape == values._RECORD:
            try:
                v = t(*(None for _ in record_fields(t)))
            except Exception:  # its __post_init__ wants more than None
                continue
        assert v is not None or t is type(None), f"{t.__name__} has no example"
        assert type(v) is t
        n = check_value(v)  # the walk
        assert len(substructural_items(v)) == n
        kind_of(v)
        for item in substructural_items(v):
            item_identity(item)
        r = reflect(v)  # reflect
        assert r["type"] == row.name
        assert isinstance(display(v), str)  # display
        order_key(v)  # order
        data = codec.encode(v)  # codec, both ways
        back = codec.decode(data)
        assert codec.encode(back) == data
        # (a record name registered again by a reloaded module decodes to the newest class)
        assert type(back) is t or values.record_name(type(back)) == values.record_name(t)
        if row.tag is not None:
            assert value_type_for_tag(row.tag) is not None


def test_the_table_covers_the_public_value_types():
    for t in (type(None), bool, int, float, str, bytes, tuple, Fraction, Map, Linear, Affine,
              Relevant, Sealed, Sealer, Unsealer, Capability, Self, Box, Batch):
        assert t in VALUE_TYPES, t
    assert fractions.Fraction not in VALUE_TYPES


# -- item 3, D5: counted by what they are ----------------------------------------------------


def test_a_rebuilt_linear_capability_is_a_copy():
    cap = codec.decode(codec.encode(a_cap(Linear("one-shot"))))  # as received: nothing held
    assert cap.kind == LINEAR
    rebuilt = Capability(*cap[:6])
    decoded = codec.decode(codec.encode(cap))
    assert rebuilt is not cap and decoded is not cap
    assert item_identity(rebuilt) == item_identity(cap) == item_identity(decoded)
    for copy in (rebuilt, decoded):
        with pytest.raises(SubstructuralError) as ei:
            check_conservation([("$.msg", cap)], [("$.state", (cap, copy))])
        assert "2 times" in ei.value.detail
    # keeping only the rebuilt one is keeping the capability (it is the same item)
    check_conservation([("$.msg", cap)], [("$.state", rebuilt)])


def test_a_rebuilt_crypto_sealed_linear_is_a_copy():
    s = SivSealer(bytes(range(64))).seal(Linear(1))
    copy = Sealed(s.sealer, s.payload, True, s.kind)
    with pytest.raises(SubstructuralError):
        check_conservation([("$.msg", s)], [("$.state", (s, copy))])


def test_a_step_cannot_redeem_a_linear_capability_twice_by_rebuilding_it():
    cap = codec.decode(codec.encode(a_cap(Linear("one-shot"))))
    target = a_cap("target")

    def copier(msg, st):
        c = msg.content
        return [(target, c), (target, Capability(*c[:6])),
                (target, codec.decode(codec.encode(c)))], st

    r = run_batch(copier, None, [Message("ctx", cap)])
    assert not r.ok and r.failure.rule == "substructural"
    assert "may not be copied" in r.failure.detail


# -- item 13: mutants of the fast paths ------------------------------------------------------


def _keep_step(new_state):
    return lambda msg, st: ([], new_state(st))


def test_overwriting_a_linear_entry_with_a_plain_value_changes_the_token():
    m = Map({"tok": Linear(1), "n": 0})
    for plain_write in (lambda m: m.set("tok", 0), lambda m: m._set_plain("tok", 0),
                        lambda m: m._set_counted("tok", 0, 0), lambda m: m.update(tok=0),
                        lambda m: m.delete("tok")):
        m2 = plain_write(m)
        assert m2._tok is not m._tok
        assert not _same_substructure(m, m2)
        r = run_batch(_keep_step(plain_write), m, [Message("ctx", "go")])
        assert not r.ok and r.failure.rule == "substructural"
    # a plain key keeps the token (the fast path is real)
    assert m.set("n", 1)._tok is m._tok and _same_substructure(m, m.set("n", 1))


def test_same_substructure_compares_by_identity_not_equality():
    lin = Linear(1)
    m = Map({"tok": lin})
    rebuilt = m.set("tok", Linear(1))  # equal, not the same item
    assert rebuilt["tok"] == lin and rebuilt._subs == m._subs
    assert not _same_substructure(m, rebuilt)
    r = run_batch(_keep_step(lambda st: st.set("tok", Linear(1))), m, [Message("ctx", "go")])
    assert not r.ok and r.failure.rule == "substructural" and "dropped" in r.failure.detail
    same = m.set("tok", lin)
    assert _same_substructure(m, same)
    assert run_batch(_keep_step(lambda st: st.set("tok", st["tok"])), m, [Message("c", 1)]).ok


def test_no_substructural_count_goes_stale_after_replace_fields():
    b = new_batch("s", ADDR, 1, (0, 0), 0.0, ((a_cap(), 1),))
    assert check_value(b) == 0
    b2 = replace_fields(b, messages=((a_cap(), Linear(1)),))
    assert check_value(b2) == 1 and check_value(b) == 0
    assert check_value(replace_fields(b2, messages=())) == 0
    box = Box(Linear(1))
    assert check_value(box) == 1
    assert check_value(replace_fields(box, item=2)) == 0
    assert check_value(avm.core.netvalue.with_(Box(2), item=Affine(1))) == 1
    # the network's inbox counts what a batch really holds
    m = Map()._set_counted("k", b2, check_value(b2))
    assert m.substructural_count == 1


_keys = st.sampled_from(["a", "b", "c", 1, (2, "x")])
_plain = st.one_of(st.integers(-2, 2), st.text(max_size=2), st.none())
_op = st.one_of(
    st.tuples(st.just("plain"), _keys, _plain),
    st.tuples(st.just("new"), _keys, st.sampled_from([Linear, Affine, Relevant])),
    st.tuples(st.just("move"), _keys, _keys),
    st.tuples(st.just("copy"), _keys, _keys),
    st.tuples(st.just("rebuild"), _keys, st.none()),
    st.tuples(st.just("delete"), _keys, st.none()),
    st.tuples(st.just("nest"), _keys, _keys),
    st.tuples(st.just("plain_fast"), _keys, _plain),
)


def _census(m: Map) -> list:
    """Every item of a map, ignoring its substructural index."""
    out: list = []
    for v in m._m.values():
        out.extend(substructural_items(v))
    return out


def _apply(m: Map, op: tuple) -> Map:
    kind, k, x = op
    if kind == "plain":
        return m.set(k, x)
    if kind == "plain_fast":
        return m.update([(k, x)])
    if kind == "new":
        return m.set(k, x(k))
    if kind == "move" and k in m:
        return m.delete(k).set(x, m[k]) if k != x else m
    if kind == "copy" and k in m:
        return m.set(x, m[k])
    if kind == "rebuild" and k in m and type(m[k]) in values.SUBSTRUCTURAL_TYPES:
        return m.set(k, type(m[k])(m[k].value))
    if kind == "delete":
        return m.discard(k)
    if kind == "nest" and k in m:
        return m.set(x, (m[k], "n"))
    return m


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=6), st.lists(_op, min_size=1, max_size=6))
def test_conservation_fast_path_agrees_with_a_full_census(setup, edits):
    start = Map({"seed": Linear("seed")})
    for op in setup:
        start = _apply(start, op)
    # a committed state never holds a copy of a linear or affine item
    items = [x for x in _census(start) if x.kind & 1]
    assume(len({id(x) for x in items}) == len(items))
    end = start
    for op in edits:
        end = _apply(end, op)
    for m in (start, end):
        assert m.substructural_count == len(_census(m))
        assert set(m._subs) == {k for k, v in m._m.items() if substructural_items(v)}
    r = run_batch(lambda msg, st: ([], end), start, [Message("ctx", "go")])
    try:
        check_conservation([("$.state_before", start)], [("$.state", end)],
                           _census(start), _census(end))
        expected = True
    except SubstructuralError:
        expected = False
    assert r.ok == expected, (r.failure, start, end)
    if _same_substructure(start, end):
        assert sorted(map(id, _census(start))) == sorted(map(id, _census(end)))


# -- records ---------------------------------------------------------------------------------


@record(name="tests.trust_values.Full")
class Full:
    """A record using every declaration feature."""

    a: int
    b: tuple = ()
    c: Map = field(default_factory=Map)
    LIMIT: ClassVar[int] = 10

    def total(self) -> int:
        return self.a + len(self.b)

    @property
    def double(self) -> int:
        return 2 * self.a

    def __post_init__(self) -> None:
        if not (type(self.a) is int and self.a <= self.LIMIT):
            raise ValueError("a is an int up to LIMIT")


def test_records_keep_the_dataclass_api():
    f = Full(1)
    assert f == Full(a=1) == Full(1, (), Map()) and hash(f) == hash(Full(1))
    assert repr(f) == "Full(a=1, b=(), c=Map({}))"
    assert f.total() == 1 and f.double == 2 and Full.LIMIT == 10
    assert Full.__match_args__ == ("a", "b", "c")
    match f:
        case Full(1, b=()):
            pass
        case _:
            pytest.fail("class pattern did not match")
    with pytest.raises(ValueError):
        Full(11)
    with pytest.raises(ValueError):
        replace_fields(f, a=11)  # __post_init__ runs on replace too
    with pytest.raises(TypeError):
        Full()
    with pytest.raises(TypeError):
        Full(1, q=2)
    with pytest.raises(UsageError):
        replace_fields(f, q=2)
    with pytest.raises(UsageError):
        replace_fields((1, 2), a=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.a = 2  # type: ignore[misc]
    assert replace_fields(f, b=(1,)) == Full(1, (1,)) and f == Full(1)
    assert Full(1).c is not Full(1).c or Full(1).c == Map()
    assert record_fields(Full) == ("a", "b", "c")


def test_records_are_type_sensitive():
    p = Pt(1, 2)
    assert p != (1, 2) and (1, 2) != p and not (p == (1, 2))
    assert p != Other(1, 2) and Other(1, 2) != p
    m = Map({(1, 2): "tuple", p: "pt", Other(1, 2): "other"})
    assert (m[(1, 2)], m[Pt(1, 2)], m[Other(1, 2)]) == ("tuple", "pt", "other")
    with pytest.raises(TypeError):
        _ = p < Pt(2, 3)  # type: ignore[operator]
    assert bool(record(name="tests.trust_values.Empty")(type("Empty", (), {}))())


def test_record_declarations_that_would_break_the_rules_are_refused():
    class Eq:
        x: int

        def __eq__(self, other):  # structural equality is not negotiable
            return True

    class Sub(Box):  # type: ignore[misc]
        pass

    class InitFalse:
        x: int = field(init=False, default=0)

    for c in (Eq, Sub, InitFalse):
        with pytest.raises(ValueRuleError):
            record(name=f"tests.trust_values.bad.{c.__name__}")(c)


# -- Map: order cache and NaN keys -----------------------------------------------------------


def test_map_order_is_fixed_and_its_cache_is_bounded_and_outside_the_value():
    m = Map({"b": 1, "a": 2, 3: 0, (1,): 0, None: 0})
    assert list(m) == [None, 3, "a", "b", (1,)] == list(m.keys())
    assert [v for v in m.values()] == [0, 0, 2, 1, 0]
    for i in range(values._ORDER_ENTRIES_MAX + 50):
        list(Map({i: i, -i: 0}))
    assert len(values._ORDER) <= values._ORDER_ENTRIES_MAX
    assert values._order_keys <= values._ORDER_KEYS_MAX
    assert list(m) == [None, 3, "a", "b", (1,)]


def test_nan_is_refused_anywhere_in_a_map_key():
    nan = float("nan")
    for key in (nan, (1, nan), Pt(nan, 1), Pt(1, Map({"k": nan}))):
        with pytest.raises(ValueRuleError):
            Map().set(key, 1)
        with pytest.raises(ValueRuleError):
            Map({key: 1})
    assert Map().set(Pt(1, nan == nan), 1)  # no NaN: fine
