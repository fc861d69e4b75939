"""Revocation and attenuation patterns (DESIGN section 5): caretaker, membrane, grants,
key rotation. Each test drives real machines in the simulator and looks at what arrived
and which batches failed, and why."""

from __future__ import annotations

import pytest

import avm
from avm import Linear, Map
from avm.core.caps import SealingKey, seal_context
from avm.core.errors import AvmError, CapabilityError
from avm.core.network import events
from avm.core.patterns import (
    ADMIN,
    USE,
    Forward,
    Grants,
    Refused,
    Revoked,
    caretaker,
    caretaker_args,
    forwarder_caps,
    membrane,
    membrane_args,
    message_name,
    revoke_all,
)


@avm.record(name="tests.patterns.Ping")
class Ping:
    n: int


@avm.record(name="tests.patterns.Poke")
class Poke:
    n: int


def failures(sim: avm.Sim, name: str) -> list[avm.Failure]:
    """Failures of batches applied at machine ``name``, in order."""
    addr = sim.address(name)
    return [e.failure for e in sim.trace
            if type(e) is events.Applied and e.dest == addr and not e.ok]


def applied_ok(sim: avm.Sim, name: str) -> list[events.Applied]:
    addr = sim.address(name)
    return [e for e in sim.trace if type(e) is events.Applied and e.dest == addr and e.ok]


def sim_with_caretaker(**kw) -> tuple[avm.Sim, avm.Capability, avm.Capability]:
    sim = avm.Sim(seed=1, **kw)
    target = sim.probe("target")
    sim.spawn("ct", caretaker(), target)
    use, admin = forwarder_caps(sim, "ct")
    return sim, use, admin


# -- caretaker ---------------------------------------------------------------------------


def test_caretaker_forwards_a_batch_as_one_batch_in_order():
    sim, use, _ = sim_with_caretaker()
    sim.submit([(use, ("a", 1)), (use, "b"), (use, Ping(3))])
    assert sim.run().quiescent
    assert sim.received("target") == (("a", 1), "b", Ping(3))
    from_ct = [e for e in applied_ok(sim, "target") if e.chan[0] == sim.address("ct")]
    assert [e.steps for e in from_ct] == [3]  # rule 3 holds through the forwarder


def test_caretaker_revoked_refuses_every_later_message():
    sim, use, admin = sim_with_caretaker()
    sim.send(use, "before")
    sim.run()
    sim.send(admin, "revoke")
    sim.run()
    sim.submit([(use, "after"), (use, "again")])
    sim.run()
    assert sim.received("target") == ("before",)
    [f] = failures(sim, "ct")
    assert f.error_type == "Revoked" and f.rule == "exception" and f.index == 0
    # Revocation also forgets the target: nothing in the state can reach it any more.
    assert sim.state("ct")["target"] is None and sim.state("ct")["revoked"] is True


def test_authority_is_the_context_not_the_content():
    # "revoke" sent through the use capability is forwarded like any other message, and
    # the admin capability does not forward.
    sim, use, admin = sim_with_caretaker()
    sim.send(use, "revoke")
    sim.send(admin, "hello")
    sim.run()
    assert sim.received("target") == ("revoke",)
    assert sim.state("ct")["revoked"] is False
    [f] = failures(sim, "ct")
    assert "takes 'revoke'" in f.detail


def test_unknown_context_fails():
    sim, _, _ = sim_with_caretaker()
    sim.send(sim.cap("ct", "other"), "x")
    sim.run()
    [f] = failures(sim, "ct")
    assert f.error_type == "CapabilityError"
    assert sim.received("target") == ()


def test_caretaker_forwards_linear_content_and_conserves_it():
    sim, use, _ = sim_with_caretaker()
    token = Linear("token")
    sim.send(use, ("give", token))
    sim.run()
    assert sim.received("target") == (("give", token),)
    assert failures(sim, "ct") == []


