"""The inbox index picks exactly what the reference scans pick, at every step.

``avm.core.inbox.Index`` keeps heaps of head batches, transmissions and retries beside
the network and follows each step through a journal; ``pick_scan`` and
``next_timed_scan`` scan everything. Generated runs (several hosts, every fault, clients
sending with priorities between steps, machines suspended, stopped, moved, keys rotated,
batches that do not unseal) compare the two before every step, and check that the
incremental path is the one being tested (the index is not simply rebuilt each time).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avm import Behavior, Map, Sim
from avm.core import inbox
from avm.core import network as nw
from avm.core.network import _authenticate

relay = Behavior("inbox.relay")


@relay.init
def _init(state, peers):
    return [], Map({"n": 0})


@relay.signal("env")
def _env(state, env):
    return [], state


@relay.on("hop")
def _hop(state, ttl, *peers):
    outs = [(p, ("hop", ttl - 1, *peers)) for p in peers[: 1 + ttl % 2]] if ttl > 0 else []
    return outs, state.set("n", state["n"] + 1)


@relay.on("fail")
def _fail(state):
    raise ValueError("on purpose")


def _same_pick(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and a[1] is b[1] and a[2] == b[2]


def _compare(sim: Sim) -> None:
    net, env = sim.net, sim.env
    idx = env.index
    idx.sync(net, env, _authenticate)
    assert _same_pick(idx.pick(net), inbox.pick_scan(net, env, _authenticate))
    assert idx.next_timed(net) == inbox.next_timed_scan(net)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 3), st.integers(0, 4),
                  st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), st.integers(0, 3)),
        st.tuples(st.just("steps"), st.integers(1, 40)),
        st.tuples(st.just("suspend"), st.integers(0, 3)),
        st.tuples(st.just("resume"), st.integers(0, 3)),
        st.tuples(st.just("stop"), st.integers(0, 3)),
        st.tuples(st.just("rotate"), st.integers(0, 3)),
        st.tuples(st.just("move"), st.integers(0, 3), st.integers(0, 2)),
        st.tuples(st.just("forged"), st.integers(0, 3)),
        st.tuples(st.just("fail"), st.integers(0, 3)),
    ),
    min_size=1, max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), faults=st.booleans(), ops=OPS)
def test_the_index_picks_what_the_scans_pick(seed, faults, ops):
    hosts = ("h0", "h1", "h2")
    sim = Sim(seed=seed, hosts=hosts,
              faults="loss=0.1,duplicate=0.1,delay=1-20,crash=0.01,partition=0.01" if faults else None)
    names = [f"m{i}" for i in range(4)]
    for i, name in enumerate(names):
        sim.spawn(name, relay, (), host=hosts[i % 3])
    caps = {name: sim.cap(name, None) for name in names}
    stopped: set = set()
    steps = 0
    for op in ops:
        kind = op[0]
        name = names[op[1] % 4] if len(op) > 1 else None
        if kind == "send" and name not in stopped:
            _, i, ttl, prio, client = op
            peers = tuple(sim.cap(n, None, prio) for n in names if n not in stopped)
            sim.send(sim.cap(name, None, prio), ("hop", ttl, *peers), client=f"c{client}")
        elif kind == "steps":
            for _ in range(op[1]):
                _compare(sim)
                sim.step()
                steps += 1
        elif kind == "suspend" and name not in stopped:
            sim.suspend(name)
        elif kind == "resume" and name not in stopped:
            sim.resume(name)
        elif kind == "stop":
            sim.stop(name)
            stopped.add(name)
        elif kind == "rotate" and name not in stopped:
            sim.rotate_key(name)
        elif kind == "move" and name not in stopped:
            sim.net = nw.move(sim.net, sim.address(name), hosts[op[2]])
        elif kind == "forged":
            # A capability sealed under a key the machine never had: its batch does not
            # unseal and must be picked first.
            other = Sim(seed=seed + 1, hosts=hosts)
            other.spawn(name, relay, ())
            if name in sim.net.names and other.address(name) != sim.address(name):
                continue
            sim.send(other.cap(name, None), ("hop", 0), client="forger")
        elif kind == "fail" and name not in stopped:
            sim.send(caps[name], ("fail",), client="c9")
    for _ in range(3000):
        _compare(sim)
        evs = sim.step()
        if len(evs) == 1 and type(evs[0]) is nw.events.Idle:
            break


def test_steps_follow_the_journal_without_rebuilding():
    """A run that only steps rebuilds the index once, however much it queues."""
    sim = Sim(seed=3, hosts=("h0", "h1"), faults="loss=0.2,delay=1-30", record=False)
    for i in range(6):
        sim.spawn(f"m{i}", relay, (), host=("h0", "h1")[i % 2])
    peers = tuple(sim.cap(f"m{i}") for i in range(6))
    for i in range(6):
        sim.send(sim.cap(f"m{i}"), ("hop", 6, *peers), client=f"c{i}")
    built = []
    real = inbox.Index.rebuild

    def counting(self, net, env, authenticate):
        built.append(net)
        real(self, net, env, authenticate)

    inbox.Index.rebuild = counting  # type: ignore[method-assign]
    try:
        n = 0
        while True:
            _compare(sim)
            evs = sim.step()
            n += 1
            if len(evs) == 1 and type(evs[0]) is nw.events.Idle:
                break
    finally:
        inbox.Index.rebuild = real  # type: ignore[method-assign]
    assert n > 200
    assert len(built) == 1


def test_a_step_that_raises_leaves_no_stale_index():
    """An exception escaping a step (an interrupt) makes the next step rebuild."""
    sim = Sim(seed=1)
    sim.spawn("a", relay, ())
    sim.run()
    sim.send(sim.cap("a"), ("hop", 3, sim.cap("a")))
    sim.step()
    assert sim.env.index.net is sim.net

    def boom(*a, **k):
        raise KeyboardInterrupt

    real = nw._run
    nw._run = boom
    try:
        try:
            sim.step()
        except KeyboardInterrupt:
            pass
    finally:
        nw._run = real
    assert sim.env.index.net is None
    sim.run()
    assert sim.state("a")["n"] == 4


def test_batches_for_a_crashed_host_wait_in_the_index_until_it_restarts():
    """Head batches whose host is down are skipped, not forgotten: the restart is a step."""
    from avm import replace_fields

    sim = Sim(seed=2, hosts=("h0", "h1"))
    sim.spawn("a", relay, (), host="h1")
    sim.run()
    for i in range(3):
        sim.send(sim.cap("a"), ("hop", 0), client=f"c{i}")
    h = sim.net.hosts["h1"]
    sim.net = replace_fields(sim.net, hosts=sim.net.hosts.set(
        "h1", replace_fields(h, up=False, down_until=sim.net.now + 10)))
    seen_down = False
    for _ in range(100):
        _compare(sim)
        seen_down = seen_down or (not sim.net.hosts["h1"].up and sim.env.index.net is sim.net)
        evs = sim.step()
        if len(evs) == 1 and type(evs[0]) is nw.events.Idle:
            break
    assert seen_down
    assert sim.state("a")["n"] == 3
