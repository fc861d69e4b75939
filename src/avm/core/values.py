"""Immutable values, substructural wrappers and discretionary sealers (DESIGN section 2).

    "State, contexts and message contents are immutable values ... A step that outputs
    anything else (a list, a dict, an open file, a lambda) fails its batch with an error
    that names the path to the offending value."

**Immutable for real.** Every value type of the project (records, :class:`Map`,
:class:`Linear`/:class:`Affine`/:class:`Relevant`, :class:`Sealed`, :class:`Sealer`,
:class:`Unsealer`, :class:`Fraction`, and ``Capability``/``Self`` in ``avm.core.caps``) is
a ``tuple`` subclass with ``__slots__ = ()``: its fields are tuple items read through C
getters, it has no ``__dict__`` and no writable slot, and its ``__class__`` is a read-only
property. So neither ``v.x = 1``, nor ``object.__setattr__(v, "x", 1)``, nor
``object.__setattr__(v, "__class__", Other)`` can change a value once it exists, and a
value shared between uses (a cached capability context, say) cannot be rewritten by one
of them. Nothing is cached on a value either: the substructural count of a record is
computed when needed (or passed by the core, which knows it), never stored on it.

**Exact types.** A value's type is tested with ``type(v) is T``, never ``isinstance``: a
user subclass of ``Linear``, ``Map``, ``tuple`` or ``str`` is not a value (it could carry a
``__dict__`` or override equality), and ``check_value`` accepts exactly the types that
``encode`` can store.

**One table of types.** :data:`VALUE_TYPES` holds one :class:`ValueType` descriptor per
value type: its walk shape, O(1) shape check, children, substructural item kind and
identity, CBOR tag and payload conversion, order rank, reflect name and display. The walk,
``order_key``, ``commons.reflect`` and the codec read it; nothing else dispatches on
types, and a test checks that every dispatcher knows every registered type.

**What forging with ``tuple.__new__`` can still do in-process.** Code running in the same
Python process can build any tuple subclass instance with ``tuple.__new__(T, items)``,
bypassing constructors. The walk re-checks, in O(1) per value, the *shape* of every
tuple-based value it visits (record arity, field types of capabilities and sealed values,
a Fraction in lowest terms, a Map made of two persistent maps); what it cannot check in
O(1) is a :class:`Map`'s substructural index (a forged map can claim that a linear value
inside it is not there) and a record's ``__post_init__`` invariants. A forged value never
survives a trip through the codec: ``decode`` rebuilds every value with its constructor
and the map's index from its entries. Hosts decode what untrusted steps output, so the
gap is closed there; in the simulator it exists only for code that could equally patch
the simulator itself.

Validation is a walk, and the walk is on the hot path of every step, so it is built to
be cheap where it matters:

* atoms are recognised by one ``type(v) in _FREE`` test, or, for ints and text (which
  the encoding limits: :data:`INT_BYTES_MAX`, no lone surrogates), two comparisons or
  one ``str.isascii()``;
* depth (:data:`DEPTH_MAX`, counted as the codec counts it) is the room the walk carries
  down, one comparison per container;
* a :class:`Map` validates what is put into it (keys, entries, at most
  :data:`KEY_HASH_COLLISIONS_MAX` keys of one hash, depth) and keeps a bound on its own
  depth, so a map is trusted in O(1) and the walk only descends into the few keys whose
  values hold substructural items (the map keeps that index itself). A 100,000-entry
  state updated one key per message therefore costs O(log n) per message, not O(n);
* paths are only built when something is wrong: the fast walk raises a bare marker, and
  a second, slower walk finds the path for the error message.

So ``check_value`` accepts exactly what ``encode`` can store, except for the total size
and item count of the encoding, which only the encoding measures (``docs/values.md``,
"What can be stored").

Substructural conservation within one step counts items by what they *are*: a
capability or a cryptographically sealed value by its type and exact ciphertext bytes (so
``Capability(*fields)`` or ``decode(encode(cap))`` of a linear capability is a copy of it),
a ``Linear``/``Affine``/``Relevant`` wrapper by object identity (a step may mint new
wrappers, and rebuilding an equal ``Linear(x)`` while dropping the original is a drop).
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from fractions import Fraction as _PyFraction
from typing import Any, ClassVar

import immutables
from typing_extensions import dataclass_transform

from .errors import (
    CodecError,
    SubstructuralError,
    UnsealError,
    UsageError,
    ValueLimitError,
    ValueRuleError,
)
from .fraction import Fraction, _fraction_shape
from .tuplevalue import READ_ONLY_CLASS, TupleValue
from .tuplevalue import field_getter as _field
from .tuplevalue import no_order as _no_order

__all__ = [
    "UNRESTRICTED",
    "AFFINE",
    "RELEVANT",
    "LINEAR",
    "KIND_NAMES",
    "Fraction",
    "Map",
    "Substructural",
    "Linear",
    "Affine",
    "Relevant",
    "SUBSTRUCTURAL_TYPES",
    "Sealed",
    "Sealer",
    "Unsealer",
    "sealer_pair",
    "record",
    "record_name",
    "record_class",
    "record_fields",
    "registered_records",
    "replace_fields",
    "map_from_checked_pairs",
    "ValueType",
    "VALUE_TYPES",
    "value_type",
    "value_type_for_tag",
    "register_value_type",
    "CBOR_ENCODERS",
    "check_value",
    "check_size",
    "BYTES_MAX",
    "ITEMS_MAX",
    "DEPTH_MAX",
    "INT_BYTES_MAX",
    "KEY_HASH_COLLISIONS_MAX",
    "ValueLimitError",
    "substructural_items",
    "item_identity",
    "kind_of",
    "check_conservation",
    "order_key",
    "display",
]

# Substructural kinds are two bits: "may not be copied" and "may not be dropped".
# Combining two kinds (a capability sealing a context, a tuple holding both) is bitwise OR.
UNRESTRICTED = 0
AFFINE = 1  # no copy
RELEVANT = 2  # no drop
LINEAR = 3  # neither
NO_COPY = 1
NO_DROP = 2
KIND_NAMES = {UNRESTRICTED: "unrestricted", AFFINE: "affine", RELEVANT: "relevant", LINEAR: "linear"}

# CBOR tags (the project's block, documented in docs/values.md). 2, 3 (bignums) and 30
# (rationals) are the standard ones.
TAG_FRACTION = 30
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

_new: Any = tuple.__new__  # builds a tuple subclass instance from its items
_tuple_eq: Any = tuple.__eq__
_tuple_hash = tuple.__hash__
_tuple_len = tuple.__len__
_IMap = immutables.Map


class _Invalid(Exception):
    """Raised by the fast walk; the slow walk then builds the path for the real error."""


# Atoms: no children and no substructural items. (A Fraction is atomic too, but it is a
# tuple underneath, so the walk checks its shape through the table.) Of these, ``int``
# and ``str`` values also need a check of their own (size, lone surrogates); the others
# (``_FREE``) are valid whatever their value.
_ATOMS: frozenset[type] = frozenset({type(None), bool, int, float, str, bytes})
_FREE: frozenset[type] = frozenset({type(None), bool, float, bytes})


# ---------------------------------------------------------------------------------------
# What the encoding can store (item 10: check_value accepts exactly what encode can store)
# ---------------------------------------------------------------------------------------

#: A value nests at most this many levels, counted as the codec counts them: every
#: non-empty tuple and map is one level, every tagged type (record, Fraction, wrapper,
#: Sealed, Sealer, Unsealer, Capability, Self, an int beyond 64 bits) one more, a record
#: and a Sealed two (a tag over an array). Equal to ``codec.DEFAULT_LIMITS.depth_max``.
DEPTH_MAX = 64
#: An int's magnitude (``n`` for ``n >= 0``, ``-1 - n`` below) has at most this many bytes.
#: Equal to ``codec.INT_BYTES_MAX``.
INT_BYTES_MAX = 1024
#: At most this many keys of one map share one 32-bit hash of the persistent map.
#: Equal to ``codec.KEY_HASH_COLLISIONS_MAX``.
KEY_HASH_COLLISIONS_MAX = 16

#: The canonical encoding of one value (a state, a message's content) is at most this
#: many bytes. Equal to ``codec.DEFAULT_LIMITS.bytes_max``.
BYTES_MAX = 16 * 1024 * 1024
#: ... and at most this many CBOR data items (every int, string, float, array, map, key,
#: value and tag is one). Equal to ``codec.DEFAULT_LIMITS.items_max``.
ITEMS_MAX = 1_000_000

_INT_LIMIT = 1 << (8 * INT_BYTES_MAX)  # _NINT_LIMIT <= n < _INT_LIMIT fits the size limit
_NINT_LIMIT = -_INT_LIMIT
_BIG = 1 << 64  # _NBIG <= n < _BIG is a plain CBOR int; beyond, a bignum: a tag, one level
_NBIG = -_BIG
#: The depth bound of a map the core updated without measuring (``_set_plain``,
#: ``_set_counted``): no bound, so a check descends into it.
_DEPTH_UNKNOWN = 1 << 30
#: The size bounds of such a map: unknown, so a size check measures it.
_WEIGHT_UNKNOWN = 1 << 62
_FOLD_MASK = 0xFFFFFFFF


def _text_ok(s: str) -> bool:
    """True if ``s`` has a UTF-8 form (no lone surrogate). Call it for non-ASCII text only."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int_problem(n: int) -> str:
    return (f"an integer of {(max(n, -1 - n).bit_length() + 7) // 8} bytes exceeds the limit "
            f"of {INT_BYTES_MAX} bytes")


def _text_problem(s: str) -> str:
    i = next(i for i, c in enumerate(s) if 0xD800 <= ord(c) <= 0xDFFF)
    return (f"text with a lone surrogate (U+{ord(s[i]):04X} at index {i}) has no UTF-8 "
            "form, so it cannot be stored")


_DEPTH_TEXT = (f"value nested deeper than {DEPTH_MAX} levels (every non-empty tuple or map "
               "and every tagged value is a level, a record or Sealed two)")


class _FoldProbe:
    """Counts the keys of a persistent map that share one 32-bit hash.

    A lookup compares the key it looks for with every stored key filed under the same
    32-bit hash (and possibly with one other key at the same trie slot), so looking up a
    probe that hashes like ``key`` and never equals anything visits exactly the keys that
    collide with it, in O(log n + collisions).
    """

    __slots__ = ("h", "f", "n")

    def __init__(self, h: int) -> None:
        self.h = h
        f = (h ^ (h >> 32)) & _FOLD_MASK
        self.f = 0xFFFFFFFE if f == _FOLD_MASK else f
        self.n = 0

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        h = hash(other)
        f = (h ^ (h >> 32)) & _FOLD_MASK
        if f == self.f or f == _FOLD_MASK and self.f == 0xFFFFFFFE:
            self.n += 1
        return False

    def __ne__(self, other: object) -> bool:
        return True


def _collision_problem_at(m: immutables.Map, key: Any, more: int = 0) -> str | None:
    """R3 for one key: how many keys of ``m`` share its 32-bit hash (plus ``more``)."""
    probe = _FoldProbe(hash(key))
    m.get(probe)
    n = probe.n + more
    return _collisions_text(n) if n > KEY_HASH_COLLISIONS_MAX else None


def _collision_problem(keys: Iterable[Any]) -> str | None:
    """R3 for a whole set of keys, in O(n) whatever the keys."""
    folds = [(h ^ (h >> 32)) & _FOLD_MASK for h in map(hash, keys)]
    if len(folds) <= KEY_HASH_COLLISIONS_MAX or len(set(folds)) == len(folds):
        return None
    counts: dict[int, int] = {}
    for f in folds:
        f = 0xFFFFFFFE if f == _FOLD_MASK else f
        counts[f] = counts.get(f, 0) + 1
    worst = max(counts.values())
    return _collisions_text(worst) if worst > KEY_HASH_COLLISIONS_MAX else None


