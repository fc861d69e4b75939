"""Failing storage injected at the store layer (TESTING.md, storage tier): a commit whose
key file, rows or final commit fails (what SQLite reports when an fsync or a write
fails). The host refuses new work with a clear error, never serves a state that was not
committed, and a reopened host goes on from the last commit. The disk-full case on a
real tmpfs is tests/test_host_diskfull.py."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

import avm
import avm.host
from avm import Map
from avm.host import StoreError

acc = avm.Behavior("faults.acc")


@acc.init
def _init(state, args):
    return [], Map({"n": 0})


@acc.on("add")
def _add(state, k):
    return [], state.set("n", state["n"] + k)


@acc.on("get")
def _get(state, reply):
    return [(reply, ("n", state["n"]))], state


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("point", ["keys", "rows", "commit"])
@pytest.mark.parametrize("durability", ["full", "normal"])
def test_a_failing_commit_stops_the_host_and_loses_nothing_acknowledged(tmp_path, point,
                                                                         durability):
    path = tmp_path / "h.avm"
    seen: list[str] = []

    def fault(where: str) -> None:
        seen.append(where)
        if where == point:
            raise sqlite3.OperationalError(f"disk I/O error (injected at {where})")

    async def failing_act(h, name: str, k: int) -> None:
        if point == "keys":  # only a commit that writes keys (a new machine) gets there
            await h.spawn(name, acc)
        else:
            await h.send(h.cap("a"), ("add", k))

    async def first() -> int:
        async with avm.host.open(path, behaviors=[acc], durability=durability) as h:
            a = await h.spawn("a", acc)
            acked = 0
            for k in range(1, 6):
                await h.send(a, ("add", k))
                acked += k
            assert await h.state("a") == Map({"n": acked})
            h.store.fault = fault
            await failing_act(h, "b", 100)
            raise AssertionError("the failing commit was acknowledged")

    with pytest.raises(StoreError, match="injected"):
        run(first())
    assert point in seen

    async def refused() -> None:
        # the same host object is gone; a host that failed refuses everything, shown
        # here on a fresh host whose store fails at once
        async with avm.host.open(path, behaviors=[acc], durability=durability) as h:
            h.store.fault = fault
            with pytest.raises(StoreError, match="injected"):
                await failing_act(h, "c", 1000)
            for act in (h.state("a"), h.send(h.cap("a"), ("add", 1)), h.spawn("d", acc)):
                with pytest.raises(StoreError, match="stopped after a failed commit"):
                    await act

    try:
        run(refused())
    except StoreError:
        pass  # closing a failed host fails the same way; what was committed stays

    async def again() -> tuple[int, int]:
        async with avm.host.open(path, behaviors=[acc], durability=durability) as h:
            await h.idle()
            n = (await h.state("a"))["n"]
            await h.send(h.cap("a"), ("add", 1))
            return n, (await h.state("a"))["n"]

    n, after = run(again())
    # Acknowledged work is all there. A commit that failed only at its last point may
    # have reached the file (SQLite cannot say whether a failed fsync's data is on
    # disk): then its batch is applied once, never twice, and was never acknowledged.
    allowed = {15, 115, 1015, 1115} if point == "commit" else {15}
    assert n in allowed, n
    assert after == n + 1
    assert avm.host.store.check(path).ok


def test_the_error_says_what_to_do(tmp_path):
    async def go() -> None:
        async with avm.host.open(tmp_path / "h.avm", behaviors=[acc]) as h:
            a = await h.spawn("a", acc)
            h.store.fault = lambda where: (_ for _ in ()).throw(
                sqlite3.OperationalError("disk I/O error"))
            with pytest.raises(StoreError) as e:
                await h.send(a, ("add", 1))
            assert "commit failed" in str(e.value)
            with pytest.raises(StoreError) as e:
                await h.send(a, ("add", 1))
            assert "stopped" in str(e.value) and "reopen" in str(e.value)

    try:
        run(go())
    except StoreError:
        pass
