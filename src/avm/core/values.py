"""Immutable values, substructural wrappers and discretionary sealers (DESIGN section 2).

    "State, contexts and message contents are immutable values ... A step that outputs
    anything else (a list, a dict, an open file, a lambda) fails its batch with an error
    that names the path to the offending value."

Validation is a walk, and the walk is on the hot path of every step, so it is built to
be cheap where it matters:

* atoms are recognised by one ``type(v) in _ATOMS`` test;
* a :class:`Map` validates what is put into it, so a map is trusted in O(1) and the walk
  only descends into the few keys whose values hold substructural items (the map keeps
  that index itself). A 100,000-entry state updated one key per message therefore costs
  O(log n) per message, not O(n);
* paths are only built when something is wrong: the fast walk raises a bare marker, and
  a second, slower walk finds the path for the error message.

Substructural conservation is checked by *object identity*: within one step, a linear
value received must appear exactly once among the outputs (new state plus outgoing
messages). Rebuilding an equal ``Linear(x)`` and dropping the original is a drop, and
reported as one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from typing import Any, ClassVar

import immutables
from typing_extensions import dataclass_transform

from .errors import SubstructuralError, UnsealError, ValueRuleError

__all__ = [
    "UNRESTRICTED",
    "AFFINE",
    "RELEVANT",
    "LINEAR",
    "KIND_NAMES",
    "Map",
    "Substructural",
    "Linear",
    "Affine",
    "Relevant",
    "Sealed",
    "Sealer",
    "Unsealer",
    "sealer_pair",
    "record",
    "record_name",
    "record_class",
    "registered_records",
    "check_value",
    "substructural_items",
    "kind_of",
    "check_conservation",
    "order_key",
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

_ATOMS: frozenset[type] = frozenset({type(None), bool, int, float, Fraction, str, bytes})


class _Invalid(Exception):
    """Raised by the fast walk; the slow walk then builds the path for the real error."""


# ---------------------------------------------------------------------------------------
# Substructural wrappers
# ---------------------------------------------------------------------------------------


class Substructural:
    """A value whose copies and drops are counted at every step boundary."""

    __slots__ = ("value",)
    value: Any
    KIND: ClassVar[int] = UNRESTRICTED

    def __init__(self, value: Any) -> None:
        object.__setattr__(self, "value", value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.value == self.value  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.value))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"

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


# ---------------------------------------------------------------------------------------
# Persistent map
# ---------------------------------------------------------------------------------------


class Map(Mapping):
    """A frozen persistent mapping (HAMT) whose contents are validated on the way in.

    Updates share structure with the original, so ``m.set(k, v)`` on a large map is
    O(log n). The map also keeps, beside its entries, a small index of the keys whose
    values hold substructural items; the step checker walks only those.
    """

    __slots__ = ("_m", "_subs", "_hash", "_order", "_tok")
    _m: immutables.Map
    _subs: immutables.Map
    _hash: int
    _order: tuple
    _tok: object

    def __init__(self, items: Mapping | Iterable[tuple[Any, Any]] | None = None, **kw: Any) -> None:
        m: immutables.Map = immutables.Map()
        subs: immutables.Map = immutables.Map()
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
        object.__setattr__(self, "_m", m)
        object.__setattr__(self, "_subs", subs)
        object.__setattr__(self, "_tok", _new_tok(subs))

    @classmethod
    def _make(cls, m: immutables.Map, subs: immutables.Map, tok: object) -> Map:
        # ``tok`` names the exact substructural entries (key -> same value object): two
        # maps with the same token hold the same linear items in the same places, which
        # lets the step checker skip its census in O(1) for "update a plain key" steps.
        self = object.__new__(cls)
        _SET_M(self, m)
        _SET_SUBS(self, subs)
        _SET_TOK(self, tok)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Map is immutable: use m.set(key, value), which returns a new map")

    # -- reading --------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        return self._m[key]

    def __contains__(self, key: object) -> bool:
        return key in self._m

    def __iter__(self) -> Iterator[Any]:
        # Hash order would differ between processes (Python salts str and bytes hashes),
        # and a step that loops over a map must give the same outputs everywhere. So a
        # map iterates in a fixed order of its keys, computed once per map (it is frozen).
        # _order and _hash are caches, left unset until first needed.
        try:
            order = self._order
        except AttributeError:
            order = tuple(sorted(self._m, key=order_key))
            object.__setattr__(self, "_order", order)
        return iter(order)

    def items(self) -> Iterator[tuple[Any, Any]]:  # type: ignore[override]
        m = self._m
        return ((k, m[k]) for k in self)

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        m = self._m
        return (m[k] for k in self)

    def keys(self) -> tuple:  # type: ignore[override]
        return tuple(self)

    def __len__(self) -> int:
        return len(self._m)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._m.get(key, default)

    # -- updating -------------------------------------------------------------------
    def set(self, key: Any, value: Any) -> Map:
        """A new map with ``key`` bound to ``value``; raises ValueRuleError on bad values."""
        if type(key) not in _ATOMS:
            _check_key(key)
        n = 0 if type(value) in _ATOMS else _count(value, key)
        subs = self._subs
        if n:
            subs = subs.set(key, n)
        elif subs and key in subs:
            subs = subs.delete(key)
        else:
            return Map._make(self._m.set(key, value), subs, self._tok)
        return Map._make(self._m.set(key, value), subs, _new_tok(subs))

    def _set_counted(self, key: Any, value: Any, n: int) -> Map:
        """Set a value the core has already validated, whose substructural count is ``n``.

        For the core's own records (batches, machine records) on the hot path: they were
        checked when built, so walking them again on every map update would be waste.
        """
        subs = self._subs
        if n:
            subs = subs.set(key, n)
            return Map._make(self._m.set(key, value), subs, _new_tok(subs))
        if subs and key in subs:
            subs = subs.delete(key)
            return Map._make(self._m.set(key, value), subs, _new_tok(subs))
        return Map._make(self._m.set(key, value), subs, self._tok)

    def _set_plain(self, key: Any, value: Any) -> Map:
        """Set without validation: only for the core's own bookkeeping maps, whose keys
        and values it builds itself and which hold no substructural items."""
        subs = self._subs
        if key in subs:
            subs = subs.delete(key)
            return Map._make(self._m.set(key, value), subs, _new_tok(subs))
        return Map._make(self._m.set(key, value), subs, self._tok)

    def delete(self, key: Any) -> Map:
        """A new map without ``key`` (KeyError if absent, as ``del d[k]``)."""
        subs = self._subs
        if key in subs:
            subs = subs.delete(key)
            return Map._make(self._m.delete(key), subs, _new_tok(subs))
        return Map._make(self._m.delete(key), subs, self._tok)

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
            return Map._make(mm.finish(), subs, _new_tok(subs) if touched else self._tok)
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    # -- identity -------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Map):
            return self._m == other._m
        return NotImplemented

    def __hash__(self) -> int:
        try:
            h = self._hash
        except AttributeError:
            h = hash(self._m)
            object.__setattr__(self, "_hash", h)
        return h

    def __repr__(self) -> str:
        items = list(self.items())
        if len(items) > 20:
            head = ", ".join(f"{k!r}: {v!r}" for k, v in items[:20])
            return f"Map({{{head}, ...}} {len(items)} entries)"
        return "Map({" + ", ".join(f"{k!r}: {v!r}" for k, v in items) + "})"

    def substructural_keys(self) -> Iterator[Any]:
        """Keys whose values hold linear, affine or relevant items (in iteration order)."""
        return iter(sorted(self._subs, key=order_key))

    @property
    def substructural_count(self) -> int:
        return sum(self._subs.values())


_TYPE_RANK = {type(None): 0, bool: 1, int: 2, float: 2, Fraction: 2, str: 3, bytes: 4, tuple: 5}


def order_key(k: Any) -> tuple:
    """The sort key that fixes a Map's iteration order: type rank, then value.

    None < booleans < numbers < text < bytes < tuples < records; within a rank, Python's
    order (tuples element-wise, records by registered name then fields). It depends on
    nothing salted per process, unlike hashes.
    """
    t = type(k)
    r = _TYPE_RANK.get(t)
    if r is None:
        fields = _record_fields(t)
        if fields is not None:
            return (6, record_name(t), tuple(order_key(getattr(k, f)) for f in fields))
        return (7, repr(k))
    if r == 5:
        return (5, tuple(order_key(x) for x in k))
    if r == 0:
        return (0, 0)
    return (r, k)


_EMPTY_TOK = object()


def _new_tok(subs: immutables.Map) -> object:
    return object() if subs else _EMPTY_TOK


# Slot setters, bypassing Map.__setattr__ (which refuses, to keep maps frozen for users).
_SET_M = Map.__dict__["_m"].__set__
_SET_SUBS = Map.__dict__["_subs"].__set__
_SET_TOK = Map.__dict__["_tok"].__set__


def _check_key(key: Any) -> None:
    # Keys must be hashable values that encode canonically. Substructural keys make no
    # sense (a key is compared, i.e. observed, on every lookup), so they are refused.
    t = type(key)
    if t in _ATOMS:
        return
    if t is tuple:
        for k in key:
            _check_key(k)
        return
    if t in _RECORDS_BY_CLASS:
        if _count(key):
            raise ValueRuleError("$", "a map key may not hold linear, affine or relevant values")
        return
    raise ValueRuleError(
        "$", f"a {t.__name__} cannot be a map key; use str, int, bytes or a tuple of those"
    )


# ---------------------------------------------------------------------------------------
# Records: frozen dataclasses registered with the codec
# ---------------------------------------------------------------------------------------

_RECORDS_BY_NAME: dict[str, type] = {}
_RECORDS_BY_CLASS: dict[type, tuple[str, tuple[str, ...]]] = {}


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: type | None = None, *, name: str | None = None) -> Any:
    """Make a class a frozen dataclass and register it as an AVM value type.

    The registered *name* (default ``module.QualName``) is what the canonical encoding
    stores, so renaming a class with ``name=`` kept fixed keeps old states readable.
    """

    def wrap(c: type) -> type:
        if not dataclasses.is_dataclass(c):
            c = dataclasses.dataclass(frozen=True)(c)
        elif not c.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise ValueRuleError("$", f"{c.__name__} must be a frozen dataclass to be a value")
        rname = name or f"{c.__module__}.{c.__qualname__}"
        old = _RECORDS_BY_NAME.get(rname)
        if old is not None and old is not c and old.__qualname__ != c.__qualname__:
            raise ValueRuleError("$", f"record name {rname!r} is already registered")
        fields = tuple(f.name for f in dataclasses.fields(c))
        _RECORDS_BY_NAME[rname] = c
        _RECORDS_BY_CLASS[c] = (rname, fields)
        return c

    return wrap(cls) if cls is not None else wrap


def record_name(cls: type) -> str:
    return _RECORDS_BY_CLASS[cls][0]


def record_class(name: str) -> type | None:
    return _RECORDS_BY_NAME.get(name)


def registered_records() -> dict[str, type]:
    return dict(_RECORDS_BY_NAME)


def _record_fields(cls: type) -> tuple[str, ...] | None:
    entry = _RECORDS_BY_CLASS.get(cls)
    return entry[1] if entry else None


# ---------------------------------------------------------------------------------------
# Sealed values and discretionary sealers
# ---------------------------------------------------------------------------------------


class Sealed:
    """A value hidden behind a sealer; only the matching unsealer opens it.

    Discretionary seals keep the value in memory (they give type safety, not secrecy);
    cryptographic seals (``avm.core.caps``) keep ciphertext. Both show only the sealer.
    """

    __slots__ = ("sealer", "payload", "crypto", "kind", "_held")
    sealer: str
    payload: Any
    crypto: bool
    kind: int
    _held: tuple

    def __init__(
        self, sealer: str, payload: Any, crypto: bool = False, kind: int = UNRESTRICTED,
        held: tuple = (),
    ) -> None:
        object.__setattr__(self, "sealer", sealer)
        object.__setattr__(self, "payload", payload)
        object.__setattr__(self, "crypto", crypto)
        object.__setattr__(self, "kind", kind if crypto else kind_of(payload))
        object.__setattr__(self, "_held", held)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Sealed is immutable")

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Sealed
            and other.sealer == self.sealer
            and other.crypto == self.crypto
            and other.payload == self.payload
        )

    def __hash__(self) -> int:
        return hash(("Sealed", self.sealer, self.payload))

    def __repr__(self) -> str:
        return f"<sealed by {self.sealer!r}>"


class Sealer:
    """Seals values under a name. Discretionary: it keeps types apart, it is not secret."""

    __slots__ = ("name",)
    name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Sealer is immutable")

    def seal(self, value: Any) -> Sealed:
        check_value(value)
        return Sealed(self.name, value)

    def __eq__(self, other: object) -> bool:
        return type(other) is Sealer and other.name == self.name

    def __hash__(self) -> int:
        return hash(("Sealer", self.name))

    def __repr__(self) -> str:
        return f"Sealer({self.name!r})"


class Unsealer:
    """Opens values sealed by the :class:`Sealer` of the same name."""

    __slots__ = ("name",)
    name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Unsealer is immutable")

    def unseal(self, sealed: Any) -> Any:
        if type(sealed) is not Sealed or sealed.crypto or sealed.sealer != self.name:
            raise UnsealError(f"not a value sealed by {self.name!r}")
        return sealed.payload

    def __eq__(self, other: object) -> bool:
        return type(other) is Unsealer and other.name == self.name

    def __hash__(self) -> int:
        return hash(("Unsealer", self.name))

    def __repr__(self) -> str:
        return f"Unsealer({self.name!r})"


def sealer_pair(name: str) -> tuple[Sealer, Unsealer]:
    """A discretionary sealer and its unsealer."""
    return Sealer(name), Unsealer(name)


# ---------------------------------------------------------------------------------------
# The walk: validation and the substructural census in one pass
# ---------------------------------------------------------------------------------------

# Other modules (caps) register further value types: type -> function(value) giving
# (children, own_kind, held_items). Kept as a table so the core stays one walk.
_EXTRA_TYPES: dict[type, Any] = {}
_OPAQUE_TYPES: set[type] = {Sealer, Unsealer}


def register_value_type(t: type, children: Any) -> None:
    """Let another core module add a value type to the walk (used by caps)."""
    _EXTRA_TYPES[t] = children


def _count(v: Any, key: Any = None) -> int:
    """Validate ``v``; return how many substructural items it holds (0 is the fast path)."""
    if type(v) in _ATOMS:
        return 0
    return check_value(v, "$" if key is None else f"$[{key!r}]")


def _walk(v: Any, out: list | None) -> int:
    """Fast walk: count (and optionally collect) substructural items, raise _Invalid.

    Ordered by how often each type shows up in messages and states. Records cache their
    count on first walk (they are deeply immutable, so it cannot change).
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
        if not v._subs:
            return 0
        if out is None:
            return sum(v._subs.values())
        n = 0
        m = v._m
        for k in v._subs:
            n += _walk(m[k], out)
        return n
    extra = _EXTRA_TYPES.get(t)
    if extra is not None:
        own_kind, held = extra(v)
        if not own_kind and not held:
            return 0
        n = 0
        if own_kind:
            n = 1
            if out is not None:
                out.append(v)
        for h in held:
            n += _walk(h, out)
        return n
    fields = _record_fields(t)
    if fields is not None:
        d = getattr(v, "__dict__", None)
        if out is None and d is not None:
            cached = d.get("_avm_n")
            if cached is not None:
                return cached
        n = 0
        for f in fields:
            x = getattr(v, f)
            if type(x) not in _ATOMS:
                n += _walk(x, out)
        if d is not None:
            d["_avm_n"] = n
        return n
    if isinstance(v, Substructural):
        if out is not None:
            out.append(v)
        return 1 + _walk(v.value, out)
    if t is Sealed:
        if v.crypto:
            n = 0
            if v.kind:
                n = 1
                if out is not None:
                    out.append(v)
            for h in v._held:
                n += _walk(h, out)
            return n
        return _walk(v.payload, out)
    if t in _OPAQUE_TYPES:
        return 0
    raise _Invalid()


