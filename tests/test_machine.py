"""Machines and batch execution below the network (DESIGN sections 3 and 4, rules 1-3).

These tests call :func:`avm.run_batch` and :class:`avm.Behavior` directly: no network, no
scheduler. Each one names the rule it checks and fails if that rule is broken; the
network-level versions of the same rules live in ``test_rules.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import avm
from avm import (
    SIGNAL,
    Affine,
    Behavior,
    Capability,
    Linear,
    Map,
    Message,
    Relevant,
    Self,
    SignalError,
    StepContractError,
    run_batch,
)
from avm.core.caps import Keyring, SealingKey, seal_context, unseal_context
from avm.core.machine import partition

ADDR_A = b"A" * 32
ADDR_B = b"B" * 32
ADDR_C = b"C" * 32
KEY_A = SealingKey.from_seed(b"machine-a")
KEY_B = SealingKey.from_seed(b"machine-b")
KEY_C = SealingKey.from_seed(b"machine-c")


def cap(addr: bytes = ADDR_B, ctx: object = "ctx", priority: float = 0.0) -> Capability:
    key = {ADDR_A: KEY_A, ADDR_B: KEY_B, ADDR_C: KEY_C}[addr]
    return seal_context(addr, key, ctx, priority)


OUT = cap(ADDR_B, "probe")


def msgs(*contents: object, ctx: object = "in") -> list[Message]:
    return [Message(ctx, c) for c in contents]


# ---------------------------------------------------------------------------------------
# Rule 1: atomic
# ---------------------------------------------------------------------------------------

GOOD = st.tuples(st.just("add"), st.integers(0, 9))
BAD_KINDS = ("raise", "list", "drop", "copy", "dict-out", "not-a-cap", "shape")


def ledger_step(msg: Message, state: Map) -> tuple:
    """State: {"log": tuple, "tok": Linear}. Good ops append and send; bad ops break a rule."""
    op = msg.content
    if op[0] == "add":
        return [(OUT, op[1])], state.set("log", (*state["log"], op[1]))
    kind = op[1]
    if kind == "raise":
        raise RuntimeError("boom")
    if kind == "list":
        return [], ("log", [1, 2])
    if kind == "drop":
        return [], state.delete("tok")
    if kind == "copy":
        return [(OUT, state["tok"])], state
    if kind == "dict-out":
        return [(OUT, {"a": 1})], state
    if kind == "not-a-cap":
        return [("not a capability", 1)], state
    return state  # "shape": not an (outputs, state) pair


EXPECTED_RULE = {
    "raise": "exception", "list": "value", "drop": "substructural", "copy": "substructural",
    "dict-out": "value", "not-a-cap": "contract", "shape": "contract",
}


@settings(max_examples=100)
@given(
    before=st.lists(GOOD, max_size=6),
    after=st.lists(GOOD, max_size=6),
    bad=st.sampled_from(BAD_KINDS),
)
def test_rule1_a_failing_message_anywhere_fails_the_whole_batch(before, after, bad):
    """Rule 1: one bad message (raise, mutable value, dropped or copied linear, bad
    output, wrong shape) at a random position: no state, no outputs, definite failure at
    that index. The good prefix ran and produced outputs, and they are all discarded."""
    tok = Linear("token")
    state = Map({"log": (), "tok": tok})
    batch = msgs(*before, ("bad", bad), *after)
    r = run_batch(ledger_step, state, batch)
    assert not r.ok
    assert r.outputs == ()
    assert r.state is None
    assert r.failure.rule == EXPECTED_RULE[bad]
    assert r.failure.index == len(before)
    # The caller's state is untouched (values are immutable; nothing was mutated in place).
    assert state == Map({"log": (), "tok": tok}) and state["tok"] is tok
    # The same batch without the bad message commits everything, in order.
    good = run_batch(ledger_step, state, msgs(*before, *after))
    assert good.ok
    assert good.state["log"] == tuple(n for _, n in (*before, *after))
    assert [c for _, c in good.outputs] == [n for _, n in (*before, *after)]


def test_rule1_failure_reports_the_failing_index_and_type():
    def step(msg, state):
        if msg.content == 3:
            raise KeyError("missing")
        return [], state + msg.content

    r = run_batch(step, 0, msgs(1, 2, 3, 4))
    assert not r.ok
    assert r.failure == avm.Failure("exception", "'missing'", 2, "KeyError", "")
    assert "at message 2" in str(r.failure)


# ---------------------------------------------------------------------------------------
# Rule 2: in order, each step sees the state the previous one left
# ---------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=12))
def test_rule2_messages_are_stepped_in_send_order(digits):
    """state*10+digit is not commutative: any reordering or a stale state changes it."""
    seen: list = []

    def step(msg, state):
        seen.append(state)
        return [(OUT, msg.content)], state * 10 + msg.content

    r = run_batch(step, 0, msgs(*digits))
    assert r.ok
    assert r.state == int("".join(map(str, digits)))
    assert [c for _, c in r.outputs] == digits  # outputs keep send order too
    expected_seen = [0]
    for d in digits[:-1]:
        expected_seen.append(expected_seen[-1] * 10 + d)
    assert seen == expected_seen
    assert r.steps == len(digits)


# ---------------------------------------------------------------------------------------
# Rule 3: partitioned by destination, relative order kept
# ---------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(st.lists(st.sampled_from([ADDR_A, ADDR_B, ADDR_C]), max_size=20))
def test_rule3_partition_groups_by_destination_keeping_order(dests):
    caps = {a: cap(a, "x") for a in (ADDR_A, ADDR_B, ADDR_C)}
    outputs = [(caps[d], i) for i, d in enumerate(dests)]
    groups = partition(outputs)
    # One group per destination, in order of first appearance.
    firsts = list(dict.fromkeys(dests))
    assert [k for k, _ in groups] == firsts
    for addr, group in groups:
        assert [c for _, c in group] == [i for i, d in enumerate(dests) if d == addr]
        assert all(c.address == addr for c, _ in group)
    assert sum(len(g) for _, g in groups) == len(outputs)


def test_rule3_commons_outputs_are_grouped_per_service():
    from avm.core.caps import commons_cap

    origin = b"O" * 32
    rnd, null = commons_cap(origin, "random"), commons_cap(origin, "null")
    groups = partition([(rnd, 1), (null, 2), (rnd, 3)])
    assert groups == [(("~", "random"), ((rnd, 1), (rnd, 3))), (("~", "null"), ((null, 2),))]


# ---------------------------------------------------------------------------------------
# Step contract (DESIGN section 3): clear errors that say what to fix
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("result", [None, 5, ([],), ([], 1, 2), [[], 1]])
def test_wrong_return_shape_is_a_contract_failure(result):
    r = run_batch(lambda m, s: result, 0, msgs("x"))
    assert not r.ok
    assert r.failure.rule == "contract"
    assert "must return (outputs, new_state)" in r.failure.detail
    assert "Return ([], state)" in r.failure.detail


def test_outputs_must_be_a_sequence_of_pairs():
    r = run_batch(lambda m, s: ({OUT: 1}, s), 0, msgs("x"))
    assert r.failure.rule == "contract" and "list or tuple" in r.failure.detail
    r = run_batch(lambda m, s: ([(OUT, 1, 2)], s), 0, msgs("x"))
    assert r.failure.rule == "contract" and r.failure.path == "$.outputs[0]"


@pytest.mark.parametrize("target", ["machine-b", ADDR_B, None, ("cap",), Self(ADDR_B, 0)])
def test_message_to_a_non_capability_is_a_clear_error(target):
    r = run_batch(lambda m, s: ([(OUT, 0), (target, "hi")], s), 0, msgs("x"))
    assert not r.ok
    assert r.failure.rule == "contract"
    assert r.failure.path == "$.outputs[1][0]"
    assert "not a capability" in r.failure.detail
    assert "Self" in r.failure.detail  # says how to get one


@pytest.mark.parametrize(
    ("new_state", "where"),
    [
        (("orders", (1, 2, 3, [4])), "$.state[1][3]"),
        (("a", {"b": 1}), "$.state[1]"),
        ((1, lambda: 0), "$.state[1]"),
        ((1, {2}), "$.state[1]"),
        (bytearray(b"x"), "$.state"),
    ],
)
def test_mutable_value_in_state_names_its_path(new_state, where):
    r = run_batch(lambda m, s: ([], new_state), 0, msgs("x"))
    assert not r.ok
    assert r.failure.rule == "value"
    assert r.failure.path == where
    assert r.failure.detail.startswith(where)


def test_mutable_value_inside_a_map_state_names_the_key_and_index():
    def step(msg, state):
        return [], state.set("orders", (1, 2, 3, [4]))

    r = run_batch(step, Map(), msgs("x"))
    assert not r.ok
    assert r.failure.rule == "value"
    assert "['orders'][3]" in r.failure.path
    assert "list is mutable; use a tuple" in r.failure.detail


def test_mutable_value_in_outgoing_content_names_its_path():
    r = run_batch(lambda m, s: ([(OUT, 1), (OUT, ("ok", [1]))], s), 0, msgs("x"))
    assert r.failure.rule == "value"
    assert r.failure.path == "$.outputs[1].content[1]"


@avm.record(name="tests.machine.Order")
class Order:
    items: object


def test_mutable_value_in_a_record_names_the_field():
    r = run_batch(lambda m, s: ([], Map(o=(Order((1,)), Order([2])))), 0, msgs("x"))
    assert r.failure.rule == "value"
    assert "['o'][1].items" in r.failure.path


def test_state_is_never_mutated_in_place_by_a_failed_batch():
    """Immutability: a step cannot corrupt committed state even by trying."""
    state = Map(log=(1, 2))

    def step(msg, s):
        with pytest.raises(AttributeError):
            s.log = ()  # type: ignore[attr-defined]
        raise RuntimeError("then fail")

    r = run_batch(step, state, msgs("x"))
    assert not r.ok and state == Map(log=(1, 2))


# ---------------------------------------------------------------------------------------
# Substructural conservation at step boundaries (DESIGN section 2)
# ---------------------------------------------------------------------------------------


def test_linear_received_in_a_message_must_be_kept_or_sent():
    tok = Linear(7)
    kept = run_batch(lambda m, s: ([], m.content), None, msgs(tok))
    assert kept.ok and kept.state is tok
    sent = run_batch(lambda m, s: ([(OUT, m.content)], s), None, msgs(tok))
    assert sent.ok
    dropped = run_batch(lambda m, s: ([], s), None, msgs(tok))
    assert dropped.failure.rule == "substructural"
    assert dropped.failure.path == "$.message.content"
    assert "null capability" in dropped.failure.detail


def test_rebuilding_an_equal_linear_is_still_a_drop():
    r = run_batch(lambda m, s: ([], Linear(7)), None, msgs(Linear(7)))
    assert r.failure.rule == "substructural"


@pytest.mark.parametrize(
    ("wrapper", "copy_ok", "drop_ok"),
    [(Linear, False, False), (Affine, False, True), (Relevant, True, False)],
)
def test_substructural_kinds(wrapper, copy_ok, drop_ok):
    v = wrapper("x")
    copy = run_batch(lambda m, s: ([(OUT, m.content)], (m.content,)), None, msgs(v))
    drop = run_batch(lambda m, s: ([], s), None, msgs(v))
    assert copy.ok is copy_ok
    assert drop.ok is drop_ok
    if not copy_ok:
        assert "may not be copied" in copy.failure.detail
    if not drop_ok:
        assert "was dropped" in drop.failure.detail


def test_linear_in_state_is_checked_across_the_batch():
    """A linear value may move between state and outputs over several messages."""
    tok = Linear("t")

    def step(msg, state):
        if msg.content == "send":
            return [(OUT, state["tok"])], state.delete("tok")
        return [], state.set("n", state.get("n", 0) + 1)

    ok = run_batch(step, Map(tok=tok), msgs("inc", "send"))
    assert ok.ok and "tok" not in ok.state and ok.outputs[0][1] is tok

    def drop_late(msg, state):
        if msg.content == "drop":
            return [], state.delete("tok")
        return [], state.set("n", state.get("n", 0) + 1)

    bad = run_batch(drop_late, Map(tok=tok), msgs("inc", "inc", "drop"))
    assert bad.failure.rule == "substructural" and bad.failure.index == 2
    assert bad.failure.path == "$.state_before['tok']"


def test_linear_context_makes_a_linear_capability():
    me = Self(ADDR_A, 0, KEY_A)
    tok = Linear("ctx")
    c = me(tok)
    assert c.kind == 3
    # Minting the capability moves the linear value into it: keeping both is a copy.
    both = run_batch(lambda m, s: ([(OUT, me(m.content))], m.content), None, msgs(tok))
    assert both.failure.rule == "substructural"
    one = run_batch(lambda m, s: ([(OUT, me(m.content))], None), None, msgs(tok))
    assert one.ok


# ---------------------------------------------------------------------------------------
# Behavior: dispatch and life-cycle signals (DESIGN section 3)
# ---------------------------------------------------------------------------------------


def make_counter() -> Behavior:
    b = Behavior("counter")

    @b.on("add")
    def add(state, n):
        return [], state + n

    @b.on("get")
    def get(state, reply):
        return [(reply, state)], state

    @b.on("who")
    def who(state, *, ctx):
        return [(OUT, ctx)], state

    return b


def test_behavior_dispatches_by_name_and_passes_context():
    b = make_counter()
    r = run_batch(b, 0, [Message("c1", ("add", 2)), Message("c2", ("get", OUT)),
                         Message("c3", "who")])
    assert r.ok and r.state == 2
    assert r.outputs == ((OUT, 2), (OUT, "c3"))


def test_behavior_dispatches_records_and_fallback():
    b = Behavior("typed")

    @b.on(Order)
    def order(state, o):
        return [], (*state, o.items)

    @b.otherwise
    def rest(state, content):
        return [], (*state, ("other", content))

    r = run_batch(b, (), msgs(Order(1), 5, ("nope",)))
    assert r.ok and r.state == (1, ("other", 5), ("other", ("nope",)))


def test_unknown_message_says_what_the_behavior_handles():
    r = run_batch(make_counter(), 0, msgs(("mul", 3)))
    assert r.failure.rule == "contract"
    assert r.failure.error_type == "StepContractError"
    assert "no handler for message" in r.failure.detail
    assert "'add'" in r.failure.detail and "'get'" in r.failure.detail


def creation_batch(args: object, me: Self, env: Map) -> list[Message]:
    """What a host sends a new machine: init, self, env on its signal context."""
    return [Message(SIGNAL, ("init", args)), Message(SIGNAL, ("self", me)),
            Message(SIGNAL, ("env", env))]


def test_signals_reach_their_handlers_in_creation_order():
    b = Behavior("lifecycle")
    got: list = []

    @b.init
    def init(state, args):
        got.append(("init", state, args))
        return [], Map(n=args)

    @b.signal("self")
    def on_self(state, me):
        got.append(("self", me))
        return [], state.set("me", me)

    @b.signal("env")
    def on_env(state, env):
        got.append(("env", env))
        return [], state.set("env", env)

    me = Self(ADDR_A, 0, KEY_A)
    env = Map(null=OUT)
    r = run_batch(b, None, creation_batch(5, me, env))
    assert r.ok
    assert got == [("init", None, 5), ("self", me), ("env", env)]
    assert r.state == Map(n=5, me=me, env=env)
    # The Self it kept mints capabilities that open with the machine's own key.
    c = r.state["me"](("method", 1))
    assert unseal_context(c, Keyring(ADDR_A, KEY_A)) == ("method", 1)


def test_default_signal_handling():
    """No handlers: the init argument becomes the state; self, env, restart accepted."""
    b = make_counter()
    r = run_batch(b, "ignored", [*creation_batch(10, Self(ADDR_A, 0, KEY_A), Map()),
                                 Message(SIGNAL, ("restart", Map(host="h0"))),
                                 Message("c", ("add", 1))])
    assert r.ok and r.state == 11


def test_weak_signal_is_ignored():
    b = make_counter()
    r = run_batch(b, 3, [Message(SIGNAL, ("~wake", 1)), Message(SIGNAL, ("~", None))])
    assert r.ok and r.state == 3 and r.outputs == ()


def test_unknown_strong_signal_fails_with_a_fix():
    b = make_counter()
    r = run_batch(b, 3, [Message("c", ("add", 1)), Message(SIGNAL, ("wake", 1))])
    assert not r.ok
    assert r.failure.rule == "signal"
    assert r.failure.index == 1
    assert r.failure.error_type == "SignalError"
    assert "'wake'" in r.failure.detail
    assert "@counter.signal('wake')" in r.failure.detail
    assert "'~wake'" in r.failure.detail
    with pytest.raises(SignalError, match="does not handle"):
        b(Message(SIGNAL, ("wake", 1)), 0)


@pytest.mark.parametrize("content", ["init", ("init",), (1, 2), ("init", 1, 2)])
def test_malformed_signal_is_a_signal_error(content):
    with pytest.raises(SignalError, match="malformed signal"):
        make_counter()(Message(SIGNAL, content), 0)


def test_signal_context_is_matched_by_type_and_value():
    """A user context equal to the signal name but of another type is an ordinary message,
    and a Behavior can be given another signal context."""
    b = Behavior("custom", signal=("sig", 1))

    @b.otherwise
    def rest(state, content):
        return [], (*state, content)

    r = run_batch(b, (), [Message(("sig", 1), ("~x", 0)), Message(SIGNAL, ("~x", 0))])
    assert r.ok and r.state == (("~x", 0),)


def test_behavior_on_rejects_bad_keys():
    deco = Behavior("b").on(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message name"):
        deco(lambda state: ([], state))


def test_errors_raised_by_handlers_keep_their_rule():
    b = Behavior("strict")

    @b.on("bad")
    def bad(state):
        raise StepContractError("you broke it")

    r = run_batch(b, 0, msgs("bad"))
    assert r.failure.rule == "contract" and r.failure.detail == "you broke it"


# ---------------------------------------------------------------------------------------
# Purity: same inputs, same outputs
# ---------------------------------------------------------------------------------------


@settings(max_examples=50)
@given(st.lists(st.one_of(GOOD, st.tuples(st.just("bad"), st.sampled_from(BAD_KINDS))),
                max_size=8))
def test_run_batch_is_deterministic(ops):
    tok = Linear("token")
    state = Map({"log": (), "tok": tok})
    a = run_batch(ledger_step, state, msgs(*ops))
    b = run_batch(ledger_step, state, msgs(*ops))
    assert a.ok == b.ok and a.state == b.state and a.outputs == b.outputs
    assert a.failure == b.failure and a.steps == b.steps