def _collisions_text(n: int) -> str:
    return (f"{n} keys share one hash; a map may hold at most {KEY_HASH_COLLISIONS_MAX} such "
            "keys (building it would take quadratic time)")


# ---------------------------------------------------------------------------------------
# Substructural wrappers
# ---------------------------------------------------------------------------------------


class Substructural(TupleValue):
    """A value whose copies and drops are counted at every step boundary.

    Only the three exact types :class:`Linear`, :class:`Affine` and :class:`Relevant` are
    values; a subclass of them is not.
    """

    __slots__ = ()
    KIND: ClassVar[int] = UNRESTRICTED
    value: Any = _field(0, "The wrapped value.")

    def __new__(cls, value: Any) -> Substructural:
        return _new(cls, (value,))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other[0] == self[0]  # type: ignore[index]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self[0]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self[0]!r})"

    def __reduce__(self) -> tuple:
        return (type(self), (self[0],))

    @property
    def kind(self) -> int:
        return self.KIND


class Linear(Substructural):
    """May be neither copied nor dropped; destroy it only by sending it to ``null``."""

    __slots__ = ()
    KIND = LINEAR


class Affine(Substructural):
    """May be dropped but not copied."""

    __slots__ = ()
    KIND = AFFINE


class Relevant(Substructural):
    """May be copied but not dropped."""

    __slots__ = ()
    KIND = RELEVANT


SUBSTRUCTURAL_TYPES: frozenset[type] = frozenset({Linear, Affine, Relevant})


# ---------------------------------------------------------------------------------------
# Persistent map
# ---------------------------------------------------------------------------------------

# Iteration order of a map's keys, computed once per inner persistent map and kept in a
# bounded module-level cache (a value may not carry a cache of its own). Entries hold a
# reference to the inner map, so its id cannot be reused while cached.
_ORDER: dict[int, tuple[immutables.Map, tuple]] = {}
_ORDER_KEYS_MAX = 1 << 20  # total keys held in cached orders
_ORDER_ENTRIES_MAX = 4096
_order_keys = 0


def _order_of(m: immutables.Map) -> tuple:
    global _order_keys
    e = _ORDER.get(id(m))
    if e is not None and e[0] is m:
        return e[1]
    order = tuple(sorted(m, key=order_key))
    while _ORDER and (len(_ORDER) >= _ORDER_ENTRIES_MAX or _order_keys + len(order) > _ORDER_KEYS_MAX):
        old = _ORDER.pop(next(iter(_ORDER)), None)
        if old is not None:
            _order_keys -= len(old[1])
    _ORDER[id(m)] = (m, order)
    _order_keys += len(order)
    return order


class Map(TupleValue):
    """A frozen persistent mapping (HAMT) whose contents are validated on the way in.

    Updates share structure with the original, so ``m.set(k, v)`` on a large map is
    O(log n). The map also keeps, beside its entries, a small index of the keys whose
    values hold substructural items; the step checker walks only those.

    Underneath it is the tuple ``(entries, substructural index, token, depth)``:
    ``token`` names the exact substructural entries (key -> same value object), so two
    maps with the same token hold the same linear items in the same places, which lets
    the step checker skip its census in O(1) for "update a plain key" steps. ``depth`` is
    an upper bound on how deeply the map's encoding nests (see :data:`DEPTH_MAX`): exact
    when the map is built, raised by ``set`` and ``update`` when a deeper key or value
    comes in, never lowered (a ``delete`` keeps it). A map built by the public API is at
    most ``DEPTH_MAX`` deep, so it is trusted in O(1) wherever it sits at most
    ``DEPTH_MAX - depth`` levels down; deeper down (or when the core updated it without
    measuring, ``_DEPTH_UNKNOWN``) the checker descends into it to count exactly.

    The last two fields bound the size of the map's encoding (see :func:`check_size`):
    it takes at most ``9 + 18 * len + bytes`` bytes and ``1 + 2 * len + items`` items,
    ``bytes`` and ``items`` being what its keys and values weigh beyond 9 bytes and one
    item each. A plain int, short ASCII text, a float, ``None`` or a bool weighs no
    more, so updating a map of such entries only reads the two fields (a counter's
    update stays cheap); heavier entries add their excess, an overwrite or ``delete``
    subtracts the old one's, so the bounds do not drift. The 18 bytes per entry stay
    below the byte limit as long as the item limit holds, so plain entries never make
    :func:`check_size` measure a map: it decides in O(1) that a map state can be
    stored, however large, and measures the encoding only near a limit.
    """

    __slots__ = ()
    _m: immutables.Map = _field(0, "The entries.")
    _subs: immutables.Map = _field(1, "Key -> substructural count, for keys that hold any.")
    _tok: object = _field(2, "Identity of the substructural entries.")
    _d: int = _field(3, "Upper bound on the nesting depth of the map's encoding.")
    _b: int = _field(4, "Bytes of the entries' encodings beyond 9 per key and value.")
    _i: int = _field(5, "Data items of the entries beyond 1 per key and value.")

    def __new__(cls, items: Mapping | Iterable[tuple[Any, Any]] | None = None, **kw: Any) -> Map:
        m: immutables.Map = _EMPTY_IMAP
        subs: immutables.Map = _EMPTY_IMAP
        d = 0
        if items is not None or kw:
            pairs = list(items.items() if isinstance(items, Mapping) else (items or ()))
            pairs.extend(kw.items())
            with m.mutate() as mm, subs.mutate() as ms:
                for k, v in pairs:
                    dk = _key_depth(k)
                    n, dv = _entry(v, k)
                    mm[k] = v
                    if n:
                        ms[k] = n
                    elif k in ms:
                        del ms[k]
                    if dk > dv:
                        dv = dk
                    if dv >= d:
                        d = dv + 1
                m = mm.finish()
                subs = ms.finish()
            if len(m) > KEY_HASH_COLLISIONS_MAX:
                why = _collision_problem(m.keys())
                if why is not None:
                    raise ValueLimitError("$", why)
        b, i = _excess_of_entries(m)
        return _new(Map, (m, subs, _new_tok(subs), d, b, i))

    @staticmethod
    def _make(m: immutables.Map, subs: immutables.Map, tok: object,
              depth: int = _DEPTH_UNKNOWN) -> Map:
        return _new(Map, (m, subs, tok, depth, _WEIGHT_UNKNOWN, _WEIGHT_UNKNOWN))

    # -- reading --------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        return self._m[key]

    def __contains__(self, key: object) -> bool:
        return key in self._m

    def __iter__(self) -> Iterator[Any]:
        # Hash order would differ between processes (Python salts str and bytes hashes),
        # and a step that loops over a map must give the same outputs everywhere. So a
        # map iterates in a fixed order of its keys.
        return iter(_order_of(self._m))

    def items(self) -> Iterator[tuple[Any, Any]]:
        m = self._m
        return ((k, m[k]) for k in _order_of(m))

    def values(self) -> Iterator[Any]:
        m = self._m
        return (m[k] for k in _order_of(m))

    def keys(self) -> tuple:
        return _order_of(self._m)

    def __len__(self) -> int:
        return len(self._m)

    def __bool__(self) -> bool:
        return len(self._m) != 0

    def get(self, key: Any, default: Any = None) -> Any:
        return self._m.get(key, default)

    # -- updating -------------------------------------------------------------------
    def set(self, key: Any, value: Any) -> Map:
        """A new map with ``key`` bound to ``value``; raises ValueRuleError on bad values.

        A key equal to one already in the map is not stored (the map keeps the first key
        object, as a ``dict`` does), so str and int keys are checked only when new.
        """
        tk = type(key)
        if tk is str:
            dk = 0 if key.isascii() else _key_depth(key)
        elif tk is int:
            dk = 0 if _NBIG <= key < _BIG else _key_depth(key)
        else:
            dk = _key_depth(key)
        tv = type(value)
        light = True  # the value weighs at most 9 bytes and one item (see _excess)
        if tv is int:
            if _NBIG <= value < _BIG:
                n = dv = 0
            else:
                n, dv = _entry(value, key)
                light = False
        elif tv is str and value.isascii():
            n = dv = 0
            light = len(value) <= 8
        elif tv in _FREE:
            n = dv = 0
            light = tv is not bytes or len(value) <= 8
        else:
            n, dv = _entry(value, key)
            light = False
        m0 = self._m
        if len(m0) >= KEY_HASH_COLLISIONS_MAX and key not in m0:  # a new key, a big map
            why = _collision_problem_at(m0, key, 1)
            if why is not None:
                raise ValueLimitError("$", why)
        if dk > dv:
            dv = dk
        d = self._d
        if dv >= d:
            d = dv + 1
        # The size bounds: the new entry's excess in, the old one's out. A map of light
        # entries (excess 0) that gets a light value under a light key stays at 0: a
        # counter's update costs these two reads and tests.
        b, i = self._b, self._i
        if b < _WEIGHT_UNKNOWN and (b or i or not light or not (
                (tk is str and len(key) <= 8 and key.isascii())
                or (tk is int and _NBIG <= key < _BIG))):
            old = m0.get(key, _MISSING)
            if old is _MISSING:
                xb, xi = (0, 0) if light else _excess(value)
                kb, ki = _excess(key)
                b += xb + kb
                i += xi + ki
            else:
                to = type(old)
                if not (light and (  # a light value over a light one: nothing changes
                        (to is int and _NBIG <= old < _BIG) or to is float or to is bool
                        or old is None or (to is str and len(old) <= 8 and old.isascii()))):
                    xb, xi = (0, 0) if light else _excess(value)
                    ob, oi = _excess(old)
                    b += xb - ob
                    i += xi - oi
        subs = self._subs
        if n:
            subs = subs.set(key, n)
        elif subs and key in subs:
            subs = subs.delete(key)
        else:
            return _new(Map, (m0.set(key, value), subs, self._tok, d, b, i))
        return _new(Map, (m0.set(key, value), subs, _new_tok(subs), d, b, i))

    def _set_counted(self, key: Any, value: Any, n: int) -> Map:
        """Set a value the core has already validated, whose substructural count is ``n``.

        For the core's own records (batches, machine records) on the hot path: they were
        checked when built, so walking them again on every map update would be waste.
        Nothing is measured either: the map's depth bound becomes unknown, so checking
        the map as a value (a nested network's state) descends into it.
        """
        m0 = self._m
        m = m0.set(key, value)
        if _MAP_DEPTHS and id(m0) in _MAP_DEPTHS:
            _carry_depth(m0, m, key, value)
        if _MAP_WEIGHTS and id(m0) in _MAP_WEIGHTS:
            _carry_weight(m0, m, key, value)
        subs = self._subs
        if n:
            subs = subs.set(key, n)
            return _new(Map, (m, subs, _new_tok(subs), _DEPTH_UNKNOWN, _WEIGHT_UNKNOWN,
                              _WEIGHT_UNKNOWN))
        if subs and key in subs:
            subs = subs.delete(key)
            return _new(Map, (m, subs, _new_tok(subs), _DEPTH_UNKNOWN, _WEIGHT_UNKNOWN,
                              _WEIGHT_UNKNOWN))
        return _new(Map, (m, subs, self._tok, _DEPTH_UNKNOWN, _WEIGHT_UNKNOWN, _WEIGHT_UNKNOWN))

    def _set_plain(self, key: Any, value: Any) -> Map:
        """Set without validation: only for the core's own bookkeeping maps, whose keys
        and values it builds itself and which hold no substructural items. The depth
        bound becomes unknown, as with :meth:`_set_counted`."""
        m0 = self._m
        m = m0.set(key, value)
        if _MAP_DEPTHS and id(m0) in _MAP_DEPTHS:
            _carry_depth(m0, m, key, value)
        if _MAP_WEIGHTS and id(m0) in _MAP_WEIGHTS:
            _carry_weight(m0, m, key, value)
        subs = self._subs
        if key in subs:
            subs = subs.delete(key)
            return _new(Map, (m, subs, _new_tok(subs), _DEPTH_UNKNOWN, _WEIGHT_UNKNOWN,
                              _WEIGHT_UNKNOWN))
        return _new(Map, (m, subs, self._tok, _DEPTH_UNKNOWN, _WEIGHT_UNKNOWN, _WEIGHT_UNKNOWN))

    def delete(self, key: Any) -> Map:
        """A new map without ``key`` (KeyError if absent, as ``del d[k]``)."""
        m0 = self._m
        b, i = self._b, self._i
        if (b or i) and b < _WEIGHT_UNKNOWN:
            xb, xi = _excess(m0[key])
            kb, ki = _stored_key_floor(key)
            b -= xb + kb
            i -= xi + ki
        m = m0.delete(key)
        if _MAP_DEPTHS and id(m0) in _MAP_DEPTHS:
            _carry_depth(m0, m)
        if _MAP_WEIGHTS and id(m0) in _MAP_WEIGHTS:
            _carry_weight(m0, m, key)
        subs = self._subs
        if key in subs:
            subs = subs.delete(key)
            return _new(Map, (m, subs, _new_tok(subs), self._d, b, i))
        return _new(Map, (m, subs, self._tok, self._d, b, i))

    def discard(self, key: Any) -> Map:
        """A new map without ``key``; the same map if it was absent."""
        return self.delete(key) if key in self._m else self

    def update(self, other: Mapping | Iterable[tuple[Any, Any]] = (), **kw: Any) -> Map:
        """A new map with every pair of ``other`` (and ``kw``) set."""
        pairs = list(other.items() if isinstance(other, Mapping) else other)
        pairs.extend(kw.items())
        touched = False
        d = self._d
        b, i = self._b, self._i
        new_keys: list = []
        with self._m.mutate() as mm, self._subs.mutate() as ms:
            for k, v in pairs:
                dk = _key_depth(k)
                n, dv = _entry(v, k)
                if b < _WEIGHT_UNKNOWN:
                    old = mm.get(k, _MISSING)
                    vb, vi = _excess(v)
                    if old is _MISSING:
                        kb, ki = _excess(k)
                        b += kb + vb
                        i += ki + vi
                    else:
                        ob, oi = _excess(old)
                        b += vb - ob
                        i += vi - oi
                size = len(mm)
                mm[k] = v
                if len(mm) != size:
                    new_keys.append(k)
                if n:
                    ms[k] = n
                    touched = True
                elif k in ms:
                    del ms[k]
                    touched = True
                if dk > dv:
                    dv = dk
                if dv >= d:
                    d = dv + 1
            subs = ms.finish()
            m = mm.finish()
        if new_keys and len(m) > KEY_HASH_COLLISIONS_MAX:
            if len(new_keys) * 8 < len(m):
                why = next(filter(None, (_collision_problem_at(m, k) for k in new_keys)), None)
            else:
                why = _collision_problem(m.keys())
            if why is not None:
                raise ValueLimitError("$", why)
        return _new(Map, (m, subs, _new_tok(subs) if touched else self._tok, d, b, i))

    # -- identity -------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return type(other) is Map and self._m == other._m  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not (type(other) is Map and self._m == other._m)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._m)  # the persistent map caches its own hash

    def __repr__(self) -> str:
        items = list(self.items())
        if len(items) > 20:
            head = ", ".join(f"{k!r}: {v!r}" for k, v in items[:20])
            return f"Map({{{head}, ...}} {len(items)} entries)"
        return "Map({" + ", ".join(f"{k!r}: {v!r}" for k, v in items) + "})"

    def __reduce__(self) -> tuple:
        return (Map, (tuple(self.items()),))

    def substructural_keys(self) -> Iterator[Any]:
        """Keys whose values hold linear, affine or relevant items (in iteration order)."""
        return iter(sorted(self._subs, key=order_key))

    @property
    def substructural_count(self) -> int:
        return sum(self._subs.values())


