"""The fault proxy (issue 8, item 6): each fault kind fires, and the protocol recovers
(exactly once, in order) or stops on a typed error -- never anything else.

These runs use plain TCP streams with the proxy cutting whole frames (``frames=True``),
so that the session's own recovery (sequence numbers, duplicates, gaps, retransmission)
is what is tested; tests/test_wire_transport.py runs the same through TLS.
"""

from __future__ import annotations

import asyncio

import pytest

from avm.wire import Connection, WireError
from avm.wire.faults import FAULT_KINDS, FaultProxy, FaultSpec, parse_spec
from avm.wire.transport import Link, TransportConfig
from wire_delivery import Receiver, Sender, batches, ident

HA, RA = ident(b"host-a")
HB, RB = ident(b"host-b")
CONFIG = TransportConfig(handshake_seconds=2.0, idle_seconds=5.0)


async def serve_plain(receiver: Receiver) -> asyncio.AbstractServer:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(HB, RB, peer_address=HA, committed_seq=receiver.committed_seq, window=16)
        link = Link(reader, writer, conn, receiver.handler, CONFIG, receiver.counts)
        receiver.links.append(link)
        link.start()
    return await asyncio.start_server(accept, "127.0.0.1", 0)


def plain_connect(port: int):
    async def connect(sender: Sender) -> Link:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        link = Link(reader, writer, Connection(HA, RA, peer_address=HB, window=16),
                    sender.handler, CONFIG, sender.counts)
        link.start()
        return link
    return connect


async def deliver_through(spec: FaultSpec, n: int = 60, partition_at: int | None = None,
                          timeout: float = 30.0) -> tuple[Receiver, Sender, FaultProxy]:
    receiver = Receiver()
    server = await serve_plain(receiver)
    port = server.sockets[0].getsockname()[1]
    proxy = await FaultProxy("127.0.0.1", port, spec).start()
    sender = Sender(batches(n), plain_connect(proxy.port))
    task = asyncio.ensure_future(sender.run())
    try:
        if partition_at is not None:
            while sender.acked < partition_at:  # wait on the condition, not on luck
                await asyncio.wait_for(sender.progress.wait(), timeout)
                await asyncio.sleep(0)
            proxy.partition(0.3)
        await asyncio.wait_for(task, timeout)
    finally:
        task.cancel()
        await proxy.close()
        server.close()
        for link in receiver.links:
            await link.close()
    return receiver, sender, proxy


def exactly_once_in_order(receiver: Receiver, n: int) -> None:
    assert [b.seq for b in receiver.applied] == list(range(1, n + 1))
    want = batches(n)
    assert all(b == want[b.seq] for b in receiver.applied)


@pytest.mark.parametrize("kind, spec", [
    ("delay", FaultSpec(seed=1, frames=True, delay_seconds=(0.0, 0.003))),
    ("drop", FaultSpec(seed=2, frames=True, drop=0.08)),
    ("duplicate", FaultSpec(seed=3, frames=True, duplicate=0.15)),
    ("reorder", FaultSpec(seed=4, frames=True, reorder=0.15)),
    ("truncate", FaultSpec(seed=5, frames=True, truncate=0.03)),
])
def test_each_fault_fires_and_delivery_recovers_exactly_once_in_order(kind, spec):
    receiver, sender, proxy = asyncio.run(deliver_through(spec))
    assert proxy.counts[kind] > 0, f"{kind} never fired"
    exactly_once_in_order(receiver, 60)
    # whatever stopped a link was a typed error or a cut stream, nothing else
    assert all(e is None or isinstance(e, WireError) for e in sender.errors)
    for link in receiver.links:
        assert link.error is None or isinstance(link.error, WireError)
    if kind in ("duplicate", "reorder", "drop"):
        # the session's recovery ran: duplicates refused, or early ones held
        assert receiver.counts["duplicates"] + receiver.counts["held"] > 0


def test_partition_cuts_everything_refuses_new_connections_and_heals():
    receiver, sender, proxy = asyncio.run(deliver_through(FaultSpec(seed=6, frames=True),
                                                          n=60, partition_at=10))
    assert proxy.counts["partition"] == 1
    assert proxy.counts["refused"] + sender.counts["connect-failed"] > 0
    assert sender.counts["links"] >= 2  # it reconnected after the heal
    exactly_once_in_order(receiver, 60)


def test_random_partitions_from_the_spec():
    spec = FaultSpec(seed=7, frames=True, partition=0.02, partition_seconds=0.05)
    receiver, sender, proxy = asyncio.run(deliver_through(spec, n=40))
    assert proxy.counts["partition"] > 0
    exactly_once_in_order(receiver, 40)


def test_corruption_on_a_plain_stream_is_refused_as_typed_errors_or_decodes():
    # Without TLS, a flipped bit may decode to another valid frame (docs/network.md says
    # so: integrity is the transport's). What must hold here is the invariant "decode or
    # typed error": every link ends on a WireError or cleanly, and the numbers still
    # apply exactly once in order (the sequence numbers themselves may be hit, and then
    # the frame is refused or held).
    spec = FaultSpec(seed=8, frames=True, corrupt=0.05)
    receiver, sender, proxy = asyncio.run(deliver_through(spec, n=60))
    assert proxy.counts["corrupt"] > 0
    errors = [link.error for link in receiver.links] + sender.errors
    assert all(e is None or isinstance(e, WireError) for e in errors)
    assert any(k.startswith("protocol-error:") for k in receiver.counts + sender.counts)
    seqs = [b.seq for b in receiver.applied]
    assert len(seqs) == len(set(seqs)), "a number applied twice"
    assert seqs == sorted(seqs)


def test_all_faults_at_once():
    spec = FaultSpec(seed=9, frames=True, delay_seconds=(0, 0.002), drop=0.03,
                     duplicate=0.05, reorder=0.05, truncate=0.01)
    receiver, sender, proxy = asyncio.run(deliver_through(spec, n=80))
    assert all(proxy.counts[k] > 0 for k in ("delay", "drop", "duplicate", "reorder"))
    exactly_once_in_order(receiver, 80)


def test_spec_text_and_its_checks():
    s = parse_spec("drop=0.1, delay=0.001-0.01, seed=4, frames, reorder=0.2")
    assert s == FaultSpec(seed=4, delay_seconds=(0.001, 0.01), drop=0.1, reorder=0.2, frames=True)
    with pytest.raises(ValueError, match="unknown fault"):
        parse_spec("explode=1")
    with pytest.raises(ValueError):
        FaultSpec(drop=1.5)
    assert set(FAULT_KINDS) == {"delay", "drop", "duplicate", "reorder", "truncate", "corrupt",
                                "partition"}
