"""The codec under attack (issue 5, items 8, 12 and 15).

* NaN map keys are refused; equal keys (``0.0``/``-0.0``, ``1``/``1.0``) cannot share a
  map; a lone ``-0.0`` key keeps its own encoding;
* decoding costs time and memory roughly linear in the input: hash-colliding keys,
  huge bignums and fractions, a megabyte of empty maps;
* ``encode`` refuses what ``decode`` would refuse, so what is stored can be loaded;
* every decode failure is a ``DecodeError`` (a ``CodecError``) with a path and an offset;
* ``value_hash`` is domain-separated;
* the decode fuzz (``bench/fuzz_decode.py``) on 10,000 inputs: only ``CodecError``
  escapes, and every accepted input re-encodes to itself and decodes the same way twice
  and in another process.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import math
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avm.core import codec
from avm.core.codec import (
    INT_BYTES_MAX,
    KEY_HASH_COLLISIONS_MAX,
    DecodeError,
    Limits,
    decode,
    encode,
    value_hash,
)
from avm.core.errors import CodecError, ValueRuleError
from avm.core.values import Linear, Map, record

P = 2**61 - 1  # the modulus of Python's numeric hash
BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    mod = sys.modules.get(f"avm_bench_{name}")
    if mod is None:
        spec = importlib.util.spec_from_file_location(f"avm_bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f"avm_bench_{name}"] = mod
        spec.loader.exec_module(mod)
    return mod


attacks = _load("codec_limits")  # the hostile inputs the bench measures
fuzz = _load("fuzz_decode")


@record(name="tests.trust_codec.Key")
class Key:
    a: object
    b: object


def refused(data: bytes) -> DecodeError:
    with pytest.raises(CodecError) as info:
        decode(data)
    assert isinstance(info.value, DecodeError)
    return info.value


def _timed(fn) -> float:
    """CPU seconds of this process: the bounds are about work, and wall time also counts
    the time other processes on a busy machine take the core away."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


# ---------------------------------------------------------------------------------------
# Map keys: NaN, -0.0 and equal keys
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        "a2f97e0001f97e0002",  # two NaN keys: decoded to a map with two entries before
        "a1f97e0001",  # one NaN key: a key that can never be looked up again
        "a181f97e0001",  # NaN inside a tuple key
    ],
)
def test_nan_map_keys_are_refused(data):
    e = refused(bytes.fromhex(data))
    assert "NaN" in e.detail


def test_nan_inside_a_record_key_is_refused():
    name = b"tests.trust_codec.Key"
    key = bytes([0xD9]) + codec.TAG_RECORD.to_bytes(2, "big") + b"\x83" + bytes([0x60 + len(name)]) + name
    data = b"\xa1" + key + b"\x01\xf9\x7e\x00" + b"\x00"
    e = refused(data)
    assert "NaN" in e.detail


@pytest.mark.parametrize("key", [math.nan, (1, math.nan), ("x", (math.nan,))])
def test_maps_with_nan_keys_are_not_stored(key):
    # Either the map refuses the key or encode does: never a stored value that cannot load.
    with pytest.raises((ValueRuleError, CodecError)):
        encode(Map({key: 1}))


def test_two_nan_keys_never_give_two_encodings():
    with pytest.raises((ValueRuleError, CodecError)):
        encode(Map([(float("nan"), 1), (float("nan"), 2)]))


def test_equal_keys_cannot_share_a_map():
    for data in ("a2f9000001f9800002",  # 0.0 and -0.0
                 "a201f5f93c0002",  # 1 and 1.0 (and 1 and True below)
                 "a20101f502"):
        e = refused(bytes.fromhex(data))
        assert "equal" in e.detail or "order" in e.detail


@pytest.mark.parametrize("key", [-0.0, 0.0, 1.0, 1, True])
def test_a_lone_key_keeps_its_own_encoding(key):
    m = Map({key: "v"})
    back = decode(encode(m))
    (k,) = back.keys()
    assert type(k) is type(key) and math.copysign(1, k) == math.copysign(1, key)
    assert encode(back) == encode(m)


def test_map_key_problem_names_the_rules():
    assert codec.map_key_problem(["a", 1, (2.5, "x")]) is None
    assert "NaN" in codec.map_key_problem([("a", math.nan)])
    assert "share one hash" in codec.map_key_problem([k * P + 1 for k in range(17)])


