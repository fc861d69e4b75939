"""The spawner service (avm.core.spawner): machines create machines through a capability
that can be attenuated to some behaviors and revoked (with everything made from it)."""

from __future__ import annotations

import pytest

import avm
from avm.core import codec, spawner
from avm.core.caps import commons_cap
from avm.core.network import events

counter = avm.Behavior("counter")


@counter.init
def _c_init(_state, start):
    return [], start


@counter.on("add")
def _add(state, n):
    return [], state + n


@counter.on("get")
def _get(state, reply):
    return [(reply, ("count", state))], state


other = avm.Behavior("other")


@other.on("noop")
def _noop(state):
    return [], state


maker = avm.Behavior("maker")


@maker.init
def _m_init(_state, _args):
    return [], avm.Map(env=None, me=None, made=(), narrow=None, returned=())


@maker.signal("env")
def _m_env(state, env):
    return [], state.set("env", env)


@maker.signal("self")
def _m_self(state, me):
    return [], state.set("me", me)


@maker.on("make")
def _make(state, behavior, args, narrow=False):
    sp = state["narrow"][0] if narrow else state["env"]["spawner"]
    return [(sp, (state["me"]("made"), ("spawn", behavior, args)))], state


@maker.on("spawned")
def _spawned(state, cap):
    return [], state.set("made", (*state["made"], cap))


@maker.on("narrow")
def _narrow(state, names, from_narrow=False):
    sp = state["narrow"][0] if from_narrow else state["env"]["spawner"]
    return [(sp, (state["me"]("narrowed"), ("attenuate", names)))], state


@maker.on("spawner")
def _narrowed(state, sp, revoke):
    return [], state.set("narrow", (sp, revoke))


@maker.on("revoke-narrow")
def _revoke_narrow(state):
    return [(state["narrow"][1], "revoke")], state


@maker.on("poke")
def _poke(state, i, content):
    return [(state["made"][i], content)], state


@maker.returned
def _m_returned(state, info):
    return [], state.set("returned", (*state["returned"], *info["values"]))


def _world(behaviors=None, seed=0):
    sim = avm.Sim(seed=seed, hosts=("a", "b"))
    sim.behavior(counter)
    sim.behavior(other)
    sp, revoke = sim.spawner(behaviors)
    sim.spawn("m", maker, env={"spawner": sp})
    sim.probe("p")
    sim.run()
    return sim, sp, revoke


def _refusals(sim):
    return [e.error for e in sim.trace if type(e) is events.Commons and e.service == "spawner"]


def test_a_machine_creates_a_machine_and_gets_its_capability():
    sim, _, _ = _world()
    sim.send(sim.cap("m"), ("make", "counter", 5))
    sim.run()
    (child,) = sim.state("m")["made"]
    assert "counter~1" in sim.net.names and sim.state("counter~1") == 5
    assert child.address == sim.address("counter~1")
    sim.send(sim.cap("m"), ("poke", 0, ("add", 3)))
    sim.send(sim.cap("m"), ("poke", 0, ("get", sim.cap("p", "probe"))))
    sim.run()
    assert sim.state("counter~1") == 8 and sim.received("p") == (("count", 8),)
    assert sim.machine("counter~1").host == sim.machine("m").host
    assert sim.stats()["spawner.spawned"] == 1


def test_spawned_machines_get_fresh_names_and_addresses():
    sim, _, _ = _world()
    sim.submit([(sim.cap("m"), ("make", "counter", i)) for i in range(3)])
    sim.run()
    made = sim.state("m")["made"]
    assert len({c.address for c in made}) == 3
    assert sorted(n for n in sim.net.names if n.startswith("counter~")) == [
        "counter~1", "counter~2", "counter~3"]


def test_an_attenuated_spawner_only_makes_what_it_allows():
    sim, _, _ = _world()
    sim.send(sim.cap("m"), ("narrow", ("counter",)))
    sim.run()
    sim.send(sim.cap("m"), ("make", "other", None, True))
    sim.send(sim.cap("m"), ("make", "counter", 1, True))
    sim.run()
    assert len(sim.state("m")["made"]) == 1
    assert any("may not create 'other'" in r for r in _refusals(sim))


def test_attenuation_cannot_widen():
    sim, _, _ = _world(("counter",))
    sim.send(sim.cap("m"), ("narrow", ("counter", "other")))
    sim.run()
    assert sim.state("m")["narrow"] is None
    assert any("only allow what its parent allows" in r for r in _refusals(sim))
    sim.send(sim.cap("m"), ("make", "other", None))
    sim.run()
    assert sim.state("m")["made"] == ()


