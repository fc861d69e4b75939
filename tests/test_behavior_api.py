"""The conveniences around Behavior and Sim: context-filtered handlers, naming, hosts."""

import pytest

from avm import ANY, AvmError, Behavior, Sim


def make_room() -> Behavior:
    room = Behavior("room")

    @room.on("say", context="member")
    def say(state, text, *, ctx):
        return [], (*state, (ctx[1], text))

    @room.on("say", context="muted")
    def muted(state, text):
        return [], state

    @room.on("clear", context="admin")
    def clear(state):
        return [], ()

    return room


def test_context_filter_routes_by_the_capability_used():
    sim = Sim(seed=1)
    sim.spawn("room", make_room(), ())
    sim.send(sim.cap("room", ("member", "ann")), ("say", "hi"))
    sim.send(sim.cap("room", "muted"), ("say", "ignored"))
    sim.run()
    assert sim.state("room") == (("ann", "hi"),)


def test_context_filter_refuses_other_contexts_with_a_clear_error():
    sim = Sim(seed=1)
    sim.spawn("room", make_room(), ())
    sim.send(sim.cap("room", ("member", "ann")), ("say", "hi"))
    sim.send(sim.cap("room", ("member", "ann")), "clear")  # a member is not an admin
    sim.run()
    assert sim.state("room") == (("ann", "hi"),)
    [failure] = sim.failures("room")
    assert failure.rule == "contract"
    assert "context" in failure.detail and "'clear'" in failure.detail
    # Contexts are the receiver's secrets: neither the capability's nor the wanted one
    # is quoted, even in the operator's detail.
    assert "ann" not in failure.detail and "admin" not in failure.detail


def test_any_context_is_the_default():
    b = Behavior("b")

    @b.on("x", context=ANY)
    def x(state):
        return [], state + 1

    sim = Sim(seed=1)
    sim.spawn("b", b, 0)
    sim.send(sim.cap("b", "whatever"), "x")
    sim.run()
    assert sim.state("b") == 1


def test_behaviors_from_one_factory_get_distinct_reproducible_names():
    sim = Sim(seed=1)
    first = sim.behavior(make_room())
    second = sim.behavior(make_room())
    assert (first, second) == ("room", "room-2")
    again = make_room()
    with pytest.raises(AvmError, match="already registered"):
        sim.behavior(again, name="room")


def test_same_behavior_object_registers_once():
    sim = Sim(seed=1)
    room = make_room()
    assert sim.behavior(room) == sim.behavior(room) == "room"


def test_hosts_and_idempotent_add_host():
    sim = Sim(seed=1, hosts=("b", "a"))
    assert sim.hosts == ("a", "b")
    sim.add_host("a", exist_ok=True)
    with pytest.raises(AvmError, match="already exists"):
        sim.add_host("a")
    sim.add_host("c")
    assert sim.hosts == ("a", "b", "c")


def test_fast_batch_construction_matches_the_record():
    from avm.core.netvalue import Batch, new_batch
    from avm.core.values import record_fields

    fast = new_batch("s", b"d", 3, (1, 2), 0.5, (), None)
    slow = Batch("s", b"d", 3, (1, 2), 0.5, ())
    assert fast == slow and type(fast) is Batch
    assert tuple(getattr(fast, f) for f in record_fields(Batch)) == tuple(slow)
