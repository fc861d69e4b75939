"""The TLS transport (issue 8, item 2), on 127.0.0.1 only.

* mutual authentication pinned to addresses: a wrong key establishes 0 sessions, on
  either side, and so does a certificate whose key is not its identity's;
* silent connections are closed on time (TCP only, TLS without a hello, and a peer
  that stops answering), with short configured time-outs, waiting on conditions;
* a flood from one peer does not starve another;
* per-peer connection caps, reconnection with back-off, back-pressure;
* delivery through TLS under the fault proxy's raw faults (corruption included) is
  exactly once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import pytest

from avm.core.caps import IdentityKey
from avm.wire import Batch, BatchReceived, IdentityMismatch, Ping, PongReceived
from avm.wire.faults import FaultProxy, FaultSpec
from avm.wire.transport import (
    NULL_ISSUER_PEM,
    HostIdentity,
    Link,
    Transport,
    TransportConfig,
    TransportError,
    check_peer_certificate,
)
from wire_delivery import M1, M2, Receiver, Sender, batches

FAST = TransportConfig(handshake_seconds=0.5, idle_seconds=0.6, ping_seconds=0.15,
                       reconnect_min_seconds=0.02, reconnect_max_seconds=0.2)

A = HostIdentity(IdentityKey.from_seed(b"transport-a"), (("host", "a"),))
B = HostIdentity(IdentityKey.from_seed(b"transport-b"), (("host", "b"),))
C = HostIdentity(IdentityKey.from_seed(b"transport-c"), (("host", "c"),))


async def until(cond, timeout: float = 5.0, what: str = "condition") -> None:
    """Wait for ``cond()`` to hold, checking often; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_two_hosts_open_a_session_and_deliver():
    async def main():
        receiver = Receiver()
        tb = Transport(B, receiver.handler, FAST, lambda peer, chan: receiver.committed_seq(chan))
        port = await tb.listen()
        sender = Sender(batches(30), None)  # type: ignore[arg-type]
        ta = Transport(A, sender.handler, FAST)
        sender.connect = lambda s: ta.connect(B.address, "127.0.0.1", port)
        await asyncio.wait_for(sender.run(), 10)
        assert [b.seq for b in receiver.applied] == list(range(1, 31))
        assert ta.counts["sessions-established"] == 1
        await until(lambda: tb.counts["sessions-established"] == 1)
        (link,) = tb.links[A.address]
        assert link.peer == A.address  # the accepting side learned who dialed, from the pin
        ssl_obj = link.writer.get_extra_info("ssl_object")
        assert ssl_obj.version() == "TLSv1.3"
        await ta.close()
        await tb.close()
    run(main())


def test_a_wrong_key_establishes_no_session_either_way():
    async def main():
        tb = Transport(B, config=FAST)
        port = await tb.listen()
        ta = Transport(A, config=FAST)
        # A dials B's port expecting C: B's certificate is B's key, not C's
        with pytest.raises(TransportError, match="wrong peer"):
            await ta.connect(C.address, "127.0.0.1", port)
        assert ta.counts["auth-failed"] == 1
        # a client whose certificate's key is not its identity's key: B refuses it
        liar = HostIdentity(IdentityKey.from_seed(b"liar"))
        liar.resource_bytes = A.resource_bytes  # claims A's identity, holds another key
        liar.address = A.address
        tl = Transport(liar, config=FAST)
        with pytest.raises(TransportError):
            await tl.connect(B.address, "127.0.0.1", port)
        await until(lambda: tb.counts["auth-failed"] >= 1, what="B refusing the liar")
        # a client with no certificate at all: the TLS handshake fails
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cadata=NULL_ISSUER_PEM)
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="avm")
            await asyncio.wait_for(r.read(10), 2)  # TLS 1.3: the refusal comes after
            w.close()
        except (TimeoutError, ssl.SSLError, ConnectionError):
            pass
        await until(lambda: tb.counts["handshake-failed"] >= 1, what="B refusing no cert")
        assert ta.counts["sessions-established"] == tl.counts["sessions-established"] == 0
        assert tb.counts["sessions-established"] == 0
        assert tb.links == {}
        for t in (ta, tb, tl):
            await t.close()
    run(main())


