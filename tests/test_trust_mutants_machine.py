"""run_batch's failures, exactly (issue 5, item 13: mutants of ``avm.core.machine``).

Every way a batch can fail is pinned as the full ``Failure`` (rule, detail, message index,
error type, path) and the step count, because operators and the checker read all of
them; every legitimate move of a linear item (through a context, into a capability,
out of a forwarded capability) must pass, and every drop or copy must fail even when the
fast paths would skip the conservation check.
"""

from __future__ import annotations

from typing import Any

import pytest

from avm import Linear, Map
from avm.core.caps import Capability, SealingKey, Self, seal_context
from avm.core.errors import SignalError
from avm.core.machine import (
    ANY,
    SIGNAL,
    Behavior,
    Failure,
    Message,
    public_reason,
    run_batch,
)
from avm.core.values import record


@record(name="test.mutants.machine.Pair")
class Pair:
    a: Any
    b: Any


ADDR = bytes(range(32))
KEY = SealingKey(0, b"s" * 64)
ME = Self(ADDR, 0, KEY)
CAP = seal_context(ADDR, KEY, "c")
M1 = [Message("c", 1)]
DROP = "was dropped; keep it in the state, send it on, or send it to the null capability to destroy it"


def _failure(r) -> tuple:
    assert not r.ok and r.state is None and r.outputs == () and r.state_items is None
    f = r.failure
    return (f.rule, f.detail, f.index, f.error_type, f.path, r.steps)


class _BadBool:
    def __bool__(self):
        raise ValueError("no truth")


class _BadStr(Exception):
    def __str__(self):
        raise RuntimeError


class _IntPath(Exception):
    path = 5


class _StrPath(Exception):
    path = "$.where"


class _RaisingPath(Exception):
    @property
    def path(self):
        raise RuntimeError


def _raiser(exc):
    def step(m, s):
        raise exc
    return step


class _BadRepr:
    def __repr__(self):
        raise ValueError


_HELD_NOT_TUPLE = tuple.__new__(Capability, (ADDR, 0, 0, 0.0, bytes(16), None, "x"))
_SHORT_CAP = tuple.__new__(Capability, (ADDR,))
_BAD_CAP = tuple.__new__(Capability, (ADDR, 0, 0, 2.0, bytes(16), None, ()))
_HELD_BAD = Capability(ADDR, 0, 0, 0.0, bytes(16), held=([1],))
L = Linear("minted")