Mapping.register(Map)

_EMPTY_IMAP: immutables.Map = immutables.Map()
_EMPTY_TOK = object()


def _new_tok(subs: immutables.Map) -> object:
    return object() if subs else _EMPTY_TOK


# Depth bounds learnt for maps whose own bound is unknown (the core's bookkeeping maps,
# updated by _set_plain/_set_counted without measuring, so that a top-level network pays
# nothing for depth). A check that has to descend into such a map records its depth here,
# keyed by the persistent map's identity (the entry holds the map, so the id is not
# reused while cached). The core's updates then move the bound forward to the new map,
# measuring only the key and value they put in (at most _MEASURE_BUDGET containers, else
# the lineage is forgotten), for _DEPTH_TTL updates. So a nested network, whose whole
# state is checked after every outer step, pays O(what its step changed), plus a fresh
# descent every _DEPTH_TTL updates of a map, instead of O(its size) every step; and a
# network that is checked once (encode(sim.snapshot())) stops paying after that many.
_MAP_DEPTHS: dict[int, tuple[immutables.Map, int, int]] = {}
_MAP_DEPTHS_MAX = 4096
_DEPTH_TTL = 256
_MEASURE_BUDGET = 16


class _OverBudget(Exception):
    pass


def _cached_depth(m: immutables.Map) -> int:
    e = _MAP_DEPTHS.get(id(m))
    return e[1] if e is not None and e[0] is m else _DEPTH_UNKNOWN


def _cache_depth(m: immutables.Map, d: int, ttl: int = _DEPTH_TTL) -> None:
    if len(_MAP_DEPTHS) >= _MAP_DEPTHS_MAX:
        try:
            del _MAP_DEPTHS[next(iter(_MAP_DEPTHS))]
        except (StopIteration, KeyError, RuntimeError):  # pragma: no cover - threads
            pass
    _MAP_DEPTHS[id(m)] = (m, d, ttl)


def _carry_depth(old: immutables.Map, new: immutables.Map, key: Any = None,
                 value: Any = None) -> None:
    """A core update made ``new`` from ``old``: move a learnt depth bound forward (so the
    cache holds about one entry per map in use, and empties when lineages expire)."""
    e = _MAP_DEPTHS.pop(id(old), None)
    if e is None or e[0] is not old or e[2] <= 0:
        return
    d = e[1] or 1
    left = [_MEASURE_BUDGET]
    try:
        for x in (key, value):
            tx = type(x)
            if tx in _ATOMS and (tx is not int or _NBIG <= x < _BIG):
                continue
            dx = _depth(x, left) + 1
            if dx > d:
                d = dx
    except _OverBudget:
        return
    _cache_depth(new, d, e[2] - 1)


# ---------------------------------------------------------------------------------------
# Size bounds: what the encoding of a value costs at most (bytes, data items)
# ---------------------------------------------------------------------------------------

_MISSING = object()


def _head(n: int) -> int:
    """The bytes of a CBOR head whose argument is ``n`` (a length, an int, a tag)."""
    return 1 if n < 24 else 2 if n < 256 else 3 if n < 65536 else 5 if n < 4294967296 else 9


def _weigh(v: Any) -> tuple[int, int]:
    """Upper bounds on the bytes and data items of ``v``'s canonical encoding.

    Exact for short atoms (a head of 1 byte); longer ones and floats count the longest
    head, 9 bytes (so ``Map.set`` can inline the same weights); a container adds its
    head, at most 9 bytes, and its children; a map contributes the bounds it carries,
    so the walk stops at maps (O(the tuples and records above them)). ``v`` must be a
    checked value. tests/test_trust_size.py checks the bound against the encoding.
    """
    t = type(v)
    if t is int:
        if _NBIG <= v < _BIG:
            return (1 if -24 <= v < 24 else 9), 1
        a = v if v >= 0 else -1 - v
        n = (a.bit_length() + 7) // 8
        return 1 + _head(n) + n, 2  # a bignum: a tag over a byte string
    if t is str:
        n = len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass"))
        return n + (1 if n < 24 else 9), 1
    if t is bytes:
        return len(v) + (1 if len(v) < 24 else 9), 1
    if t is float:
        return 9, 1
    if t is bool or v is None:
        return 1, 1
    if t is Map:
        return _map_weight(v)
    if t is tuple:  # atoms inline, at their longest encodings (9-byte heads)
        b = 9
        i = 1 + len(v)
        for x in v:
            tx = type(x)
            if tx is int:
                if _NBIG <= x < _BIG:
                    b += 9
                    continue
            elif tx is str:
                if x.isascii():
                    b += 9 + len(x)
                    continue
            elif tx is float:
                b += 9
                continue
            elif tx is bytes:
                b += 9 + len(x)
                continue
            elif tx is bool or x is None:
                b += 1
                continue
            e = _RECORD_WEIGHTS.get(id(x))  # a record weighed lately (an output's capability)
            if e is not None and e[0] is x:
                b += e[1]
                i += e[2] - 1
                continue
            xb, xi = _weigh(x)
            b += xb
            i += xi - 1
        return b, i
    e = _RECORD_WEIGHTS.get(id(v))
    if e is not None and e[0] is v:
        return e[1], e[2]
    row = VALUE_TYPES.get(t)
    if row is None or row.tag is None or row.to_items is None:
        raise ValueRuleError("$", f"a {t.__name__} is not a value")
    b, i = _weigh(row.to_items(v))
    b += _head(row.tag)
    i += 1
    # Records (capabilities above all: a machine's state, every output) are immutable
    # values, weighed again at every batch that keeps or sends the same object.
    if len(_RECORD_WEIGHTS) >= _RECORD_WEIGHTS_MAX:
        _RECORD_WEIGHTS.clear()
    _RECORD_WEIGHTS[id(v)] = (v, b, i)
    return b, i


#: id -> (record, bytes bound, items bound) of records weighed lately (the entry holds
#: the record, so its id is not reused while the entry lives); emptied when full.
_RECORD_WEIGHTS: dict[int, tuple[Any, int, int]] = {}
_RECORD_WEIGHTS_MAX = 256


def _excess(v: Any) -> tuple[int, int]:
    """What ``v`` weighs beyond 9 bytes and one item (a Map's size fields sum these)."""
    b, i = _weigh(v)
    return (b - 9 if b > 9 else 0), i - 1


def _stored_key_floor(key: Any) -> tuple[int, int]:
    """What a delete may subtract for ``key``: the map keeps the *first* of equal keys
    (``1``, ``1.0`` and ``True`` are equal, their encodings are not), so only text and
    bytes keys, equal exactly when their encodings are, give back their full excess."""
    t = type(key)
    if t is str or t is bytes:
        return _excess(key)
    return 0, 0


def _excess_of_entries(m: immutables.Map) -> tuple[int, int]:
    b = i = 0
    for k, x in m.items():
        kb, ki = _excess(k)
        xb, xi = _excess(x)
        b += kb + xb
        i += ki + xi
    return b, i


def _weigh_entries(m: immutables.Map) -> tuple[int, int]:
    b, i = _excess_of_entries(m)
    return 9 + 18 * len(m) + b, 1 + 2 * len(m) + i