def test_pin_check_on_certificates():
    der = ssl.PEM_cert_to_DER_cert(A.certificate_pem()[0].decode())
    assert check_peer_certificate(der) == (A.address, A.resource_bytes)
    assert check_peer_certificate(der, A.address)[0] == A.address
    with pytest.raises(IdentityMismatch, match="not"):
        check_peer_certificate(der, B.address)
    with pytest.raises(IdentityMismatch):
        check_peer_certificate(None)
    with pytest.raises(IdentityMismatch):
        check_peer_certificate(b"\x30\x03garbage")
    issuer = ssl.PEM_cert_to_DER_cert(NULL_ISSUER_PEM)
    with pytest.raises(IdentityMismatch, match="no identity"):
        check_peer_certificate(issuer)  # the null issuer is nobody
    ed448 = HostIdentity(IdentityKey.from_seed(b"e448", "ed448"))
    der448 = ssl.PEM_cert_to_DER_cert(ed448.certificate_pem()[0].decode())
    assert check_peer_certificate(der448, ed448.address)[0] == ed448.address


def test_silent_connections_are_closed_on_time():
    async def main():
        tb = Transport(B, config=FAST)
        port = await tb.listen()
        # 1. TCP only, never a TLS hello
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(r.read(), 5) == b""  # the server hung up
        took = time.monotonic() - t0
        assert FAST.handshake_seconds * 0.8 <= took < FAST.handshake_seconds + 1.5
        w.close()
        # 2. TLS done, but no session hello
        ctx = A.ssl_context(server=False)
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="avm")
        with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
            while True:  # B's hello arrives, then the end when B gives up on ours
                if not await asyncio.wait_for(r.read(1000), 5):
                    raise ConnectionError("closed")
        assert time.monotonic() - t0 < FAST.handshake_seconds + 1.5
        await until(lambda: tb.counts["handshake-timeout"] == 1, what="hello time-out")
        w.close()
        # 3. an open session whose peer stops talking (no pongs, nothing): idle close
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="avm")
        from avm.wire import Connection
        conn = Connection(A.address, A.resource_bytes, peer_address=B.address)
        w.write(conn.hello())
        await until(lambda: tb.counts["sessions-established"] == 1, what="the session")
        t0 = time.monotonic()
        await until(lambda: tb.counts["idle-closed"] == 1, timeout=5, what="idle close")
        assert time.monotonic() - t0 < FAST.idle_seconds + 1.0
        w.close()
        await tb.close()
    run(main())


def test_a_live_but_quiet_peer_is_pinged_not_closed():
    async def main():
        tb = Transport(B, config=FAST)
        port = await tb.listen()
        ta = Transport(A, config=FAST)
        link = await ta.connect(B.address, "127.0.0.1", port)
        await asyncio.sleep(FAST.idle_seconds * 2.5)  # quiet on purpose: pings keep it
        assert not link.closed.is_set()
        assert tb.counts["idle-closed"] == ta.counts["idle-closed"] == 0
        await ta.close()
        await tb.close()
    run(main())


def test_per_peer_connection_cap():
    async def main():
        cfg = TransportConfig(handshake_seconds=1.0, idle_seconds=5, connections_per_peer_max=2)
        tb = Transport(B, config=cfg)
        port = await tb.listen()
        ta = Transport(A, config=cfg)
        links = [await ta.connect(B.address, "127.0.0.1", port) for _ in range(2)]
        with pytest.raises(TransportError):
            await ta.connect(B.address, "127.0.0.1", port)
        await until(lambda: tb.counts["refused-peer-cap"] == 1)
        assert len(tb.links[A.address]) == 2
        await links[0].close()
        await until(lambda: len(tb.links.get(A.address, ())) == 1, what="B forgetting the link")
        await ta.connect(B.address, "127.0.0.1", port)  # room again
        await ta.close()
        await tb.close()
    run(main())


def test_reconnect_with_back_off():
    async def main():
        ta = Transport(A, config=FAST)
        tb = Transport(B, config=FAST)
        port = await tb.listen()
        await tb.close()  # nobody listens there now
        dialer = ta.dialer(B.address, "127.0.0.1", port)
        task = asyncio.ensure_future(dialer.link())
        await until(lambda: len(dialer.delays) >= 5, what="five failed attempts")
        d = dialer.delays
        # doubling (with jitter in [0.5, 1]) up to the cap
        assert all(FAST.reconnect_min_seconds * 0.5 <= x <= FAST.reconnect_max_seconds for x in d)
        assert max(d[3:]) > min(d[:2])
        tb2 = Transport(B, config=FAST)
        await tb2.listen(port=port)
        link = await asyncio.wait_for(task, 5)
        assert link.peer == B.address and not link.closed.is_set()
        await ta.close()
        await tb2.close()
    run(main())


