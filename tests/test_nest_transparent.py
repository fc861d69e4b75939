"""Transparent nesting (DESIGN section 7): capabilities minted inside a nest work from
outside, routed through the nesting machine; inner time follows the outer ``time``
service; linear values that cross the boundary are conserved (the outer census)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import avm
from avm import Linear, Map
from avm.core.nest import INNER, ROUTE, inner_network, inner_state, nest
from avm.core.network import Config
from avm.testing import watch_census

keeper = avm.Behavior("tests.nest.keeper")


@keeper.init
def _init(_s, _a):
    return [], Map(me=None, time=None, null=None, kept=(), hits=0, burnt=0)


@keeper.signal("self")
def _self(s, me):
    return [], s.set("me", me)


@keeper.signal("env")
def _env(s, env):
    return [], s.update(time=env["time"], null=env["null"], timer=env["timer"])


@keeper.on("mint")
def _mint(s, reply):
    return [(reply, ("key", s["me"]("door")))], s


@keeper.on("hit")
def _hit(s):
    return [], s.set("hits", s["hits"] + 1)


@keeper.on("keep")
def _keep(s, x):
    return [], s.set("kept", (*s["kept"], x))


@keeper.on("clock")
def _clock(s, reply):
    return [(s["time"], (s["me"](("tick", reply)), None))], s


@keeper.on("time", "tick")
def _tick(s, ms, *, ctx):
    return [(ctx[1], ("time", ms))], s


@keeper.on("mint_linear")
def _mint_linear(s, reply):
    return [(reply, ("coin", s["me"](Linear("coin"))))], s


@keeper.on("burn")
def _burn(s, token):
    return [(s["null"], token)], s.set("burnt", s["burnt"] + 1)


@keeper.on("spend")
def _spend(s, *, ctx):
    return [(s["null"], ctx)], s.set("burnt", s["burnt"] + 1)


@keeper.on("alarm")
def _alarm(s, ms, reply):
    # Wake in ms of network time, then tell reply what the inner time said on waking.
    return [(s["timer"], (s["me"]("set"), ("after", ms, s["me"](("rang", reply)), "ring")))], s


@keeper.on("ring", "rang")
def _ring(s, *, ctx):
    return [(s["time"], (s["me"](("tick", ctx[1])), None))], s.set("rung", s.get("rung", 0) + 1)


@keeper.on("timer", "set")
def _timer_set(s, cancel):
    return [], s


@keeper.on("wrap_linear")
def _wrap_linear(s, reply):
    return [(reply, Linear(("door", s["me"]("door"))))], s


def build(sim: avm.Sim) -> None:
    sim.spawn("k", keeper, None)


def world(seed: int = 0, **kw) -> tuple[avm.Sim, avm.Capability]:
    outer = avm.Sim(seed=seed, **kw)
    outer.spawn("box", nest(build, name="tests.nest.box"), seed)
    assert outer.run().quiescent
    return outer, outer.cap("box", (ROUTE, "k", "main"))


def inner_address(outer: avm.Sim, name: str) -> bytes:
    net = inner_network(outer.state("box"))
    return net.names[name]


def test_a_capability_minted_inside_is_usable_from_outside():
    outer, k = world()
    p = outer.probe("p")
    outer.send(k, ("mint", p))
    outer.run()
    [(_, key)] = outer.received("p")
    assert key.address == outer.address("box")  # the outer face of the inner capability
    outer.send(key, "hit")
    outer.send(key, "hit")
    outer.run()
    assert inner_state(outer.state("box"), "k")["hits"] == 2
    assert outer.failures() == []


def test_a_wrapper_going_back_in_is_the_inner_capability_again():
    outer, k = world()
    p = outer.probe("p")
    outer.send(k, ("mint", p))
    outer.run()
    key = outer.received("p")[0][1]
    outer.send(k, ("keep", key))
    outer.send(k, ("keep", p))  # an outer capability stays as it is
    outer.run()
    inner_key, outer_p = inner_state(outer.state("box"), "k")["kept"]
    assert inner_key.address == inner_address(outer, "k")
    assert outer_p == p
    assert key == outer.cap("box", (INNER, inner_key))


def test_outer_key_rotation_retires_the_outer_faces():
    outer, k = world()
    p = outer.probe("p")
    outer.send(k, ("mint", p))
    outer.run()
    key = outer.received("p")[0][1]
    outer.rotate_key("box")
    outer.run()
    outer.send(key, "hit")
    outer.send(outer.cap("box", (ROUTE, "k", "main")), ("mint", p))  # new Self, new faces
    outer.run()
    assert [f.rule for f in outer.failures("box")] == ["unseal"]
    new_key = outer.received("p")[1][1]
    outer.send(new_key, "hit")
    outer.run()
    assert inner_state(outer.state("box"), "k")["hits"] == 1


def test_inner_time_follows_outer_time():
    epoch = 2_000_000_000_000  # far from the inner network's default epoch
    outer, k = world(config=Config(epoch_ms=epoch))
    p = outer.probe("p")
    answers = []
    for _ in range(3):
        for _ in range(5):  # let outer time pass
            outer.send(p, "tick")
        outer.run()
        before = epoch + outer.net.now * outer.net.config.tick_ms
        outer.send(k, ("keep", "sync"))  # routing it in asks the outer time
        outer.run()
        outer.send(k, ("clock", p))
        outer.run()
        after = epoch + outer.net.now * outer.net.config.tick_ms
        ms = outer.received("p")[-1][1]
        assert before <= ms <= after + 50, (before, ms, after)
        answers.append(ms)
    assert answers == sorted(answers) and len(set(answers)) == 3


def test_without_follow_time_the_inner_clock_is_its_own():
    outer = avm.Sim(seed=0, config=Config(epoch_ms=2_000_000_000_000))
    outer.spawn("box", nest(build, name="tests.nest.box-own", follow_time=False), 0)
    outer.run()
    p = outer.probe("p")
    outer.send(outer.cap("box", (ROUTE, "k", "main")), ("clock", p))
    outer.run()
    assert outer.received("p")[-1][1] < 2_000_000_000_000


def test_a_linear_capability_minted_inside_is_used_once_from_outside():
    outer, k = world()
    watch = watch_census(outer)
    p = outer.probe("p")
    outer.send(k, ("mint_linear", p))
    outer.run()
    [(_, coin)] = outer.received("p")
    assert coin.kind == avm.LINEAR and coin.address == outer.address("box")
    outer.send(coin, "spend")
    outer.run()
    assert inner_state(outer.state("box"), "k")["burnt"] == 1
    assert outer.failures() == []
    watch.report().assert_ok()


def test_a_linear_value_destroyed_inside_is_destroyed_outside():
    outer, k = world()
    watch = watch_census(outer)
    outer.send(k, ("burn", Linear("token")))
    outer.run()
    assert outer.failures() == []
    assert inner_state(outer.state("box"), "k")["burnt"] == 1
    report = watch.report().assert_ok()
    assert report.nulled == 1 and report.census.linear == 0


def test_a_linear_value_kept_inside_stays_counted():
    outer, k = world()
    watch = watch_census(outer)
    token = Linear("token")
    outer.send(k, ("keep", token))
    outer.run()
    assert inner_state(outer.state("box"), "k")["kept"] == (token,)
    report = watch.report().assert_ok()
    assert report.nulled == 0 and report.census.linear == 1


@given(seed=st.integers(0, 2**16), ops=st.lists(st.sampled_from(["mint", "hit", "keep", "clock"]),
                                               min_size=1, max_size=6))
@settings(max_examples=15, deadline=None)
def test_nested_and_top_level_agree_on_capability_traffic(seed, ops):
    # The same workload against top-level machines and against the nest: the same hits,
    # the same kept capabilities (as inner ones), the same answers (but the time).
    def drive(sim: avm.Sim, k: avm.Capability) -> tuple:
        p = sim.probe("p")
        key = None
        for op in ops:
            if op == "mint":
                sim.send(k, ("mint", p))
            elif op == "hit" and key is not None:
                sim.send(key, "hit")
            elif op == "keep":
                sim.send(k, ("keep", "x"))
            elif op == "clock":
                sim.send(k, ("clock", p))
            sim.run()
            keys = [m[1] for m in sim.received("p") if m[0] == "key"]
            key = keys[-1] if keys else None
        return tuple(m[0] for m in sim.received("p")), sim.failures()

    top = avm.Sim(seed=seed)
    build(top)
    top.run()
    outer, k = world(seed)
    got_top = drive(top, top.cap("k", "main"))
    got_nested = drive(outer, k)
    assert got_top == got_nested
    assert top.state("k")["hits"] == inner_state(outer.state("box"), "k")["hits"]


def test_a_capability_inside_a_linear_value_cannot_leave():
    outer, k = world()
    watch = watch_census(outer)
    before = inner_network(outer.state("box"))
    outer.send(k, ("wrap_linear", outer.probe("p")))
    outer.run()
    [f] = outer.failures("box")
    assert f.error_type == "Refused"
    assert inner_network(outer.state("box")) is before  # the inner network is as before
    assert outer.received("p") == ()
    watch.report().assert_ok()


def test_a_message_that_fails_inside_fails_there_and_the_nest_goes_on():
    # As at top level: the inner batch fails, the inner network counts it, and the next
    # message goes through (a deferred message could otherwise block the queue).
    outer, k = world()
    p = outer.probe("p")
    outer.send(k, ("no-such-message",))
    outer.run()
    assert outer.failures("box") == []
    assert inner_network(outer.state("box")).stats.get("batch.failed", 0) == 1
    outer.send(k, ("mint", p))
    outer.run()
    assert [m[0] for m in outer.received("p")] == ["key"]


HOUR_MS = 3_600_000


def test_an_inner_timer_fires_when_outer_time_reaches_it():
    outer, k = world()
    p = outer.probe("p")
    outer.send(k, ("clock", p))
    outer.run()
    start = outer.received("p")[-1][1]
    outer.send(k, ("alarm", HOUR_MS, p))
    report = outer.run()
    assert report.quiescent and report.steps < 100  # no polling: virtual time jumps
    [(_, rang)] = outer.received("p")[1:]
    outer_ms = outer.net.config.epoch_ms + outer.net.now * outer.net.config.tick_ms
    assert start + HOUR_MS <= rang <= outer_ms + 50  # not before the hour, outer or inner
    assert inner_state(outer.state("box"), "k")["rung"] == 1
    assert outer_ms >= start + HOUR_MS  # the outer clock went through the hour too


def test_an_inner_timer_does_not_run_ahead_of_outer_time():
    # The outer network has other work: the nest is not woken before the hour, however
    # many outer steps run meanwhile.
    outer, k = world()
    p = outer.probe("p")
    outer.send(k, ("alarm", HOUR_MS, p))
    for _ in range(50):
        outer.send(p, "busy")
        outer.step()
    assert inner_state(outer.state("box"), "k").get("rung", 0) == 0
    outer.run()
    assert inner_state(outer.state("box"), "k")["rung"] == 1
