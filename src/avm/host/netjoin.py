"""A host on the network: its listener, its DHT node, its routing record, its peers.

    "addresses found through a DHT rather than DNS" (issue 8); "a host that has no DHT
    configured still works alone" (issue 8, item 4)

:class:`HostNet` puts together what the other packages provide, for one running host:

* **the transport** (:class:`~avm.host.peering.Peering`, TLS 1.3 pinned to identities)
  listening on ``listen``;
* **a DHT node** (:class:`~avm.naming.DhtNode`) on the same IP and port number over UDP,
  joined through ``join`` (another host's listen address). Joining is retried in the
  background until a node answers, so hosts may start in any order;
* **its routing record** (:class:`~avm.naming.Naming`): host address -> the endpoint
  that reaches it, signed, with an expiry, published at once and re-published every
  ``ttl/3``, and again as soon as the DHT is joined;
* **peers resolved through naming**: a peer is named by its host address only. Every
  attempt to reach it resolves the address (the newest valid record, from the local
  table and the DHT) and dials what it says (:class:`ResolvingDialer`), so a peer that
  restarts on a new port is found again. An open link the peer dialed is used as well.

**Which host serves a machine.** The core sends a batch over the wire when the network's
``remote`` map names the machine's host (:func:`~avm.core.delivery.add_remote`). It is
filled three ways, never overriding what it holds and never claiming a local machine:

1. :meth:`HostNet.add_remote` (an introduction: :func:`write_introduction` and
   :func:`read_introduction` carry a host's capabilities in a file);
2. the sender of a batch that arrived from peer P lives on P (P authenticated itself);
3. a capability inside such a batch, to a machine this host does not know, lives on P
   (replies: a request carries the capability of the machine that wants the answer;
   the status capability of its feedback, so the delivered/failed report crosses back).

A peer can misdirect only the traffic to machines it names in this way (first learned
wins), and gains nothing from it: capabilities are sealed with keys only their own
host holds, so a batch that reaches the wrong host does not unseal there.

A peer that dials in is accepted as a peer (the TLS pin check proved who it is), up to
:data:`PEERS_MAX`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import codec
from ..core.caps import Capability, address_text
from ..core.errors import UsageError
from ..naming.dht import DhtNode
from ..naming.records import split_endpoint
from ..naming.resolver import Naming
from ..wire import BatchReceived
from ..wire.transport import Dialer, HostIdentity, Link, TransportConfig, TransportError
from .peering import Peering

if TYPE_CHECKING:
    from .api import Host

__all__ = ["HostNet", "HostNetStatistics", "ResolvingDialer", "PEERS_MAX", "JOIN_RETRY_SECONDS",
           "write_introduction", "read_introduction", "peer_name"]

log = logging.getLogger(__name__)

#: Peer hosts one host keeps at most (each has a link task and a core host record).
PEERS_MAX = 1024
#: Seconds between attempts to join the DHT while no node answers.
JOIN_RETRY_SECONDS = 0.5
#: Seconds between two checks that the DHT still has contacts (else: join again).
REJOIN_CHECK_SECONDS = 2.0
#: Capabilities read from one batch to learn where machines live, at most.
LEARN_CAPS_MAX = 64
#: How deep :func:`_caps_in` looks into a message's value.
LEARN_DEPTH_MAX = 8
#: Bytes of an introduction file, at most.
INTRODUCTION_BYTES_MAX = 1 << 20
#: Times a port number is drawn for TCP and UDP together before giving up.
PORT_TRIES_MAX = 20


def peer_name(address: bytes) -> str:
    """The core's name of the peer host ``address`` ("~" first: see add_peer_host)."""
    return "~" + address_text(address)[:20]


@dataclass(frozen=True)
class HostNetStatistics:
    """A snapshot of a :class:`HostNet`: its endpoint, DHT, record and peers."""

    address: str
    endpoint: str
    dht: bool
    dht_contacts: int
    joined: bool
    published: int
    republish_failures: int
    peers: int
    remotes: int
    learned: dict[str, int]
    peering: dict[str, int]
    transport: dict[str, int]


