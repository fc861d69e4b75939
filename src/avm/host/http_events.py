"""Live events of a host over Server-Sent Events: ``GET /events`` (the read token).

What a browser watching a host wants to see as it happens: batches applied (``batch``),
batches that failed with their rule and reason (``failure``), batches dropped
(``drop``), machines spawned, suspended, resumed, stopped, rebound or destroyed
(``machine``), operators' acts (``operator``), and every second the counters
(``counters``: the runtime's totals, and what ran in the interval per channel, which is
what the page's network picture and sparklines are drawn from).

**Only what is committed.** The runtime calls the feed with every step's events
(:attr:`avm.host.runtime.Runtime.subscribers`); the feed keeps them aside, waits for the
commit that holds them (:meth:`Runtime.durable`), and only then hands them to the
listeners, so a browser never shows a batch that a crash could take back.

**A slow listener never slows the host.** The feed runs only while someone listens (no
subscriber: the runtime's loop tests one empty list per step). Each listener has a
bounded queue (:data:`QUEUE_SIZE` events); what does not fit is counted, not queued, and
the listener is told how many it missed (``dropped``: ``{"dropped": n}``) before its
next events. Under a heavy load the feed lists at most :data:`BATCHES_PER_PUBLISH`
applied batches (and as many failures) per publication; the rest are counted in the
next ``counters`` event (``unlisted``), never queued without bound.

The events are JSON objects in SSE frames (``event: KIND``, ``id: N``, ``data: {...}``);
a comment line is sent every :data:`KEEPALIVE_SECONDS` so proxies keep the stream open.
Browsers read it with ``fetch`` and a stream reader (``EventSource`` cannot send the
``Authorization`` header the API expects).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse

from ..core.netvalue import events, who
from .api import Host
from .store import Dirty, StoreError

__all__ = ["Feed", "Listener", "add_event_routes", "QUEUE_SIZE", "BATCHES_PER_PUBLISH",
           "COUNTERS_SECONDS", "KEEPALIVE_SECONDS", "sse_frame"]

#: Events a listener may have waiting; past it they are counted as dropped.
QUEUE_SIZE = 2_000
#: Applied batches (and, separately, failures) listed per publication; the rest counted.
BATCHES_PER_PUBLISH = 200
#: How often the counters are sent.
COUNTERS_SECONDS = 1.0
#: Publications are at least this far apart (events in between go out together).
PUBLISH_GAP_SECONDS = 0.1
#: A comment line this often keeps idle streams open.
KEEPALIVE_SECONDS = 15.0
#: Channels listed per counters event (the busiest).
EDGES_MAX = 200
DETAIL_MAX = 500

# At module level: FastAPI resolves the (string) annotations of routes in their globals.
_Keepalive = Annotated[float, Query(gt=0, le=3600, description="Seconds between keep-alive "
                                    "comments when nothing happens.")]
_Limit = Annotated[int | None, Query(ge=1, description="End the stream after this many "
                                     "events (the first is always hello).")]


def sse_frame(kind: str, data: Any, ident: int | None = None) -> bytes:
    """One Server-Sent Events frame (``data`` as one line of JSON)."""
    head = f"event: {kind}\n" + (f"id: {ident}\n" if ident is not None else "")
    return (head + "data: " + json.dumps(data, separators=(",", ":"), default=str)
            + "\n\n").encode()


class Listener:
    """One listener's bounded queue. ``put`` never blocks: what does not fit is counted."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self.size = size
        self.queue: deque[tuple[str, dict]] = deque()
        self.dropped = 0
        self.closed = False
        self.ready = asyncio.Event()

    def put(self, item: tuple[str, dict]) -> None:
        if len(self.queue) >= self.size:
            self.dropped += 1
        else:
            self.queue.append(item)
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    async def take(self, timeout: float | None = None) -> list[tuple[str, dict]] | None:
        """Everything queued (first a ``dropped`` event if some were lost); ``[]`` after
        ``timeout`` seconds with nothing; None once closed (the host is stopping)."""
        if not self.queue and not self.dropped and not self.closed:
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                return []
        if self.closed:
            return None
        out: list[tuple[str, dict]] = []
        if self.dropped:
            out.append(("dropped", {"dropped": self.dropped}))
            self.dropped = 0
        out.extend(self.queue)
        self.queue.clear()
        return out


