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

Encoding uses ``cbor2`` and then checks its own output against the same limits and rules
that decoding applies, so whatever is stored can be loaded again.

Decoding is this module's own single pass over the bytes (``cbor2`` is not used to
decode), because only a decoder that sees every map key before any hash table is built
can keep its cost linear in the input:

1. :class:`_Decoder` reads one item at a time: the head (:meth:`_Decoder.head`: shortest
   form, no indefinite lengths, size and item count), then the body by major type
   (:meth:`~_Decoder.array`, :meth:`~_Decoder.map`, :meth:`~_Decoder.tag`, ...). A
   container that claims more items than there are bytes left is refused before
   anything is allocated, every tag is checked against the known ones before its content
   is read, and the map step checks key order, NaN keys and hash collisions *before* it
   builds the map (see the key rules below);
2. the value is checked (``check_value``) and encoded again: it must give back exactly
   the input bytes, so a non-canonical encoding of a valid value is refused too.

Every failure is a :class:`CodecError`; a decoding failure is a :class:`DecodeError`
that says where: the path to the part that is wrong (``$[2]['key']``) and the byte
offset.

Rules that bound the cost of a value (fixed, the same in ``encode`` and ``decode``):

* **no NaN in a map key**, at any depth: NaN hashes by identity, so such a key could
  never be looked up again, and two of them gave one map two encodings;
* **no two keys of a map equal as values** (``1`` and ``1.0``, ``0.0`` and ``-0.0``): a
  ``Map`` cannot hold both, so their encoding is refused. A lone ``-0.0`` (or ``1.0``)
  key keeps its own encoding, as a ``-0.0`` element of a tuple does;
* at most :data:`KEY_HASH_COLLISIONS_MAX` keys of one map share one 32-bit hash of the
  persistent map (many ints equal modulo ``2**61 - 1`` share a Python hash; building a
  map of them is quadratic);
* an integer's magnitude has at most :data:`INT_BYTES_MAX` bytes (so gcds, comparisons
  and ``repr`` stay cheap: Python itself refuses ``str()`` of ints over 4300 digits).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections import ChainMap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cbor2

from .errors import CodecError, ValueRuleError
from .values import (  # the project's tags and limits live with the table of value types
    BYTES_MAX,
    CBOR_ENCODERS,
    DEPTH_MAX,
    INT_BYTES_MAX,
    ITEMS_MAX,
    KEY_HASH_COLLISIONS_MAX,
    TAG_AFFINE,
    TAG_CAPABILITY,
    TAG_FRACTION,
    TAG_LINEAR,
    TAG_RECORD,
    TAG_RELEVANT,
    TAG_RESERVED_MAX,
    TAG_SEALED,
    TAG_SEALER,
    TAG_SELF,
    TAG_UNSEALER,
    VALUE_TYPES,
    Fraction,
    Map,
    _collision_problem,
    _nan_inside,
    check_value,
    set_exact_measure,
    value_type_for_tag,
)

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "DecodeError",
    "encode",
    "decode",
    "value_hash",
    "labelled_hash",
    "VALUE_HASH_LABEL",
    "KEY_HASH_COLLISIONS_MAX",
    "INT_BYTES_MAX",
    "map_key_problem",
    "register_extension",
    "TAG_LINEAR",
    "TAG_AFFINE",
    "TAG_RELEVANT",
    "TAG_SEALED",
    "TAG_SEALER",
    "TAG_UNSEALER",
    "TAG_RECORD",
    "TAG_FRACTION",
    "TAG_CAPABILITY",
    "TAG_SELF",
    "TAG_RESERVED_MAX",
]

# Standard tags (the project's block, 44801-44831, is defined in values.py with the table
# of value types and documented in docs/values.md).
TAG_BIGNUM = 2
TAG_NEGATIVE_BIGNUM = 3

#: The label in front of an encoding when it is hashed as a value (item 8: a value hash
#: is never the hash of the same bytes for another purpose, such as an address).
VALUE_HASH_LABEL = b"avm-value-v1\0"


@dataclass(frozen=True)
class Limits:
    """Bounds on what ``decode`` accepts from untrusted bytes (and ``encode`` produces).

    ``depth_max`` counts nesting: every array, map and tag with content is one level.
    ``items_max`` counts CBOR data items: every integer, string, float, array, map, key,
    value and tag is one.
    """

    bytes_max: int = BYTES_MAX
    depth_max: int = DEPTH_MAX
    items_max: int = ITEMS_MAX


