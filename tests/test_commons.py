"""Commons services in the simulator (DESIGN section 6).

A machine learns the commons capabilities from its ``env`` signal and asks with
``(reply_capability, argument)``; answers come back as ``(service, result, ...)``. These
tests check that answers are pure functions of the seed and the simulated clock, that
``null`` is the one place a linear value may end, that ``reflect`` and ``hash`` hand the
value back, that ``feedback`` reports delivery and failure to the capability the sender
chose, and that unknown services and malformed requests are refused and counted.
"""

from __future__ import annotations

import os
import random
import time

import pytest

import avm
from avm import Behavior, Config, Linear, Map, Sim
from avm.core.caps import commons_cap
from avm.core.commons import RANDOM_BYTES_MAX, SERVICES
from avm.core.network import events

asker = Behavior("asker")


@asker.init
def _init(state, tok):
    return [], Map(tok=tok, got=(), env=None, me=None)


@asker.signal("self")
def _self(state, me):
    return [], state.set("me", me)


@asker.signal("env")
def _env(state, env):
    return [], state.set("env", env)


@asker.on("ask")
def _ask(state, service, arg):
    """Ask a commons service; the answer comes back to this machine."""
    reply = state["me"](("answer", service))
    return [(state["env"][service], (reply, arg))], state


@asker.on("ask-tok")
def _ask_tok(state, service):
    """Ask about the linear token: it leaves the state with the request."""
    reply = state["me"](("answer", service))
    return [(state["env"][service], (reply, state["tok"]))], state.delete("tok")


@asker.on("raw")
def _raw(state, service, content):
    return [(state["env"][service], content)], state


@asker.on("send")
def _send(state, cap, content):
    return [(cap, content)], state


@asker.on("destroy")
def _destroy(state):
    return [(state["env"]["null"], state["tok"])], state.delete("tok")


@asker.on("drop")
def _drop(state):
    return [], state.delete("tok")


@asker.on("feedback")
def _feedback(state, target, content, tag):
    status = state["me"]("status")
    return [(state["env"]["feedback"], (target, content, status, tag))], state


@asker.on("boom")
def _boom(state):
    raise RuntimeError("boom")


@asker.otherwise
def _answer(state, content, *, ctx):
    """Answers and status reports: record them; a token handed back goes into the state."""
    if ctx[0] == "answer" and content[0] in ("reflect", "hash") and isinstance(content[2], Linear):
        return [], state.set("tok", content[2]).set("got", (*state["got"], content[:2]))
    return [], state.set("got", (*state["got"], content))


def setup(seed: int = 1, config: Config | None = None, **kw) -> tuple[Sim, avm.Capability]:
    sim = Sim(seed=seed, config=config, **kw)
    sim.spawn("a", asker, Linear("tok"))
    sim.run()
    return sim, sim.cap("a", "in")


def got(sim: Sim, name: str = "a") -> tuple:
    return sim.state(name)["got"]


def commons_events(sim: Sim) -> list[events.Commons]:
    return [e for e in sim.trace if type(e) is events.Commons]


