"""The ``matmul`` commons service: exact products, the same everywhere, bad requests
refused with a reason (and nothing else changed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avm import Fraction, Map
from avm.core import matmul
from test_commons import got, setup


def reference(a, b):
    return tuple(tuple(sum((a[i][k] * b[k][j] for k in range(len(b))), 0)
                       for j in range(len(b[0]))) for i in range(len(a)))


numbers = st.one_of(st.integers(-(2**70), 2**70),
                    st.fractions(max_denominator=50).map(lambda f: Fraction(f.numerator, f.denominator)),
                    st.floats(-1e6, 1e6))


@st.composite
def pair(draw, elements=numbers):
    n, k, m = (draw(st.integers(1, 5)) for _ in range(3))
    a = tuple(tuple(draw(elements) for _ in range(k)) for _ in range(n))
    b = tuple(tuple(draw(elements) for _ in range(m)) for _ in range(k))
    return a, b


@settings(max_examples=200, deadline=None)
@given(pair())
def test_product_is_the_fixed_order_sum(ab):
    a, b = ab
    assert matmul.problem(ab) is None
    c = matmul.product(a, b)
    ref = reference(a, b)
    assert c == ref
    assert [type(x) for r in c for x in r] == [type(x) for r in ref for x in r]


@settings(max_examples=100, deadline=None)
@given(pair(st.integers(-(2**31), 2**31)))
def test_numpy_and_python_agree_on_ints(ab):
    a, b = ab
    assert matmul._numpy() is not None  # numpy is a test dependency
    with_np = matmul.product(a, b)
    saved = matmul._np
    try:
        matmul._np = None  # already tried: stays None
        assert matmul.product(a, b) == with_np == reference(a, b)
    finally:
        matmul._np = saved


def test_big_ints_do_not_overflow():
    a = ((2**62, 2**62),)
    b = ((2,), (2,))
    assert matmul.product(a, b) == ((2**64,),)  # numpy int64 would wrap


def test_a_machine_asks_and_gets_the_product():
    sim, cap = setup()
    a = ((1, 2), (3, 4))
    b = ((Fraction(1, 2),), (1.5,))
    sim.send(cap, ("ask", "matmul", (a, b)))
    sim.run()
    assert got(sim)[-1] == ("matmul", ((Fraction(1, 2) + 3.0,), (Fraction(3, 2) + 6.0,)))


@pytest.mark.parametrize("arg, why", [
    ("nope", "two matrices"),
    (((1, 2),), "two matrices"),
    (((), ((1,),)), "non-empty tuple"),
    ((((1, 2), (3,)), ((1,), (2,))), "differ in length"),
    ((((1, 2),), ((1,),)), "columns must equal"),
    ((((True,),), ((1,),)), "holds a bool"),
    ((((1,),), (("x",),)), "holds a str"),
    (((tuple([1] * 600),) * 600, ((1,),) * 600), "more than"),
])
def test_bad_requests_are_refused_with_a_reason(arg, why):
    assert why in matmul.problem(arg)
    sim, cap = setup()
    before, refused = got(sim), sim.stats().get("commons.refused", 0)
    sim.send(cap, ("ask", "matmul", arg))
    sim.run()
    assert got(sim) == before  # no answer, nothing else changed
    assert sim.stats()["commons.refused"] == refused + 1


def test_matmul_is_in_every_machines_env():
    sim, _ = setup()
    assert isinstance(sim.state("a"), Map) and "matmul" in sim.state("a")["env"]


class _SpyNumpy:
    """numpy, counting the products it is asked for."""

    def __init__(self, real):
        self.real, self.calls = real, 0
        self.int64 = real.int64

    def array(self, *a, **k):
        self.calls += 1
        return self.real.array(*a, **k)


@pytest.mark.parametrize("a, b, used", [
    (((1, 2), (3, 4)), ((5,), (6,)), True),
    (((2**63 - 1,),), ((1,),), True),  # exactly the largest partial sum int64 holds
    (((2**63 - 1, 1),), ((1,), (1,)), False),  # 2**63 - 1 + 1 would wrap
    (((2**61, 2**61),), ((1,), (1,)), True),  # inner length times the maxima fits...
    (((2**62, 2**62),), ((1,), (1,)), False),  # ...and here it does not
    (((2**62,),), ((2,),), False),  # 2**63 does not fit
    (((-(2**62),),), ((4,),), False),  # a large negative does not fit either
    (((0,),), ((2**63,),), False),  # small sums, but an entry int64 cannot hold
    (((2**63,),), ((0,),), False),
    (((0,),), ((2**63 - 1,),), True),
    (((1.5,),), ((2,),), False),  # floats stay in Python
    (((Fraction(1, 3),),), ((3,),), False),
])
def test_numpy_computes_exactly_the_products_that_fit(a, b, used):
    real = matmul._numpy()
    spy = _SpyNumpy(real)
    saved = matmul._np
    matmul._np = spy
    try:
        assert matmul.product(a, b) == reference(a, b)
    finally:
        matmul._np = saved
    assert (spy.calls > 0) == used


def test_refusals_name_the_operand_and_the_figures():
    assert "a holds a bool" in matmul.problem((((True,),), ((1,),)))
    assert "b holds a str" in matmul.problem((((1,),), (("x",),)))
    assert "each row of a" in matmul.problem((((1, 2), 3), ((1,), (2,))))
    assert "rows of b differ" in matmul.problem((((1, 2),), ((1,), (2, 3))))
    assert "a is 1x2 and b is 3x1" in matmul.problem((((1, 2),), ((1,), (2,), (3,))))
    wide = (((1,),) * 600, (tuple([1] * 500),))  # 600x1 times 1x500: 300,000 entries
    assert "the product would have 300000 entries" in matmul.problem(wide)
    square = tuple(tuple([1] * 500) for _ in range(500))  # exactly CELLS_MAX entries
    assert matmul.problem((square, ((1,),) * 500)) is None
    work = (tuple(tuple([1] * 2500) for _ in range(100)),
            tuple(tuple([1] * 100) for _ in range(2500)))  # 100 x 2500 x 100
    assert matmul.problem(work) == ("matmul: 25000000 multiply-adds exceed the limit of "
                                    "20000000")
    assert matmul.problem("nope") == "matmul takes (a, b): two matrices as tuples of row tuples"
    assert matmul.problem((((1,),) * 500, (tuple([1] * 500),))) is None  # CELLS_MAX exactly
    edge = (tuple(tuple([1] * 2000) for _ in range(100)),
            tuple(tuple([1] * 100) for _ in range(2000)))  # exactly WORK_MAX
    assert matmul.problem(edge) is None
