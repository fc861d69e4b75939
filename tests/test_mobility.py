"""Mobility (DESIGN section 7): a machine moves between hosts and between networks."""

import pytest

from avm import AvmError, Behavior, Sim

counter = Behavior("mobile-counter")


@counter.on("add")
def add(state, n):
    return [], state + n


@counter.on("get")
def get(state, reply):
    return [(reply, state)], state


def test_export_import_keeps_address_keys_and_state():
    a = Sim(seed=1)
    a.spawn("c", counter, 5)
    cap = a.cap("c")
    a.send(cap, ("add", 1))
    a.run()
    image = a.export_machine("c")

    b = Sim(seed=99)  # a different network: different seed, different keys for others
    b.behavior(counter)
    b.import_machine(image)
    p = b.probe("p")
    b.send(cap, ("add", 10))  # a capability minted in the first network still works
    b.send(cap, ("get", p))
    b.run()
    assert b.state("c") == 16
    assert b.received("p") == (16,)
    assert b.address("c") == image.address


def test_batches_left_behind_are_dropped_with_a_reason():
    a = Sim(seed=1)
    a.spawn("c", counter, 0)
    cap = a.cap("c")
    a.run()
    a.export_machine("c")
    a.send(cap, ("add", 1))
    a.run()
    assert a.stats().get("drop.unknown-address") == 1


def test_import_refuses_duplicates_and_unknown_behaviors():
    a = Sim(seed=1)
    a.spawn("c", counter, 0)
    a.run()
    image = a.export_machine("c")
    b = Sim(seed=2)
    with pytest.raises(AvmError, match="no behavior named"):
        b.import_machine(image)
    b.behavior(counter)
    b.import_machine(image)
    with pytest.raises(AvmError, match="already"):
        b.import_machine(image)


def test_move_between_hosts_keeps_delivery_exactly_once_in_order():
    sim = Sim(seed=3, hosts=("h0", "h1"), faults="loss=0.2,dup=0.2,delay=1-8")
    log = Behavior("log")

    @log.on("n")
    def n(state, i):
        return [], (*state, i)

    sender = Behavior("sender")

    @sender.on("go")
    def go(state, target, k):
        return [(target, ("n", i)) for i in range(k)], state

    sim.spawn("log", log, (), host="h1")
    sim.spawn("s", sender, None, host="h0")
    sim.run()
    sim.send(sim.cap("s"), ("go", sim.cap("log"), 5))
    sim.run(50)
    sim.move("log", "h0")
    sim.send(sim.cap("s"), ("go", sim.cap("log"), 5))
    sim.run()
    assert sim.state("log") == tuple(range(5)) * 2
    assert sim.machine("log").host == "h0"
