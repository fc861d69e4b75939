"""A Kademlia DHT node for routing records, on the ``kademlia`` package (DESIGN section 9).

    "Build on an existing Kademlia implementation (the asyncio kademlia package, with a
    storage layer that validates what it stores), not a home-made DHT."

What is the package's, used as it is: the RPC layer (``rpcudp`` over UDP, messages in
MessagePack via ``u-msgpack-python``), the routing table (``RoutingTable``, ``KBucket``:
k-buckets, splitting, replacement caches), the node heap and the iterative lookups
(``kademlia.crawling``). What is ours, and why:

* :class:`RecordStorage` instead of ``ForgetfulStorage``: only valid records are kept;
* :class:`AvmProtocol`, a ``KademliaProtocol`` whose RPC handlers check their
  arguments' types (a peer may send any MessagePack value), answer a refused STORE with
  ``False`` at once (the package's handler would raise, and the sender would wait for a
  time-out), drop datagrams over ``DATAGRAM_BYTES_MAX`` and count malformed ones instead
  of leaving stray exceptions in tasks;
* :class:`AvmRoutingTable`, the package's ``RoutingTable`` (its buckets, splits and
  replacement caches) with an exact ``find_neighbors``: the package's
  ``TableTraverser`` stops when it runs out of buckets on one side, so a node whose
  buckets next to the target are empty answers with no neighbors at all although it
  knows many (bmuller/kademlia issue #28, pull request #52, unmerged); in the 1,000-node
  simulation this lost about one lookup in five;
* :class:`RecordCrawl` and :class:`NodeCrawl`, the package's crawls with the parsing of
  answers made safe (``Node(*triple)`` on a peer's list raises on garbage) and, for
  values, every value verified: the package's ``ValueSpiderCrawl`` takes the most
  common value of the first round that has any, so one hostile peer could answer for
  the whole lookup; ours keeps looking until it has ``values_wanted`` valid records and
  returns the newest;
* :class:`DhtNode` instead of ``kademlia.network.Server``: the Server binds 0.0.0.0 by
  default, saves its state with **pickle** (``save_state``/``load_state``, never called
  here) and crashes in ``set_digest`` when no peer answers (``max()`` of nothing).

Deserialization: ``rpcudp`` decodes every datagram with ``umsgpack.unpackb`` (pure
Python MessagePack: nil, bool, int, float, str, bin, array, map, ext and timestamp).
It has no pickle and no object hooks (no ext class is registered), so a datagram can
only become plain data or an exception; its size is bounded by the datagram. Nothing on
this path unpickles, and record values are only ever ``bytes`` handed to
:func:`~avm.naming.records.verify_record`.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kademlia.crawling import NodeSpiderCrawl, ValueSpiderCrawl
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable

from .records import DHT_KEY_BYTES, RecordError, RouteRecord, dht_key, newest, verify_record
from .storage import RecordStorage, StorageStatistics, wall_ms

__all__ = [
    "AvmProtocol",
    "AvmRoutingTable",
    "DhtNode",
    "DhtStatistics",
    "Lookup",
    "NodeCrawl",
    "RecordCrawl",
    "DATAGRAM_BYTES_MAX",
    "ROUNDS_MAX",
    "parse_nodes",
]

log = logging.getLogger(__name__)

#: rpcudp refuses to send requests over 8 KiB; a little more for its header and replies.
DATAGRAM_BYTES_MAX = 8192 + 64
#: Rounds of one iterative lookup at most: an honest lookup takes a few (log2 N is a
#: loose bound); peers that keep inventing ever closer node ids cannot keep one going.
ROUNDS_MAX = 40
#: Seconds to wait for an RPC answer (the package's default is 5).
WAIT_SECONDS = 2.0
#: Seconds between refreshes of buckets not used for an hour and republication of the
#: records this node stores (Kademlia's section 2.5; the package's interval).
REFRESH_SECONDS = 3600.0


def _is_id(v: Any) -> bool:
    return type(v) is bytes and len(v) == DHT_KEY_BYTES


def _is_ip(text: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return True
    return False


def parse_nodes(payload: Any, limit: int, exclude: bytes | None = None) -> list[Node]:
    """The well-formed ``(id, ip, port)`` triples of a peer's answer, at most ``limit``.

    A peer may answer anything; whatever is not a 20-byte id, an IP literal and a port
    is skipped, so a hostile answer costs nothing but its own entries.
    """
    if type(payload) is not list:
        return []
    nodes = []
    for item in payload[: 2 * limit]:
        if type(item) is not list or len(item) != 3:
            continue
        nid, ip, port = item
        if not _is_id(nid) or nid == exclude or type(ip) is not str or type(port) is not int:
            continue
        if not (0 < port < 65536) or not _is_ip(ip):
            continue
        nodes.append(Node(nid, ip, port))
        if len(nodes) == limit:
            break
    return nodes


class AvmRoutingTable(RoutingTable):
    """The package's routing table with an exact nearest-neighbour query."""

    def find_neighbors(self, node: Node, k: int | None = None,
                       exclude: Node | None = None) -> list[Node]:
        """The ``k`` known contacts closest to ``node`` (all buckets are looked at)."""
        k = k or self.ksize
        index = self.get_bucket_for(node)
        if index is not None:  # as the package's traverser does: the bucket was used
            self.buckets[index].touch_last_updated()
        candidates = (n for b in self.buckets for n in b.nodes.values()
                      if n.id != node.id and (exclude is None or not n.same_home_as(exclude)))
        return heapq.nsmallest(k, candidates, key=node.distance_to)


