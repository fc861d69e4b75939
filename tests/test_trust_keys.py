"""Issue 5, item 5: keys are not predictable.

One secret per network (``net.secret``; the simulator derives it from its seed as a test
convenience, a host passes OS randomness), every key drawn from it through a labelled KDF
with a counter; nested networks take their key material from the outer ``random``
service, never from their init argument; rotation takes fresh material; ``random``
answers come from a keyed generator per requesting machine.
"""

from __future__ import annotations

import hashlib

import pytest

import avm
from avm import Behavior, Sim
from avm.core import network as nw
from avm.core.keys import SECRET_BYTES, sim_secret, stream_bytes, stream_key
from avm.core.nest import KEY_CONTEXT, ROUTE, inner_network, inner_state, nest
from avm.core.values import Map

MASK = (1 << 64) - 1


def _old_derive(seed: int, *parts) -> bytes:
    return hashlib.sha256(repr((seed, *parts)).encode()).digest()


def _keys_of(net, address) -> dict:
    return dict(net.keys[address])


# -- the network secret ------------------------------------------------------------------


def test_the_simulator_secret_comes_from_the_seed_and_a_host_can_pass_its_own():
    a, b = nw.new_network(7), nw.new_network(7)
    assert a.secret == b.secret == sim_secret(7) and len(a.secret) == SECRET_BYTES
    assert a.hosts["h0"].address == b.hosts["h0"].address  # reproducible from the seed
    own = nw.new_network(7, secret=bytes(range(32)))
    assert own.secret == bytes(range(32))
    assert own.hosts["h0"].address != a.hosts["h0"].address
    with pytest.raises(avm.core.errors.UsageError):
        nw.new_network(7, secret=b"short")


def _spawned(seed: int = 0, secret: bytes | None = None, names=("m",)) -> tuple:
    net = nw.new_network(seed, secret=secret)
    out = []
    for name in names:
        net, addr, _ = nw.spawn(net, name, "b")
        out.append(addr)
    return net, out


def test_sealing_keys_are_not_derived_from_the_seed_and_name():
    net, [addr] = _spawned(0)
    key = net.keys[addr][0]
    old = hashlib.shake_256(b"avm-siv" + _old_derive(0, "seal", "m")).digest(64)
    assert key != old
    # Same seed and name, another secret: other keys and another address.
    net2, [addr2] = _spawned(0, secret=b"\1" * 32)
    assert addr2 != addr and net2.keys[addr2][0] != key


def test_every_spawn_draws_fresh_material_even_for_a_name_used_before():
    net, [addr] = _spawned(0)
    net, image = nw.export_machine(net, addr)
    net, again, _ = nw.spawn(net, "m", "b")
    assert again != addr  # a new machine, not the exported one's keys again
    assert net.keys[again][0] != image.keys[0]
    net, [a, b] = _spawned(0, names=("x", "y"))
    assert net.keys[a][0] != net.keys[b][0]


def test_rotation_takes_fresh_material():
    net, [addr] = _spawned(0)
    net1, _ = nw.rotate_key(net, addr, keep_old=True)
    net2, _ = nw.rotate_key(net1, addr, keep_old=True)
    keys = _keys_of(net2, addr)
    assert sorted(keys) == [0, 1, 2] and len(set(keys.values())) == 3
    old = _old_derive(0, "seal", addr, 1) + _old_derive(0, "seal2", addr, 1)
    assert keys[1] != old
    # Explicit material (what a host passes from the OS) decides the key.
    m1, _ = nw.rotate_key(net, addr, material=b"\5" * 32)
    m2, _ = nw.rotate_key(net, addr, material=b"\6" * 32)
    m3, _ = nw.rotate_key(net, addr, material=b"\5" * 32)
    assert m1.keys[addr][1] != m2.keys[addr][1]
    assert m1.keys[addr][1] == m3.keys[addr][1]
    assert m1.keys[addr][1] != net1.keys[addr][1]
    with pytest.raises(avm.core.errors.UsageError):
        nw.rotate_key(net, addr, material=b"tiny")


def test_a_rotated_key_still_works_end_to_end():
    sim = Sim(seed=3)
    b = Behavior("echo")

    @b.signal("self")
    def learn(state, me):
        return [], me

    @b.on("hi")
    def hi(state):
        return [], state

    sim.spawn("m", b)
    sim.run()
    old = sim.cap("m", "x")
    sim.rotate_key("m")
    sim.run()
    new = sim.cap("m", "x")
    assert new.keyver == 1 and new.sealed != old.sealed
    sim.send(old, "hi")
    sim.send(new, "hi")
    sim.run()
    assert [f.rule for f in sim.failures("m")] == ["unseal"]


# -- random ------------------------------------------------------------------------------


def _asker() -> Behavior:
    b = Behavior("asker")

    @b.init
    def init(state, args):
        return [], Map({"got": ()})

    @b.signal("self")
    def learn_self(state, me):
        return [], state.set("me", me)

    @b.signal("env")
    def learn_env(state, env):
        return [], state.set("random", env["random"])

    @b.on("ask")
    def ask(state, n):
        return [(state["random"], (state["me"]("answer"), n))], state

    @b.on("random")
    def got(state, data):
        return [], state.set("got", (*state["got"], data))

    return b


