"""The timer service (avm.core.timers): deadlines without polling, in virtual time.

Each rule of the module's docstring has a test here: virtual time jumps (a one-hour
deadline costs a handful of steps), ``at`` and ``after``, cancelling through an
unguessable capability, fired timers as ordinary batches (grouped per destination,
through the wire and its faults), the ordered index, conservation of linear values
(fire, cancel, refusal), durability across a host crash, determinism and encoding.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import avm
from avm import Linear
from avm.core import codec, timers
from avm.core.caps import commons_cap
from avm.core.network import events
from avm.core.sim import Sim
from avm.testing import census, watch_census

HOUR_MS = 3_600_000

setter = avm.Behavior("setter")


@setter.init
def _init(_state, _args):
    return [], avm.Map(env=None, me=None, cancels=avm.Map(), answers=(), returned=())


@setter.signal("env")
def _env(state, env):
    return [], state.set("env", env)


@setter.signal("self")
def _self(state, me):
    return [], state.set("me", me)


@setter.on("arm")
def _arm(state, how, ms, target, content, tag):
    req = (state["me"](("armed", tag)), (how, ms, target, content))
    return [(state["env"]["timer"], req)], state


@setter.on("timer")
def _armed(state, cancel, *, ctx):
    return [], state.set("cancels", state["cancels"].set(ctx[1], cancel))


@setter.on("cancel")
def _cancel(state, tag, ask=False):
    cap = state["cancels"][tag]
    return [(cap, ("cancel", state["me"]("cancelled")) if ask else "cancel")], state


@setter.on("cancelled")
def _cancelled(state, ok):
    return [], state.set("answers", (*state["answers"], ok))


@setter.returned
def _returned(state, info):
    return [], state.set("returned", (*state["returned"], *info["values"]))


def _world(seed: int = 0, hosts=("h0",), faults=None) -> Sim:
    sim = Sim(seed=seed, hosts=hosts, faults=faults)
    sim.spawn("s", setter, host=hosts[0])
    sim.probe("p", host=hosts[-1])
    sim.run()
    return sim


def _arm(sim: Sim, how: str, ms: int, content, tag="t", target=None) -> None:
    sim.send(sim.cap("s"), ("arm", how, ms, target or sim.cap("p", "probe"), content, tag))


def _armed(sim: Sim, n: int = 1) -> None:
    """Step until the setter holds ``n`` cancel capabilities (its timers are set)."""
    for _ in range(1000):
        if len(sim.state("s")["cancels"]) >= n:
            return
        sim.step()
    raise AssertionError("the timers were never set")


def _fired(sim: Sim, since: int = 0) -> list:
    """Batches the timer services sent to machines other than the setter (not answers)."""
    s = sim.address("s")
    return [e for e in sim.trace[since:] if type(e) is events.Created
            and e.chan[0][:2] == ("~", "timer") and e.dest != s]


def test_one_hour_deadline_costs_a_handful_of_steps():
    sim = _world()
    start = sim.net.now
    _arm(sim, "after", HOUR_MS, ("wake",))
    r = sim.run()
    assert sim.received("p") == (("wake",),)
    assert r.steps <= 8, r  # polling `time` would take millions
    assert sim.net.now >= start + HOUR_MS  # not a tick early
    assert r.quiescent and timers.pending(sim.net) == 0


def test_fires_at_the_due_tick_not_before():
    sim = _world()
    _arm(sim, "after", 500, "late")
    sim.run()
    (at,) = [e.at for e in _fired(sim)]
    set_at = next(e.at for e in sim.trace if type(e) is events.Applied and e.dest == ("~", "timer"))
    assert at == set_at + 500


def test_at_absolute_time_and_past_times_fire_at_once():
    sim = _world()
    cfg = sim.net.config
    now_ms = cfg.epoch_ms + sim.net.now * cfg.tick_ms
    _arm(sim, "at", now_ms + 10_000, "later", "a")
    _arm(sim, "at", 0, "past", "b")
    sim.run()
    assert sim.received("p") == ("past", "later")
    assert sim.net.now * cfg.tick_ms + cfg.epoch_ms >= now_ms + 10_000


def test_tick_ms_rounds_delays_up():
    sim = Sim(config=avm.Config(tick_ms=10))
    sim.spawn("s", setter)
    sim.probe("p")
    sim.run()
    now = sim.net.now
    assert timers.due_tick(sim.net, "after", 15) == now + 2
    assert timers.due_tick(sim.net, "after", 0) == now


def test_quiescent_only_when_no_timer_waits():
    from avm.core.network import quiescent

    sim = _world()
    _arm(sim, "after", 1000, "x")
    _armed(sim)
    assert timers.pending(sim.net) == 1
    assert not quiescent(sim.net)
    sim.run()
    assert quiescent(sim.net)


def test_cancel_stops_the_timer_and_answers_once():
    sim = _world()
    _arm(sim, "after", 1000, "never")
    _armed(sim)
    sim.send(sim.cap("s"), ("cancel", "t", True))
    sim.send(sim.cap("s"), ("cancel", "t", True))
    sim.run()
    assert sim.received("p") == ()
    assert sim.state("s")["answers"] == (True, False)
    assert sim.stats()["timer.cancelled"] == 1 and sim.stats()["timer.cancel-late"] == 1
    assert timers.pending(sim.net) == 0 and sim.net.timer_order == ()


def test_cancel_after_firing_is_harmless():
    sim = _world()
    _arm(sim, "after", 5, "fired")
    sim.run()
    sim.send(sim.cap("s"), ("cancel", "t", True))
    sim.run()
    assert sim.received("p") == ("fired",)
    assert sim.state("s")["answers"] == (False,)


def test_timer_ids_are_unguessable_and_a_guess_cancels_nothing():
    sim = _world()
    for i in range(5):
        _arm(sim, "after", 1000, i, tag=i)
    _armed(sim, 5)
    ids = list(sim.net.timers)
    assert len(ids) == 5 and len(set(ids)) == 5
    assert all(type(i) is bytes and len(i) == timers.ID_BYTES for i in ids)
    cancels = sim.state("s")["cancels"]
    assert {c.commons[1][1] for c in cancels.values()} == set(ids)
    # A guessed id (all zeros, or a real id one bit off) cancels nothing.
    origin = sim.net.hosts["h0"].address
    real = ids[0]
    for guess in (bytes(32), bytes([real[0] ^ 1]) + real[1:], real[:16]):
        sim.send(commons_cap(origin, "timer", ("cancel", guess)), "cancel")
    sim.run()
    assert sorted(sim.received("p")) == [0, 1, 2, 3, 4]
    assert sim.stats()["timer.cancel-late"] == 3


def test_ids_differ_across_seeds_and_repeat_with_the_seed():
    def ids(seed):
        sim = _world(seed)
        _arm(sim, "after", 1000, "x")
        _armed(sim)
        return list(sim.net.timers)
    assert ids(1) == ids(1)
    assert ids(1) != ids(2)


def test_timers_due_together_fire_as_one_batch_per_destination():
    sim = _world()
    sim.probe("q")
    out = []
    for i in range(6):
        target = sim.cap("p", "probe") if i % 2 else sim.cap("q", "probe")
        out.append((sim.cap("s"), ("arm", "after", 100, target, i, i)))
    sim.submit(out)
    seen = len(sim.trace)
    sim.run()
    fired = _fired(sim, seen)
    # One act of the timer service: one batch per destination (rule 3), in order.
    assert sorted(e.size for e in fired) == [3, 3] and len({e.at for e in fired}) == 1
    assert sim.received("p") == (1, 3, 5) or sorted(sim.received("p")) == [1, 3, 5]
    assert sorted(sim.received("q")) == [0, 2, 4]


def test_fire_order_follows_due_times():
    sim = _world()
    delays = [70, 10, 50, 30, 90, 20]
    sim.submit([(sim.cap("s"), ("arm", "after", d, sim.cap("p", "probe"), d, d)) for d in delays])
    sim.run()
    assert sim.received("p") == tuple(sorted(delays))


def test_timer_to_another_host_survives_faults_exactly_once():
    for seed in range(30):
        sim = _world(seed, hosts=("a", "b"), faults="loss=0.2,dup=0.2,delay=1-30")
        sim.submit([(sim.cap("s"), ("arm", "after", 100 * i, sim.cap("p", "probe"), i, i))
                    for i in range(5)])
        r = sim.run()
        assert r.quiescent
        assert sim.received("p") == (0, 1, 2, 3, 4), seed


def test_a_down_host_fires_its_timers_when_it_restarts():
    sim = _world(hosts=("a", "b"))
    _arm(sim, "after", 50, "after-crash")
    _armed(sim)
    (t,) = sim.net.timers.values()
    assert t.host == "a"
    h = sim.net.hosts["a"]
    until = t.due + 100
    from avm.core.values import replace_fields
    sim.restore(replace_fields(sim.net, hosts=sim.net.hosts.set(
        "a", replace_fields(h, up=False, down_until=until))))
    sim.run()
    assert sim.received("p") == ("after-crash",)
    (fired,) = _fired(sim)
    assert fired.at >= until


def test_malformed_requests_are_refused_and_linear_values_come_back():
    sim = _world()
    watch_census(sim)
    bad = [("after", -1), ("after", timers.TIMER_MS_MAX + 1), ("after", 1.0), ("soon", 5),
           ("after", True)]
    for i, (how, ms) in enumerate(bad):
        sim.send(sim.cap("s"), ("arm", how, ms, sim.cap("p", "probe"), Linear(i), i))
    sim.run()
    refused = [e for e in sim.trace if type(e) is events.Commons and e.service == "timer"]
    assert len(refused) == len(bad) and all(e.error for e in refused)
    back = sorted(v[1][1][3].value for v in sim.state("s")["returned"])
    assert back == list(range(len(bad)))
    assert timers.pending(sim.net) == 0 and sim.received("p") == ()


def test_a_bad_target_is_refused():
    sim = _world()
    sim.send(sim.cap("s"), ("arm", "after", 5, "not a capability", "x", 0))
    sim.run()
    assert any(type(e) is events.Commons and "target" in e.error for e in sim.trace
               if type(e) is events.Commons)


def test_cancel_content_must_be_cancel():
    sim = _world()
    _arm(sim, "after", 1000, "x")
    _armed(sim)
    cap = sim.state("s")["cancels"]["t"]
    sim.send(cap, "please")
    sim.run()
    assert sim.received("p") == ("x",)
    assert any(type(e) is events.Commons and "cancel" in e.error for e in sim.trace
               if type(e) is events.Commons)


def test_linear_content_is_conserved_when_fired():
    sim = _world()
    w = watch_census(sim)
    _arm(sim, "after", 1000, ("coin", Linear("c")))
    _armed(sim)
    assert census(sim).places["timers"] == 1
    sim.run()
    assert sim.received("p") == (("coin", Linear("c")),)
    assert w.report().ok and census(sim).places["timers"] == 0


def test_cancel_returns_linear_content_to_the_setter():
    sim = _world()
    w = watch_census(sim)
    _arm(sim, "after", 1000, ("coin", Linear("c")))
    _armed(sim)
    sim.send(sim.cap("s"), ("cancel", "t"))
    sim.run()
    (back,) = sim.state("s")["returned"]
    assert back[1] == ("coin", Linear("c"))
    assert sim.received("p") == () and w.report().ok


def test_cancel_of_a_clients_timer_dead_letters_its_linear_content():
    sim = _world()
    w = watch_census(sim)
    origin = sim.net.hosts["h0"].address
    tcap = commons_cap(origin, "timer")
    reply = sim.cap("p", "probe")
    sim.send(tcap, (reply, ("after", 1000, sim.cap("p", "probe"), Linear("c"))))
    while not sim.received("p"):
        sim.step()
    (answer,) = sim.received("p")
    assert answer[0] == "timer"
    sim.send(answer[1], "cancel")
    sim.run()
    (letter,) = sim.dead_letters()
    assert letter["rule"] == "cancelled" and letter["values"][0][1] == Linear("c")
    assert w.report().ok


def test_fired_batch_that_fails_dead_letters_its_linear_content():
    sim = _world()
    w = watch_census(sim)
    _arm(sim, "after", 10, ("coin", Linear("c")), target=sim.cap("s"))  # setter has no "coin"
    sim.run()
    (letter,) = sim.dead_letters()
    assert letter["values"][0][1] == ("coin", Linear("c"))
    assert w.report().ok


def test_many_seeds_with_faults_conserve_linear_values():
    for seed in range(20):
        sim = _world(seed, hosts=("a", "b"), faults="all")
        w = watch_census(sim)
        sim.submit([(sim.cap("s"), ("arm", "after", 40 * i if i < 3 else 100_000,
                                    sim.cap("p", "probe"), ("coin", Linear(i)), i))
                    for i in range(4)])
        _armed(sim, 4)
        sim.send(sim.cap("s"), ("cancel", 3))
        r = sim.run()
        assert r.quiescent and w.report().ok, seed
        got = sorted(c[1].value for c in sim.received("p"))
        back = [v[1][1].value for v in sim.state("s")["returned"]]
        assert got == [0, 1, 2] and back == [3], seed


def test_runs_are_deterministic_and_the_network_encodes():
    def run(seed):
        sim = _world(seed, hosts=("a", "b"), faults="all")
        sim.submit([(sim.cap("s"), ("arm", "after", 7 * i, sim.cap("p", "probe"), i, i))
                    for i in range(8)])
        sim.run(max_steps=10)
        blob = codec.encode(sim.net)
        assert codec.decode(blob) == sim.net
        sim.run()
        return [sim.format(e) for e in sim.trace], blob
    assert run(3) == run(3)


def test_too_many_timers_are_refused(monkeypatch):
    monkeypatch.setattr(timers, "TIMERS_MAX", 2)
    sim = _world()
    sim.submit([(sim.cap("s"), ("arm", "after", 1000, sim.cap("p", "probe"), i, i)) for i in range(3)])
    sim.run()
    assert sorted(sim.received("p")) == [0, 1]
    assert any(type(e) is events.Commons and "pending" in e.error for e in sim.trace
               if type(e) is events.Commons)


# -- the ordered index ------------------------------------------------------------------


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 50), st.binary(min_size=1, max_size=2)),
                max_size=300))
def test_the_order_index_stays_sorted_like_a_list(ops):
    order: tuple = ()
    model: list = []
    for add, due, tid in ops:
        key = (due, tid)
        if add and key not in model:
            order = timers._insert(order, key)
            model.append(key)
        elif not add and key in model:
            order = timers._remove(order, key)
            model.remove(key)
        flat = [k for c in order for k in c]
        assert flat == sorted(model)
        assert all(0 < len(c) <= timers.CHUNK_MAX for c in order)
    model.sort()
    for now in (0, 10, 25, 50):
        assert timers._due_prefix(order, now, 10_000) == [k for k in model if k[0] <= now]
    assert timers._due_prefix(order, 50, 3) == model[:3]


def test_the_index_is_chunked_for_many_timers():
    order: tuple = ()
    for i in range(1000):
        order = timers._insert(order, ((i * 7919) % 1000, i.to_bytes(4, "big")))
    assert len(order) >= 1000 // timers.CHUNK_MAX
    assert max(len(c) for c in order) <= timers.CHUNK_MAX
    flat = [k for c in order for k in c]
    assert flat == sorted(flat)


def test_a_removed_key_that_is_missing_is_an_internal_error():
    order = timers._insert((), (1, b"a"))
    with pytest.raises(AssertionError):
        timers._remove(order, (1, b"b"))


def test_a_store_header_from_before_the_timers_loads_with_no_timers():
    """The host store keeps the network record's header; an older one (fewer trailing
    fields) is upgraded byte for byte to what the current record encodes."""
    from avm.core.network import new_network
    from avm.host import store
    net = new_network(5)
    blob = codec.encode(net)
    prefix = store._NET_PREFIX
    n = len(avm.core.values.record_fields(type(net))) + 1
    assert blob[len(prefix):len(prefix) + 2] == bytes((0x98, n))
    # Drop the two timer fields, as a header written before them looked.
    tail = codec.encode(net.timers) + codec.encode(net.timer_order)
    old = prefix + bytes((0x98, n - 2)) + blob[len(prefix) + 2:len(blob) - len(tail)]
    assert store._upgrade_header(old) == blob
    assert store._upgrade_header(blob) == blob
    assert codec.decode(store._upgrade_header(old)) == net
