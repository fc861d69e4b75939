"""One-shot rights across steps, batches, runs and hosts (issue 5, item 3).

Linearity is checked within one step. A machine that is not honest can keep a linear
capability's *bytes* in its state and rebuild an equal capability in a later step, and a
client can submit bytes it saw before; only the issuer can refuse the second redemption.
``avm.patterns.OneShots`` is that pattern: these tests attack it with every way of
rebuilding a capability and count redemptions at the issuer.
"""

from __future__ import annotations

import random

import pytest

import avm
from avm import Capability, Linear, Map, decode, encode
from avm.core.caps import commons_cap
from avm.core.errors import AvmError, CapabilityError
from avm.core.patterns import ONE_SHOT, OneShots, Spent, is_one_shot

# -- the issuer ----------------------------------------------------------------------------

shop = avm.Behavior("tests.trust.shop")


@shop.init
def _shop_init(_state, _args):
    return [], Map(me=None, null=None, shots=OneShots(), redeemed=())


@shop.signal("self")
def _shop_self(state, me):
    return [], state.set("me", me)


@shop.signal("env")
def _shop_env(state, env):
    return [], state.set("null", env["null"])


@shop.on("issue", context="admin")
def _shop_issue(state, what, reply):
    shots, cap, _ = state["shots"].issue(state["me"], what)
    return [(reply, ("voucher", cap))], state.set("shots", shots)


@shop.on("redeem")
def _shop_redeem(state, *, ctx):
    shots, inner, outs = state["shots"].redeem(ctx, state["null"])
    return outs, state.update(shots=shots, redeemed=(*state["redeemed"], inner))


# -- a holder that is not honest -------------------------------------------------------------


def _rebuild(kept: bytes, how: str) -> Capability:
    cap = decode(kept)
    if how == "fields":
        return Capability(cap.address, cap.keyver, cap.kind, cap.priority, cap.sealed)
    if how == "uri":
        return Capability.from_uri(cap.to_uri())
    return cap


cheat = avm.Behavior("tests.trust.cheat")


@cheat.init
def _cheat_init(_state, _args):
    return [], Map(kept=None)


@cheat.on("voucher")
def _cheat_voucher(state, cap):
    # Uses the voucher once, as a linear value must be used, but keeps its bytes.
    return [(cap, "redeem")], state.set("kept", encode(cap))


@cheat.on("replay")
def _cheat_replay(state, how, copies):
    # A later step mints "new" linear capabilities from the bytes it kept.
    return [(_rebuild(state["kept"], how), "redeem") for _ in range(copies)], state


def _world(seed: int, hosts: tuple[str, ...] = ()) -> avm.Sim:
    sim = avm.Sim(seed=seed)
    for h in hosts:
        sim.add_host(h, exist_ok=True)
    sim.spawn("shop", shop, None, host=hosts[0] if hosts else None)
    sim.spawn("cheat", cheat, None, host=hosts[-1] if hosts else None)
    sim.run()
    return sim


def _redeemed(sim: avm.Sim, what) -> int:
    return sum(1 for r in sim.state("shop")["redeemed"] if r == what)


def test_one_shot_right_is_redeemed_once_however_it_is_rebuilt():
    sim = _world(1)
    sim.send(sim.cap("shop", "admin"), ("issue", "pie", sim.cap("cheat", "in")))
    sim.run()
    assert _redeemed(sim, "pie") == 1  # the honest first use
    kept = sim.state("cheat")["kept"]
    assert type(kept) is bytes
    for how in ("bytes", "fields", "uri"):
        sim.send(sim.cap("cheat", "in"), ("replay", how, 1))   # from a later step
        sim.run()
        sim.send(_rebuild(kept, how), "redeem")                  # from a client
        sim.run()
    assert _redeemed(sim, "pie") == 1
    assert sim.state("shop")["shots"].outstanding == Map()
    spent = [f for f in sim.failures("shop") if f.error_type == "Spent"]
    assert len(spent) >= 3  # the clients' copies; the cheat's may also fail at the cheat


def test_one_shot_right_across_many_batches_steps_and_hosts():
    rng = random.Random(5)
    sim = _world(2, hosts=("h0", "h1"))
    admin = sim.cap("shop", "admin")
    sim.submit([(admin, ("issue", n, sim.cap("cheat", "in"))) for n in range(4)])
    sim.run()
    kept = {sim.state("cheat")["kept"]}
    for round_ in range(30):
        how = rng.choice(("bytes", "fields", "uri"))
        if round_ % 10 == 9:  # the issuer moves; its state (the spent check) moves with it
            sim.move("shop", "h1" if sim.machine("shop").host == "h0" else "h0")
        sim.send(sim.cap("cheat", "in"), ("replay", how, rng.randint(1, 3)))
        for k in kept:
            sim.send(_rebuild(k, how), "redeem")
        sim.run()
        kept.add(sim.state("cheat")["kept"])
    # each voucher was used once, honestly, when it arrived; every copy was refused
    assert [_redeemed(sim, n) for n in range(4)] == [1, 1, 1, 1]
    assert len(sim.state("shop")["redeemed"]) == 4


def test_replayed_bytes_from_an_earlier_run_and_a_restart_are_refused():
    sim = _world(3)
    probe = sim.probe("holder")
    sim.send(sim.cap("shop", "admin"), ("issue", "ticket", probe))
    sim.run()
    [(_, voucher)] = sim.received("holder")
    wire = encode(voucher)
    sim.send(voucher, "redeem")
    sim.run()
    assert _redeemed(sim, "ticket") == 1
    for _ in range(5):  # later runs of the same network, each with bytes saved earlier
        sim.send(decode(wire), "redeem")
        sim.run()
    image = sim.export_machine("shop")  # stop, export and import: the spent check survives
    sim.import_machine(image)
    sim.run()
    sim.send(decode(wire), "redeem")
    sim.run()
    assert _redeemed(sim, "ticket") == 1