DEFAULT_LIMITS = Limits()

# Extension types (capabilities, Self) registered by other core modules, so that codec
# does not import caps: type -> (tag, to_items), tag -> (from_items, name).
_EXT_ENC: dict[type, tuple[int, Callable[[Any], tuple]]] = {}
_EXT_DEC: dict[int, tuple[Callable[[tuple], Any], str]] = {}


def register_extension(
    t: type, tag: int, to_items: Callable[[Any], tuple], from_items: Callable[[tuple], Any]
) -> None:
    """Teach the codec a value type of the core (tag in the project's block)."""
    if not (TAG_LINEAR <= tag <= TAG_RESERVED_MAX):
        raise ValueError(f"tag {tag} is outside the project's block")
    _EXT_ENC[t] = (tag, to_items)
    _EXT_DEC[tag] = (from_items, t.__name__)
    if t not in CBOR_ENCODERS:  # a tuple subclass never reaches ``default``
        CBOR_ENCODERS[t] = lambda encoder, v: encoder.encode(cbor2.CBORTag(tag, to_items(v)))


class DecodeError(CodecError):
    """Bytes that do not decode: says what is wrong, where (``path``) and at which byte."""

    def __init__(self, detail: str, path: str = "$", offset: int | None = None) -> None:
        self.detail = detail
        self.path = path
        self.offset = offset
        where = "" if offset is None else f" at byte {offset}"
        super().__init__(f"{path}: {detail}{where}")


# ---------------------------------------------------------------------------------------
# The rules on map keys, shared by encode and decode
# ---------------------------------------------------------------------------------------

# Key types that cannot hold a NaN (a Fraction is two ints).
_PLAIN_KEYS = frozenset({str, bytes, int, bool, type(None), Fraction})


def map_key_problem(keys: Iterable[Any]) -> str | None:
    """Why these keys cannot be the keys of one map, or None.

    R1: no NaN anywhere inside a key. R3: at most ``KEY_HASH_COLLISIONS_MAX`` keys share
    one 32-bit hash. (R2, no two keys equal as values, holds for any ``Map``.)
    """
    keys = keys if type(keys) is list else list(keys)
    if not _PLAIN_KEYS.issuperset(map(type, keys)):
        for k in keys:
            if type(k) not in _PLAIN_KEYS and _nan_inside(k):
                return "a map key may not contain NaN (NaN is not equal to itself)"
    return _collision_problem(keys)


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------


def _encode_map(encoder: Any, m: Map) -> None:
    entries = m._m
    why = map_key_problem(list(entries.keys()))
    if why is not None:
        raise CodecError(f"cannot encode a map: {why}")
    encoder.encode(dict(entries))  # cbor2 sorts the keys canonically


# The cbor2 ``encoders=`` mapping of values.py (one entry per tuple-based value type, kept
# up to date as records register); the Map entry is this module's, which applies the key
# rules. cbor2 would otherwise write a tuple subclass as a plain array.
CBOR_ENCODERS[Map] = _encode_map


def _encode_map_decoded(encoder: Any, m: Map) -> None:
    encoder.encode(dict(m._m))


# For encoding again what was just decoded: its maps' keys were checked on the way in.
_DECODED_ENCODERS: ChainMap[type, Callable[[Any, Any], None]] = ChainMap(
    {Map: _encode_map_decoded}, CBOR_ENCODERS)
# ... flattened into a plain dict for cbor2, which looks every encoded item's type up in
# it (a ChainMap answers in Python: a fifth of a decode's time went there). Rebuilt when
# a value type registers (CBOR_ENCODERS only grows).
_decoded_flat: tuple[int, dict] = (-1, {})


def _decoded_encoders() -> dict:
    global _decoded_flat
    n = len(CBOR_ENCODERS)
    if _decoded_flat[0] != n:
        _decoded_flat = (n, dict(_DECODED_ENCODERS))
    return _decoded_flat[1]


def _default(encoder: Any, v: Any) -> None:
    ext = _EXT_ENC.get(type(v))
    if ext is None:
        raise CodecError(f"cannot encode a {type(v).__qualname__}: not an AVM value")
    encoder.encode(cbor2.CBORTag(ext[0], ext[1](v)))