# Size bounds learnt for maps whose own bounds are unknown (the core's bookkeeping maps),
# keyed and carried forward like _MAP_DEPTHS: a nested network, whose state is size-checked
# after every outer step, pays O(what its step changed), not O(its size).
_MAP_WEIGHTS: dict[int, tuple[immutables.Map, int, int]] = {}


def _map_weight(v: Map) -> tuple[int, int]:
    b = v._b
    m = v._m
    if b < _WEIGHT_UNKNOWN:
        return 9 + 18 * len(m) + b, 1 + 2 * len(m) + v._i
    e = _MAP_WEIGHTS.get(id(m))
    if e is not None and e[0] is m:
        return e[1], e[2]
    b, i = _weigh_entries(m)
    _cache_weight(m, b, i)
    return b, i


def _cache_weight(m: immutables.Map, b: int, i: int) -> None:
    if len(_MAP_WEIGHTS) >= _MAP_DEPTHS_MAX:
        try:
            del _MAP_WEIGHTS[next(iter(_MAP_WEIGHTS))]
        except (StopIteration, KeyError, RuntimeError):  # pragma: no cover - threads
            pass
    _MAP_WEIGHTS[id(m)] = (m, b, i)


def _carry_weight(old: immutables.Map, new: immutables.Map, key: Any,
                  value: Any = _MISSING) -> None:
    """A core update made ``new`` from ``old`` (``value`` missing: a delete): move the
    learnt bounds forward by the entry's change."""
    e = _MAP_WEIGHTS.pop(id(old), None)
    if e is None or e[0] is not old:
        return
    b, i = e[1], e[2]
    prev = old.get(key, _MISSING)
    if prev is not _MISSING:
        pb, pi = _weigh(prev)
        b -= pb
        i -= pi
        if value is _MISSING:
            kb, ki = _stored_key_floor(key)
            b -= kb
            i -= ki
    elif value is not _MISSING:
        kb, ki = _weigh(key)
        b += kb
        i += ki
    if value is not _MISSING:
        vb, vi = _weigh(value)
        b += vb
        i += vi
    _cache_weight(new, b, i)


#: Set by the codec: the exact (bytes, items) of a value's encoding, or CodecError.
_exact_measure: Callable[[Any], tuple[int, int]] | None = None


def set_exact_measure(fn: Callable[[Any], tuple[int, int]]) -> None:
    """The codec registers how to measure an encoding exactly (values cannot import it)."""
    global _exact_measure
    _exact_measure = fn


def exact_size(v: Any) -> tuple[int, int]:
    """The exact bytes and data items of a checked value's encoding (CodecError if it
    cannot be encoded at all). O(the value): :func:`check_size` calls it only when the
    bounds pass a limit."""
    if _exact_measure is None:  # pragma: no cover - the codec is always imported
        raise ValueLimitError("$", "no codec to measure the value with")
    return _exact_measure(v)


def check_size(v: Any, path: str = "$") -> Any:
    """Raise :class:`ValueLimitError` unless ``v``'s encoding fits :data:`BYTES_MAX` bytes
    and :data:`ITEMS_MAX` items; returns ``v``.

    Why a step's result is checked and not only the encoding when it is stored: a host
    that found an unstorable state at commit time could only stop; failing the batch
    that made it leaves everything else running. The check costs O(1) for a map state
    (its bounds) and O(the tuples above the maps) otherwise; the encoding is measured
    only when a bound passes a limit.
    """
    b, i = _weigh(v)
    if b <= BYTES_MAX and i <= ITEMS_MAX:
        return v
    b, i = exact_size(v)
    if b > BYTES_MAX:
        raise ValueLimitError(path, f"the encoding would take {b} bytes, more than the "
                              f"limit of {BYTES_MAX}; keep large data in several machines "
                              "or outside (an adapter), not in one value")
    if i > ITEMS_MAX:
        raise ValueLimitError(path, f"the encoding would hold {i} items, more than the "
                              f"limit of {ITEMS_MAX}; split the value over several machines")
    return v


def map_fits(m: Map) -> bool:
    """Whether a map's bounds alone prove its encoding within both limits (O(1))."""
    b = m._b
    if b >= _WEIGHT_UNKNOWN:
        return False
    n = len(m._m)
    return 9 + 18 * n + b <= BYTES_MAX and 1 + 2 * n + m._i <= ITEMS_MAX


def _map_shape(v: Any) -> str | None:
    if (_tuple_len(v) != 6 or type(v._m) is not _IMap or type(v._subs) is not _IMap
            or type(v._d) is not int or v._d < 0 or type(v._b) is not int or v._b < 0
            or type(v._i) is not int or v._i < 0):
        return ("a Map is (persistent map, substructural index, token, depth bound, "
                "size bounds)")
    for k, n in v._subs.items():
        if type(n) is not int or n <= 0 or k not in v._m:
            return "a Map's substructural index does not match its entries"
    return None


def _key_depth(key: Any, room: int = DEPTH_MAX - 1) -> int:
    """Check a map key; return (an upper bound on) the depth of its encoding.

    Keys must be hashable values that encode canonically, at most ``room`` levels deep
    (a key sits one level below its map). Substructural keys make no sense (a key is
    compared, i.e. observed, on every lookup), so they are refused; so is a NaN anywhere
    in a key (NaN is unequal to itself: the entry could never be found again, and one
    map would have two encodings).
    """
    t = type(key)
    if t is str:
        if key.isascii() or _text_ok(key):
            return 0
        raise ValueLimitError("$", _text_problem(key))
    if t is int:
        if _NBIG <= key < _BIG:
            return 0
        if not _NINT_LIMIT <= key < _INT_LIMIT:
            raise ValueLimitError("$", _int_problem(key))
        if room < 1:
            raise ValueLimitError("$", _DEPTH_TEXT)
        return 1
    if t in _FREE:
        if t is float and key != key:
            raise ValueRuleError("$", "a NaN cannot be (part of) a map key")
        return 0
    if t is tuple:
        if not key:
            return 0
        if room < 1:
            raise ValueLimitError("$", _DEPTH_TEXT)
        d = 0
        for k in key:
            dk = _key_depth(k, room - 1)
            if dk > d:
                d = dk
        return d + 1
    if t is Fraction or t in _RECORDS_BY_CLASS:
        if _check(key, room):
            raise ValueRuleError("$", "a map key may not hold linear, affine or relevant values")
        if t is not Fraction and _nan_inside(key):
            raise ValueRuleError("$", "a NaN cannot be (part of) a map key")
        d = _depth(key)
        return d if d <= room else room
    raise ValueRuleError(
        "$", f"a {t.__name__} cannot be a map key; use str, int, bytes or a tuple of those"
    )


def _entry(v: Any, key: Any) -> tuple[int, int]:
    """Check a value about to be stored under ``key`` (one level below its map).

    Returns its substructural count and an upper bound on its depth (at most
    ``DEPTH_MAX - 1``: the check proved that much even where the bound is looser).
    """
    t = type(v)
    if t in _FREE:
        return _NOTHING
    if t is int:
        if _NBIG <= v < _BIG:
            return _NOTHING
    elif t is str:
        if v.isascii():
            return _NOTHING
    elif t is tuple or t in _RECORDS_BY_CLASS:  # checked and measured in one pass
        try:
            n, d = _measured(v, DEPTH_MAX - 1)
            return n, d if d < DEPTH_MAX else DEPTH_MAX - 1  # a stale map bound inside
        except (_Invalid, IndexError, TypeError, AttributeError, KeyError, ValueError,
                RecursionError):
            pass  # _check says why, with the path
    n = _check(v, DEPTH_MAX - 1, key)
    if t is int or t is str:
        return n, 0 if t is str else 1
    d = _depth(v)
    return n, d if d < DEPTH_MAX else DEPTH_MAX - 1


_NOTHING = (0, 0)


def _measured(v: Any, room: int) -> tuple[int, int]:
    """``_walk(v, None, room)`` and ``_depth(v)`` of a tuple or record, in one pass."""
    t = type(v)
    if t is tuple:
        if not v:
            return _NOTHING
        if room < 1:
            raise _Invalid()
        r, level = room - 1, 1
    else:
        row = VALUE_TYPES.get(t)
        if row is None or row.shape != _RECORD or (row.check is not None and row.check(v)):
            raise _Invalid()
        if room < 2:
            raise _Invalid()
        r, level = room - 2, 2
    n = d = 0
    for x in v:
        tx = type(x)
        if tx is int:
            if _NBIG <= x < _BIG:
                continue
        elif tx is str:
            if x.isascii():
                continue
        elif tx in _FREE:
            continue
        if tx is tuple or tx in _RECORDS_BY_CLASS:
            nx, dx = _measured(x, r)
        else:
            nx = _walk(x, None, r)
            dx = _depth(x)
        n += nx
        if dx > d:
            d = dx
    return n, d + level


def _nan_inside(v: Any) -> bool:
    t = type(v)
    if t is float:
        return v != v
    if t in _ATOMS:
        return False
    if t is Map:
        return any(_nan_inside(k) or _nan_inside(x) for k, x in v._m.items())
    row = VALUE_TYPES.get(t)
    return row is not None and any(_nan_inside(x) for _, x in row.children(v))


def map_from_checked_pairs(pairs: Iterable[tuple[Any, Any]]) -> Map:
    """A Map of pairs whose keys the caller has already checked (the decoder does).

    Values are still walked, for the substructural index and the depth bound; keys are
    only measured (for the depth bound), not re-checked.
    """
    d = 0
    with _EMPTY_IMAP.mutate() as mm, _EMPTY_IMAP.mutate() as ms:
        for k, v in pairs:
            mm[k] = v
            n, dv = _entry(v, k)
            if n:
                ms[k] = n
            elif k in ms:
                del ms[k]
            dk = 0 if type(k) is str else _depth(k)
            if dk > dv:
                dv = dk
            if dv >= d:
                d = dv + 1
        subs = ms.finish()
        m = mm.finish()
        b, i = _excess_of_entries(m)
        return _new(Map, (m, subs, _new_tok(subs), d, b, i))
    raise AssertionError("unreachable")  # pragma: no cover - for type checkers


# ---------------------------------------------------------------------------------------
# Records: registered tuple-based classes with named fields
# ---------------------------------------------------------------------------------------

_RECORDS_BY_NAME: dict[str, type] = {}
_RECORDS_BY_CLASS: dict[type, tuple[str, tuple[str, ...]]] = {}
_RECORD_INDEX: dict[type, dict[str, int]] = {}
_RECORD_POST: dict[type, Callable | None] = {}