def _describe(v: Any) -> str:
    t = type(v)
    if t is list:
        return "a list is mutable; use a tuple"
    if t is dict:
        return "a dict is mutable; use avm.Map"
    if t is set:
        return "a set is mutable; use a tuple or an avm.Map with None values"
    if callable(v):
        return f"a function or callable ({t.__name__}) is not a value; keep a dictionary word or a capability instead"
    if dataclasses.is_dataclass(v):
        return f"{t.__name__} is a dataclass not registered as a value; decorate it with @avm.record"
    return f"a {t.__module__}.{t.__qualname__} is not an AVM value"


def _walk_with_path(v: Any, path: str) -> None:
    """Slow walk used only to report where the fast walk failed."""
    t = type(v)
    if t in _ATOMS:
        return
    if t is tuple:
        for i, x in enumerate(v):
            _walk_with_path(x, f"{path}[{i}]")
        return
    if t is Map:
        for k, x in v.items():
            _walk_with_path(x, f"{path}[{k!r}]")
        return
    if isinstance(v, Substructural):
        _walk_with_path(v.value, f"{path}.value")
        return
    if t is Sealed:
        if not v.crypto:
            _walk_with_path(v.payload, f"{path}<sealed>")
        return
    fields = _record_fields(t)
    if fields is not None:
        for f in fields:
            _walk_with_path(getattr(v, f), f"{path}.{f}")
        return
    if t in _EXTRA_TYPES or t in _OPAQUE_TYPES:
        return
    raise ValueRuleError(path, _describe(v))


