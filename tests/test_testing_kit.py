"""The test kit can fail: the checker finds every kind of violation it claims to find.

Each test feeds the one checker (``avm.testing.Checker``) doctored records, either in the
neutral form that real hosts will use or as a simulator trace with an event removed,
repeated, swapped or forged, and expects the matching figure to move. A checker that
cannot fail proves nothing (TESTING.md, "One checker, used everywhere").
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

import avm
from avm import Behavior, InvariantViolation, Message
from avm.core.network import events
from avm.core.values import replace_fields
from avm.testing import (
    ALL_FAULTS,
    Checker,
    PairReport,
    Report,
    SimClock,
    check_sim,
    fault_counts,
    heal,
    make_sim,
    run_until_quiescent,
    watch,
)

A = ("client", "a")
B = b"machine-b"
CHAN = (A, B)


def clean(n: int = 3, chan: tuple = CHAN) -> Checker:
    c = Checker()
    for s in range(1, n + 1):
        c.committed(chan, s, f"h{s}")
    for s in range(1, n + 1):
        c.applied(chan, s, f"h{s}")
    return c


# -- the neutral input form ---------------------------------------------------------------


def test_clean_records_are_ok():
    r = clean().report()
    assert r.ok and r.violations == 0
    assert r.totals["committed"] == r.totals["applied"] == 3
    assert r.assert_ok() is r
    assert str(r).startswith("promises: OK")
    (pair,) = r.pairs
    assert isinstance(pair, PairReport) and pair.chan == CHAN and pair.label.startswith("client:a -> ")


def test_lost_is_counted_only_at_quiescence():
    c = Checker()
    for s in (1, 2, 3):
        c.committed(CHAN, s)
    c.applied(CHAN, 1)
    c.dropped(CHAN, 2, "unknown address")  # a definite failure, not a loss
    busy = c.report(quiescent=False)
    assert busy.ok and busy.total("in_flight") == 1 and busy.total("lost") == 0
    done = c.report()
    assert not done.ok
    assert done.total("lost") == 1 and done.total("dropped") == 1 and done.total("in_flight") == 0
    assert "#3: lost" in str(done)
    with pytest.raises(AssertionError, match="lost 1"):
        done.assert_ok()


def test_duplicate_outcomes():
    c = clean(2)
    c.applied(CHAN, 2, "h2")
    assert c.violations == 1
    r = c.report()
    assert r.total("duplicated") == 1 and r.total("order") == 0
    assert "applied after already applied" in str(r)
    # Applied, and then also dropped: two outcomes for one batch (not "definite").
    c2 = clean(1)
    c2.dropped(CHAN, 1, "unreachable")
    assert c2.report().total("duplicated") == 1
    # Committed twice by the sender is a duplicate too.
    c3 = clean(1)
    c3.committed(CHAN, 1)
    assert c3.report().total("duplicated") == 1


def test_failed_batches_count_as_outcomes_not_violations():
    c = Checker()
    c.committed(CHAN, 1)
    c.committed(CHAN, 2)
    c.applied(CHAN, 1, ok=False)
    c.applied(CHAN, 2)
    r = c.report()
    assert r.ok and r.total("failed") == 1 and r.total("applied") == 1


def test_reorder():
    c = Checker()
    for s in (1, 2, 3):
        c.committed(CHAN, s)
    c.applied(CHAN, 1)
    c.applied(CHAN, 3)
    c.applied(CHAN, 2)
    r = c.report()
    assert r.total("order") == 1 and r.total("duplicated") == 0 and r.total("lost") == 0
    assert "#2: applied after #3 (order)" in str(r)


def test_order_is_per_pair():
    other = (("client", "z"), B)
    c = Checker()
    c.committed(other, 1)
    c.committed(CHAN, 1)
    c.applied(other, 1)
    c.applied(CHAN, 1)
    assert c.report().ok


def test_phantom_and_late_commit():
    c = Checker()
    c.applied(CHAN, 1, "x")
    assert c.violations == 1
    r = c.report()
    assert r.total("phantoms") == 1 and "never committed (phantom)" in str(r)
    # Real hosts' records may arrive receiver side first: a later commit clears it.
    c.committed(CHAN, 1, "x")
    assert c.violations == 0 and c.report().ok
    # A drop of something never committed is a phantom too.
    c.dropped(CHAN, 7, "?")
    assert c.report().total("phantoms") == 1


def test_hash_mismatch():
    c = Checker()
    c.committed(CHAN, 1, b"\x01")
    c.committed(CHAN, 2, b"\x02")
    c.committed(CHAN, 3, None)  # unknown digests are never compared
    c.applied(CHAN, 1, b"\x01")
    c.applied(CHAN, 2, b"\xff")
    c.applied(CHAN, 3, b"\x03")
    r = c.report()
    assert r.total("hash_mismatches") == 1 and r.violations == 1
    # Also when the outcome was fed before the commit.
    c2 = Checker()
    c2.applied(CHAN, 1, "a")
    c2.committed(CHAN, 1, "b")
    assert c2.report().total("hash_mismatches") == 1 and c2.report().total("phantoms") == 0


def test_refused_duplicates_and_refused_min():
    c = clean(2)
    with pytest.raises(AssertionError, match="de-duplication path did not run"):
        c.report().assert_ok(refused_min=1)
    c.refused_duplicate(CHAN, 2)
    c.refused_duplicate(CHAN, n=2)
    r = c.report()
    assert r.total("refused") == 3
    r.assert_ok(refused_min=1)


def test_report_is_frozen_and_faults_are_figures_not_violations():
    c = clean(1)
    c.fault("loss", 3)
    r = c.report()
    assert r.ok and r.faults == {"loss": 3}
    assert "faults: loss 3" in str(r)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.quiescent = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.pairs[0].lost = 1  # type: ignore[misc]
    assert isinstance(r, Report)


# -- replay (P6) -------------------------------------------------------------------------


def adder(msg, state):
    if msg.content == "boom":
        raise ValueError("boom")
    return [], (state or 0) + msg.content


def replaying() -> Checker:
    return Checker(step_for=lambda d: adder if d == B else None)


def test_replay_agrees_with_the_stored_state():
    c = replaying()
    c.committed(CHAN, 1)
    c.committed(CHAN, 2)
    c.applied(CHAN, 1, messages=(Message(None, 2), Message(None, 3)))
    c.applied(CHAN, 2, ok=False, messages=(Message(None, 4), Message(None, "boom")))
    assert c.stored(B, 5)
    r = c.report()
    assert r.ok and r.replayed == 1


def test_replay_mismatch_on_a_wrong_stored_state():
    c = replaying()
    c.committed(CHAN, 1)
    c.applied(CHAN, 1, messages=(Message(None, 2),))
    assert not c.stored(B, 3)
    assert c.violations == 1
    r = c.report()
    assert not r.ok and len(r.replay_mismatches) == 1
    assert "replay mismatch" in str(r)
    # The last stored state counts: setting it right clears the violation.
    assert c.stored(B, 2)
    assert c.violations == 0 and c.report().ok


def test_replay_mismatch_when_a_batch_decides_otherwise():
    # Committed by the runtime, but the step fails on those messages: not atomic or not pure.
    c = replaying()
    c.committed(CHAN, 1)
    c.applied(CHAN, 1, ok=True, messages=(Message(None, "boom"),))
    assert c.violations == 1
    r = c.report()
    assert "committed but fails on replay" in r.replay_mismatches[0]
    # A failed batch that commits on replay: the runtime lost its effects.
    c2 = replaying()
    c2.committed(CHAN, 1)
    c2.applied(CHAN, 1, ok=False, messages=(Message(None, 1),))
    assert "failed but commits on replay" in c2.report().replay_mismatches[0]


def test_replay_starts_from_initial_state():
    c = Checker(step_for=lambda d: adder, initial={B: 10})
    c.committed(CHAN, 1)
    c.applied(CHAN, 1, messages=(Message(None, 1),))
    assert c.stored(B, 11)
    assert not c.stored(b"other", 1)  # nothing applied there: replay says 'None'


def test_destinations_without_a_step_are_not_replayed():
    c = replaying()
    assert c.stored(("~", "time"), "anything")
    assert c.report().replayed == 0


# -- the trace adapter, on a real simulation ------------------------------------------------

counter = Behavior("kit.counter")


@counter.on("add")
def _add(state, n):
    if n < 0:
        raise ValueError("negative")
    return [], state + n


@counter.on("fwd")
def _fwd(state, cap, n):
    return [(cap, ("add", n)), (cap, ("add", n + 1))], state


def small_sim(seed: int = 1, faults: str | None = "loss=0.2,dup=0.3,delay=1-10") -> avm.Sim:
    sim = make_sim(seed, 2, faults)
    sim.spawn("a", counter, 0, host="h0")
    sim.spawn("b", counter, 0, host="h1")
    for i in range(6):
        sim.send(sim.cap("a"), ("fwd", sim.cap("b"), i))
    sim.send(sim.cap("b"), ("add", -1))  # a failed batch
    run_until_quiescent(sim)
    return sim


@pytest.fixture(scope="module")
def ran() -> avm.Sim:
    return small_sim()


def applied_to(sim: avm.Sim, name: str) -> list[int]:
    addr = sim.address(name)
    return [i for i, e in enumerate(sim.trace)
            if type(e) is events.Applied and e.dest == addr and e.chan[0] == sim.address("a")]


def test_trace_of_a_faulty_run_is_clean(ran):
    r = check_sim(ran)
    r.assert_ok(refused_min=1)
    assert r.quiescent and r.replayed == 2 and r.total("failed") == 1
    assert r.faults.get("loss", 0) + r.faults.get("duplicate", 0) > 0
    assert "a -> b" in str(r)
    assert Checker.from_trace(ran.trace).report().ok  # without the sim: no replay, same figures


def test_trace_with_an_applied_event_removed_is_a_loss(ran):
    i = applied_to(ran, "b")[2]
    r = Checker.from_trace(ran.trace[:i] + ran.trace[i + 1:], ran).report()
    assert r.total("lost") == 1
    assert r.replay_mismatches  # b's stored state includes that batch


def test_trace_with_an_applied_event_repeated_is_a_duplicate(ran):
    i = applied_to(ran, "b")[2]
    trace = ran.trace[:i + 1] + [ran.trace[i]] + ran.trace[i + 1:]
    r = Checker.from_trace(trace, ran).report()
    assert r.total("duplicated") == 1 and r.replay_mismatches


def test_trace_with_applied_events_swapped_is_reordered(ran):
    i, j = applied_to(ran, "b")[1:3]
    trace = list(ran.trace)
    trace[i], trace[j] = trace[j], trace[i]
    r = Checker.from_trace(trace, ran).report()
    assert r.total("order") == 1 and r.total("lost") == 0


def test_trace_with_a_forged_applied_event_is_a_phantom(ran):
    i = applied_to(ran, "b")[0]
    forged = dataclasses.replace(ran.trace[i], seq=999)
    r = Checker.from_trace([*ran.trace, forged], ran).report()
    assert r.total("phantoms") == 1


def test_trace_with_other_contents_is_a_hash_and_replay_mismatch(ran):
    i = applied_to(ran, "b")[0]
    ev = ran.trace[i]
    # What the receiver processed differs from what the sender committed: the messages
    # it stepped and the batch they came in (whose batch_hash the checker compares).
    b = ev.batch
    more = replace_fields(b, messages=(*b.messages, (b.messages[0][0], ("add", 100))))
    doctored = dataclasses.replace(ev, messages=(*ev.messages, Message(None, ("add", 100))),
                                   batch=more)
    r = Checker.from_trace([*ran.trace[:i], doctored, *ran.trace[i + 1:]], ran).report()
    assert r.total("hash_mismatches") == 1
    assert len(r.replay_mismatches) == 1 and r.replay_mismatches[0].startswith("b")


def test_stored_state_changed_behind_the_network_is_a_replay_mismatch():
    sim = small_sim(2)
    m = sim.machine("b")
    sim.restore(replace_fields(
        sim.net, machines=sim.net.machines.set(sim.address("b"), replace_fields(m, state=-5))))
    r = check_sim(sim)
    assert r.replay_mismatches == ("b",) and not r.ok


def test_fault_counts(ran):
    counts = fault_counts(ran.trace)
    assert counts == check_sim(ran).faults
    assert set(counts) <= {"loss", "duplicate", "corrupt", "reorder", "lost-host-down",
                           "lost-partition", "crash", "restart", "partition"}


# -- watch: the checker after every step -------------------------------------------------


def test_watch_raises_at_the_step_that_breaks_a_promise():
    def run() -> InvariantViolation:
        sim = make_sim(4, 2, "dup=0.5,delay=1-5")
        watch(sim)
        sim.spawn("a", counter, 0, host="h0")
        sim.spawn("b", counter, 0, host="h1")
        sim.send(sim.cap("a"), ("fwd", sim.cap("b"), 1))
        sim.run()
        # Tamper with b's state behind the network's back, then let it work again.
        m = sim.machine("b")
        sim.restore(replace_fields(sim.net, machines=sim.net.machines.set(
            sim.address("b"), replace_fields(m, state=m.state + 1000))))
        sim.send(sim.cap("a"), ("fwd", sim.cap("b"), 2))
        with pytest.raises(InvariantViolation) as info:
            sim.run()
        return info.value

    first = run()
    assert first.seed == 4 and first.name == "avm.testing promises"
    assert "replay of b" in first.detail
    again = run()
    assert (again.step, again.detail) == (first.step, first.detail)


def test_watch_needs_a_recorded_trace():
    sim = avm.Sim(0, record=False)
    with pytest.raises(ValueError, match="record=True"):
        watch(sim)


def test_check_sim_with_a_watch_checker_feeds_only_new_events():
    sim = make_sim(3, 2, "loss=0.3")
    c = watch(sim)
    sim.spawn("a", counter, 0, host="h0")
    sim.spawn("b", counter, 0, host="h1")
    sim.send(sim.cap("a"), ("fwd", sim.cap("b"), 1))
    run_until_quiescent(sim)
    r1 = check_sim(sim, c)
    r2 = check_sim(sim, c)
    assert r1.totals == r2.totals == check_sim(sim).totals
    assert r1.events == len(sim.trace)


# -- building and driving ----------------------------------------------------------------


def test_make_sim_and_heal():
    sim = make_sim(7, 3, ALL_FAULTS)
    assert sim.hosts == ("h0", "h1", "h2") and sim.seed == 7
    assert sim.net.config.faults.any
    heal(sim)
    assert not sim.net.config.faults.any
    assert make_sim(0, ("x", "y")).hosts == ("x", "y")


def test_run_until_quiescent_says_why_it_is_not():
    sim = make_sim(0, 2, "loss=1.0")
    sim.spawn("a", counter, 0, host="h0")
    sim.spawn("b", counter, 0, host="h1")
    sim.send(sim.cap("a"), ("fwd", sim.cap("b"), 1))
    with pytest.raises(AssertionError, match="not quiescent after 50 steps"):
        run_until_quiescent(sim, 50)
    heal(sim)
    run_until_quiescent(sim)
    assert sim.state("b") == 3


clock_reader = Behavior("kit.clock")


@clock_reader.signal("env")
def _env(state, env):
    return [], (env["time"], None)


@clock_reader.signal("self")
def _self(state, me):
    return [], me


@clock_reader.on("ask")
def _ask(state, time_cap, me):
    return [(time_cap, (me("t"), None))], state


@clock_reader.on("time", context="t")
def _time(state, ms):
    return [], ms


def test_sim_clock_moves_what_time_answers():
    sim = make_sim(0)
    clock = SimClock(sim)
    sim.spawn("c", clock_reader)
    run_until_quiescent(sim)
    before = clock.ticks
    clock.advance(3_600_000)
    assert clock.ticks == before + 3_600_000
    assert clock.ms == sim.net.config.epoch_ms + clock.ticks * sim.net.config.tick_ms
    addr = sim.address("c")
    # Ask for the time (the machine needs its env and Self: read them from the spawn batch).
    spawn_batch = next(e for e in sim.trace if type(e) is events.Applied and e.dest == addr)
    env = dict(spawn_batch.messages[2].content[1])
    me = spawn_batch.messages[1].content[1]
    sim.send(sim.cap("c"), ("ask", env["time"], me))
    run_until_quiescent(sim)
    assert sim.state("c") >= clock.ms - 10
    with pytest.raises(ValueError):
        clock.advance(-1)


# -- a property: any single doctoring of a clean record stream is found ---------------------


@st.composite
def doctored(draw):
    n = draw(st.integers(2, 12))
    chans = [(("client", f"c{i}"), B) for i in range(draw(st.integers(1, 3)))]
    ops = [("commit", ch, s) for ch in chans for s in range(1, n + 1)]
    outcomes = [("apply", ch, s) for ch in chans for s in range(1, n + 1)]
    kind = draw(st.sampled_from(["none", "lose", "duplicate", "swap", "phantom", "hash"]))
    ch = draw(st.sampled_from(chans))
    mine = [i for i, o in enumerate(outcomes) if o[1] == ch]
    k = draw(st.integers(0, len(mine) - 2))
    i = mine[k]
    if kind == "lose":
        del outcomes[i]
    elif kind == "duplicate":
        outcomes.insert(i + 1, outcomes[i])
    elif kind == "swap":
        j = mine[k + 1]
        outcomes[i], outcomes[j] = outcomes[j], outcomes[i]
    elif kind == "phantom":
        outcomes.insert(i, ("apply", ch, n + 5))
    elif kind == "hash":
        outcomes[i] = ("apply-other", ch, outcomes[i][2])
    return kind, ops + outcomes


EXPECTED = {"lose": "lost", "duplicate": "duplicated", "swap": "order", "phantom": "phantoms",
            "hash": "hash_mismatches"}


@given(doctored())
def test_every_single_doctoring_is_found(case):
    kind, records = case
    c = Checker()
    for op, ch, s in records:
        if op == "commit":
            c.committed(ch, s, ("digest", s))
        else:
            c.applied(ch, s, ("digest", s) if op == "apply" else "other")
    r = c.report()
    if kind == "none":
        assert r.ok
    else:
        assert r.total(EXPECTED[kind]) >= 1 and not r.ok
        assert r.violations == r.total(EXPECTED[kind])