# Methods a record class may not define: the record machinery relies on them (tuple
# layout, structural equality and hashing, immutability, copying).
_RECORD_RESERVED = frozenset({
    "__new__", "__init__", "__setattr__", "__delattr__", "__getattribute__", "__getattr__",
    "__eq__", "__ne__", "__hash__", "__iter__", "__len__", "__getitem__", "__contains__",
    "__class__", "__reduce__", "__reduce_ex__", "__getnewargs__", "__getstate__",
    "__setstate__", "__copy__", "__deepcopy__", "__init_subclass__", "__class_getitem__",
})
_RECORD_DROP = frozenset({"__dict__", "__weakref__", "__slots__"})


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: type | None = None, *, name: str | None = None) -> Any:
    """Make a class an immutable record and register it as an AVM value type.

    Write it like a frozen dataclass: annotated fields, defaults, ``field(default_factory=
    ...)``, methods and properties, an optional ``__post_init__`` that may check (not set)
    the fields. The result is a tuple subclass with one C getter per field, a keyword and
    positional constructor, structural equality that is also type-sensitive (a record
    never equals a plain tuple or another record type), a hash, a dataclass-like repr and
    ``__match_args__``. Build changed copies with :func:`replace_fields`. Being a tuple, a
    record also matches sequence patterns (``case (a, b):``), like a namedtuple: match
    records with class patterns.

    The registered *name* (default ``module.QualName``) is what the canonical encoding
    stores, so renaming a class with ``name=`` kept fixed keeps old states readable.
    """

    def wrap(c: type) -> type:
        rname = name or f"{c.__module__}.{c.__qualname__}"
        if type(rname) is not str or not (rname.isascii() or _text_ok(rname)):
            raise ValueRuleError("$", f"a record name is text with a UTF-8 form, not {rname!r}")
        entry = _RECORDS_BY_CLASS.get(c)
        if entry is not None and entry[0] == rname:
            return c  # already a record under this name
        new, fields = _build_record(c)
        old = _RECORDS_BY_NAME.get(rname)
        if old is not None and old.__qualname__ != new.__qualname__:
            raise ValueRuleError("$", f"record name {rname!r} is already registered")
        # A module loaded again (tools reload examples) registers the same name again:
        # the name then decodes to the newest class; instances of the old one stay values.
        _RECORDS_BY_NAME[rname] = new
        _RECORDS_BY_CLASS[new] = (rname, fields)
        _RECORD_INDEX[new] = {f: i for i, f in enumerate(fields)}
        _RECORD_POST[new] = new.__dict__.get("__post_init__")
        register_value_type(ValueType(
            new, "record", shape=_RECORD, tag=TAG_RECORD, rank=6,
            check=_record_shape, children=_record_children,
            to_items=_record_to_items, from_items=_record_from_items,
            describe=lambda v: {"name": _RECORDS_BY_CLASS[type(v)][0]},
            order=_record_order, display=_record_display,
        ))
        return new

    return wrap(cls) if cls is not None else wrap


def _build_record(c: type) -> tuple[type, tuple[str, ...]]:
    """The tuple-based class for the record declared by class ``c``."""
    if dataclasses.is_dataclass(c):
        raise ValueRuleError(
            "$", f"{c.__name__}: use @avm.record alone (it makes the class immutable itself), "
            "not on top of @dataclass")
    if type(c) is not type or c.__bases__ != (object,):
        raise ValueRuleError(
            "$", f"{c.__name__}: a record is a plain class (no base classes, no metaclass); "
            "compose records instead of inheriting")
    ns = dict(c.__dict__)
    bad = sorted(_RECORD_RESERVED & ns.keys())
    if bad:
        raise ValueRuleError(
            "$", f"{c.__name__}: a record may not define {', '.join(bad)}; equality, hashing "
            "and construction are structural")
    # Let dataclasses parse the declaration (ClassVar, field(), KW_ONLY, default order),
    # on a scratch class, so the user's class and its namespace stay untouched.
    ann = ns.get("__annotations__", {})
    scratch_ns = {"__annotations__": dict(ann), "__module__": c.__module__,
                  "__qualname__": c.__qualname__}
    for k in ann:
        if k in ns:
            scratch_ns[k] = ns[k]
    try:
        scratch: Any = dataclasses.dataclass(frozen=True)(type(c.__name__, (), scratch_ns))
    except (TypeError, ValueError) as e:
        raise ValueRuleError("$", f"{c.__name__}: {e}") from None
    flds = dataclasses.fields(scratch)
    all_fields = scratch.__dataclass_fields__  # type: ignore[attr-defined]
    if any(f._field_type is dataclasses._FIELD_INITVAR for f in all_fields.values()):  # type: ignore[attr-defined]
        raise ValueRuleError("$", f"{c.__name__}: InitVar fields are not supported in records")
    for f in flds:
        if not f.init:
            raise ValueRuleError(
                "$", f"{c.__name__}.{f.name}: every record field is set by the constructor "
                "(field(init=False) is not supported)")
        if not f.compare or f.hash is False:
            raise ValueRuleError(
                "$", f"{c.__name__}.{f.name}: every record field takes part in equality")
    names = tuple(f.name for f in flds)
    for k in names:
        ns.pop(k, None)
    for k in _RECORD_DROP:
        ns.pop(k, None)
    slots = c.__dict__.get("__slots__", ())
    for s in (slots,) if isinstance(slots, str) else slots:
        ns.pop(s, None)
    ns["__slots__"] = ()
    for i, fname in enumerate(names):
        ns[fname] = _field(i, f"Field {fname!r}.")
    ns["__new__"] = _record_new(c, flds, "__post_init__" in ns)
    ns["__signature__"] = _record_signature(flds)
    ns["__match_args__"] = tuple(f.name for f in flds if not f.kw_only)
    ns.setdefault("__repr__", _record_repr(tuple(f.name for f in flds if f.repr)))
    ns["__eq__"] = _record_eq
    ns["__ne__"] = _record_ne
    ns["__hash__"] = _tuple_hash
    ns["__reduce__"] = _record_reduce
    ns["__class__"] = READ_ONLY_CLASS
    ns["__setattr__"] = _record_setattr
    ns["__delattr__"] = _record_setattr
    ns.setdefault("__bool__", _true)
    for op in ("__lt__", "__le__", "__gt__", "__ge__"):
        ns.setdefault(op, _no_order)
    for op in ("__add__", "__mul__", "__rmul__"):
        ns.setdefault(op, _not_implemented)
    new = type(c.__name__, (tuple,), ns)
    new.__qualname__ = c.__qualname__
    return new, names


def _true(self: Any) -> bool:
    return True


def _not_implemented(self: Any, other: Any) -> Any:
    return NotImplemented


def _record_new(c: type, flds: tuple, post: bool) -> Callable:
    # Binds arguments like dataclasses' __init__ would (positional, keyword, defaults,
    # factories called only when the argument is absent), then one tuple.__new__. All
    # positional arguments for every field, the common case, skip the binding.
    names = tuple(f.name for f in flds)
    n = len(names)
    pos_names = tuple(f.name for f in flds if not f.kw_only)
    npos = len(pos_names)
    index = {nm: i for i, nm in enumerate(names)}
    defaults = [f.default for f in flds]
    factories = [None if f.default_factory is dataclasses.MISSING else f.default_factory
                 for f in flds]
    qual = c.__qualname__
    missing = dataclasses.MISSING
    # k positional arguments -> the plain defaults that complete them, where that is all
    # the binding there is to do (every field positional, no factory among the rest).
    complete: dict[int, tuple] = {}
    if npos == n:
        for k in range(n, -1, -1):
            if k < n and (defaults[k] is missing or factories[k] is not None):
                break
            complete[k] = tuple(defaults[k:])

    def bind(args: tuple, kw: dict) -> list:
        if len(args) > npos:
            raise TypeError(f"{qual}() takes {npos} positional arguments but {len(args)} were given")
        vals: list = [missing] * n
        for nm, a in zip(pos_names, args, strict=False):
            vals[index[nm]] = a
        for k, a in kw.items():
            i = index.get(k)
            if i is None:
                raise TypeError(f"{qual}() got an unexpected keyword argument {k!r}")
            if vals[i] is not missing:
                raise TypeError(f"{qual}() got multiple values for argument {k!r}")
            vals[i] = a
        absent = []
        for i in range(n):
            if vals[i] is missing:
                if defaults[i] is not missing:
                    vals[i] = defaults[i]
                elif factories[i] is not None:
                    vals[i] = factories[i]()  # type: ignore[misc]
                else:
                    absent.append(names[i])
        if absent:
            raise TypeError(f"{qual}() missing required arguments: {', '.join(map(repr, absent))}")
        return vals

    def __new__(cls: type, *args: Any, **kw: Any) -> Any:  # noqa: N807
        tail = None if kw else complete.get(len(args))
        self: Any = _new(cls, args + tail if tail else args) if tail is not None else _new(cls, bind(args, kw))
        if post:
            self.__post_init__()
        return self

    __new__.__qualname__ = f"{qual}.__new__"
    return __new__


def _record_signature(flds: tuple) -> inspect.Signature:
    params = []
    for f in flds:
        kind = (inspect.Parameter.KEYWORD_ONLY if f.kw_only
                else inspect.Parameter.POSITIONAL_OR_KEYWORD)
        default = (f.default if f.default is not dataclasses.MISSING
                   else inspect.Parameter.empty if f.default_factory is dataclasses.MISSING
                   else _FACTORY)
        params.append(inspect.Parameter(f.name, kind, default=default, annotation=f.type))
    params.sort(key=lambda p: p.kind)  # keyword-only ones last, as in the constructor
    return inspect.Signature(params)


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _record_eq(self: Any, other: object) -> bool:
    return type(other) is type(self) and _tuple_eq(self, other)


def _record_ne(self: Any, other: object) -> bool:
    return not (type(other) is type(self) and _tuple_eq(self, other))


def _record_setattr(self: Any, name: str, value: Any = None) -> None:
    raise dataclasses.FrozenInstanceError(
        f"cannot assign to field {name!r}: records are immutable; use avm.replace_fields")


def _record_reduce(self: Any) -> tuple:
    return (_record_rebuild, (type(self), tuple(self)))


def _record_rebuild(cls: type, items: tuple) -> Any:
    return cls(**dict(zip(_RECORDS_BY_CLASS[cls][1], items, strict=True)))


def _record_repr(shown: tuple[str, ...]) -> Callable:
    def __repr__(self: Any) -> str:  # noqa: N807
        idx = _RECORD_INDEX[type(self)]
        inner = ", ".join(f"{f}={self[idx[f]]!r}" for f in shown)
        return f"{type(self).__qualname__}({inner})"
    return __repr__


def record_name(cls: type) -> str:
    return _RECORDS_BY_CLASS[cls][0]


def record_class(name: str) -> type | None:
    return _RECORDS_BY_NAME.get(name)


def registered_records() -> dict[str, type]:
    return dict(_RECORDS_BY_NAME)


def record_fields(cls: type) -> tuple[str, ...]:
    """The field names of a record class, in order (UsageError if it is not one)."""
    entry = _RECORDS_BY_CLASS.get(cls)
    if entry is None:
        raise UsageError(f"{getattr(cls, '__name__', cls)!r} is not a record class")
    return entry[1]


def _record_fields(cls: type) -> tuple[str, ...] | None:
    entry = _RECORDS_BY_CLASS.get(cls)
    return entry[1] if entry else None


def replace_fields(v: Any, /, **changes: Any) -> Any:
    """A copy of record ``v`` with some fields changed (``dataclasses.replace`` for records).

    Runs the record's ``__post_init__`` if it has one. Nothing is cached on a record, so
    the copy's substructural count is whatever its fields hold.
    """
    cls = type(v)
    idx = _RECORD_INDEX.get(cls)
    if idx is None:
        raise UsageError(f"replace_fields takes a record, not a {cls.__name__}")
    items = [*v]
    try:
        for k, x in changes.items():
            items[idx[k]] = x
    except KeyError as e:
        raise UsageError(f"{cls.__name__} has no field {e.args[0]!r}") from None
    new = _new(cls, items)
    post = _RECORD_POST[cls]
    if post is not None:
        post(new)
    return new


def _record_shape(v: Any) -> str | None:
    n = len(_RECORDS_BY_CLASS[type(v)][1])
    if _tuple_len(v) != n:
        return f"a {type(v).__name__} record has {n} fields, this one {_tuple_len(v)}"
    return None


def _record_children(v: Any) -> Iterable[tuple[str, Any]]:
    return zip((f".{f}" for f in _RECORDS_BY_CLASS[type(v)][1]), v, strict=True)


def _record_to_items(v: Any) -> tuple:
    return (_RECORDS_BY_CLASS[type(v)][0], *v)