def test_caretaker_refuses_a_linear_target():
    sim = avm.Sim(seed=1)
    sim.spawn("sink", avm.Behavior("sink"), None)
    sim.spawn("ct", caretaker(), sim.cap("sink", Linear("once")))
    sim.run()
    [f] = failures(sim, "ct")
    assert "unrestricted" in f.detail
    assert sim.state("ct") is None  # the creation batch did not apply


def test_caretaker_refuses_bad_init_arguments():
    sim = avm.Sim(seed=1)
    sim.spawn("ct", caretaker(), "not a capability")
    sim.run()
    [f] = failures(sim, "ct")
    assert "caretaker_args" in f.detail


def test_many_caretakers_share_one_behavior():
    assert caretaker() is caretaker()
    assert caretaker("a") is not caretaker("b")
    sim = avm.Sim(seed=1)
    t = sim.probe("t")
    sim.spawn("c1", caretaker(), t)
    sim.spawn("c2", caretaker(), caretaker_args(t))
    sim.send(forwarder_caps(sim, "c1")[0], 1)
    sim.run()
    sim.send(forwarder_caps(sim, "c2")[0], 2)
    sim.run()
    assert sim.received("t") == (1, 2)


owner = avm.Behavior("tests.patterns.owner")


@owner.init
def _owner_init(_s, _a):
    return [], Map(use=None, admin=None)


@owner.on("caretaker")
def _owner_got(s, use, admin, *, ctx):
    assert ctx == "got"
    return [], s.update(use=use, admin=admin)


@owner.on("use")
def _owner_use(s, content):
    return [(s["use"], content)], s


@owner.on("revoke")
def _owner_revoke(s):
    return [(s["admin"], "revoke")], s


def test_a_machine_gets_the_caretaker_capabilities_by_message():
    # No spawn primitive: whoever creates the caretaker names a reply capability, and the
    # caretaker hands over (use, admin) there once it knows its Self.
    sim = avm.Sim(seed=1)
    t = sim.probe("t")
    sim.spawn("owner", owner, None)
    sim.spawn("ct", caretaker(), caretaker_args(t, reply=sim.cap("owner", "got")))
    sim.run()
    assert sim.state("owner")["use"] == sim.cap("ct", USE)
    assert sim.state("ct")["reply"] is None  # handed over once, then forgotten
    o = sim.cap("owner", "cmd")
    sim.send(o, ("use", "one"))
    sim.run()
    sim.send(o, "revoke")
    sim.run()
    sim.send(o, ("use", "two"))
    sim.run()
    assert sim.received("t") == ("one",)
    assert [f.error_type for f in failures(sim, "ct")] == ["Revoked"]


class Account:
    """A tiny ledger: a withdraw below zero raises."""

    b = avm.Behavior("tests.patterns.account")

    @staticmethod
    @b.on("add")
    def add(s, n):
        if s + n < 0:
            raise ValueError("overdrawn")
        return [], s + n


def test_forwarding_keeps_atomicity():
    sim = avm.Sim(seed=1)
    sim.spawn("acct", Account.b, 10)
    sim.spawn("ct", caretaker(), sim.cap("acct", "a"))
    use, _ = forwarder_caps(sim, "ct")
    sim.submit([(use, ("add", 5)), (use, ("add", -100))])  # one batch, forwarded as one
    sim.run()
    assert sim.state("acct") == 10  # the +5 was not applied either
    [f] = failures(sim, "acct")
    assert f.index == 1 and "overdrawn" in f.detail


# -- membrane ------------------------------------------------------------------------------


def sim_with_membrane(allow, **kw):
    sim = avm.Sim(seed=2, **kw)
    t = sim.probe("target")
    sim.spawn("m", membrane(), membrane_args(t, allow))
    return sim, *forwarder_caps(sim, "m")