class AvmProtocol(KademliaProtocol):
    """The package's Kademlia RPCs, with checked arguments and counted bad input."""

    def __init__(self, source_node: Node, storage: RecordStorage, ksize: int,
                 wait_timeout: float = WAIT_SECONDS) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = AvmRoutingTable(self, ksize, source_node)
        self._wait_timeout = wait_timeout
        self.storage: RecordStorage = storage
        self.dropped: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- receiving --------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) > DATAGRAM_BYTES_MAX:
            self.dropped["size"] += 1
            return
        self._spawn(self._guarded(self._solve_datagram(data, addr)))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, coro: Awaitable[Any]) -> None:
        try:
            await coro
        except Exception as e:  # a peer's garbage: counted, never a stray task error
            self.dropped["malformed"] += 1
            log.debug("dropped a malformed datagram: %s", e)

    async def _accept_request(self, msg_id: bytes, data: Any, address: Any) -> None:
        # rpcudp runs this in a task of its own; keep its failures counted too
        await self._guarded(super()._accept_request(msg_id, data, address))

    # -- the RPCs, with their arguments checked -----------------------------------------

    def rpc_ping(self, sender: Any, nodeid: Any) -> Any:
        if not _is_id(nodeid):
            self.dropped["arguments"] += 1
            return None
        return super().rpc_ping(sender, nodeid)

    def rpc_store(self, sender: Any, nodeid: Any, key: Any, value: Any) -> bool:
        if not _is_id(nodeid) or not _is_id(key):
            self.dropped["arguments"] += 1
            return False
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return self.storage.offer(key, value) is None

    def rpc_find_node(self, sender: Any, nodeid: Any, key: Any) -> Any:
        if not _is_id(nodeid) or not _is_id(key):
            self.dropped["arguments"] += 1
            return None
        return super().rpc_find_node(sender, nodeid, key)

    def rpc_find_value(self, sender: Any, nodeid: Any, key: Any) -> Any:
        if not _is_id(nodeid) or not _is_id(key):
            self.dropped["arguments"] += 1
            return None
        return super().rpc_find_value(sender, nodeid, key)

    def welcome_if_new(self, node: Node) -> None:
        """Hand a new contact the records it is now among the closest for (section 2.5).

        As the package does, except that the storage's keys are already DHT ids: the
        package hashes them once more (``digest(key)``) and so picks the wrong records.
        """
        if not self.router.is_new_node(node):
            return
        for key, value in self.storage:
            keynode = Node(key)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                new_node_close = node.distance_to(keynode) < neighbors[-1].distance_to(keynode)
                this_closest = self.source_node.distance_to(keynode) < neighbors[0].distance_to(keynode)
            if not neighbors or (new_node_close and this_closest):
                self._spawn(self.call_store(node, key, value))
        self.router.add_contact(node)


class NodeCrawl(NodeSpiderCrawl):
    """``NodeSpiderCrawl`` with peers' answers parsed safely; counts its rounds."""

    def __init__(self, protocol: AvmProtocol, node: Node, peers: list[Node], ksize: int,
                 alpha: int) -> None:
        super().__init__(protocol, node, peers, ksize, alpha)
        self.rounds = 0

    async def find(self) -> Any:
        self.rounds += 1
        if self.rounds > ROUNDS_MAX:
            return list(self.nearest)
        return await self._find(self.protocol.call_find_node)

    async def _nodes_found(self, responses: dict[bytes, Any]) -> Any:
        toremove = []
        for peerid, (ok, payload) in responses.items():
            if not ok:
                toremove.append(peerid)
            else:
                self.nearest.push(parse_nodes(payload, self.ksize, self.protocol.source_node.id))
        self.nearest.remove(toremove)
        if self.nearest.have_contacted_all():
            return list(self.nearest)
        return await self.find()