def test_a_failed_redemption_did_not_happen():
    # The batch that redeems fails after the redemption: the state rolls back, so the
    # right is still outstanding and its holder can try again.
    sim = _world(4)
    probe = sim.probe("holder")
    sim.send(sim.cap("shop", "admin"), ("issue", "x", probe))
    sim.run()
    [(_, voucher)] = sim.received("holder")
    wire = encode(voucher)
    sim.submit([(voucher, "redeem"), (sim.cap("shop", "x"), "no such message")])
    sim.run()
    assert _redeemed(sim, "x") == 0
    assert sim.state("shop")["shots"].is_outstanding(0)
    sim.send(decode(wire), "redeem")
    sim.run()
    assert _redeemed(sim, "x") == 1


# -- the record on its own -----------------------------------------------------------------


class _FakeSelf:
    def __call__(self, ctx, priority=0.0):
        return ctx  # stands in for sealing: the test reads the context it would seal


def test_one_shots_issue_redeem_cancel():
    sim = avm.Sim(seed=9)
    sim.spawn("m", avm.Behavior("tests.trust.empty"), None)
    shots = OneShots()
    shots, ctx0, n0 = shots.issue(_FakeSelf(), "a", label="alice")
    shots, ctx1, n1 = shots.issue(_FakeSelf(), "b")
    assert (n0, n1) == (0, 1) and shots.is_outstanding(0) and shots.is_outstanding(1)
    assert type(ctx0) is Linear and ctx0.value == (ONE_SHOT, 0, "a") and is_one_shot(ctx0)
    assert shots.outstanding == Map({0: "alice", 1: None})
    null_cap = commons_cap(sim.address("m"), "null")
    after, inner, outs = shots.redeem(ctx0, null_cap)
    assert inner == "a" and outs == [(null_cap, ctx0)] and outs[0][1] is ctx0
    assert not after.is_outstanding(0) and after.is_outstanding(1) and after.next == 2
    with pytest.raises(Spent):
        after.redeem(Linear((ONE_SHOT, 0, "a")), null_cap)
    with pytest.raises(Spent):  # a number never issued is refused the same way
        after.redeem(Linear((ONE_SHOT, 7, "a")), null_cap)
    assert isinstance(Spent("x"), CapabilityError)
    cancelled = after.cancel(1)
    with pytest.raises(Spent):
        cancelled.redeem(ctx1, null_cap)
    assert cancelled.cancel(1) == cancelled
    for bad in ((ONE_SHOT, 0, "a"), Linear(("grant", 0, "a")), Linear((ONE_SHOT, "0", "a")),
                avm.Affine((ONE_SHOT, 0, "a"))):
        assert not is_one_shot(bad)
        with pytest.raises(CapabilityError):
            after.redeem(bad, null_cap)
    with pytest.raises(AvmError, match="null"):
        shots.redeem(ctx1, sim.cap("m", "x"))
    # a value like any other: it encodes, decodes and compares
    assert decode(encode(after)) == after


# -- the other patterns, pinned where a mutation run found them loose ------------------------


class _PrioritySelf:
    """Records the priority each context was sealed with."""

    def __call__(self, ctx, priority=0.0):
        return (ctx, priority)


def test_grants_and_one_shots_keep_their_counter_and_priority():
    from avm.core.patterns import GRANT, Grants, is_grant

    g, (ctx, prio), n = Grants().issue(_PrioritySelf(), "in", priority=0.5)
    assert prio == 0.5 and g.number(ctx) == n == 0 and g.is_live(0)
    assert g.revoke(0).next == 1 and g.revoke_label(None).next == 1
    with pytest.raises(CapabilityError):
        g.number(("other", 0, "in"))
    for bad in (("other", 1, "x"), ("grant",), (GRANT, "1", "x"), [GRANT, 1, "x"], None):
        assert not is_grant(bad), bad
    assert Grants().issue(_PrioritySelf(), "in")[1][1] == 0.0  # the default priority
    assert OneShots().issue(_PrioritySelf(), "in")[1][1] == 0.0
    s, (lin, prio), _ = OneShots().issue(_PrioritySelf(), "in", priority=-0.25)
    assert prio == -0.25 and s.number(lin) == 0
    assert s.cancel(0).next == 1 and s.cancel(0).outstanding == Map()
    assert s.cancel(5) == s


def test_forwarder_helpers_pass_everything_on():
    from avm.core.patterns import ADMIN, USE, forwarder_caps, membrane_args, revoke_all

    sim = _world(6)
    target, reply = sim.cap("shop", "t"), sim.cap("cheat", "r")
    assert membrane_args(target, ["a"], reply) == membrane_args(target, ["a"], reply=reply)
    assert membrane_args(target, ["a"], reply).reply == reply
    assert forwarder_caps(sim, "shop") == (sim.cap("shop", USE), sim.cap("shop", ADMIN))
    use, admin = forwarder_caps(sim, "shop", 0.5)
    assert (use, admin) == (sim.cap("shop", USE, 0.5), sim.cap("shop", ADMIN, 0.5))
    [again] = revoke_all(sim, "shop", reissue=["admin"])
    assert again == sim.cap("shop", "admin")  # the reissued context, under the new key
