"""``avm.Fraction``: an exact rational that is a value (decision D3).

``fractions.Fraction`` keeps its numerator and denominator in writable slots, so a step
could change one in place; it is therefore not a value. :class:`Fraction` is the same
number as an immutable ``(numerator, denominator)`` tuple, with the same arithmetic.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable
from fractions import Fraction as _PyFraction
from typing import Any

from .tuplevalue import TupleValue as _ValueBase
from .tuplevalue import field_getter as _field
from .tuplevalue import new as _new

__all__ = ["Fraction"]

_tuple_len = tuple.__len__


def _as_py(x: Any) -> Any:
    return _PyFraction(x[0], x[1]) if type(x) is Fraction else x


def _from_py(r: Any) -> Any:
    if type(r) is _PyFraction:
        return _new(Fraction, (r.numerator, r.denominator))
    return r


def _binop(name: str) -> tuple[Callable, Callable]:
    op = divmod if name == "divmod" else getattr(operator, name)

    def forward(self: Fraction, other: Any) -> Any:
        if type(other) is not Fraction and not isinstance(other, (int, float, complex, _PyFraction)):
            return NotImplemented
        return _from_py(op(_PyFraction(self[0], self[1]), _as_py(other)))

    def reverse(self: Fraction, other: Any) -> Any:
        if not isinstance(other, (int, float, complex, _PyFraction)):
            return NotImplemented
        return _from_py(op(_as_py(other), _PyFraction(self[0], self[1])))

    forward.__name__, reverse.__name__ = f"__{name}__", f"__r{name}__"
    return forward, reverse


def _cmp(name: str) -> Callable:
    op = getattr(operator, name)

    def compare(self: Fraction, other: Any) -> Any:
        if type(other) is not Fraction and not isinstance(other, (int, float, _PyFraction)):
            return NotImplemented
        return op(_PyFraction(self[0], self[1]), _as_py(other))

    compare.__name__ = f"__{name}__"
    return compare


class Fraction(_ValueBase):
    """An exact rational number, immutable: ``avm.Fraction(1, 3)``.

    The arithmetic of :class:`fractions.Fraction` (results that are rationals come back
    as ``avm.Fraction``), equal and hash-equal to the corresponding ``fractions.Fraction``,
    ``int`` or ``float``. Use it instead of ``fractions.Fraction``, whose slots are
    writable and which is therefore not a value. Always in lowest terms, denominator > 0;
    encoded as CBOR tag 30 ``[numerator, denominator]``.
    """

    __slots__ = ()
    numerator: int = _field(0, "The numerator, in lowest terms.")
    denominator: int = _field(1, "The denominator, positive, in lowest terms.")

    def __new__(cls, numerator: Any = 0, denominator: Any = None) -> Fraction:
        if type(numerator) is Fraction and denominator is None:
            return numerator
        f = _PyFraction(_as_py(numerator), _as_py(denominator) if denominator is not None else None)
        return _new(cls, (int(f.numerator), int(f.denominator)))

    @classmethod
    def from_float(cls, f: float) -> Fraction:
        return _from_py(_PyFraction.from_float(f))

    @classmethod
    def from_decimal(cls, d: Any) -> Fraction:
        return _from_py(_PyFraction.from_decimal(d))

    def to_python(self) -> _PyFraction:
        """The equal :class:`fractions.Fraction` (for libraries that need one)."""
        return _PyFraction(self[0], self[1])

    def limit_denominator(self, max_denominator: int = 1_000_000) -> Fraction:
        return _from_py(self.to_python().limit_denominator(max_denominator))

    def as_integer_ratio(self) -> tuple[int, int]:
        return (self[0], self[1])

    def is_integer(self) -> bool:
        return self[1] == 1

    __add__, __radd__ = _binop("add")  # type: ignore[assignment]
    __sub__, __rsub__ = _binop("sub")
    __mul__, __rmul__ = _binop("mul")  # type: ignore[assignment]
    __truediv__, __rtruediv__ = _binop("truediv")
    __floordiv__, __rfloordiv__ = _binop("floordiv")
    __mod__, __rmod__ = _binop("mod")
    __divmod__, __rdivmod__ = _binop("divmod")
    __pow__, __rpow__ = _binop("pow")
    __lt__ = _cmp("lt")  # type: ignore[assignment]
    __le__ = _cmp("le")  # type: ignore[assignment]
    __gt__ = _cmp("gt")  # type: ignore[assignment]
    __ge__ = _cmp("ge")  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if type(other) is Fraction:
            return self[0] == other[0] and self[1] == other[1]
        if isinstance(other, (int, float, complex, _PyFraction)):
            return _PyFraction(self[0], self[1]) == other
        return False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(_PyFraction(self[0], self[1]))

    def __neg__(self) -> Fraction:
        return _new(Fraction, (-self[0], self[1]))

    def __pos__(self) -> Fraction:
        return self

    def __abs__(self) -> Fraction:
        return _new(Fraction, (abs(self[0]), self[1]))

    def __bool__(self) -> bool:
        return self[0] != 0

    def __float__(self) -> float:
        return float(_PyFraction(self[0], self[1]))

    def __int__(self) -> int:
        return int(_PyFraction(self[0], self[1]))

    def __trunc__(self) -> int:
        return math.trunc(_PyFraction(self[0], self[1]))

    def __floor__(self) -> int:
        return self[0] // self[1]

    def __ceil__(self) -> int:
        return -(-self[0] // self[1])

    def __round__(self, ndigits: int | None = None) -> Any:
        return _from_py(round(_PyFraction(self[0], self[1]), ndigits))

    def __repr__(self) -> str:
        return f"Fraction({self[0]}, {self[1]})"

    def __str__(self) -> str:
        return str(self[0]) if self[1] == 1 else f"{self[0]}/{self[1]}"

    def __reduce__(self) -> tuple:
        return (Fraction, (self[0], self[1]))


numbers.Rational.register(Fraction)


def _fraction_shape(v: Any) -> str | None:
    if _tuple_len(v) != 2 or type(v[0]) is not int or type(v[1]) is not int:
        return "a Fraction is (int numerator, int denominator)"
    if v[1] <= 0 or math.gcd(v[0], v[1]) != 1:
        return "a Fraction must be in lowest terms with a positive denominator"
    return None
