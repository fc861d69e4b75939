"""Issue 5, items 6, 7, 10, 13 and 15 (runtime side): authenticated priority, failure texts
that leak nothing to senders, and containment (P9: one message never halts a network).

Every test here failed on the code before the fix; the comment "breaks if" says how.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import avm
from avm import SIGNAL, Behavior, Capability, Config, Faults, Linear, Map, Message, Sim, run_batch
from avm.core import commons
from avm.core import network as nw
from avm.core.errors import AvmError, StepContractError, UnknownName, UsageError
from avm.core.network import events
from avm.core.schedule import PRIORITY_TICKS, hlc_now, hlc_recv, score

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

node = Behavior("trust-node")


@node.init
def _init(state, args):
    return [], Map(log=(), me=None, env=None, secret=args)


@node.signal("self")
def _self(state, me):
    return [], state.set("me", me)


@node.signal("env")
def _env(state, env):
    return [], state.set("env", env)


@node.on("log")
def _log(state, x):
    return [], state.set("log", (*state["log"], x))


@node.on("admin", context=("admin", "SECRET-ADMIN-CONTEXT"))
def _admin(state):
    return [], state


@node.on("leak")
def _leak(state):
    raise ValueError(f"the vault code is {state['secret']}")


@node.on("send")
def _send(state, outs):
    return list(outs), state


@node.on("ask")
def _ask(state, service, content):
    """Send ``content`` to a commons service (malformed requests welcome)."""
    return [(state["env"][service], content)], state


@node.on("odd")
def _odd(state, how, i):
    """Misbehave with the i-th odd object of the test's table (a step may hold anything)."""
    v = ODD[i]
    if how == "raise":
        raise v
    if how == "output":
        return [(state["me"]("x"), v)], state
    if how == "target":
        return [(v, 1)], state
    if how == "state":
        return [], state.set("junk", v)
    if how == "outs":
        return v, state
    if how == "result":  # no valid (outputs, state) pair: that would replace the state
        return (v, state, v) if type(v) is tuple and len(v) == 2 else v
    if how == "commons":
        return [(state["env"][ODD_SERVICE[0]], (state["me"]("x"), v))], state
    if how == "commons-raw":
        return [(state["env"][ODD_SERVICE[0]], v)], state
    if how == "feedback-target":
        return [(state["env"]["feedback"], (v, ("log", "x"), state["me"]("s"), "tag"))], state
    raise AssertionError(how)


ODD: list = []
ODD_SERVICE = ["reflect"]


def fresh(seed: int = 1, **kw) -> Sim:
    sim = Sim(seed=seed, **kw)
    sim.behavior(node)
    return sim


def log_of(sim: Sim, name: str) -> tuple:
    return sim.state(name)["log"]


def applied(sim: Sim, name: str, trace: list | None = None) -> list:
    a = sim.address(name)
    return [e for e in (sim.trace if trace is None else trace)
            if type(e) is events.Applied and e.dest == a]


def _field_index(cls: type, name: str) -> int:
    """Where a tuple-based value keeps field ``name`` (tuplegetter or itemgetter)."""
    getter = cls.__dict__[name]
    if isinstance(getter, property):
        getter = getter.fget
    return getter.__reduce__()[1][0]


def raw_cap(like: Capability, **fields) -> Capability:
    """A Capability whose fields skip every constructor check (an attacker's object)."""
    names = ("address", "keyver", "kind", "priority", "sealed", "commons", "_held")
    vals = {n: getattr(like, n) for n in names}
    vals.update(fields)
    if issubclass(Capability, tuple):
        items = [None] * len(like)
        for n in names:
            try:
                items[_field_index(Capability, n)] = vals[n]
            except (KeyError, AttributeError, TypeError, IndexError):
                continue
        return tuple.__new__(Capability, items)
    c = object.__new__(Capability)
    for n in names:
        object.__setattr__(c, n, vals[n])
    return c


def replace_fields(v, **changes):
    try:
        from avm.core.values import replace_fields as rf
    except ImportError:
        return dataclasses.replace(v, **changes)
    return rf(v, **changes)


# ---------------------------------------------------------------------------------------
# Item 6: only an authenticated priority schedules or interrupts
# ---------------------------------------------------------------------------------------


