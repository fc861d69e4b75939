"""Live programming on a host (issue 9 item 2): a machine bound to a dictionary word runs a
new version from its next batch with its state kept, a version that does not compile or
load is refused before any machine runs it, a bad version is rolled back in one action,
and bindings survive reopening the store."""

from __future__ import annotations

import asyncio

import pytest

import avm
import avm.host
from avm import Map
from avm.core.errors import AvmError
from avm.host.dictionary import CompileError

COUNTER = '''
import avm
behavior = avm.Behavior("counter")

@behavior.init
def _init(state, args):
    return [], avm.Map({"n": 0, "by": ()})

@behavior.on("tick")
def _tick(state):
    return [], state.set("n", state["n"] + STEP).set("by", (*state["by"], STEP))

@behavior.on("get")
def _get(state, reply):
    return [(reply, ("n", state["n"]))], state
'''


def counter(step: int, broken: bool = False) -> str:
    src = COUNTER.replace("STEP", str(step))
    if broken:
        src = src.replace('state["n"] + ', 'state["nope"] + ')
    return src


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def ticks(h, k: int) -> None:
    for _ in range(k):
        await h.send(h.cap("c"), ("tick",))
    await h.idle()


def test_bind_run_edit_rollback_and_reopen(tmp_path):
    path = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(path) as h:
            live = h.live
            d = live.dictionary
            d.edit("main", "counter", counter(1), author="ann")
            boot = d.load("main", "counter")
            h.behavior(boot, "boot")
            await h.spawn("c", "boot")
            await live.bind("c", "counter")
            await ticks(h, 2)
            s1 = await h.state("c")
            assert s1 == Map({"n": 2, "by": (1, 1)})

            await live.edit("main", "counter", counter(2))  # followed: rebinds c
            await ticks(h, 1)
            s2 = await h.state("c")
            assert s2 == Map({"n": 4, "by": (1, 1, 2)})  # state kept, new code

            with pytest.raises(CompileError, match="line"):
                await live.edit("main", "counter", "def broken(:\n")
            await ticks(h, 1)
            assert (await h.state("c"))["n"] == 6  # still version 2

            await live.edit("main", "counter", counter(3, broken=True))  # loads, but fails
            await ticks(h, 2)
            assert (await h.state("c"))["n"] == 6  # both batches failed whole
            back = await live.rollback("c")
            assert back.endswith(f"@{d.history('main', 'counter')[1].id}")
            await ticks(h, 1)
            assert (await h.state("c"))["n"] == 8  # version 2 again, pinned
            await live.edit("main", "counter", counter(5))  # pinned: not followed
            await ticks(h, 1)
            assert (await h.state("c"))["n"] == 10
            await live.bind("c", "counter")  # follow the head again
            return (await h.state("c"))["n"]

    assert run(go()) == 10

    async def reopened():
        async with avm.host.open(path) as h:  # no behaviors=: the store has the code
            await ticks(h, 1)
            n = (await h.state("c"))["n"]
            await h.live.edit("main", "counter", counter(7))  # still following
            await ticks(h, 1)
            return n, (await h.state("c"))["n"], h.live.bindings()["c"]

    n, m, binding = run(reopened())
    assert (n, m) == (15, 22)
    assert binding[:3] == ("main", "counter", True)


def test_a_version_that_does_not_load_binds_nothing(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "h.avm") as h:
            d = h.live.dictionary
            d.edit("main", "counter", counter(1))
            h.behavior(d.load("main", "counter"), "boot")
            await h.spawn("c", "boot")
            await h.live.bind("c", "counter")
            before = h.network.machines[h.address("c")].behavior
            with pytest.raises(AvmError, match="failed to load"):
                await h.live.edit("main", "counter", "raise RuntimeError('at import')\n")
            assert h.network.machines[h.address("c")].behavior == before
            assert await h.live.rollback("c") == "boot"  # what it ran before the bind
            return before

    assert run(go()).startswith("dict:main/counter@")
