"""Conservation leftovers (issue 5, items 9 and 11): what a client submits crosses as a
host would decode it; the census follows the operator's acts by itself; dead letters can
be redelivered and cleared; a one-shot voucher that comes back can be taken back.
"""

from __future__ import annotations

import pytest

from avm import (
    Behavior,
    Capability,
    CapabilityError,
    InvariantViolation,
    Linear,
    Map,
    Relevant,
    Sim,
    UnknownName,
    UsageError,
)
from avm.core.caps import Self, siv_sealer_pair
from avm.core.errors import AvmError
from avm.core.network import events
from avm.core.patterns import OneShots
from avm.core.values import LINEAR, Sealed, replace_fields
from avm.testing import check_census, heal, make_sim, run_until_quiescent, watch_census

# ---------------------------------------------------------------------------------------
# Item 11: a client's submission arrives as a host decodes it
# ---------------------------------------------------------------------------------------

keeper = Behavior("conserve2.keeper")


@keeper.init
def _k_init(state, _args):
    return [], Map({"me": None, "seen": ()})


@keeper.signal("self")
def _k_self(state, me):
    return [], state.set("me", me)


@keeper.otherwise
def _k_any(state, content):
    """Record, for every Self found in what arrived, whether it can mint here."""
    found: list = []
    _selves(content, found)
    seen = []
    for s in found:
        try:
            s("anything")
            seen.append("bound")
        except CapabilityError:
            seen.append("unbound")
    return [], state.set("seen", (*state["seen"], *seen)).set("last", content)


def _selves(v, out: list) -> None:
    if type(v) is Self:
        out.append(v)
    elif type(v) is tuple:
        for x in v:
            _selves(x, out)
    elif type(v) is Map:
        for x in v.values():
            _selves(x, out)


def _keepers(hosts=("h0",)) -> Sim:
    sim = Sim(seed=11, hosts=hosts)
    sim.spawn("a", keeper, None, host=hosts[0])
    sim.spawn("b", keeper, None, host=hosts[-1])
    sim.run()
    return sim


@pytest.mark.parametrize("hosts", [("h0",), ("h0", "h1")])
@pytest.mark.parametrize("wrap", ["bare", "tuple", "map", "nested map"])
def test_a_bound_self_submitted_by_a_client_arrives_unbound(hosts, wrap):
    sim = _keepers(hosts)
    me = sim.state("a")["me"]  # the operator reads a's state: a bound Self
    me("x")  # it can mint here, in the client's hands (the simulator holds every key)
    content = {"bare": me, "tuple": ("take", me), "map": Map({"me": me}),
               "nested map": ("take", Map({"deep": Map({"me": me})}))}[wrap]
    sim.send(sim.cap("b"), content)
    sim.run()
    assert sim.state("b")["seen"] == ("unbound",)  # b cannot mint a's capabilities


@pytest.mark.parametrize("wrap", ["bare", "map"])
def test_a_self_submitted_to_its_own_machine_is_bound_there(wrap):
    sim = _keepers()
    me = sim.state("a")["me"]
    unbound = Self(me.address, me.keyver)  # as a client decodes it
    sim.send(sim.cap("a"), unbound if wrap == "bare" else Map({"me": unbound}))
    sim.run()
    assert sim.state("a")["seen"] == ("bound",)  # home: its host binds it


def test_held_plaintext_of_a_submission_never_reaches_the_receiver():
    sim = _keepers()
    plain = ("take", (1, 2), Map({"k": (b"v", 2.5)}))  # nothing to strip: queued as it is
    sim.send(sim.cap("b"), plain)
    [b] = [x for x in sim.net.pending._m.values() if x.sender == ("client", "client")]
    assert b.messages[0][1] is plain
    sealer, _ = siv_sealer_pair(b"s" * 64)
    secret = sealer.seal("plain")  # unrestricted: nothing substructural in the submission
    odd = Sealed(secret.sealer, secret.payload, True, secret.kind, ("plain",))
    cap = sim.cap("a", "ctx")
    held = Capability(cap.address, cap.keyver, cap.kind, cap.priority, cap.sealed, held=("ctx",))
    sim.send(sim.cap("b"), ("take", Map({"sealed": odd, "cap": held})))
    sim.run()
    got = sim.state("b")["last"][1]
    assert got["sealed"]._held == () and got["cap"]._held == ()
    assert got["sealed"] == odd and got["cap"] == held  # the same values otherwise