class ResolvingDialer(Dialer):
    """A :class:`Dialer` that finds its peer through naming on every attempt.

    An open link to the peer (one it dialed to us) is used if there is one; otherwise
    the address is resolved (newest valid record) and its endpoints dialed in turn,
    with the transport's back-off between rounds.
    """

    def __init__(self, net: HostNet, address: bytes) -> None:
        super().__init__(net.peering.transport, address, "", 0)
        self.net = net
        self.resolved = 0

    async def link(self) -> Link:
        cfg = self.transport.config
        failures = 0
        while True:
            if self._closing:
                raise TransportError("the dialer is closed")
            if self.current is not None and not self.current.closed.is_set():
                return self.current
            for other in self.transport.links.get(self.address, ()):
                if not other.closed.is_set() and other.conn.state == "open":
                    self.current = other
                    return other
            self.attempts += 1
            for host, port in await self.net.endpoints(self.address):
                self.resolved += 1
                try:
                    self.current = await self.transport.connect(self.address, host, port)
                    return self.current
                except TransportError:
                    continue
            delay = min(cfg.reconnect_max_seconds, cfg.reconnect_min_seconds * (2 ** failures))
            delay *= 0.5 + 0.5 * self.rng.random()
            failures += 1
            self.delays.append(delay)
            await asyncio.sleep(delay)


