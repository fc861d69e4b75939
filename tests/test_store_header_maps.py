"""The store's header encodes a large map field entry by entry (a busy sender's outbox),
and what it writes is byte for byte what encoding the whole network header gives."""

from __future__ import annotations

from examples.counter import counter

from avm import Sim
from avm.core.delivery import add_peer_host, add_remote, receive_ack, send_batch
from avm.host.store import _header, _HeaderCache


def _busy_sender(n: int):
    sim = Sim(seed=3)
    sim.spawn("c", counter, 0)
    net = add_peer_host(sim.net, "~b", bytes(32))
    far = bytes([9]) * 32
    net = add_remote(net, far, "~b")
    cap = sim.cap("c", "main")
    host = sorted(h for h in net.hosts if not h.startswith("~"))[0]
    for i in range(n):
        net, _ = send_batch(net, ("client", f"k{i % 7}"), far, ((cap, ("add", i)),), host, 1.0)
    return net, far


def test_a_large_outbox_header_is_the_canonical_encoding_commit_after_commit():
    net, far = _busy_sender(300)
    cache = _HeaderCache()
    assert cache.ok
    assert len(net.outbox) == 300
    assert cache(net) == _header(net)
    # the next commit: some acked, some new; unchanged entries come from the cache
    for k in range(3):
        net = receive_ack(net, (("client", f"k{k}"), far), 20)
    host = sorted(h for h in net.hosts if not h.startswith("~"))[0]
    net, _ = send_batch(net, ("client", "new"), far, (), host, 1.0)
    assert len(cache.entries["outbox"]) == 300
    assert cache(net) == _header(net)
    assert len(cache.entries["outbox"]) == len(net.outbox) < 300


def test_a_small_map_field_is_encoded_whole():
    net, _ = _busy_sender(5)
    cache = _HeaderCache()
    assert cache(net) == _header(net)
    assert "outbox" not in cache.entries