# ---------------------------------------------------------------------------------------
# Item 9: the census follows the operator's acts by itself
# ---------------------------------------------------------------------------------------

wallet = Behavior("conserve2.wallet")


@wallet.init
def _w_init(state, coins):
    return [], Map({"coins": coins, "env": None, "back": 0})


@wallet.signal("env")
def _w_env(state, env):
    return [], state.set("env", env)


@wallet.on("spend")
def _w_spend(state, target, *prefix):
    coin, *rest = state["coins"]
    return [(target, (*prefix, coin))], state.set("coins", tuple(rest))


@wallet.on("coin")
def _w_coin(state, c):
    return [], state.set("coins", (*state["coins"], c))


@wallet.on("null_one")
def _w_null(state):
    coin, *rest = state["coins"]
    return [(state["env"]["null"], coin)], state.set("coins", tuple(rest))


@wallet.returned
def _w_returned(state, info):
    got = tuple(content[-1] for _cap, content in info["values"])
    return [], state.set("coins", (*state["coins"], *got)).set("back", state["back"] + len(got))


breaker = Behavior("conserve2.breaker")


@breaker.otherwise
def _break(state, content):
    raise ValueError("refused on purpose")


ignorer = Behavior("conserve2.ignorer")  # takes nothing back: ~returned is ignored
ignorer.init(_w_init)


def _wallets(hosts=("h0",), seed=1, coins=("c1", "c2")) -> Sim:
    sim = Sim(seed=seed, hosts=hosts)
    watch_census(sim)
    sim.spawn("w", wallet, tuple(Linear(c) for c in coins), host=hosts[0])
    sim.spawn("v", wallet, (), host=hosts[-1])
    sim.run()
    return sim


def test_the_census_counts_an_exported_machine_as_values_leaving():
    sim = _wallets(("h0", "h1"))
    sim.send(sim.cap("w"), ("spend", sim.cap("v"), "coin"))  # one coin on its way to v
    sim.run(3)
    image = sim.export_machine("w")  # its state leaves the network
    sim.send(sim.cap("v"), ("coin", Linear("late")))
    sim.run()
    report = check_census(sim).assert_ok()
    assert report.exported == 1 and image.state["coins"] == (Linear("c2"),)
    assert report.census.linear == 2  # v's c1 and the client's late coin
    assert any(type(e) is events.Operator and e.act == "export" for e in sim.trace)


def test_the_census_counts_an_imported_machine_as_values_entering():
    src = _wallets()
    image = src.export_machine("w")
    dst = Sim(seed=2)
    watch_census(dst)
    dst.behavior(wallet)
    dst.spawn("v", wallet, ())
    dst.run()
    dst.import_machine(image)
    dst.send(dst.cap("w"), ("spend", dst.cap("v"), "coin"))
    dst.run()
    report = check_census(dst).assert_ok()
    assert report.imported == 2 and report.census.linear == 2
    assert dst.state("v")["coins"] == (Linear("c1"),)
    assert check_census(src).assert_ok().exported == 2


def test_the_census_follows_a_machine_exported_and_imported_again_with_capabilities_to_it():
    sim = _wallets()
    # v holds a linear capability to w (its context is a linear ticket)
    ticket = sim.cap("w", Linear("ticket"))
    sim.send(sim.cap("v"), ("coin", ticket))
    sim.run()
    image = sim.export_machine("w")
    sim.run()
    sim.import_machine(image)
    sim.send(sim.cap("v"), ("spend", sim.cap("w"), "coin"))  # v's first coin: the ticket
    sim.run()
    report = check_census(sim).assert_ok()
    assert report.exported == report.imported == 2
    assert ticket in sim.state("w")["coins"]


user = Behavior("conserve2.user")


@user.init
def _u_init(state, tickets):
    return [], Map({"tickets": tickets, "back": 0})


@user.on("use")
def _u_use(state):
    t, *rest = state["tickets"]
    return [(t, "hello")], state.set("tickets", tuple(rest))


@user.returned
def _u_returned(state, info):
    caps = tuple(cap for cap, _content in info["values"])
    return [], state.set("tickets", (*state["tickets"], *caps)).set("back", state["back"] + 1)


target = Behavior("conserve2.target")


@target.init
def _t_init(state, _args):
    return [], Map({"got": ()})


@target.on("hello")
def _t_hello(state, *, ctx):
    return [], state.set("got", (*state["got"], ctx))