class RecordCrawl(ValueSpiderCrawl):
    """An iterative FIND_VALUE that verifies every value and returns the newest.

    ``check(value)`` is the record if ``value`` is a valid, live record for the key
    looked up, else None. The crawl stops once ``values_wanted`` peers have answered with
    valid records (or every close peer has been asked); ``rounds`` counts the rounds of
    parallel requests, the lookup's hops.
    """

    def __init__(self, protocol: AvmProtocol, node: Node, peers: list[Node], ksize: int,
                 alpha: int, check: Callable[[Any], RouteRecord | None],
                 values_wanted: int = 1) -> None:
        super().__init__(protocol, node, peers, ksize, alpha)
        self.check = check
        self.values_wanted = values_wanted
        self.found: dict[bytes, RouteRecord] = {}
        self.invalid = 0
        self.rounds = 0
        self.found_in_round: int | None = None

    async def find(self) -> Any:
        self.rounds += 1
        if self.rounds > ROUNDS_MAX:
            return await self._finish()
        return await self._find(self.protocol.call_find_value)

    async def _nodes_found(self, responses: dict[bytes, Any]) -> Any:
        toremove = []
        for peerid, (ok, payload) in responses.items():
            if not ok:
                toremove.append(peerid)
            elif type(payload) is dict:
                rec = self.check(payload.get("value")) if len(payload) == 1 else None
                if rec is None:
                    self.invalid += 1
                else:
                    self.found[peerid] = rec
                    if self.found_in_round is None:
                        self.found_in_round = self.rounds
            else:
                peer = self.nearest.get_node(peerid)
                if peer is not None:
                    self.nearest_without_value.push(peer)
                self.nearest.push(parse_nodes(payload, self.ksize, self.protocol.source_node.id))
        self.nearest.remove(toremove)
        if len(self.found) >= self.values_wanted or self.nearest.have_contacted_all():
            return await self._finish()
        return await self.find()

    async def _finish(self) -> RouteRecord | None:
        best = newest(self.found.values())
        # as the package does: cache the value at the closest peer that lacked it
        peer = self.nearest_without_value.popleft()
        if best is not None and peer is not None:
            await self.protocol.call_store(peer, self.node.id, best.data)
        return best


@dataclass(frozen=True)
class DhtStatistics:
    """Counters of one :class:`DhtNode` (STYLE habit 14: long-lived things can be seen)."""

    contacts: int
    buckets: int
    storage: StorageStatistics
    dropped: dict[str, int]


@dataclass(frozen=True)
class Lookup:
    """What one lookup found: the newest valid record (or None) and how it went."""

    record: RouteRecord | None
    rounds: int
    found_in_round: int | None
    valid: int
    invalid: int


