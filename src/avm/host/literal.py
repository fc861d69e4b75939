"""Values as text, for the HTTP control API and the ``avm machine`` commands.

A message given from outside (a command line, a JSON request) is **a Python literal**,
read by walking :func:`ast.parse` of it, never by ``eval``:

* ``None``, ``True``, ``1``, ``-2.5``, ``"text"``, ``b"bytes"``, tuples ``("add", 1)``;
* ``{"k": 1}`` is a :class:`~avm.Map` (lists are refused: values are immutable, write a
  tuple);
* ``cap("name")`` or ``cap("name", context)`` is a capability to the host's machine
  ``name`` with that context (minted by the host, so only the admin token may send one);
* ``Transfer("a", "b", 5)``: a record registered under that name (``avm.record``), with
  positional or keyword fields.

Values shown to a client (:func:`to_json`) are JSON: atoms as themselves, tuples as
arrays, a :class:`~avm.Map` with text keys as an object (other maps as
``{"$map": [[k, v], ...]}``), bytes as ``{"$bytes": hex}``, records as
``{"$record": name, "fields": {...}}``, linear/affine/relevant wrappers as
``{"$linear": v}`` (...), and capabilities **opaquely**: ``{"$cap": machine name}`` with
no context (a context is the holder's secret, like a password in a URL), sealed values as
``{"$sealed": sealer name}``.
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Callable
from typing import Any

from ..core.caps import Capability, Self, address_text
from ..core.errors import UsageError
from ..core.values import (
    Affine,
    Linear,
    Map,
    Relevant,
    Sealed,
    _record_fields,
    record_name,
    registered_records,
)

__all__ = ["parse_value", "to_json", "to_text"]

SYNTAX_HELP = ('write a Python literal: ("add", 1), "get", {"k": 1}, cap("machine"), '
               'cap("machine", "context")')


def parse_value(text: str, cap: Callable[..., Capability] | None = None) -> Any:
    """The value written as ``text`` (see the module docstring).

    ``cap(name, context)`` mints capabilities; without it ``cap(...)`` is refused.
    Raises :class:`~avm.UsageError` saying what is wrong and how to write it.
    """
    if type(text) is not str:
        raise UsageError(f"a value is given as text: {SYNTAX_HELP}")
    if "cap" not in text and len(text) <= CACHED_TEXT_MAX:
        return _parse_plain(text)  # values are immutable: the same text, the same value
    return _parse(text, cap)


#: Texts up to this long without ``cap(...)`` are parsed once (clients repeat requests).
CACHED_TEXT_MAX = 200


@functools.lru_cache(maxsize=1024)
def _parse_plain(text: str) -> Any:
    return _parse(text, None)


def _parse(text: str, cap: Callable[..., Capability] | None) -> Any:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise UsageError(f"cannot read {text!r} ({e.msg}): {SYNTAX_HELP}") from None
    return _build(tree.body, cap, text)


def _build(node: ast.AST, cap: Callable[..., Capability] | None, text: str) -> Any:
    if isinstance(node, ast.Constant):
        if node.value is Ellipsis or isinstance(node.value, complex):
            raise UsageError(f"{ast.unparse(node)} is not a value: {SYNTAX_HELP}")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _build(node.operand, cap, text)
        if type(v) in (int, float):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Tuple):
        return tuple(_build(e, cap, text) for e in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise UsageError("** is not allowed in a value")
        return Map({_build(k, cap, text): _build(v, cap, text)  # type: ignore[arg-type]
                    for k, v in zip(node.keys, node.values, strict=True)})
    if isinstance(node, ast.List | ast.Set | ast.ListComp):
        raise UsageError(f"lists and sets are not values (values are immutable): write a "
                         f"tuple, ({ast.unparse(node)[1:-1]},)")
    if isinstance(node, ast.Call):
        name = _dotted(node.func)
        args = [_build(a, cap, text) for a in node.args]
        kwargs = {k.arg: _build(k.value, cap, text) for k in node.keywords if k.arg}
        if len(kwargs) != len(node.keywords):
            raise UsageError("** is not allowed in a value")
        if name == "cap":
            if cap is None:
                raise UsageError("cap(...) is not allowed here")
            if not 1 <= len(args) + len(kwargs) <= 3 or not args or type(args[0]) is not str:
                raise UsageError('write cap("machine") or cap("machine", context)')
            return cap(*args, **kwargs)
        records = registered_records()
        cls = records.get(name or "")
        if cls is None and name:
            short = [c for n, c in records.items() if n.rsplit(".", 1)[-1] == name]
            cls = short[0] if len(short) == 1 else None
        if cls is None:
            raise UsageError(f"{name or ast.unparse(node.func)}(...) is neither cap(...) nor "
                             f"a registered record: {SYNTAX_HELP}")
        try:
            return cls(*args, **kwargs)
        except (TypeError, ValueError) as e:
            raise UsageError(f"{name}(...): {e}") from None
    raise UsageError(f"{ast.unparse(node)!r} is not a literal value: {SYNTAX_HELP}")


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def to_json(v: Any, names: Callable[[bytes], str | None] = lambda a: None) -> Any:
    """``v`` as JSON data; capabilities opaque (see the module docstring).

    ``names`` maps an address to the machine's name where the host knows it.
    """
    t = type(v)
    if v is None or t in (bool, int, str):
        return v
    if t is float:
        return v if math.isfinite(v) else {"$float": repr(v)}
    if t is bytes:
        return {"$bytes": v.hex()}
    if t is tuple:
        return [to_json(x, names) for x in v]
    if t is Map:
        items = list(v.items())
        if all(type(k) is str for k, _ in items):
            return {k: to_json(x, names) for k, x in items}
        return {"$map": [[to_json(k, names), to_json(x, names)] for k, x in items]}
    if t is Capability:
        if v.commons is not None:
            return {"$cap": f"~{v.commons[0]}"}
        return {"$cap": names(v.address) or address_text(v.address)[:10]}
    if t is Self:
        return {"$self": names(v.address) or address_text(v.address)[:10]}
    if t is Sealed:
        return {"$sealed": v.sealer}
    for wrapper, key in ((Linear, "$linear"), (Affine, "$affine"), (Relevant, "$relevant")):
        if t is wrapper:
            return {key: to_json(v.value, names)}
    fields = _record_fields(t)
    if fields is not None:
        return {"$record": record_name(t),
                "fields": {f: to_json(getattr(v, f), names) for f in fields}}
    return {"$value": repr(v)}


def to_text(v: Any) -> str:
    """A one-line display (``repr``: capabilities show no context)."""
    return repr(v)