# ---------------------------------------------------------------------------------------
# Bounded decoding: hash collisions, bignums, fractions, many small containers
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, n",
    [
        (attacks.int_hash_collisions, 2000),  # ints equal mod 2**61-1: one Python hash
        (attacks.hamt_collisions, 2000),  # one 32-bit hash in the persistent map
        (attacks.fraction_collisions, 300),  # fractions with one hash (29 s for 8000 before)
    ],
    ids=["python-hash", "hamt-hash", "fraction-hash"],
)
def test_colliding_keys_are_refused_in_linear_time(build, n):
    data = build(n)
    dt = _timed(lambda: refused(data))
    assert dt < 0.5
    assert "share one hash" in refused(data).detail


def test_collisions_up_to_the_limit_are_accepted_and_encode_refuses_more():
    ok = Map({k * P + 1: k for k in range(KEY_HASH_COLLISIONS_MAX)})
    assert decode(encode(ok)) == ok
    assert Map({-1: "a", -2: "b"})  # hash(-1) == hash(-2): a pair is fine
    # One more: Map refuses to build it (values item 10), with an error that is also a
    # CodecError, as encode's would be.
    with pytest.raises(CodecError, match="share one hash"):
        encode(Map({k * P + 1: k for k in range(KEY_HASH_COLLISIONS_MAX + 1)}))
    # Many buckets at the limit: accepted, in time linear in the size.
    data = attacks.collisions_at_limit(20_000)
    assert _timed(lambda: decode(data)) < 1.0


def test_integers_are_limited_in_size_both_ways():
    top = 2 ** (8 * INT_BYTES_MAX) - 1
    for v in (top, -top - 1):
        assert decode(encode(v)) == v
    for v in (top + 1, -top - 2):
        with pytest.raises(CodecError, match="exceeds the limit"):
            encode(v)
        with pytest.raises(CodecError, match="exceeds the limit"):
            encode((1, Map(a=v)))  # anywhere inside a value
    big = attacks.bignum(8_000_000)
    dt = _timed(lambda: refused(big))
    assert dt < 0.1
    assert "exceeds the limit" in refused(big).detail


def test_huge_fractions_are_refused_before_any_gcd():
    data = attacks.fraction_gcd(80_000)  # 0.45 s of gcd before, quadratic in the size
    dt = _timed(lambda: refused(data))
    assert dt < 0.2


def test_fractions_at_the_limit_cost_little():
    data = attacks.fractions_at_limit(100)
    dt = _timed(lambda: decode(data))
    assert dt < 0.5


def test_empty_maps_share_one_object():
    # Before: 6.6 s and 307 MiB for a megabyte (every a0 became its own map). Now every
    # empty map is one shared object, so the memory is the outer tuple's pointers.
    n = 20_000
    data = attacks.empty_maps(n)
    tracemalloc.start()
    try:
        v = decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(v) == n and all(m is v[0] for m in v)
    assert peak < 40 * n  # bytes per one-byte item, pointers and building lists included


def test_lying_map_sizes_are_refused_before_allocation():
    for data in ("bb00000000ffffffff", "ba7fffffff0000", "9a7fffffff00"):
        refused(bytes.fromhex(data))


# ---------------------------------------------------------------------------------------
# encode enforces what decode enforces
# ---------------------------------------------------------------------------------------


def _nest(n: int):
    v: object = 0
    for _ in range(n):
        v = (v,)
    return v


def test_encode_refuses_what_decode_would_refuse():
    with pytest.raises(CodecError, match="deeper"):
        encode(_nest(65))  # before: encoded fine, then decode refused its own output
    assert decode(encode(_nest(64))) == _nest(64)
    with pytest.raises(CodecError, match="deeper"):
        encode(_nest(6), Limits(depth_max=5))
    with pytest.raises(CodecError, match="items"):
        encode(tuple(range(10)), Limits(items_max=10))
    assert decode(encode(tuple(range(9)), Limits(items_max=10)), Limits(items_max=10))
    with pytest.raises(CodecError, match="exceeds"):
        encode(b"x" * 100, Limits(bytes_max=100))
    with pytest.raises(CodecError):
        encode("\ud800")  # a lone surrogate has no UTF-8 form