def encode(value: Any, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The one canonical byte string of ``value``.

    Raises ValueRuleError if it is not a value, CodecError if it breaks a rule or limit
    that ``decode`` would refuse (so whatever ``encode`` returns, ``decode`` accepts).
    """
    check_value(value)
    return _encode_trusted(value, limits)


def _dumps(value: Any, encoders: Any = CBOR_ENCODERS) -> bytes:
    try:
        return cbor2.dumps(value, canonical=True, encoders=encoders, default=_default)
    except CodecError:
        raise
    except RecursionError:
        raise CodecError("cannot encode value: nested too deeply") from None
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError) as e:
        raise CodecError(f"cannot encode value: {e}") from None


def _encode_trusted(value: Any, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Encode a value already checked by ``check_value``; the limits still apply."""
    data = _dumps(value)
    _check_encoded(value, data, limits)
    return data


def _check_encoded(value: Any, data: bytes, limits: Limits) -> None:
    """Refuse an encoding that ``decode`` with ``limits`` would refuse.

    Each check is skipped when the encoding is too short to break it (every item, every
    level of nesting takes at least a byte): size is a length; nesting and integer sizes
    are a walk over the value's containers; the item count, a walk over the encoding's
    heads, is only needed for encodings longer than ``items_max`` bytes.
    """
    n = len(data)
    if n > limits.bytes_max:
        raise CodecError(f"the encoding of {n} bytes exceeds the limit of {limits.bytes_max}")
    if n > limits.depth_max or n > INT_BYTES_MAX:
        _check_nesting(value, limits.depth_max)
    if n > limits.items_max:
        items = _count_items(data)
        if items > limits.items_max:
            raise CodecError(f"the encoding has {items} items, more than {limits.items_max}")


_FLAT = frozenset({str, bytes, float, bool, type(None)})
_INT_LIMIT = 1 << (8 * INT_BYTES_MAX)  # magnitudes below this fit INT_BYTES_MAX bytes
_BIG = 1 << 64  # from here on an integer is a bignum: a tag, one more level


def _check_int(v: int, room: int) -> None:
    if -_BIG <= v < _BIG:
        return
    if not -_INT_LIMIT <= v < _INT_LIMIT:
        raise CodecError(f"an integer of {(v.bit_length() + 7) // 8} bytes exceeds the limit "
                         f"of {INT_BYTES_MAX} bytes")
    if room == 0:
        raise CodecError("the value is nested deeper than the limit (a bignum is a tag)")


def _check_nesting(v: Any, room: int) -> None:
    """Raise CodecError if encoding ``v`` nests more than ``room`` levels (the decoder's
    count: every non-empty array, map and tag is a level) or holds an oversized int."""
    t = type(v)
    if t in _FLAT:
        return
    if t is int:
        _check_int(v, room)
        return
    if t is tuple or t is Map:
        if not v:
            return
        if room == 0:
            raise CodecError("the value is nested deeper than the limit")
        if t is tuple:
            _check_children(v, room - 1)
        else:
            _check_children(v._m.keys(), room - 1)
            _check_children(v._m.values(), room - 1)
        return
    row = VALUE_TYPES.get(t)
    to_items = row.to_items if row is not None else None
    if to_items is None:
        ext = _EXT_ENC.get(t)
        if ext is None:
            return  # not a value: check_value or cbor2 refuses it
        to_items = ext[1]
    if room == 0:
        raise CodecError("the value is nested deeper than the limit")
    _check_nesting(to_items(v), room - 1)


def _check_children(xs: Iterable[Any], room: int) -> None:
    for x in xs:
        tx = type(x)
        if tx in _FLAT:
            continue
        if tx is int:
            _check_int(x, room)
        else:
            _check_nesting(x, room)


def _exact_measure(value: Any) -> tuple[int, int]:
    """The bytes and data items of a checked value's encoding (for ``check_size``)."""
    data = _dumps(value)
    return len(data), _count_items(data)


set_exact_measure(_exact_measure)


def _count_items(data: bytes) -> int:
    """The number of data items in a well-formed encoding: one per head."""
    items = 0
    pos = 0
    end = len(data)
    while pos < end:
        ib = data[pos]
        pos += 1
        items += 1
        major, info = ib >> 5, ib & 0x1F
        arg = info
        if info >= 24:
            size = 1 << (info - 24)
            arg = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        if major == 2 or major == 3:
            pos += arg  # a string's bytes are not heads
    return items


def labelled_hash(label: bytes, data: bytes) -> bytes:
    """SHA-256 of ``label + data``: one label per purpose, so hashes never cross purposes.

    A label ends in a zero byte (``b"avm-value-v1\\0"``), so no label is a prefix of
    another label followed by data.
    """
    if not label.endswith(b"\0"):
        raise ValueError("a hash label ends in a zero byte")
    return hashlib.sha256(label + data).digest()


def value_hash(value: Any) -> bytes:
    """The identity of a value: SHA-256 over ``VALUE_HASH_LABEL`` + its canonical encoding."""
    return hashlib.sha256(VALUE_HASH_LABEL + encode(value)).digest()


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------


class _Fail(Exception):
    """A decoding failure on its way out; containers add their part of the path."""

    def __init__(self, detail: str, offset: int) -> None:
        self.detail = detail
        self.offset = offset
        self.steps: list[str] = []  # innermost first

    def error(self) -> DecodeError:
        return DecodeError(self.detail, "$" + "".join(reversed(self.steps)), self.offset)


def _short_repr(v: Any) -> str:
    try:
        r = repr(v)
    except Exception:  # a huge int or a user's repr: the path is still useful without it
        return f"<{type(v).__name__}>"
    return r if len(r) <= 40 else r[:37] + "..."


def _float_bytes(v: float) -> bytes:
    """The canonical encoding of a float, as cbor2 writes it."""
    if v != v:
        return b"\xf9\x7e\x00"
    if math.isinf(v):
        return b"\xf9\x7c\x00" if v > 0 else b"\xf9\xfc\x00"
    out = struct.pack(">Bd", 0xFB, v)
    for fmt, ib in ((">Bf", 0xFA), (">Be", 0xF9)):
        try:
            shorter = struct.pack(fmt, ib, v)
        except OverflowError:
            break
        if struct.unpack(fmt, shorter)[1] != v:
            break
        out = shorter
    return out


# Smallest argument that needs each head size (anything smaller has a shorter head).
_ARG_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}
_ARG_MIN = {24: 24, 25: 256, 26: 65536, 27: 2**32}
_FLOAT_FORMATS = {25: ">e", 26: ">f", 27: ">d"}
_SIMPLE = {20: False, 21: True, 22: None}
_EMPTY_MAP = Map()
_NEGATIVE = tuple(-1 - i for i in range(256))  # shared objects for small negative ints


