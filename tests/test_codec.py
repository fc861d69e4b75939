"""The canonical codec: round trips, one encoding per value, bounded and total decoding
(DESIGN section 2, "Canonical encoding")."""

from __future__ import annotations

import hashlib
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avm.core import codec
from avm.core.codec import (
    TAG_AFFINE,
    TAG_LINEAR,
    TAG_RECORD,
    TAG_RELEVANT,
    TAG_SEALED,
    Limits,
    decode,
    encode,
    value_hash,
)
from avm.core.errors import CodecError, ValueRuleError
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
    Substructural,
    Unsealer,
    record,
    record_fields,
)


@record(name="tests.codec.Point")
class Point:
    x: object
    y: object


@record(name="tests.codec.Empty")
class Empty:
    pass


@record(name="tests.codec.Positive")
class Positive:
    n: int

    def __post_init__(self):
        if not (isinstance(self.n, int) and self.n > 0):
            raise ValueError("n must be a positive int")


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

names = st.text(max_size=8)

atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from([2**64 - 1, 2**64, -(2**64), -(2**64) - 1, 2**63, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-310, 5e-324, 65504.0]),
    st.fractions().map(lambda f: Fraction(f.numerator, f.denominator)),
    st.text(),
    st.binary(max_size=40),
    names.map(Sealer),
    names.map(Unsealer),
    st.builds(Empty),
)

# Map keys: hashable values. NaN is left out: a NaN key can never be looked up again.
key_atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.fractions().map(lambda f: Fraction(f.numerator, f.denominator)),
    st.text(max_size=6),
    st.binary(max_size=6),
)
keys = st.recursive(
    key_atoms,
    lambda ch: st.one_of(
        st.lists(ch, max_size=3).map(tuple),
        st.builds(Point, ch, ch),
    ),
    max_leaves=4,
)


def _crypto_sealed(t):
    name, payload, kind = t
    return Sealed(name, payload, crypto=True, kind=kind)


def values(max_leaves: int = 25):
    return st.recursive(
        atoms,
        lambda ch: st.one_of(
            st.lists(ch, max_size=5).map(tuple),
            st.dictionaries(keys, ch, max_size=5).map(Map),
            ch.map(Linear),
            ch.map(Affine),
            ch.map(Relevant),
            st.tuples(names, ch).map(lambda t: Sealer(t[0]).seal(t[1])),
            st.tuples(names, st.binary(min_size=1, max_size=24), st.sampled_from([0, 1, 2, 3])).map(
                _crypto_sealed
            ),
            st.builds(Point, ch, ch),
        ),
        max_leaves=max_leaves,
    )


def same(a, b) -> bool:
    """Strict structural equality: same types all the way down, NaN equals NaN, and
    -0.0 differs from 0.0 (they encode differently, so they are different values)."""
    if type(a) is not type(b):
        return False
    t = type(a)
    if t is float:
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if t is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if t is Map:
        if len(a) != len(b):
            return False
        for k, v in a.items():
            match = [k2 for k2 in b if same(k, k2)]
            if len(match) != 1 or not same(v, b[match[0]]):
                return False
        return True
    if isinstance(a, Substructural):
        return same(a.value, b.value)
    if t is Sealed:
        return (
            a.sealer == b.sealer
            and a.crypto == b.crypto
            and a.kind == b.kind
            and same(a.payload, b.payload)
        )
    if t in (Point, Empty, Positive):
        return all(same(getattr(a, f), getattr(b, f)) for f in record_fields(t))
    return a == b


# ---------------------------------------------------------------------------------------
# Round trips and canonical form
# ---------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(values())
def test_round_trip(v):
    b = encode(v)
    back = decode(b)
    assert same(back, v)
    assert encode(back) == b


@settings(max_examples=200)
@given(values())
def test_decoded_value_keeps_kind_and_item_count(v):
    from avm.core.values import check_value, kind_of

    back = decode(encode(v))
    assert kind_of(back) == kind_of(v)
    assert check_value(back) == check_value(v)


