"""A whole DHT in one process: the package's nodes over an in-memory datagram network.

    "A 1,000-node DHT simulated in one process resolves records in <= log2(N) hops"
    (issue 8)

What runs is the real thing, minus sockets: every node is a :class:`~avm.naming.dht.DhtNode`
with its ``AvmProtocol`` (``kademlia``'s protocol), its ``RoutingTable``/``KBucket`` s,
its :class:`~avm.naming.storage.RecordStorage`, and the package's iterative lookups
(:class:`~avm.naming.dht.NodeCrawl`, :class:`~avm.naming.dht.RecordCrawl`). Two ways to
carry the RPCs:

* ``wire="datagram"``: ``rpcudp`` itself, each request and answer encoded with
  MessagePack into a datagram that :class:`MemoryTransport` hands to the destination's
  ``datagram_received`` on the next turn of the event loop, exactly as over UDP;
* ``wire="direct"``: the same ``rpc_*`` handlers called on the next loop turn with the
  arguments and answers converted to what MessagePack would give back (tuples become
  lists; :func:`plain`), skipping the pure-Python encoding, which is most of the cost:
  a 1,000-node network forms in seconds instead of a minute.

What is modelled: the network itself (no loss, no delay beyond one loop turn, each
message delivered once) and the node ids (drawn from a seeded generator, so a run can
be repeated).

How the network forms: nodes join one at a time, each through a randomly chosen node
that joined before it, by the package's bootstrap (ping, then an iterative FIND_NODE for
its own id), so routing tables hold what real joins put there: nothing is filled in by
hand. Then records are published from random nodes (an iterative FIND_NODE for the key,
then STORE at the ``ksize`` closest) and looked up from other random nodes.

A **hop** is one round of the iterative lookup: the parallel requests to (at most)
``alpha`` of the closest known, not yet asked nodes, whose answers the next round waits
for. :attr:`Lookup.found_in_round` is the round in which the first valid record arrived;
:attr:`Lookup.rounds` includes the rounds the lookup kept going to collect further
copies (``values_wanted``) or, on a miss, until the closest nodes were all asked.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..core import codec
from ..core.caps import IdentityKey
from ..core.values import Map
from .dht import AvmProtocol, DhtNode, Lookup
from .records import RouteRecord, make_record
from .storage import RecordStorage

__all__ = ["MemoryNetwork", "MemoryTransport", "DirectProtocol", "ForgingProtocol", "SimReport",
           "build", "run", "plain"]


def plain(v: Any) -> Any:
    """``v`` as MessagePack would give it back: tuples and lists become lists."""
    t = type(v)
    if t is tuple or t is list:
        return [plain(x) for x in v]
    if t is dict:
        return {k: plain(x) for k, x in v.items()}  # the RPCs' keys are text
    return v


class MemoryTransport:
    """A datagram transport for one simulated address (``sendto`` delivers in memory)."""

    def __init__(self, net: MemoryNetwork, addr: tuple[str, int]) -> None:
        self.net = net
        self.addr = addr

    def sendto(self, data: bytes, addr: Any) -> None:
        self.net.send(self.addr, tuple(addr), bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.addr if name == "sockname" else default

    def close(self) -> None:
        self.net.nodes.pop(self.addr, None)


class MemoryNetwork:
    """Addresses to protocols; a datagram to an unknown address is lost (counted)."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, int], Any] = {}
        self.datagrams = 0
        self.bytes = 0
        self.lost = 0

    def add(self, node: DhtNode, addr: tuple[str, int], wire: str = "datagram",
            hostile: bool = False) -> None:
        """Put ``node`` on the network at ``addr``; ``hostile``: it forges its answers."""
        if wire not in ("direct", "datagram"):
            raise ValueError(f"wire is 'datagram' or 'direct', not {wire!r}")
        if wire == "direct" or hostile:
            cls = {(True, False): DirectProtocol, (True, True): ForgingDirect,
                   (False, True): ForgingProtocol}[(wire == "direct", hostile)]
            node.protocol = cls(node.node, node.storage, node.ksize, node.protocol._wait_timeout)
            if wire == "direct":
                node.protocol.net = self
        node.attach(MemoryTransport(self, addr))
        self.nodes[addr] = node.protocol

    def call(self, src: tuple[str, int], dst: tuple[str, int], name: str,
             args: list[Any]) -> asyncio.Future[tuple[bool, Any]]:
        """One RPC of ``wire="direct"``: the request and its answer, a loop turn each."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        proto = self.nodes.get(dst)
        if proto is None:
            self.lost += 1
            fut.set_result((False, None))
            return fut

        def deliver() -> None:
            handler = getattr(proto, f"rpc_{name}", None)
            answer = handler(src, *args) if callable(handler) else None
            self.datagrams += 1  # the answer
            loop.call_soon(fut.set_result, (True, plain(answer)))

        self.datagrams += 1  # the request
        loop.call_soon(deliver)
        return fut

    def send(self, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> None:
        proto = self.nodes.get(dst)
        if proto is None:
            self.lost += 1
            return
        self.datagrams += 1
        self.bytes += len(data)
        asyncio.get_running_loop().call_soon(proto.datagram_received, data, src)


class DirectProtocol(AvmProtocol):
    """``AvmProtocol`` whose outgoing RPCs go through :meth:`MemoryNetwork.call`."""

    net: MemoryNetwork | None = None  # a class default: __getattr__ never makes an RPC of it

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name.startswith("rpc_"):
            return super().__getattr__(name)
        net = self.net
        if net is None:
            raise AttributeError(name)

        def rpc(address: Any, *args: Any) -> asyncio.Future[tuple[bool, Any]]:
            return net.call(self.transport.addr, tuple(address), name, plain(args))

        return rpc


class ForgingProtocol(AvmProtocol):
    """A hostile node: it routes honestly but answers every FIND_VALUE with a forgery.

    If it holds the record asked for, it hands out a tampered copy (other endpoints, the
    original signature); if not, a valid record of its own, signed by its own key, for
    its own address. Either way a resolver must refuse it and keep looking.
    """

    forged = 0
    own: bytes = b""

    def rpc_find_value(self, sender: Any, nodeid: Any, key: Any) -> Any:
        if type(key) is not bytes:
            return None
        self.forged += 1
        held = self.storage.get(key)
        if held is None:
            if not self.own:
                ident = IdentityKey.from_seed(b"sim-hostile" + self.source_node.id * 2)
                self.own = make_record(ident, ["10.6.6.6:1"], seq=SEQ_FORGED,
                                       issued_ms=self.storage.clock_ms(), ttl_ms=3600_000).data
            return {"value": self.own}
        m = codec.decode(held)
        return {"value": codec.encode(Map({**m, "ep": ("10.6.6.6:1",), "seq": SEQ_FORGED}))}


class ForgingDirect(ForgingProtocol, DirectProtocol):
    """:class:`ForgingProtocol` on the ``direct`` wire."""


#: The sequence number forgers claim: higher than any honest one, so a resolver that
#: took the highest sequence without checking signatures would pick the forgery.
SEQ_FORGED = (1 << 62)


@dataclass
class SimReport:
    """What a simulated run measured."""

    nodes: int
    seed: int
    wire: str
    ksize: int
    alpha: int
    join_seconds: float
    contacts_mean: float
    records: int
    lookups: int
    found: int
    hops: list[int] = field(default_factory=list)       # round of the first valid record
    rounds: list[int] = field(default_factory=list)     # rounds of the whole lookup
    lookup_seconds: float = 0.0
    datagrams: int = 0
    hostile: int = 0          # nodes that forge every FIND_VALUE answer
    forged_answers: int = 0   # forgeries they handed out
    refused: int = 0          # values lookups refused (invalid)
    wrong: int = 0            # lookups that returned a record other than the one published

    def percentile(self, xs: list[int], q: float) -> int:
        s = sorted(xs)
        return s[min(len(s) - 1, int(q * len(s)))] if s else 0


async def build(n: int, *, seed: int = 1, ksize: int = 20, alpha: int = 3,
                clock_ms: Any = None, values_wanted: int = 1, wire: str = "direct",
                hostile: float = 0.0) -> tuple[MemoryNetwork, list[DhtNode]]:
    """``n`` nodes that joined one by one, each through a random earlier node.

    A fraction ``hostile`` of them (drawn by the seed) are :class:`ForgingProtocol` nodes.
    """
    rng = random.Random(seed)
    bad = random.Random(seed + 7)
    net = MemoryNetwork()
    clock = clock_ms if clock_ms is not None else (lambda: 1_700_000_000_000)
    nodes: list[DhtNode] = []
    for i in range(n):
        d = DhtNode(ksize=ksize, alpha=alpha, node_id=rng.randbytes(20),
                    storage=RecordStorage(clock_ms=clock), clock_ms=clock,
                    values_wanted=values_wanted, wait_timeout=5.0)
        net.add(d, ("127.0.0.1", 20000 + i), wire, hostile=bad.random() < hostile)
        if nodes:
            via = nodes[rng.randrange(len(nodes))]
            await d.bootstrap([via.transport.addr])
        nodes.append(d)
    return net, nodes


async def run(n: int = 1000, *, records: int = 50, lookups: int = 300, seed: int = 1,
              ksize: int = 20, alpha: int = 3, values_wanted: int = 1,
              wire: str = "direct", hostile: float = 0.0) -> SimReport:
    """Build a network of ``n`` nodes, publish ``records``, do ``lookups``; measure."""
    rng = random.Random(seed + 1)
    t0 = time.perf_counter()
    net, nodes = await build(n, seed=seed, ksize=ksize, alpha=alpha,
                             values_wanted=values_wanted, wire=wire, hostile=hostile)
    join = time.perf_counter() - t0
    now = 1_700_000_000_000
    published: list[RouteRecord] = []
    for i in range(records):
        key = IdentityKey.from_seed(seed.to_bytes(8, "big") + i.to_bytes(8, "big") * 4)
        rec = make_record(key, [f"127.0.0.1:{7000 + i}"], seq=1, issued_ms=now,
                          ttl_ms=3600_000)
        await nodes[rng.randrange(n)].put(rec)
        published.append(rec)
    report = SimReport(nodes=n, seed=seed, wire=wire, ksize=ksize, alpha=alpha, join_seconds=join,
                       contacts_mean=sum(d.contacts() for d in nodes) / n,
                       records=records, lookups=lookups, found=0)
    sent = net.datagrams
    t1 = time.perf_counter()
    for _ in range(lookups):
        rec = published[rng.randrange(records)]
        asker = nodes[rng.randrange(n)]
        # get() asks the network even when the asker holds a copy itself
        found: Lookup = await asker.get(rec.address)
        if found.record is not None and found.record.data == rec.data:
            report.found += 1
        elif found.record is not None:
            report.wrong += 1
        report.refused += found.invalid
        report.rounds.append(found.rounds)
        report.hops.append(found.found_in_round if found.found_in_round is not None else 0)
    report.lookup_seconds = time.perf_counter() - t1
    report.datagrams = net.datagrams - sent
    forgers = [d.protocol for d in nodes if isinstance(d.protocol, ForgingProtocol)]
    report.hostile = len(forgers)
    report.forged_answers = sum(p.forged for p in forgers)
    for d in nodes:
        d.stop()
    return report
