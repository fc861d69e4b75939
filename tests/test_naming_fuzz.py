"""Hostile input to a DHT node: any datagram, any answer, never a crash (issue 8, item 4).

Invariants: a datagram of any bytes, or any MessagePack request, is answered, ignored or
counted as dropped, and the node keeps working and stores nothing invalid; any answer a
peer gives to FIND_NODE parses to well-formed nodes or to nothing.
"""

from __future__ import annotations

import asyncio
import os

import umsgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from avm.core.caps import IdentityKey
from avm.naming.dht import DhtNode, parse_nodes
from avm.naming.records import dht_key, make_record, verify_record
from avm.naming.sim import MemoryNetwork

NOW = 1_700_000_000_000
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                 st.binary(max_size=40), st.text(max_size=10), st.floats())
VALUE = st.recursive(LEAF, lambda c: st.one_of(
    st.lists(c, max_size=5), st.dictionaries(st.text(max_size=6), c, max_size=3)),
    max_leaves=25)
ID = st.one_of(st.binary(min_size=20, max_size=20), VALUE)
REQUEST = st.one_of(
    st.tuples(st.sampled_from(["ping", "store", "find_node", "find_value", "stun", "nope",
                               "_timeout", "__init__"]),
              st.lists(st.one_of(ID, VALUE), max_size=5)).map(list),
    VALUE)


async def _pair() -> tuple[MemoryNetwork, DhtNode, DhtNode]:
    net = MemoryNetwork()
    a = DhtNode(clock_ms=lambda: NOW, wait_timeout=2.0)
    b = DhtNode(clock_ms=lambda: NOW, wait_timeout=2.0)
    net.add(a, ("127.0.0.1", 1))
    net.add(b, ("127.0.0.1", 2))
    await a.bootstrap([("127.0.0.1", 2)])
    return net, a, b


async def _settle(node: DhtNode) -> None:
    # a few loop turns: every request is decoded and handled
    for _ in range(30):
        await asyncio.sleep(0)


@settings(max_examples=150)
@given(reqs=st.lists(st.one_of(REQUEST.map(lambda r: b"\x00" + os.urandom(20) + umsgpack.packb(r)),
                               st.binary(max_size=120)), min_size=1, max_size=6))
def test_any_datagram_leaves_the_node_working(reqs):
    async def main():
        net, a, b = await _pair()
        for data in reqs:
            # from a's address: whatever node ids the junk claims, requests b then sends
            # there are answered (a dead address would only cost time-outs)
            b.protocol.datagram_received(data, ("127.0.0.1", 1))
        await _settle(b)
        ok, their = await a.protocol.ping(("127.0.0.1", 2), a.node.id)
        assert ok and their == b.node.id
        for key, value in b.storage:  # whatever arrived, nothing invalid was kept
            verify_record(value, now_ms=NOW, key=key)
        # and the node still stores and serves a real record
        rec = make_record(IdentityKey.from_seed(b"fuzz" * 8), ["127.0.0.1:1"], seq=1,
                          issued_ms=NOW, ttl_ms=60_000)
        assert await a.put(rec) >= 1
        assert b.storage.get(dht_key(rec.address)) == rec.data
        a.stop()
        b.stop()

    asyncio.run(main())


@given(VALUE, st.integers(1, 30))
def test_any_find_node_answer_parses_or_is_skipped(payload, k):
    nodes = parse_nodes(payload, k)
    assert len(nodes) <= k
    for n in nodes:
        assert type(n.id) is bytes and len(n.id) == 20 and 0 < n.port < 65536


@given(st.lists(st.tuples(st.binary(min_size=20, max_size=20),
                          st.sampled_from(["127.0.0.1", "::1", "10.0.0.1", "x", ""]),
                          st.integers(-5, 70000)).map(list), max_size=40))
def test_node_lists_keep_exactly_the_well_formed_triples(triples):
    nodes = parse_nodes(triples, 100)
    want = [t for t in triples if t[1] in ("127.0.0.1", "::1", "10.0.0.1") and 0 < t[2] < 65536]
    assert [[n.id, n.ip, n.port] for n in nodes] == want[:100]
