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


def test_forged_and_tampered_capabilities_over_the_wire_apply_nothing(tmp_path):
    """P7 across hosts: capabilities changed on their way (sealed bytes, priority, key
    version, kind) reach B's machine as batches that fail to unseal; none applies.
    A true capability sent last on the same channel applies exactly once."""
    import random

    from avm.core.caps import Capability

    async def go():
        async with avm.host.open(tmp_path / "a.avm", behaviors=[counter]) as a, \
                avm.host.open(tmp_path / "b.avm", behaviors=[counter]) as b:
            cap = await b.spawn("counter", counter, 0)
            other = b.cap("counter", ("another", "context"))
            pa, pb, _ = await pair(a, b)
            pa.add_remote(cap.address, "b")
            rnd = random.Random(5)
            n = 300
            for i in range(n):
                sealed = bytearray(cap.sealed)
                keyver, kind, prio = cap.keyver, cap.kind, cap.priority
                how = i % 5
                if how == 0:
                    j = rnd.randrange(len(sealed))
                    sealed[j] ^= 1 << rnd.randrange(8)
                elif how == 1:
                    prio = rnd.choice([0.25, 0.5, 1.0, -1.0])  # priority is authenticated
                elif how == 2:
                    keyver += 1 + rnd.randrange(3)
                elif how == 3:
                    sealed = bytearray(other.sealed[:len(sealed)] + bytes(rnd.randrange(1, 4)))
                else:
                    cut = rnd.randrange(16, len(sealed))  # the shortest a sealed context may be
                    sealed = sealed[:cut] + bytes(rnd.randrange(1, 17))
                forged = Capability(cap.address, keyver, kind, prio, bytes(sealed))
                assert forged != cap
                await a.send(forged, ("add", 1))
            await a.send(cap, ("add", 1))

            async def done():
                return (not (await a._rt.durable()).outbox
                        and (await b._rt.durable()).received.get((("client", "client"), cap.address)) == n + 1)
            await until(done, timeout=60)
            await b.idle()
            assert await b.state("counter") == 1  # 0 of 300 forgeries applied
            stats = b.stats()
            assert stats["drop.unseal"] == n, stats  # each forgery dropped as failing to unseal
            await pa.close()
            await pb.close()
    run(go())
