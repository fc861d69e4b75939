"""Canonical encoding, bounded decoding, hashing (DESIGN section 2).

    "Every value has exactly one byte encoding ... Decoding untrusted bytes is bounded:
    maximum size, depth and item count, unknown tags rejected, and a clear error on
    violation, never a crash."

The encoding is CBOR (RFC 8949) as ``cbor2`` writes it with ``canonical=True``:

* integers, lengths and tags in their shortest form; no indefinite lengths;
* floats in the shortest of half, single or double precision that keeps the value
  (NaN is ``f97e00``);
* map keys sorted by the length of their encoding, then bytewise ("length-first",
  RFC 7049 section 3.9); no duplicate keys;
* tuples are arrays, :class:`~avm.core.values.Map` is a map, ``Fraction`` is tag 30
  ``[numerator, denominator]`` in lowest terms, big integers are tags 2 and 3;
* the project's own types use tags ``TAG_*`` below (see ``docs/values.md``).

Decoding is three passes, each cheap compared with what it protects against:

1. a *scan* of the CBOR item headers that checks size, depth, item count, tags and
   simple values before anything is allocated (a header that claims a billion items in
   a ten-byte frame is refused here);
2. ``cbor2`` builds the Python objects, which this module turns into AVM values;
3. the value is encoded again and must give back exactly the input bytes, so a
   non-canonical encoding of a valid value is refused too.

Every failure is a :class:`CodecError`; nothing else escapes ``decode``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import cbor2

from .errors import CodecError, ValueRuleError
from .values import (
    Affine,
    Linear,
    Map,
    Relevant,
    Sealed,
    Sealer,
    Unsealer,
    _record_fields,
    check_value,
    record_class,
    record_name,
)

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "encode",
    "decode",
    "value_hash",
    "register_extension",
    "TAG_LINEAR",
    "TAG_AFFINE",
    "TAG_RELEVANT",
    "TAG_SEALED",
    "TAG_SEALER",
    "TAG_UNSEALER",
    "TAG_RECORD",
]

# The project's tags: one block, documented in docs/values.md. Tags 2, 3 (bignums) and
# 30 (rationals) are the standard ones cbor2 already knows.
TAG_LINEAR = 44801
TAG_AFFINE = 44802
TAG_RELEVANT = 44803
TAG_SEALED = 44804  # [sealer name, payload, crypto?, kind]
TAG_SEALER = 44805
TAG_UNSEALER = 44806
TAG_RECORD = 44807  # [registered name, field values...]
TAG_CAPABILITY = 44808  # registered by caps
TAG_SELF = 44809  # registered by caps
TAG_RESERVED_MAX = 44831
_STANDARD_TAGS = frozenset({2, 3, 30})


@dataclass(frozen=True)
class Limits:
    """Bounds on what ``decode`` accepts from untrusted bytes."""

    bytes_max: int = 16 * 1024 * 1024
    depth_max: int = 64
    items_max: int = 1_000_000


DEFAULT_LIMITS = Limits()

# Extension types (capabilities, Self) registered by other core modules, so that codec
# does not import caps: type -> (tag, to_items), tag -> from_items.
_EXT_ENC: dict[type, tuple[int, Callable[[Any], tuple]]] = {}
_EXT_DEC: dict[int, Callable[[tuple], Any]] = {}


def register_extension(
    t: type, tag: int, to_items: Callable[[Any], tuple], from_items: Callable[[tuple], Any]
) -> None:
    """Teach the codec a value type of the core (tag in the project's block)."""
    if not (TAG_LINEAR <= tag <= TAG_RESERVED_MAX):
        raise ValueError(f"tag {tag} is outside the project's block")
    _EXT_ENC[t] = (tag, to_items)
    _EXT_DEC[tag] = from_items


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------


def _default(encoder: Any, v: Any) -> None:
    t = type(v)
    if t is Map:
        encoder.encode(dict(v._m))  # cbor2 sorts the keys canonically
    elif t is Linear:
        encoder.encode(cbor2.CBORTag(TAG_LINEAR, v.value))
    elif t is Affine:
        encoder.encode(cbor2.CBORTag(TAG_AFFINE, v.value))
    elif t is Relevant:
        encoder.encode(cbor2.CBORTag(TAG_RELEVANT, v.value))
    elif t is Sealed:
        encoder.encode(cbor2.CBORTag(TAG_SEALED, (v.sealer, v.payload, v.crypto, v.kind)))
    elif t is Sealer:
        encoder.encode(cbor2.CBORTag(TAG_SEALER, v.name))
    elif t is Unsealer:
        encoder.encode(cbor2.CBORTag(TAG_UNSEALER, v.name))
    elif t in _EXT_ENC:
        tag, to_items = _EXT_ENC[t]
        encoder.encode(cbor2.CBORTag(tag, to_items(v)))
    else:
        fields = _record_fields(t)
        if fields is None:
            raise CodecError(f"cannot encode a {t.__qualname__}: not an AVM value")
        encoder.encode(
            cbor2.CBORTag(TAG_RECORD, (record_name(t), *(getattr(v, f) for f in fields)))
        )


def encode(value: Any) -> bytes:
    """The one canonical byte string of ``value`` (ValueRuleError if it is not a value)."""
    check_value(value)
    return _encode_trusted(value)


def _encode_trusted(value: Any) -> bytes:
    try:
        return cbor2.dumps(value, canonical=True, default=_default)
    except CodecError:
        raise
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError) as e:
        raise CodecError(f"cannot encode value: {e}") from None


