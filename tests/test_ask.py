"""Request and response (avm.core.ask): ask with a correlation id, a time-out through the
timer, failure as a message, each ask ending exactly once; and ``Sim.ask``."""

from __future__ import annotations

import pytest

import avm
from avm.core import timers
from avm.core.network import events

server = avm.Behavior("server")


@server.init
def _s_init(_state, _args):
    return [], avm.Map(env=None, me=None, n=7)


@server.signal("env")
def _s_env(state, env):
    return [], state.set("env", env)


@server.signal("self")
def _s_self(state, me):
    return [], state.set("me", me)


@server.on("balance")
def _balance(state, reply):
    return [(reply, ("balance", state["n"]))], state


@server.on("slow")
def _slow(state, _reply):
    return [], state


@server.on("boom")
def _boom(state, _reply):
    raise ValueError("no")


@server.on("later")  # answers after ms, through its own timer
def _later(state, reply, ms):
    req = (state["me"]("armed"), ("after", ms, reply, ("late", ms)))
    return [(state["env"]["timer"], req)], state


@server.on("timer")
def _armed(state, _cancel):
    return [], state


client_b = avm.Behavior("client")


@client_b.init
def _c_init(_state, _args):
    return [], avm.Map(env=None, me=None, log=())


@client_b.signal("env")
def _c_env(state, env):
    return [], state.set("env", env)


@client_b.signal("self")
def _c_self(state, me):
    return [], state.set("me", me)


@client_b.on("query")
def _query(state, target, tag, request, timeout=None):
    return avm.ask(state, state["me"], state["env"], target, request, tag, timeout_ms=timeout)


def _answered(state, tag, content):
    return [], state.set("log", (*state["log"], (tag, "answer", content)))


def _failed(state, tag, why, detail):
    return [], state.set("log", (*state["log"], (tag, why, detail)))


client = avm.asking(client_b, _answered, _failed)


def _world(seed=0, hosts=("h0",), faults=None):
    sim = avm.Sim(seed=seed, hosts=hosts, faults=faults)
    sim.spawn("srv", server, host=hosts[-1])
    sim.spawn("c", client, host=hosts[0])
    sim.run()
    return sim


def _query(sim, tag, request, timeout=None):
    sim.send(sim.cap("c"), ("query", sim.cap("srv"), tag, request, timeout))


def test_an_answer_comes_once_and_cancels_the_timer():
    sim = _world()
    _query(sim, "q", ("balance", avm.REPLY), 5000)
    r = sim.run()
    assert sim.state("c")["log"] == (("q", "answer", ("balance", 7)),)
    assert avm.pending_asks(sim.state("c")) == avm.Map()
    assert sim.stats()["timer.cancelled"] == 1 and timers.pending(sim.net) == 0
    assert r.quiescent and r.steps < 20


def test_without_a_timeout_no_timer_is_set():
    sim = _world()
    _query(sim, 1, ("balance", avm.REPLY))
    sim.run()
    assert sim.state("c")["log"] == ((1, "answer", ("balance", 7)),)
    assert "timer.set" not in sim.stats()


def test_a_silent_target_times_out_in_virtual_time():
    sim = _world()
    _query(sim, "q", ("slow", avm.REPLY), 60_000)
    r = sim.run()
    assert sim.state("c")["log"] == (("q", "timeout", 60_000),)
    assert r.steps < 20 and r.quiescent


def test_a_failed_request_is_a_failure_message_and_cancels_the_timer():
    sim = _world()
    _query(sim, "q", ("boom", avm.REPLY), 60_000)
    sim.run()
    ((tag, why, detail),) = sim.state("c")["log"]
    assert (tag, why) == ("q", "failed") and "exception" in detail
    assert "no" not in detail.split(":")[0]  # the receiver's error text stays at home (D6)
    assert sim.stats()["timer.cancelled"] == 1


def test_an_undeliverable_request_fails():
    sim = _world()
    target = sim.cap("srv")
    sim.export_machine("srv")
    sim.send(sim.cap("c"), ("query", target, "q", ("balance", avm.REPLY), None))
    sim.run()
    ((_tag, why, detail),) = sim.state("c")["log"]
    assert why == "failed" and "unknown address" in detail


def test_a_late_answer_after_the_timeout_is_ignored():
    sim = _world()
    _query(sim, "q", ("later", avm.REPLY, 1000), 100)
    sim.run()
    assert sim.state("c")["log"] == (("q", "timeout", 100),)


