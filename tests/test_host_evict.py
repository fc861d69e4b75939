"""Eviction of cold machines (avm.host.runtime): out of memory, back on demand, nothing lost.

A durable host keeps at most ``resident_max`` machines in memory and evicts those idle for
``idle_seconds``; a message to an evicted machine loads it from the store (its state
decoded, its ``Self`` rebound, its keys read) before its batch runs.
"""

from __future__ import annotations

import asyncio

import avm
import avm.host
from avm import Map
from avm.host import metrics
from avm.testing import Checker

keeper = avm.Behavior("evict.keeper")


@keeper.init
def _init(state, args):
    return [], Map({"n": 0, "self": None, "log": ()})


@keeper.signal("self")
def _self(state, me):
    return [], state.set("self", me)


@keeper.on("add")
def _add(state, k):
    return [], state.set("n", state["n"] + k)


@keeper.on("get")
def _get(state, reply):
    return [(reply, ("n", state["n"]))], state


@keeper.on("mint")
def _mint(state, reply):
    # Uses the Self kept in the state: works only if it was bound again after a load.
    return [(reply, ("cap", state["self"]("inner")))], state


@keeper.on("inner", context="inner")
def _inner(state, reply):
    return [(reply, ("inner", state["n"]))], state


@keeper.on("log")
def _log(state, item):
    return [], state.set("log", (*state["log"], item))


relay = avm.Behavior("evict.relay")


@relay.init
def _relay_init(state, to):
    return [], to


@relay.on("n")
def _relay_n(to, who, k):
    return [(to, ("log", (who, k)))], to


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def _resident(h) -> set[str]:
    return {m.name for m in h._rt.net.machines.values()}


def test_evicted_machine_answers_with_its_state_and_self(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "e.avm", behaviors=[keeper]) as h:
            caps = [await h.spawn(f"k{i}", keeper) for i in range(3)]
            for i, c in enumerate(caps):
                await h.send(c, ("add", 10 + i))
            await h.idle()
            assert await h._rt.evict() == 0  # no limit reached: nothing goes
            h._rt.resident_max = 1  # the host's own machine only
            assert await h._rt.evict() == 3
            assert _resident(h) == {avm.host.REPLIES}
            assert h._rt.evictions == 3
            # listed, readable, and answering, from the store
            assert [m.name for m in h.machines()] == ["k0", "k1", "k2"]
            assert (await h.state("k1"))["n"] == 11
            assert h._rt.loads == 0  # reading a state does not load the machine
            assert await h.ask(caps[1], "get") == ("n", 11)
            assert h._rt.loads == 1
            # its Self was rebound: it still mints capabilities that open
            await h._rt.evict()  # the limit is still 1: k1 goes again
            h._rt.resident_max = None
            assert "k1" not in _resident(h)
            kind, inner = await h.ask(caps[1], "mint")
            assert kind == "cap"
            assert await h.ask(inner, "inner") == ("inner", 11)
            text = metrics.render(h)
            assert "avm_machine_evictions_total 4" in text
            assert "avm_machine_loads_total 2" in text
            assert "avm_machines_resident 2" in text
            assert 'avm_machines{status="running"} 3' in text
            assert [m.name for m in h.machines("k", limit=2)] == ["k0", "k1"]
            assert [m.name for m in h.machines("k2")] == ["k2"]

    run(go())


def test_resident_limit_is_honoured_lru_first(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "e.avm", behaviors=[keeper],
                                 resident_max=5) as h:
            caps = [await h.spawn(f"k{i:02}", keeper) for i in range(20)]
            await h.idle()
            assert len(h._rt.net.machines) <= 5
            for _ in range(3):  # every machine again, round after round
                for i, c in enumerate(caps):
                    await h.send(c, ("add", i))
                    await h.idle()
                    assert len(h._rt.net.machines) <= 5
            # the most recently used survive; the least recently used went first
            assert "k19" in _resident(h) and "k00" not in _resident(h)
            for i in range(20):
                assert (await h.state(f"k{i:02}"))["n"] == 3 * i
            assert h._rt.loads >= 40

    run(go())


def test_idle_machines_are_evicted_after_idle_seconds(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "e.avm", behaviors=[keeper], resident_max=None,
                                 idle_seconds=0.05) as h:
            cap = await h.spawn("k", keeper)
            await h.send(cap, ("add", 2))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while "k" in _resident(h):  # the loop evicts it by itself, on a timer
                assert loop.time() < deadline, "never evicted"
                await asyncio.sleep(0.01)
            assert await h.ask(cap, "get") == ("n", 2)

    run(go())


def test_suspended_evicted_machine_stays_suspended_and_queues(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "e.avm", behaviors=[keeper]) as h:
            cap = await h.spawn("k", keeper)
            await h.send(cap, ("add", 1))
            await h.suspend("k")
            await h.idle()
            h._rt.resident_max = 1
            assert await h._rt.evict() == 1
            assert h.machines()[0].status == "suspended"
            for _ in range(3):
                await h.send(cap, ("add", 1))  # loads it: suspended, so it queues
            await h.idle()
            assert "k" in _resident(h)
            assert h._rt.net.machines[h.address("k")].status == "suspended"
            assert (await h.state("k"))["n"] == 1
            assert await h._rt.evict() == 0  # it has queued work: it stays
            await h.resume("k")
            assert await h.ask(cap, "get") == ("n", 4)

    run(go())