def _record_from_items(v: Any) -> Any:
    if type(v) is not tuple or not v or type(v[0]) is not str:
        raise CodecError("malformed record")
    cls = record_class(v[0])
    if cls is None:
        raise CodecError(f"unknown record type {v[0]!r}: register it with @avm.record")
    fields = _RECORDS_BY_CLASS[cls][1]
    if len(v) - 1 != len(fields):
        raise CodecError(f"record {v[0]!r} needs {len(fields)} fields, got {len(v) - 1}")
    try:
        return cls(**dict(zip(fields, v[1:], strict=True)))
    except Exception as e:  # a user's __post_init__ may refuse the fields
        raise CodecError(f"record {v[0]!r} refused its fields: {e}") from None


def _record_order(v: Any) -> tuple:
    return (_RECORDS_BY_CLASS[type(v)][0], tuple(order_key(x) for x in v))


def _record_display(v: Any) -> str:
    fields = _RECORDS_BY_CLASS[type(v)][1]
    inner = ", ".join(f"{f}={display(x)}" for f, x in zip(fields, v, strict=True))
    return f"{type(v).__qualname__}({inner})"


# ---------------------------------------------------------------------------------------
# Sealed values and discretionary sealers
# ---------------------------------------------------------------------------------------


class Sealed(TupleValue):
    """A value hidden behind a sealer; only the matching unsealer opens it.

    Discretionary seals keep the value in memory (they give type safety, not secrecy);
    cryptographic seals (``avm.core.caps``) keep ciphertext. Both show only the sealer.
    ``_held`` keeps, in memory only, what a cryptographic seal was just made from, so the
    step checker sees linear values that went into it; it is never encoded.
    """

    __slots__ = ()
    sealer: str = _field(0, "Name of the sealer.")
    payload: Any = _field(1, "The value (discretionary) or ciphertext (cryptographic).")
    crypto: bool = _field(2, "Cryptographically sealed?")
    kind: int = _field(3, "Substructural kind of what is sealed.")
    _held: tuple = _field(4, "In memory only: what a cryptographic seal was made from.")

    def __new__(
        cls, sealer: str, payload: Any, crypto: bool = False, kind: int = UNRESTRICTED,
        held: tuple = (),
    ) -> Sealed:
        if type(sealer) is not str or type(crypto) is not bool or type(held) is not tuple:
            raise ValueRuleError("$", "Sealed takes (str sealer, payload, bool crypto, kind, tuple held)")
        if crypto:
            if type(payload) is not bytes or type(kind) is not int or kind not in KIND_NAMES:
                raise ValueRuleError("$", "a cryptographic Sealed holds bytes and an int kind in 0..3")
        else:
            if held:
                raise ValueRuleError("$", "a discretionary Sealed holds its payload itself")
            kind = kind_of(payload)
        return _new(cls, (sealer, payload, crypto, kind, held))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Sealed
            and other[0] == self[0]  # type: ignore[index]
            and other[2] == self[2]  # type: ignore[index]
            and other[1] == self[1]  # type: ignore[index]
        )

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(("Sealed", self[0], self[1]))

    def __repr__(self) -> str:
        return f"<sealed by {self[0]!r}>"

    def __reduce__(self) -> tuple:
        return (Sealed, tuple(self))


def _sealed_shape(v: Any) -> str | None:
    if (_tuple_len(v) != 5 or type(v[0]) is not str or type(v[2]) is not bool
            or type(v[3]) is not int or v[3] not in KIND_NAMES or type(v[4]) is not tuple):
        return "a Sealed is (str sealer, payload, bool crypto, int kind 0..3, tuple held)"
    if v[2]:
        if type(v[1]) is not bytes:
            return "a cryptographic Sealed holds bytes"
    elif v[4]:
        return "a discretionary Sealed holds its payload itself"
    return None


class _NamedSealer(TupleValue):
    __slots__ = ()
    name: str = _field(0, "The sealer's name.")

    def __new__(cls, name: str) -> Any:
        if type(name) is not str:
            raise ValueRuleError("$", f"a {cls.__name__} name is text")
        return _new(cls, (name,))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other[0] == self[0]  # type: ignore[index]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self[0]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self[0]!r})"

    def __reduce__(self) -> tuple:
        return (type(self), (self[0],))


class Sealer(_NamedSealer):
    """Seals values under a name. Discretionary: it keeps types apart, it is not secret."""

    __slots__ = ()

    def seal(self, value: Any) -> Sealed:
        check_value(value)
        return Sealed(self[0], value)


class Unsealer(_NamedSealer):
    """Opens values sealed by the :class:`Sealer` of the same name."""

    __slots__ = ()

    def unseal(self, sealed: Any) -> Any:
        if type(sealed) is not Sealed or sealed[2] or sealed[0] != self[0]:
            raise UnsealError(f"not a value sealed by {self[0]!r}")
        return sealed[1]


def _name_shape(v: Any) -> str | None:
    if _tuple_len(v) != 1 or type(v[0]) is not str:
        return f"a {type(v).__name__} is (str name,)"
    return None


def sealer_pair(name: str) -> tuple[Sealer, Unsealer]:
    """A discretionary sealer and its unsealer."""
    return Sealer(name), Unsealer(name)


# ---------------------------------------------------------------------------------------
# The table of value types
# ---------------------------------------------------------------------------------------

# Walk shapes: how the fast walk treats a type (a small int, tested inline).
_ATOM = 0  # no children, no items (checked shape only)
_TUPLE = 1
_MAP = 2
_WRAPPER = 3  # Linear/Affine/Relevant: an item, one child
_RECORD = 4
_SEALED = 5
_HOLDER = 6  # capability-like: maybe an item itself, plus held children (registered by caps)
_OPAQUE = 7  # no children, no items (Sealer, Unsealer, Self)
HOLDER, OPAQUE = _HOLDER, _OPAQUE  # for the rows other core modules register


def _no_children(v: Any) -> tuple:
    return ()


class ValueType:
    """One row of the table of value types: all an operation needs to know about a type.

    * ``name``: the type's name in ``reflect`` answers and messages;
    * ``shape``: how the walk treats it (atom, tuple, map, wrapper, record, sealed,
      holder, opaque);
    * ``check(v)``: why ``v`` (possibly built with ``tuple.__new__``) is malformed, in
      O(1), or None;
    * ``children(v)``: ``(path suffix, value)`` pairs the walk visits;
    * ``item_kind(v)``: the substructural kind of ``v`` itself if it is a counted item
      (0 if not); ``by_bytes(v)``: for items counted by their bytes, those bytes;
    * ``tag``, ``to_items(v)``, ``from_items(payload)``: the CBOR tag and its payload
      (None for the types CBOR has natively);
    * ``rank`` and ``order(v)``: where it sorts among map keys, and its key within the rank;
    * ``describe(v)``: extra fields of its ``reflect`` answer; ``display(v)``: its text;
    * ``depth(v)``: for a tagged type, how many levels its encoding nests when ``check``
      has already proved every atom of ``to_items(v)`` storable, else None (and the walk
      then checks ``to_items(v)`` itself). A shortcut for hot types (capabilities).
    """

    __slots__ = ("type", "name", "shape", "check", "children", "item_kind", "by_bytes",
                 "tag", "to_items", "from_items", "rank", "order", "describe", "display",
                 "example", "depth")

    def __init__(
        self, t: type, name: str, *, shape: int, tag: int | None = None, rank: int = 7,
        check: Callable[[Any], str | None] | None = None,
        children: Callable[[Any], Iterable[tuple[str, Any]]] = _no_children,
        item_kind: Callable[[Any], int] | None = None,
        by_bytes: Callable[[Any], bytes | None] | None = None,
        to_items: Callable[[Any], Any] | None = None,
        from_items: Callable[[Any], Any] | None = None,
        order: Callable[[Any], Any] | None = None,
        describe: Callable[[Any], dict] | None = None,
        display: Callable[[Any], str] | None = None,
        example: Callable[[], Any] | None = None,
        depth: Callable[[Any], int | None] | None = None,
    ) -> None:
        self.type = t
        self.name = name
        self.shape = shape
        self.check = check
        self.children = children
        self.item_kind = item_kind
        self.by_bytes = by_bytes
        self.tag = tag
        self.to_items = to_items
        self.from_items = from_items
        self.rank = rank
        self.order = order
        self.describe = describe
        self.display = display or repr
        self.example = example
        self.depth = depth

    def __repr__(self) -> str:
        return f"<ValueType {self.name} {self.type.__qualname__}>"


#: type -> its descriptor. Every value type is here; nothing else is a value.
VALUE_TYPES: dict[type, ValueType] = {}
#: CBOR tag -> descriptor (for decoding), records share TAG_RECORD.
_BY_TAG: dict[int, ValueType] = {}
#: cbor2 ``encoders=`` mapping for the tuple-based types (cbor2 would otherwise encode a
#: tuple subclass as a plain array without asking): type -> fn(encoder, value).
CBOR_ENCODERS: dict[type, Callable[[Any, Any], None]] = {}
# Types whose items are counted by bytes, not identity (capabilities, crypto Sealed).
_BY_BYTES: dict[type, Callable[[Any], bytes | None]] = {}


def register_value_type(row: ValueType) -> None:
    """Add a type to the table (the core's own modules, and @record)."""
    t = row.type
    VALUE_TYPES[t] = row
    if row.tag is not None:
        if row.tag != TAG_RECORD or TAG_RECORD not in _BY_TAG:
            _BY_TAG[row.tag] = row
        if row.to_items is not None and t not in _ATOMS and t is not tuple:
            CBOR_ENCODERS[t] = _cbor_encoder(row.tag, row.to_items)
    if row.by_bytes is not None:
        _BY_BYTES[t] = row.by_bytes


def _cbor_encoder(tag: int, to_items: Callable[[Any], Any]) -> Callable[[Any, Any], None]:
    from cbor2 import CBORTag

    def encode(encoder: Any, v: Any) -> None:
        encoder.encode(CBORTag(tag, to_items(v)))

    return encode


def value_type(t: type) -> ValueType | None:
    """The descriptor of an exact type, or None if it is not a value type."""
    return VALUE_TYPES.get(t)


def value_type_for_tag(tag: int) -> ValueType | None:
    """The descriptor the decoder uses for a CBOR tag (records: the generic record row)."""
    return _BY_TAG.get(tag)


def _atom(t: type, name: str, rank: int, example: Any, describe: Callable | None = None) -> None:
    register_value_type(ValueType(t, name, shape=_ATOM, rank=rank, describe=describe,
                                  order=_identity, example=lambda: example))


def _identity(v: Any) -> Any:
    return v


def _sized(v: Any) -> dict:
    return {"size": len(v)}


def _wrapper_from(t: type) -> Callable[[Any], Any]:
    return lambda payload: t(payload)


def _sealed_from_items(v: Any) -> Sealed:
    if type(v) is not tuple or len(v) != 4 or type(v[0]) is not str or type(v[2]) is not bool:
        raise CodecError("malformed sealed value")
    if type(v[3]) is not int or not 0 <= v[3] <= 3:
        raise CodecError("malformed sealed value kind")
    if v[2] and type(v[1]) is not bytes:
        raise CodecError("cryptographically sealed payload must be bytes")
    try:
        s = Sealed(v[0], v[1], crypto=v[2], kind=v[3])
    except ValueRuleError as e:
        raise CodecError(f"malformed sealed value: {e}") from None
    if s.kind != v[3]:
        raise CodecError("sealed value kind does not match its contents")
    return s