def test_membrane_passes_allowed_names_only():
    sim, use, _ = sim_with_membrane(("read", "list"))
    sim.send(use, ("read", "page"))
    sim.send(use, "list")
    sim.send(use, ("write", "page", "x"))
    sim.send(use, "delete")
    sim.send(use, 42)  # no name at all
    sim.run()
    assert sim.received("target") == (("read", "page"), "list")
    fs = failures(sim, "m")
    assert [f.error_type for f in fs] == ["Refused"] * 3
    assert "'write'" in fs[0].detail and "['list', 'read']" in fs[0].detail


def test_membrane_refuses_a_mixed_batch_as_a_whole():
    sim, use, _ = sim_with_membrane(("read",))
    sim.submit([(use, ("read", 1)), (use, ("write", 2)), (use, ("read", 3))])
    sim.run()
    assert sim.received("target") == ()
    [f] = failures(sim, "m")
    assert f.index == 1


def test_membrane_allows_records_by_registered_name():
    sim, use, _ = sim_with_membrane((Ping, "hello"))
    sim.run()
    assert sim.state("m")["allow"] == tuple(sorted(("tests.patterns.Ping", "hello")))
    sim.send(use, Ping(1))
    sim.send(use, Poke(2))
    sim.run()
    assert sim.received("target") == (Ping(1),)
    assert [f.error_type for f in failures(sim, "m")] == ["Refused"]


def test_membrane_is_revocable():
    sim, use, admin = sim_with_membrane(("read",))
    sim.send(use, ("read", 1))
    sim.run()
    sim.send(admin, "revoke")
    sim.run()
    sim.send(use, ("read", 2))
    sim.run()
    assert sim.received("target") == (("read", 1),)
    assert [f.error_type for f in failures(sim, "m")] == ["Revoked"]


def test_membrane_needs_an_allow_list():
    sim = avm.Sim(seed=1)
    t = sim.probe("t")
    sim.spawn("m", membrane(), Forward(t))
    sim.run()
    [f] = failures(sim, "m")
    assert "allow-list" in f.detail


def test_membrane_args_check_their_names():
    with pytest.raises(AvmError, match="not a record"):
        membrane_args(avm.Sim().probe("p"), (int,))
    with pytest.raises(AvmError, match="by text or record class"):
        membrane_args(avm.Sim().probe("p"), (3,))


def test_message_name():
    assert message_name("get") == "get"
    assert message_name(("add", 1)) == "add"
    assert message_name(Ping(1)) == "tests.patterns.Ping"
    assert message_name(()) is None
    assert message_name((1, 2)) is None
    assert message_name(3) is None


# -- grants: caretaker contexts inside one machine -----------------------------------------


class FakeSelf:
    """Stands in for Self in pure unit tests: the 'capability' is the context itself."""

    def __call__(self, ctx, priority=0.0):
        return ctx


def test_grants_issue_open_revoke():
    g = Grants()
    g, c1, n1 = g.issue(FakeSelf(), ("member", "ann"), label="ann")
    g, c2, n2 = g.issue(FakeSelf(), ("member", "bo"), label="bo")
    assert (n1, n2) == (0, 1) and g.is_live(n1) and g.is_live(n2)
    assert g.open(c1) == ("member", "ann")
    g = g.revoke(n1)
    with pytest.raises(Revoked):
        g.open(c1)
    assert g.open(c2) == ("member", "bo")
    assert g.revoke(n1) == g  # revoking twice changes nothing


def test_grants_numbers_are_never_reused():
    g, c, _ = Grants().issue(FakeSelf(), "x", label="ann")
    g = g.revoke_label("ann")
    g, c2, n2 = g.issue(FakeSelf(), "x", label="ann")
    assert n2 == 1
    with pytest.raises(Revoked):
        g.open(c)  # the old capability stays dead although "ann" was granted again
    assert g.open(c2) == "x"


def test_grants_revoke_label_and_reject_non_grants():
    g = Grants()
    for who in ("a", "b", "a"):
        g, _, _ = g.issue(FakeSelf(), who, label=who)
    g = g.revoke_label("a")
    assert dict(g.live) == {1: "b"}
    with pytest.raises(CapabilityError):
        g.open(("member", "a"))
    with pytest.raises(CapabilityError):
        g.number("nope")


