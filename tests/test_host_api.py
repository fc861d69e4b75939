"""The embedded host API (avm.host): machines in a file, run by the core's rules."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from examples.counter import counter

import avm
import avm.host
from avm import Linear, Map
from avm.host import AskFailed, StoreError
from avm.testing import Checker, census
from spawning import maker

keeper = avm.Behavior("keeper")


@keeper.init
def _init(state, args):
    return [], Map({"n": 0, "restarts": 0, "coins": ()})


@keeper.on("add")
def _add(state, n):
    return [], state.set("n", state["n"] + n)


@keeper.on("get")
def _get(state, reply):
    return [(reply, ("n", state["n"]))], state


@keeper.on("boom")
def _boom(state, reply):
    raise ValueError("boom")


@keeper.on("coin")
def _coin(state, c):
    return [], state.set("coins", (*state["coins"], c))


@keeper.signal("restart")
def _restart(state, info):
    return [], state.set("restarts", state["restarts"] + 1)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_spawn_send_ask_state_survive_reopening(tmp_path):
    path = tmp_path / "h.avm"

    async def first():
        async with avm.host.open(path, behaviors=[counter]) as h:
            cap = await h.spawn("counter", counter, 0)
            for n in (1, 2, 3):
                await h.send(cap, ("add", n))
            assert await h.ask(cap, "get") == ("count", 6)
            assert await h.state("counter") == 6
            assert [m.name for m in h.machines()] == ["counter"]

    async def second():
        async with avm.host.open(path, behaviors=[counter]) as h:
            assert await h.state("counter") == 6
            assert await h.ask(h.cap("counter"), ("get",)) == ("count", 6)
            await h.send(h.cap("counter"), ("add", 4))
            assert await h.ask(h.cap("counter"), lambda r: ("get", r)) == ("count", 10)

    run(first())
    run(second())


def test_the_host_is_checked_by_the_shared_checker_with_replay(tmp_path):
    """Every batch the host applied, replayed through run_batch by avm.testing's checker,
    gives the states the host stored (P6); nothing lost, duplicated or reordered."""
    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[counter, keeper]) as h:
            trace: list = []
            h._rt.tap = trace.extend
            caps = [await h.spawn(f"c{i}", counter, 0) for i in range(3)]
            k = await h.spawn("k", keeper)
            await asyncio.gather(*(h.send(caps[i % 3], ("add", i)) for i in range(60)))
            await h.submit([(k, ("add", 1)), (k, ("boom", k)), (k, ("add", 1))])  # fails whole
            await h.send(k, ("add", 5))
            await h.idle()
            checker = Checker.for_sim(h._rt)
            checker.feed(trace)
            for addr, m in h.network.machines.items():
                checker.stored(addr, m.state)
            report = checker.report()
            assert report.replayed >= 4 and not report.replay_mismatches
            assert all(p.lost == p.duplicated == p.order == 0 for p in report.pairs)
            assert (await h.state("k"))["n"] == 5
            assert sum([await h.state(f"c{i}") for i in range(3)]) == sum(range(60))

    run(go())


def test_process_control(tmp_path):
    path = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(path, behaviors=[keeper]) as h:
            k = await h.spawn("k", keeper)
            await h.suspend("k")
            await h.send(k, ("add", 2))
            await h.idle()
            assert (await h.state("k"))["n"] == 0  # queued, not run
            assert h.machines()[0].status == "suspended"
            await h.resume("k")
            assert await h.ask(k, "get") == ("n", 2)
            await h.restart("k", Map({"why": "test"}))
            await h.idle()
            assert (await h.state("k"))["restarts"] == 1
            await h.stop("k")
            await h.send(k, ("add", 1))
            await h.idle()
            assert h.stats()["drop.stopped"] == 1
            addr = h.address("k")
            await h.destroy("k")
            assert h.machines() == []
            with pytest.raises(avm.UnknownName):
                await h.state("k")
            return addr

    addr = run(go())
    keys = sqlite3.connect(str(path) + ".keys")
    assert keys.execute("SELECT count(*) FROM keys WHERE address=?", (addr,)).fetchone()[0] == 0
    keys.close()


def test_ask_fails_clearly(tmp_path):
    async def go():
        async with avm.host.open(None, behaviors=[keeper]) as h:
            k = await h.spawn("k", keeper)
            with pytest.raises(AskFailed, match="exception"):
                await h.ask(k, "boom")
            await h.suspend("k")
            with pytest.raises(TimeoutError):
                await h.ask(k, "get", timeout=0.05)
            await h.stop("k")
            with pytest.raises(AskFailed, match="dropped"):
                await h.ask(k, "get")
            with pytest.raises(avm.UsageError):
                await h.ask(k, 42)

    run(go())


def test_bad_input_changes_nothing(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[keeper]) as h:
            k = await h.spawn("k", keeper)
            await h.idle()
            before = h.network
            with pytest.raises(avm.ValueRuleError):
                await h.send(k, ("add", [1]))  # a list is not a value
            with pytest.raises(avm.SubstructuralError):
                coin = Linear("c")
                await h.submit([(k, ("coin", coin)), (k, ("coin", coin))])
            await h.flush()
            after = h.network
            for f in ("machines", "pending", "next_seq", "head", "stats"):
                assert avm.encode(getattr(after, f)) == avm.encode(getattr(before, f))

    run(go())


def test_open_refuses_a_store_whose_behaviors_it_lacks(tmp_path):
    path = tmp_path / "h.avm"

    async def make():
        async with avm.host.open(path, behaviors=[keeper]) as h:
            await h.spawn("k", keeper)

    async def reopen():
        async with avm.host.open(path, behaviors=[counter]):
            pass

    run(make())
    with pytest.raises(avm.UsageError, match="keeper"):
        run(reopen())


def test_a_failed_commit_stops_the_host_and_nothing_uncommitted_is_served(tmp_path, monkeypatch):
    path = tmp_path / "h.avm"

    async def go():
        h = await avm.host.open(path, behaviors=[keeper])
        k = await h.spawn("k", keeper)
        await h.send(k, ("add", 1))
        await h.idle()

        def full(net, dirty):
            raise StoreError("database or disk is full")

        monkeypatch.setattr(h.store, "write", full)
        with pytest.raises(StoreError, match="full"):
            await h.send(k, ("add", 100))
        with pytest.raises(StoreError):
            await h.state("k")
        with pytest.raises(StoreError, match="stopped"):
            await h.send(k, ("add", 1))
        monkeypatch.undo()
        await avm.host.close(h)

    async def again():
        async with avm.host.open(path, behaviors=[keeper]) as h:
            await h.idle()
            assert (await h.state("k"))["n"] == 1  # what was committed, no more

    run(go())
    run(again())


def test_linear_values_are_conserved_across_reopening(tmp_path):
    path = tmp_path / "h.avm"

    async def go(first: bool):
        async with avm.host.open(path, behaviors=[keeper]) as h:
            if first:
                k = await h.spawn("k", keeper)
                await h.submit([(k, ("coin", Linear(i))) for i in range(5)])
            await h.idle()
            return census(h._rt).linear

    assert run(go(True)) == 5
    assert run(go(False)) == 5


alarm = avm.Behavior("alarm")


@alarm.init
def _alarm_init(state, args):
    return [], Map({"me": None, "env": None, "dings": 0})


@alarm.signal("self")
def _alarm_self(state, me):
    return [], state.set("me", me)


@alarm.signal("env")
def _alarm_env(state, env):
    return [], state.set("env", env)


@alarm.on("set")
def _alarm_set(state, ms):
    me = state["me"]
    return [(state["env"]["timer"], (me("timer"), ("after", ms, me("main"), ("ding",))))], state


@alarm.on("timer")
def _alarm_timer(state, cancel):
    return [], state


@alarm.on("ding")
def _alarm_ding(state):
    return [], state.set("dings", state["dings"] + 1)


async def _until(h, name, pred, seconds=20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not pred(await h.state(name)):
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.005)


def test_timers_fire_in_real_time_and_survive_a_restart(tmp_path):
    path = tmp_path / "h.avm"
    t0 = 2_000_000_000.0
    now = [t0]

    async def first():
        async with avm.host.open(path, behaviors=[alarm], clock=lambda: now[0]) as h:
            a = await h.spawn("a", alarm)
            await h.send(a, ("set", 1))
            now[0] += 0.002
            await _until(h, "a", lambda s: s["dings"] == 1)
            await h.send(a, ("set", 60_000))  # a minute: the clock stays before it
            await _until(h, "a", lambda s: s["env"] is not None)
            await h.idle()
            assert h.network.timers  # set, committed, not fired yet

    async def second():
        async with avm.host.open(path, behaviors=[alarm], clock=lambda: t0 + 120) as h:
            await _until(h, "a", lambda s: s["dings"] == 2)
            assert not h.network.timers

    run(first())
    run(second())


def test_a_spawner_makes_machines_that_are_stored(tmp_path):
    path = tmp_path / "h.avm"

    async def first():
        async with avm.host.open(path, behaviors=[maker, counter]) as h:
            sp, _revoke = await h.spawner(["counter"])
            m = await h.spawn("maker", maker, env={"spawner": sp})
            await h.send(m, ("make", 41))
            await _until(h, "maker", lambda s: s["made"] is not None)
            assert await h.ask(m, "ask") == ("count", 42)
            return len(h.machines())

    async def second():
        async with avm.host.open(path, behaviors=[maker, counter]) as h:
            assert len(h.machines()) == 2
            assert await h.ask(h.cap("maker"), "ask") == ("count", 42)

    assert run(first()) == 2
    run(second())


def test_an_answer_is_given_only_once_the_step_that_made_it_is_committed(tmp_path):
    """An ask's answer must not tell a client of a state a crash could still undo: when
    ask returns, the batch that answered is in the committed snapshot."""
    bump = avm.Behavior("bump")

    @bump.on("bump")
    def _bump(count, reply):
        return [(reply, count + 1)], count + 1

    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[bump]) as h:
            cap = await h.spawn("b", bump, 0)
            addr = h.address("b")
            for _ in range(30):
                n = await h.ask(cap, "bump")
                assert h._committed_record(h._rt.committed, addr, "b").state == n

    run(go())
