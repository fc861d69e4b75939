"""What makes host-to-host delivery fast, and that it keeps the protocol's promises
(issue 8, bench/net.py): incremental sending, acks coalesced off the read loop and only
after the receiver's commit, retransmission on a new link, the peer retry timer as a
safety net, and the decoder's capability cache under the same limits."""

from __future__ import annotations

import asyncio
import threading

import pytest
from examples.counter import counter

import avm.host
from avm.core import codec
from avm.core.caps import Capability
from avm.core.codec import DecodeError
from avm.core.delivery import PEER_RETRY_FACTOR, add_peer_host, add_remote, retry, send_batch
from avm.core.network import Network
from avm.host.peering import Peering
from avm.wire.transport import TransportConfig
from test_wire_hosts import IA, IB, pair, run, until


def _blocking_commits(host) -> threading.Event:
    """Hold ``host``'s commits inside their transaction until the event is set."""
    gate = threading.Event()

    def fault(where: str) -> None:
        if where == "rows":
            gate.wait(30)
    host._rt.store.fault = fault
    return gate


def test_sending_is_incremental_and_each_batch_goes_out_once(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "a.avm", behaviors=[counter]) as a, \
                avm.host.open(tmp_path / "b.avm", behaviors=[counter]) as b:
            cap = await b.spawn("counter", counter, 0)
            pa, pb, _ = await pair(a, b)
            pa.add_remote(cap.address, "b")
            await asyncio.gather(*(a.submit([(cap, ("add", 1))] * 3) for _ in range(200)))

            async def done():
                return (await b.state("counter") == 600
                        and not (await a._rt.durable()).outbox)
            await until(done)
            # one link, scanned in full once (when it came up); every batch after that
            # was sent from what the steps made, exactly once
            assert pa.counts["full_scans"] == 1
            assert pa.counts["sent"] == 200
            assert pa.counts["resent"] == 0
            assert pb.counts["received"] == 200 and pb.counts["duplicates"] == 0
            assert pa.counts["writes"] <= pa.counts["sent"]
            await pa.close()
            await pb.close()
    run(go())


def test_acks_wait_for_the_commit_but_reading_does_not(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "a.avm", behaviors=[counter]) as a, \
                avm.host.open(tmp_path / "b.avm", behaviors=[counter]) as b:
            cap = await b.spawn("counter", counter, 0)
            pa, pb, _ = await pair(a, b)
            pa.add_remote(cap.address, "b")
            gate = _blocking_commits(b)
            try:
                for _ in range(40):
                    await a.send(cap, ("add", 1))

                async def all_read():
                    return pb.counts["received"] == 40
                # B's commit is stuck, yet its link goes on reading and applying ...
                await until(all_read)
                await asyncio.sleep(0.05)
                # ... and acks nothing: nothing it holds is committed
                assert pb.counts["acks_sent"] == 0
                assert len((await a._rt.durable()).outbox) == 40
            finally:
                gate.set()

            async def acked():
                return not (await a._rt.durable()).outbox
            await until(acked)
            assert await b.state("counter") == 40
            # acks of a commit go out together: fewer than one per batch
            assert 1 <= pb.counts["acks_sent"] < 40
            await pa.close()
            await pb.close()
    run(go())


def test_a_new_link_is_sent_what_was_not_acked_and_nothing_applies_twice(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "a.avm", behaviors=[counter]) as a, \
                avm.host.open(tmp_path / "b.avm", behaviors=[counter]) as b:
            cap = await b.spawn("counter", counter, 0)
            pa, pb, _ = await pair(a, b)
            pa.add_remote(cap.address, "b")
            gate = _blocking_commits(b)
            for _ in range(10):
                await a.send(cap, ("add", 1))

            async def all_read():
                return pb.counts["received"] == 10
            await until(all_read)
            # the link breaks before any ack: A reconnects and sends the ten again
            for links in list(pb.transport.links.values()):
                for link in list(links):
                    link._shut()
            gate.set()

            async def rescanned():
                return pa.counts["full_scans"] >= 2 and not (await a._rt.durable()).outbox
            await until(rescanned)
            assert pa.counts["resent"] == 0  # a new link starts with nothing sent on it
            assert pa.counts["sent"] >= 20
            await until(lambda: _is(b.state("counter"), 10))
            await asyncio.sleep(0.1)
            assert await b.state("counter") == 10  # the copies applied nothing
            assert pb.counts["duplicates"] + pb.counts["received"] >= 20
            await pa.close()
            await pb.close()
    run(go())


async def _is(aw, want) -> bool:
    return await aw == want


def _peer_net() -> tuple[Network, bytes]:
    from avm import Sim

    sim = Sim(seed=1)
    sim.spawn("c", counter, 0)
    net = sim.net
    net = add_peer_host(net, "~b", bytes(32))
    far = bytes([7]) * 32
    return add_remote(net, far, "~b"), far


