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
