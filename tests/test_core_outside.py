"""``avm.core.network.outside``: acts between steps keep the scheduler's index current.

A host submits, spawns and moves its clock between steps; through ``outside`` the index
follows those acts from their journal instead of being rebuilt at the next step. Generated
runs compare the index's pick with the reference scan before every step, and count the
rebuilds (one: the first step).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avm import Behavior, Map
from avm.core import inbox
from avm.core import network as nw
from avm.core.network import Env, _authenticate
from avm.core.values import replace_fields

relay = Behavior("outside.relay")


@relay.init
def _init(state, peers):
    return [], Map({"n": 0})


@relay.on("hop")
def _hop(state, ttl, *peers):
    outs = [(p, ("hop", ttl - 1, *peers)) for p in peers[: 1 + ttl % 2]] if ttl > 0 else []
    return outs, state.set("n", state["n"] + 1)


def _same_pick(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and a[1] is b[1] and a[2] == b[2]


OPS = st.lists(st.one_of(
    st.tuples(st.just("send"), st.integers(0, 7), st.integers(0, 4),
              st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), st.integers(0, 3)),
    st.tuples(st.just("spawn")),
    st.tuples(st.just("clock"), st.integers(1, 50)),
    st.tuples(st.just("steps"), st.integers(1, 30)),
), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), ops=OPS)
def test_acts_between_steps_keep_the_index(seed, ops):
    env = Env({relay.name: relay})
    net = nw.new_network(seed)
    addrs = []
    for i in range(3):
        net, a, _ = nw.spawn(net, f"m{i}", relay.name, (), env_obj=env)
        addrs.append(a)
    built = []
    real = inbox.Index.rebuild

    def counting(self, n, e, authenticate):
        built.append(n)
        real(self, n, e, authenticate)

    inbox.Index.rebuild = counting
    try:
        net, _ = nw.step(net, env)  # the first step builds the index
        k = len(addrs)

        def compare():
            idx = env.index
            assert idx.net is net, "an act left the index behind"
            assert _same_pick(idx.pick(net), inbox.pick_scan(net, env, _authenticate))

        for op in ops:
            if op[0] == "send":
                _, i, ttl, prio, client = op
                peers = tuple(nw.mint(net, env, a, None, prio) for a in addrs)
                cap = nw.mint(net, env, addrs[i % len(addrs)], None, prio)
                net, _ = nw.outside(net, env, lambda n, cap=cap, ttl=ttl, peers=peers,
                                    client=client: nw.submit(n, [(cap, ("hop", ttl, *peers))],
                                                             f"c{client}"))
            elif op[0] == "spawn":
                def act(n, k=k):
                    n, a, evs = nw.spawn(n, f"m{k}", relay.name, (), env_obj=env)
                    addrs.append(a)
                    return n, evs
                net, _ = nw.outside(net, env, act)
                k += 1
            elif op[0] == "clock":
                net, _ = nw.outside(net, env, lambda n, d=op[1]: (replace_fields(n, now=n.now + d), []))
            else:
                for _ in range(op[1]):
                    compare()
                    net, _ = nw.step(net, env)
            compare()
        for _ in range(2000):
            compare()
            net, evs = nw.step(net, env)
            if len(evs) == 1 and type(evs[0]) is nw.events.Idle:
                break
    finally:
        inbox.Index.rebuild = real
    assert len(built) == 1, f"rebuilt {len(built)} times"


def test_an_act_outside_the_journal_still_rebuilds():
    """Keys changed some other way (a rotation) leave the index to be rebuilt."""
    env = Env({relay.name: relay})
    net = nw.new_network(1)
    net, a, _ = nw.spawn(net, "m", relay.name, (), env_obj=env)
    net, _ = nw.step(net, env)
    built = []
    real = inbox.Index.rebuild

    def counting(self, n, e, authenticate):
        built.append(n)
        real(self, n, e, authenticate)

    inbox.Index.rebuild = counting
    try:
        net2, _ = nw.outside(net, env, lambda n: nw.rotate_key(n, a, env=env))
    finally:
        inbox.Index.rebuild = real
    assert built == [net2]  # rebuilt for the new network, not followed
    idx = env.index
    idx.sync(net2, env, _authenticate)
    assert _same_pick(idx.pick(net2), inbox.pick_scan(net2, env, _authenticate))