def test_eviction_under_load_loses_nothing(tmp_path):
    """Twenty relays forward numbered messages to one sink while only four machines fit:
    every relay is evicted and loaded again and again. The shared checker sees 0 lost,
    0 duplicated, 0 reordered, and replaying the trace gives the stored states; the sink
    got every message of every relay in order, also after reopening the store."""
    path = tmp_path / "e.avm"
    n_relays, n_msgs = 20, 15

    async def go():
        async with avm.host.open(path, behaviors=[keeper, relay], resident_max=4) as h:
            trace: list = []
            h._rt.tap = trace.extend
            sink = await h.spawn("sink", keeper)
            relays = [await h.spawn(f"r{i:02}", relay, sink) for i in range(n_relays)]
            for k in range(n_msgs):  # waves of sends while the previous waves run
                await asyncio.gather(*(h.send(relays[i], ("n", i, k))
                                       for i in range(n_relays)))
                if k % 3 == 2:  # now and then down to the limit: the next waves load
                    await h.idle()
                    assert len(h._rt.net.machines) <= 4
            await h.idle()
            assert h._rt.evictions > n_relays and h._rt.loads > n_relays
            log = (await h.state("sink"))["log"]
            assert len(log) == n_relays * n_msgs
            for i in range(n_relays):
                assert [k for who, k in log if who == i] == list(range(n_msgs))
            steps = {a: h._rt.env.behavior(m.behavior) for a, m in
                     ((h.address(m.name), m) for m in [h.record(x.name) for x in h.machines()])}
            checker = Checker(lambda d: steps.get(d) if type(d) is bytes else None)
            checker.feed(trace)
            for m in h.machines():
                checker.stored(m.address, h.record(m.name).state)
            report = checker.report()
            assert report.replayed == n_relays + 1 and not report.replay_mismatches
            assert all(p.lost == p.duplicated == p.order == 0 for p in report.pairs)
            return log

    log = run(go())

    async def again():
        async with avm.host.open(path, behaviors=[keeper, relay], resident_max=4) as h:
            assert (await h.state("sink"))["log"] == log
            assert await h.ask(h.cap("sink"), "get") == ("n", 0)

    run(again())


def test_a_store_larger_than_the_limit_opens_lazily(tmp_path):
    path = tmp_path / "e.avm"

    async def first():
        async with avm.host.open(path, behaviors=[keeper]) as h:
            for i in range(12):
                c = await h.spawn(f"k{i:02}", keeper)
                await h.send(c, ("add", i))
            await h.suspend("k03")
            await h.send(h.cap("k03"), ("add", 100))  # queued: it must be loaded at open
            await h.idle()

    async def second():
        async with avm.host.open(path, behaviors=[keeper], resident_max=5) as h:
            assert _resident(h) == {avm.host.REPLIES, "k03"}
            assert len(h.machines()) == 12
            assert (await h.state("k07"))["n"] == 7
            assert await h.ask(h.cap("k07"), "get") == ("n", 7)
            await h.resume("k03")
            assert await h.ask(h.cap("k03"), "get") == ("n", 103)
            await h.spawn("new", keeper)
            try:
                await h.spawn("k05", keeper)  # the name of an evicted machine is taken
            except avm.AvmError:
                pass
            else:
                raise AssertionError("spawned a second k05")
            assert (await h.state("k05"))["n"] == 5

    run(first())
    run(second())


def test_spawn_many_creates_commits_and_evicts(tmp_path):
    path = tmp_path / "e.avm"

    async def go():
        async with avm.host.open(path, behaviors=[keeper, relay]) as h:
            sink = await h.spawn("sink", keeper)
            made = await h.spawn_many(relay, ((f"r{i:03}", sink) for i in range(250)), chunk=64)
            assert made == 250
            assert _resident(h) <= {avm.host.REPLIES, "sink"}  # evicted at once
            assert len(h.machines()) == 251
            assert h.record("r100").state == sink  # initialized by its init batch
            await h.send(h.cap("r007"), ("n", 7, 1))
            await h.idle()
            assert (await h.state("sink"))["log"] == ((7, 1),)
            # a taken name stops it; the machines before it stay created
            try:
                await h.spawn_many(relay, [("x0", sink), ("r005", sink), ("x1", sink)])
            except avm.AvmError:
                pass
            else:
                raise AssertionError("spawned a second r005")
            names = {m.name for m in h.machines()}
            assert "x0" in names and "x1" not in names
            kept = await h.spawn_many(keeper, [("k", None)], resident=True)
            assert kept == 1 and "k" in _resident(h)

    async def again():
        async with avm.host.open(path, behaviors=[keeper, relay], resident_max=10) as h:
            assert len(h.machines()) == 253
            await h.send(h.cap("r249"), ("n", 249, 2))
            await h.idle()
            assert (await h.state("sink"))["log"] == ((7, 1), (249, 2))

    run(go())
    run(again())