def interrupt_run(rival_of, restarts_max: int = 2, rivals: int = 3):
    """t is suspended; a long priority-0 batch is queued, then rivals whose capability
    ``rival_of(sim)`` makes; then t resumes."""
    sim = fresh(config=Config(slice_steps=2, restarts_max=restarts_max))
    sim.probe("t")
    sim.spawn("clock", node)
    sim.run()
    sim.suspend("t")
    sim.submit([(sim.cap("t", "long"), ("long", j)) for j in range(5)], client="long")
    for _ in range(3):
        sim.send(sim.cap("clock", "in"), ("log", "tick"))
        sim.run()
    rival = rival_of(sim)
    for k in range(rivals):
        sim.send(rival, ("rival", k), client="rival")
    sim.resume("t")
    sim.run()
    return sim


def test_forged_priority_never_interrupts_a_legitimate_batch():
    """Breaks if the claimed (unauthenticated) priority of a forged capability is used for
    rule 8: before the fix the long batch was interrupted and then timed out."""
    def forged(sim):
        # Sealed at -0.5, claims 0.0001: just above the long batch, so it would be picked
        # after it and interrupt it. The raised priority does not open.
        c = sim.cap("t", "rival", priority=-0.5)
        return raw_cap(c, priority=0.0001)

    sim = interrupt_run(forged)
    assert not [e for e in sim.trace if type(e) is events.Interrupted]
    evs = applied(sim, "t")
    rivals = [e for e in evs if e.chan[0] == ("client", "rival")]
    assert len(rivals) == 3 and all(not e.ok and e.failure.rule == "unseal" for e in rivals)
    [long_ev] = [e for e in evs if e.chan[0] == ("client", "long")]
    assert long_ev.ok and long_ev.steps == 5
    assert sim.received("t") == tuple(("long", j) for j in range(5))
    assert sim.stats().get("batch.timeout") is None


def test_forged_batch_is_failed_at_once_not_after_older_batches():
    """An unauthentic batch is refused as soon as it heads its channel (it claims nothing)."""
    sim = fresh()
    sim.probe("t")
    sim.run()
    sim.suspend("t")
    good = sim.cap("t", "in")
    sim.send(good, "first", client="a")
    bad = raw_cap(good, sealed=good.sealed[:-1] + bytes([good.sealed[-1] ^ 1]))
    sim.send(bad, "forged", client="b")
    sim.resume("t")
    mark = len(sim.trace)
    sim.run()
    evs = applied(sim, "t", sim.trace[mark:])
    assert [e.ok for e in evs] == [False, True]
    assert evs[0].failure.rule == "unseal" and sim.received("t") == ("first",)


def test_authentic_higher_priority_still_interrupts():
    """The fix keeps rule 8 for real priorities (and a rival sealed at 0.0001 wins)."""
    sim = interrupt_run(lambda s: s.cap("t", "rival", priority=0.0001), restarts_max=3, rivals=2)
    assert [e.restarts for e in sim.trace if type(e) is events.Interrupted] == [1, 2]
    assert sim.received("t")[:2] == (("rival", 0), ("rival", 1))


@pytest.mark.parametrize("p", [1.5, 1e9, -7.0, math.inf, -math.inf, math.nan])
def test_submit_refuses_a_priority_outside_the_range(p):
    """Breaks if nw.submit(priority=...) lets a client claim priority 1e9 (no aging)."""
    sim = fresh()
    sim.probe("t")
    sim.run()
    with pytest.raises(UsageError):
        sim.net, _ = nw.submit(sim.net, [(sim.cap("t", "in"), 1)], priority=p)


def test_score_clamps_priority():
    """Breaks if a priority above 1 in memory moves a batch more than PRIORITY_TICKS."""
    ts = (5000, 0)
    assert score(ts, 1e9) == score(ts, 1.0)
    assert score(ts, -1e9) == score(ts, -1.0)
    assert score(ts, math.nan) == score(ts, 0.0)
    assert score(ts, math.inf) == score(ts, 1.0)


