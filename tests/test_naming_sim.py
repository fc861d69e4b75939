"""A 1,000-node DHT simulated in one process resolves records in <= log2(N) hops (issue 8).

The simulation (:mod:`avm.naming.sim`) runs the ``kademlia`` package's protocol,
routing tables and crawls for every node; nodes join one by one through a random earlier
node. A hop is one round of the iterative lookup. The ``direct`` wire skips MessagePack
but is checked here to build exactly the same routing tables as the ``datagram`` wire
(rpcudp's real encoding), and :func:`~avm.naming.sim.plain` to give what MessagePack gives.
"""

from __future__ import annotations

import asyncio
import math

import umsgpack
from hypothesis import given
from hypothesis import strategies as st

from avm.naming.sim import build, plain, run

LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=30),
                 st.text(max_size=10), st.floats(allow_nan=False))
TREE = st.recursive(LEAF, lambda c: st.one_of(
    st.lists(c, max_size=4), st.lists(c, max_size=4).map(tuple),
    st.dictionaries(st.text(max_size=5), c, max_size=3)), max_leaves=20)


@given(TREE)
def test_plain_is_what_msgpack_gives_back(v):
    assert plain(v) == umsgpack.unpackb(umsgpack.packb(v))
    assert type(plain(v)) is type(umsgpack.unpackb(umsgpack.packb(v)))


def test_the_direct_wire_builds_the_tables_the_datagram_wire_builds():
    async def tables(wire: str) -> list[list[bytes]]:
        net, nodes = await build(80, seed=3, wire=wire)
        out = [sorted(n.id for b in d.protocol.router.buckets for n in b.nodes.values())
               for d in nodes]
        assert net.datagrams > 80 * 10 and net.lost == 0
        for d in nodes:
            d.stop()
        return out

    direct, datagram = asyncio.run(tables("direct")), asyncio.run(tables("datagram"))
    assert direct == datagram
    assert min(len(t) for t in direct) >= 20  # every node knows at least k others


def test_a_1000_node_dht_resolves_in_at_most_log2_n_hops():
    n = 1000
    report = asyncio.run(run(n, records=40, lookups=300, seed=1, wire="direct"))
    assert report.found == report.lookups == 300  # every lookup found the right record
    bound = math.log2(n)
    assert max(report.rounds) <= bound, sorted(report.rounds)[-10:]
    assert max(report.hops) <= bound
    # the count is real: lookups take one round at least, and some take several
    assert min(report.hops) >= 1 and max(report.hops) >= 2
    # the network is a real Kademlia one: nobody knows everybody
    assert 20 <= report.contacts_mean < n / 4


def test_with_a_quarter_of_the_nodes_forging_every_lookup_still_gets_the_real_record():
    # hostile nodes route honestly but answer FIND_VALUE with a tampered copy (another
    # endpoint, a higher sequence, the original signature) or their own valid record
    report = asyncio.run(run(300, records=20, lookups=150, seed=2, hostile=0.25))
    assert report.hostile > 50 and report.forged_answers > 100
    assert report.refused == report.forged_answers  # every forgery handed out was refused
    assert report.wrong == 0 and report.found == report.lookups
    assert max(report.rounds) <= math.log2(300)
