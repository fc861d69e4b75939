"""The examples in ``examples/``: each builds, runs to quiescence with its invariants
holding (with and without faults), and shows what its docstring claims."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import avm
from avm import Linear, Map
from avm.core.network import events
from avm.core.values import LINEAR

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    """Import ``examples/<name>.py`` once, as the CLI does, under a private module name."""
    mod_name = f"avm_example_{name}"
    mod = sys.modules.get(mod_name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(mod_name, EXAMPLES / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod  # dataclasses look their module up while decorating
        spec.loader.exec_module(mod)
    return mod


counter, bank, chat, blog = (load(n) for n in ("counter", "bank", "chat", "blog"))


def failures(sim: avm.Sim, name: str) -> list[avm.Failure]:
    addr = sim.address(name)
    return [e.failure for e in sim.trace
            if type(e) is events.Applied and e.dest == addr and not e.ok]


def run(mod, seed: int = 0, faults: str | None = None) -> avm.Sim:
    sim = avm.Sim(seed=seed, faults=faults)
    mod.build(sim)
    report = sim.run(max_steps=20_000)
    assert report.quiescent, report
    return sim


# -- every example -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["counter", "bank", "chat", "blog", "auction", "pubsub", "kvlocks"])
@pytest.mark.parametrize("seed,faults", [(0, None), (1, "all"), (2, "all")])
def test_example_runs_to_quiescence_with_invariants(name, seed, faults):
    sim = run(load(name), seed, faults)  # a broken invariant raises InvariantViolation
    assert sim.stats()["batch.ok"] > 0


def test_fault_runs_really_cross_hosts():
    # --faults all must exercise the lossy link, or the fault runs above prove little.
    for mod in (bank, chat, blog):
        stats = run(mod, 1, "all").stats()
        assert stats.get("wire.sent", 0) > 0, mod.__name__
    stats = run(bank, 3, "loss=0.3,dup=0.3,delay=1-30").stats()
    assert stats["wire.lost"] > 0 and stats["wire.duplicate-refused"] > 0


# -- counter -------------------------------------------------------------------------------


def test_counter():
    sim = run(counter)
    assert sim.state("counter") == 6
    assert sim.received("answers") == (("count", 6),)


# -- bank ----------------------------------------------------------------------------------


def bank_sim(seed: int = 0, workload=()) -> avm.Sim:
    sim = avm.Sim(seed=seed)
    bank.build_with(sim, workload)
    sim.run()
    return sim


def test_bank_transfer_is_one_batch_all_or_nothing():
    sim = bank_sim()
    alice, bob = bank.account_cap(sim, "alice"), bank.account_cap(sim, "bob")
    before = bank.balances(sim)
    # A withdraw that overdraws, then a deposit, in ONE batch: neither applies.
    sim.submit([(alice, bank.Withdraw(before["alice"] + 1)), (bob, bank.Deposit(before["alice"] + 1))])
    sim.run()
    assert bank.balances(sim) == before
    [f] = failures(sim, "branch.north")
    assert f.index == 0 and f.error_type == "InsufficientFunds"
    # The same shape with enough money: both apply.
    sim.submit([(alice, bank.Withdraw(40)), (bob, bank.Deposit(40))])
    sim.run()
    after = bank.balances(sim)
    assert (after["alice"], after["bob"]) == (before["alice"] - 40, before["bob"] + 40)


def test_bank_failed_deposit_undoes_the_withdraw():
    # The failing message need not be the first: a bad deposit after a good withdraw
    # rolls the withdraw back too.
    sim = bank_sim()
    alice, bob = bank.account_cap(sim, "alice"), bank.account_cap(sim, "bob")
    before = bank.balances(sim)
    sim.submit([(alice, bank.Withdraw(10)), (bob, bank.Deposit(-10))])
    sim.run()
    assert bank.balances(sim) == before
    assert failures(sim, "branch.north")[-1].index == 1


def test_bank_teller_receipt_only_for_committed_transfers():
    sim = bank_sim(workload=[("teller.1", bank.Transfer("alice", "bob", 30)),
                             ("teller.1", bank.Transfer("carol", "alice", 1000)),
                             ("teller.1", bank.Transfer("bob", "carol", 5))])
    t = sim.state("teller.1")
    assert (t["asked"], t["confirmed"]) == (3, 2)
    b = bank.balances(sim)
    assert (b["alice"], b["bob"], b["carol"]) == (70, 75, 5)


def test_bank_teller_refuses_transfers_across_branches():
    sim = bank_sim()
    sim.send(sim.cap("teller.1", "desk"), bank.Transfer("alice", "alice", 1))
    sim.run()
    bank_teller = sim.state("teller.1")
    # teller.1 serves only the north branch: "dave" is not among its accounts at all.
    sim.send(sim.cap("teller.1", "desk"), bank.Transfer("alice", "dave", 1))
    sim.run()
    assert sim.state("teller.1") == bank_teller
    assert failures(sim, "teller.1")[-1].error_type == "KeyError"
    # A teller that holds accounts in two branches still refuses to split a transfer.
    mixed = Map(alice=bank.account_cap(sim, "alice"), dave=bank.account_cap(sim, "dave"))
    sim.spawn("teller.mixed", bank.teller, mixed)
    sim.send(sim.cap("teller.mixed", "desk"), bank.Transfer("alice", "dave", 1))
    sim.run()
    assert "one branch" in failures(sim, "teller.mixed")[-1].detail


def test_bank_accounts_need_their_capability():
    sim = bank_sim()
    before = bank.balances(sim)
    sim.send(sim.cap("branch.north", ("account", "mallory")), bank.Deposit(1000))
    sim.send(sim.cap("branch.north", "any"), bank.Withdraw(1))
    sim.send(sim.cap("teller.1", "receipt"), bank.Transfer("alice", "bob", 1))
    sim.run()
    assert bank.balances(sim) == before
    assert [f.error_type for f in failures(sim, "branch.north")] == ["NotAllowed", "NotAllowed"]
    assert failures(sim, "teller.1")[-1].error_type == "NotAllowed"


def test_bank_balance_query_sees_one_state():
    sim = bank_sim()
    p = sim.probe("auditor")
    sim.submit([(bank.account_cap(sim, a), bank.Balance(p)) for a in ("alice", "bob", "carol")])
    sim.run()
    assert sim.received("auditor") == tuple(
        ("balance", a, v) for a, v in bank.BRANCHES["branch.north"][1].items())


def test_bank_invariant_catches_money_from_nowhere():
    # The invariant is real: a client holding an account capability can mint money, and
    # the simulation stops at that step with the seed to reproduce it.
    sim = bank_sim(seed=7)
    sim.send(bank.account_cap(sim, "erin"), bank.Deposit(1))
    with pytest.raises(avm.InvariantViolation) as e:
        sim.run()
    assert e.value.name == "total_money_is_conserved" and e.value.seed == 7


def test_bank_single_teller_results_do_not_depend_on_faults():
    # One teller means one channel per pair, and delivery is exactly-once in order per
    # pair, so lossy, duplicating, reordering links change the timing, not the balances.
    workload = [("teller.1", w) for _, w in bank.WORKLOAD if w.source in ("alice", "bob", "carol")]
    expected = None
    for seed, faults in [(0, None), (1, "all"), (2, "all"), (3, "loss=0.3,dup=0.3,delay=1-40")]:
        sim = avm.Sim(seed=seed, faults=faults)
        bank.build_with(sim, workload)
        assert sim.run().quiescent
        got = (bank.balances(sim), sim.state("teller.1")["confirmed"])
        expected = expected or got
        assert got == expected


# -- chat ----------------------------------------------------------------------------------


def test_chat_run_story():
    sim = run(chat)
    st = sim.state("room")
    assert set(st["members"]) == {"alice", "carol", "moderator"}
    assert "bob" in st["kicked"]
    assert set(st["used"].values()) == {"alice", "bob", "carol", "moderator"}
    assert set(st["invited"].values()) == {"mallory"}  # never used
    # Mallory tried to copy her linear invitation: her step failed, the room never saw it.
    [f] = failures(sim, "mallory")
    assert f.rule == "substructural" and "may not be copied" in f.detail
    # Her linear invitation was not lost with her failed batch: it went back to the room,
    # which does not take returned values, so it is a dead letter (D7), not a loss.
    [letter] = sim.dead_letters()
    assert letter["sender"] == sim.address("room") and "not taken back" in letter["reason"]
    # Bob's lines after the kick failed at the room as revoked (besides that ~returned).
    assert {e.failure.error_type for e in sim.trace
            if type(e) is events.Applied and e.dest == sim.address("room") and not e.ok
            and e.chan[0][:2] != ("~", "returned")} == {"Revoked"}
    assert sim.state("bob")["member"] is None
    # Everyone still in the room heard Alice.
    assert ("alice", "hi all") in sim.state("carol")["heard"]


def invited(sim: avm.Sim, name: str = "zed"):
    """Invite ``name`` from the admin; return the linear invitation (kept by a probe)."""
    p = sim.probe(f"inbox.{name}")
    sim.send(sim.cap("room", "admin"), ("invite", name, p))
    sim.run()
    [(tag, who, cap)] = [m for m in sim.received(f"inbox.{name}") if m[0] == "invitation"]
    assert (tag, who) == ("invitation", name)
    return cap, p


def test_chat_invitation_is_a_linear_capability_consumed_on_join():
    sim = run(chat)
    cap, inbox = invited(sim)
    assert cap.kind == LINEAR  # its context is Linear, so the capability is too
    sim.send(cap, ("join", inbox))
    sim.run()
    assert "zed" in sim.state("room")["members"]
    # The room destroyed the linear context through the null commons capability.
    to_null = [e for e in sim.trace if type(e) is events.Created and e.dest == ("~", "null")]
    assert len(to_null) == len(sim.state("room")["used"])


def test_chat_invitation_replayed_from_outside_is_refused():
    # Outside the network nobody runs the substructural check on a client, so the room
    # also remembers used invitations: the second join fails.
    sim = run(chat)
    cap, inbox = invited(sim)
    sim.send(cap, ("join", inbox))
    sim.run()
    before = sim.state("room")
    sim.send(cap, ("join", inbox))
    sim.run()
    assert "already used" in failures(sim, "room")[-1].detail
    assert sim.state("room") == before


def test_chat_one_submission_cannot_copy_an_invitation():
    sim = run(chat)
    cap, inbox = invited(sim)
    with pytest.raises(avm.AvmError, match="copies"):
        sim.submit([(cap, ("join", inbox)), (cap, ("join", inbox))])


hoarder = avm.Behavior("tests.examples.hoarder")


@hoarder.on("invitation")
def _hoard(state, name, invitation):
    # Keeps the invitation AND uses it: a copy.
    return [(invitation, ("join", invitation))], Map(kept=invitation)


forwarder = avm.Behavior("tests.examples.forwarder")


@forwarder.on("invitation")
def _pass_on(state, name, invitation):
    # Passing a linear value on, once, is fine: a friend may use it instead.
    return [(state, ("invitation", name, invitation))], None


def test_chat_guest_cannot_keep_and_use_an_invitation():
    sim = run(chat)
    sim.spawn("hoarder", hoarder, None)
    sim.send(sim.cap("room", "admin"), ("invite", "hoarder", sim.cap("hoarder", "inbox")))
    sim.run()
    [f] = failures(sim, "hoarder")
    assert f.rule == "substructural"
    assert "hoarder" not in sim.state("room")["used"].values()


def test_chat_invitation_can_be_passed_on_once():
    sim = run(chat)
    sim.spawn("dan", chat.guest, Map(lines=("hi from dan",)))
    sim.spawn("relay", forwarder, sim.cap("dan", "inbox"))
    sim.send(sim.cap("room", "admin"), ("invite", "dan", sim.cap("relay", "inbox")))
    sim.run()
    assert "dan" in sim.state("room")["members"]
    assert sim.state("room")["log"][-1] == ("dan", "hi from dan")


def test_chat_member_capability_is_revocable():
    sim = run(chat)
    cap, inbox = invited(sim)
    sim.send(cap, ("join", inbox))
    sim.run()
    [(_, _, member)] = [m for m in sim.received("inbox.zed") if m[0] == "welcome"]
    sim.send(member, ("say", "one"))
    sim.run()
    assert sim.state("room")["log"][-1] == ("zed", "one")
    sim.send(sim.cap("room", "admin"), ("kick", "zed"))
    sim.run()
    assert ("kicked", "zed") in sim.received("inbox.zed")
    sim.send(member, ("say", "two"))
    sim.run()
    assert sim.state("room")["log"][-1] == ("zed", "one")
    assert failures(sim, "room")[-1].error_type == "Revoked"


def test_chat_only_admin_invites_and_kicks():
    sim = run(chat)
    before = sim.state("room")
    sim.send(sim.cap("room", "guest"), ("invite", "eve", sim.probe("eve")))
    sim.send(sim.cap("room", "guest"), ("kick", "alice"))
    sim.send(sim.cap("room", Linear(("not-an-invite",))), ("join", sim.cap("eve", "x")))
    sim.run()
    assert sim.state("room") == before
    assert [f.error_type for f in failures(sim, "room")][-3:] == ["PermissionError"] * 3


# -- blog ----------------------------------------------------------------------------------


def test_blog_reads_do_not_write_the_posts_machine():
    sim = run(blog)
    posts_before = sim.state("posts")
    hits_before = dict(sim.state("hits"))
    public = sim.cap("public", "use")
    p = sim.probe("reader.3")
    sim.submit([(public, ("read", "hello", p)), (public, ("read", "about", p))])
    sim.send(public, ("read", "hello", p))
    sim.run()
    assert sim.state("posts") is posts_before  # read-only batches: the very same state
    hits = dict(sim.state("hits"))
    assert hits["hello"] == hits_before["hello"] + 2
    assert hits["about"] == hits_before["about"] + 1
    assert [m[0] for m in sim.received("reader.3")] == ["post", "post", "post"]


def test_blog_hits_count_every_answered_read():
    sim = run(blog)
    answered = [m for r in blog.READS for m in sim.received(r) if m[0] == "post"]
    assert sum(sim.state("hits").values()) == len(answered)
    assert sorted(sim.state("posts")["posts"]) == ["about", "hello", "news"]


def test_blog_membrane_refuses_writes():
    sim = run(blog)
    [f] = failures(sim, "public")
    assert f.error_type == "Refused" and "'publish'" in f.detail
    assert sim.state("posts")["posts"]["hello"] == blog.INITIAL["hello"]
    assert failures(sim, "posts") == []


def test_blog_public_access_can_be_revoked():
    sim = run(blog)
    sim.send(sim.cap("public", "admin"), "revoke")
    sim.run()
    p = sim.probe("late")
    sim.send(sim.cap("public", "use"), ("read", "hello", p))
    sim.run()
    assert sim.received("late") == ()
    assert failures(sim, "public")[-1].error_type == "Revoked"
    # The author's own capability is untouched.
    sim.send(sim.cap("posts", "author"), ("read", "hello", p))
    sim.run()
    assert sim.received("late") == (("post", "hello", blog.INITIAL["hello"]),)