class _Decoder:
    """One pass over untrusted bytes, building the value as it goes.

    Each step is bounded by what it has read: a head costs O(1), a string O(its bytes),
    a container checks its claimed size against the bytes left before allocating, and a
    map checks its keys (order, NaN, hash collisions) before hashing them into a map.
    """

    __slots__ = ("data", "end", "pos", "items", "items_max", "depth_max", "nans")

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.end = len(data)
        self.pos = 0
        self.items = 0
        self.items_max = limits.items_max
        self.depth_max = limits.depth_max
        self.nans = 0  # NaN floats read so far (a map key must not add to it)

    # -- step 1: the head of an item --------------------------------------------------
    def head(self) -> tuple[int, int, int]:
        """Read one head: (major type, additional information, argument)."""
        data, pos = self.data, self.pos
        if pos >= self.end:
            raise _Fail("truncated input: an item is missing", pos)
        ib = data[pos]
        major, info = ib >> 5, ib & 0x1F
        if info < 24:
            arg = info
            self.pos = pos + 1
        else:
            size = _ARG_BYTES.get(info)
            if size is None:
                if info == 31:
                    raise _Fail("a break (0xff) where an item should be" if major == 7 else
                                "indefinite-length item (not canonical)", pos)
                raise _Fail(f"reserved additional information {info}", pos)
            if pos + 1 + size > self.end:
                raise _Fail("truncated header", pos)
            arg = int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
            if major != 7 and arg < _ARG_MIN[info]:
                raise _Fail("integer, length or tag not in its shortest form", pos)
            self.pos = pos + 1 + size
        self.items += 1
        if self.items > self.items_max:
            raise _Fail(f"more than {self.items_max} items", pos)
        return major, info, arg

    # -- step 2: the body, by major type ----------------------------------------------
    def item(self, depth: int) -> Any:
        start = pos = self.pos
        if pos >= self.end:
            raise _Fail("truncated input: an item is missing", pos)
        ib = self.data[pos]
        if ib & 0x1F < 24:  # the short head, inline (head() does the same)
            major, info, arg = ib >> 5, ib & 0x1F, ib & 0x1F
            self.pos = pos + 1
            self.items += 1
            if self.items > self.items_max:
                raise _Fail(f"more than {self.items_max} items", pos)
        else:
            major, info, arg = self.head()
        if major == 0:
            return arg
        if major == 3:
            pos = self.pos
            if arg > self.end - pos:
                raise _Fail(f"string of {arg} bytes runs past the end of the input", start)
            self.pos = pos + arg
            try:
                return self.data[pos : pos + arg].decode("utf-8")
            except UnicodeDecodeError:
                raise _Fail("invalid UTF-8 in text", start) from None
        if major == 4:
            return self.array(arg, depth, start)
        if major == 1:
            return _NEGATIVE[arg] if arg < 256 else -1 - arg
        if major == 2:
            return self.byte_string(arg, start)
        if major == 5:
            return self.map(arg, depth, start)
        if major == 6:
            return self.tag(arg, depth, start)
        return self.simple(info, arg, start)

    def byte_string(self, n: int, start: int) -> bytes:
        pos = self.pos
        if n > self.end - pos:
            raise _Fail(f"string of {n} bytes runs past the end of the input", start)
        self.pos = pos + n
        return self.data[pos : pos + n]

    def text(self, n: int, start: int) -> str:
        raw = self.byte_string(n, start)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fail("invalid UTF-8 in text", start) from None

    def enter(self, depth: int, start: int) -> int:
        """The depth of a container's children, refused past the limit."""
        depth += 1
        if depth > self.depth_max:
            raise _Fail(f"nested deeper than {self.depth_max}", start)
        return depth

    def array(self, n: int, depth: int, start: int) -> tuple:
        if not n:
            return ()
        # Each element takes at least one byte: a count larger than what is left is a lie.
        if n > self.end - self.pos:
            raise _Fail(f"array of {n} items exceeds the input", start)
        depth = self.enter(depth, start)
        out: list = []
        item = self.item
        try:
            for _ in range(n):
                out.append(item(depth))
        except _Fail as f:
            f.steps.append(f"[{len(out)}]")
            raise
        return tuple(out)

    def map(self, n: int, depth: int, start: int) -> Map:
        if not n:
            return _EMPTY_MAP  # maps are immutable: one empty map serves every a0
        if n > (self.end - self.pos) // 2:
            raise _Fail(f"map of {n} pairs exceeds the input", start)
        depth = self.enter(depth, start)
        data, item = self.data, self.item
        pairs: list[tuple[Any, Any]] = []
        prev = b""
        key: Any = None
        in_key = True
        try:
            for i in range(n):
                in_key = True
                key_start, nans = self.pos, self.nans
                key = item(depth)
                key_bytes = data[key_start : self.pos]
                if i and (
                    len(key_bytes) < len(prev) or (len(key_bytes) == len(prev) and key_bytes <= prev)
                ):
                    raise _Fail(
                        "map key out of canonical order (length-first, then bytewise) or "
                        "repeated", key_start,
                    )
                if self.nans != nans:
                    raise _Fail("a map key may not contain NaN (NaN is not equal to itself)",
                                key_start)
                prev = key_bytes
                in_key = False
                pairs.append((key, item(depth)))
        except _Fail as f:
            f.steps.append(f"<key {len(pairs)}>" if in_key else f"[{_short_repr(key)}]")
            raise
        return self.build_map(pairs, start)

    def build_map(self, pairs: list[tuple[Any, Any]], start: int) -> Map:
        """Hash the keys into a Map, once the collision rule bounds what that costs."""
        try:
            why = _collision_problem([k for k, _ in pairs])
        except Exception as e:  # a user's __hash__ on a record key
            raise _Fail(f"a map key cannot be hashed: {_error_text(e)}", start) from None
        if why is not None:
            raise _Fail(why, start)
        try:
            m = Map(pairs)
        except ValueRuleError as e:
            raise _Fail(f"not a valid map: {e.detail}", start) from None
        except Exception as e:
            raise _Fail(f"not a valid map: {_error_text(e)}", start) from None
        if len(m) != len(pairs):
            raise _Fail(
                "map has keys that are equal as values (such as 1 and 1.0, or 0.0 and -0.0)",
                start,
            )
        return m

    def tag(self, tag: int, depth: int, start: int) -> Any:
        if tag == TAG_BIGNUM or tag == TAG_NEGATIVE_BIGNUM:
            self.enter(depth, start)
            return self.bignum(tag, start)
        from_items = _tag_decoder(tag)  # known tags only, before reading the content
        if from_items is None:
            raise _Fail(f"unknown tag {tag}", start)
        name = _tag_name(tag)
        inner = self.enter(depth, start)
        span = None
        nans = self.nans
        if tag == TAG_CAPABILITY:
            # A channel's messages mostly name the same few capabilities: one checked
            # decoding of each exact unrestricted byte form is kept (immutable), and
            # a repeat costs a bounded scan of its heads, under the same limits.
            span = _span(self.data, self.pos, min(self.end, self.pos + _CAP_SPAN_MAX))
            if span is not None:
                hit = _CAP_CACHE.get(self.data[start : span[0]])
                if (hit is not None and self.items + hit[1] <= self.items_max
                        and inner + hit[2] <= self.depth_max):
                    self.items += hit[1]
                    self.pos = span[0]
                    return hit[0]
        try:
            content = self.item(inner)
        except _Fail as f:
            f.steps.append(f"<{name}>")
            raise
        try:
            if tag == TAG_FRACTION:
                _check_fraction(content)
            obj = from_items(content)
        except (CodecError, ValueRuleError) as e:
            raise _Fail(_error_text(e), start) from None
        except Exception as e:  # a user's __post_init__, a constructor's own check
            raise _Fail(f"malformed {name}: {_error_text(e)}", start) from None
        # The one byte form: the object's own encoding must be exactly what was read
        # (a constructor that normalises its fields would otherwise let two byte forms
        # decode to one value). Untagged items are canonical by the checks above.
        raw = self.data[start : self.pos]
        try:
            again = _dumps(obj, _decoded_encoders())
        except Exception as e:  # noqa: BLE001 - a value that does not encode is refused
            raise _Fail(f"cannot be encoded again: {_error_text(e)}", start) from None
        if again != raw:
            raise _Fail("not the canonical encoding of its value", start)
        # Unrestricted ones only: a linear, affine or relevant capability is an item
        # that each decoding makes anew (a copy is a distinct object, counted apart).
        # Nor one holding a NaN: a hit would not count it, and the same bytes must
        # decode the same way whatever was decoded before.
        if span is not None and span[0] == self.pos and obj[2] == 0 and self.nans == nans:
            if len(_CAP_CACHE) >= _CAP_CACHE_MAX:
                _CAP_CACHE.clear()
            _CAP_CACHE[raw] = (obj, span[1], span[2])
        return obj

    def bignum(self, tag: int, start: int) -> int:
        major, _, n = self.head()
        if major != 2:
            raise _Fail("a bignum holds a byte string", start)
        if n > INT_BYTES_MAX:
            raise _Fail(f"an integer of {n} bytes exceeds the limit of {INT_BYTES_MAX} bytes",
                        start)
        raw = self.byte_string(n, start)
        if n < 9 or raw[0] == 0:
            raise _Fail("bignum for an integer that fits in 64 bits, or with a leading zero "
                        "(not canonical)", start)
        value = int.from_bytes(raw, "big")
        return value if tag == TAG_BIGNUM else -1 - value

    def simple(self, info: int, arg: int, start: int) -> Any:
        fmt = _FLOAT_FORMATS.get(info)
        if fmt is None:
            if info < 24 and arg in _SIMPLE:
                return _SIMPLE[arg]
            raise _Fail(f"simple value {arg} is not allowed (only false, true, null)", start)
        raw = self.data[start : self.pos]
        v = struct.unpack(fmt, raw[1:])[0]
        if v != v:
            self.nans += 1
        if (info != 25 or v != v) and _float_bytes(v) != raw:
            raise _Fail("float not in its shortest form (or a NaN other than f97e00)", start)
        return v