def test_the_peer_retry_timer_is_a_safety_net_not_a_doubling_retransmit():
    net, far = _peer_net()
    cfg = net.config
    host = sorted(net.hosts)[0]
    net2, evs = send_batch(net, ("client", "x"), far, (), host, 1.0)
    (key,) = [k for k in net2.outbox if k[0] == (("client", "x"), far)]
    _, retry_at, attempts = net2.outbox[key]
    every = cfg.retry_ticks_max * PEER_RETRY_FACTOR
    assert retry_at == net2.now + every and attempts == 1
    # handed to the shell at once: nothing waits on the model's wire for a down host
    assert [e.what for e in evs if type(e).__name__ == "Wire"] == ["lost-host-down"]
    assert len(net2.wire) == len(net.wire)
    net3, evs = retry(net2, key)
    _, retry_at, attempts = net3.outbox[key]
    assert retry_at == net3.now + every and attempts == 1 + PEER_RETRY_FACTOR
    assert [e.what for e in evs] == ["lost-host-down"]


def test_a_simulated_host_keeps_the_doubling_retry():
    from avm import Sim

    sim = Sim(seed=2)
    sim.add_host("h1")
    sim.spawn("c", counter, 0, host="h1")
    net = sim.net
    cap = sim.cap("c", "main")
    src = sorted(h for h in net.hosts if h != "h1")[0]
    net2, _ = send_batch(net, ("client", "x"), cap.address, ((cap, ("add", 1)),), src, 1.0)
    key = next(k for k in net2.outbox if k[0] == (("client", "x"), cap.address))
    assert net2.outbox[key][1] == net2.now + net.config.retry_ticks


# -- the decoder's capability cache -------------------------------------------------


def _cap() -> Capability:
    return Capability(bytes(range(32)), 3, 0, 0.5, b"\x01" * 40)


def test_a_cached_capability_decodes_to_an_equal_value_with_the_same_bytes():
    cap = _cap()
    data = codec.encode(((cap, 1), (cap, 2)))
    first = codec.decode(data)
    again = codec.decode(data)
    assert codec.encode(first) == data and codec.encode(again) == data
    assert type(again[0][0]) is Capability


def test_a_non_canonical_form_of_a_cached_capability_is_still_refused():
    cap = _cap()
    data = codec.encode(cap)
    codec.decode(data)  # now cached
    # the key version 3 written with a one-byte argument (0x18 0x03): not the shortest
    i = 3 + 1 + 2 + 32  # after the tag, the array head and the address
    assert data[i:i + 2] == bytes([0x03, 0x00])  # the key version, then the kind
    bad = data[:i] + b"\x18\x03" + data[i + 1:]
    with pytest.raises(DecodeError):
        codec.decode(bad)


def test_the_limits_hold_for_a_cached_capability():
    cap = _cap()
    data = codec.encode(cap)
    codec.decode(data)  # cached
    with pytest.raises(DecodeError, match="items"):
        codec.decode(data, codec.Limits(items_max=3))
    with pytest.raises(DecodeError, match="deeper"):
        codec.decode(codec.encode(((cap,),)), codec.Limits(depth_max=2))


def test_decoding_refuses_a_tagged_value_that_encodes_differently():
    # a fraction must be in lowest terms: 2/4 is not the canonical form of 1/2
    bad = bytes([0xD8, 30, 0x82, 0x02, 0x04])
    with pytest.raises(DecodeError):
        codec.decode(bad)


@pytest.mark.parametrize("seed", range(3))
def test_peer_hosts_deliver_with_the_ordinary_transport_config(tmp_path, seed):
    # the speed paths under the default config (window, rate limit): same outcome
    async def go():
        cfg = TransportConfig(handshake_seconds=2, idle_seconds=10)
        async with avm.host.open(tmp_path / "a.avm", behaviors=[counter]) as a, \
                avm.host.open(tmp_path / "b.avm", behaviors=[counter]) as b:
            cap = await b.spawn("counter", counter, 0)
            pa, pb = Peering(a._rt, IA, cfg), Peering(b._rt, IB, cfg)
            port = await pb.listen()
            pb.add_peer("a", IA.address)
            pa.add_peer("b", IB.address, ("127.0.0.1", port))
            pa.add_remote(cap.address, "b")
            n = 50 + 25 * seed
            await asyncio.gather(*(a.submit([(cap, ("add", k))]) for k in range(n)))
            await until(lambda: _is(b.state("counter"), sum(range(n))))
            await pa.close()
            await pb.close()
    run(go())



def test_a_host_whose_commit_failed_closes_its_links_and_leaves_no_failed_task(tmp_path):
    import gc

    async def go():
        seen: list = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
        async with avm.host.open(tmp_path / "a.avm", behaviors=[counter]) as a, \
                avm.host.open(tmp_path / "b.avm", behaviors=[counter]) as b:
            cap = await b.spawn("counter", counter, 0)
            pa, pb, _ = await pair(a, b)
            pa.add_remote(cap.address, "b")
            await a.send(cap, ("add", 1))
            await until(lambda: _is(b.state("counter"), 1))

            def fail(where: str) -> None:
                if where == "rows":
                    raise OSError("simulated disk failure")
            b._rt.store.fault = fail
            await a.send(cap, ("add", 1))

            async def b_stopped():
                return b._rt.failed is not None or b._rt.committer.failed is not None
            await until(b_stopped)
            for _ in range(3):
                await a.send(cap, ("add", 1))
            await asyncio.sleep(0.3)
            assert len((await a._rt.durable()).outbox) >= 3  # nothing acked past the failure
            await pa.close()
            await pb.close()
        gc.collect()
        await asyncio.sleep(0)
        assert not [c for c in seen if "never retrieved" in str(c.get("message", ""))], seen
    run(go())