CASES = {
    "state not a value": (lambda m, s: ([], s), [1], M1, (
        "value", "the state given to run_batch is not a value", None, "", "$.state", 0)),
    "wrong shape": (lambda m, s: 5, 0, M1, (
        "contract", "a step must return (outputs, new_state), a pair; got 5. Return ([], state) "
        "to send nothing.", 0, "", "$", 0)),
    "uncheckable result": (lambda m, s: (_BadBool(), s), 0, M1, (
        "value", "the step's result could not be checked: no truth", 0, "", "$", 0)),
    "outputs not a sequence": (lambda m, s: ({1: 2}, s), 0, M1, (
        "contract", "the outputs must be a list or tuple of (capability, content) pairs, got a dict",
        0, "", "$.outputs", 0)),
    "output not a pair": (lambda m, s: ([(CAP, 1), ("x" * 55,)], s), 0, M1, (
        "contract", "output 1 must be a (capability, content) pair, got ('" + "x" * 55 + "',)",
        0, "", "$.outputs[1]", 0)),
    "output pair repr cut at 60": (lambda m, s: ([("x" * 56,)], s), 0, M1, (
        "contract", "output 0 must be a (capability, content) pair, got ('" + "x" * 55 + "...",
        0, "", "$.outputs[0]", 0)),
    "output to a non-capability": (lambda m, s: ([("x", 1)], s), 0, M1, (
        "contract", "output 0 is sent to a str ('x'), which is not a capability; send only to "
        "capabilities you were given or made with Self", 0, "", "$.outputs[0][0]", 0)),
    "output to a malformed capability": (lambda m, s: ([(CAP, 1), (_BAD_CAP, 1)], s), 0, M1, (
        "contract", "output 1 is sent to a malformed capability: priority must be a float in "
        "[-1, 1] (not NaN, not -0.0)", 0, "", "$.outputs[1][0]", 0)),
    "output content not a value": (lambda m, s: ([(CAP, [1])], s), 0, M1, (
        "value", "$.outputs[0].content: a list is mutable; use a tuple", 0, "ValueRuleError",
        "$.outputs[0].content", 0)),
    "held plaintext not a value": (lambda m, s: ([(CAP, 1), (_HELD_BAD, 1)], s), 0, M1, (
        "value", "output 1's capability holds something that is not a value", 0, "",
        "$.outputs[1][0]", 0)),
    "new state not a value": (lambda m, s: ([], [1]) if m.content == 3 else ([], s), 0,
                              [Message("c", 1), Message("c", 2), Message("c", 3)], (
        "value", "$.state: a list is mutable; use a tuple", 2, "ValueRuleError", "$.state", 2)),
    "final text state not storable": (lambda m, s: ([], "\ud800"), 0, M1 * 2, (
        "value", "$.state: text with a lone surrogate (U+D800 at index 0) has no UTF-8 form, so it "
        "cannot be stored", 1, "ValueLimitError", "$.state", 1)),
    "final text state of one message": (lambda m, s: ([], "\ud800"), 0, M1, (
        "value", "$.state: text with a lone surrogate (U+D800 at index 0) has no UTF-8 form, so it "
        "cannot be stored", 0, "ValueLimitError", "$.state", 0)),
    "text state with no messages": (lambda m, s: ([], s), "\ud800", [], (
        "value", "$.state: text with a lone surrogate (U+D800 at index 0) has no UTF-8 form, so it "
        "cannot be stored", None, "ValueLimitError", "$.state", 0)),
    "final int state too big": (lambda m, s: ([], 1 << 100000), 0, M1, (
        "value", "$.state: an integer of 12501 bytes exceeds the limit of 1024 bytes", 0,
        "ValueLimitError", "$.state", 0)),
    "linear state dropped for an atom": (lambda m, s: ([], 0), Map({"t": Linear(1)}), M1, (
        "substructural", f"$.state_before['t']: linear value Linear(1) {DROP}", 0,
        "SubstructuralError", "$.state_before['t']", 0)),
    "linear context dropped": (lambda m, s: ([], s), Map({}), [Message(("t", Linear(1)), "use")], (
        "substructural", f"$.message.context[1]: linear value Linear(1) {DROP}", 0,
        "SubstructuralError", "$.message.context[1]", 0)),
    "linear content dropped": (lambda m, s: ([], s), 0, [Message("c", ("t", Linear(1)))], (
        "substructural", f"$.message.content[1]: linear value Linear(1) {DROP}", 0,
        "SubstructuralError", "$.message.content[1]", 0)),
    "minted and kept twice": (lambda m, s: ([], (L, L)), 0, M1, (
        "substructural", "$.state[0]: linear value Linear('minted') appears 2 times in the outputs; "
        "it may not be copied", 0, "SubstructuralError", "$.state[0]", 0)),
    "kept and sent": (lambda m, s: ([(CAP, s["t"])], s), Map({"t": Linear(1)}), M1, (
        "substructural", "$.state['t']: linear value Linear(1) appears 2 times in the outputs; it "
        "may not be copied", 0, "SubstructuralError", "$.state['t']", 0)),
    "sent twice": (lambda m, s: ([(CAP, 1), (CAP, s["t"]), (CAP, s["t"])], Map({})),
                   Map({"t": Linear(1)}), M1, (
        "substructural", "$.outputs[1][1]: linear value Linear(1) appears 2 times in the outputs; "
        "it may not be copied", 0, "SubstructuralError", "$.outputs[1][1]", 0)),
    "context not a value": (lambda m, s: ([], s), 0, [Message([1], "x")], (
        "value", "the message's context is not a value", 0, "", "$.message.context", 0)),
    "content not a value": (lambda m, s: ([], s), 0, [Message("c", 1), Message("c", [1])], (
        "value", "the message's content is not a value", 1, "", "$.message.content", 1)),
    "held plaintext not a tuple": (lambda m, s: ([(_HELD_NOT_TUPLE, 1)], s), 0, M1, (
        "contract", "output 0 is sent to a malformed capability: its held context is not a tuple",
        0, "", "$.outputs[0][0]", 0)),
    "capability fields unreadable": (lambda m, s: ([(_SHORT_CAP, 1)], s), 0, M1, (
        "contract", "output 0 is sent to a malformed capability: its fields cannot be read",
        0, "", "$.outputs[0][0]", 0)),
    "output whose repr fails": (lambda m, s: ([_BadRepr()], s), 0, M1, (
        "contract", "output 0 must be a (capability, content) pair, got <_BadRepr (repr() failed)>",
        0, "", "$.outputs[0]", 0)),
    "no outputs (None) and a linear dropped": (lambda m, s: (None, 0), Map({"t": Linear(1)}), M1, (
        "substructural", f"$.state_before['t']: linear value Linear(1) {DROP}", 0,
        "SubstructuralError", "$.state_before['t']", 0)),
    "exception whose str fails": (_raiser(_BadStr()), 0, M1, (
        "exception", "<_BadStr (str() failed)>", 0, "_BadStr", "", 0)),
    "exception with no text": (_raiser(ValueError()), 0, M1, (
        "exception", "ValueError", 0, "ValueError", "", 0)),
    "exception with 1000 characters": (_raiser(ValueError("x" * 1000)), 0, M1, (
        "exception", "x" * 1000, 0, "ValueError", "", 0)),
    "exception with 1001 characters": (_raiser(ValueError("x" * 1001)), 0, M1, (
        "exception", "x" * 997 + "...", 0, "ValueError", "", 0)),
    "exception with a non-text path": (_raiser(_IntPath("p")), 0, M1, (
        "exception", "p", 0, "_IntPath", "", 0)),
    "exception with a text path": (_raiser(_StrPath("p")), 0, M1, (
        "exception", "p", 0, "_StrPath", "$.where", 0)),
    "exception whose path raises": (_raiser(_RaisingPath("q")), 0, M1, (
        "exception", "q", 0, "_RaisingPath", "", 0)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_failure_is_reported_exactly(name):
    step, state, msgs, want = CASES[name]
    assert _failure(run_batch(step, state, msgs)) == want


def test_an_uncheckable_result_quotes_at_most_200_characters():
    class Long:
        def __bool__(self):
            raise ValueError("y" * 300)

    r = run_batch(lambda m, s: (Long(), s), 0, M1)
    assert r.failure.detail == "the step's result could not be checked: " + "y" * 197 + "..."


def test_a_failure_at_a_later_message_counts_the_steps_before_it():
    def step(m, s):
        if m.content == 3:
            raise KeyError("k")
        return [], s + 1

    r = run_batch(step, 0, [Message("c", i) for i in (1, 2, 3, 4)])
    assert _failure(r) == ("exception", "'k'", 2, "KeyError", "", 2)


# ---------------------------------------------------------------------------------------
# Legitimate moves pass; the items of the committed state are returned, as a list
# ---------------------------------------------------------------------------------------


def test_linear_items_may_move_through_contexts_capabilities_and_outputs():
    ctx_item = Linear("in context")
    r = run_batch(lambda m, s: ([(CAP, m.context[1])], s), Map({}), [Message(("t", ctx_item), "use")])
    assert r.ok and r.outputs == ((CAP, ctx_item),) and r.state_items == []

    state = Map({"t": Linear(1)})
    r = run_batch(lambda m, s: ([(CAP, ME(("t", s["t"])))], Map({})), state, M1)
    assert r.ok and r.outputs[0][1].kind == 3 and r.state_items == []

    linear_cap = ME(("one", Linear("shot")))
    r = run_batch(lambda m, s: ([(CAP, m.content[1])], s), 0, [Message("c", ("fwd", linear_cap))])
    assert r.ok and r.outputs == ((CAP, linear_cap),)
    r = run_batch(lambda m, s: ([(CAP, m.content[1]), (CAP, m.content[1])], s), 0,
                  [Message("c", ("fwd", linear_cap))])
    assert not r.ok and r.failure.rule == "substructural" and "may not be copied" in r.failure.detail
    r = run_batch(lambda m, s: ([(linear_cap, 1)], s), 0, [Message("c", ("fwd", linear_cap))])
    assert r.ok  # the capability itself is the item: sending through it moves it


def test_state_items_are_the_items_of_the_committed_state_as_a_list():
    t = Linear(1)
    state = Map({"t": t})
    for step in (lambda m, s: ([], s), lambda m, s: ([], s.set("n", 1))):
        r = run_batch(step, state, M1)
        assert r.ok and type(r.state_items) is list and r.state_items == [t] and r.state_items[0] is t
    r = run_batch(lambda m, s: ([], s), state, M1, state_items=[t])
    assert r.ok and type(r.state_items) is list and r.state_items == [t]
    for final in (0, "text", None, (1, 2)):
        r = run_batch(lambda m, s, f=final: ([], f), 0, M1)
        assert r.ok and r.state == final and type(r.state_items) is list and r.state_items == []
    assert run_batch(lambda m, s: ([], 1 << 64), 0, M1).ok  # a bignum is a value


# ---------------------------------------------------------------------------------------
# What a sender is told, and the small displays
# ---------------------------------------------------------------------------------------


def test_public_reasons_and_failure_text():
    assert public_reason("weird") == "weird: the batch failed"
    assert public_reason("value") == "value: a value broke the value rules"
    assert public_reason("value", 3) == "value at message 3: a value broke the value rules"
    assert public_reason("value", "3") == "value: a value broke the value rules"
    assert Failure("x", "d").public == "x: the batch failed"
    assert str(Failure("x", "d")) == "x: d"
    assert str(Failure("x", "d", 2)) == "x at message 2: d"
    assert repr(ANY) == "ANY"


def test_behavior_displays_and_refusals():
    b = Behavior("shop")
    assert repr(b) == "<Behavior shop: []>"
    assert Behavior().name == "behavior" and Behavior().signal_context == SIGNAL

    @b.on("buy", context="member")
    def _buy(state, item):
        return [], state

    assert repr(b) == "<Behavior shop: ['buy']>"
    with pytest.raises(Exception, match=r"^shop does not accept 'buy' through this capability: its 1 "
                       r"handler\(s\) for 'buy' each require another context$"):
        b(Message("guest", ("buy", 1)), 0)
    with pytest.raises(Exception, match=r"^shop does not accept 'buy' through this capability"):
        b(Message("guest", "buy"), 0)
    with pytest.raises(Exception, match=r"^shop has no handler for message \('sell', 1\); it handles \['buy'\]$"):
        b(Message("member", ("sell", 1)), 0)
    with pytest.raises(TypeError, match=r"^Behavior\.on takes a message name \(str\) or a record class$"):
        b.on(5)(lambda s: ([], s))

    @b.on(Pair, context="member")
    def _pair(state, p):
        return [], state

    with pytest.raises(Exception, match=r"^shop does not accept 'Pair' through this capability"):
        b(Message("guest", Pair(1, 2)), 0)
    with pytest.raises(SignalError, match=r"^malformed signal 5: expected \(name, args\)$"):
        b(Message(SIGNAL, 5), 0)

    seen = []

    @b.otherwise
    def _any(state, content, *, ctx):
        seen.append((state, content, ctx))
        return [], state

    b(Message("guest", ("sell", 1)), 7)
    assert seen == [(7, ("sell", 1), "guest")]

    @b.returned
    def _back(state, info):
        return [], (state, info)

    assert b(Message(SIGNAL, ("~returned", "info")), 1) == ([], (1, "info"))
