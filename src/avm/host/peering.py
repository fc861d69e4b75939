"""Delivery between two host runtimes over the wire (issue 8, item 3; DESIGN section 9).

    "every batch on a channel has a sequence number; the receiver commits the sequence
    number with the batch, acknowledges it, ignores duplicates and asks again for gaps;
    the sender keeps a batch in its outbox until acknowledged and retries with back-off.
    Replayed frames do nothing."

The protocol is the core's (:mod:`avm.core.delivery`), run by each host's own network
value; this module only carries it between two processes:

* **Sending.** A peer host is named in the network (:func:`~avm.core.delivery.add_peer_host`),
  and so are the machines it serves (:func:`~avm.core.delivery.add_remote`). A batch to
  such a machine is numbered and kept in the network's outbox -- committed to the store
  with the step that made it -- and the core transmits it, and retransmits it with
  back-off, until it is acknowledged. Every transmission to the peer shows as a
  ``lost-host-down`` wire event (the peer is never "up" inside this network); the
  :class:`Peering` takes the batch from the last *committed* snapshot's outbox (so
  nothing leaves before its commit) and sends it over its link.
* **Receiving.** A batch handed out by the session goes into the network through
  :func:`~avm.core.delivery.receive_batch` (the same function the simulator's delivery
  calls), and is acknowledged only after :meth:`Runtime.durable` says the commit that
  holds it is done. A session starts from the committed ``received`` numbers, so a
  replayed frame, on this link or a later one, applies nothing.
* **Acks** go into the network through :func:`~avm.core.delivery.receive_ack`, which
  removes the batches from the outbox (committed like any change).
* **Machines that moved** (:mod:`avm.host.migrate`): a batch for an address the network
  routes to another peer is relayed there under its number
  (:func:`~avm.host.migrate.relay_batch`), and acknowledged to its sender only once that
  peer acknowledged it; batches to a machine being moved are not acknowledged until the
  move is decided. The move channel's images and their answers go to the ``mover``.

Not yet carried: feedback statuses and returned values of batches that fail at the
peer (they are sent back as batches of their own only when the peer knows the sender's
host), tombstone outcomes, and naming (peers are given their endpoints here; the DHT is
avm.naming's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.delivery import add_peer_host, add_remote, receive_ack, receive_batch
from ..core.netvalue import Batch as CoreBatch
from ..core.netvalue import Network, events
from ..wire import (
    Acked,
    Batch,
    BatchHeld,
    BatchReceived,
    DuplicateBatch,
    GapRequested,
    HelloReceived,
    Rejected,
    WireError,
)
from ..wire.transport import Dialer, HostIdentity, Link, Transport, TransportConfig
from .migrate import is_move_channel, relay_batch
from .runtime import Runtime
from .store import Dirty, StoreError

__all__ = ["Peering"]


@dataclass
class _Peer:
    name: str
    address: bytes
    endpoint: tuple[str, int] | None
    dialer: Dialer | None = None
    due: set = field(default_factory=set)  # (chan, seq) transmissions to carry
    asked: set = field(default_factory=set)  # (chan, seq) the peer asked for again
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    link: Link | None = None  # the link ``due`` refers to (a new one is sent everything)


@dataclass
class _Acks:
    """What one link owes its peer: the channels with batches handed out since the last
    acks were written, and the task that acks them once they are committed."""

    chans: set = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class Peering:
    """Carries one runtime's wire traffic to and from its peer hosts; see the module doc."""

    def __init__(self, runtime: Runtime, identity: HostIdentity,
                 config: TransportConfig | None = None) -> None:
        config = config if config is not None else TransportConfig()
        self.rt = runtime
        self.identity = identity
        self.transport = Transport(identity, self._on_events, config, self._committed_seq)
        self.peers: dict[str, _Peer] = {}
        self._by_address: dict[bytes, str] = {}
        self._acks: dict[Link, _Acks] = {}
        self.counts: dict[str, int] = {"sent": 0, "received": 0, "acks_sent": 0,
                                       "acks_received": 0, "duplicates": 0,
                                       "resent": 0, "full_scans": 0, "writes": 0,
                                       "relayed": 0, "stale_links": 0}
        #: the host's avm.host.migrate.Mover, once made: it takes the move channels, and
        #: says how far batches to a moving or moved machine may be acknowledged
        self.mover: Any = None
        runtime.subscribers.append(self._on_step)

    # -- set-up -----------------------------------------------------------------------
    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self.transport.listen(host, port)

    def add_peer(self, name: str, address: bytes, endpoint: tuple[str, int] | None = None) -> None:
        """Peer host ``name`` with host address ``address``, reachable at ``endpoint``
        (None: it dials us)."""
        core = _core_name(name)
        if core not in self.rt.net.hosts:
            self.rt.apply(lambda net: (add_peer_host(net, core, address), []), Dirty(heads={core}))
        p = _Peer(core, address, endpoint)
        if endpoint is not None:
            p.dialer = self.transport.dialer(address, *endpoint)
        self.peers[core] = p
        self._by_address[address] = core
        p.task = asyncio.ensure_future(self._carry(p))
        p.wake.set()  # what the outbox held for it before a restart goes out again

    def add_remote(self, address: bytes, peer: str) -> None:
        """Machine ``address`` lives on peer ``peer``."""
        core = _core_name(peer)
        before = self.rt.net.remote.get(address)
        if before != core:
            self.rt.apply(lambda net: (add_remote(net, address, core), []), Dirty(heads={address}))
            p = self.peers.get(core)
            if before is not None and p is not None:
                # It moved (avm.host.migrate): what the outbox holds for it goes to its
                # new host, on whatever link is up there, in order per channel.
                p.due |= {k for k, (b, _, _) in self.rt.net.outbox.items() if b.dest == address}
                p.wake.set()

    async def close(self) -> None:
        tasks = [p.task for p in self.peers.values()] + [a.task for a in self._acks.values()]
        for t in tasks:
            if t is not None:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        self._acks.clear()
        for p in self.peers.values():
            if p.dialer is not None:
                await p.dialer.close()
        await self.transport.close()

    # -- sending ----------------------------------------------------------------------
    def _on_step(self, evs: list, dirty: Any) -> None:
        for e in evs:
            if type(e) is events.Wire and e.what == "lost-host-down" and e.kind == "batch":
                p = self.peers.get(e.dst)
                if p is not None:
                    p.due.add((e.chan, e.seq))
                    p.wake.set()

    async def _carry(self, p: _Peer) -> None:
        """Send the peer what its link lacks, as it is committed.

        Incremental: each wake sends the transmissions the core made since the last one
        (``p.due``, noted as the steps ran), so a wake costs what is new, not the size of
        the outbox. A link this loop has not sent on yet (the first, or one made after a
        break) is sent every batch of the committed outbox for the peer, in order per
        channel: that is the retransmission over TCP, which delivers what it accepted
        in order or breaks the link. The core's retry timer only wakes this loop.
        """
        while True:
            await p.wake.wait()
            p.wake.clear()
            if p.dialer is None:
                links = self.transport.links.get(p.address)
                link = next((k for k in links if not k.closed.is_set()), None) if links else None
                if link is None:
                    continue  # it will dial us (its hello wakes this loop)
            else:
                try:
                    link = await p.dialer.link()
                except WireError:
                    return  # the dialer is closed
            # Taken before the commit is awaited: every number noted so far is in the
            # snapshot that durable() returns (or already acked and gone from it).
            due, p.due = p.due, set()
            asked, p.asked = p.asked, set()
            try:
                net = await self.rt.durable()  # only what is committed leaves
            except StoreError:
                return  # this host stopped after a failed commit: nothing more leaves
            if link is not p.link:
                p.link = link
                self.counts["full_scans"] += 1
                # When it closes, this loop wakes to send everything on the next one.
                link.closed_callbacks.append(p.wake.set)
                todo = [k for k, (b, _, _) in net.outbox.items()
                        if net.remote.get(b.dest) == p.name]
            else:
                todo = [k for k in due | asked if k in net.outbox]
            todo.sort(key=lambda k: (repr(k[0]), k[1]))
            try:
                await self._send_all(p, link, net, todo, asked)
            except WireError:
                # The link broke: the next link is sent everything (the dialer reconnects
                # with back-off; an accepted link wakes us with its hello).
                if p.dialer is not None:
                    p.wake.set()

    async def _send_all(self, p: _Peer, link: Link, net: Network, todo: list, asked: set) -> None:
        """Write ``todo`` on ``link``, coalesced: as many frames per write as the window
        allows, then wait for acks to open it again."""
        conn = link.conn
        out: list[bytes] = []
        for key in todo:
            chan, seq = key
            sent = conn.sent(chan)
            if seq <= sent and key not in asked:
                continue  # on this link already: TCP delivers it
            entry = net.outbox.get(key)
            if entry is None:
                continue
            b = entry[0]
            frame = Batch(b.sender, b.dest, seq, tuple(b.ts), float(b.priority),
                          b.messages, b.notify, bool(b.abandoned))
            if seq > sent and not conn.can_send():  # a new number needs room in the window
                if out:
                    await link.write_frames(out)
                    self.counts["writes"] += 1
                    out = []
                await link.wait_for_room()
                if conn.sent(chan) >= seq and key not in asked:
                    continue
            out.append(conn.send(frame))
            self.counts["sent"] += 1
            if seq <= sent:
                self.counts["resent"] += 1
        if out:
            await link.write_frames(out)
            self.counts["writes"] += 1

    # -- receiving --------------------------------------------------------------------
    def _committed_seq(self, peer: bytes, chan: tuple) -> int:
        return self.rt.committed.received.get(chan, 0)

    async def _on_events(self, link: Link, evs: list) -> None:
        try:
            await self._handle(link, evs)
        except StoreError:
            # This host stopped after a failed commit: it takes nothing more, and the
            # peer keeps what it sent until a restarted host acks it.
            await link.close("unavailable", "the host stopped after a failed commit")

    async def _handle(self, link: Link, evs: list) -> None:
        peer = self._by_address.get(link.peer) if link.peer is not None else None
        if peer is None:
            if any(isinstance(e, BatchReceived) for e in evs):
                await link.close("identity", "not a peer of this host")
            return
        touched: set = set()
        relayed: set = set()
        stale = False
        mover = self.mover
        for e in evs:
            t = type(e)
            if t is BatchReceived:
                f = e.batch
                if mover is not None and is_move_channel(f.channel):
                    await mover.on_image(link, peer, f)  # acks or refuses it itself
                    continue
                b = CoreBatch(sender=f.sender, dest=f.receiver, seq=f.seq, ts=f.ts,
                              priority=f.priority, messages=f.messages, notify=f.notify,
                              abandoned=f.tomb)
                if f.receiver in self.rt.net.remote._m:
                    # a machine that moved away: relayed under its number (avm.host.migrate)
                    self.rt.apply(_relay_act(self.rt.host, b), Dirty(heads={f.channel}))
                    self.counts["relayed"] += 1
                else:
                    self.rt.apply(_receive_act(peer, self.rt.host, b))
                touched.add(f.channel)
                self.counts["received"] += 1
            elif t is DuplicateBatch:
                self.counts["duplicates"] += 1
                touched.add(e.channel)
            elif t is Acked:
                self.counts["acks_received"] += 1
                if mover is not None and is_move_channel(e.channel):
                    mover.on_answer(e)
                    continue
                self.rt.apply(_ack_act(e.channel, e.upto), Dirty(heads={e.channel}))
                if e.channel[1] in self.rt.net.remote._m and mover is not None:
                    relayed.add(e.channel)  # its sender's ack was held for this one
            elif t is Rejected:
                if mover is not None and is_move_channel(e.channel):
                    mover.on_answer(e)
            elif t is GapRequested:
                p = self.peers[peer]
                gap = {(e.channel, s) for s in range(e.first, min(e.last, e.first + 1024) + 1)}
                p.due |= gap
                p.asked |= gap
                p.wake.set()
            elif t is BatchHeld:
                if self.rt.net.received.get(e.channel, 0) >= e.last:
                    # The gap this session waits for was filled on another path (a
                    # machine that moved back, avm.host.migrate): its numbers are stale.
                    # A new link starts from the store's and is sent the outbox again.
                    stale = True
            elif t is HelloReceived:
                hp = self.peers.get(peer)
                if hp is not None and hp.dialer is None:
                    hp.wake.set()  # a new link from the peer: it is sent what it lacks
        if touched:
            # Acked once committed, by the link's ack task: this read loop goes on
            # reading (and applying) meanwhile, and the acks of everything handed out
            # during one commit go out together, one per channel, in one write.
            a = self._acks.get(link)
            if a is None:
                a = self._acks[link] = _Acks()
                a.task = asyncio.ensure_future(self._ack_loop(link, a))
            a.chans |= touched
            a.wake.set()
        if relayed:
            self.ack_channels(relayed)
        if stale:
            self.counts["stale_links"] += 1
            await link.close("ok", "a channel's numbers moved on another link")

    def ack_channels(self, chans: set) -> None:
        """Acknowledge ``chans`` on every link that handed out more of them than it
        acknowledged, by the links' ack tasks (after the commit, as far as allowed): the
        acks a moving or moved machine's batches waited for (avm.host.migrate)."""
        if not chans:
            return
        for links in list(self.transport.links.values()):
            for link in list(links):
                if link.closed.is_set():
                    continue
                conn = link.conn
                want = {c for c in chans if conn.handed_out(c) > conn.committed(c)}
                if not want:
                    continue
                a = self._acks.get(link)
                if a is None:
                    a = self._acks[link] = _Acks()
                    a.task = asyncio.ensure_future(self._ack_loop(link, a))
                a.chans |= want
                a.wake.set()

    async def _ack_loop(self, link: Link, a: _Acks) -> None:
        """Ack what ``link`` handed out, only after the commit that holds it."""
        try:
            while not link.closed.is_set():
                await a.wake.wait()
                a.wake.clear()
                chans, a.chans = a.chans, set()
                net = await self.rt.durable()  # the ack says "committed"
                conn = link.conn
                out: list[bytes] = []
                for chan in sorted(chans, key=repr):
                    upto = min(net.received.get(chan, 0), conn.handed_out(chan))
                    if self.mover is not None:
                        upto = self.mover.ack_floor(net, chan, upto)
                    if upto >= conn.committed(chan):
                        out.append(conn.ack(chan[0], chan[1], upto))
                        self.counts["acks_sent"] += 1
                if out:
                    await link.write_frames(out)
        except WireError:
            pass  # the link broke: the sender resends on its next link, acked there
        except StoreError:
            await link.close("unavailable", "the host stopped after a failed commit")
        finally:
            if self._acks.get(link) is a:
                del self._acks[link]


def _core_name(name: str) -> str:
    """The peer's host name inside the network: "~" first (see add_peer_host)."""
    return name if name.startswith("~") else "~" + name


def _receive_act(peer: str, me: str, b: CoreBatch) -> Callable[[Network], tuple[Network, list]]:
    def act(net: Network) -> tuple[Network, list]:
        net, evs, _ = receive_batch(net, peer, me, (b.sender, b.dest), b.seq, b)
        return net, evs
    return act


def _relay_act(me: str, b: CoreBatch) -> Callable[[Network], tuple[Network, list]]:
    def act(net: Network) -> tuple[Network, list]:
        return relay_batch(net, me, b)
    return act


def _ack_act(chan: tuple, upto: int) -> Callable[[Network], tuple[Network, list]]:
    def act(net: Network) -> tuple[Network, list]:
        return receive_ack(net, chan, upto), []
    return act