def test_a_priority_above_one_in_memory_does_not_defeat_aging():
    """A queued batch whose priority field says 1e9 is scheduled by what its capabilities
    prove (at most 1): an old priority -1 batch still runs first once it has aged
    2 * PRIORITY_TICKS. Breaks if the scheduler trusts Batch.priority."""
    sim = fresh()
    sim.probe("t")
    sim.run()
    sim.suspend("t")
    sim.send(sim.cap("t", "old", priority=-1.0), "old", client="old")
    sim.net = replace_fields(sim.net, now=sim.net.now + 2 * PRIORITY_TICKS + 10)
    sim.send(sim.cap("t", "new", priority=1.0), "new", client="new")
    (key, b), = [(k, v) for k, v in sim.net.pending.items() if k[0][0] == ("client", "new")]
    sim.net = replace_fields(sim.net, pending=sim.net.pending.set(key, replace_fields(b, priority=1e9)))
    sim.resume("t")
    sim.run()
    assert sim.received("t") == ("old", "new")


# ---------------------------------------------------------------------------------------
# Item 7: what goes back to a sender names a rule and an index, nothing of the receiver's
# ---------------------------------------------------------------------------------------


def feedback_reason(setup) -> tuple[Sim, str]:
    """src asks feedback to deliver a message to t; returns the reason src was told."""
    sim = fresh()
    p = sim.probe("p")
    sim.spawn("src", node, "src-secret")
    sim.spawn("t", node, "VAULT-1234")
    sim.run()
    target, content = setup(sim)
    fb = sim.state("src")["env"]["feedback"]
    sim.send(sim.cap("src", "in"), ("send", ((fb, (target, content, p, "tag")),)))
    sim.run()
    [(status, tag, reason)] = sim.received("p")
    assert (status, tag) == ("failed", "tag")
    return sim, reason


def test_refusal_by_context_does_not_quote_contexts():
    """Breaks if the Behavior's refusal (and so feedback) quotes the capability's context
    or the contexts its handlers want."""
    sim, reason = feedback_reason(
        lambda s: (s.cap("t", ("user", "SECRET-USER-CONTEXT")), ("admin",)))
    assert "SECRET" not in reason and "contract" in reason and "message 0" in reason
    # The Behavior's own message (the operator's detail) does not quote them either.
    with pytest.raises(StepContractError) as ei:
        node(Message(("user", "SECRET-USER-CONTEXT"), ("admin",)), Map())
    assert "SECRET" not in str(ei.value)


def test_failure_detail_stays_local():
    """Breaks if Failure.detail (here an exception quoting the receiver's state) is sent
    back through feedback. The operator still sees it in the trace."""
    sim, reason = feedback_reason(lambda s: (s.cap("t", "in"), ("leak",)))
    assert "VAULT" not in reason
    assert reason.startswith("exception at message 0")
    [f] = sim.failures("t")
    assert "VAULT-1234" in f.detail and f.error_type == "ValueError"
    assert "VAULT-1234" not in f.public and f.public == reason


def test_value_failures_quoting_outputs_stay_local():
    """A bad output is described (with a repr of the receiver's value) only locally."""
    def setup(s):
        return s.cap("t", "in"), ("send", (("VAULT-not-a-cap", 1),))
    sim, reason = feedback_reason(setup)
    assert "VAULT" not in reason and reason.startswith("contract at message 0")
    assert "VAULT" in sim.failures("t")[0].detail


def test_failure_public_text_for_every_rule():
    for rule in ("exception", "contract", "value", "substructural", "signal", "unseal",
                 "timeout", "undeliverable", "internal"):
        f = avm.Failure(rule, "SECRET detail", 3, "X", "$.state")
        assert f.public.startswith(f"{rule} at message 3: ") and "SECRET" not in f.public
        assert "SECRET" in str(f)  # the operator's text keeps the detail


# ---------------------------------------------------------------------------------------
# Item 10: one message never halts the network
# ---------------------------------------------------------------------------------------


class StrRaises(Exception):
    def __str__(self):
        raise RuntimeError("__str__ raised")


class ReprRaises(Exception):
    def __str__(self):
        raise RuntimeError("__str__ raised")

    def __repr__(self):
        raise RuntimeError("__repr__ raised")


class Exit(SystemExit):
    pass