def test_known_encodings():
    # A few fixed points of the canonical form, so a change of rules is noticed.
    assert encode(None).hex() == "f6"
    assert encode(True).hex() == "f5"
    assert encode(0).hex() == "00"
    assert encode(23).hex() == "17"
    assert encode(24).hex() == "1818"
    assert encode(-1).hex() == "20"
    assert encode(2**64).hex() == "c249010000000000000000"
    assert encode(-(2**64) - 1).hex() == "c349010000000000000000"
    assert encode(1.5).hex() == "f93e00"
    assert encode(math.nan).hex() == "f97e00"
    assert encode(-0.0).hex() == "f98000"
    assert encode(math.inf).hex() == "f97c00"
    assert encode(1.1).hex() == "fb3ff199999999999a"
    assert encode(Fraction(1, 2)).hex() == "d81e820102"
    assert encode("a").hex() == "6161"
    assert encode(b"a").hex() == "4161"
    assert encode((1, 2)).hex() == "820102"
    assert encode(Map()).hex() == "a0"
    assert encode(Linear(1)).hex() == f"d9{TAG_LINEAR:04x}01"
    assert encode(Affine(1)).hex() == f"d9{TAG_AFFINE:04x}01"
    assert encode(Relevant(1)).hex() == f"d9{TAG_RELEVANT:04x}01"


def test_map_keys_sorted_length_first():
    # 1000 encodes as 1903e8 (3 bytes), "a" as 6161 (2 bytes): length-first puts "a"
    # first although 0x19 < 0x61 bytewise.
    assert encode(Map({1000: 0, "a": 0})).hex() == "a2616100" + "1903e800"
    assert encode(Map({"b": 0, "a": 0, 1: 0})).hex() == "a3" + "0100" + "616100" + "616200"


@settings(max_examples=200)
@given(st.dictionaries(keys, values(max_leaves=4), max_size=8), st.data())
def test_map_encoding_ignores_insertion_order(d, data):
    items = list(d.items())
    perm = data.draw(st.permutations(items))
    a = Map(items)
    b = Map(perm)
    c = Map()
    for k, v in reversed(perm):
        c = c.set(k, v)
    extra = ("extra key not in d",)
    e = Map(perm).set(extra, 1).delete(extra)
    f = Map().update(perm)
    assert encode(a) == encode(b) == encode(c) == encode(e) == encode(f)
    assert value_hash(a) == value_hash(b) == value_hash(c)


