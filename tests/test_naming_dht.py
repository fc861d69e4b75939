"""The DHT and resolution on real kademlia nodes over UDP on 127.0.0.1 (issue 8, item 4).

Several ``DhtNode`` s in one process, each on its own loopback socket: publish and
resolve; what hostile peers send (forged, wrong key, expired, oversized, garbage) is
refused by the storage of honest nodes and by the resolver; the newest record wins;
republication renews records before they expire; a host with no DHT resolves from its
local table. Waits are on conditions, with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from avm.core import codec
from avm.core.caps import IdentityKey
from avm.core.values import Map
from avm.naming import records
from avm.naming.dht import AvmProtocol, DhtNode, parse_nodes
from avm.naming.records import RecordError, dht_key, make_record
from avm.naming.resolver import Naming

KEY_A = IdentityKey.from_seed(b"dht-test-a" * 4)
KEY_B = IdentityKey.from_seed(b"dht-test-b" * 4)
MINUTE = 60_000


class Clock:
    """A wall clock in ms that tests move by hand (shared by every node of a test)."""

    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


async def until(pred: Callable[[], Any], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def network(n: int, clock: Clock, **kw) -> list[DhtNode]:
    nodes = [DhtNode(clock_ms=clock, wait_timeout=1.0, **kw) for _ in range(n)]
    for d in nodes:
        await d.listen("127.0.0.1", 0)
    first = nodes[0].address
    for d in nodes[1:]:
        assert await d.bootstrap([first]) >= 1
    for d in nodes:  # every node learns the others (the network is small)
        await d.bootstrap([nodes[-1].address])
    return nodes


def stop(nodes: list[DhtNode]) -> None:
    for d in nodes:
        d.stop()


def rec(key=KEY_A, *, seq=1, clock: Clock, ttl=10 * MINUTE, endpoints=("127.0.0.1:7400",)):
    return make_record(key, endpoints, seq=seq, issued_ms=clock(), ttl_ms=ttl)


def forged(clock: Clock) -> bytes:
    body = {"v": 1, "res": codec.encode(KEY_A.resource()), "ep": ("10.0.0.66:7400",),
            "host": None, "seq": 99, "iss": clock(), "exp": clock() + MINUTE}
    sig = KEY_B.sign(records.ROUTE_SIG_LABEL + codec.encode(Map(body)))
    return codec.encode(Map({**body, "sig": sig}))


def bad_values(clock: Clock) -> dict[str, bytes]:
    return {
        "signature": forged(clock),
        "address": rec(KEY_B, clock=clock).data,  # valid, but B's record under A's key
        "expired": make_record(KEY_A, ["127.0.0.1:1"], seq=1, issued_ms=clock() - 2 * MINUTE,
                               ttl_ms=MINUTE).data,
        "size": b"\xa0" * (records.RECORD_BYTES_MAX + 1),
        "decode": os.urandom(200),
    }


def test_publish_and_resolve_across_five_nodes():
    async def main():
        clock = Clock()
        nodes = await network(5, clock)
        try:
            pub = Naming(KEY_A, ["127.0.0.1:7400"], dht=nodes[0], clock_ms=clock)
            mine = await pub.publish()
            held = [d for d in nodes if d.storage.get(dht_key(mine.address)) == mine.data]
            assert len(held) == 5  # ksize 20 > 5 nodes: every node is among the closest
            for d in nodes[1:]:
                r = Naming(KEY_B, dht=d, clock_ms=clock)
                got = await r.resolve(pub.address)
                assert got is not None and got.data == mine.data
                assert await r.resolve_endpoints(pub.address) == ("127.0.0.1:7400",)
            # an address nobody published resolves to nothing
            nobody = Naming(KEY_B, dht=nodes[3], clock_ms=clock)
            assert await nobody.resolve(Naming(IdentityKey.from_seed(b"z" * 32)).address) is None
            assert nobody.statistics().unresolved == 1
        finally:
            stop(nodes)

    asyncio.run(main())


@pytest.mark.parametrize("reason", ["signature", "address", "expired", "size", "decode"])
def test_honest_storage_refuses_bad_records_sent_over_the_wire(reason):
    async def main():
        clock = Clock()
        nodes = await network(2, clock)
        try:
            sender, target = nodes
            value = bad_values(clock)[reason]
            key = dht_key(Naming(KEY_A).address)
            ok, took = await sender.protocol.store(target.address, sender.node.id, key, value)
            assert ok and took is False  # an answer at once, saying no
            assert len(target.storage) == 0
            assert target.storage.statistics().refused == {reason: 1}
            # and the sender's own put refuses to send it at all
            if reason != "address":
                with pytest.raises(RecordError):
                    await sender.put(value)
        finally:
            stop(nodes)

    asyncio.run(main())


class HostileProtocol(AvmProtocol):
    """Answers every FIND_VALUE with the value it was given, stores nothing honest."""

    evil: Any = None

    def rpc_find_value(self, sender, nodeid, key):
        return {"value": self.evil}


async def hostile_node(clock: Clock, evil: Any) -> DhtNode:
    d = DhtNode(clock_ms=clock, wait_timeout=1.0)
    d.protocol = HostileProtocol(d.node, d.storage, d.ksize, 1.0)
    d.protocol.evil = evil
    await d.listen("127.0.0.1", 0)
    return d


@pytest.mark.parametrize("reason", ["signature", "address", "expired", "size", "decode",
                                    "not-bytes", "unhashable"])
def test_resolution_refuses_what_a_hostile_node_returns(reason):
    async def main():
        clock = Clock()
        evil = {"not-bytes": 12345, "unhashable": [b"x", {"a": 1}]}.get(reason)
        evil = bad_values(clock)[reason] if evil is None else evil
        bad = await hostile_node(clock, evil)
        resolver = DhtNode(clock_ms=clock, wait_timeout=1.0)
        await resolver.listen()
        try:
            assert await resolver.bootstrap([bad.address]) == 1
            naming = Naming(KEY_B, dht=resolver, clock_ms=clock)
            assert await naming.resolve(Naming(KEY_A).address) is None
            assert naming.statistics().refused == {"dht": 1}
            # an honest node with the real record beside the hostile one: the real one wins
            honest = DhtNode(clock_ms=clock, wait_timeout=1.0)
            await honest.listen()
            good = rec(clock=clock)
            assert honest.storage.offer(dht_key(good.address), good.data) is None
            await resolver.bootstrap([honest.address])
            got = await naming.resolve(good.address)
            assert got is not None and got.data == good.data
            honest.stop()
        finally:
            bad.stop()
            resolver.stop()

    asyncio.run(main())


def test_the_newest_record_wins():
    async def main():
        clock = Clock()
        nodes = await network(5, clock, values_wanted=10)
        try:
            old = rec(seq=1, clock=clock)
            clock.ms += 1
            new = rec(seq=2, clock=clock, endpoints=("127.0.0.1:7500",))
            newer_issue = rec(seq=1, clock=clock, endpoints=("127.0.0.1:7600",))  # seq wins
            key = dht_key(old.address)
            for d in nodes[1:4]:
                assert d.storage.offer(key, old.data) is None
            assert nodes[4].storage.offer(key, new.data) is None
            assert nodes[2].storage.offer(key, newer_issue.data) is None
            got = await Naming(KEY_B, dht=nodes[0], clock_ms=clock).resolve(old.address)
            assert got is not None and got.data == new.data
            # a later issue with the same sequence beats an earlier one
            clock.ms += 1
            renewed = rec(seq=2, clock=clock, endpoints=("127.0.0.1:7500",))
            assert nodes[1].storage.offer(key, renewed.data) is None
            got = await Naming(KEY_B, dht=nodes[0], clock_ms=clock).resolve(old.address)
            assert got is not None and got.data == renewed.data
            # and a replayed old record cannot push the new one out of a node that has it
            ok, took = await nodes[0].protocol.store(nodes[4].address, nodes[0].node.id, key,
                                                     old.data)
            assert ok and took is False and nodes[4].storage.get(key) == new.data
        finally:
            stop(nodes)

    asyncio.run(main())


def test_republication_renews_the_record_before_it_expires():
    async def main():
        clock = Clock()
        nodes = await network(3, clock)
        try:
            pub = Naming(KEY_A, ["127.0.0.1:7400"], dht=nodes[0], clock_ms=clock,
                         ttl_seconds=60, republish_seconds=0.05)
            key = dht_key(pub.address)
            pub.start()
            await until(lambda: nodes[2].storage.get(key) is not None)
            first = nodes[2].storage.record(key)
            clock.ms += 50_000  # close to expiry; republication renews it
            await until(lambda: nodes[2].storage.record(key) is not None
                        and nodes[2].storage.record(key).issued_ms == clock.ms)
            renewed = nodes[2].storage.record(key)
            assert renewed.seq == first.seq and renewed.expires_ms == clock.ms + 60_000
            clock.ms += 30_000  # past the first record's expiry: still resolvable
            await until(lambda: nodes[1].storage.record(key) is not None)
            r = Naming(KEY_B, dht=nodes[1], clock_ms=clock)
            assert (await r.resolve(pub.address)) is not None
            # new endpoints: a higher sequence, published by the same task
            pub.set_endpoints(["127.0.0.1:7401"])
            await until(lambda: nodes[2].storage.record(key).endpoints == ("127.0.0.1:7401",))
            assert nodes[2].storage.record(key).seq > first.seq
            await pub.stop()
            # no more republication: the record expires and resolution finds nothing
            clock.ms += 61_000
            r2 = Naming(KEY_B, dht=nodes[1], clock_ms=clock)
            assert await r2.resolve(pub.address) is None
            assert pub.statistics().published >= 2  # the last may be cancelled in flight
        finally:
            stop(nodes)

    asyncio.run(main())


def test_a_host_without_a_dht_resolves_from_its_local_table():
    async def main():
        clock = Clock()
        a = Naming(KEY_A, ["127.0.0.1:7400"], clock_ms=clock)
        b = Naming(KEY_B, ["127.0.0.1:7500"], clock_ms=clock)
        mine = await a.publish()
        assert (await a.resolve(a.address)) == mine
        assert await a.resolve(b.address) is None
        a.learn((await b.publish()).data)
        assert await a.resolve_endpoints(b.address) == ("127.0.0.1:7500",)
        with pytest.raises(RecordError):
            a.learn(forged(clock))
        with pytest.raises(RecordError):
            a.learn((await b.publish()).data, address=a.address)  # B's record as A's
        assert a.statistics().refused == {"signature": 1, "address": 1}
        # a machine's record names its host; endpoints come from the host's record
        m = Naming(KEY_B, metadata=(("name", "counter"),), host=a.address, clock_ms=clock)
        a.learn((await m.publish()).data)
        assert await a.resolve_endpoints(m.address) == ("127.0.0.1:7400",)
        # records expire from the local table too
        clock.ms += 3600_000
        assert await a.resolve(b.address) is None

    asyncio.run(main())


def test_naming_refuses_bad_settings():
    with pytest.raises(Exception, match="republish"):
        Naming(KEY_A, ["127.0.0.1:1"], ttl_seconds=10, republish_seconds=10)
    with pytest.raises(Exception, match="endpoint"):
        Naming(KEY_A, ["localhost:1"])


def test_garbage_datagrams_are_counted_and_the_node_keeps_answering():
    async def main():
        clock = Clock()
        nodes = await network(2, clock)
        try:
            target = nodes[1]
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            mid = os.urandom(20)
            import umsgpack
            junk = [
                b"\x00" + mid + os.urandom(100),                      # not msgpack
                b"\x00" + mid + b"\x91" * 3000,                       # nested too deep
                b"\x00" + mid + umsgpack.packb(["store", [1, 2, 3, 4]]),  # wrong arity
                b"\x00" + mid + umsgpack.packb(["find_node", [b"x"]]),    # wrong arity
                b"\x00" + mid + umsgpack.packb(["ping", [{"a": 1}]]),
                b"\x00" + mid + umsgpack.packb(["store", [b"short id", os.urandom(20), b"v"]]),
                b"\x00" + mid + b"\xc1" * 50,                         # reserved code
                b"\x00" + mid + b"\x00" * (records.RECORD_BYTES_MAX * 5),  # oversized
                b"\x00" + mid + umsgpack.packb({"a": 1}),
            ]
            for d in junk:
                sock.sendto(d, target.address)
            await until(lambda: sum(target.protocol.dropped.values()) == len(junk))
            sock.close()
            ok, their_id = await nodes[0].protocol.ping(target.address, nodes[0].node.id)
            assert ok and their_id == target.node.id
            assert dict(target.protocol.dropped) == {"malformed": 6, "arguments": 2, "size": 1}
            stats = target.statistics()
            assert stats.dropped == {"malformed": 6, "arguments": 2, "size": 1}
            # no contact with a malformed id got into the routing table
            ids = [n.id for b in target.protocol.router.buckets for n in b.nodes.values()]
            assert ids and all(type(i) is bytes and len(i) == 20 for i in ids)
            assert stats.contacts >= 1 and stats.storage.records == 0
        finally:
            stop(nodes)

    asyncio.run(main())


def test_parse_nodes_skips_garbage():
    nid = os.urandom(20)
    good = [nid, "127.0.0.1", 9000]
    payload = [good, [b"short", "127.0.0.1", 1], [nid, "not-an-ip", 1], [nid, "1.2.3.4", 0],
               [nid, "1.2.3.4", True], "x", None, [nid, "1.2.3.4"], good]
    nodes = parse_nodes(payload, 20)
    assert [(n.id, n.ip, n.port) for n in nodes] == [(nid, "127.0.0.1", 9000)] * 2
    assert parse_nodes({"value": 1}, 20) == [] and parse_nodes(None, 20) == []
    assert len(parse_nodes([good] * 100, 5)) == 5
    assert parse_nodes([good], 5, exclude=nid) == []


def test_find_neighbors_is_exact_where_the_package_traverser_misses():
    import heapq
    import random

    from kademlia.node import Node
    from kademlia.routing import RoutingTable

    from avm.naming.dht import AvmRoutingTable

    class Stub:
        async def call_ping(self, node):
            return None

    async def main():
        rng = random.Random(7)
        upstream_short = 0
        for _ in range(20):
            me = Node(rng.randbytes(20))
            ours, theirs = AvmRoutingTable(Stub(), 20, me), RoutingTable(Stub(), 20, me)
            for _ in range(150):
                n = Node(rng.randbytes(20), "127.0.0.1", rng.randrange(1, 65536))
                ours.add_contact(n)
                theirs.add_contact(n)
            known = [n for b in ours.buckets for n in b.nodes.values()]
            for _ in range(50):
                t = Node(rng.randbytes(20))
                want = heapq.nsmallest(20, known, key=t.distance_to)
                assert [n.id for n in ours.find_neighbors(t)] == [n.id for n in want]
            # contacts in the last two buckets stop answering and are removed: a target
            # in the last bucket then gets no neighbors at all from the package's traverser
            for table in (ours, theirs):
                for b in table.buckets[-2:]:
                    for n in list(b.nodes.values()):
                        table.remove_contact(n)
            t = Node(rng.randbytes(20))
            t.long_id = ours.buckets[-1].range[1] - 1
            t.id = t.long_id.to_bytes(20, "big")
            known = [n for b in ours.buckets for n in b.nodes.values()]
            assert len(ours.find_neighbors(t)) == min(20, len(known)) > 0
            upstream_short += theirs.find_neighbors(t) == []
        assert upstream_short > 0  # the package's traverser does miss every contact

    asyncio.run(main())



def test_resolution_takes_the_newest_of_the_local_table_and_the_dht():
    async def main():
        clock = Clock()
        nodes = await network(3, clock)
        try:
            one, two, three = (rec(seq=s, clock=clock, endpoints=(f"127.0.0.1:{7400 + s}",))
                               for s in (1, 2, 3))
            key = dht_key(one.address)
            for d in nodes[1:]:
                assert d.storage.offer(key, two.data) is None
            behind = Naming(KEY_B, dht=nodes[0], clock_ms=clock)
            behind.learn(one.data)  # the local table is behind the DHT
            assert (await behind.resolve(one.address)).seq == 2
            assert behind.local[one.address].seq == 2  # and catches up
            ahead = Naming(KEY_B, dht=nodes[0], clock_ms=clock)
            ahead.learn(three.data)  # the local table is ahead of the DHT
            assert (await ahead.resolve(one.address)).seq == 3
        finally:
            stop(nodes)

    asyncio.run(main())


def test_a_lookup_keeps_going_until_it_has_values_wanted_records():
    """A knows P1 (holds seq 1) and P3 (no record, knows P2, which holds seq 2).

    Round 1 asks P1 and P3 together: one record, and P2's address. With values_wanted=2
    the lookup goes on to ask P2 in round 2 and returns the newer record; stopping at
    the first record found would return the old one.
    """
    from kademlia.node import Node

    from avm.naming.sim import MemoryNetwork

    async def main():
        clock = Clock()
        net = MemoryNetwork()
        a, p1, p2, p3 = (DhtNode(clock_ms=clock, wait_timeout=1.0, values_wanted=2)
                         for _ in range(4))
        for i, d in enumerate((a, p1, p2, p3)):
            net.add(d, ("127.0.0.1", 30000 + i))
        old, new = rec(seq=1, clock=clock), rec(seq=2, clock=clock)
        key = dht_key(old.address)
        assert p1.storage.offer(key, old.data) is None
        assert p2.storage.offer(key, new.data) is None
        def know(x, y):
            x.protocol.router.add_contact(Node(y.node.id, *y.transport.addr))
        know(a, p1)
        know(a, p3)
        know(p3, p2)
        got = await a.get(old.address)
        assert got.record is not None and got.record.seq == 2
        assert (got.rounds, got.found_in_round, got.valid) == (2, 1, 2)
        for d in (a, p1, p2, p3):
            d.stop()

    asyncio.run(main())
