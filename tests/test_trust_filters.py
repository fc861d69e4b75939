"""Context filters are authority checks: they compare exact values, never Python's ``==``.

``0 == 0.0 == False`` and ``0.0 == -0.0`` in Python; a machine that seals ``True`` for its
admin and ``1`` for a user must not let the user through the admin's door.
"""

from __future__ import annotations

import pytest

import avm
from avm import Behavior, Map, Sim
from avm.core.machine import SIGNAL, Message, same_value


def _door(admin_ctx):
    b = Behavior("door")

    @b.on("open", context=admin_ctx)
    def open_(state):
        return [], "opened"

    @b.on("open")
    def refuse(state):
        return [], "refused"

    return b


@pytest.mark.parametrize(
    "admin, user",
    [
        (True, 1),
        (1, True),
        (0, False),
        (0.0, 0),
        (0.0, -0.0),
        (-0.0, 0.0),
        (("admin", True), ("admin", 1)),
        ((1,), (1.0,)),
        (Map({"role": 1}), Map({"role": True})),
        (avm.Fraction(1, 1), 1),
    ],
)
def test_a_lookalike_context_does_not_pass_the_filter(admin, user):
    sim = Sim(seed=1)
    sim.spawn("door", _door(admin), "shut")
    sim.send(sim.cap("door", user), ("open",))
    sim.run()
    assert sim.state("door") == "refused"
    sim.send(sim.cap("door", admin), ("open",))
    sim.run()
    assert sim.state("door") == "opened"


def test_tuple_prefix_filter_is_exact_too():
    sim = Sim(seed=2)
    sim.spawn("door", _door(True), "shut")
    sim.send(sim.cap("door", (1, "alice")), ("open",))
    sim.run()
    assert sim.state("door") == "refused"
    sim.send(sim.cap("door", (True, "alice")), ("open",))
    sim.run()
    assert sim.state("door") == "opened"


def test_signal_context_is_matched_exactly():
    b = Behavior("sig", signal=("sig", 1))
    seen = []

    @b.otherwise
    def other(state, content):
        seen.append(content)
        return [], state

    # A message whose context only looks like the signal context is an ordinary message.
    b(Message(("sig", True), ("init", 5)), 0)
    assert seen == [("init", 5)]
    _, state = b(Message(("sig", 1), ("init", 5)), 0)
    assert state == 5
    assert SIGNAL == "avm:signal"


def test_same_value():
    assert same_value("a", "a") and same_value((1, "x"), (1, "x"))
    assert same_value(0.0, 0.0) and not same_value(0.0, -0.0)
    assert not same_value(1, True) and not same_value(1, 1.0)
    assert same_value(Map({"a": (1,)}), Map({"a": (1,)}))
    assert not same_value(Map({"a": 1}), Map({"a": 1.0}))
    assert not same_value(float("nan"), float("nan"))
    assert not same_value([1], [1])  # not a value: never a match
