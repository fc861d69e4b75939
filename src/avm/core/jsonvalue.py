"""A JSON rendering of values, for tools (``avm sim --json``): whole, stable, and safe.

JSON has no tuples, no byte strings, no maps with non-text keys and no capabilities, so
each value has one rendering, chosen so that a reader can tell every kind apart and the
text is the same in every process (maps in canonical key order):

============================  =========================================================
value                         JSON
============================  =========================================================
``None``, ``bool``, ``int``   ``null``, ``true``/``false``, a number (exact, any size)
``float``                     a number; NaN and the infinities as ``{"$float": "nan"}``
                              (``"inf"``, ``"-inf"``), which JSON cannot write
``str``                       a string
``bytes``                     ``{"$bytes": "<hex>"}``
tuple                         an array
``Map``                       an object when every key is text not starting with ``$``,
                              else ``{"$map": [[key, value], ...]}``; canonical order
``Linear(v)`` (and ``Affine``, ``{"$linear": v}`` (``"$affine"``, ``"$relevant"``)
``Relevant``)
``Fraction``                  ``{"$fraction": [numerator, denominator]}``
record                        ``{"$record": "registered.name", "fields": {...}}``
capability                    ``{"$capability": {"address": ..., "kind": ..., "priority":
                              ...}}`` or ``{"$capability": {"commons": name}}``: opaque
``Self``                      ``{"$self": {"address": ..., "keyver": n}}``
``Sealed``, sealer, unsealer  ``{"$sealed": sealer name}``, ``{"$sealer": name}``, ...
============================  =========================================================

Capabilities and sealed values are **opaque**: the rendering names where a capability
leads (the address text, as in a URI's first part) but never its sealed bytes, which
are a bearer token (whoever has them can use it), nor a sealed value's ciphertext or the
plaintext a capability may hold in memory. Printing a state never hands out authority.
Every object that is not a plain map has exactly one key starting with ``$``.
"""

from __future__ import annotations

import math
from typing import Any

from .caps import Capability, Self, address_text
from .codec import encode
from .errors import AvmError
from .fraction import Fraction
from .values import (
    KIND_NAMES,
    Affine,
    Linear,
    Map,
    Relevant,
    Sealed,
    Sealer,
    Unsealer,
    _record_fields,
    display,
    record_name,
)

__all__ = ["to_json"]

_WRAPPERS = {Linear: "$linear", Affine: "$affine", Relevant: "$relevant"}


def to_json(v: Any) -> Any:
    """``v`` as plain JSON data (dicts, lists, str, int, float, bool, None)."""
    t = type(v)
    if v is None or t is bool or t is int or t is str:
        return v
    if t is float:
        if math.isnan(v):
            return {"$float": "nan"}
        if math.isinf(v):
            return {"$float": "inf" if v > 0 else "-inf"}
        return v
    if t is bytes:
        return {"$bytes": v.hex()}
    if t is tuple:
        return [to_json(x) for x in v]
    if t is Map:
        keys = sorted(v, key=_canonical)
        if all(type(k) is str and not k.startswith("$") for k in keys):
            return {k: to_json(v[k]) for k in keys}
        return {"$map": [[to_json(k), to_json(v[k])] for k in keys]}
    w = _WRAPPERS.get(t)
    if w is not None:
        return {w: to_json(v.value)}
    if t is Capability:
        if v.commons is not None:
            return {"$capability": {"commons": v.commons[0]}}
        return {"$capability": {"address": address_text(v.address),
                                "kind": KIND_NAMES.get(v.kind, str(v.kind)),
                                "priority": v.priority}}
    if t is Self:
        return {"$self": {"address": address_text(v.address), "keyver": v.keyver}}
    if t is Sealed:
        return {"$sealed": v[0]}
    if t is Sealer or t is Unsealer:
        return {"$" + t.__name__.lower(): v[0]}
    if t is Fraction:
        return {"$fraction": [v[0], v[1]]}
    names = _record_fields(t)
    if names is not None:
        return {"$record": record_name(t), "fields": {f: to_json(getattr(v, f)) for f in names}}
    return {"$value": t.__name__, "text": display(v)}


def _canonical(k: Any) -> tuple[int, bytes]:
    """The canonical encoding's key order: length first, then bytewise."""
    try:
        b = encode(k)
    except AvmError:
        b = repr(k).encode()
    return (len(b), b)