@settings(max_examples=150)
@given(st.recursive(
    st.one_of(st.integers(), st.floats(), st.text(max_size=4), st.none()),
    lambda ch: st.one_of(st.lists(ch, max_size=4).map(tuple), ch.map(Linear),
                         st.dictionaries(st.text(max_size=3), ch, max_size=3).map(Map)),
    max_leaves=80,
), st.integers(1, 12), st.integers(1, 60))
def test_whatever_encode_stores_decode_loads(v, depth_max, items_max):
    limits = Limits(depth_max=depth_max, items_max=items_max)
    try:
        data = encode(v, limits)
    except CodecError:
        # refused: then decode with the same limits refuses the unlimited encoding too
        with pytest.raises(CodecError):
            decode(encode(v), limits)
        return
    assert encode(decode(data, limits)) == data


# ---------------------------------------------------------------------------------------
# Errors: a path and a byte offset on every decode error
# ---------------------------------------------------------------------------------------


def test_decode_errors_say_where():
    good = encode(Map({"a": (1, 2, "x")}))
    bad = good.replace(b"\x61x", b"\x61\xff")  # invalid UTF-8 in the third element
    e = refused(bad)
    assert e.path == "$['a'][2]"
    assert e.offset == good.index(b"\x61x")
    assert str(e) == f"$['a'][2]: invalid UTF-8 in text at byte {e.offset}"
    e = refused(bytes.fromhex("82 01 d9af01 81 1c".replace(" ", "")))
    assert e.path == "$[1]<linear>[0]" and e.offset == 6
    e = refused(bytes.fromhex("a2 6161 01 6162 d8 63 00".replace(" ", "")))
    assert e.path == "$['b']" and "unknown tag 99" in e.detail
    e = refused(bytes.fromhex("a1 81 1c 00".replace(" ", "")))
    assert e.path == "$<key 0>[0]"


def test_every_decode_failure_has_an_offset_or_a_path():
    for _kind, data in fuzz.inputs(2000, seed=11):
        try:
            decode(data)
        except DecodeError as e:
            assert e.path.startswith("$")
            assert e.offset is not None or e.path != "$", e
        except CodecError as e:  # pragma: no cover - would be a bug
            raise AssertionError(f"a bare CodecError: {e}") from None


class _Nasty(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


@record(name="tests.trust_codec.Picky")
class Picky:
    n: int

    def __post_init__(self):
        if self.n < 0:
            raise _Nasty()


def test_a_failing_constructor_is_a_codec_error():
    data = encode(Picky(1)).replace(b"\x01", b"\x20")  # n = -1
    e = refused(data)
    assert "Picky" in e.detail or "refused" in e.detail or "malformed" in e.detail


# ---------------------------------------------------------------------------------------
# Hashes
# ---------------------------------------------------------------------------------------


def test_value_hash_is_domain_separated():
    v = Map({"a": (1, 2)})
    assert value_hash(v) == hashlib.sha256(b"avm-value-v1\0" + encode(v)).digest()
    assert value_hash(v) != hashlib.sha256(encode(v)).digest()
    assert codec.labelled_hash(b"avm-value-v1\0", encode(v)) == value_hash(v)
    with pytest.raises(ValueError):
        codec.labelled_hash(b"no-terminator", b"")


# ---------------------------------------------------------------------------------------
# Readability: the decoder is made of named steps
# ---------------------------------------------------------------------------------------


def test_no_long_functions_in_the_codec():
    # The old header scan was one 99-line function of cyclomatic complexity 38.
    tree = ast.parse(Path(codec.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 60, f"{node.name} is {length} lines"
            branches = sum(isinstance(n, (ast.If, ast.For, ast.While, ast.Try, ast.BoolOp,
                                          ast.IfExp, ast.ExceptHandler))
                           for n in ast.walk(node))
            assert branches <= 20, f"{node.name} has {branches} branches"


# ---------------------------------------------------------------------------------------
# The decode fuzz, CI size
# ---------------------------------------------------------------------------------------


def test_decode_fuzz_10k():
    t = fuzz.run(10_000, seed=1, keep=300)
    assert t.tried == 10_000
    assert t.crashes == 0, t.crash_examples
    assert t.accepted > 2_500 and t.refused > 5_000  # both paths really ran
    assert t.by_kind["mutated"][1] > 0 and t.by_kind["random"][1] >= 0
    assert t.slowest < 0.25
    # the same decoding in another process, with another hash seed
    assert fuzz.cross_process(t.accepted_inputs, hash_seed="4242")