def test_the_timeout_after_an_answer_is_ignored_even_if_the_timer_fires():
    # The answer comes before the timer's own answer (the cancel capability) does: the
    # asker cancels it when it arrives; either way only the answer is logged.
    sim = _world()
    _query(sim, "q", ("balance", avm.REPLY), 0)
    sim.run()
    log = sim.state("c")["log"]
    assert len(log) == 1 and log[0][1] in ("answer", "timeout")


def test_concurrent_asks_are_told_apart_by_their_tags():
    sim = _world()
    sim.submit([(sim.cap("c"), ("query", sim.cap("srv"), i, ("balance", avm.REPLY)
                                if i % 2 else ("slow", avm.REPLY), 500)) for i in range(6)])
    sim.run()
    log = dict((t, (w, d)) for t, w, d in sim.state("c")["log"])
    assert len(sim.state("c")["log"]) == 6
    assert all(log[i] == (("answer", ("balance", 7)) if i % 2 else ("timeout", 500))
               for i in range(6))


def test_a_pending_tag_cannot_be_reused():
    sim = _world()
    _query(sim, "q", ("slow", avm.REPLY), 1000)
    _query(sim, "q", ("slow", avm.REPLY), 1000)
    sim.run()
    (failure,) = sim.failures("c")
    assert "already pending" in str(failure)


def test_ask_needs_a_map_state_and_a_reply_placeholder():
    me_env = avm.Map()
    with pytest.raises(avm.StepContractError):
        avm.ask((), None, me_env, None, ("x", avm.REPLY), 1)
    with pytest.raises(avm.UsageError):
        avm.core.ask.fill_reply(("balance",), None)


def test_asks_end_exactly_once_across_hosts_with_faults():
    for seed in range(25):
        sim = _world(seed, hosts=("a", "b"), faults="loss=0.2,dup=0.2,delay=1-40")
        sim.submit([(sim.cap("c"), ("query", sim.cap("srv"), i,
                                    (("balance", "slow", "boom")[i % 3], avm.REPLY), 2000))
                    for i in range(6)])
        r = sim.run()
        assert r.quiescent, seed
        log = sim.state("c")["log"]
        assert sorted(t for t, _, _ in log) == list(range(6)), seed
        for t, why, _ in log:
            assert why == ("answer", "timeout", "failed")[t % 3], (seed, t, why)
        assert avm.pending_asks(sim.state("c")) == avm.Map()


# -- Sim.ask ----------------------------------------------------------------------------


def test_sim_ask_returns_the_answer():
    sim = _world()
    assert sim.ask(sim.cap("srv"), ("balance", avm.REPLY)) == ("balance", 7)
    assert sim.ask(sim.cap("srv"), lambda r: ("balance", r)) == ("balance", 7)


def test_sim_ask_raises_ask_failed_with_the_reason():
    sim = _world()
    with pytest.raises(avm.AskFailed) as e:
        sim.ask(sim.cap("srv"), ("boom", avm.REPLY))
    assert "exception" in e.value.reason


def test_sim_ask_raises_ask_timeout_in_network_time():
    sim = _world()
    start = sim.net.now
    with pytest.raises(avm.AskTimeout) as e:
        sim.ask(sim.cap("srv"), ("later", avm.REPLY, 10_000), timeout_ms=500)
    assert e.value.timeout_ms == 500 and sim.net.now - start > 500


def test_sim_ask_raises_ask_error_when_nothing_answers():
    sim = _world()
    with pytest.raises(avm.AskError) as e:
        sim.ask(sim.cap("srv"), ("slow", avm.REPLY))
    assert not isinstance(e.value, (avm.AskFailed, avm.AskTimeout))
    assert "idle" in str(e.value)


def test_sim_ask_refuses_bad_calls_and_changes_nothing():
    sim = _world()
    before = sim.net
    with pytest.raises(avm.UsageError):
        sim.ask("srv", ("balance", avm.REPLY))
    with pytest.raises(avm.UsageError):
        sim.ask(sim.cap("srv"), ("balance",))
    assert sim.net is before or "avm.asker" in sim.net.names


def test_sim_ask_waits_through_a_long_delay_cheaply():
    sim = _world()
    steps = sim.steps
    assert sim.ask(sim.cap("srv"), ("later", avm.REPLY, 3_600_000)) == ("late", 3_600_000)
    assert sim.steps - steps < 30


def test_sim_ask_works_across_faulty_hosts():
    for seed in range(10):
        sim = _world(seed, hosts=("a", "b"), faults="loss=0.3,dup=0.2,delay=1-30")
        assert sim.ask(sim.cap("srv"), ("balance", avm.REPLY)) == ("balance", 7), seed
        assert not any(type(e) is events.Applied and not e.ok for e in sim.trace)