def _name_from(t: type) -> Callable[[Any], Any]:
    def from_items(v: Any) -> Any:
        if type(v) is not str:
            raise CodecError("sealer name must be text")
        return t(v)
    return from_items


def _fraction_from_items(v: Any) -> Fraction:
    if (type(v) is not tuple or len(v) != 2 or type(v[0]) is not int or type(v[1]) is not int
            or v[1] == 0):
        raise CodecError("malformed fraction")
    return Fraction(v[0], v[1])


def _map_children(v: Any) -> Iterable[tuple[str, Any]]:
    return ((f"[{k!r}]", x) for k, x in v.items())


def _map_order(v: Any) -> tuple:
    return tuple((order_key(k), order_key(x)) for k, x in v.items())


def _sealed_children(v: Any) -> Iterable[tuple[str, Any]]:
    return tuple(("<sealed>", h) for h in v[4]) if v[2] else (("<sealed>", v[1]),)


def _sealed_item_kind(v: Any) -> int:
    return v[3] if v[2] else 0


_atom(type(None), "none", 0, None)
_atom(bool, "bool", 1, True)
_atom(int, "int", 2, -(2**70))
_atom(float, "float", 2, 1.5)
_atom(str, "text", 3, "text", _sized)
_atom(bytes, "bytes", 4, b"\x00\x01", _sized)
register_value_type(ValueType(
    Fraction, "fraction", shape=_ATOM, rank=2, tag=TAG_FRACTION, check=_fraction_shape,
    to_items=lambda v: (v[0], v[1]), from_items=_fraction_from_items, order=_identity,
    example=lambda: Fraction(-1, 3),
    depth=lambda v: 2 if _NBIG <= v[0] < _BIG and v[1] < _BIG else None))
register_value_type(ValueType(
    tuple, "tuple", shape=_TUPLE, rank=5, describe=_sized,
    children=lambda v: ((f"[{i}]", x) for i, x in enumerate(v)),
    order=lambda v: tuple(order_key(x) for x in v),
    display=lambda v: f"({', '.join(display(x) for x in v)}{',' if len(v) == 1 else ''})",
    example=lambda: (1, ("a", b"b"), ())))
register_value_type(ValueType(
    Map, "map", shape=_MAP, rank=7, describe=_sized, check=_map_shape, children=_map_children,
    order=_map_order, to_items=None,
    display=lambda v: "Map({" + ", ".join(f"{display(k)}: {display(x)}" for k, x in v.items()) + "})",
    example=lambda: Map({"a": 1, 2: (Linear(3),)})))
CBOR_ENCODERS[Map] = lambda encoder, v: encoder.encode(dict(v._m))  # cbor2 sorts the keys
for _t, _tag in ((Linear, TAG_LINEAR), (Affine, TAG_AFFINE), (Relevant, TAG_RELEVANT)):
    register_value_type(ValueType(
        _t, _t.__name__.lower(), shape=_WRAPPER, tag=_tag,
        check=lambda v: None if _tuple_len(v) == 1 else "a wrapper holds one value",
        children=lambda v: ((".value", v[0]),), item_kind=lambda v: v.KIND,
        to_items=operator.itemgetter(0), from_items=_wrapper_from(_t),
        order=lambda v: order_key(v[0]),
        display=lambda v: f"{type(v).__name__}({display(v[0])})",
        example=(lambda t: lambda: t(("token", 1)))(_t)))
register_value_type(ValueType(
    Sealed, "sealed", shape=_SEALED, tag=TAG_SEALED, check=_sealed_shape,
    children=_sealed_children, item_kind=_sealed_item_kind,
    by_bytes=lambda v: v[1] if v[2] else None,
    to_items=lambda v: (v[0], v[1], v[2], v[3]), from_items=_sealed_from_items,
    order=lambda v: (v[0], v[2], v[3], order_key(v[1])),
    describe=lambda v: {"sealer": v[0]},
    example=lambda: Sealer("example").seal(Linear(1)),
    depth=lambda v: 2 if v[2] and v[0].isascii() else None))
for _nt, _tag in ((Sealer, TAG_SEALER), (Unsealer, TAG_UNSEALER)):
    register_value_type(ValueType(
        _nt, _nt.__name__.lower(), shape=_OPAQUE, tag=_tag, check=_name_shape,
        to_items=operator.itemgetter(0), from_items=_name_from(_nt), order=lambda v: v[0],
        describe=lambda v: {"name": v[0]}, example=(lambda t: lambda: t("example"))(_nt)))
# The generic record row the decoder uses for TAG_RECORD (each record class gets its own
# row when it is declared).
_BY_TAG[TAG_RECORD] = ValueType(
    tuple, "record", shape=_RECORD, tag=TAG_RECORD, from_items=_record_from_items)


# ---------------------------------------------------------------------------------------
# The walk: validation and the substructural census in one pass
# ---------------------------------------------------------------------------------------


def _walk_elements(v: Any, out: list | None, room: int) -> int:
    """The walk over a tuple's or a record's elements; plain atoms are passed inline."""
    n = 0
    for x in v:
        tx = type(x)
        if tx is int:
            if _NBIG <= x < _BIG:
                continue
        elif tx is str:
            if x.isascii():
                continue
        elif tx in _FREE:
            continue
        n += _walk(x, out, room)
    return n


def _walk(v: Any, out: list | None, room: int = DEPTH_MAX) -> int:
    """Fast walk: count (and optionally collect) substructural items, raise _Invalid.

    ``v`` may nest at most ``room`` more levels (see :data:`DEPTH_MAX`): the walk carries
    the room down, one level per tuple or map, two per record or Sealed, so depth costs
    one comparison per container. Atoms are tested inline in containers: an ``int`` by
    two comparisons (most are plain 64-bit ints), a ``str`` by ``isascii()`` (only other
    text needs the surrogate check). Tuples and maps, by far the most common containers,
    are handled inline; every other type by the shape its row in the table gives.
    """
    t = type(v)
    if t in _FREE:
        return 0
    if t is int:
        if _NBIG <= v < _BIG:
            return 0
        if room < 1 or not _NINT_LIMIT <= v < _INT_LIMIT:
            raise _Invalid()
        return 0
    if t is str:
        if v.isascii() or _text_ok(v):
            return 0
        raise _Invalid()
    if t is tuple:
        if not v:
            return 0
        if room < 1:
            raise _Invalid()
        return _walk_elements(v, out, room - 1)
    if t is Map:
        subs = v._subs
        m = v._m
        if type(subs) is not _IMap or type(m) is not _IMap:
            raise _Invalid()
        if v._d > room:  # the bound is too loose here: count exactly
            _check_map_depth(m, room)
        if not subs:
            return 0
        if out is None:
            return sum(subs.values())
        n = 0
        room -= 1
        for k in subs:
            n += _walk(m[k], out, room)
        return n
    row = VALUE_TYPES.get(t)
    if row is None or (row.check is not None and row.check(v) is not None):
        raise _Invalid()
    shape = row.shape
    if shape == _RECORD:  # a tag over an array [name, fields...]: two levels
        if room < 2:
            raise _Invalid()
        return _walk_elements(v, out, room - 2)
    if shape == _WRAPPER:
        if room < 1:
            raise _Invalid()
        if out is not None:
            out.append(v)
        x = v[0]
        return 1 if type(x) in _FREE else 1 + _walk(x, out, room - 1)
    if shape == _SEALED and not v[2]:
        return _walk_discretionary(v, out, room)
    # Every other type is a tag over what ``to_items`` gives: check that encoding (its
    # atoms and its depth) as such. What a capability or crypto Sealed *holds* in memory
    # is not encoded: it is walked below as a value of its own, for the census.
    if room < 1:
        raise _Invalid()
    d = row.depth(v) if row.depth is not None else None
    if d is not None:
        if d > room:
            raise _Invalid()
    elif row.to_items is not None:
        _walk(row.to_items(v), None, room - 1)
    if shape == _HOLDER or shape == _SEALED:
        own = row.item_kind(v)  # type: ignore[misc]
        n = 0
        if own:
            n = 1
            if out is not None:
                out.append(v)
        for _, h in row.children(v):
            if type(h) not in _FREE:
                n += _walk(h, out)
        return n
    return 0  # _ATOM (checked) and _OPAQUE


def _check_map_depth(m: immutables.Map, room: int) -> None:
    """A map whose bound exceeds ``room``: use a learnt bound, else descend and learn."""
    if _MAP_DEPTHS and _cached_depth(m) <= room:
        return
    _walk_entries(m, room)
    _measure_map(m)


def _walk_entries(m: immutables.Map, room: int) -> None:
    """Check every key and value of a map whose depth bound exceeds ``room``."""
    if not m:
        return
    if room < 1:
        raise _Invalid()
    room -= 1
    for k, x in m.items():
        if type(k) is not str:
            _walk(k, None, room)
        if type(x) not in _FREE:
            _walk(x, None, room)


def _walk_discretionary(v: Any, out: list | None, room: int) -> int:
    # A tag over [sealer name, payload, crypto, kind]: the payload is two levels down.
    if room < 2 or not (v[0].isascii() or _text_ok(v[0])):
        raise _Invalid()
    # The kind a discretionary Sealed claims must be its payload's (the decoder checks
    # the same), so a Sealed built with tuple.__new__ cannot claim another.
    if not v[3]:
        n = _walk(v[1], out, room - 2)
        if n:
            raise _Invalid()
        return n
    items: list = []
    n = _walk(v[1], items, room - 2)
    k = 0
    for it in items:
        k |= it.kind
    if k != v[3]:
        raise _Invalid()
    if out is not None:
        out.extend(items)
    return n


def _depth(v: Any, left: list | None = None) -> int:
    """An upper bound on how many levels the encoding of ``v`` (a valid value) nests.

    Exact, except inside maps, whose own bound it takes (see :class:`Map`); a map of
    unknown bound is measured (and its depth cached). The codec counts the same way:
    every non-empty array or map and every tag is a level. ``left``: a one-element
    budget of containers to visit, for the core's hot paths; past it (or at a map that
    would need measuring) raise _OverBudget.
    """
    t = type(v)
    if t in _ATOMS:
        return 0 if t is not int or _NBIG <= v < _BIG else 1
    if left is not None:
        left[0] -= 1
        if left[0] < 0:
            raise _OverBudget()
    if t is tuple:
        if not v:
            return 0
        d = 0
        for x in v:
            tx = type(x)
            if tx in _ATOMS and (tx is not int or _NBIG <= x < _BIG):
                continue
            dx = _depth(x, left)
            if dx > d:
                d = dx
        return d + 1
    if t is Map:
        d = v._d
        if d == _DEPTH_UNKNOWN:
            d = _cached_depth(v._m) if _MAP_DEPTHS else d
            if d == _DEPTH_UNKNOWN:
                if left is not None:
                    raise _OverBudget()
                d = _measure_map(v._m)
        return d  # type: ignore[no-any-return]
    row = VALUE_TYPES[t]
    shape = row.shape
    if shape == _RECORD:
        d = 0
        for x in v:
            tx = type(x)
            if tx in _ATOMS and (tx is not int or _NBIG <= x < _BIG):
                continue
            dx = _depth(x, left)
            if dx > d:
                d = dx
        return d + 2
    if shape == _WRAPPER:
        return 1 + _depth(v[0], left)
    if shape == _SEALED and not v[2]:
        return 2 + _depth(v[1], left)
    if row.depth is not None:
        known = row.depth(v)
        if known is not None:
            return known
    if row.to_items is None:
        return 0
    return 1 + _depth(row.to_items(v), left)


