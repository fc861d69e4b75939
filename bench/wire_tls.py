"""Wire sessions over TLS beside a raw TLS socket: handshake time and messages per second.

    python bench/wire_tls.py                     # defaults: 50 handshakes, 20,000 batches
    python bench/wire_tls.py --batches 5000 --size 1

Two hosts in one process on 127.0.0.1 (one event loop: both ends share one core, so the
figures are a floor for two processes):

* **handshake**: ``Transport.connect`` (TCP, TLS 1.3 with Ed25519 certificates, the pin
  check, both hellos) beside a bare TLS 1.3 connect with the same certificates;
* **messages/s**: batches of ``--size`` messages over one link, the receiver acking each
  batch after it is handed out (no store: this measures the protocol and the transport,
  not durability), the sender keeping to the window; beside a raw TLS socket that carries
  the same bytes, length-prefixed, to a reader that only splits them into frames.

Prints each figure, the peer's, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from avm.core import codec  # noqa: E402
from avm.core.caps import IdentityKey, SealingKey, address_of, seal_context  # noqa: E402
from avm.wire import Acked, Batch, BatchReceived  # noqa: E402
from avm.wire.transport import HostIdentity, Link, Transport, TransportConfig  # noqa: E402


def _addr(seed: bytes) -> bytes:
    return address_of(IdentityKey.from_seed(seed).resource())


M1, M2 = _addr(b"m1"), _addr(b"m2")
CAP = seal_context(M2, SealingKey.from_seed(b"k" * 32), ("deposit", 1))


def make_batches(n: int, size: int) -> list[Batch]:
    return [Batch(M1, M2, s, (1_700_000_000_000 + s, 0), 0.0,
                  tuple((CAP, ("amount", s, i)) for i in range(size))) for s in range(1, n + 1)]


async def bench_handshakes(n: int) -> tuple[float, float]:
    a, b = HostIdentity.generate(), HostIdentity.generate()
    tb = Transport(b, config=TransportConfig())
    port = await tb.listen()
    ta = Transport(a, config=TransportConfig())
    wire: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        link = await ta.connect(b.address, "127.0.0.1", port)
        wire.append(time.perf_counter() - t0)
        await link.close()
        await link.wait_closed()
    await ta.close()
    await tb.close()
    # bare TLS with the same contexts
    sctx, cctx = b.ssl_context(server=True), a.ssl_context(server=False)

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()
        w.close()
    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=sctx)
    port = server.sockets[0].getsockname()[1]
    raw: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=cctx, server_hostname="avm")
        raw.append(time.perf_counter() - t0)
        w.close()
    server.close()
    return statistics.median(wire), statistics.median(raw)


async def bench_session(batches: list[Batch]) -> float:
    a, b = HostIdentity.generate(), HostIdentity.generate()
    done = asyncio.Event()
    n = len(batches)
    acked = 0

    async def on_receive(link: Link, events: list) -> None:
        last = None
        for e in events:
            if isinstance(e, BatchReceived):
                last = e.batch
        if last is not None:  # one cumulative ack per read, after the "commit"
            await link.ack(last.sender, last.receiver, last.seq)

    async def on_ack(link: Link, events: list) -> None:
        nonlocal acked
        for e in events:
            if isinstance(e, Acked):
                acked = max(acked, e.upto)
                if acked == n:
                    done.set()
    cfg = TransportConfig(frames_per_second_max=10_000_000)
    tb = Transport(b, on_receive, cfg)
    port = await tb.listen()
    ta = Transport(a, on_ack, cfg)
    link = await ta.connect(b.address, "127.0.0.1", port)
    t0 = time.perf_counter()
    for batch in batches:
        if not link.conn.can_send():
            await link.wait_for_room()
        await link.send(batch)
    await done.wait()
    dt = time.perf_counter() - t0
    await ta.close()
    await tb.close()
    return dt


async def bench_raw(frames: list[bytes]) -> float:
    a, b = HostIdentity.generate(), HostIdentity.generate()
    total = len(frames)
    done = asyncio.Event()

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got = 0
        buf = b""
        while got < total:
            data = await r.read(65536)
            if not data:
                break
            buf += data
            pos = 0
            while len(buf) - pos >= 4:
                (k,) = struct.unpack_from(">I", buf, pos)
                if len(buf) - pos - 4 < k:
                    break
                pos += 4 + k
                got += 1
            buf = buf[pos:]
        done.set()
        w.close()
    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=b.ssl_context(server=True))
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=a.ssl_context(server=False),
                                         server_hostname="avm")
    t0 = time.perf_counter()
    for f in frames:
        w.write(f)
        await w.drain()
    await done.wait()
    dt = time.perf_counter() - t0
    w.close()
    server.close()
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--handshakes", type=int, default=50)
    ap.add_argument("--batches", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=10, help="messages per batch")
    args = ap.parse_args(argv)
    wire_hs, raw_hs = asyncio.run(bench_handshakes(args.handshakes))
    print(f"handshake (median of {args.handshakes}): wire session {wire_hs * 1e3:.2f} ms, "
          f"bare TLS 1.3 {raw_hs * 1e3:.2f} ms, ratio {wire_hs / raw_hs:.2f}")
    batches = make_batches(args.batches, args.size)
    dt = asyncio.run(bench_session(batches))
    from avm.wire import encode_frame
    frames = [encode_frame(b) for b in batches]
    raw = asyncio.run(bench_raw(frames))
    msgs = args.batches * args.size
    print(f"batches of {args.size} messages, {args.batches} batches, {len(frames[0])} bytes a frame")
    print(f"  wire session over TLS: {msgs / dt:,.0f} messages/s ({args.batches / dt:,.0f} batches/s)")
    print(f"  raw TLS socket, same bytes, frames split only: {msgs / raw:,.0f} messages/s")
    print(f"  ratio session / raw: {raw / dt:.3f}")
    _ = codec
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
