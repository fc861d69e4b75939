"""Values: the persistent Map, value validation with paths, records, substructural kinds,
discretionary sealers, and the conservation rule (DESIGN section 2)."""

from __future__ import annotations

import dataclasses
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avm.core.errors import SubstructuralError, UnsealError, ValueRuleError
from avm.core.values import (
    AFFINE,
    LINEAR,
    RELEVANT,
    UNRESTRICTED,
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
    kind_of,
    record,
    record_class,
    record_name,
    registered_records,
    sealer_pair,
    substructural_items,
)


@record(name="tests.values.Point")
class Point:
    x: object
    y: object


@record(name="tests.values.Order")
class Order:
    id: int
    items: object


# ---------------------------------------------------------------------------------------
# Map
# ---------------------------------------------------------------------------------------


def test_map_construction_forms_agree():
    from_dict = Map({"a": 1, "b": 2})
    from_pairs = Map([("a", 1), ("b", 2)])
    from_kw = Map(a=1, b=2)
    mixed = Map({"a": 1}, b=2)
    assert from_dict == from_pairs == from_kw == mixed
    assert len(from_dict) == 2
    assert Map() == Map({}) == Map([])
    assert len(Map()) == 0


def test_map_reading():
    m = Map({"a": 1, ("t", 2): None})
    assert m["a"] == 1
    assert m[("t", 2)] is None
    assert "a" in m and "z" not in m
    assert m.get("z") is None and m.get("z", 7) == 7
    assert sorted(map(repr, m)) == sorted(map(repr, ["a", ("t", 2)]))
    with pytest.raises(KeyError):
        m["z"]


def test_map_set_returns_new_map_and_keeps_old():
    m = Map({"a": 1})
    m2 = m.set("b", 2)
    m3 = m2.set("a", 10)
    assert m == Map({"a": 1})
    assert m2 == Map({"a": 1, "b": 2})
    assert m3 == Map({"a": 10, "b": 2})
    assert type(m2) is Map and type(m3) is Map


def test_map_delete_and_discard():
    m = Map({"a": 1, "b": 2})
    assert m.delete("a") == Map({"b": 2})
    assert m == Map({"a": 1, "b": 2})
    with pytest.raises(KeyError):
        m.delete("zz")
    assert m.discard("zz") is m
    assert m.discard("b") == Map({"a": 1})


def test_map_update_forms():
    m = Map({"a": 1})
    assert m.update({"b": 2}) == Map({"a": 1, "b": 2})
    assert m.update([("a", 5), ("c", 3)]) == Map({"a": 5, "c": 3})
    assert m.update(c=3) == Map({"a": 1, "c": 3})
    assert m.update() == m
    # the last binding of a repeated key wins, as in dict.update
    assert m.update([("k", 1), ("k", 2)])["k"] == 2
    assert m == Map({"a": 1})


def test_map_equality_and_hash_ignore_insertion_order():
    a = Map({"x": 1, "y": (2, 3), 4: b"z"})
    b = Map([(4, b"z"), ("y", (2, 3))]).set("x", 1)
    c = Map().update({"y": (2, 3)}).set(4, b"z").set("x", 0).set("x", 1)
    assert a == b == c
    assert hash(a) == hash(b) == hash(c)
    assert len({a, b, c}) == 1
    assert a != a.set("x", 2)
    assert a != a.delete("x")
    assert Map({"a": Map({"b": 1})}) == Map({"a": Map({"b": 1})})
    assert Map({"a": Map({"b": 1})}) != Map({"a": Map({"b": 2})})