def _measure_map(m: immutables.Map) -> int:
    """The depth (bound) of a map's entries, computed once and cached (O(n))."""
    d = 0
    for k, x in m.items():
        dk = _depth(k)
        dx = _depth(x)
        if dk > d:
            d = dk
        if dx > d:
            d = dx
    d = d + 1 if m else 0
    _cache_depth(m, d)
    return d


def _describe(v: Any) -> str:
    t = type(v)
    if t is list:
        return "a list is mutable; use a tuple"
    if t is dict:
        return "a dict is mutable; use avm.Map"
    if t is set:
        return "a set is mutable; use a tuple or an avm.Map with None values"
    if t is _PyFraction:
        return ("a fractions.Fraction has writable slots, so it is not a value; use "
                "avm.Fraction (the same arithmetic, immutable)")
    for base in t.__mro__[1:]:
        if base in VALUE_TYPES and base is not object:
            return (f"{t.__qualname__} is a subclass of {base.__name__}; only "
                    f"{base.__name__} itself is a value (exact types only)")
    if callable(v):
        return f"a function or callable ({t.__name__}) is not a value; keep a dictionary word or a capability instead"
    if dataclasses.is_dataclass(v):
        return f"{t.__name__} is a dataclass, not a registered value; decorate it with @avm.record"
    return f"a {t.__module__}.{t.__qualname__} is not an AVM value"


def _walk_with_path(v: Any, path: str, room: int = DEPTH_MAX) -> None:
    """Slow walk used only to report where the fast walk failed: the same rules, with paths."""
    t = type(v)
    if t in _FREE:
        return
    if t is int:
        if _NBIG <= v < _BIG:
            return
        if not _NINT_LIMIT <= v < _INT_LIMIT:
            raise ValueLimitError(path, _int_problem(v))
        if room < 1:
            raise ValueLimitError(path, _DEPTH_TEXT)
        return
    if t is str:
        if v.isascii() or _text_ok(v):
            return
        raise ValueLimitError(path, _text_problem(v))
    row = VALUE_TYPES.get(t)
    if row is None:
        raise ValueRuleError(path, _describe(v))
    if row.check is not None:
        why = row.check(v)
        if why is not None:
            raise ValueRuleError(path, why)
    shape = row.shape
    if t is tuple or t is Map:
        if not v:
            return
        if room < 1:
            raise ValueLimitError(path, _DEPTH_TEXT)
        if t is Map:
            if v._d <= room:  # trusted: its entries were checked on the way in
                return
            for k in v.keys():
                _walk_with_path(k, f"{path}<key {_safe_repr(k)}>", room - 1)
        for suffix, child in row.children(v):
            _walk_with_path(child, path + suffix, room - 1)
        return
    if shape == _RECORD or shape == _WRAPPER or (shape == _SEALED and not v[2]):
        need = 1 if shape == _WRAPPER else 2
        if room < need:
            raise ValueLimitError(path, _DEPTH_TEXT)
        if shape == _SEALED and not (v[0].isascii() or _text_ok(v[0])):
            raise ValueLimitError(path + ".sealer", _text_problem(v[0]))
        for suffix, child in row.children(v):
            _walk_with_path(child, path + suffix, room - need)
    else:
        if room < 1:
            raise ValueLimitError(path, _DEPTH_TEXT)
        d = row.depth(v) if row.depth is not None else None
        if d is not None:
            if d > room:
                raise ValueLimitError(path, _DEPTH_TEXT)
        elif row.to_items is not None:
            try:
                _walk_with_path(row.to_items(v), path, room - 1)
            except ValueLimitError as e:  # the path inside the encoding means nothing here
                raise ValueLimitError(path, e.detail) from None
        for suffix, child in row.children(v):
            _walk_with_path(child, path + suffix)
    if shape == _SEALED and not v[2]:
        try:
            _walk_discretionary(v, None, DEPTH_MAX)
        except _Invalid:
            raise ValueRuleError(path, "a Sealed's kind does not match its payload") from None


def _safe_repr(v: Any) -> str:
    try:
        r = repr(v)
    except Exception:  # an int too large for repr, say
        return f"<{type(v).__name__}>"
    return r if len(r) <= 60 else r[:57] + "..."


_NO_KEY = object()


def check_value(v: Any, path: str = "$") -> int:
    """Raise ValueRuleError (with the path) unless ``v`` is an immutable AVM value.

    Returns the number of substructural items it holds. Accepts exactly what
    :func:`avm.encode` can store within its default limits, except for the total size
    (16 MiB) and item count (1,000,000), which only the encoding measures (see
    ``docs/values.md``): an int over ``INT_BYTES_MAX`` bytes, text with a lone surrogate,
    nesting deeper than ``DEPTH_MAX`` and a map with more than
    ``KEY_HASH_COLLISIONS_MAX`` keys of one hash raise :class:`ValueLimitError` (a
    ``ValueRuleError`` and a ``CodecError``).
    """
    if type(v) is Map:  # the commonest state: a map, trusted in O(1) (see _walk)
        try:
            subs = v._subs
            if type(subs) is _IMap and type(v._m) is _IMap and v._d <= DEPTH_MAX:
                return sum(subs.values()) if subs else 0
        except Exception:
            pass
    try:
        return _walk(v, None)
    except (_Invalid, IndexError, TypeError, AttributeError, KeyError, ValueError):
        pass
    except RecursionError:
        raise ValueLimitError(path, _DEPTH_TEXT) from None
    return _check(v, DEPTH_MAX, _NO_KEY, path)


def _check(v: Any, room: int, key: Any = _NO_KEY, path: str = "$") -> int:
    """``check_value`` for a value at most ``room`` levels deep; ``key``: it goes into a
    map under that key (the error's path is then ``$[key]``, built only on failure)."""
    if type(v) is Map:  # the commonest state: a map, trusted in O(1) (see _walk)
        try:
            subs = v._subs
            if type(subs) is _IMap and type(v._m) is _IMap and v._d <= room:
                return sum(subs.values()) if subs else 0
        except Exception:
            pass
    try:
        return _walk(v, None, room)
    except (_Invalid, IndexError, TypeError, AttributeError, KeyError, ValueError):
        pass
    except RecursionError:
        raise ValueLimitError(path, _DEPTH_TEXT) from None
    if key is not _NO_KEY:
        path = f"$[{_safe_repr(key)}]"
    try:
        _walk_with_path(v, path, room)
    except RecursionError:
        raise ValueLimitError(path, _DEPTH_TEXT) from None
    except ValueRuleError:
        raise
    except Exception:
        pass
    raise ValueRuleError(path, "malformed value")


def substructural_items(v: Any) -> list:
    """Every substructural occurrence in ``v`` (a shared object is listed each time)."""
    out: list = []
    try:
        _walk(v, out)
    except (_Invalid, IndexError, TypeError, AttributeError, KeyError, RecursionError):
        check_value(v)
        raise ValueRuleError("$", "malformed value") from None
    return out


def kind_of(v: Any) -> int:
    """The combined substructural kind of everything inside ``v``."""
    k = 0
    for item in substructural_items(v):
        k |= item.kind
    return k


def item_identity(item: Any) -> Any:
    """What a substructural item *is*, for counting copies within one step (DESIGN 2).

    A capability or a cryptographically sealed value: its type and exact ciphertext bytes,
    so rebuilding one from its fields, or decoding its encoding, gives the same item. A
    ``Linear``/``Affine``/``Relevant`` wrapper: its object identity.
    """
    f = _BY_BYTES.get(type(item))
    if f is not None:
        b = f(item)
        if b is not None:
            return (type(item), b)
    return id(item)


def _find_path(roots: list[tuple[str, Any]], target: Any) -> str:
    """Path of the first occurrence of ``target`` (the same item) under the named roots."""
    tid = item_identity(target)
    by_bytes = type(tid) is tuple

    def go(v: Any, path: str) -> str | None:
        if v is target or (by_bytes and type(v) is type(target) and item_identity(v) == tid):
            return path
        t = type(v)
        if t in _ATOMS:
            return None
        if t is Map:
            children: Iterable = ((f"[{k!r}]", v._m[k]) for k in v._subs)
        else:
            row = VALUE_TYPES.get(t)
            if row is None:
                return None
            children = row.children(v)
        for suffix, x in children:
            r = go(x, path + suffix)
            if r:
                return r
        return None

    for name, root in roots:
        r = go(root, name)
        if r:
            return r
    return "?"


def check_conservation(
    inputs: list[tuple[str, Any]], outputs: list[tuple[str, Any]],
    in_items: list | None = None, out_items: list | None = None,
) -> None:
    """Raise SubstructuralError unless the outputs conserve the inputs' substructural items.

    ``inputs`` and ``outputs`` are lists of (path name, value). The rule (DESIGN section
    2): an item received must appear in the outputs at least once if it may not be
    dropped, and no item may appear more than once if it may not be copied. Items are
    told apart by :func:`item_identity`: a capability or sealed value by its ciphertext,
    a wrapper by identity. Callers that already collected the items pass them to save a
    walk.
    """
    if in_items is None:
        in_items = []
        for _, v in inputs:
            in_items.extend(substructural_items(v))
    if out_items is None:
        out_items = []
        for _, v in outputs:
            out_items.extend(substructural_items(v))
    if not in_items and not out_items:
        return
    seen: dict[Any, int] = {}
    kinds: dict[Any, int] = {}
    objs: dict[Any, Any] = {}
    by_bytes = _BY_BYTES
    for item in out_items:
        i = item_identity(item) if type(item) in by_bytes else id(item)
        seen[i] = seen.get(i, 0) + 1
        kinds[i] = kinds.get(i, 0) | item.kind
        if i not in objs:
            objs[i] = item
    received: dict[Any, Any] = {}
    rkinds: dict[Any, int] = {}
    for x in in_items:
        i = item_identity(x) if type(x) in by_bytes else id(x)
        if i not in received:
            received[i] = x
        rkinds[i] = rkinds.get(i, 0) | x.kind
    for i, n in seen.items():
        kind = kinds[i] | rkinds.get(i, 0)
        if n > 1 and kind & NO_COPY:
            item = objs[i]
            path = _find_path(outputs, item)
            raise SubstructuralError(
                path, f"{KIND_NAMES[kind]} value {_short(item)} appears {n} times in the "
                "outputs; it may not be copied"
            )
    for i, item in received.items():
        kind = rkinds[i]
        if kind & NO_DROP and i not in seen:
            path = _find_path(inputs, item)
            raise SubstructuralError(
                path, f"{KIND_NAMES[kind]} value {_short(item)} was dropped; keep it in "
                "the state, send it on, or send it to the null capability to destroy it"
            )


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


# ---------------------------------------------------------------------------------------
# Order and display
# ---------------------------------------------------------------------------------------


def order_key(k: Any) -> tuple:
    """The sort key that fixes a Map's iteration order: type rank, then value.

    None < booleans < numbers < text < bytes < tuples < records < everything else; within
    a rank, Python's order (tuples element-wise, records by registered name then fields,
    other types by name then their contents). It depends on nothing salted per process,
    unlike hashes.
    """
    t = type(k)
    if t is str:
        return (3, k)
    if t is int or t is float:
        return (2, k)
    row = VALUE_TYPES.get(t)
    if row is None:
        return (8, t.__qualname__, repr(k))
    if row.rank == 0:
        return (0, 0)
    if row.rank == 7:
        return (7, row.name, row.order(k) if row.order is not None else repr(k))
    return (row.rank, row.order(k) if row.order is not None else k)


def display(v: Any) -> str:
    """``repr`` for values, with every Map in its fixed key order (same text everywhere)."""
    row = VALUE_TYPES.get(type(v))
    return repr(v) if row is None else row.display(v)