class Weird:
    """An object that is no value and lies about everything."""

    def __repr__(self):
        raise RuntimeError("repr")

    def __str__(self):
        raise RuntimeError("str")

    def __eq__(self, other):
        raise RuntimeError("eq")

    def __hash__(self):
        raise RuntimeError("hash")

    def __bool__(self):
        raise RuntimeError("bool")

    def __len__(self):
        raise RuntimeError("len")

    def __iter__(self):
        raise RuntimeError("iter")


class MyLinear(Linear):
    __slots__ = ()


def still_runs(sim: Sim, name: str = "t") -> None:
    """The network keeps going: a later batch applies, and so does a snapshot."""
    before = log_of(sim, name)
    snap = sim.snapshot()
    sim.send(sim.cap(name, "in"), ("log", "after"))
    sim.run()
    assert log_of(sim, name) == (*before, "after")
    sim.restore(snap)
    sim.send(sim.cap(name, "in"), ("log", "after"))
    sim.run()
    assert log_of(sim, name) == (*before, "after")


def base_sim() -> Sim:
    sim = fresh()
    sim.spawn("t", node, "VAULT")
    sim.run()
    return sim


def test_reflect_on_a_sealer_is_refused_not_raised():
    """Breaks if reflect's KeyError on a Sealer escapes Sim.run() (before: every run)."""
    sim = base_sim()
    sealer, _ = avm.sealer_pair("s")
    sim.send(sim.cap("t", "in"), ("ask", "reflect", (sim.state("t")["me"]("x"), sealer)))
    snap = sim.snapshot()  # the poison is queued in the snapshot
    sim.run()
    still_runs(sim)
    sim.restore(snap)
    sim.run()
    still_runs(sim)


def test_any_exception_in_a_commons_service_is_a_refusal(monkeypatch):
    """Breaks if an exception inside a service escapes: it becomes a refused request."""
    def boom(v):
        raise ZeroDivisionError("inside reflect")
    monkeypatch.setattr(commons, "reflect", boom)
    sim = base_sim()
    sim.send(sim.cap("t", "in"), ("ask", "reflect", (sim.state("t")["me"]("x"), 1)))
    sim.run()
    [ev] = [e for e in sim.trace if type(e) is events.Commons]
    assert ev.service == "reflect" and "inside reflect" not in ev.error
    assert sim.stats()["commons.refused"] == 1
    still_runs(sim)


@pytest.mark.parametrize("exc", [StrRaises("x"), ReprRaises("y"), Exit(3), RecursionError(),
                                 GeneratorExit(), MemoryError()])
def test_an_exception_that_cannot_be_printed_fails_only_its_batch(exc):
    """Breaks if str()/repr() of the step's exception, or a BaseException, escapes."""
    sim = base_sim()
    ODD[:] = [exc]
    sim.send(sim.cap("t", "in"), ("odd", "raise", 0))
    sim.run()
    [f] = sim.failures("t")
    assert f.rule == "exception" and f.error_type == type(exc).__name__
    still_runs(sim)


@pytest.mark.parametrize("fields", [
    {"address": "not bytes"}, {"address": b"short"}, {"keyver": "0"}, {"keyver": -1},
    {"kind": 7}, {"kind": False}, {"priority": "high"}, {"priority": 5.0}, {"priority": math.nan},
    {"sealed": ["a", "list"]}, {"commons": ()}, {"commons": "random"}, {"_held": Weird()},
    {"kind": Weird()},
])
def test_capabilities_with_wrong_field_types_never_halt(fields):
    """Breaks if such a capability (built around the constructor) raises out of the
    simulator from a client submission or from a step's outputs."""
    sim = base_sim()
    good = sim.cap("t", "in")
    bad = raw_cap(good, **fields)
    with pytest.raises(AvmError):  # refused at the door, with a typed error
        sim.submit([(bad, ("log", "bad"))])
    try:  # inside a message: refused as no value, or (if accepted) contained later
        sim.send(good, ("send", ((bad, ("log", "bad")),)))
    except AvmError:
        pass
    sim.run()
    ODD[:] = [bad]
    for how in ("target", "output", "feedback-target"):  # made by a step
        sim.send(good, ("odd", how, 0))
        sim.run()
    assert "bad" not in log_of(sim, "t")
    rules = [f.rule for f in sim.failures("t")]
    assert rules and "internal" not in rules  # each failed its batch, at a proper check
    still_runs(sim)




