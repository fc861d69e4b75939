"""Paths into values, and compact diffs of values (for ``avm state``, state edits and peek).

A path names a part of a state, as the debugger shows it and an operator edits it::

    balance             the text key "balance" of a Map (or the field of a record)
    accounts.ann.limit  keys (or fields) one inside the other
    log[2]   log.2      item 2 of a tuple (or the int key 2 of a Map)
    ["a b"]  [b"\\x00"]  a Map key written as a Python literal (avm.host.literal)

A leading ``$`` (the state itself) is allowed: ``$.accounts.ann``. Names are letters,
digits, ``_`` and ``-``; anything else is written as a literal in brackets. The same
syntax is what :func:`format_path` writes, so a path in a diff can be pasted into
``avm state edit --set``.

:func:`set_at` rebuilds the value with one part replaced (values are immutable: the
rest is shared); it does not check the value rules, which is the core's job
(:func:`avm.core.network.set_state`).
"""

from __future__ import annotations

import re
from typing import Any

from ..core.errors import UsageError
from ..core.machine import same_value
from ..core.values import Map, _record_fields, display, replace_fields
from .literal import parse_value, to_json

__all__ = ["ABSENT", "parse_path", "format_path", "get_at", "set_at", "diff",
           "PATH_CHARS_MAX", "DIFF_CHANGES_MAX"]

