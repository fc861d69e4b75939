"""The weights of records are remembered by identity (avm.core.values._RECORD_WEIGHTS):
a remembered weight is the one a fresh walk gives, and still bounds the encoding."""

from __future__ import annotations

from avm import Sim, encode
from avm.core import values as v


def test_a_remembered_record_weight_is_the_fresh_one_and_bounds_the_encoding():
    import examples.bank as bank

    sim = Sim(seed=2)
    bank.build(sim)
    sim.run()
    caps = [sim.cap(n) for n in sorted(sim.net.names)][:5]
    v._RECORD_WEIGHTS.clear()
    first = [v._weigh(c) for c in caps]
    assert all(id(c) in v._RECORD_WEIGHTS for c in caps)
    again = [v._weigh(c) for c in caps]
    v._RECORD_WEIGHTS.clear()
    fresh = [v._weigh(c) for c in caps]
    assert first == again == fresh
    for c, (b, _i) in zip(caps, fresh, strict=True):
        assert len(encode(c)) <= b
    # a full cache is emptied, never grown past its bound
    for k in range(v._RECORD_WEIGHTS_MAX + 10):
        v._weigh(sim.cap(sorted(sim.net.names)[0], ("ctx", k)))
    assert len(v._RECORD_WEIGHTS) <= v._RECORD_WEIGHTS_MAX