def test_equal_values_built_differently_encode_identically():
    assert encode(Fraction(2, 4)) == encode(Fraction(1, 2))
    assert encode(2**70 // 2**10) == encode(2**60)
    assert encode(Map(a=1).set("b", 2)) == encode(Map(b=2, a=1))
    assert encode(Map({"a": Map(x=1)})) == encode(Map().set("a", Map().set("x", 1)))
    assert encode(Sealer("s").seal((1, 2))) == encode(Sealer("s").seal(tuple([1, 2])))
    assert encode(float("nan")) == encode(-float("nan")) == encode(math.inf - math.inf)


def test_value_hash():
    v = Map({"a": (1, 2)})
    # Domain-separated (issue 5, item 8): a label in front of the encoding.
    assert value_hash(v) == hashlib.sha256(b"avm-value-v1\0" + encode(v)).digest()
    assert value_hash(v) != hashlib.sha256(encode(v)).digest()
    assert value_hash(v) != value_hash(v.set("a", (1, 3)))
    assert len(value_hash(None)) == 32


@pytest.mark.parametrize(
    "bad",
    [[1], {"a": 1}, {1}, (1, [2]), object(), lambda: 0, 1j, bytearray(b"x")],
    ids=["list", "dict", "set", "nested-list", "object", "lambda", "complex", "bytearray"],
)
def test_encode_refuses_non_values(bad):
    with pytest.raises((ValueRuleError, CodecError)):
        encode(bad)
    with pytest.raises((ValueRuleError, CodecError)):
        value_hash(bad)


def test_records_round_trip_and_refusals():
    p = Point(1, (Point("a", None), Map({"k": Linear(2)})))
    assert same(decode(encode(p)), p)
    assert decode(encode(Empty())) == Empty()
    assert decode(encode(Positive(3))) == Positive(3)

    def rec(name, *fields):
        # Build the record encoding by hand: tag TAG_RECORD over [name, fields...].
        body = encode((name, *fields))
        return bytes([0xD9]) + TAG_RECORD.to_bytes(2, "big") + body

    assert decode(rec("tests.codec.Point", 1, 2)) == Point(1, 2)
    with pytest.raises(CodecError, match="unknown record"):
        decode(rec("tests.codec.Nope", 1, 2))
    with pytest.raises(CodecError, match="fields"):
        decode(rec("tests.codec.Point", 1))
    with pytest.raises(CodecError, match="fields"):
        decode(rec("tests.codec.Point", 1, 2, 3))
    with pytest.raises(CodecError):
        decode(rec("tests.codec.Positive", -1))  # its __post_init__ refuses
    with pytest.raises(CodecError):
        decode(bytes([0xD9]) + TAG_RECORD.to_bytes(2, "big") + encode(()))
    with pytest.raises(CodecError):
        decode(bytes([0xD9]) + TAG_RECORD.to_bytes(2, "big") + encode((5, 1)))


def _sealed_bytes(*items):
    return bytes([0xD9]) + TAG_SEALED.to_bytes(2, "big") + encode(tuple(items))


def test_sealed_encoding_checks():
    s = Sealer("s").seal(Linear(1))
    assert same(decode(encode(s)), s)
    assert decode(_sealed_bytes("s", Linear(1), False, LINEAR)).kind == LINEAR
    cs = Sealed("n", b"\x00" * 20, crypto=True, kind=AFFINE)
    assert same(decode(encode(cs)), cs)
    # a discretionary seal whose declared kind disagrees with its payload
    with pytest.raises(CodecError, match="kind"):
        decode(_sealed_bytes("s", Linear(1), False, UNRESTRICTED))
    with pytest.raises(CodecError, match="kind"):
        decode(_sealed_bytes("s", 1, False, RELEVANT))
    with pytest.raises(CodecError):
        decode(_sealed_bytes("s", 1, False, 4))
    with pytest.raises(CodecError):
        decode(_sealed_bytes("s", "text", True, 0))  # crypto payload must be bytes
    with pytest.raises(CodecError):
        decode(_sealed_bytes(1, 1, False, 0))
    with pytest.raises(CodecError):
        decode(_sealed_bytes("s", 1, False))


# ---------------------------------------------------------------------------------------
# Decoding untrusted bytes is total: a value or a CodecError, never anything else
# ---------------------------------------------------------------------------------------


def _decode_or_codec_error(data: bytes) -> None:
    try:
        v = decode(data)
    except CodecError:
        return
    # Whatever decodes is canonical: it encodes back to exactly the input.
    assert encode(v) == data


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_codec_error(data):
    _decode_or_codec_error(data)


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(
            # fragments that look like CBOR headers, tags and project tags
            [
                b"\x80",
                b"\x81",
                b"\x82",
                b"\xa1",
                b"\xa2",
                b"\x01",
                b"\x20",
                b"\x40",
                b"\x60",
                b"\x61a",
                b"\xf4",
                b"\xf5",
                b"\xf6",
                b"\xf7",
                b"\xf9\x7e\x00",
                b"\xd8\x1e",
                b"\xc2",
                b"\xc3",
                b"\x41\x01",
                b"\x9f",
                b"\xff",
                b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
                b"\xd9\xaf\x01",
                b"\xd9\xaf\x02",
                b"\xd9\xaf\x04",
                b"\xd9\xaf\x07",
                b"\xd9\xaf\x08",
                b"\xd9\xaf\x09",
                b"\x64s\x00\x00\x00",
            ]
        ),
        max_size=12,
    ).map(b"".join)
)
def test_header_soup_decodes_or_codec_error(data):
    _decode_or_codec_error(data)


_mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete"]),
    st.integers(0, 10_000),
    st.integers(0, 255),
)


@settings(max_examples=300)
@given(values(max_leaves=12), st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_encodings_decode_or_codec_error(v, mutations):
    b = bytearray(encode(v))
    for op, pos, byte in mutations:
        if op == "insert":
            b.insert(pos % (len(b) + 1), byte)
        elif not b:
            continue
        elif op == "delete":
            del b[pos % len(b)]
        elif op == "flip":
            b[pos % len(b)] ^= 1 << (byte % 8)
        else:
            b[pos % len(b)] = byte
    _decode_or_codec_error(bytes(b))


@settings(max_examples=150)
@given(values(max_leaves=10))
def test_every_strict_prefix_and_any_suffix_is_refused(v):
    b = encode(v)
    for i in range(len(b)):
        with pytest.raises(CodecError):
            decode(b[:i])
    with pytest.raises(CodecError, match="trailing"):
        decode(b + b"\x00")
    with pytest.raises(CodecError):
        decode(b + b)


def test_decode_accepts_bytes_like_and_refuses_others():
    b = encode((1, "x"))
    assert decode(bytearray(b)) == (1, "x")
    assert decode(memoryview(b)) == (1, "x")
    for bad in ["text", None, 5, [1]]:
        with pytest.raises(CodecError):
            decode(bad)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="empty"):
        decode(b"")