#: Capabilities decoded from these exact bytes (and checked): see _Decoder.tag.
_CAP_CACHE: dict[bytes, tuple[Any, int, int]] = {}
_CAP_CACHE_MAX = 4096
#: The longest capability content the cache scans for (a commons capability with large
#: arguments is decoded the long way).
_CAP_SPAN_MAX = 512


def _span(data: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
    """The end, item count and nesting depth of the one item at ``pos``, if it is
    well-formed, definite-length and ends before ``end``; else None. A scan of heads
    (O(end - pos)); it builds nothing and checks nothing else (the decoder does)."""
    items = depth = deepest = 0
    stack: list[int] = []
    need = 1
    while True:
        if pos >= end:
            return None
        ib = data[pos]
        major, info = ib >> 5, ib & 0x1F
        if info < 24:
            arg = info
            pos += 1
        elif info < 28:
            size = 1 << (info - 24)
            if pos + 1 + size > end:
                return None
            arg = int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
            pos += 1 + size
        else:
            return None
        items += 1
        if major == 2 or major == 3:
            pos += arg
            if pos > end:
                return None
        kids = arg if major == 4 else 2 * arg if major == 5 else 1 if major == 6 else 0
        need -= 1
        if kids:
            stack.append(need)
            need = kids
            depth += 1
            if depth > deepest:
                deepest = depth
        while need == 0:
            if not stack:
                return pos, items, deepest
            need = stack.pop()
            depth -= 1


def _error_text(e: BaseException) -> str:
    if isinstance(e, (ValueRuleError, DecodeError)):
        return str(e)
    try:
        return str(e) or type(e).__name__
    except Exception:
        return type(e).__name__


def _tag_decoder(tag: int) -> Callable[[Any], Any] | None:
    """How to build the value of a project or standard tag from its content, or None."""
    row = value_type_for_tag(tag)
    if row is not None and row.from_items is not None:
        return row.from_items  # type: ignore[no-any-return]
    ext = _EXT_DEC.get(tag)
    return ext[0] if ext is not None else None


def _tag_name(tag: int) -> str:
    row = value_type_for_tag(tag)
    if row is not None:
        return row.name  # type: ignore[no-any-return]
    ext = _EXT_DEC.get(tag)
    return ext[1] if ext is not None else f"tag {tag}"


def _check_fraction(v: Any) -> None:
    # The Fraction constructor would normalise; the encoding must already be normal.
    if type(v) is not tuple or len(v) != 2 or type(v[0]) is not int or type(v[1]) is not int:
        raise CodecError("a fraction is [numerator, denominator], two integers")
    if v[1] <= 0:
        raise CodecError("a fraction's denominator is positive")
    if math.gcd(v[0], v[1]) != 1:  # bounded: both have at most INT_BYTES_MAX bytes
        raise CodecError("a fraction is in lowest terms")


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode untrusted bytes into one value, or raise DecodeError saying what and where."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.bytes_max:
        raise DecodeError(f"input of {len(data)} bytes exceeds the limit of {limits.bytes_max}")
    if not data:
        raise DecodeError("empty input", "$", 0)
    value = _read(data, limits)
    _check_canonical(value, data)
    return value


def _read(data: bytes, limits: Limits) -> Any:
    """Pass 1: the decoder over the whole input, which must hold exactly one item."""
    reader = _Decoder(data, limits)
    try:
        value = reader.item(0)
        if reader.pos != len(data):
            raise _Fail(f"{len(data) - reader.pos} trailing bytes after the value", reader.pos)
    except _Fail as f:
        raise f.error() from None
    except RecursionError:
        raise DecodeError("value nested too deeply", "$", reader.pos) from None
    except Exception as e:  # a bug of ours: still a DecodeError, and marked as such
        raise DecodeError(f"internal error: {type(e).__name__}: {_error_text(e)}", "$",
                          reader.pos) from None
    return value


def _check_canonical(value: Any, data: bytes) -> None:
    """Pass 2: a valid value. Its encoding is exactly the input by pass 1: every head
    and float in its shortest form, map keys in canonical order, and each tagged
    object's own encoding compared with the bytes it was read from (_Decoder.tag).
    tests/test_codec.py checks that a full re-encoding still equals the input."""
    try:
        check_value(value)
    except ValueRuleError as e:
        raise DecodeError(f"not a valid value: {e.detail}", e.path) from None
    except RecursionError:
        raise DecodeError("value nested too deeply") from None
    except Exception as e:
        raise DecodeError(f"internal error: {type(e).__name__}: {_error_text(e)}") from None