class Feed:
    """A host's live events, collected while someone listens and published once committed."""

    def __init__(self, host: Host, counters_seconds: float = COUNTERS_SECONDS,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.host = host
        self.rt = host._rt
        self.counters_seconds = counters_seconds
        self.queue_size = queue_size
        self.listeners: set[Listener] = set()
        self._pending: list[tuple[str, dict]] = []
        self._listed = 0
        self._failures_listed = 0
        self._unlisted = 0
        self._edges: dict[tuple[str, str], list[int]] = {}
        self._interval = [0, 0, 0]  # batches, failures, drops since the last counters
        self._known: dict[bytes, tuple[str, str] | None] = {}  # address -> (status, behavior)
        self._base: Any = {}  # the raw machine map when listening began
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._replies = host._replies_addr

    # -- listeners ------------------------------------------------------------------
    def subscribe(self) -> Listener:
        sub = Listener(self.queue_size)
        if not self.listeners:
            self._start()
        self.listeners.add(sub)
        sub.put(("hello", {"host": self.rt.host, "machines": len(self.rt.committed.machines) - 1,
                           "counters_seconds": self.counters_seconds,
                           "queue_size": self.queue_size}))
        return sub

    def unsubscribe(self, sub: Listener) -> None:
        self.listeners.discard(sub)
        if not self.listeners:
            self._stop()

    def _start(self) -> None:
        self._pending, self._edges, self._interval = [], {}, [0, 0, 0]
        self._listed = self._failures_listed = self._unlisted = 0
        net = self.rt.net
        # What each machine was when listening began, read only for machines that
        # change (a copy of 100,000 rows would hold the first listener up for a second).
        self._known = {}
        self._base = net.machines._m
        self.rt.subscribers.append(self._on_events)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="avm-events")

    def _stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.rt.subscribers.remove(self._on_events)
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        """End every stream (the server is stopping: it waits for open responses)."""
        for sub in list(self.listeners):
            sub.close()
            self.unsubscribe(sub)

    # -- collecting (called by the runtime, synchronously, for every step) ------------
    def _on_events(self, evs: list, dirty: Dirty | None) -> None:
        net = self.rt.net
        pending = self._pending
        for e in evs:
            t = type(e)
            if t is events.Applied:
                dest = e.dest
                if dest == self._replies:
                    continue
                m = net.machines.get(dest) if type(dest) is bytes else None
                dname = m.name if m is not None else who(net, dest)
                sname = who(net, e.chan[0])
                edge = self._edges.get((sname, dname))
                if edge is None:
                    edge = self._edges[(sname, dname)] = [0, 0]
                edge[0] += 1
                self._interval[0] += 1
                if e.ok:
                    if self._listed >= BATCHES_PER_PUBLISH:
                        self._unlisted += 1
                        continue
                    self._listed += 1
                    pending.append(("batch", {
                        "machine": dname, "sender": sname, "seq": e.seq, "ok": True,
                        "steps": e.steps, "read_only": e.read_only, "at": e.at,
                        "behavior": m.behavior if m is not None else None}))
                else:
                    edge[1] += 1
                    self._interval[1] += 1
                    if self._failures_listed >= BATCHES_PER_PUBLISH:
                        self._unlisted += 1
                        continue
                    self._failures_listed += 1
                    f = e.failure
                    pending.append(("failure", {
                        "machine": dname, "sender": sname, "seq": e.seq, "ok": False,
                        "steps": e.steps, "at": e.at,
                        "behavior": m.behavior if m is not None else None,
                        "rule": getattr(f, "rule", ""),
                        "detail": str(f)[:DETAIL_MAX] if f is not None else ""}))
            elif t is events.Dropped:
                self._interval[2] += 1
                if e.dest == self._replies:
                    continue
                pending.append(("drop", {"machine": who(net, e.dest), "sender": who(net, e.chan[0]),
                                         "seq": e.seq, "reason": e.reason, "at": e.at}))
            elif t is events.Spawned:
                m = net.machines.get(e.address)
                if m is not None:
                    self._known[e.address] = (m.status, m.behavior)
                pending.append(("machine", {"machine": e.name, "change": "spawned",
                                            "status": getattr(m, "status", "running"),
                                            "behavior": getattr(m, "behavior", None)}))
            elif t is events.Operator:
                subject = e.subject
                pending.append(("operator", {
                    "act": e.act, "machine": who(net, subject) if type(subject) is bytes else None,
                    "detail": str(e.detail)[:DETAIL_MAX], "at": e.at}))
        if dirty is not None and dirty.machines:
            for addr in dirty.machines:
                self._machine_changed(addr, net)
        if pending:
            self._wake.set()

    def _machine_changed(self, addr: bytes, net: Any) -> None:
        m = net.machines.get(addr)
        if addr in self._known:
            before = self._known[addr]
        else:
            was = self._base.get(addr)
            before = (was.status, was.behavior) if was is not None else None
        if m is None:
            if before is not None:
                self._known[addr] = None
                self._pending.append(("machine", {"machine": None, "address": addr.hex(),
                                                  "change": "destroyed", "status": "destroyed"}))
            return
        now = (m.status, m.behavior)
        if now == before:
            return
        self._known[addr] = now
        change = ("status" if before is None or before[0] != now[0] else "behavior")
        self._pending.append(("machine", {"machine": m.name, "change": change, "status": m.status,
                                          "behavior": m.behavior,
                                          "was": None if before is None else
                                          before[0] if change == "status" else before[1]}))

    # -- publishing -----------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_counters = loop.time() + self.counters_seconds
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_counters - loop.time()))
            except TimeoutError:
                pass
            self._wake.clear()
            counters = loop.time() >= next_counters
            items, self._pending = self._pending, []
            self._listed = self._failures_listed = 0
            if counters:
                next_counters = loop.time() + self.counters_seconds
                items.append(("counters", self._counters()))
            if items:
                try:
                    await self.rt.durable()  # everything collected so far is committed now
                except StoreError as e:
                    items = [("host", {"up": False, "error": str(e)})]
                except asyncio.CancelledError:
                    raise
                self._publish(items)
            await asyncio.sleep(PUBLISH_GAP_SECONDS)

    def _counters(self) -> dict:
        edges = sorted(self._edges.items(), key=lambda kv: -kv[1][0])[:EDGES_MAX]
        batches, failures, drops = self._interval
        out = {"t": time.time(), "seconds": self.counters_seconds,
               "batches": batches, "failures": failures, "drops": drops,
               "unlisted": self._unlisted, "queued": len(self.rt.net.pending),
               "machines": len(self.rt.net.machines) - 1,
               "up": self.rt.failed is None,
               "totals": dict(self.rt.counters),
               "edges": [{"from": a, "to": b, "batches": n, "failures": f}
                         for (a, b), (n, f) in edges]}
        self._edges, self._interval, self._unlisted = {}, [0, 0, 0], 0
        return out

    def _publish(self, items: list[tuple[str, dict]]) -> None:
        for sub in self.listeners:
            for item in items:
                sub.put(item)