# ---------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------


def _nest(depth: int, wrap):
    v: object = 0
    for _ in range(depth):
        v = wrap(v)
    return v


@pytest.mark.parametrize(
    "wrap, cost",
    [
        (lambda v: (v,), 1),
        (lambda v: Map({"k": v}), 1),
        (Linear, 1),
        (lambda v: Sealer("s").seal(v), 2),
        (lambda v: Point(v, 0), 2),
    ],
    ids=["tuple", "map", "linear", "sealed", "record"],
)
def test_depth_limit(wrap, cost):
    # Every container and every tag is one level: a tuple is one, a record (a tag over
    # an array) is two.
    for depth_max in (6, 64):
        limits = Limits(depth_max=depth_max)
        deepest = depth_max // cost
        v = _nest(deepest, wrap)
        assert same(decode(encode(v), limits), v)
        with pytest.raises(CodecError, match="deeper"):
            decode(encode(_nest(deepest + 1, wrap)), limits)


def test_depth_limit_exact_for_tuples():
    assert decode(encode(_nest(5, lambda v: (v,))), Limits(depth_max=5)) == _nest(5, lambda v: (v,))
    with pytest.raises(CodecError, match="deeper than 5"):
        decode(encode(_nest(6, lambda v: (v,))), Limits(depth_max=5))


def test_items_limit():
    v = tuple(range(9))  # ten items: the array and its nine elements
    assert decode(encode(v), Limits(items_max=10)) == v
    with pytest.raises(CodecError, match="items"):
        decode(encode(v), Limits(items_max=9))
    m = Map({i: i for i in range(5)})  # one map, five keys, five values
    assert decode(encode(m), Limits(items_max=11)) == m
    with pytest.raises(CodecError, match="items"):
        decode(encode(m), Limits(items_max=10))


def test_bytes_limit():
    b = encode(("x" * 100, b"y" * 100))
    assert decode(b, Limits(bytes_max=len(b))) == ("x" * 100, b"y" * 100)
    with pytest.raises(CodecError, match="exceeds"):
        decode(b, Limits(bytes_max=len(b) - 1))


@pytest.mark.parametrize(
    "data",
    [
        "9bffffffffffffffff",  # array of 2**64-1 items
        "9a000f424000",  # array of 1,000,000 items, one present
        "5bffffffffffffffff",  # byte string of 2**64-1 bytes
        "7a7fffffff61",  # text of 2**31-1 bytes
        "bbffffffffffffffff",  # map of 2**64-1 pairs
        "bb00000000001fffff0101",  # map of 2 million pairs, one present
        "81" * 200 + "00",  # 200 levels deep
        "d9af01" * 200 + "00",  # 200 nested Linear tags
        "8f" + "9bffffffffffffffff" * 15,  # fifteen huge arrays claimed inside one
    ],
)
def test_lying_headers_are_refused_quickly(data):
    raw = bytes.fromhex(data)
    t0 = time.process_time()  # CPU time: a busy machine must not fail it
    with pytest.raises(CodecError):
        decode(raw)
    assert time.process_time() - t0 < 0.5


def test_items_limit_holds_for_many_small_items():
    data = encode(tuple([0] * 2000))
    t0 = time.process_time()  # CPU time: a busy machine must not fail it
    with pytest.raises(CodecError, match="items"):
        decode(data, Limits(items_max=1000))
    assert time.process_time() - t0 < 0.5


