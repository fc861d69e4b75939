"""The ``matmul`` commons service: the product of two matrices (issue 7 item 5).

Matrices are tuples of equal-length row tuples of ``int``, ``float`` or ``avm.Fraction``
(exact types: a ``bool`` is not a number here). Every host must give the same answer as
the simulator, so the product is computed in a fixed order: entry ``(i, j)`` is
``sum(a[i][k] * b[k][j] for k in 0..n-1)`` added left to right. That is exact for ints
and Fractions, and for floats the same rounding everywhere. numpy (the ``numpy`` extra)
computes integer products when every partial sum provably fits in 64 bits, where its
answer is the same exact one; float and Fraction products stay in Python, because BLAS
sums in its own order and would round differently from host to host.
"""

from __future__ import annotations

from typing import Any

from .fraction import Fraction

__all__ = ["SERVICE", "CELLS_MAX", "WORK_MAX", "product", "problem"]

SERVICE = "matmul"
#: At most this many entries in each operand and in the product.
CELLS_MAX = 250_000
#: At most this many multiply-adds per request (rows x inner x columns).
WORK_MAX = 20_000_000

_NUMBER = (int, float, Fraction)
_INT64 = (1 << 63) - 1

_np: Any = None  # numpy, imported on the first integer product (optional: avm[numpy])
_np_tried = False


def _numpy() -> Any:
    global _np, _np_tried
    if not _np_tried:
        _np_tried = True
        try:
            import numpy as found
        except ImportError:  # pragma: no cover - depends on the environment
            found = None  # type: ignore[assignment]
        _np = found
    return _np


def _shape(m: Any, name: str) -> tuple[tuple[int, int] | None, str | None]:
    if type(m) is not tuple or not m:
        return None, f"matmul: {name} must be a non-empty tuple of rows"
    cols = -1
    for r in m:
        if type(r) is not tuple or not r:
            return None, f"matmul: each row of {name} must be a non-empty tuple"
        if cols < 0:
            cols = len(r)
        elif len(r) != cols:
            return None, f"matmul: the rows of {name} differ in length"
        for x in r:
            if type(x) not in _NUMBER:
                return None, f"matmul: {name} holds a {type(x).__name__}; use int, float or Fraction"
    if len(m) * cols > CELLS_MAX:
        return None, f"matmul: {name} has {len(m) * cols} entries, more than {CELLS_MAX}"
    return (len(m), cols), None


def problem(arg: Any) -> str | None:
    """Why ``arg`` is not ``(a, b)`` with compatible shapes and a bounded cost, or None."""
    if type(arg) is not tuple or len(arg) != 2:
        return "matmul takes (a, b): two matrices as tuples of row tuples"
    sa, why = _shape(arg[0], "a")
    if why:
        return why
    sb, why = _shape(arg[1], "b")
    if why:
        return why
    assert sa is not None and sb is not None
    if sa[1] != sb[0]:
        return f"matmul: a is {sa[0]}x{sa[1]} and b is {sb[0]}x{sb[1]}; a's columns must equal b's rows"
    if sa[0] * sb[1] > CELLS_MAX:
        return f"matmul: the product would have {sa[0] * sb[1]} entries, more than {CELLS_MAX}"
    if sa[0] * sa[1] * sb[1] > WORK_MAX:
        return f"matmul: {sa[0] * sa[1] * sb[1]} multiply-adds exceed the limit of {WORK_MAX}"
    return None


def product(a: tuple, b: tuple) -> tuple:
    """``a @ b`` for operands that passed :func:`problem`."""
    np = _numpy() if _ints_fit(a, b) else None
    if np is not None:
        c = np.array(a, dtype=np.int64) @ np.array(b, dtype=np.int64)
        return tuple(tuple(int(x) for x in row) for row in c.tolist())
    cols = tuple(zip(*b, strict=True))
    out = []
    for row in a:
        r = []
        for col in cols:
            s: Any = 0
            for x, y in zip(row, col, strict=True):
                s = s + x * y
            r.append(s)
        out.append(tuple(r))
    return tuple(out)


def _ints_fit(a: tuple, b: tuple) -> bool:
    """Whether every entry and every partial sum of ``a @ b`` fits in a signed 64-bit
    int (then numpy's answer is the exact one). The entries count on their own: a zero
    matrix times a huge one has small sums, but the huge entries do not convert."""
    ma = mb = 0
    for m, is_a in ((a, True), (b, False)):
        for r in m:
            for x in r:
                if type(x) is not int:
                    return False
                v = -x if x < 0 else x
                if is_a:
                    ma = max(ma, v)
                else:
                    mb = max(mb, v)
    return ma <= _INT64 and mb <= _INT64 and ma * mb * len(b) <= _INT64