def no_ambient_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every ambient source of time and randomness raise while a test runs a sim."""
    def forbidden(*_a, **_k):
        raise AssertionError("the pure core read an ambient clock or random source")

    for mod, names in ((os, ["urandom"]), (random, ["random", "getrandbits", "randbytes"]),
                       (time, ["time", "time_ns"])):
        for n in names:
            monkeypatch.setattr(mod, n, forbidden)


def test_env_holds_every_commons_service():
    sim, _ = setup()
    env = sim.state("a")["env"]
    assert set(env) == set(SERVICES)
    for s in SERVICES:
        assert env[s].is_commons and env[s].commons == (s, ())
        assert env[s].address == sim.net.hosts["h0"].address  # offered by the host


# -- random --------------------------------------------------------------------------------


def ask_random(seed: int, sizes=(16, 16, 5)) -> tuple:
    sim, a = setup(seed)
    for n in sizes:
        sim.send(a, ("ask", "random", n))
    sim.run()
    return got(sim)


def test_random_is_deterministic_from_the_seed(monkeypatch):
    with monkeypatch.context() as m:
        no_ambient_sources(m)
        first = ask_random(1)
    assert [(name, len(data)) for name, data in first] == [("random", 16), ("random", 16),
                                                           ("random", 5)]
    assert first == ask_random(1)
    assert first[0][1] != first[1][1]  # the source advances
    assert first != ask_random(2)  # and depends on the seed


@pytest.mark.parametrize("arg", [-1, RANDOM_BYTES_MAX + 1, "16", 1.5, None])
def test_random_refuses_bad_sizes_and_counts_it(arg):
    sim, a = setup()
    sim.send(a, ("ask", "random", arg))
    sim.run()
    assert got(sim) == ()
    [ev] = commons_events(sim)
    assert ev.service == "random" and "byte count" in ev.error
    assert ev.sender == sim.address("a")
    assert sim.stats()["commons.refused"] == 1


def test_random_zero_and_max_sizes():
    sim, a = setup()
    sim.send(a, ("ask", "random", 0))
    sim.send(a, ("ask", "random", RANDOM_BYTES_MAX))
    sim.run()
    assert [len(d) for _, d in got(sim)] == [0, RANDOM_BYTES_MAX]


# -- time ----------------------------------------------------------------------------------


def test_time_comes_from_the_simulated_clock(monkeypatch):
    cfg = Config(epoch_ms=5_000, tick_ms=10)
    with monkeypatch.context() as m:
        no_ambient_sources(m)
        sim, a = setup(config=cfg)
        sim.send(a, ("ask", "time", None))
        sim.run()
        sim.send(a, ("raw", "time", sim.cap("a", ("answer", "time"))))  # bare reply form
        sim.run()
    answers = [ms for _, ms in got(sim)]
    served_at = [e.at for e in sim.trace if type(e) is events.Applied and e.dest == ("~", "time")]
    assert answers == [cfg.epoch_ms + at * cfg.tick_ms for at in served_at]
    assert answers[0] < answers[1]
    again, a2 = setup(config=cfg)
    again.send(a2, ("ask", "time", None))
    again.run()
    assert got(again)[0] == got(sim)[0]


# -- null ----------------------------------------------------------------------------------


def test_null_consumes_a_linear_value():
    sim, a = setup()
    sim.send(a, ("destroy",))
    sim.run()
    ok = [e for e in sim.trace if type(e) is events.Applied and e.dest == sim.address("a")][-1]
    assert ok.ok and "tok" not in sim.state("a")
    assert got(sim) == ()  # null answers nothing
    assert not commons_events(sim)


def test_dropping_a_linear_value_without_null_fails():
    sim, a = setup()
    sim.send(a, ("drop",))
    sim.run()
    bad = [e for e in sim.trace if type(e) is events.Applied and e.dest == sim.address("a")][-1]
    assert not bad.ok and bad.failure.rule == "substructural"
    assert "null capability" in bad.failure.detail
    assert sim.state("a")["tok"] == Linear("tok")


def test_null_accepts_anything_silently():
    sim, a = setup()
    sim.send(a, ("raw", "null", ("whatever", 1)))
    sim.send(a, ("raw", "null", 7))
    sim.run()
    assert got(sim) == () and not commons_events(sim)


# -- reflect and hash ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        (None, {"type": "none"}),
        (3, {"type": "int"}),
        ("abc", {"type": "text", "size": 3}),
        (b"ab", {"type": "bytes", "size": 2}),
        ((1, 2), {"type": "tuple", "size": 2}),
        (Map(a=1), {"type": "map", "size": 1}),
    ],
)
def test_reflect_describes_a_value(value, expect):
    sim, a = setup()
    sim.send(a, ("ask", "reflect", value))
    sim.run()
    [(name, desc, back)] = got(sim)
    assert name == "reflect" and back == value
    assert desc == Map(kind="unrestricted", **expect)


def test_reflect_and_hash_hand_a_linear_value_back():
    sim, a = setup()
    sim.send(a, ("ask-tok", "reflect"))
    sim.run()
    assert got(sim) == (("reflect", Map(kind="linear", type="linear")),)
    assert sim.state("a")["tok"] == Linear("tok")  # kept: asking did not destroy it
    sim.send(a, ("ask-tok", "hash"))
    sim.run()
    assert got(sim)[1] == ("hash", avm.value_hash(Linear("tok")))
    assert sim.state("a")["tok"] == Linear("tok")


def test_hash_is_the_hash_of_the_canonical_encoding():
    sim, a = setup()
    value = (1, "two", Map(three=3))
    sim.send(a, ("ask", "hash", value))
    sim.run()
    [(name, h, back)] = got(sim)
    assert name == "hash" and back == value
    assert h == avm.value_hash(value) == avm.value_hash((1, "two", Map(three=3)))
    assert isinstance(h, bytes) and len(h) >= 32


@pytest.mark.parametrize("service", ["reflect", "hash", "time"])
def test_malformed_requests_are_refused_and_counted(service):
    sim, a = setup()
    sim.send(a, ("raw", service, "not a pair"))
    sim.run()
    [ev] = commons_events(sim)
    assert "reply_capability" in ev.error
    assert sim.stats()["commons.refused"] == 1
    assert got(sim) == ()


# -- feedback ------------------------------------------------------------------------------


def feedback_sim() -> tuple[Sim, avm.Capability]:
    sim, a = setup()
    sim.spawn("b", asker, None)
    sim.run()
    return sim, a


def test_feedback_delivers_and_reports_to_the_chosen_capability():
    sim, a = feedback_sim()
    b_ask = sim.cap("b", "in")
    sim.send(a, ("feedback", b_ask, ("ask", "random", 2), "t1"))
    sim.run()
    assert got(sim, "a") == (("delivered", "t1"),)
    assert [n for n, _ in got(sim, "b")] == ["random"]  # the inner message arrived
    # The status came to a's own "status" capability, chosen by a.
    status_ev = [e for e in sim.trace if type(e) is events.Applied
                 and e.dest == sim.address("a") and e.messages
                 and e.messages[0].context == "status"]
    assert len(status_ev) == 1


def test_feedback_reports_failure_and_why():
    sim, a = feedback_sim()
    sim.send(a, ("feedback", sim.cap("b", "in"), ("boom",), "t2"))
    sim.stop("b")
    sim.run()
    assert got(sim, "a") == (("failed", "t2", "machine stopped"),)
    sim.resume("b")
    sim.send(a, ("feedback", sim.cap("b", "in"), ("boom",), "t3"))
    sim.run()
    (status, tag, why) = got(sim, "a")[-1]
    assert (status, tag) == ("failed", "t3")
    # The sender learns the rule and the index, never the receiver's detail (rule 10).
    assert why.startswith("exception at message 0") and "boom" not in why


def test_feedback_malformed_request_is_refused_and_counted():
    sim, a = setup()
    sim.send(a, ("raw", "feedback", ("not", "enough")))
    sim.run()
    [ev] = commons_events(sim)
    assert ev.service == "feedback" and "target, content, status_cap, tag" in ev.error
    assert sim.stats()["commons.refused"] == 1


def test_feedback_reports_delivery_to_a_commons_target():
    sim, a = setup()
    env = sim.state("a")["env"]
    sim.send(a, ("feedback", env["null"], "bye", "t4"))
    sim.run()
    assert got(sim) == (("delivered", "t4"),)
    sim.send(a, ("feedback", env["random"], "not a request", "t5"))
    sim.run()
    (status, tag, why) = got(sim)[-1]
    assert (status, tag) == ("failed", "t5")
    assert why.startswith("refused by ~random") and "reply_capability" in why
    assert sim.stats()["commons.refused"] == 1


def test_feedback_status_from_a_commons_target_comes_from_the_askers_host():
    sim = Sim(seed=4, hosts=("h0", "h1"))
    sim.spawn("far", asker, None, host="h1")
    sim.run()
    mark = len(sim.trace)
    sim.send(sim.cap("far", "in"), ("feedback", sim.state("far")["env"]["null"], 1, "t6"))
    sim.run()
    assert got(sim, "far") == (("delivered", "t6"),)
    assert not [e for e in sim.trace[mark:] if type(e) is events.Wire]


# -- unknown services, locality ------------------------------------------------------------


def test_unknown_service_is_refused_and_counted():
    sim, a = setup()
    bogus = commons_cap(sim.net.hosts["h0"].address, "teleport")
    sim.send(a, ("send", bogus, (sim.cap("a", ("answer", "teleport")), 1)))
    sim.run()
    [ev] = commons_events(sim)
    assert ev.service == "teleport"
    assert "unknown commons service 'teleport'" in ev.error
    assert all(s in ev.error for s in SERVICES)
    assert sim.stats()["commons.refused"] == 1
    assert "refused" in sim.format(ev)


def test_commons_are_answered_on_the_askers_host():
    """A commons request never crosses the network: the asker's host answers it."""
    sim = Sim(seed=3, hosts=("h0", "h1"))
    sim.spawn("far", asker, None, host="h1")
    sim.run()
    mark = len(sim.trace)
    far = sim.cap("far", "in")
    for s, arg in (("random", 4), ("time", None), ("hash", 1), ("reflect", 2)):
        sim.send(far, ("ask", s, arg))
    sim.run()
    assert [x[0] for x in got(sim, "far")] == ["random", "time", "hash", "reflect"]
    assert not [e for e in sim.trace[mark:] if type(e) is events.Wire]
    assert sim.state("far")["env"]["random"].address == sim.net.hosts["h1"].address
