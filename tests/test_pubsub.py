"""examples/pubsub.py: a topic behind membranes, one membrane (door) per subscriber,
spawned for it as it joins.

Revoking one reader's door must cut that reader off completely (its inbox, its cancel
capability, and the detail capabilities it received through the topic), and nobody
else, over many seeds with every fault kind between its three hosts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import avm
from avm.core.network import events
from avm.testing import ALL_FAULTS, heal

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    mod_name = f"avm_example_{name}"
    mod = sys.modules.get(mod_name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(mod_name, EXAMPLES / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
    return mod


pubsub = load("pubsub")
READERS = tuple(pubsub.READERS)
N = len(pubsub.ITEMS)


def fetches_served(sim: avm.Sim) -> int:
    """Messages the press has handled that came from its door (fetches of details)."""
    press = sim.address("press")
    return sum(e.steps for e in sim.trace
               if type(e) is events.Applied and e.dest == press and e.ok
               and e.chan[0] == sim.address(pubsub.PRESS_DOOR))


def headlines(sim: avm.Sim, name: str) -> tuple:
    return tuple(h for _, _, h, _ in sim.state(name)["got"])


def publish(sim: avm.Sim, n: int) -> None:
    for _ in range(n):
        sim.send(sim.cap("press", "desk"), "next", client="editor")


def admin(sim: avm.Sim, name: str) -> avm.Capability:
    return sim.cap(name, "admin")


def world(seed: int = 0, faults: str | None = None) -> avm.Sim:
    sim = avm.Sim(seed=seed, faults=faults)
    pubsub.spawn_world(sim)
    return sim


# -- the example's own run, over many seeds --------------------------------------------


@pytest.mark.parametrize("seed", range(100))
def test_the_example_over_many_seeds(seed):
    faults = None if seed % 4 == 0 else ALL_FAULTS
    sim = avm.Sim(seed=seed, faults=faults)
    pubsub.build(sim)  # its invariants run after every step
    assert sim.run(max_steps=50_000).quiescent
    for name in READERS:
        st = sim.state(name)
        if name == pubsub.REVOKED:
            assert len(st["got"]) <= N  # a prefix (the invariant checked its order)
        else:
            assert headlines(sim, name) == pubsub.ITEMS
            assert dict(st["details"]) == dict(enumerate(pubsub.DETAILS))
    bad = [(e.dest, e.failure.error_type) for e in sim.trace
           if type(e) is events.Applied and not e.ok]
    assert {d for d, _ in bad} <= {pubsub.door_address(sim, pubsub.REVOKED)}
    assert {t for _, t in bad} <= {"Revoked"}
    if faults:
        assert sim.stats().get("wire.sent", 0) > 0  # the readers really are on other hosts


# -- revoking one door mid-run ------------------------------------------------------------


def test_revoking_one_reader_cuts_it_off_including_what_it_got_through_the_topic():
    sim = world()
    publish(sim, 3)
    assert sim.run().quiescent
    for name in READERS:
        assert headlines(sim, name) == pubsub.ITEMS[:3]
        assert len(sim.state(name)["details"]) == 3
    cut = pubsub.REVOKED
    cut_door = pubsub.door_address(sim, cut)
    # Every capability the reader holds from the topic is its own door's wrapper.
    st = sim.state(cut)
    assert st["cancel"].address == cut_door
    assert all(d.address == cut_door for _, _, _, d in st["got"])

    pubsub.revoke(sim, cut)
    sim.run()
    publish(sim, 2)
    sim.run()
    assert headlines(sim, cut) == pubsub.ITEMS[:3]  # its inbox is cut...
    for name in READERS:
        if name != cut:
            assert headlines(sim, name) == pubsub.ITEMS  # ...and only its inbox

    served = fetches_served(sim)
    sim.send(admin(sim, cut), "refetch")  # old detail capabilities, received via the topic
    sim.run()
    assert fetches_served(sim) == served  # none reached the press
    sim.send(admin(sim, "reader.1"), "refetch")
    sim.run()
    assert fetches_served(sim) == served + N  # another reader's still work

    sim.send(admin(sim, cut), "unsubscribe")  # its cancel capability is dead too
    sim.run()
    assert set(sim.state("topic")["subs"]) == {0, 1, 2}
    fails = [e.failure for e in sim.trace if type(e) is events.Applied and not e.ok]
    assert fails and {f.error_type for f in fails} == {"Revoked"}
    assert all(e.dest == cut_door for e in sim.trace if type(e) is events.Applied and not e.ok)


@pytest.mark.parametrize("seed", range(40))
def test_a_revocation_at_any_moment_under_faults(seed):
    # Revoke after a seed-dependent number of steps, with every fault kind on: whatever
    # the reader got by then is a prefix of the log, and nothing it holds works after.
    sim = world(seed, ALL_FAULTS)
    publish(sim, N)
    for _ in range(seed * 7):
        sim.step()
    cut = pubsub.REVOKED
    pubsub.revoke(sim, cut)
    heal(sim)
    assert sim.run(max_steps=50_000).quiescent
    log = sim.state("topic")["log"]
    assert len(log) == N
    got = sim.state(cut)["got"]
    assert tuple((seq, i) for seq, i, _, _ in got) == tuple((s, item[1]) for s, item in
                                                          enumerate(log))[:len(got)]
    for name in READERS:
        if name != cut:
            assert headlines(sim, name) == pubsub.ITEMS
    served, subs = fetches_served(sim), sim.state("topic")["subs"]
    sim.send(admin(sim, cut), "refetch")
    sim.send(admin(sim, cut), "unsubscribe")
    sim.run()
    assert fetches_served(sim) == served  # its detail capabilities are dead
    assert sim.state("topic")["subs"] == subs  # and its cancel capability (if it got one)


def test_some_seed_revokes_a_reader_that_already_holds_capabilities():
    # The sweep above is not vacuous: in some seeds the reader had events (and their
    # detail capabilities) before its door was revoked.
    counts = set()
    for seed in range(16):
        sim = world(seed, ALL_FAULTS)
        publish(sim, N)
        for _ in range(seed * 7):
            sim.step()
        pubsub.revoke(sim, pubsub.REVOKED)
        heal(sim)
        sim.run(max_steps=50_000)
        counts.add(len(sim.state(pubsub.REVOKED)["got"]))
    assert max(counts) > 0 and min(counts) < N


# -- the rest of the design ---------------------------------------------------------------


def test_each_reader_and_the_topic_hold_only_door_wrappers():
    sim = world()
    publish(sim, 2)
    sim.run()
    doors = {n: pubsub.door_address(sim, n) for n in READERS}
    assert len(set(doors.values())) == len(READERS)  # one door each
    for name in READERS:
        st = sim.state(name)
        assert {d.address for _, _, _, d in st["got"]} == {doors[name]}
    inboxes = sim.state("topic")["subs"]
    assert {c.address for c in inboxes.values()} == set(doors.values())
    press_door = sim.address(pubsub.PRESS_DOOR)
    assert {item[3].address for item in sim.state("topic")["log"]} == {press_door}


def test_unsubscribing_through_the_cancel_capability():
    sim = world()
    publish(sim, 2)
    sim.run()
    sim.send(admin(sim, "reader.2"), "unsubscribe")
    sim.run()
    publish(sim, 2)
    sim.run()
    assert headlines(sim, "reader.2") == pubsub.ITEMS[:2]
    assert headlines(sim, "reader.1") == pubsub.ITEMS[:4]
    assert sim.failures() == []


def test_doors_let_through_only_their_names():
    sim = world()
    sim.run()
    reader_door = sim.state("registrar")["doors"]["reader.1"]["use"]
    press_door, _ = avm.patterns.forwarder_caps(sim, pubsub.PRESS_DOOR)
    sim.send(reader_door, ("publish", ("news", 9, "forged", reader_door)))
    sim.send(press_door, ("subscribe", sim.probe("spy")))
    sim.run()
    assert sim.state("topic")["log"] == ()
    assert sim.received("spy") == ()
    assert [f.error_type for f in sim.failures()] == ["Refused", "Refused"]


def test_a_late_subscriber_gets_a_door_of_its_own_and_the_whole_log():
    sim = world()
    publish(sim, N)
    sim.run()
    doors_before = set(sim.net.names)
    # A reader that arrives while the application runs: the registrar spawns its door.
    sim.spawn("late", pubsub.reader,
              avm.Map(registrar=sim.cap("registrar", "desk"), label="late"), host="h1")
    sim.run()
    [new_door] = set(sim.net.names) - doors_before - {"late"}
    assert pubsub.door_address(sim, "late") == sim.address(new_door)
    assert headlines(sim, "late") == pubsub.ITEMS
    assert len(sim.state("late")["details"]) == N
    pubsub.revoke(sim, "late")
    sim.run()
    served = fetches_served(sim)
    sim.send(admin(sim, "late"), "refetch")
    sim.run()
    assert fetches_served(sim) == served
    assert headlines(sim, "reader.1") == pubsub.ITEMS


def test_the_registrar_spawner_makes_doors_only():
    sim = world()
    sim.run()
    spawner = sim.state("registrar")["spawner"]
    p = sim.probe("p")
    sim.send(spawner, (p, ("spawn", "pubsub.topic", None)))
    sim.run()
    assert sim.received("p") == ()
    assert sim.stats().get("commons.refused", 0) >= 1


def test_a_door_revoked_before_it_exists_is_never_handed_over():
    sim = world()
    sim.run()
    pubsub.revoke(sim, "late")  # the operator is first: no door for "late" yet
    sim.run()
    sim.spawn("late", pubsub.reader,
              avm.Map(registrar=sim.cap("registrar", "desk"), label="late"), host="h1")
    publish(sim, 2)
    sim.run()
    st = sim.state("late")
    assert st["topic"] is None and st["got"] == ()
    assert "late" in sim.state("registrar")["doors"]  # made, revoked, kept by the registrar
    assert headlines(sim, "reader.1") == pubsub.ITEMS[:2]