def test_malformed_commons_requests_never_halt():
    sim = base_sim()
    me = sim.state("t")["me"]("x")
    for service in ("reflect", "hash", "random", "time", "null", "feedback"):
        for content in (None, (), (me,), (me, 1, 2), (1, 2), me, ("x", me, me, me),
                        (me, Map({1: (me, me)})), (me, -0.0), (me, 1 << 200)):
            sim.send(sim.cap("t", "in"), ("ask", service, content))
    sim.run()
    still_runs(sim)


def test_unknown_names_raise_unknown_name():
    """Breaks if unknown names raise a bare KeyError or a plain AvmError (D4)."""
    sim = base_sim()
    for call in (lambda: sim.state("nope"), lambda: sim.cap("nope"), lambda: sim.address("nope"),
                 lambda: sim.machine("nope"), lambda: sim.failures("nope"),
                 lambda: sim.spawn("x", node, host="nope"), lambda: sim.move("t", "nope"),
                 lambda: sim.suspend("nope")):
        with pytest.raises(UnknownName):
            call()
    with pytest.raises(UnknownName):
        nw.set_status(sim.net, b"\0" * 32, "stopped")
    with pytest.raises(UnknownName):
        nw.export_machine(sim.net, b"\0" * 32)


def test_every_value_and_substructural_failure_carries_a_path():
    def bad_message_step(msg, state):
        return [], state

    cases = [
        (lambda m, s: ([], [1]), "$.state"),
        (lambda m, s: ([(Weird(), 1)], s), "$.outputs[0][0]"),
        (lambda m, s: ((1, 2), s), "$.outputs[0]"),
        (lambda m, s: ([], s.delete("t")), "$.state_before"),
    ]
    for fn, prefix in cases:
        r = run_batch(fn, Map(t=Linear(1)), [Message(SIGNAL, 1)])
        assert not r.ok and r.failure.path.startswith(prefix), r.failure
    r = run_batch(bad_message_step, 0, [Message(None, [1])])  # a message that is no value
    assert not r.ok and r.failure.rule == "value" and r.failure.path.startswith("$.message")


def test_submit_errors_have_types_and_paths():
    sim = base_sim()
    t = sim.cap("t", "in")
    with pytest.raises(UsageError):
        sim.submit([(t,)])
    with pytest.raises(avm.ValueRuleError) as ei:
        sim.submit([(t, 1), (t, [1])])
    assert ei.value.path == "$[1].content"
    tok = Linear("x")
    with pytest.raises(avm.SubstructuralError) as si:
        sim.submit([(t, tok), (t, tok)])
    assert si.value.path.startswith("$[")


# -- the fuzz: odd values and odd exceptions through every door -------------------------


ATOMS = [-0.0, math.nan, math.inf, 1 << 300, False, True, "", b"", "\ud800", 0.1]


def _objs() -> list:
    from fractions import Fraction
    return [[1], {1: 2}, {1}, bytearray(b"x"), object(), Weird(), type, len, 1j,
            MyLinear(1), Linear(Weird()), Linear([1]), avm.sealer_pair("s")[0],
            avm.sealer_pair("s")[1], StrRaises("x"), Fraction(1, 3), Linear(1)]


OBJS = _objs()

# Odd values are drawn as recipes (nested tuples of indices) and built in the test, so
# that hypothesis never has to print an object whose repr raises.
RECIPES = st.recursive(
    st.tuples(st.just("atom"), st.integers(0, len(ATOMS) - 1))
    | st.tuples(st.just("obj"), st.integers(0, len(OBJS) - 1)),
    lambda inner: st.tuples(st.just("pair"), inner, inner) | st.tuples(st.just("map"), inner),
    max_leaves=4)


def build(recipe):
    tag = recipe[0]
    if tag == "atom":
        return ATOMS[recipe[1]]
    if tag == "obj":
        return OBJS[recipe[1]]
    if tag == "pair":
        return (build(recipe[1]), build(recipe[2]))
    v = build(recipe[1])
    return Map({"k": v}) if _is_value(v) else (v,)


