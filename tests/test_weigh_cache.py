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


def test_a_capability_checked_once_is_known_good_and_a_forged_one_never_is():
    """capability_problem remembers the objects that passed (by identity, holding them):
    a forged capability (built around the constructor) is refused every time, however
    close to a good one."""
    import examples.bank as bank

    from avm.core import machine as mc
    from avm.core.caps import Capability

    sim = Sim(seed=2)
    bank.build(sim)
    sim.run()
    good = sim.cap(sorted(sim.net.names)[0])
    mc._GOOD_CAPS.clear()
    assert mc.capability_problem(good) is None
    assert mc._GOOD_CAPS.get(id(good)) is good
    assert mc.capability_problem(good) is None
    forged = tuple.__new__(Capability, (good.address, -1, *tuple(good)[2:]))
    for _ in range(2):
        assert mc.capability_problem(forged) is not None
    assert id(forged) not in mc._GOOD_CAPS
    for k in range(mc._GOOD_CAPS_MAX + 10):
        mc.capability_problem(sim.cap(sorted(sim.net.names)[0], ("ctx", k)))
    assert len(mc._GOOD_CAPS) <= mc._GOOD_CAPS_MAX