@pytest.mark.parametrize("hosts", [("h0",), ("h0", "h1")])
def test_revoked_linear_capabilities_keep_counting_until_they_come_back(hosts):
    """rotate_key without keep_old: the capabilities issued under the old key cannot be
    redeemed any more, but they still exist. The census counts them as before (by their
    context: it remembers every key); a batch that goes through one fails as `unseal`
    and gives it back to its sender."""
    sim = Sim(seed=5, hosts=hosts)
    watch_census(sim)
    sim.spawn("t", target, None, host=hosts[-1])
    sim.run()
    tickets = (sim.cap("t", Linear("t1")), sim.cap("t", Linear("t2")))
    sim.spawn("u", user, tickets, host=hosts[0])
    sim.run()
    sim.send(sim.cap("u"), "use")
    sim.run()
    assert sim.state("t")["got"] == (Linear("t1"),)
    sim.send(sim.cap("u"), "use")
    while not sim.state("u")["tickets"] == ():  # u sent t2: its batch is queued or in flight
        sim.step()
    sim.rotate_key("t")
    sim.run()
    assert [f.rule for f in sim.failures("t")] == ["unseal"]
    assert sim.state("u")["back"] == 1 and sim.state("u")["tickets"] == (tickets[1],)
    report = check_census(sim).assert_ok()
    assert report.census.linear == 2 and report.rebased == 0
    assert any(type(e) is events.Operator and e.act == "rotate" and e.detail == "revoke"
               for e in sim.trace)


def test_restoring_a_snapshot_is_followed_and_an_edited_network_needs_rebase():
    sim = _wallets()
    snap = sim.snapshot()
    sim.send(sim.cap("w"), ("null_one",))  # destroys c1
    sim.send(sim.cap("v"), ("coin", Linear("gift")))
    sim.run()
    assert check_census(sim).assert_ok().census.linear == 2  # c2 and the gift
    sim.restore(snap)  # back to c1 and c2: the census follows by itself
    sim.send(sim.cap("w"), ("spend", sim.cap("v"), "coin"))
    sim.run()
    report = check_census(sim).assert_ok()
    assert report.census.linear == 2 and report.restored == 0  # 2 before, 2 after
    assert sim.state("v")["coins"] == (Linear("c1"),)
    # An edited network is a deliberate edit: caught, unless rebase() accepts it.
    m = sim.machine("w")
    doctored = replace_fields(sim.net, machines=sim.net.machines.set(
        sim.address("w"), replace_fields(m, state=m.state.set("coins", (Linear("forged"),)))))
    sim.restore(doctored)
    with pytest.raises(InvariantViolation, match="rebase"):
        sim.run()
    watch = watch_census(sim)
    sim.restore(doctored)
    watch.rebase()
    sim.send(sim.cap("w"), ("spend", sim.cap("v"), "coin"))
    sim.run()
    report = check_census(sim)
    assert report.rebased == 0 and report.census.linear == 2  # forged replaced c2: no change
    assert report.census.items == {Linear("c1"): 1, Linear("forged"): 1}
    assert report.start + report.injected + report.created - report.nulled \
        + report.imported - report.exported + report.restored + report.rebased \
        == report.census.linear


def test_restoring_a_snapshot_with_fewer_values_reports_the_change():
    sim = _wallets()
    sim.send(sim.cap("w"), ("null_one",))
    sim.run()
    snap = sim.snapshot()  # c2 only
    sim.send(sim.cap("v"), ("coin", Linear("gift")))
    sim.run()
    sim.restore(snap)
    sim.run()
    report = check_census(sim).assert_ok()
    assert report.restored == -1 and report.census.linear == 1 and report.injected == 3


# ---------------------------------------------------------------------------------------
# Item 9: dead letters can be redelivered and cleared, and the census stays right
# ---------------------------------------------------------------------------------------


def _dead_letter_world(hosts=("h0", "h1")) -> Sim:
    sim = Sim(seed=21, hosts=hosts)
    watch_census(sim)
    sim.spawn("w", wallet, (), host=hosts[0])
    sim.spawn("b", breaker, None, host=hosts[-1])
    sim.spawn("i", ignorer, (), host=hosts[0])
    sim.run()
    sim.submit([(sim.cap("b"), ("coin", Linear("x"))), (sim.cap("b"), ("coin", Relevant("r")))])
    sim.send(sim.cap("b"), ("coin", Linear("y")))
    sim.run()
    return sim