class HostNet:
    """One host's place on the network; see the module docstring.

    ``listen``: (IP, port) of the TCP listener and, on the same port, the DHT's UDP
    socket (port 0: a free number for both). ``join``: DHT nodes to join through
    (other hosts' listen addresses). ``dht=False``: no DHT at all, peers are reached
    only through what :meth:`learn_record` was handed. ``chaos``: a
    :class:`~avm.wire.faults.FaultProxy` spec text; the host then publishes the
    endpoint of an in-process fault proxy in front of its listener (tests, and
    ``avm host run --chaos``).
    """

    def __init__(self, host: Host, identity: HostIdentity, *,
                 listen: tuple[str, int] = ("127.0.0.1", 0),
                 join: Iterable[tuple[str, int]] = (), dht: bool = True,
                 ttl_seconds: float = 3600.0, config: TransportConfig | None = None,
                 chaos: str | None = None, rng: random.Random | None = None) -> None:
        self.host = host
        self.rt = host._rt
        self.identity = identity
        self.listen_at = listen
        self.join_at = [(str(h), int(p)) for h, p in join]
        self.use_dht = dht
        self.ttl_seconds = ttl_seconds
        self.chaos = chaos
        self.rng = rng or random.Random()
        self.peering = Peering(self.rt, identity, config)
        self._deliver = self.peering.transport.handler
        self.peering.transport.handler = self._on_events
        from .migrate import Mover  # machines that move to and from this host

        self.mover = Mover(host, self.peering)
        self.mover.peer_for = self._peer
        from .returns import Returns  # linear values given back across hosts

        self.returns = Returns(self.rt)
        self.dht: DhtNode | None = None
        self.naming: Naming | None = None
        self.proxy: Any = None
        self.port = 0
        self.endpoint = ""
        self.joined = asyncio.Event()
        self.learned: Counter[str] = Counter()
        self._tasks: list[asyncio.Task] = []

    @property
    def address(self) -> bytes:
        return self.identity.address

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> HostNet:
        ip, port = self.listen_at
        await self._bind(ip, port)
        public = self.port
        if self.chaos is not None:
            from ..wire.faults import FaultProxy, parse_spec

            self.proxy = await FaultProxy(ip, self.port, parse_spec(self.chaos), listen_host=ip).start()
            public = self.proxy.port
        self.endpoint = f"[{ip}]:{public}" if ":" in ip else f"{ip}:{public}"
        self.naming = Naming(self.identity.key, [self.endpoint], dht=self.dht,
                             ttl_seconds=self.ttl_seconds)
        self.naming.start()
        if self.dht is not None and self.join_at:
            self._tasks.append(asyncio.ensure_future(self._join_loop()))
        else:
            self.joined.set()  # the first node of a DHT, or no DHT: nothing to join
        self.returns.scan()  # letters a crash left before they were moved
        # peers the store knows (batches to them may wait in the outbox): reach them again
        for name, rec in list(self.rt.net.hosts._m.items()):
            if name.startswith("~") and name not in self.peering.peers:
                self._peer(rec.address)
        return self

    async def _bind(self, ip: str, port: int) -> None:
        """TCP and (with a DHT) UDP on one port number."""
        for _ in range(PORT_TRIES_MAX if port == 0 else 1):
            got = await self.peering.listen(ip, port)
            if not self.use_dht:
                self.port = got
                return
            node = DhtNode()
            try:
                await node.listen(ip, got)
            except OSError:
                if port != 0:
                    await self.peering.transport.close()
                    raise UsageError(f"UDP port {ip}:{got} is taken: the DHT cannot listen") from None
                srv = self.peering.transport._server
                if srv is not None:
                    srv.close()
                continue
            self.dht, self.port = node, got
            return
        raise UsageError(f"no port free for both TCP and UDP on {ip}")

    async def _join_loop(self) -> None:
        assert self.dht is not None and self.naming is not None
        while True:
            try:
                if await self.dht.bootstrap(self.join_at) > 0:
                    break
            except Exception:  # noqa: BLE001 - the network's fault: tried again
                log.debug("joining the DHT failed", exc_info=True)
            await asyncio.sleep(JOIN_RETRY_SECONDS)
        self.joined.set()
        with contextlib.suppress(Exception):
            await self.naming.publish()  # now that there are nodes to hold it
        # Kademlia drops a contact that does not answer in time (a peer restarting, a
        # loaded machine); a host whose table ran empty joins again.
        while True:
            await asyncio.sleep(REJOIN_CHECK_SECONDS)
            if self.dht.contacts() == 0:
                self.learned["rejoins"] += 1
                with contextlib.suppress(Exception):
                    if await self.dht.bootstrap(self.join_at) > 0:
                        await self.naming.publish()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.naming is not None:
            await self.naming.stop()
        await self.mover.close()
        await self.peering.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.dht is not None:
            self.dht.stop()

    # -- peers ------------------------------------------------------------------------
    async def endpoints(self, address: bytes) -> list[tuple[str, int]]:
        """Where host ``address`` listens, by its newest valid record (empty: unknown)."""
        if self.naming is None:
            return []
        try:
            eps = await self.naming.resolve_endpoints(address)
        except Exception:  # noqa: BLE001 - a lookup that failed finds nothing this time
            log.debug("resolving a peer failed", exc_info=True)
            return []
        return [split_endpoint(e) for e in eps]

    def learn_record(self, data: bytes) -> None:
        """A peer's routing record handed over some other way (no DHT); verified."""
        if self.naming is None:
            raise UsageError("start the host's network first")
        self.naming.learn(data)

    def _peer(self, address: bytes) -> str | None:
        """The peer's core name, adding it (dialed through naming) if new."""
        name = self.peering._by_address.get(address)
        if name is not None:
            return name
        if address == self.address:
            return None
        if len(self.peering.peers) >= PEERS_MAX:
            self.learned["peers-refused"] += 1
            return None
        name = peer_name(address)
        self.peering.add_peer(name, address)
        p = self.peering.peers[name]
        p.dialer = ResolvingDialer(self, address)
        return name

    def add_remote(self, machine: bytes, host_address: bytes) -> None:
        """Machine ``machine`` is served by the host ``host_address``."""
        name = self._peer(host_address)
        if name is None:
            raise UsageError("a machine of this host is not remote")
        self.peering.add_remote(machine, name)

    # -- receiving: learn peers and where machines live ---------------------------------
    async def _on_events(self, link: Link, evs: list) -> None:
        addr = link.peer
        if addr is not None and any(isinstance(e, BatchReceived) for e in evs):
            name = self._peer(addr)
            if name is not None:
                for e in evs:
                    if isinstance(e, BatchReceived):
                        self._learn(e.batch, name)
        await self._deliver(link, evs)

    def _local(self, address: bytes) -> bool:
        rt = self.rt
        if address in rt.net.machines._m:
            return True
        return rt.evicted_any and rt.store.read_machine(address) is not None

    def _learn(self, frame: Any, peer: str) -> None:
        found: list[bytes] = []
        if type(frame.sender) is bytes:
            found.append(frame.sender)
        if frame.notify is not None:  # its feedback goes back to the status capability
            _caps_in(frame.notify, found, LEARN_DEPTH_MAX)
        for _cap, content in frame.messages:
            _caps_in(content, found, LEARN_DEPTH_MAX)
            if len(found) > LEARN_CAPS_MAX:
                break
        remote = self.rt.net.remote
        for a in found[:LEARN_CAPS_MAX + 1]:
            if a in remote or a == frame.receiver or self._local(a):
                continue
            try:
                self.peering.add_remote(a, peer)
                self.learned["machines"] += 1
            except UsageError:
                self.learned["refused"] += 1
            remote = self.rt.net.remote

    def statistics(self) -> HostNetStatistics:
        st = self.naming.statistics() if self.naming is not None else None
        return HostNetStatistics(
            address_text(self.address), self.endpoint, self.dht is not None,
            self.dht.contacts() if self.dht is not None else 0, self.joined.is_set(),
            st.published if st else 0, st.republish_failures if st else 0,
            len(self.peering.peers), len(self.rt.net.remote), dict(self.learned),
            dict(self.peering.counts), dict(self.peering.transport.counts))