# ---------------------------------------------------------------------------------------
# Non-canonical and unknown input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        # integers, lengths and tags not in their shortest form
        "1801",
        "190001",
        "1a00000001",
        "1b0000000000000001",
        "3800",
        "1817",
        "780161",
        "5801ff",
        "980101",
        "b8010101",
        "d8028101",
        "c24101",  # bignum for a small integer
        "c2420001",  # bignum with a leading zero byte
        "c34100",  # negative bignum for a small integer
        "c240",  # bignum for zero
        # floats not in their shortest form, and non-canonical NaNs
        "fa3fc00000",
        "fb3ff8000000000000",
        "fa7fc00000",
        "f97e01",
        "fb7ff8000000000000",
        "f9fe00",
        # map keys out of order (canonical is length-first, then bytewise)
        "a2616201616102",  # {"b": 1, "a": 2}
        "a2616101" + "0102",  # {"a": 1, 1: 2}: shorter key must come first
        "a21903e800616100",  # {1000: 0, "a": 0}: bytewise order, not length-first
        # duplicate keys, including keys that are equal as values
        "a201010102",
        "a20101f502",
        # indefinite lengths
        "9f01ff",
        "5f4101ff",
        "7f6161ff",
        "bf0101ff",
        "9fff",
        # a reducible, negative-denominator or zero-denominator fraction
        "d81e820204",
        "d81e820121",
        "d81e820100",
        "d81e83010203",
        "d81e01",
        # simple values that are not values
        "f7",
        "e0",
        "f0",
        "f820",
        "f8ff",
        # a break or reserved additional info where an item should be
        "ff",
        "1c",
        "3d",
        "5e",
        "7f",
        "9e",
        "be",
        "de",
        "fc",
        # invalid UTF-8
        "62c328",
        "61ff",
        # a map key that is not a value key
        "a1a000",
        "a1d9af010101",
        "a1d9af0484617301f40001",  # keys: a map, Linear, Sealed
    ],
)
def test_non_canonical_or_invalid_encodings_refused(data):
    with pytest.raises(CodecError):
        decode(bytes.fromhex(data))


def test_the_canonical_forms_of_those_values_decode():
    # Control group for the test above: the same values in canonical form are accepted.
    for data in [
        "01",
        "1818",
        "20",
        "6161",
        "4161",
        "8101",
        "a10101",
        "f93e00",
        "f97e00",
        "a2616101616202",
        "a2010261610f",
        "d81e820102",
        "c249010000000000000000",
        "a1810001",
    ]:
        v = decode(bytes.fromhex(data))
        assert encode(v).hex() == data


@pytest.mark.parametrize(
    "tag",
    [
        0,
        1,
        4,
        5,
        21,
        22,
        23,
        24,
        25,
        28,
        29,
        32,
        35,
        256,
        258,
        259,
        55799,
        codec.TAG_RESERVED_MAX,
        codec.TAG_LINEAR - 1,
        44811,
        2**32,
        2**64 - 1,
    ],
)
def test_unknown_tags_refused(tag):
    if tag < 24:
        head = bytes([0xC0 | tag])
    elif tag < 256:
        head = bytes([0xD8, tag])
    elif tag < 65536:
        head = bytes([0xD9]) + tag.to_bytes(2, "big")
    elif tag < 2**32:
        head = bytes([0xDA]) + tag.to_bytes(4, "big")
    else:
        head = bytes([0xDB]) + tag.to_bytes(8, "big")
    for body in ("00", "6161", "820102"):
        with pytest.raises(CodecError, match=f"unknown tag {tag}"):
            decode(head + bytes.fromhex(body))


def test_nan_decodes_to_nan():
    v = decode(bytes.fromhex("f97e00"))
    assert isinstance(v, float) and math.isnan(v)


def test_negative_zero_is_its_own_value():
    assert encode(-0.0) != encode(0.0)
    back = decode(encode(-0.0))
    assert math.copysign(1.0, back) == -1.0


@pytest.mark.parametrize("bad", [-1, 1 << 70], ids=["negative", "huge"])
def test_register_extension_refuses_tags_outside_the_block(bad):
    with pytest.raises(ValueError):
        codec.register_extension(complex, bad, lambda c: (), lambda t: 0j)


def _outcome(data: bytes) -> object:
    try:
        return ("ok", codec.decode(data))
    except codec.DecodeError as e:
        return ("refused", str(e))


def test_the_same_bytes_decode_the_same_way_whatever_was_decoded_before():
    # Decoding keeps checked capabilities by their exact bytes; a capability with a NaN
    # among its commons arguments must still count its NaN when it is seen again.
    from avm.core.caps import commons_cap

    cap = codec.encode(commons_cap(b"\x01" * 32, "x", (float("nan"),)))
    for data in (b"\xa1" + cap + b"\x00", b"\x82" + cap + cap, cap):
        codec._CAP_CACHE.clear()
        cold = _outcome(data)
        codec.decode(cap)
        codec.decode(cap)
        warm = _outcome(data)
        assert repr(cold) == repr(warm)
    codec._CAP_CACHE.clear()
    codec.decode(cap)
    assert cap not in codec._CAP_CACHE