def value_hash(value: Any) -> bytes:
    """SHA-256 of the canonical encoding: the identity of a value."""
    return hashlib.sha256(encode(value)).digest()


# ---------------------------------------------------------------------------------------
# Decoding, pass 1: the header scan
# ---------------------------------------------------------------------------------------


def _scan(data: bytes, limits: Limits) -> None:
    """Check structure and bounds before cbor2 allocates anything."""
    n = len(data)
    items = 0
    # Stack of remaining child counts per open container; depth is its length.
    stack: list[int] = []
    pos = 0
    roots = 0
    allowed_tags = _STANDARD_TAGS | _EXT_DEC.keys() | {
        TAG_LINEAR, TAG_AFFINE, TAG_RELEVANT, TAG_SEALED, TAG_SEALER, TAG_UNSEALER, TAG_RECORD
    }
    pending_tag = False
    while True:
        if not stack and not pending_tag:
            if roots == 1:
                break
            roots += 1
        if pos >= n:
            raise CodecError(f"truncated input: item expected at byte {pos}")
        ib = data[pos]
        major, info = ib >> 5, ib & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info == 24:
            if pos + 1 > n:
                raise CodecError(f"truncated header at byte {pos - 1}")
            arg = data[pos]
            pos += 1
        elif info == 25:
            if pos + 2 > n:
                raise CodecError(f"truncated header at byte {pos - 1}")
            arg = struct.unpack_from(">H", data, pos)[0]
            pos += 2
        elif info == 26:
            if pos + 4 > n:
                raise CodecError(f"truncated header at byte {pos - 1}")
            arg = struct.unpack_from(">I", data, pos)[0]
            pos += 4
        elif info == 27:
            if pos + 8 > n:
                raise CodecError(f"truncated header at byte {pos - 1}")
            arg = struct.unpack_from(">Q", data, pos)[0]
            pos += 8
        elif info == 31:
            raise CodecError(f"indefinite-length item at byte {pos - 1} (not canonical)")
        else:
            raise CodecError(f"reserved additional information {info} at byte {pos - 1}")
        items += 1
        if items > limits.items_max:
            raise CodecError(f"more than {limits.items_max} items")
        pending_tag = False
        children = 0
        if major in (0, 1):
            pass
        elif major in (2, 3):
            if arg > n - pos:
                raise CodecError(
                    f"string of {arg} bytes at byte {pos} runs past the end of the input"
                )
            if major == 3:
                try:
                    data[pos : pos + arg].decode("utf-8")
                except UnicodeDecodeError:
                    raise CodecError(f"invalid UTF-8 in text at byte {pos}") from None
            pos += arg
        elif major == 4:
            # Each child takes at least one byte: a count larger than what is left is a lie.
            if arg > n - pos:
                raise CodecError(f"array of {arg} items at byte {pos} exceeds the input")
            children = arg
        elif major == 5:
            if arg > (n - pos) // 2:
                raise CodecError(f"map of {arg} pairs at byte {pos} exceeds the input")
            children = 2 * arg
        elif major == 6:
            if arg not in allowed_tags:
                raise CodecError(f"unknown tag {arg} at byte {pos}")
            children = 1
            pending_tag = True
        else:  # major 7: simple values and floats
            if info < 24 and arg not in (20, 21, 22):
                raise CodecError(f"simple value {arg} at byte {pos - 1} is not allowed")
            if info == 24:
                raise CodecError(f"simple value {arg} at byte {pos - 1} is not allowed")
        # Close finished containers, then open the new one.
        if stack:
            stack[-1] -= 1
        if children:
            stack.append(children)
            if len(stack) > limits.depth_max:
                raise CodecError(f"nested deeper than {limits.depth_max}")
        else:
            while stack and stack[-1] == 0:
                stack.pop()
        if not stack:
            pending_tag = False
    if pos != n:
        raise CodecError(f"{n - pos} trailing bytes after the value")


