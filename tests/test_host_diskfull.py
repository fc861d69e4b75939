"""Disk full for real: a host whose store sits on a size-capped tmpfs (TESTING.md, storage
tier). The commit that does not fit fails with SQLite's "database or disk is full"; the
host refuses work from then on, never serves what was not committed, and once space
returns a reopened host goes on from the last commit. Skipped where tmpfs cannot be
mounted (not root)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

import avm
import avm.host
from avm.host import StoreError

grow = avm.Behavior("diskfull.grow")


@grow.init
def _init(state, args):
    return [], 0


@grow.on("add")
def _add(state, blob):
    return [], state + 1


@grow.on("keep")
def _keep(state, blob):
    return [], (state, blob)


@grow.on("get")
def _get(state, reply):
    return [(reply, ("n", state if type(state) is int else state[0]))], state


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_refuses_work_and_resumes_when_space_returns(small_disk):
    path = small_disk / "h.avm"
    filler = small_disk / "filler"

    async def fill():
        async with avm.host.open(path, behaviors=[grow], durability="full") as h:
            g = await h.spawn("g", grow)
            for _ in range(5):
                await h.send(g, ("add", b""))
            assert await h.ask(g, "get") == ("n", 5)
            # take the rest of the disk, then commit a state that cannot fit
            try:
                with open(filler, "wb") as f:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
            except OSError:
                pass
            with pytest.raises(StoreError, match="full"):
                for _ in range(50):
                    await h.send(g, ("keep", os.urandom(64 * 1024)))
                    await h.idle()
            with pytest.raises(StoreError):
                await h.state("g")  # nothing uncommitted is ever served
            with pytest.raises(StoreError):
                await h.send(g, ("add", b""))

    async def again():
        async with avm.host.open(path, behaviors=[grow], durability="full") as h:
            g = h.cap("g")
            await h.idle()
            n = await h.ask(g, "get")
            await h.send(g, ("add", b""))
            assert await h.ask(g, "get") == ("n", n[1] + 1)
            return n[1]

    try:
        asyncio.run(asyncio.wait_for(fill(), 60))
    except StoreError:
        pass  # closing a failed host may fail the same way: the store stays as committed
    os.remove(filler)  # space returns
    assert asyncio.run(asyncio.wait_for(again(), 60)) == 5
    assert avm.host.store.check(path).ok