def _caps_in(v: Any, out: list[bytes], depth: int) -> None:
    """Addresses of the machine capabilities inside ``v`` (bounded depth and count)."""
    if depth < 0 or len(out) > LEARN_CAPS_MAX:
        return
    t = type(v)
    if t is Capability:
        if v.commons is None:
            out.append(v.address)
        return
    if t is tuple:
        for x in v:
            _caps_in(x, out, depth - 1)
        return
    items = getattr(v, "items", None)
    if callable(items) and hasattr(v, "_m"):  # a Map
        for k, x in items():
            _caps_in(k, out, depth - 1)
            _caps_in(x, out, depth - 1)
    elif isinstance(v, tuple):  # records and substructural wrappers are tuples too
        for x in tuple.__iter__(v):
            _caps_in(x, out, depth - 1)


# ---------------------------------------------------------------------------------------
# Introductions: a host's capabilities in a file, for another host to start from
# ---------------------------------------------------------------------------------------


def write_introduction(path: str | os.PathLike, host_address: bytes,
                       caps: dict[str, Capability], record: bytes | None = None) -> None:
    """Write ``caps`` (name -> capability) of the host ``host_address`` to ``path``,
    atomically (a reader never sees half a file); ``record``: its routing record, for
    peers without a DHT."""
    p = Path(path)
    data = codec.encode((host_address, tuple(sorted(caps.items())), record))
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, p)


def read_introduction(path: str | os.PathLike) -> tuple[bytes, dict[str, Capability], bytes | None]:
    """``(host address, name -> capability, routing record or None)`` from ``path``;
    :class:`~avm.core.errors.UsageError` if it is not an introduction."""
    p = Path(path)
    raw = p.read_bytes()
    if len(raw) > INTRODUCTION_BYTES_MAX:
        raise UsageError(f"{p}: an introduction is at most {INTRODUCTION_BYTES_MAX} bytes")
    try:
        v = codec.decode(raw)
    except Exception as e:  # noqa: BLE001 - any bad file is the same typed error
        raise UsageError(f"{p}: not an introduction ({type(e).__name__})") from None
    ok = (type(v) is tuple and len(v) == 3 and type(v[0]) is bytes and len(v[0]) == 32
          and type(v[1]) is tuple and (v[2] is None or type(v[2]) is bytes)
          and all(type(x) is tuple and len(x) == 2 and type(x[0]) is str
                  and type(x[1]) is Capability for x in v[1]))
    if not ok:
        raise UsageError(f"{p}: not an introduction (wrong shape)")
    return v[0], dict(v[1]), v[2]
