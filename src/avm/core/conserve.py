"""What crosses between machines, and how linear and relevant values are counted.

    "Linear and relevant values are conserved across the whole network, not only across
    one step: when a batch that carries them fails, is dropped or cannot be delivered,
    they go back to the sending machine (with the reason), and where the sender cannot
    take them, into a dead-letter record that operators can see." (DESIGN section 2)

Two small tools the runtime and the test kit share:

* :func:`transit` gives the messages of a batch as a host would deliver them: encoded
  by the sender's host and decoded by the receiver's. Nothing but values crosses: a
  capability or sealed value loses the plaintext it kept in memory (``_held``), and a
  ``Self`` arrives unbound, except at its own machine, whose host binds it to the
  machine's key again. Values that need none of this (atoms, the usual case) pass as they
  are, at the cost of a type test.
* :class:`Tally` counts the linear and relevant items of values the way the network
  census does (``avm.testing``): a ``Linear`` or ``Relevant`` wrapper is an item; a
  capability with a linear or relevant context counts as the items *of its context*
  when an ``opener`` can unseal it (the simulator holds every key), else as one item;
  a cryptographically sealed value counts as one item, whatever it holds, because only
  its key holder can see inside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .caps import Capability, SealingKey, Self
from .errors import AvmError
from .values import (
    _ATOMS,
    LINEAR,
    NO_DROP,
    RELEVANT,
    Affine,
    Linear,
    Map,
    Relevant,
    Sealed,
    _record_fields,
    replace_fields,
)

__all__ = ["transit", "strip", "needs_transit", "Tally", "OPAQUE", "opener_for", "no_drop"]

_SUBS = (Linear, Affine, Relevant)


# ---------------------------------------------------------------------------------------
# Transit: what a host delivers
# ---------------------------------------------------------------------------------------


def transit(keys: Any, dest: Any, msgs: tuple) -> tuple:
    """The messages ``msgs`` as a machine ``dest`` receives them from another machine.

    ``keys`` is the network's key table (``net.keys``: address -> version -> key bytes),
    read only to bind a ``Self`` of ``dest`` that comes home. Returns ``msgs`` itself when
    nothing needed stripping.
    """
    out: list | None = None
    binder = None
    atoms = _ATOMS
    for i, m in enumerate(msgs):
        cap, content = m
        if not cap._held and cap.commons is None:
            t = type(content)
            if t in atoms:
                continue
            if t is tuple:  # the usual ("name", args...): one pass of type tests
                for x in content:
                    if type(x) not in atoms:
                        break
                else:
                    continue
            if not _needs(content):
                continue
        if binder is None:
            binder = _Binder(keys, dest)
        c2 = _strip_cap(cap, binder)
        v2 = content if type(content) in _ATOMS else _strip(content, binder)
        if c2 is not cap or v2 is not content:
            if out is None:
                out = list(msgs)
            out[i] = (c2, v2)
    return msgs if out is None else tuple(out)


def strip(v: Any, dest: Any = None, keys: Any = None) -> Any:
    """One value as it arrives at ``dest`` (see :func:`transit`; ``keys`` as there)."""
    return v if type(v) in _ATOMS else _strip(v, _Binder(keys, dest))


class _Binder:
    __slots__ = ("keys", "dest", "made")

    def __init__(self, keys: Any, dest: Any) -> None:
        self.keys = keys
        self.dest = dest
        self.made: dict[int, SealingKey] = {}

    def self_for(self, s: Self) -> Self:
        key = s._key
        versions = self.keys.get(s.address) if s.address == self.dest and self.keys else None
        if versions is not None:
            raw = versions.get(s.keyver)
            if raw is not None:
                if key is not None:
                    return s  # bound, and coming home: its host holds that key
                k = self.made.get(s.keyver)
                if k is None:
                    k = self.made[s.keyver] = SealingKey(s.keyver, raw)
                return Self(s.address, s.keyver, k)
        return s if key is None else Self(s.address, s.keyver)


def needs_transit(v: Any) -> bool:
    """Does ``v`` hold anything :func:`transit` may change: a ``Self`` (bound or not: where
    it goes decides), a capability or cryptographic seal with plaintext held in memory, or
    a commons capability whose arguments hold one? A walk that allocates nothing; large
    maps remember their answer (they are immutable), so a map submitted or sent again is
    not walked again."""
    return type(v) not in _ATOMS and _needs(v)


#: Answers of :func:`_needs` for large maps, by the identity of their entries (a reference
#: is kept, so an id is never reused while cached). Bounded like the maps' order cache.
_NEEDS: dict[int, tuple[Any, bool]] = {}
_NEEDS_MIN = 32  # smaller maps are walked each time: cheaper than the bookkeeping
_NEEDS_ENTRIES_MAX = 1024
_NEEDS_KEYS_MAX = 1 << 20
_needs_keys = 0


def _needs(v: Any) -> bool:
    t = type(v)
    if t in _ATOMS:
        return False
    if t is tuple:
        for x in v:
            if type(x) not in _ATOMS and _needs(x):
                return True
        return False
    if t is Map:
        m = v._m
        if len(m) < _NEEDS_MIN:
            for x in m.values():
                if type(x) not in _ATOMS and _needs(x):
                    return True
            return False
        return _needs_map(m)
    if t is Capability:
        return bool(v._held) or v.commons is not None and _needs(v.commons[1])
    if t is Self:
        return True  # bound or not, where it goes decides: rare enough to always look
    if t in _SUBS:
        return _needs(v.value)
    if t is Sealed:
        return bool(v._held) if v.crypto else _needs(v.payload)
    fields = _record_fields(t)
    if fields is not None:
        for f in fields:
            x = getattr(v, f)
            if type(x) not in _ATOMS and _needs(x):
                return True
    return False


def _needs_map(m: Any) -> bool:
    global _needs_keys
    hit = _NEEDS.get(id(m))
    if hit is not None and hit[0] is m:
        return hit[1]
    found = False
    for x in m.values():
        if type(x) not in _ATOMS and _needs(x):
            found = True
            break
    while _NEEDS and (len(_NEEDS) >= _NEEDS_ENTRIES_MAX or _needs_keys + len(m) > _NEEDS_KEYS_MAX):
        old = _NEEDS.pop(next(iter(_NEEDS)), None)
        if old is not None:
            _needs_keys -= len(old[0])
    _NEEDS[id(m)] = (m, found)
    _needs_keys += len(m)
    return found


def _strip_cap(cap: Capability, b: _Binder) -> Capability:
    if cap.commons is not None:
        name, args = cap.commons
        if type(args) in _ATOMS or args == ():
            return cap
        new = _strip(args, b)
        return cap if new is args else Capability(cap.address, commons=(name, new))
    if not cap._held:
        return cap
    return Capability(cap.address, cap.keyver, cap.kind, cap.priority, cap.sealed)


def _strip(v: Any, b: _Binder) -> Any:
    t = type(v)
    if t in _ATOMS:
        return v
    if t is tuple:
        out: list | None = None
        for i, x in enumerate(v):
            if type(x) in _ATOMS:
                continue
            y = _strip(x, b)
            if y is not x:
                if out is None:
                    out = list(v)
                out[i] = y
        return v if out is None else tuple(out)
    if t is Map:
        new = v
        for k, x in v._m.items():
            if type(x) in _ATOMS:
                continue
            y = _strip(x, b)
            if y is not x:
                new = new.set(k, y)
        return new
    if t is Capability:
        return _strip_cap(v, b)
    if t is Self:
        return b.self_for(v)
    if t in _SUBS:
        inner = _strip(v.value, b)
        return v if inner is v.value else t(inner)
    if t is Sealed:
        if v.crypto:
            return Sealed(v.sealer, v.payload, True, v.kind) if v._held else v
        p = _strip(v.payload, b)
        return v if p is v.payload else Sealed(v.sealer, p)
    fields = _record_fields(t)
    if fields is not None:
        changes = {}
        for f in fields:
            x = getattr(v, f)
            if type(x) in _ATOMS:
                continue
            y = _strip(x, b)
            if y is not x:
                changes[f] = y
        return replace_fields(v, **changes) if changes else v
    return v  # Sealer, Unsealer and other opaque or atomic value types


# ---------------------------------------------------------------------------------------
# Counting: the census's unit
# ---------------------------------------------------------------------------------------

#: What an opener returns for a capability it cannot open: the capability counts as one.
OPAQUE = object()


class Tally:
    """Linear and relevant items in some values, as multisets (item -> count).

    ``opener(cap)`` returns the context of a capability with a substructural context, or
    :data:`OPAQUE`; without an opener every such capability is opaque.
    """

    __slots__ = ("linear", "relevant", "_open")

    def __init__(self, opener: Callable[[Capability], Any] | None = None) -> None:
        self.linear: dict[Any, int] = {}
        self.relevant: dict[Any, int] = {}
        self._open = opener

    @property
    def n_linear(self) -> int:
        return sum(self.linear.values())

    @property
    def n_relevant(self) -> int:
        return sum(self.relevant.values())

    def __bool__(self) -> bool:
        return bool(self.linear or self.relevant)

    def merge(self, other: Tally, sign: int = 1) -> Tally:
        for d, o in ((self.linear, other.linear), (self.relevant, other.relevant)):
            for k, n in o.items():
                m = d.get(k, 0) + sign * n
                if m:
                    d[k] = m
                else:
                    d.pop(k, None)
        return self

    def add(self, v: Any) -> Tally:
        """Count the items of ``v`` (any value, a message pair, a tuple of messages)."""
        if type(v) not in _ATOMS:
            self._walk(v)
        return self

    def _item(self, d: dict, x: Any) -> None:
        d[x] = d.get(x, 0) + 1

    def _walk(self, v: Any) -> None:
        t = type(v)
        if t in _ATOMS:
            return
        if t is tuple:
            for x in v:
                if type(x) not in _ATOMS:
                    self._walk(x)
            return
        if t is Map:
            subs = v._subs
            if subs:
                m = v._m
                for k in subs:
                    self._walk(m[k])
            return
        if t in _SUBS:
            if t is Linear:
                self._item(self.linear, v)
            elif t is Relevant:
                self._item(self.relevant, v)
            self._walk(v.value)
            return
        if t is Capability:
            if v.commons is not None:
                self._walk(v.commons[1])
                return
            if not v.kind & NO_DROP:
                return
            ctx = self._open(v) if self._open is not None else OPAQUE
            if ctx is OPAQUE:
                if v.kind == LINEAR:
                    self._item(self.linear, v)
                elif v.kind == RELEVANT:
                    self._item(self.relevant, v)
            else:
                self._walk(ctx)
            return
        if t is Sealed:
            if v.crypto:
                if v.kind == LINEAR:
                    self._item(self.linear, v)
                elif v.kind == RELEVANT:
                    self._item(self.relevant, v)
                return
            self._walk(v.payload)
            return
        fields = _record_fields(t)
        if fields is not None:
            for f in fields:
                x = getattr(v, f)
                if type(x) not in _ATOMS:
                    self._walk(x)


def no_drop(v: Any) -> bool:
    """True when ``v`` holds a linear or relevant item (one that may not be dropped)."""
    if type(v) in _ATOMS:
        return False
    t = Tally()
    t.add(v)
    return bool(t)


def opener_for(net: Any, env: Any) -> Callable[[Capability], Any]:
    """An opener for :class:`Tally`: unseal with the keys the network holds, via ``env``.

    Capabilities the network holds no keys for (an exported machine, a retired key
    version) or that do not unseal are :data:`OPAQUE`.
    """
    def opener(cap: Capability) -> Any:
        try:
            ring = env.keyring(net, cap.address)
            if ring is None:
                return OPAQUE
            return env.unseal(cap, ring)
        except AvmError:
            return OPAQUE
    return opener