def test_map_is_immutable():
    m = Map({"a": 1})
    with pytest.raises(AttributeError):
        m.x = 1
    with pytest.raises(AttributeError):
        m._m = None
    with pytest.raises(TypeError):
        m["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        del m["a"]  # type: ignore[attr-defined]
    assert m == Map({"a": 1})


def test_map_one_key_update_shares_structure():
    """Updating one key of a 100,000-entry map allocates O(log n), not a copy."""
    n = 100_000
    m = Map({i: i for i in range(n)})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        m2 = m.set(n // 2, "changed")
        m3 = m2.delete(7)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A copy of 100k entries costs megabytes; a path copy costs a few hundred bytes.
    assert peak < 64 * 1024, f"one-key update allocated {peak} bytes"
    assert m[n // 2] == n // 2 and 7 in m and len(m) == n
    assert m2[n // 2] == "changed" and len(m2) == n
    assert 7 not in m3 and len(m3) == n - 1


@pytest.mark.parametrize(
    "build",
    [
        lambda: Map({"orders": (1, 2, 3, [4])}),
        lambda: Map(orders=(1, 2, 3, [4])),
        lambda: Map([("orders", (1, 2, 3, [4]))]),
        lambda: Map().set("orders", (1, 2, 3, [4])),
        lambda: Map().update({"orders": (1, 2, 3, [4])}),
        lambda: Map().update(orders=(1, 2, 3, [4])),
    ],
    ids=["dict", "kwargs", "pairs", "set", "update", "update-kw"],
)
def test_invalid_value_in_map_names_its_path(build):
    with pytest.raises(ValueRuleError) as ei:
        build()
    assert ei.value.path == "$['orders'][3]"
    assert "list" in ei.value.detail and "tuple" in ei.value.detail
    assert "$['orders'][3]" in str(ei.value)


def test_invalid_value_deep_in_map_record_names_its_path():
    with pytest.raises(ValueRuleError) as ei:
        Map({"orders": (Order(1, ("ok",)), Order(2, ("ok", {"bad": 1})))})
    assert ei.value.path == "$['orders'][1].items[1]"
    assert "dict" in ei.value.detail


@pytest.mark.parametrize(
    "key",
    [
        [1],
        {"a": 1},
        {1},
        bytearray(b"x"),
        Map(),
        Linear(1),
        Affine(1),
        (1, [2]),
        Point(Linear(1), 0),
        object(),
    ],
    ids=[
        "list",
        "dict",
        "set",
        "bytearray",
        "Map",
        "Linear",
        "Affine",
        "tuple-list",
        "record-linear",
        "object",
    ],
)
def test_map_refuses_bad_keys(key):
    with pytest.raises(ValueRuleError):
        Map().set(key, 1)
    with pytest.raises(ValueRuleError):
        Map([(key, 1)])


def test_map_accepts_value_keys():
    keys = [
        None,
        True,
        3,
        -(2**80),
        1.5,
        Fraction(1, 3),
        "s",
        b"b",
        (1, ("x", b"y")),
        Point(1, "a"),
    ]
    m = Map((k, i) for i, k in enumerate(keys))
    for i, k in enumerate(keys):
        assert m[k] == i


def test_map_substructural_index_follows_updates():
    lin = Linear("tok")
    m = Map({"a": lin, "b": 1, "c": (Affine(1), Relevant(2))})
    assert set(m.substructural_keys()) == {"a", "c"}
    assert m.substructural_count == 3
    assert check_value(m) == 3
    m2 = m.set("a", 5)
    assert set(m2.substructural_keys()) == {"c"}
    m3 = m2.delete("c")
    assert list(m3.substructural_keys()) == [] and m3.substructural_count == 0
    m4 = m3.update({"b": Map({"x": Linear(0)})})
    assert set(m4.substructural_keys()) == {"b"} and m4.substructural_count == 1
    assert [type(x) for x in substructural_items(m4)] == [Linear]
    # the original is untouched
    assert set(m.substructural_keys()) == {"a", "c"}
    assert any(x is lin for x in substructural_items(m))


def test_map_repeated_key_keeps_only_the_last_binding_in_the_index():
    m = Map([("k", Linear(1)), ("k", 2)])
    assert m["k"] == 2
    assert list(m.substructural_keys()) == [] and check_value(m) == 0
    m = Map([("k", 2), ("k", Affine(1))])
    assert list(m.substructural_keys()) == ["k"] and check_value(m) == 1
    m = Map({"k": Linear(1)}).update([("k", Linear(2)), ("k", 3)])
    assert list(m.substructural_keys()) == [] and m.substructural_count == 0


# A model-based property: a sequence of operations on Map behaves like a dict, and each
# old version keeps its contents (persistence) and its substructural index.

_small_keys = st.sampled_from(["a", "b", "c", 1, 2, (1, "x")])
_plain = st.one_of(st.integers(-3, 3), st.text(max_size=2), st.none())
_subby = st.one_of(
    _plain.map(Linear),
    _plain.map(Affine),
    _plain.map(Relevant),
    st.tuples(_plain, _plain.map(Linear)),
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _small_keys, st.one_of(_plain, _subby)),
        st.tuples(st.just("discard"), _small_keys, st.none()),
        st.tuples(st.just("update"), _small_keys, st.one_of(_plain, _subby)),
    ),
    max_size=30,
)


def _count_subs(v):
    return len(substructural_items(v))


@settings(max_examples=200)
@given(_ops)
def test_map_model(ops):
    m = Map()
    model: dict = {}
    history = [(m, dict(model))]
    for op, k, v in ops:
        if op == "set":
            m = m.set(k, v)
            model[k] = v
        elif op == "update":
            m = m.update([(k, v)])
            model[k] = v
        else:
            m = m.discard(k)
            model.pop(k, None)
        history.append((m, dict(model)))
    for mm, dd in history:
        assert dict(mm.items()) == dd
        assert len(mm) == len(dd)
        assert mm == Map(dd) and hash(mm) == hash(Map(dd))
        assert set(mm.substructural_keys()) == {k for k, v in dd.items() if _count_subs(v)}
        assert mm.substructural_count == sum(_count_subs(v) for v in dd.values())


# ---------------------------------------------------------------------------------------
# check_value
# ---------------------------------------------------------------------------------------


def test_check_value_accepts_values_and_counts_items():
    s, _ = sealer_pair("s")
    good = [
        None,
        True,
        0,
        2**100,
        -1.5,
        float("nan"),
        Fraction(2, 3),
        "",
        b"",
        (),
        (1, (2, ())),
        Map({"a": (1, 2)}),
        Point(1, (2, Map())),
        s,
        Unsealer("s"),
        s.seal((1, 2)),
    ]
    for v in good:
        assert check_value(v) == 0, v
    assert check_value(Linear(1)) == 1
    assert check_value((Linear(1), Affine(Relevant(2)))) == 3
    assert check_value(Point(Linear(1), Map({"k": Affine(0)}))) == 2
    assert check_value(s.seal(Linear(1))) == 1


def _a_function():
    return 1


class _Plain:
    pass


@dataclasses.dataclass(frozen=True)
class _Unregistered:
    x: int


@pytest.mark.parametrize(
    "bad, word",
    [
        ([4], "list"),
        ({"a": 1}, "dict"),
        ({1, 2}, "set"),
        (frozenset({1}), "frozenset"),
        (bytearray(b"x"), "bytearray"),
        (lambda: 1, "callable"),
        (_a_function, "callable"),
        (_Unregistered(1), "@avm.record"),
        (_Plain(), "_Plain"),
        ((x for x in ()), "generator"),
        (1j, "complex"),
        (Map, "callable"),
    ],
    ids=[
        "list",
        "dict",
        "set",
        "frozenset",
        "bytearray",
        "lambda",
        "function",
        "unregistered-dataclass",
        "object",
        "generator",
        "complex",
        "class",
    ],
)
def test_check_value_rejects_non_values_with_path(bad, word):
    with pytest.raises(ValueRuleError) as ei:
        check_value(bad)
    assert ei.value.path == "$"
    assert word in ei.value.detail
    # the same value buried in a structure is reported where it is
    with pytest.raises(ValueRuleError) as ei:
        check_value(("ok", Point(0, (1, 2, 3, bad))))
    assert ei.value.path == "$[1].y[3]"
    with pytest.raises(ValueRuleError) as ei:
        check_value(Point(0, (bad,)), "$.state")
    assert ei.value.path == "$.state.y[0]"
    # a Map refuses it on the way in, naming the key
    with pytest.raises(ValueRuleError) as ei:
        Map({"orders": (1, 2, 3, Point(bad, 0))})
    assert ei.value.path == "$['orders'][3].x"


def test_check_value_rejects_open_file(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("x")
    with open(p) as f:
        with pytest.raises(ValueRuleError) as ei:
            check_value((1, (f,)))
        assert ei.value.path == "$[1][0]"
        with pytest.raises(ValueRuleError) as ei:
            Map({"orders": (1, 2, 3, f)})
        assert ei.value.path == "$['orders'][3]"


def test_check_value_paths_through_wrappers():
    s = Sealer("s")
    with pytest.raises(ValueRuleError) as ei:
        check_value((Linear((0, [1])),))
    assert ei.value.path == "$[0].value[1]"
    with pytest.raises(ValueRuleError) as ei:
        check_value(Affine(Point(1, {2})))
    assert ei.value.path == "$.value.y"
    # a Sealed built directly (bypassing Sealer.seal) still refuses a bad payload
    with pytest.raises(ValueRuleError) as ei:
        Sealed("s", (1, [2]))
    assert ei.value.path == "$[1]"
    with pytest.raises(ValueRuleError):
        s.seal([1])


def test_check_value_uses_given_root_path():
    with pytest.raises(ValueRuleError) as ei:
        check_value((1, [2]), "$.out[2]")
    assert ei.value.path == "$.out[2][1]"


def test_check_value_refuses_absurd_nesting_cleanly():
    v: object = 0
    for _ in range(100_000):
        v = (v,)
    with pytest.raises(ValueRuleError):
        check_value(v)


# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------


def test_records_are_frozen_values():
    p = Point(1, (2, 3))
    assert check_value(p) == 0
    assert p == Point(1, (2, 3)) and hash(p) == hash(Point(1, (2, 3)))
    assert p != Point(1, (2, 4))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    m = Map({"p": p}).set(p, "as key")
    assert m[Point(1, (2, 3))] == "as key"


def test_record_registration():
    assert record_name(Point) == "tests.values.Point"
    assert record_class("tests.values.Point") is Point
    assert registered_records()["tests.values.Order"] is Order
    assert record_class("tests.values.NoSuch") is None


def test_record_refuses_mutable_dataclass():
    @dataclasses.dataclass
    class Mutable:
        x: int

    with pytest.raises(ValueRuleError):
        record(Mutable)


def test_record_name_clash_refused():
    @record(name="tests.values.Clash")
    class A:
        x: int

    with pytest.raises(ValueRuleError):

        @record(name="tests.values.Clash")
        class B:
            x: int

    assert record_class("tests.values.Clash") is A


def test_record_with_bad_field_is_rejected():
    with pytest.raises(ValueRuleError) as ei:
        check_value(Order(1, [1, 2]))
    assert ei.value.path == "$.items"


# ---------------------------------------------------------------------------------------
# Substructural kinds
# ---------------------------------------------------------------------------------------


def test_wrapper_kinds_and_identity():
    assert (Linear(1).kind, Affine(1).kind, Relevant(1).kind) == (LINEAR, AFFINE, RELEVANT)
    assert Linear(1) == Linear(1) and hash(Linear(1)) == hash(Linear(1))
    assert Linear(1) != Affine(1) and Affine(1) != Relevant(1)
    assert Linear(1) != Linear(2)
    with pytest.raises(AttributeError):
        Linear(1).value = 2


@pytest.mark.parametrize(
    "v, kind",
    [
        (1, UNRESTRICTED),
        ((1, "a", Map()), UNRESTRICTED),
        (Linear(0), LINEAR),
        (Affine(0), AFFINE),
        (Relevant(0), RELEVANT),
        ((Affine(0), Relevant(0)), LINEAR),
        ((Affine(0), Affine(1)), AFFINE),
        (Relevant(Affine(0)), LINEAR),
        (Affine(Affine(0)), AFFINE),
        (Map({"a": Relevant(0), "b": 2}), RELEVANT),
        (Point(Affine(0), Map({"r": Relevant(1)})), LINEAR),
        (Sealer("s").seal(Affine(0)), AFFINE),
        (Sealer("s").seal((1, 2)), UNRESTRICTED),
    ],
)
def test_kind_of_combines(v, kind):
    assert kind_of(v) == kind


@given(st.lists(st.sampled_from([UNRESTRICTED, AFFINE, RELEVANT, LINEAR]), max_size=8))
def test_kind_of_is_bitwise_or(kinds):
    wrap = {UNRESTRICTED: lambda x: x, AFFINE: Affine, RELEVANT: Relevant, LINEAR: Linear}
    v = tuple(wrap[k](i) for i, k in enumerate(kinds))
    expected = 0
    for k in kinds:
        expected |= k
    assert kind_of(v) == expected


def test_substructural_items_lists_every_occurrence():
    x = Linear(1)
    inner = Affine(2)
    outer = Relevant(inner)
    items = substructural_items((x, x, outer, Map({"k": x})))
    assert [id(i) for i in items] == [id(x), id(x), id(outer), id(inner), id(x)]
    assert substructural_items((1, "a", Map({"a": 1}))) == []
    with pytest.raises(ValueRuleError):
        substructural_items((1, [2]))


def test_sealed_takes_the_kind_of_its_payload():
    s, u = sealer_pair("k")
    lin = Linear(1)
    sealed = s.seal((lin,))
    assert sealed.kind == LINEAR
    assert substructural_items(sealed)[0] is lin
    assert u.unseal(sealed)[0] is lin


# ---------------------------------------------------------------------------------------
# Discretionary sealers
# ---------------------------------------------------------------------------------------


def test_sealer_round_trip_and_refusals():
    s, u = sealer_pair("money")
    v = Map({"amount": 5})
    sealed = s.seal(v)
    assert u.unseal(sealed) == v
    assert sealed == s.seal(Map({"amount": 5}))
    assert sealed != Sealer("other").seal(v)
    assert "5" not in repr(sealed) and "money" in repr(sealed)
    with pytest.raises(UnsealError):
        Unsealer("other").unseal(sealed)
    with pytest.raises(UnsealError):
        u.unseal(v)
    with pytest.raises(UnsealError):
        u.unseal(Sealed("money", b"ciphertext", crypto=True))
    with pytest.raises(AttributeError):
        sealed.payload = 1
    with pytest.raises(AttributeError):
        s.name = "x"
    with pytest.raises(AttributeError):
        u.name = "x"
    assert Sealer("a") == Sealer("a") != Sealer("b")
    assert Unsealer("a") == Unsealer("a") != Unsealer("b")
    assert Sealer("a") != Unsealer("a")


# ---------------------------------------------------------------------------------------
# Conservation
# ---------------------------------------------------------------------------------------


def test_linear_kept_passes():
    lin = Linear("tok")
    check_conservation([("$.state", Map({"t": lin}))], [("$.state", Map({"moved": (lin,)}))])
    check_conservation([("$.msg", lin)], [("$.out[0]", (1, lin))])


def test_linear_dropped_fails_with_path():
    lin = Linear("tok")
    with pytest.raises(SubstructuralError) as ei:
        check_conservation([("$.msg", 1), ("$.state", Map({"t": lin}))], [("$.state", Map())])
    assert ei.value.path == "$.state['t']"
    assert "dropped" in ei.value.detail and "linear" in ei.value.detail


def test_linear_copied_fails_with_path():
    lin = Linear("tok")
    with pytest.raises(SubstructuralError) as ei:
        check_conservation([("$.msg", lin)], [("$.state", (0, lin)), ("$.out[0]", lin)])
    assert ei.value.path == "$.state[1]"
    assert "2 times" in ei.value.detail
    # a copy made inside one output counts too
    with pytest.raises(SubstructuralError):
        check_conservation([("$.msg", lin)], [("$.state", (lin, lin))])


def test_new_linear_copied_fails_and_created_once_passes():
    check_conservation([], [("$.state", Linear(1))])
    fresh = Linear(1)
    with pytest.raises(SubstructuralError):
        check_conservation([], [("$.state", (fresh, fresh))])


def test_affine_may_be_dropped_not_copied():
    a = Affine("a")
    check_conservation([("$.msg", a)], [("$.state", Map())])
    check_conservation([("$.msg", a)], [("$.state", a)])
    with pytest.raises(SubstructuralError) as ei:
        check_conservation([("$.msg", a)], [("$.state", Map({"x": a, "y": 1})), ("$.o", (a,))])
    assert ei.value.path == "$.state['x']"
    assert "affine" in ei.value.detail


def test_relevant_may_be_copied_not_dropped():
    r = Relevant("r")
    check_conservation([("$.msg", r)], [("$.state", (r, r, r))])
    with pytest.raises(SubstructuralError) as ei:
        check_conservation([("$.msg", (0, r))], [("$.state", (1,))])
    assert ei.value.path == "$.msg[1]"
    assert "relevant" in ei.value.detail


def test_rebuilt_equal_linear_counts_as_drop():
    lin = Linear(("coin", 5))
    rebuilt = Linear(("coin", 5))
    assert rebuilt == lin and rebuilt is not lin
    with pytest.raises(SubstructuralError) as ei:
        check_conservation([("$.msg", lin)], [("$.state", rebuilt)])
    assert ei.value.path == "$.msg"
    assert "dropped" in ei.value.detail


def test_unwrapping_a_container_drops_the_container():
    inner = Linear(1)
    outer = Linear(inner)
    check_conservation([("$.msg", outer)], [("$.state", outer)])
    with pytest.raises(SubstructuralError) as ei:
        check_conservation([("$.msg", outer)], [("$.state", inner)])
    assert ei.value.path == "$.msg"
    # dropping an affine container drops the linear inside it
    lin = Linear(2)
    with pytest.raises(SubstructuralError) as ei:
        check_conservation([("$.msg", Affine(lin))], [("$.state", None)])
    assert ei.value.path == "$.msg.value"
    # copying a relevant container copies the linear inside it
    r = Relevant(Linear(3))
    with pytest.raises(SubstructuralError):
        check_conservation([("$.msg", r)], [("$.state", (r, r))])


def test_precollected_items_are_used():
    lin = Linear(1)
    check_conservation([("$.msg", lin)], [("$.state", lin)], [lin], [lin])
    with pytest.raises(SubstructuralError):
        check_conservation([("$.msg", lin)], [("$.state", lin)], [lin], [])


def test_sealed_linear_is_conserved_through_the_seal():
    s, _ = sealer_pair("s")
    lin = Linear(1)
    check_conservation([("$.msg", lin)], [("$.state", s.seal(lin))])
    sealed = s.seal(lin)
    with pytest.raises(SubstructuralError):
        check_conservation([("$.msg", lin)], [("$.state", (sealed, sealed))])


# Property: random nested values holding substructural items. Outputs that rearrange the
# top-level pieces (permute, regroup, re-nest) always conserve; dropping or duplicating
# one piece fails exactly when the rule says: a drop fails iff the piece holds anything
# relevant or linear, a copy fails iff it holds anything affine or linear.

_WRAPPERS = (Linear, Affine, Relevant)


def _pieces():
    plain = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none())
    nested = st.recursive(
        plain,
        lambda ch: st.one_of(
            st.tuples(st.sampled_from(_WRAPPERS), ch).map(lambda t: t[0](t[1])),
            st.lists(ch, max_size=3).map(tuple),
            st.dictionaries(st.text(max_size=2), ch, max_size=3).map(Map),
            st.tuples(ch, ch).map(lambda t: Point(*t)),
        ),
        max_leaves=6,
    )
    # Every piece is a fresh substructural wrapper, so identities are never shared.
    return st.lists(
        st.tuples(st.sampled_from(_WRAPPERS), nested).map(lambda t: t[0](t[1])),
        min_size=1,
        max_size=6,
    )


def _arrange(pieces, order, cut):
    """Put pieces, in ``order``, into a state Map and a few outgoing messages."""
    ordered = [pieces[i] for i in order]
    cut = min(cut, len(ordered))
    state = Map({f"k{i}": p for i, p in enumerate(ordered[:cut])})
    out = [("$.state", state)]
    for j, p in enumerate(ordered[cut:]):
        out.append((f"$.out[{j}]", (j, Point(p, None))))
    return out


@settings(max_examples=200)
@given(_pieces(), st.data())
def test_conservation_property(pieces, data):
    inputs = [
        ("$.msg", tuple(pieces[: len(pieces) // 2])),
        ("$.state", Map({"held": tuple(pieces[len(pieces) // 2 :])})),
    ]
    n = len(pieces)
    order = data.draw(st.permutations(range(n)))
    cut = data.draw(st.integers(0, n))
    check_conservation(inputs, _arrange(pieces, order, cut))

    victim = data.draw(st.integers(0, n - 1))
    k = kind_of(pieces[victim])
    dropped = [i for i in order if i != victim]
    if k & RELEVANT:
        with pytest.raises(SubstructuralError):
            check_conservation(inputs, _arrange(pieces, dropped, cut))
    else:
        check_conservation(inputs, _arrange(pieces, dropped, cut))

    copied = [*order, victim]
    if k & AFFINE:
        with pytest.raises(SubstructuralError):
            check_conservation(inputs, _arrange(pieces, copied, cut))
    else:
        check_conservation(inputs, _arrange(pieces, copied, cut))

    # replacing a piece by an equal rebuilt copy is a drop of the original (and the
    # rebuilt one is a new item, which may appear once)
    rebuilt = type(pieces[victim])(pieces[victim].value)
    swapped = list(pieces)
    swapped[victim] = rebuilt
    if pieces[victim].kind & RELEVANT:
        with pytest.raises(SubstructuralError):
            check_conservation(inputs, _arrange(swapped, order, cut))
    else:
        check_conservation(inputs, _arrange(swapped, order, cut))