# ---------------------------------------------------------------------------------------
# Decoding, pass 2: from cbor2 objects to values
# ---------------------------------------------------------------------------------------


# cbor2 decodes a map inside a tag (a record, a Linear, a Sealed...) as its own immutable
# mapping type, not a dict: both must become a Map.
_CBOR_MAP_TYPES = frozenset(
    {dict} | {getattr(cbor2, n) for n in ("frozendict", "FrozenDict") if hasattr(cbor2, n)}
)


def _to_value(obj: Any) -> Any:
    t = type(obj)
    if t is list or t is tuple:
        return tuple(_to_value(x) for x in obj)
    if t in _CBOR_MAP_TYPES:
        out = {}
        for k, v in obj.items():
            out[_to_key(k)] = _to_value(v)
        if len(out) != len(obj):
            raise CodecError("map has keys that are equal as values")
        return Map(out)
    if t is cbor2.CBORTag:
        return _from_tag(obj.tag, _to_value(obj.value))
    if t is cbor2.undefined.__class__:
        raise CodecError("undefined is not a value")
    return obj


_ATOMIC_KEYS = frozenset({type(None), bool, int, float, str, bytes, Fraction})


def _to_key(k: Any) -> Any:
    t = type(k)
    if t is list or t is tuple:
        return tuple(_to_key(x) for x in k)
    if t in _ATOMIC_KEYS:
        return k
    return _to_value(k)


def _from_tag(tag: int, v: Any) -> Any:
    if tag == TAG_LINEAR:
        return Linear(v)
    if tag == TAG_AFFINE:
        return Affine(v)
    if tag == TAG_RELEVANT:
        return Relevant(v)
    if tag == TAG_SEALED:
        if type(v) is not tuple or len(v) != 4 or type(v[0]) is not str or type(v[2]) is not bool:
            raise CodecError("malformed sealed value")
        if type(v[3]) is not int or not 0 <= v[3] <= 3:
            raise CodecError("malformed sealed value kind")
        if v[2] and type(v[1]) is not bytes:
            raise CodecError("cryptographically sealed payload must be bytes")
        s = Sealed(v[0], v[1], crypto=v[2], kind=v[3])
        if s.kind != v[3]:
            raise CodecError("sealed value kind does not match its contents")
        return s
    if tag == TAG_SEALER or tag == TAG_UNSEALER:
        if type(v) is not str:
            raise CodecError("sealer name must be text")
        return Sealer(v) if tag == TAG_SEALER else Unsealer(v)
    if tag == TAG_RECORD:
        if type(v) is not tuple or not v or type(v[0]) is not str:
            raise CodecError("malformed record")
        cls = record_class(v[0])
        if cls is None:
            raise CodecError(f"unknown record type {v[0]!r}: register it with @avm.record")
        fields = _record_fields(cls) or ()
        if len(v) - 1 != len(fields):
            raise CodecError(f"record {v[0]!r} needs {len(fields)} fields, got {len(v) - 1}")
        try:
            return cls(**dict(zip(fields, v[1:], strict=True)))
        except Exception as e:  # a user's __post_init__ may refuse the fields
            raise CodecError(f"record {v[0]!r} refused its fields: {e}") from None
    fn = _EXT_DEC.get(tag)
    if fn is not None:
        try:
            return fn(v)
        except CodecError:
            raise
        except Exception as e:
            raise CodecError(f"malformed tag {tag}: {e}") from None
    if tag in (2, 3, 30):  # cbor2 handles these itself; reaching here means malformed
        raise CodecError(f"malformed standard tag {tag}")
    raise CodecError(f"unknown tag {tag}")


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode untrusted bytes into one value, or raise CodecError saying why."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.bytes_max:
        raise CodecError(f"input of {len(data)} bytes exceeds the limit of {limits.bytes_max}")
    if not data:
        raise CodecError("empty input")
    _scan(data, limits)
    try:
        obj = cbor2.loads(
            data, max_depth=limits.depth_max + 2, allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        value = _to_value(obj)
        check_value(value)
    except CodecError:
        raise
    except ValueRuleError as e:
        raise CodecError(f"decoded data is not a valid value: {e}") from None
    except RecursionError:
        raise CodecError("value nested too deeply") from None
    except Exception as e:  # cbor2's own errors, bad floats, bad bignums, hash failures
        raise CodecError(f"malformed CBOR: {e}") from None
    if _encode_trusted(value) != data:
        raise CodecError("not the canonical encoding of its value")
    return value


# Fractions are normalised by Python, so tag 30 with a reducible pair is caught by the
# canonical re-encode check in ``decode``; a zero denominator raises inside cbor2 and
# becomes a CodecError there.