def test_revoking_disables_the_spawner_and_its_attenuations():
    sim, _, revoke = _world()
    sim.send(sim.cap("m"), ("narrow", ("counter",)))
    sim.run()
    sim.send(revoke, "revoke")
    sim.run()
    sim.send(sim.cap("m"), ("make", "counter", 1))
    sim.send(sim.cap("m"), ("make", "counter", 1, True))
    sim.run()
    assert sim.state("m")["made"] == ()
    assert sum("revoked" in r for r in _refusals(sim)) == 2


def test_revoking_an_attenuation_leaves_the_parent_working():
    sim, _, _ = _world()
    sim.send(sim.cap("m"), ("narrow", ("counter",)))
    sim.run()
    sim.send(sim.cap("m"), ("revoke-narrow",))
    sim.run()
    sim.send(sim.cap("m"), ("make", "counter", 1, True))
    sim.send(sim.cap("m"), ("make", "counter", 2))
    sim.run()
    (child,) = sim.state("m")["made"]
    assert sim.state("counter~1") == 2


def test_machines_already_made_survive_revocation():
    sim, _, revoke = _world()
    sim.send(sim.cap("m"), ("make", "counter", 1))
    sim.run()
    sim.send(revoke, "revoke")
    sim.send(sim.cap("m"), ("poke", 0, ("add", 1)))
    sim.run()
    assert sim.state("counter~1") == 2


def test_the_spawner_and_revoke_capabilities_are_distinct_powers():
    sim, sp, revoke = _world()
    sim.send(sp, "revoke")  # a spawner cannot revoke
    sim.send(revoke, (sim.cap("p", "probe"), ("spawn", "counter", 1)))  # nor revoke spawn
    sim.run()
    assert len(_refusals(sim)) == 2 and sim.received("p") == ()
    sim.send(sim.cap("m"), ("make", "counter", 1))
    sim.run()
    assert len(sim.state("m")["made"]) == 1


def test_a_guessed_spawner_is_refused():
    sim, sp, _ = _world()
    origin = sim.net.hosts["a"].address
    gid = sp.commons[1][1]
    assert type(gid) is bytes and len(gid) == spawner.ID_BYTES
    for guess in (bytes(32), bytes([gid[0] ^ 1]) + gid[1:], "x"):
        sim.send(commons_cap(origin, "spawner", ("grant", guess)),
                 (sim.cap("p", "probe"), ("spawn", "counter", 1)))
    sim.send(commons_cap(origin, "spawner", ()), (sim.cap("p", "probe"), ("spawn", "counter", 1)))
    sim.run()
    assert len(_refusals(sim)) == 4 and sim.received("p") == ()


def test_unknown_behaviors_and_malformed_requests_are_refused():
    sim, sp, _ = _world()
    sim.send(sim.cap("m"), ("make", "nope", None))
    sim.send(sp, "spawn please")
    sim.send(sp, (sim.cap("p", "probe"), ("spawn", 42, None)))
    sim.send(sp, (sim.cap("p", "probe"), ("fork",)))
    sim.send(sp, (sim.cap("p", "probe"), ("attenuate", (1,))))
    sim.run()
    assert len(_refusals(sim)) == 5
    assert sim.state("m")["made"] == () and sim.received("p") == ()


def test_linear_init_args_are_refused_and_come_back():
    sim, _, _ = _world()
    from avm.testing import watch_census
    w = watch_census(sim)
    sim.send(sim.cap("m"), ("make", "counter", avm.Linear(1)))
    sim.run()
    assert sim.state("m")["made"] == ()
    (back,) = sim.state("m")["returned"]
    assert back[1][1][2] == avm.Linear(1)
    assert w.report().ok


def test_sim_spawner_checks_its_arguments():
    sim = avm.Sim()
    with pytest.raises(avm.UnknownName):
        sim.spawner(host="nowhere")
    with pytest.raises(avm.UsageError):
        sim.spawner((1, 2))


def test_spawning_is_deterministic_and_the_network_encodes():
    def run(seed):
        sim, _, _ = _world(seed=seed)
        sim.submit([(sim.cap("m"), ("make", "counter", i)) for i in range(3)])
        sim.run()
        assert codec.decode(codec.encode(sim.net)) == sim.net
        return [c.address for c in sim.state("m")["made"]], [sim.format(e) for e in sim.trace]
    assert run(2) == run(2)
    assert run(2)[0] != run(3)[0]


def test_depth_is_bounded(monkeypatch):
    monkeypatch.setattr(spawner, "DEPTH_MAX", 2)
    sim, _, _ = _world()
    sim.send(sim.cap("m"), ("narrow", ("counter",)))
    sim.run()
    for _ in range(3):
        sim.send(sim.cap("m"), ("narrow", ("counter",), True))
        sim.run()
    assert any("attenuations deep" in r for r in _refusals(sim))
