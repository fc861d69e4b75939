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

* atoms are recognised by one ``type(v) in _ATOMS`` test;
* a :class:`Map` validates what is put into it, so a map is trusted in O(1) and the walk
  only descends into the few keys whose values hold substructural items (the map keeps
  that index itself). A 100,000-entry state updated one key per message therefore costs
  O(log n) per message, not O(n);
* paths are only built when something is wrong: the fast walk raises a bare marker, and
  a second, slower walk finds the path for the error message.

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

from .errors import CodecError, SubstructuralError, UnsealError, UsageError, ValueRuleError
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


# Atoms need no check beyond their exact type. (A Fraction is atomic too, but it is a
# tuple underneath, so the walk checks its shape through the table.)
_ATOMS: frozenset[type] = frozenset({type(None), bool, int, float, str, bytes})


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

    Underneath it is the tuple ``(entries, substructural index, token)``: ``token`` names
    the exact substructural entries (key -> same value object), so two maps with the same
    token hold the same linear items in the same places, which lets the step checker
    skip its census in O(1) for "update a plain key" steps.
    """

    __slots__ = ()
    _m: immutables.Map = _field(0, "The entries.")
    _subs: immutables.Map = _field(1, "Key -> substructural count, for keys that hold any.")
    _tok: object = _field(2, "Identity of the substructural entries.")

    def __new__(cls, items: Mapping | Iterable[tuple[Any, Any]] | None = None, **kw: Any) -> Map:
        m: immutables.Map = _EMPTY_IMAP
        subs: immutables.Map = _EMPTY_IMAP
        if items is not None or kw:
            pairs = list(items.items() if isinstance(items, Mapping) else (items or ()))
            pairs.extend(kw.items())
            with m.mutate() as mm, subs.mutate() as ms:
                for k, v in pairs:
                    _check_key(k)
                    n = _count(v, k)
                    mm[k] = v
                    if n:
                        ms[k] = n
                    elif k in ms:
                        del ms[k]
                m = mm.finish()
                subs = ms.finish()
        return _new(Map, (m, subs, _new_tok(subs)))

    @staticmethod
    def _make(m: immutables.Map, subs: immutables.Map, tok: object) -> Map:
        return _new(Map, (m, subs, tok))

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
        """A new map with ``key`` bound to ``value``; raises ValueRuleError on bad values."""
        tk = type(key)
        if tk not in _ATOMS or tk is float:
            _check_key(key)
        n = 0 if type(value) in _ATOMS else _count(value, key)
        subs = self._subs
        if n:
            subs = subs.set(key, n)
        elif subs and key in subs:
            subs = subs.delete(key)
        else:
            return _new(Map, (self._m.set(key, value), subs, self._tok))
        return _new(Map, (self._m.set(key, value), subs, _new_tok(subs)))

    def _set_counted(self, key: Any, value: Any, n: int) -> Map:
        """Set a value the core has already validated, whose substructural count is ``n``.

        For the core's own records (batches, machine records) on the hot path: they were
        checked when built, so walking them again on every map update would be waste.
        """
        subs = self._subs
        if n:
            subs = subs.set(key, n)
            return _new(Map, (self._m.set(key, value), subs, _new_tok(subs)))
        if subs and key in subs:
            subs = subs.delete(key)
            return _new(Map, (self._m.set(key, value), subs, _new_tok(subs)))
        return _new(Map, (self._m.set(key, value), subs, self._tok))

    def _set_plain(self, key: Any, value: Any) -> Map:
        """Set without validation: only for the core's own bookkeeping maps, whose keys
        and values it builds itself and which hold no substructural items."""
        subs = self._subs
        if key in subs:
            subs = subs.delete(key)
            return _new(Map, (self._m.set(key, value), subs, _new_tok(subs)))
        return _new(Map, (self._m.set(key, value), subs, self._tok))

    def delete(self, key: Any) -> Map:
        """A new map without ``key`` (KeyError if absent, as ``del d[k]``)."""
        subs = self._subs
        if key in subs:
            subs = subs.delete(key)
            return _new(Map, (self._m.delete(key), subs, _new_tok(subs)))
        return _new(Map, (self._m.delete(key), subs, self._tok))

    def discard(self, key: Any) -> Map:
        """A new map without ``key``; the same map if it was absent."""
        return self.delete(key) if key in self._m else self

    def update(self, other: Mapping | Iterable[tuple[Any, Any]] = (), **kw: Any) -> Map:
        """A new map with every pair of ``other`` (and ``kw``) set."""
        pairs = list(other.items() if isinstance(other, Mapping) else other)
        pairs.extend(kw.items())
        touched = False
        with self._m.mutate() as mm, self._subs.mutate() as ms:
            for k, v in pairs:
                _check_key(k)
                n = _count(v, k)
                mm[k] = v
                if n:
                    ms[k] = n
                    touched = True
                elif k in ms:
                    del ms[k]
                    touched = True
            subs = ms.finish()
            return _new(Map, (mm.finish(), subs, _new_tok(subs) if touched else self._tok))
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

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


def _map_shape(v: Any) -> str | None:
    if _tuple_len(v) != 3 or type(v._m) is not _IMap or type(v._subs) is not _IMap:
        return "a Map is (persistent map, substructural index, token)"
    for k, n in v._subs.items():
        if type(n) is not int or n <= 0 or k not in v._m:
            return "a Map's substructural index does not match its entries"
    return None


def _check_key(key: Any) -> None:
    # Keys must be hashable values that encode canonically. Substructural keys make no
    # sense (a key is compared, i.e. observed, on every lookup), so they are refused; so
    # is a NaN anywhere in a key (NaN is unequal to itself: the entry could never be
    # found again, and one map would have two encodings).
    t = type(key)
    if t in _ATOMS:
        if t is float and key != key:
            raise ValueRuleError("$", "a NaN cannot be (part of) a map key")
        return
    if t is tuple:
        for k in key:
            _check_key(k)
        return
    if t is Fraction:
        _count(key)
        return
    if t in _RECORDS_BY_CLASS:
        if _count(key):
            raise ValueRuleError("$", "a map key may not hold linear, affine or relevant values")
        if _nan_inside(key):
            raise ValueRuleError("$", "a NaN cannot be (part of) a map key")
        return
    raise ValueRuleError(
        "$", f"a {t.__name__} cannot be a map key; use str, int, bytes or a tuple of those"
    )


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

    Values are still walked, for the substructural index; keys are not re-checked.
    """
    with _EMPTY_IMAP.mutate() as mm, _EMPTY_IMAP.mutate() as ms:
        for k, v in pairs:
            mm[k] = v
            if type(v) not in _ATOMS:
                n = check_value(v, f"$[{k!r}]")
                if n:
                    ms[k] = n
                elif k in ms:
                    del ms[k]
            elif k in ms:
                del ms[k]
        subs = ms.finish()
        return _new(Map, (mm.finish(), subs, _new_tok(subs)))
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
    * ``describe(v)``: extra fields of its ``reflect`` answer; ``display(v)``: its text.
    """

    __slots__ = ("type", "name", "shape", "check", "children", "item_kind", "by_bytes",
                 "tag", "to_items", "from_items", "rank", "order", "describe", "display",
                 "example")

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
    example=lambda: Fraction(-1, 3)))
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
    example=lambda: Sealer("example").seal(Linear(1))))
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


def _count(v: Any, key: Any = None) -> int:
    """Validate ``v``; return how many substructural items it holds (0 is the fast path)."""
    if type(v) in _ATOMS:
        return 0
    return check_value(v, "$" if key is None else f"$[{key!r}]")


def _walk(v: Any, out: list | None) -> int:
    """Fast walk: count (and optionally collect) substructural items, raise _Invalid.

    Tuples and maps, by far the most common containers, are handled inline; every other
    type by the shape its row in the table gives.
    """
    t = type(v)
    if t in _ATOMS:
        return 0
    if t is tuple:
        n = 0
        for x in v:
            if type(x) not in _ATOMS:
                n += _walk(x, out)
        return n
    if t is Map:
        subs = v._subs
        m = v._m
        if type(subs) is not _IMap or type(m) is not _IMap:
            raise _Invalid()
        if not subs:
            return 0
        if out is None:
            return sum(subs.values())
        n = 0
        for k in subs:
            n += _walk(m[k], out)
        return n
    row = VALUE_TYPES.get(t)
    if row is None or (row.check is not None and row.check(v) is not None):
        raise _Invalid()
    shape = row.shape
    if shape == _RECORD:
        n = 0
        for x in v:
            if type(x) not in _ATOMS:
                n += _walk(x, out)
        return n
    if shape == _WRAPPER:
        if out is not None:
            out.append(v)
        x = v[0]
        return 1 if type(x) in _ATOMS else 1 + _walk(x, out)
    if shape == _HOLDER or shape == _SEALED:
        if shape == _SEALED and not v[2]:
            return _walk_discretionary(v, out)
        own = row.item_kind(v)  # type: ignore[misc]
        n = 0
        if own:
            n = 1
            if out is not None:
                out.append(v)
        for _, h in row.children(v):
            if type(h) not in _ATOMS:
                n += _walk(h, out)
        return n
    return 0  # _ATOM (checked) and _OPAQUE


def _walk_discretionary(v: Any, out: list | None) -> int:
    # The kind a discretionary Sealed claims must be its payload's (the decoder checks
    # the same), so a Sealed built with tuple.__new__ cannot claim another.
    if not v[3]:
        n = _walk(v[1], out)
        if n:
            raise _Invalid()
        return n
    items: list = []
    n = _walk(v[1], items)
    k = 0
    for it in items:
        k |= it.kind
    if k != v[3]:
        raise _Invalid()
    if out is not None:
        out.extend(items)
    return n


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


def _walk_with_path(v: Any, path: str) -> None:
    """Slow walk used only to report where the fast walk failed: the same rules, with paths."""
    t = type(v)
    if t in _ATOMS:
        return
    row = VALUE_TYPES.get(t)
    if row is None:
        raise ValueRuleError(path, _describe(v))
    if row.check is not None:
        why = row.check(v)
        if why is not None:
            raise ValueRuleError(path, why)
    for suffix, child in row.children(v):
        _walk_with_path(child, path + suffix)
    if row.shape == _SEALED and not v[2]:
        try:
            _walk_discretionary(v, None)
        except _Invalid:
            raise ValueRuleError(path, "a Sealed's kind does not match its payload") from None


def check_value(v: Any, path: str = "$") -> int:
    """Raise ValueRuleError (with the path) unless ``v`` is an immutable AVM value.

    Returns the number of substructural items it holds.
    """
    if type(v) is Map:  # the commonest state: a map, trusted in O(1) (see _walk)
        subs = v._subs
        if type(subs) is _IMap and type(v._m) is _IMap:
            if not subs:
                return 0
            try:
                return sum(subs.values())
            except TypeError:
                pass
    try:
        return _walk(v, None)
    except (_Invalid, IndexError, TypeError, AttributeError, KeyError):
        pass
    except RecursionError:
        raise ValueRuleError(path, "value nested too deeply") from None
    try:
        _walk_with_path(v, path)
    except RecursionError:
        raise ValueRuleError(path, "value nested too deeply") from None
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
