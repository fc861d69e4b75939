"""Hierarchy (DESIGN section 7): "An application must behave the same as top-level
machines and nested inside one machine."

The bank example runs twice from the same ``build`` function: once as top-level machines
of a simulator, once inside a single machine whose state is the whole inner network
(``avm.core.nest.nest``). Final balances and tellers' counters must be equal, for the
example's own workload and for random transfer sequences, whether the transfers are
submitted at build time or routed in from outside one by one."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import avm
from avm.core.nest import ROUTE, inner_network, inner_state, nest

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


bank = load("bank")
counter = load("counter")

MACHINES = (*bank.BRANCHES, *bank.TELLERS)


def outcome(state_of) -> dict:
    """What the application computed: every branch's accounts and teller's counters."""
    out = {}
    for name in bank.BRANCHES:
        out[name] = dict(state_of(name))
    for name in bank.TELLERS:
        t = state_of(name)
        out[name] = (t["asked"], t["confirmed"])
    return out


def top_level(build, seed: int, later=()) -> dict:
    sim = avm.Sim(seed=seed)
    build(sim)
    assert sim.run().quiescent
    for teller, transfer in later:
        # The nesting machine settles its inner network after every outer message; do
        # the same here so both see the same interleaving.
        sim.send(sim.cap(teller, "desk"), transfer)
        assert sim.run().quiescent
    return outcome(sim.state)


def nested(build, seed: int, later=()) -> dict:
    outer = avm.Sim(seed=1000 + seed)  # the outer network's seed must not matter
    outer.spawn("bank", nest(build, name="nested-bank"), seed)
    outer.run()
    for teller, transfer in later:
        outer.send(outer.cap("bank", (ROUTE, teller, "desk")), transfer)
        outer.run()
    assert not [e for e in outer.trace if getattr(e, "ok", True) is False]
    state = outer.state("bank")
    return outcome(lambda name: inner_state(state, name))


def test_bank_nested_gives_the_same_balances():
    top = top_level(bank.build, 0)
    assert top == nested(bank.build, 0)
    # And it did something: some transfers committed and at least one failed.
    asked = sum(top[t][0] for t in bank.TELLERS)
    confirmed = sum(top[t][1] for t in bank.TELLERS)
    assert 0 < confirmed < asked


def test_nested_network_is_state_of_one_machine():
    outer = avm.Sim(seed=0)
    outer.spawn("bank", nest(bank.build, name="nested-bank"), 0)
    outer.run()
    net = inner_network(outer.state("bank"))
    assert set(MACHINES) <= set(net.names)
    assert set(net.hosts) == {"h0", "h1"}
    assert set(outer.net.names) == {"bank"}  # outside, there is one machine
    # The state is an ordinary value: it encodes, and equal runs give equal states.
    again = avm.Sim(seed=0)
    again.spawn("bank", nest(bank.build, name="nested-bank"), 0)
    again.run()
    assert avm.value_hash(outer.state("bank")["net"].machines) == avm.value_hash(
        again.state("bank")["net"].machines)


def test_counter_nested_and_routed_from_outside():
    outer = avm.Sim(seed=0)
    outer.spawn("c", nest(counter.build, name="nested-counter"), 0)
    outer.run()
    assert inner_state(outer.state("c"), "counter") == 6
    outer.send(outer.cap("c", (ROUTE, "counter", "main")), ("add", 10))
    outer.run()
    assert inner_state(outer.state("c"), "counter") == 16


def test_invariants_hold_inside_the_nest():
    # build() registers invariants on the inner simulator; they run while it settles, so
    # a broken application fails the nesting machine's batch instead of passing quietly.
    def leaky(sim):
        bank.build_with(sim, ())
        sim.send(bank.account_cap(sim, "alice"), bank.Deposit(1))  # money from nowhere

    outer = avm.Sim(seed=0)
    outer.spawn("bank", nest(leaky, name="leaky-bank"), 0)
    outer.run()
    [failed] = [e for e in outer.trace if getattr(e, "ok", True) is False]
    assert "total_money_is_conserved" in failed.failure.detail
    # The failed batch was the one that built the inner network (when its key material
    # arrived): the nest is still waiting, with no inner network.
    assert "net" not in outer.state("bank")


# -- random transfer sequences -------------------------------------------------------------


def _transfer(teller: str):
    accounts = sorted(bank.BRANCHES[bank.TELLERS[teller][1]][1])
    return st.tuples(
        st.just(teller),
        st.builds(bank.Transfer, st.sampled_from(accounts), st.sampled_from(accounts),
                  st.integers(1, 120)))


transfers = st.sampled_from(sorted(bank.TELLERS)).flatmap(_transfer)


@given(
    seed=st.integers(0, 2**16),
    initial=st.lists(transfers, max_size=8),
    later=st.lists(transfers, max_size=4),
)
def test_top_level_and_nested_agree_on_random_transfers(seed, initial, later):
    build = functools.partial(bank.build_with, workload=tuple(initial))
    top = top_level(build, seed, later)
    assert top == nested(build, seed, later)
    total = sum(sum(top[b].values()) for b in bank.BRANCHES)
    assert total == bank.TOTAL
    assert sum(top[t][0] for t in bank.TELLERS) == len(initial) + len(later)


def test_the_comparison_can_fail():
    # Equality above is not vacuous: one transfer less inside the nest shows up.
    shorter = functools.partial(bank.build_with, workload=bank.WORKLOAD[:-1])
    assert top_level(bank.build, 0) != nested(shorter, 0)
