"""Delivery between two host runtimes over TLS (issue 8, item 3): the outbox lives in
the store until acknowledged, retransmission, de-duplication, acks after the commit."""

from __future__ import annotations

import asyncio

from examples.counter import counter

import avm.host
from avm.core.caps import IdentityKey
from avm.host.peering import Peering
from avm.wire.faults import FaultProxy, FaultSpec
from avm.wire.transport import HostIdentity, TransportConfig

IA = HostIdentity(IdentityKey.from_seed(b"peer-host-a"), (("host", "a"),))
IB = HostIdentity(IdentityKey.from_seed(b"peer-host-b"), (("host", "b"),))
CFG = TransportConfig(handshake_seconds=2, idle_seconds=10, reconnect_min_seconds=0.02,
                      reconnect_max_seconds=0.2)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(cond, timeout: float = 20.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not await cond():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


async def pair(a, b, proxy_spec: FaultSpec | None = None):
    pa, pb = Peering(a._rt, IA, CFG), Peering(b._rt, IB, CFG)
    port = await pb.listen()
    proxy = None
    if proxy_spec is not None:
        proxy = await FaultProxy("127.0.0.1", port, proxy_spec).start()
        port = proxy.port
    pb.add_peer("a", IA.address)
    pa.add_peer("b", IB.address, ("127.0.0.1", port))
    return pa, pb, proxy


def test_batches_between_two_hosts_apply_once_in_order_and_leave_the_outbox(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "a.avm", behaviors=[counter]) as a, \
                avm.host.open(tmp_path / "b.avm", behaviors=[counter]) as b:
            cap = await b.spawn("counter", counter, 0)
            pa, pb, _ = await pair(a, b)
            pa.add_remote(cap.address, "b")
            for n in range(1, 31):
                await a.send(cap, ("add", n))

            async def all_in():
                return await b.state("counter") == sum(range(1, 31))
            await until(all_in)

            async def outbox_empty():
                return not (await a._rt.durable()).outbox
            await until(outbox_empty)
            assert pa.counts["acks_received"] >= 1
            assert pb.counts["received"] == 30
            net_b = await b._rt.durable()
            assert max(net_b.received.values()) == 30
            await pa.close()
            await pb.close()
    run(go())


def test_through_a_faulty_proxy_and_a_restart_nothing_is_lost_or_applied_twice(tmp_path):
    async def go():
        path_a = tmp_path / "a.avm"
        async with avm.host.open(tmp_path / "b.avm", behaviors=[counter]) as b:
            cap = await b.spawn("counter", counter, 0)
            spec = FaultSpec(seed=21, truncate=0.05, duplicate=0.05, reorder=0.05,
                             delay_seconds=(0, 0.002))
            async with avm.host.open(path_a, behaviors=[counter]) as a:
                pa, pb, proxy = await pair(a, b, spec)
                pa.add_remote(cap.address, "b")
                proxy.partition()  # B unreachable: the batches wait in A's outbox
                for _ in range(20):
                    await a.send(cap, ("add", 1))
                await pa.close()
            # A stopped with 20 batches unacknowledged; they are in its store
            async with avm.host.open(path_a, behaviors=[counter]) as a2:
                assert len((await a2._rt.durable()).outbox) == 20
                pa2 = Peering(a2._rt, IA, CFG)
                pa2.add_peer("b", IB.address, ("127.0.0.1", proxy.port))
                proxy.heal()
                for _ in range(20):
                    await a2.send(cap, ("add", 1))

                async def all_in():
                    return await b.state("counter") == 40
                await until(all_in)

                async def outbox_empty():
                    return not (await a2._rt.durable()).outbox
                await until(outbox_empty)
                await asyncio.sleep(0.2)  # retransmissions still in flight apply nothing
                assert await b.state("counter") == 40  # exactly once: no more, no less
                await pa2.close()
            await pb.close()
            await proxy.close()
            assert proxy.counts["partition"] == 1
    run(go())


def test_a_replayed_batch_from_the_true_peer_applies_nothing(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "a.avm", behaviors=[counter]) as a, \
                avm.host.open(tmp_path / "b.avm", behaviors=[counter]) as b:
            cap = await b.spawn("counter", counter, 0)
            pa, pb, _ = await pair(a, b)
            pa.add_remote(cap.address, "b")
            await a.send(cap, ("add", 7))

            async def applied():
                return await b.state("counter") == 7
            await until(applied)

            async def acked():
                return bool((await a._rt.durable()).acked)
            await until(acked)  # the acknowledgement came back to A
            sent = dict((await a._rt.durable()).acked.items())
            # the same batch again, on a new connection with A's own key (a replay by a
            # man in the middle is impossible under TLS; this is the worst case)
            (chan, upto), = sent.items()
            from avm.wire import Batch
            from avm.wire.transport import Transport
            t = Transport(IA, config=CFG)
            link = await t.connect(IB.address, "127.0.0.1", pb.transport.port)
            frame = Batch(chan[0], chan[1], 1, (1, 0), 0.0, ((cap, ("add", 7)),))
            await link.send(frame)

            async def refused():
                return pb.counts["duplicates"] >= 1
            await until(refused)
            assert await b.state("counter") == 7
            await t.close()
            await pa.close()
            await pb.close()
    run(go())