def test_a_dead_letter_can_be_redelivered_to_a_machine_of_the_operators_choice():
    sim = _dead_letter_world()
    letters = sim.dead_letters()
    assert [(e["host"], e["index"]) for e in letters] == [("h1", 0), ("h1", 1)]
    sim.redeliver_dead_letter("h1", 1, to="w")  # the Linear("y") one, across hosts
    assert len(sim.dead_letters()) == 1
    sim.run()
    assert sim.state("w")["coins"] == (Linear("y"),) and sim.state("w")["back"] == 1
    [act] = [e for e in sim.trace if type(e) is events.Operator]
    assert act.act == "redeliver" and act.subject == "h1" and "to w" in act.detail
    assert "OPERATOR redeliver" in sim.format(act)
    stats = sim.stats()
    assert stats["dead-letters.redelivered"] == 1 and stats["dead-letters.redelivered.messages"] == 1
    report = check_census(sim).assert_ok()
    assert report.census.places["states"] == 1 and report.census.places["dead letters"] == 1


def test_a_redelivered_letter_that_is_not_taken_back_is_a_dead_letter_again():
    sim = _dead_letter_world()
    sim.redeliver_dead_letter("h1", 0, to="i")  # i ignores ~returned: its batch fails
    sim.run()
    letters = sim.dead_letters()
    assert len(letters) == 2
    again = [e for e in letters if e["host"] == "h0"]
    assert len(again) == 1 and "redelivered by the operator" in again[0]["reason"]
    assert {c for _cap, (_n, c) in again[0]["values"]} == {Linear("x"), Relevant("r")}
    check_census(sim).assert_ok()


def test_clearing_dead_letters_sends_them_to_null():
    sim = _dead_letter_world()
    assert sim.clear_dead_letters("h1", 1) == 1
    sim.run()
    assert len(sim.dead_letters()) == 1
    assert sim.stats()["null.linear"] == 1 and sim.stats()["dead-letters.cleared"] == 1
    assert check_census(sim).assert_ok().nulled == 1
    assert sim.clear_dead_letters() == 1
    sim.run()
    assert sim.dead_letters() == ()
    report = check_census(sim).assert_ok()
    assert report.nulled == 2 and report.census.linear == 0 and report.census.relevant == 0
    assert [e.act for e in sim.trace if type(e) is events.Operator] == ["clear", "clear"]
    assert sim.clear_dead_letters() == 0


def test_dead_letter_acts_refuse_caller_mistakes():
    sim = _dead_letter_world()
    with pytest.raises(UnknownName):
        sim.redeliver_dead_letter("nowhere", 0, to="w")
    with pytest.raises(UnknownName):
        sim.redeliver_dead_letter("h1", 0, to="nobody")
    with pytest.raises(UsageError):
        sim.redeliver_dead_letter("h1", 5, to="w")
    with pytest.raises(UsageError):
        sim.clear_dead_letters(index=0)
    sim.stop("w")
    with pytest.raises(UsageError, match="stopped"):
        sim.redeliver_dead_letter("h1", 0, to="w")
    assert len(sim.dead_letters()) == 2  # nothing taken by a refused act
    check_census(sim).assert_ok()


# ---------------------------------------------------------------------------------------
# Item 9 and patterns.OneShots: a voucher that comes back to its issuer
# ---------------------------------------------------------------------------------------

issuer = Behavior("conserve2.issuer")


@issuer.init
def _i_init(state, _args):
    return [], Map(me=None, null=None, shots=OneShots(), rest=(), rights=())


@issuer.signal("self")
def _i_self(state, me):
    return [], state.set("me", me)


@issuer.signal("env")
def _i_env(state, env):
    return [], state.set("null", env["null"])


@issuer.on("issue")
def _i_issue(state, what, reply, *extra):
    shots, cap, _ = state["shots"].issue(state["me"], what, label=what)
    return [(reply, ("voucher", cap, *extra))], state.set("shots", shots)


@issuer.on("redeem")
def _i_redeem(state, *, ctx):
    shots, _inner, outs = state["shots"].redeem(ctx, state["null"])
    return outs, state.set("shots", shots)


@issuer.returned
def _i_returned(state, info):
    shots, outs, rest, rights = state["shots"].returned(state["me"], info, state["null"])
    return outs, state.update(shots=shots, rest=(*state["rest"], *rest),
                              rights=(*state["rights"], *rights))


