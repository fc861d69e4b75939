"""How a value type is made immutable for real (DESIGN section 2, decision D1).

Every value type of the project is a ``tuple`` subclass with ``__slots__ = ()``: its
fields are tuple items read through C getters (``collections._tuplegetter``, as
``namedtuple`` uses), it has no ``__dict__`` and no writable slot, and its ``__class__`` is
a read-only property, so ``object.__setattr__(v, "__class__", Other)`` fails too (CPython
otherwise allows it between tuple subclasses of the same layout). This module holds that
shared plumbing; the value types themselves live in ``values``, ``fraction`` and ``caps``.
"""

from __future__ import annotations

import operator
from typing import Any

try:  # the C field getter namedtuple uses
    from collections import _tuplegetter  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Pythons
    def _tuplegetter(index: int, doc: str) -> Any:
        return property(operator.itemgetter(index), doc=doc)

__all__ = ["READ_ONLY_CLASS", "TupleValue", "field_getter", "immutable", "new", "no_order"]

#: ``tuple.__new__``: builds an instance of a tuple subclass from its items, unchecked.
new: Any = tuple.__new__


def field_getter(index: int, doc: str) -> Any:
    """A read-only field of a tuple-based value (the C getter namedtuple uses)."""
    return _tuplegetter(index, doc)


#: ``__class__`` of every value type: read-only, so ``object.__setattr__(v, "__class__",
#: Other)`` fails (CPython would otherwise allow it between tuple subclasses).
READ_ONLY_CLASS = property(type, doc="The value's type (read-only).")


def no_order(self: Any, other: Any) -> bool:
    raise TypeError(f"{type(self).__name__} values have no order")


def immutable(self: Any, name: str, value: Any = None) -> None:
    raise AttributeError(f"{type(self).__name__} is immutable")


class TupleValue(tuple):
    """Shared plumbing of the tuple-based value types (not a value type itself)."""

    __slots__ = ()
    __class__ = READ_ONLY_CLASS  # type: ignore[assignment]
    __setattr__ = immutable
    __delattr__ = immutable  # type: ignore[assignment]
    __lt__ = __le__ = __gt__ = __ge__ = no_order  # type: ignore[assignment]

    def __bool__(self) -> bool:
        return True

    def __add__(self, other: Any) -> Any:  # type: ignore[override]
        return NotImplemented

    def __mul__(self, other: Any) -> Any:  # type: ignore[override]
        return NotImplemented

    __rmul__ = __mul__  # type: ignore[assignment]
