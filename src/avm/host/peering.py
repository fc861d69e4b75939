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
from ..wire import Acked, Batch, BatchReceived, DuplicateBatch, GapRequested, Rejected, WireError
from ..wire.transport import Dialer, HostIdentity, Link, Transport, TransportConfig
from .migrate import is_move_channel, relay_batch
from .runtime import Runtime
from .store import Dirty

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
        self.counts: dict[str, int] = {"sent": 0, "received": 0, "acks_sent": 0,
                                       "acks_received": 0, "duplicates": 0, "relayed": 0}
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
        if self.rt.net.remote.get(address) != core:
            self.rt.apply(lambda net: (add_remote(net, address, core), []), Dirty(heads={address}))

    async def close(self) -> None:
        for p in self.peers.values():
            if p.task is not None:
                p.task.cancel()
                with contextlib.suppress(BaseException):
                    await p.task
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
        while True:
            await p.wake.wait()
            p.wake.clear()
            if p.dialer is None:
                links = self.transport.links.get(p.address)
                link = next(iter(links)) if links else None
                if link is None:
                    continue  # it will dial us; our retries come back here meanwhile
            else:
                link = await p.dialer.link()
            net = await self.rt.durable()  # only what is committed leaves
            p.due.clear()
            asked, p.asked = p.asked, set()
            # The committed outbox is the truth: every batch of it for this peer, in order
            # per channel, that is not on this link yet (or that the peer asked for again).
            # A batch already on the link is not sent again: TCP delivers it and the
            # receiver acks it once committed; the core's retry timer (made for lossy
            # links) only wakes this loop, and re-sending happens on a new link.
            todo = sorted((k for k, (b, _, _) in net.outbox.items()
                           if net.remote.get(b.dest) == p.name),
                          key=lambda k: (repr(k[0]), k[1]))
            try:
                for chan, seq in todo:
                    if seq <= link.conn.sent(chan) and (chan, seq) not in asked:
                        continue
                    b = net.outbox[(chan, seq)][0]
                    frame = Batch(b.sender, b.dest, seq, tuple(b.ts), float(b.priority),
                                  b.messages, b.notify, bool(b.abandoned))
                    if seq > link.conn.sent(chan):  # a new number needs room in the window
                        await link.wait_for_room()
                    await link.send(frame)
                    self.counts["sent"] += 1
            except WireError:
                pass  # the link broke: the core's next retry wakes this loop again

    # -- receiving --------------------------------------------------------------------
    def _committed_seq(self, peer: bytes, chan: tuple) -> int:
        return self.rt.committed.received.get(chan, 0)

    async def _on_events(self, link: Link, evs: list) -> None:
        peer = self._by_address.get(link.peer) if link.peer is not None else None
        if peer is None:
            if any(isinstance(e, BatchReceived) for e in evs):
                await link.close("identity", "not a peer of this host")
            return
        touched: set = set()
        relayed: set = set()
        mover = self.mover
        for e in evs:
            if isinstance(e, BatchReceived):
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
            elif isinstance(e, DuplicateBatch):
                self.counts["duplicates"] += 1
                touched.add(e.channel)
            elif isinstance(e, Acked):
                self.counts["acks_received"] += 1
                if mover is not None and is_move_channel(e.channel):
                    mover.on_answer(e)
                    continue
                self.rt.apply(_ack_act(e.channel, e.upto), Dirty(heads={e.channel}))
                if e.channel[1] in self.rt.net.remote._m and mover is not None:
                    relayed.add(e.channel)  # its sender's ack was held for this one
            elif isinstance(e, Rejected):
                if mover is not None and is_move_channel(e.channel):
                    mover.on_answer(e)
            elif isinstance(e, GapRequested):
                p = self.peers[peer]
                gap = {(e.channel, s) for s in range(e.first, min(e.last, e.first + 1024) + 1)}
                p.due |= gap
                p.asked |= gap
                p.wake.set()
        if touched:
            net = await self.rt.durable()  # the ack says "committed"
            for chan in touched:
                upto = min(net.received.get(chan, 0), link.conn.handed_out(chan))
                if mover is not None:
                    upto = mover.ack_floor(net, chan, upto)
                if upto >= link.conn.committed(chan):
                    await link.ack(chan[0], chan[1], upto)
                    self.counts["acks_sent"] += 1
        if relayed:
            await self.ack_channels(relayed)

    async def ack_channels(self, chans: set) -> None:
        """Acknowledge ``chans`` on every link as far as committed and allowed: the acks
        a moving or moved machine's batches waited for (avm.host.migrate)."""
        if not chans:
            return
        net = await self.rt.durable()
        mover = self.mover
        for links in list(self.transport.links.values()):
            for link in list(links):
                for chan in chans:
                    upto = min(net.received.get(chan, 0), link.conn.handed_out(chan))
                    if mover is not None:
                        upto = mover.ack_floor(net, chan, upto)
                    if upto > link.conn.committed(chan):
                        with contextlib.suppress(WireError):
                            await link.ack(chan[0], chan[1], upto)
                            self.counts["acks_sent"] += 1


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