def test_a_voucher_that_comes_back_is_cancelled_and_destroyed():
    sim = Sim(seed=31, hosts=("h0", "h1"))
    watch_census(sim)
    sim.spawn("shop", issuer, None, host="h0")
    sim.spawn("b", breaker, None, host="h1")
    sim.spawn("p", keeper, None, host="h1")
    sim.run()
    sim.send(sim.cap("shop"), ("issue", "pie", sim.cap("b")))  # b's step fails: it comes back
    sim.send(sim.cap("shop"), ("issue", "tart", sim.cap("p")))  # delivered
    sim.run()
    shots = sim.state("shop")["shots"]
    assert not shots.is_outstanding(0) and shots.is_outstanding(1)
    assert sim.state("shop")["rights"] == ((0, "pie", "pie"),)
    assert sim.state("shop")["rest"] == ()
    report = check_census(sim).assert_ok()
    assert report.nulled == 1 and report.census.linear == 1  # the tart voucher, at p
    assert sim.dead_letters() == ()
    last = sim.state("p")["last"]
    assert last[0] == "voucher" and type(last[1]) is Capability and last[1].kind == LINEAR


def test_a_returned_message_with_other_linear_values_is_left_to_the_issuer():
    sim = Sim(seed=32)
    watch_census(sim)
    sim.spawn("shop", issuer, None)
    sim.spawn("b", breaker, None)
    sim.run()
    # The voucher travels with a linear coin: returned() must not destroy the coin.
    sim.send(sim.cap("shop"), ("issue", "pie", sim.cap("b"), Linear("coin")))
    sim.run()
    state = sim.state("shop")
    assert state["shots"].is_outstanding(0) and state["rights"] == ()
    [(_cap, content)] = state["rest"]
    assert content[0] == "voucher" and content[2] == Linear("coin")
    check_census(sim).assert_ok()


def test_returned_refuses_what_it_cannot_use():
    shots = OneShots()
    null = Capability(bytes(32), commons=("null", ()))
    with pytest.raises(CapabilityError):
        shots.returned(Self(bytes(32), 0), Map({"values": ()}), null)
    with pytest.raises(AvmError, match="null"):
        shots.returned(Self(bytes(32), 0), Map({"values": ()}), Capability(bytes(32), commons=("time", ())))


# ---------------------------------------------------------------------------------------
# Under every fault, with the operator acting in the middle of the run
# ---------------------------------------------------------------------------------------


def test_the_census_follows_operator_acts_under_every_fault():
    acts, moved = operator_soak(range(60))
    assert all(acts.values()), acts
    assert moved


def operator_soak(seeds) -> tuple[dict, int]:
    """The juggler workload of test_trust_conserve (every fault kind, every way to fail),
    with the operator's acts in the middle of the run: a key rotated (revoking what the
    jugglers hold), a juggler exported and imported on another host, a snapshot taken
    and restored, dead letters redelivered and cleared. The census is checked after every
    step and never needs a rebase."""
    from test_trust_conserve import CENSUS_CONFIG, CENSUS_FAULTS, build_jugglers

    acts = {"rotate": 0, "export": 0, "restore": 0, "redeliver": 0, "clear": 0}
    moved = 0
    for seed in seeds:
        sim = make_sim(seed, 3, CENSUS_FAULTS, CENSUS_CONFIG)
        watch_census(sim)
        build_jugglers(sim, coins_each=2, offset=seed % 13)
        sim.run(8)
        sim.rotate_key("j0", keep_old=seed % 5 == 0)
        snap = sim.snapshot() if seed % 3 == 0 else None
        sim.run(8)
        image = sim.export_machine("j1")
        sim.run(4)
        sim.import_machine(image, sim.hosts[seed % 3])
        if snap is not None:
            sim.run(6)
            sim.restore(snap)
        sim.run(12)
        heal(sim)
        run_until_quiescent(sim, 20_000)
        letters = sim.dead_letters()
        if letters:
            first = letters[0]
            sim.redeliver_dead_letter(first["host"], first["index"], to="j0")
            if len(letters) > 1:
                sim.clear_dead_letters()
            run_until_quiescent(sim, 20_000)
        report = check_census(sim).assert_ok()
        assert report.rebased == 0
        moved += report.exported + report.imported
        for e in sim.trace:
            if type(e) is events.Operator and e.act != "import":
                acts[e.act] += 1
    return acts, moved