def check_value(v: Any, path: str = "$") -> int:
    """Raise ValueRuleError (with the path) unless ``v`` is an immutable AVM value.

    Returns the number of substructural items it holds.
    """
    try:
        return _walk(v, None)
    except _Invalid:
        _walk_with_path(v, path)
        raise AssertionError("unreachable: slow walk must raise") from None
    except RecursionError:
        raise ValueRuleError(path, "value nested too deeply") from None


def substructural_items(v: Any) -> list:
    """Every substructural occurrence in ``v`` (a shared object is listed each time)."""
    out: list = []
    try:
        _walk(v, out)
    except _Invalid:
        _walk_with_path(v, "$")
    return out


def kind_of(v: Any) -> int:
    """The combined substructural kind of everything inside ``v``."""
    k = 0
    for item in substructural_items(v):
        k |= item.kind
    return k


def _find_path(roots: list[tuple[str, Any]], target: Any) -> str:
    """Path of the first occurrence of ``target`` (by identity) under the named roots."""

    def go(v: Any, path: str) -> str | None:
        if v is target:
            return path
        t = type(v)
        if t in _ATOMS:
            return None
        if t is tuple:
            for i, x in enumerate(v):
                r = go(x, f"{path}[{i}]")
                if r:
                    return r
        elif t is Map:
            for k in v._subs:
                r = go(v._m[k], f"{path}[{k!r}]")
                if r:
                    return r
        elif isinstance(v, Substructural):
            return go(v.value, f"{path}.value")
        elif t is Sealed:
            for h in v._held if v.crypto else (v.payload,):
                r = go(h, f"{path}<sealed>")
                if r:
                    return r
        else:
            fields = _record_fields(t)
            if fields:
                for f in fields:
                    r = go(getattr(v, f), f"{path}.{f}")
                    if r:
                        return r
            extra = _EXTRA_TYPES.get(t)
            if extra is not None:
                for h in extra(v)[1]:
                    r = go(h, f"{path}<context>")
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
    dropped, and no item may appear more than once if it may not be copied. Callers that
    already collected the items pass them to save a walk.
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
    seen: dict[int, int] = {}
    objs: dict[int, Any] = {}
    for item in out_items:
        i = id(item)
        seen[i] = seen.get(i, 0) + 1
        objs[i] = item
    received = {id(x): x for x in in_items}
    for i, n in seen.items():
        item = objs[i]
        if n > 1 and item.kind & NO_COPY:
            path = _find_path(outputs, item)
            raise SubstructuralError(
                path, f"{KIND_NAMES[item.kind]} value {_short(item)} appears {n} times in the "
                "outputs; it may not be copied"
            )
    for i, item in received.items():
        if item.kind & NO_DROP and i not in seen:
            path = _find_path(inputs, item)
            raise SubstructuralError(
                path, f"{KIND_NAMES[item.kind]} value {_short(item)} was dropped; keep it in "
                "the state, send it on, or send it to the null capability to destroy it"
            )


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