async def _stream(feed: Feed, sub: Listener, keepalive: float,
                  limit: int | None = None) -> AsyncIterator[bytes]:
    n = 0
    try:
        yield b"retry: 2000\n\n"
        while limit is None or n < limit:
            batch = await sub.take(keepalive)
            if batch is None:
                return
            if not batch:
                yield b": keepalive\n\n"
                continue
            chunk = bytearray()
            for kind, data in batch[:None if limit is None else limit - n]:
                n += 1
                chunk += sse_frame(kind, data, n)
            yield bytes(chunk)
    finally:
        feed.unsubscribe(sub)


def add_event_routes(app: FastAPI, host: Host, rd: list) -> Feed:
    """``GET /events`` on ``app``; returns the feed (closed with the app's host)."""
    feed = Feed(host)

    @app.get("/events", dependencies=rd, tags=["observe"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "Server-Sent Events: hello, batch, failure, "
                              "drop, machine, operator, counters, dropped, host"}})
    async def live_events(keepalive: _Keepalive = KEEPALIVE_SECONDS,
                          limit: _Limit = None) -> StreamingResponse:
        """Live events (Server-Sent Events) of what the host commits: batches, failures
        with their reason, drops, machine changes, and counters every second. A slow
        reader misses events (and is told how many) rather than slowing the host. The
        stream is endless unless ``limit`` is given."""
        sub = feed.subscribe()
        return StreamingResponse(_stream(feed, sub, keepalive, limit),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    return feed