#: The longest path accepted (characters).
PATH_CHARS_MAX = 4096
#: Changes a diff reports before it stops (and says it was cut).
DIFF_CHANGES_MAX = 50

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class _Absent:
    """What a diff shows where one side has no such key or item."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()

Segment = tuple[str, Any]  # ("name", str) or ("key", a value: a literal or an index)


def parse_path(text: str) -> tuple[Segment, ...]:
    """The segments of a path (see the module docstring); ``""`` or ``"$"`` is the whole
    value. Raises :class:`~avm.UsageError` saying where the path is wrong."""
    if type(text) is not str:
        raise UsageError("a path is text, e.g. accounts.ann or log[2]")
    if len(text) > PATH_CHARS_MAX:
        raise UsageError(f"a path has at most {PATH_CHARS_MAX} characters")
    s = text.strip()
    i = 1 if s.startswith("$") else 0
    out: list[Segment] = []
    first = True
    while i < len(s):
        c = s[i]
        if c == "[":
            j = s.find("]", i + 1)
            while True:
                if j < 0:
                    raise UsageError(f"path {text!r}: no ']' closes the '[' at {i}, or what is "
                                     "inside is not a Python literal")
                try:
                    key = parse_value(s[i + 1:j])
                    break
                except UsageError:
                    j = s.find("]", j + 1)
            out.append(("key", key))
            i = j + 1
        elif c == "." or first:
            if c == ".":
                i += 1
            m = _NAME.match(s, i)
            if m is None:
                raise UsageError(f"path {text!r}: expected a name (letters, digits, _ or -) "
                                 f"at {i}; write other keys as [\"...\"]")
            name = m.group()
            out.append(("key", int(name)) if name.isdigit() else ("name", name))
            i = m.end()
        else:
            raise UsageError(f"path {text!r}: expected '.' or '[' at {i}")
        first = False
    return tuple(out)


def format_path(segs: tuple[Segment, ...] | list[Segment]) -> str:
    """The text of a path, ``$`` first: ``$.accounts.ann``, ``$.log[2]``, ``$["a b"]``."""
    parts = ["$"]
    for kind, v in segs:
        if kind == "name" or (type(v) is str and _IDENT.fullmatch(v)):
            parts.append(f".{v}")
        else:
            parts.append(f"[{display(v)}]")
    return "".join(parts)


def _where(segs: tuple[Segment, ...], n: int) -> str:
    return format_path(segs[:n])


def _step(v: Any, seg: Segment, segs: tuple[Segment, ...], n: int,
          missing_ok: bool = False) -> Any:
    kind, k = seg
    t = type(v)
    if t is Map:
        if k in v:
            return v[k]
        if missing_ok:
            return ABSENT
        raise UsageError(f"{_where(segs, n)} has no key {display(k)}")
    if t is tuple:
        if type(k) is not int:
            raise UsageError(f"{_where(segs, n)} is a tuple: index it with a number, e.g. [0]")
        if not 0 <= k < len(v):
            raise UsageError(f"{_where(segs, n)} has {len(v)} items; no item {k}")
        return v[k]
    fields = _record_fields(t)
    if fields is not None:
        if type(k) is not str or k not in fields:
            raise UsageError(f"{_where(segs, n)} is a record {t.__name__} with fields "
                             f"{', '.join(fields)}; it has no field {display(k)}")
        return getattr(v, k)
    raise UsageError(f"{_where(segs, n)} is {type(v).__name__}: there is nothing inside it "
                     f"to reach with {format_path((seg,))[1:]}")


def get_at(value: Any, path: str | tuple[Segment, ...]) -> Any:
    """The part of ``value`` at ``path``; :class:`~avm.UsageError` if there is none."""
    segs = parse_path(path) if isinstance(path, str) else path
    for n, seg in enumerate(segs):
        value = _step(value, seg, segs, n)
    return value


def set_at(value: Any, path: str | tuple[Segment, ...], new: Any) -> Any:
    """``value`` with the part at ``path`` replaced by ``new`` (a Map may gain the key
    the path ends with); :class:`~avm.UsageError` if the path does not fit."""
    segs = parse_path(path) if isinstance(path, str) else path

    def go(v: Any, n: int) -> Any:
        if n == len(segs):
            return new
        kind, k = segs[n]
        last = n == len(segs) - 1
        inner = _step(v, segs[n], segs, n, missing_ok=last)
        made = go(inner, n + 1)
        t = type(v)
        if t is Map:
            return v.set(k, made)
        if t is tuple:
            return (*v[:k], made, *v[k + 1:])
        return replace_fields(v, **{k: made})

    return go(value, 0)


def diff(a: Any, b: Any, limit: int = DIFF_CHANGES_MAX) -> tuple[list[tuple[str, Any, Any]], bool]:
    """Where two values differ: ``([(path, a's part, b's part), ...], cut)``.

    Maps are compared key by key, records field by field, tuples item by item (a longer
    one has ``ABSENT`` items on the other side); anything else is one change. ``cut``:
    more than ``limit`` changes, the rest not listed. Equal means the same AVM value
    (:func:`avm.core.machine.same_value`: types all the way down).
    """
    out: list[tuple[str, Any, Any]] = []
    cut = False

    def go(x: Any, y: Any, segs: tuple[Segment, ...]) -> None:
        nonlocal cut
        if x is y or cut:
            return
        if len(out) >= limit:
            if not same_value(x, y):
                cut = True
            return
        tx, ty = type(x), type(y)
        if tx is Map and ty is Map:
            for k, vx in x.items():
                go(vx, y[k] if k in y else ABSENT, (*segs, ("key", k)))
            for k, vy in y.items():
                if k not in x:
                    go(ABSENT, vy, (*segs, ("key", k)))
            return
        if tx is tuple and ty is tuple:
            for i in range(max(len(x), len(y))):
                go(x[i] if i < len(x) else ABSENT, y[i] if i < len(y) else ABSENT,
                   (*segs, ("key", i)))
            return
        fields = _record_fields(tx) if tx is ty else None
        if fields is not None:
            for f in fields:
                go(getattr(x, f), getattr(y, f), (*segs, ("name", f)))
            return
        if x is ABSENT or y is ABSENT or not same_value(x, y):
            out.append((format_path(segs), x, y))

    go(a, b, ())
    return out, cut


def change_json(change: tuple[str, Any, Any], names: Any, labels: tuple[str, str]) -> dict:
    """One change as JSON, capabilities opaque; ``ABSENT`` as ``{"$absent": true}``."""
    path, x, y = change

    def j(v: Any) -> Any:
        return {"$absent": True} if v is ABSENT else to_json(v, names)

    return {"path": path, labels[0]: j(x), labels[1]: j(y)}