def test_grants_are_values():
    g, _, _ = Grants().issue(FakeSelf(), "x", label="a")
    assert avm.decode(avm.encode(g)) == g


door = avm.Behavior("tests.patterns.door")


@door.init
def _door_init(_s, _a):
    return [], Map(me=None, grants=Grants())


@door.signal("self")
def _door_self(s, me):
    return [], s.set("me", me)


@door.on("grant")
def _door_grant(s, who, reply, *, ctx):
    grants, cap, _ = s["grants"].issue(s["me"], ("guest", who), label=who)
    return [(reply, ("key", cap))], s.set("grants", grants)


@door.on("revoke")
def _door_revoke(s, who, *, ctx):
    return [], s.set("grants", s["grants"].revoke_label(who))


@door.on("enter")
def _door_enter(s, reply, *, ctx):
    return [(reply, ("welcome", s["grants"].open(ctx)[1]))], s


def test_grants_in_a_machine():
    sim = avm.Sim(seed=3)
    sim.spawn("door", door, None)
    p = sim.probe("p")
    admin = sim.cap("door", "admin")
    sim.send(admin, ("grant", "ann", p))
    sim.run()
    key = sim.received("p")[0][1]
    sim.send(key, ("enter", p))
    sim.run()
    sim.send(admin, ("revoke", "ann"))
    sim.run()
    sim.send(key, ("enter", p))
    sim.run()
    assert sim.received("p")[1:] == (("welcome", "ann"),)
    assert [f.error_type for f in failures(sim, "door")] == ["Revoked"]
    # Nor can a holder forge a live grant number: the context is sealed by the door's key.
    forged = seal_context(sim.address("door"), SealingKey.from_seed(b"mallory"),
                          ("grant", 1, ("guest", "ann")))
    sim.send(forged, ("enter", p))
    sim.run()
    assert failures(sim, "door")[-1].rule == "unseal"
    assert len(sim.received("p")) == 2


# -- key rotation --------------------------------------------------------------------------


minter = avm.Behavior("tests.patterns.minter")


@minter.init
def _minter_init(_s, _a):
    return [], Map(me=None, hits=0)


@minter.signal("self")
def _minter_self(s, me):
    return [], s.set("me", me)


@minter.on("mint")
def _minter_mint(s, reply):
    return [(reply, ("cap", s["me"]("hit")))], s


@minter.on("hit")
def _minter_hit(s):
    return [], s.set("hits", s["hits"] + 1)


def test_revoke_all_by_key_rotation():
    sim = avm.Sim(seed=5)
    sim.spawn("m", minter, None)
    p = sim.probe("p")
    old_direct = sim.cap("m", "x")
    sim.send(old_direct, ("mint", p))  # the machine hands out a capability it minted
    sim.run()
    old_minted = sim.received("p")[0][1]
    sim.send(old_minted, "hit")
    sim.run()
    assert sim.state("m")["hits"] == 1

    [kept] = revoke_all(sim, "m", reissue=["x"])
    sim.run()
    sim.send(old_minted, "hit")
    sim.send(old_direct, ("mint", p))
    sim.run()
    assert sim.state("m")["hits"] == 1
    fs = failures(sim, "m")
    assert [f.rule for f in fs] == ["unseal", "unseal"]
    assert all("retired" in f.detail for f in fs)

    # Reissued capabilities work, and so do the ones the machine mints after rotation:
    # the runtime handed it its new Self.
    sim.send(kept, ("mint", p))
    sim.run()
    new_minted = sim.received("p")[-1][1]
    sim.send(new_minted, "hit")
    sim.run()
    assert sim.state("m")["hits"] == 2
    assert len(failures(sim, "m")) == 2


def test_contexts_are_constants():
    assert (USE, ADMIN) == ("use", "admin")
    assert issubclass(Revoked, CapabilityError) and issubclass(Refused, CapabilityError)