def _answers(seed: int, plan) -> dict:
    """Run ``plan``: a list of (machine, bytes) asks, each settled before the next."""
    sim = Sim(seed=seed)
    sim.spawn("a", _asker())
    sim.spawn("b", _asker())
    sim.run()
    for name, n in plan:
        sim.send(sim.cap(name, "desk"), ("ask", n))
        sim.run()
    return {name: sim.state(name)["got"] for name in ("a", "b")}


def test_random_streams_are_independent_per_machine():
    alone = _answers(0, [("a", 16), ("a", 16)])["a"]
    interleaved = _answers(0, [("b", 16), ("a", 16), ("b", 64), ("a", 16)])
    assert interleaved["a"] == alone  # b's asks do not move a's stream
    assert interleaved["b"][0] not in alone
    assert _answers(0, [("a", 16)])["a"][0] == alone[0]  # and it is reproducible
    assert _answers(1, [("a", 16)])["a"][0] != alone[0]


def _splitmix_invert(z: int) -> int:
    """The SplitMix64 state that produced output ``z`` (its mix is a bijection)."""
    def unxorshift(x: int, s: int) -> int:
        y = x
        for _ in range(64 // s + 1):
            y = x ^ (y >> s)
        return y & MASK
    z = unxorshift(z, 31)
    z = (z * pow(0x94D049BB133111EB, -1, 1 << 64)) & MASK
    z = unxorshift(z, 27)
    z = (z * pow(0xBF58476D1CE4E5B9, -1, 1 << 64)) & MASK
    return unxorshift(z, 30)


def _splitmix_next(state: int) -> int:
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_one_random_answer_does_not_predict_the_next():
    # Against SplitMix64 (the old generator) this attack predicts the next answer exactly.
    first, second = _answers(5, [("a", 8), ("a", 8)])["a"]
    state = _splitmix_invert(int.from_bytes(first, "big"))
    predicted = _splitmix_next(state).to_bytes(8, "big")
    assert second != predicted


def test_the_inverter_breaks_splitmix():
    # So the test above is not vacuous: on a SplitMix64 stream it does predict.
    from avm.core.schedule import rng_next

    x, s = rng_next(777)
    y, _ = rng_next(s)
    state = _splitmix_invert(x)
    assert _splitmix_next(state) == y


def test_random_answers_are_the_keyed_stream_of_the_requester():
    sim = Sim(seed=9)
    sim.spawn("a", _asker())
    sim.run()
    sim.send(sim.cap("a", "desk"), ("ask", 32))
    sim.send(sim.cap("a", "desk"), ("ask", 5))
    sim.run()
    addr = sim.address("a")
    stream = (stream_key(sim.net.secret, addr), 0)
    one, stream = stream_bytes(stream, 32)
    two, stream = stream_bytes(stream, 5)
    assert sim.state("a")["got"] == (one, two)
    assert sim.net.random_n[addr] == 2


# -- nested networks -------------------------------------------------------------------------


def _counter_app(sim: Sim) -> None:
    b = Behavior("counter")

    @b.init
    def init(state, args):
        return [], 0

    @b.on("add")
    def add(state, n):
        return [], state + n

    sim.spawn("counter", b)


def test_nested_networks_take_keys_from_the_outer_random_not_the_init_argument():
    outer = Sim(seed=0)
    outer.spawn("n1", nest(_counter_app, name="n1"), 5)
    outer.spawn("n2", nest(_counter_app, name="n2"), 5)  # the same init argument
    outer.run()
    i1, i2 = inner_network(outer.state("n1")), inner_network(outer.state("n2"))
    assert i1.seed == i2.seed == 5  # the init argument is only the scheduling seed
    assert i1.secret != i2.secret
    assert i1.secret != sim_secret(5)
    assert set(i1.machines) != set(i2.machines)  # so different addresses and keys
    assert set(i1.keys.values()).isdisjoint(set(i2.keys.values()))
    # Where the material came from: the first answer of n1's own random stream.
    expected, _ = stream_bytes((stream_key(outer.net.secret, outer.address("n1")), 0),
                               SECRET_BYTES)
    assert i1.secret == expected


def test_messages_that_arrive_before_the_keys_wait_in_order():
    outer = Sim(seed=0)
    outer.spawn("c", nest(_counter_app, name="c"), 0)
    # Queued before anything ran: these reach the nest before its key material does.
    route = outer.cap("c", (ROUTE, "counter", "main"))
    outer.send(route, ("add", 1))
    outer.send(route, ("add", 10))
    waited = []
    while True:
        evs = outer.step()
        st = outer.state("c")
        if type(st) is Map and "queue" in st and st["queue"]:
            waited.append(len(st["queue"]))
        if len(evs) == 1 and type(evs[0]) is avm.core.network.events.Idle:
            break
    assert waited and max(waited) == 2  # both waited for the keys
    assert inner_state(outer.state("c"), "counter") == 11


def test_a_nest_refuses_key_material_it_did_not_ask_for_twice():
    outer = Sim(seed=0)
    outer.spawn("c", nest(_counter_app, name="c"), 0)
    outer.run()
    before = outer.state("c")
    outer.send(outer.cap("c", KEY_CONTEXT), ("random", b"\0" * SECRET_BYTES))
    outer.run()
    assert outer.state("c") == before
    assert outer.failures("c")
