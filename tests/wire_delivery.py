"""A small sender and receiver that run the delivery protocol over wire links (tests only).

The sender keeps an outbox of numbered batches on one channel until they are acked,
sends new ones as the window allows, retransmits what is unacked when no ack came for
``retry_seconds``, answers gap requests, and reconnects (through ``connect``) when its
link dies or its hello does not come. The receiver "commits" each batch handed out (a
dict standing for the store) and acks only then; duplicates are acked again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable

from avm.core import codec
from avm.core.caps import IdentityKey, SealingKey, address_of, seal_context
from avm.wire import (
    Acked,
    Batch,
    BatchHeld,
    BatchReceived,
    DuplicateBatch,
    GapRequest,
    GapRequested,
    WireError,
)
from avm.wire.transport import Link


def ident(seed: bytes) -> tuple[bytes, bytes]:
    r = IdentityKey.from_seed(seed).resource((("host", seed.decode()),))
    return address_of(r), codec.encode(r)


M1 = ident(b"m1")[0]
M2 = ident(b"m2")[0]
CAP = seal_context(M2, SealingKey.from_seed(b"k" * 32), ("method", 1))


def batches(n: int, size: int = 1) -> dict[int, Batch]:
    return {s: Batch(M1, M2, s, (1_700_000_000_000 + s, 0), 0.0,
                     tuple((CAP, ("m", s, i, b"x" * 16)) for i in range(size)))
            for s in range(1, n + 1)}


class Receiver:
    def __init__(self) -> None:
        self.store: dict[tuple, int] = {}
        self.applied: list[Batch] = []
        self.counts: Counter = Counter()
        self.links: list[Link] = []

    def committed_seq(self, chan: tuple) -> int:
        return self.store.get(chan, 0)

    async def handler(self, link: Link, events: list) -> None:
        for e in events:
            if isinstance(e, BatchReceived):
                b = e.batch
                self.applied.append(b)  # the commit ...
                self.store[b.channel] = b.seq
                await link.ack(b.sender, b.receiver, b.seq)  # ... then the ack
            elif isinstance(e, DuplicateBatch):
                self.counts["duplicates"] += 1
                # acked again at once: its number is committed (as of now, which may be
                # past the event's ``committed`` if batches after it were acked since)
                await link.ack(e.channel[0], e.channel[1], link.conn.committed(e.channel))
            elif isinstance(e, BatchHeld):
                self.counts["held"] += 1
                with contextlib.suppress(WireError):
                    await link.send(GapRequest(e.channel[0], e.channel[1], e.first, e.last))


class Sender:
    def __init__(self, outbox: dict[int, Batch], connect: Callable[[Sender], Awaitable[Link]],
                 retry_seconds: float = 0.05, hello_seconds: float = 1.0) -> None:
        self.outbox = outbox
        self.connect = connect
        self.retry_seconds = retry_seconds
        self.hello_seconds = hello_seconds
        self.acked = 0
        self.progress = asyncio.Event()
        self.counts: Counter = Counter()
        self.errors: list[WireError | None] = []
        self._gaps: list[tuple[int, int]] = []

    async def handler(self, link: Link, events: list) -> None:
        for e in events:
            if isinstance(e, Acked) and e.upto > self.acked:
                self.acked = e.upto
                self.progress.set()
            elif isinstance(e, GapRequested):
                self._gaps.append((e.first, e.last))
                self.progress.set()

    async def run(self) -> None:
        n = len(self.outbox)
        while self.acked < n:
            try:
                link = await self.connect(self)
            except (OSError, WireError):
                self.counts["connect-failed"] += 1
                await asyncio.sleep(self.retry_seconds)
                continue
            self.counts["links"] += 1
            try:
                await asyncio.wait_for(link.opened.wait(), self.hello_seconds)
            except TimeoutError:
                self.counts["no-hello"] += 1
                await link.close("timeout", "no hello")
                continue
            try:
                await self._pump(link, n)
            except (WireError, ConnectionError, OSError):
                self.counts["link-failed"] += 1
            self.errors.append(link.error)
            await link.close()

    async def _pump(self, link: Link, n: int) -> None:
        nxt = self.acked + 1
        while self.acked < n and not link.closed.is_set():
            nxt = max(nxt, self.acked + 1)
            while nxt <= n and link.conn.can_send():
                await link.send(self.outbox[nxt])
                nxt += 1
            while self._gaps:
                first, last = self._gaps.pop(0)
                for s in range(max(first, self.acked + 1), min(last, nxt - 1) + 1):
                    await link.send(self.outbox[s])
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), self.retry_seconds)
            except TimeoutError:
                if link.closed.is_set():
                    return
                self.counts["retransmit"] += 1
                for s in range(self.acked + 1, nxt):
                    await link.send(self.outbox[s])