def _is_value(v) -> bool:
    try:
        avm.check_value(v)
        return True
    except Exception:
        return False


EXCS = [StrRaises("a"), ReprRaises("b"), Exit(1), KeyError("k"), RecursionError(),
        AvmError("x"), StopIteration(), GeneratorExit(), avm.ValueRuleError("$", "v"),
        avm.SignalError("s"), MemoryError()]
HOWS = ["raise", "output", "target", "state", "outs", "result", "commons", "commons-raw",
        "feedback-target", "submit"]

_BASE: list = []


def _fuzz_sim() -> Sim:
    if not _BASE:
        _BASE.append(base_sim())
    base = _BASE[0]
    sim = Sim(seed=base.seed, record=True)
    sim.env = base.env
    sim.restore(base.net)
    return sim


PLANS = st.lists(st.tuples(st.sampled_from(HOWS), RECIPES, st.integers(0, len(EXCS) - 1),
                           st.sampled_from(commons.SERVICES)), min_size=1, max_size=3)


@settings(max_examples=120)
@given(plan=PLANS)
def test_fuzz_odd_values_and_exceptions_never_halt_the_network(plan):
    """CI's share of the containment fuzz; bench/fuzz_containment.py runs it longer."""
    check_plan(plan)


def check_plan(plan) -> None:
    sim = _fuzz_sim()
    t = sim.cap("t", "in")
    for k, (how, recipe, e, service) in enumerate(plan):
        value = build(recipe)
        ODD[:] = [EXCS[e] if how == "raise" else value]
        ODD_SERVICE[0] = service
        if how == "submit":
            try:
                sim.submit([(t, value)])
            except AvmError:
                pass
        else:
            sim.send(t, ("odd", how, 0))
        snap = sim.snapshot()
        sim.run()
        sim.send(t, ("log", k))
        sim.run()
        assert log_of(sim, "t")[-1] == k
        # a snapshot taken with the bad message still queued runs too
        sim.restore(snap)
        sim.run()
    assert not [e for e in sim.trace if type(e) is events.Applied and not e.ok
                and e.failure.rule == "internal"]


# ---------------------------------------------------------------------------------------
# Item 13: mutants of the clock and of the retry back-off
# ---------------------------------------------------------------------------------------

CLOCK = st.tuples(st.integers(0, 5), st.integers(0, 5))


@given(last=CLOCK, remote=CLOCK, physical=st.integers(0, 6))
def test_hlc_recv_is_strictly_after_both_clocks(last, remote, physical):
    """Kills the mutant where hlc_recv is not strictly after last or remote."""
    got = hlc_recv(last, remote, physical)
    assert got > last and got > remote and got[0] >= physical
    assert hlc_now(last, physical) > last


def test_hlc_recv_equal_physical_parts():
    assert hlc_recv((3, 4), (3, 7), 2) == (3, 8)
    assert hlc_recv((3, 9), (3, 7), 3) == (3, 10)
    assert hlc_recv((3, 1), (4, 7), 2) == (4, 8)
    assert hlc_recv((5, 1), (4, 7), 2) == (5, 2)
    assert hlc_recv((1, 1), (2, 7), 9) == (9, 0)


def test_retry_back_off_doubles_up_to_the_cap():
    """Kills a constant back-off: retransmissions of a lost batch are 2, 4, 8, ... ticks
    apart, capped at retry_ticks_max."""
    sim = Sim(seed=3, hosts=("h0", "h1"), faults=Faults(loss=1.0),
              config=Config(retry_max=9, retry_ticks=2, retry_ticks_max=32))
    sim.behavior(node)
    sim.spawn("src", node, host="h0")
    sim.spawn("t", node, host="h1")
    sim.run()
    mark = len(sim.trace)
    sim.send(sim.cap("src", "in"), ("send", ((sim.cap("t", "in"), ("log", 1)),)))
    sim.run(max_steps=5_000)
    src, t = sim.address("src"), sim.address("t")
    times = [e.at for e in sim.trace[mark:] if type(e) is events.Wire and e.kind == "batch"
             and e.chan == (src, t) and e.what in ("lost", "sent")]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[:6] == [2, 4, 8, 16, 32, 32], gaps
