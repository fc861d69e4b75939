"""examples/auction.py: bidders on three hosts, a one-hour deadline through the timer, the
winner announced. Over many seeds with every fault kind: exactly one winner, the highest
accepted bid; no bid accepted after the close; every bidder told once; every bid ended
exactly once (accepted, rejected or lost); and the hour costs a few hundred steps."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

import avm
from avm.testing import watch_census

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


auction = load("auction")
HOUSE = auction.HOUSE[0]


def run(seed: int, faults: str | None = None, bidders=None) -> avm.Sim:
    sim = avm.Sim(seed=seed, faults=faults)
    auction.build_with(sim, bidders or auction.BIDDERS)
    report = sim.run(max_steps=50_000)
    assert report.quiescent, (seed, report)
    return sim


def random_bidders(seed: int) -> dict:
    """Bidders spread over the three hosts with random plans around the deadline."""
    rng = random.Random(seed)
    hosts = auction.HOSTS
    out = {}
    for i in range(rng.randint(2, 7)):
        plan = tuple((rng.randrange(0, auction.DEADLINE_MS + 200_000, 1000),
                      rng.randint(1, 500)) for _ in range(rng.randint(0, 4)))
        out[f"b{i}"] = (hosts[i % len(hosts)], plan)
    return out


def check_outcome(sim: avm.Sim, bidders: dict) -> None:
    house = sim.state(HOUSE)
    accepted = house["accepted"]
    assert house["closed"]
    # Exactly one winner, the highest accepted bid (or nobody when nothing was accepted).
    if accepted:
        top = max(a for _, a in accepted)
        assert house["winner"][1] == top and house["winner"] in accepted
        assert [a for who, a in accepted].count(top) == 1
    else:
        assert house["winner"] is None
    news = house["winner"] or (None, 0)
    for b, (_host, plan) in bidders.items():
        st = sim.state(b)
        assert st["told"] == 1 and st["winner"] == news, b
        # Every bid ended exactly once, and nothing is pending.
        ended = len(st["accepted"]) + len(st["rejected"]) + len(st["lost"])
        assert ended == len(plan), (b, st)
        assert avm.pending_asks(st) == avm.Map()
        assert sorted(st["accepted"]) == sorted(a for who, a in accepted if who == b)
    # Bids planned after the close are never accepted.
    close_at = auction.DEADLINE_MS
    late = {(b, a) for b, (_h, plan) in bidders.items() for t, a in plan if t > close_at}
    assert not late & set(accepted)


def test_the_planned_auction_without_faults():
    sim = run(0)
    check_outcome(sim, auction.BIDDERS)
    assert sim.state(HOUSE)["winner"] == ("eve", 320)
    s = auction.summary(sim)
    assert s["bidders"]["ann"][1] == (999,)  # after the deadline: rejected
    assert s["bidders"]["eve"][1] == (500,)


def test_an_hour_costs_a_few_hundred_steps():
    sim = avm.Sim(seed=0)
    auction.build(sim)
    start = sim.net.now
    report = sim.run()
    assert sim.net.now - start >= auction.DEADLINE_MS
    assert report.steps < 1_000  # polling the clock would take millions


@pytest.mark.parametrize("chunk", range(4))
def test_many_seeds_with_every_fault(chunk):
    for seed in range(chunk * 50, chunk * 50 + 50):
        bidders = random_bidders(seed)
        sim = run(seed, "all", bidders)  # the invariants are checked after every step
        check_outcome(sim, bidders)


def test_the_planned_auction_crosses_hosts_under_faults():
    wire = 0
    for seed in range(1, 21):
        sim = run(seed, "all")
        check_outcome(sim, auction.BIDDERS)
        wire += sim.stats().get("wire.sent", 0)
    assert wire > 0


def test_a_bid_delayed_past_the_deadline_is_rejected():
    # A link that loses half of everything: some bids sent in time arrive after the close.
    bidders = {"x": ("h1", ((auction.DEADLINE_MS - 5, 10),)),
               "y": ("h0", ((1000, 5),))}
    outcomes = set()
    for seed in range(30):
        sim = run(seed, "loss=0.5,delay=1-20", bidders)
        check_outcome(sim, bidders)
        outcomes.add(sim.state(HOUSE)["winner"])
    assert outcomes == {("x", 10), ("y", 5)}  # both happen, and both are consistent


def test_the_census_holds_and_runs_replay():
    def trace(seed):
        sim = avm.Sim(seed=seed, faults="all")
        auction.build(sim)
        w = watch_census(sim)
        sim.run()
        assert w.report().ok
        return [sim.format(e) for e in sim.trace]
    assert trace(7) == trace(7)


def test_only_the_timer_can_close_and_bids_must_name_a_bidder():
    sim = avm.Sim(seed=0)
    auction.build(sim)
    sim.run(max_steps=50)
    sim.send(sim.cap(HOUSE), "close")  # not through the close capability
    sim.send(sim.cap(HOUSE), ("bid", 10_000, sim.cap("ann")))  # not a bidder's capability
    sim.run()
    assert len(sim.failures(HOUSE)) == 2
    check_outcome(sim, auction.BIDDERS)