def test_back_pressure_window_waits_for_acks():
    async def main():
        cfg = TransportConfig(handshake_seconds=1, idle_seconds=5, window=4)
        release = asyncio.Event()
        got: list[int] = []

        async def slow(link: Link, events: list) -> None:
            for e in events:
                if isinstance(e, BatchReceived):
                    got.append(e.batch.seq)
                    await release.wait()  # the commit is slow
                    await link.ack(e.batch.sender, e.batch.receiver, e.batch.seq)
        tb = Transport(B, slow, cfg)
        port = await tb.listen()
        ta = Transport(A, config=cfg)
        link = await ta.connect(B.address, "127.0.0.1", port)
        out = batches(10)
        for s in range(1, 5):
            await link.send(out[s])
        assert not link.conn.can_send()
        waiter = asyncio.ensure_future(link.wait_for_room())
        await asyncio.sleep(0.1)
        assert not waiter.done()  # no ack yet: the sender waits
        release.set()
        await asyncio.wait_for(waiter, 5)
        assert link.conn.can_send()
        await ta.close()
        await tb.close()
    run(main())


def test_a_flood_from_one_peer_does_not_starve_another():
    async def main():
        cfg = TransportConfig(handshake_seconds=2, idle_seconds=10, frames_per_second_max=300)
        tb = Transport(B, config=cfg)
        port = await tb.listen()
        flooder = Transport(A, config=cfg)
        polite_pongs: list[float] = []

        async def on_pong(link: Link, events: list) -> None:
            polite_pongs.extend(time.monotonic() for e in events if isinstance(e, PongReceived))
        polite = Transport(C, on_pong, cfg)
        fl = await flooder.connect(B.address, "127.0.0.1", port)
        pl = await polite.connect(B.address, "127.0.0.1", port)
        # The flood: the same batch frame again and again (duplicates cost the receiver
        # work but no window), written as fast as the socket takes it.
        frame = fl.conn.send(batches(1)[1])
        chunk = frame * 200
        sent = 0
        stop = asyncio.Event()

        async def flood() -> None:
            nonlocal sent
            while not stop.is_set() and not fl.closed.is_set():
                fl.writer.write(chunk)
                await fl.writer.drain()
                sent += 200
        fl.writer.transport.set_write_buffer_limits(high=64 * 1024)  # the flooder shares our loop
        task = asyncio.ensure_future(flood())
        await until(lambda: sent > 5_000, what="the flood to start")
        t0 = time.monotonic()
        for i in range(1, 21):  # twenty round trips for the polite peer, during the flood
            await pl.send(Ping(i))
            await until(lambda i=i: len(polite_pongs) >= i, timeout=5, what=f"pong {i}")
        took = time.monotonic() - t0
        flooding = not task.done()
        stop.set()
        fl.writer.transport.abort()  # do not wait for the flood's buffers to drain
        with contextlib.suppress(Exception):
            await task
        assert flooding, "the flood had stopped before the polite peer finished"
        assert took < 15  # generous: the machine is shared; starvation would never finish
        assert tb.counts["rate-limited"] > 0  # the flooder was slowed, not the polite one
        for t in (flooder, polite, tb):
            await t.close()
    run(main())


@pytest.mark.parametrize("spec", [
    FaultSpec(seed=12, corrupt=0.15),
    FaultSpec(seed=12, truncate=0.15, delay_seconds=(0, 0.002)),
    FaultSpec(seed=13, duplicate=0.1, reorder=0.1, drop=0.05),
], ids=["corrupt", "truncate+delay", "dup+reorder+drop"])
def test_tls_under_raw_faults_delivers_exactly_once_in_order(spec):
    # Under TLS any damage to the bytes is a failed record: the link ends on a typed
    # error, the sender reconnects and retransmits, and nothing corrupted is applied.
    async def main():
        receiver = Receiver()
        cfg = TransportConfig(handshake_seconds=1.0, idle_seconds=3, window=16)
        tb = Transport(B, receiver.handler, cfg, lambda peer, chan: receiver.committed_seq(chan))
        port = await tb.listen()
        proxy = await FaultProxy("127.0.0.1", port, spec).start()
        sender = Sender(batches(40), None)  # type: ignore[arg-type]
        ta = Transport(A, sender.handler, cfg)
        sender.connect = lambda s: ta.connect(B.address, "127.0.0.1", proxy.port)
        await asyncio.wait_for(sender.run(), 25)
        want = batches(40)
        assert [b.seq for b in receiver.applied] == list(range(1, 41))
        assert all(b == want[b.seq] for b in receiver.applied)
        fired = {k for k in ("corrupt", "truncate", "duplicate", "reorder", "drop") if proxy.counts[k]}
        assert fired, "no fault fired"
        await proxy.close()
        await ta.close()
        await tb.close()
        return sender
    sender = run(main())
    assert sender.counts["links"] >= 1


def test_batches_are_channel_frames_the_receiver_can_check():
    # the batch the sender means is the batch the receiver is handed: same sender,
    # receiver, number and messages (the end-to-end check the tests above rely on)
    b = batches(1)[1]
    assert isinstance(b, Batch) and b.channel == (M1, M2)