class DhtNode:
    """One Kademlia node that stores and finds routing records.

    ``listen()`` binds a UDP socket (127.0.0.1 unless told otherwise); ``attach()``
    runs the node over any datagram transport (the in-process simulation uses one).
    """

    def __init__(self, *, ksize: int = 20, alpha: int = 3, node_id: bytes | None = None,
                 storage: RecordStorage | None = None,
                 clock_ms: Callable[[], int] = wall_ms, wait_timeout: float = WAIT_SECONDS,
                 values_wanted: int = 2) -> None:
        self.ksize, self.alpha, self.values_wanted = ksize, alpha, values_wanted
        self.clock_ms = clock_ms
        self.storage = storage if storage is not None else RecordStorage(clock_ms=clock_ms)
        self.node = Node(node_id if node_id is not None else os.urandom(DHT_KEY_BYTES))
        self.protocol = AvmProtocol(self.node, self.storage, ksize, wait_timeout)
        self.transport: Any = None
        self._refresh: asyncio.Task[None] | None = None

    # -- life cycle -----------------------------------------------------------------

    async def listen(self, host: str = "127.0.0.1", port: int = 0,
                     refresh_seconds: float = REFRESH_SECONDS) -> tuple[str, int]:
        """Bind ``host:port`` (port 0: any free one); returns the address bound."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self.protocol, local_addr=(host, port))
        self.transport = transport
        self._refresh = asyncio.ensure_future(self._refresh_loop(refresh_seconds))
        return self.address

    def attach(self, transport: Any) -> None:
        """Run over ``transport`` (anything with ``sendto(data, addr)``)."""
        self.transport = transport
        self.protocol.connection_made(transport)

    @property
    def address(self) -> tuple[str, int]:
        return tuple(self.transport.get_extra_info("sockname")[:2])  # type: ignore[return-value]

    def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        if self.transport is not None:
            self.transport.close()
        for t in list(self.protocol._tasks):
            t.cancel()
        for fut, timer in list(self.protocol._outstanding.values()):  # rpcudp's requests
            timer.cancel()
            fut.cancel()
        self.protocol._outstanding.clear()

    async def _refresh_loop(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.refresh(seconds)
            except Exception:  # a bug: logged, and the node keeps serving
                log.exception("DHT refresh failed")

    async def refresh(self, older_than_seconds: float = REFRESH_SECONDS) -> None:
        """Look up ids in quiet buckets, and store again what was stored long ago."""
        for rid in self.protocol.get_refresh_ids():
            await self._crawl_nodes(Node(rid))
        for key, value in self.storage.iter_older_than(older_than_seconds):
            await self._store(key, value)

    # -- joining ----------------------------------------------------------------------

    async def bootstrap(self, addrs: Iterable[tuple[str, int]]) -> int:
        """Join through the peers at ``addrs``; returns how many contacts it then has."""
        at = [(str(h), int(p)) for h, p in addrs]
        answers = await asyncio.gather(*(self.protocol.ping(a, self.node.id) for a in at))
        peers = [Node(r[1], a[0], a[1]) for a, r in zip(at, answers, strict=True)
                 if r[0] and _is_id(r[1])]
        for p in peers:
            self.protocol.welcome_if_new(p)
        if peers:
            await NodeCrawl(self.protocol, self.node, peers, self.ksize, self.alpha).find()
        return sum(len(b) for b in self.protocol.router.buckets)

    async def _crawl_nodes(self, target: Node) -> list[Node]:
        nearest = self.protocol.router.find_neighbors(target, self.alpha)
        if not nearest:
            return []
        return await NodeCrawl(self.protocol, target, nearest, self.ksize, self.alpha).find()

    # -- records ----------------------------------------------------------------------

    async def put(self, record: RouteRecord | bytes) -> int:
        """Store a record at the ``ksize`` nodes closest to its key; how many took it.

        Raises :class:`RecordError` if it is not a valid live record: nothing invalid is
        sent.
        """
        data = record.data if isinstance(record, RouteRecord) else record
        rec = verify_record(data, now_ms=self.clock_ms())
        return await self._store(dht_key(rec.address), data)

    async def _store(self, key: bytes, data: bytes) -> int:
        target = Node(key)
        nodes = await self._crawl_nodes(target)
        far = max((n.distance_to(target) for n in nodes), default=None)
        if far is None or len(nodes) < self.ksize or self.node.distance_to(target) < far:
            self.storage.offer(key, data)  # this node is among the closest: keep a copy
        answers = await asyncio.gather(*(self.protocol.call_store(n, key, data) for n in nodes))
        return sum(1 for ok, took in answers if ok and took is True)

    async def get(self, address: bytes) -> Lookup:
        """Look ``address``'s record up: the newest valid one here or at its closest nodes."""
        key = dht_key(address)
        target = Node(key)
        local = self.storage.record(key)

        def check(value: Any) -> RouteRecord | None:
            try:
                return verify_record(value, now_ms=self.clock_ms(), address=address, key=key)
            except RecordError:
                return None

        nearest = self.protocol.router.find_neighbors(target)
        if not nearest:
            return Lookup(local, 0, None, int(local is not None), 0)
        crawl = RecordCrawl(self.protocol, target, nearest, self.ksize, self.alpha, check,
                            self.values_wanted)
        best = await crawl.find()
        candidates = [r for r in (best, local) if r is not None]
        return Lookup(newest(candidates), crawl.rounds, crawl.found_in_round,
                      len(crawl.found), crawl.invalid)

    def contacts(self) -> int:
        return sum(len(b) for b in self.protocol.router.buckets)

    def statistics(self) -> DhtStatistics:
        """A snapshot: contacts, buckets, what the storage holds and refused, drops."""
        return DhtStatistics(self.contacts(), len(self.protocol.router.buckets),
                             self.storage.statistics(), dict(self.protocol.dropped))

