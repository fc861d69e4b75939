"""Closing a peer link while it waits for a commit must not break the host's store.

Every waiter of one commit shares the writer's future; a waiter that is cancelled (a
peering task closing, a client giving up) used to cancel that future, and the writer
thread then died on ``set_result`` and no later commit ever completed (found by
``avm demo --hosts 3`` hanging at Ctrl-C)."""

from __future__ import annotations

import asyncio

from examples.counter import counter

import avm.host


def test_a_cancelled_wait_for_a_commit_leaves_the_writer_running(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "a.avm", behaviors=[counter]) as h:
            cap = await h.spawn("c", counter, 0)
            for _ in range(30):
                sent = asyncio.ensure_future(h.send(cap, ("add", 1)))
                waiter = asyncio.ensure_future(h._rt.durable())
                await asyncio.sleep(0)  # both wait for the same commit
                waiter.cancel()
                await asyncio.gather(sent, waiter, return_exceptions=True)
                assert sent.exception() is None  # the other waiter still got its commit
            await asyncio.wait_for(h.flush(), 30)
            assert await h.state("c") == 30
            assert h._rt.committer._thread.is_alive()
    asyncio.run(asyncio.wait_for(go(), 60))
