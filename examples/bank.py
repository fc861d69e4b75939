"""A bank: transfers are atomic because a transfer is *one batch*.

Two kinds of machine:

``bank.branch``
    Holds accounts (a ``Map`` from account name to balance). Each account is reached
    through its own capability, whose sealed context is ``("account", name)``: holding
    Alice's capability is what lets you move Alice's money, and nobody can forge one.
    It handles typed messages, frozen dataclasses registered with ``@avm.record``:
    ``Deposit``, ``Withdraw``, ``Balance`` and ``Receipt``. A ``Withdraw`` larger than
    the balance raises ``InsufficientFunds``.

``bank.teller``
    Holds account capabilities and turns a ``Transfer(source, dest, amount)`` request
    into three messages sent in one step: ``Withdraw`` from the source,
    ``Deposit`` to the destination, and a ``Receipt`` asking the branch to confirm.

The point: the outputs of one step that go to the same machine travel as one *batch*,
and a batch is all-or-nothing (DESIGN section 4, rule 1). If the withdraw raises, the
branch's state is as if the batch never arrived: the deposit is not applied and no
receipt is sent. So money is never created or destroyed, even under faults, and the
invariant "total money is constant" holds after every single step of the simulation.

That only works within one branch. A transfer between two branches would be two batches
to two machines, so the teller refuses it (it compares the capabilities' addresses);
crossing branches needs an escrow protocol, which is a different example.

The machines are spread over two hosts (``h0`` and ``h1``) and tellers sit on the other
host from the branch they serve, so ``avm sim examples/bank.py --faults all`` sends every
transfer across a lossy, duplicating, reordering, crashing link. Delivery is exactly-once
and in order per pair of machines, so the balances come out the same as without faults.
"""

import avm
from avm import Capability, Map

# -- messages ----------------------------------------------------------------------------
# Explicit record names keep the encoding stable however this file is imported.


@avm.record(name="examples.bank.Deposit")
class Deposit:
    amount: int


@avm.record(name="examples.bank.Withdraw")
class Withdraw:
    amount: int


@avm.record(name="examples.bank.Balance")
class Balance:
    """Ask for an account's balance; the answer is ``("balance", name, amount)``."""

    reply: Capability


@avm.record(name="examples.bank.Receipt")
class Receipt:
    """Ask the branch to send ``("receipt", tag)`` to ``reply``; only sent if the batch commits."""

    reply: Capability
    tag: int


@avm.record(name="examples.bank.Transfer")
class Transfer:
    """A request to a teller: move ``amount`` from account ``source`` to ``dest``."""

    source: str
    dest: str
    amount: int


class InsufficientFunds(Exception):
    """Raised by a withdraw larger than the balance: it fails the whole batch."""


class NotAllowed(Exception):
    """A message came through a capability that does not grant it."""


def _amount(n: object) -> int:
    if type(n) is not int or n <= 0:
        raise ValueError(f"an amount is a positive int, got {n!r}")
    return n


# -- the branch --------------------------------------------------------------------------

branch = avm.Behavior("bank.branch")


@branch.init
def open_branch(_state, balances):
    """The init argument is a Map of opening balances; it becomes the state."""
    return [], Map(balances)


def _account(state: Map, ctx: object) -> str:
    # The context is the authority: it was sealed by this branch, so it can be trusted.
    if type(ctx) is tuple and len(ctx) == 2 and ctx[0] == "account" and ctx[1] in state:
        return ctx[1]
    raise NotAllowed(f"not an account capability: {ctx!r}")


@branch.on(Deposit)
def deposit(state, msg, *, ctx):
    name = _account(state, ctx)
    return [], state.set(name, state[name] + _amount(msg.amount))


@branch.on(Withdraw)
def withdraw(state, msg, *, ctx):
    name = _account(state, ctx)
    amount = _amount(msg.amount)
    if state[name] < amount:
        raise InsufficientFunds(f"{name} has {state[name]}, cannot withdraw {amount}")
    return [], state.set(name, state[name] - amount)


@branch.on(Balance)
def balance(state, msg, *, ctx):
    name = _account(state, ctx)
    return [(msg.reply, ("balance", name, state[name]))], state


@branch.on(Receipt)
def receipt(state, msg, *, ctx):
    _account(state, ctx)
    return [(msg.reply, ("receipt", msg.tag))], state


# -- the teller --------------------------------------------------------------------------

teller = avm.Behavior("bank.teller")


@teller.init
def open_desk(_state, accounts):
    """The init argument maps account names to account capabilities."""
    return [], Map(accounts=accounts, me=None, asked=0, confirmed=0)


@teller.signal("self")
def learn_self(state, me):
    # Self mints capabilities to this teller: it needs one for the receipts.
    return [], state.set("me", me)


@teller.on(Transfer)
def transfer(state, t, *, ctx):
    if ctx != "desk":
        raise NotAllowed("transfers come through the desk capability")
    accounts = state["accounts"]
    src, dst = accounts[t.source], accounts[t.dest]
    if src.address != dst.address:
        raise ValueError("a transfer must stay within one branch: only then is it one batch")
    n = state["asked"] + 1
    back = state["me"]("receipt")
    # Three messages to the same machine: one batch, applied all-or-nothing, in this order.
    out = [(src, Withdraw(_amount(t.amount))), (dst, Deposit(t.amount)), (src, Receipt(back, n))]
    return out, state.set("asked", n)


@teller.on("receipt")
def confirmed(state, tag, *, ctx):
    if ctx != "receipt":
        raise NotAllowed("receipts come through the receipt capability")
    return [], state.set("confirmed", state["confirmed"] + 1)


# -- the network -------------------------------------------------------------------------

#: Hosts for ``avm sim``, which creates them before calling build; build adds any that
#: are missing, so it also runs in a one-host simulator or nested in a machine.
HOSTS = ("h0", "h1")
BRANCHES = {
    "branch.north": ("h0", {"alice": 100, "bob": 50, "carol": 0}),
    "branch.south": ("h1", {"dave": 80, "erin": 20}),
}
# teller name -> (host, branch it serves). Tellers sit on the other host from their branch.
TELLERS = {
    "teller.1": ("h1", "branch.north"),
    "teller.2": ("h0", "branch.south"),
    "teller.3": ("h1", "branch.north"),
}
TOTAL = sum(sum(b.values()) for _, b in BRANCHES.values())

#: The initial workload: (teller, transfer). Some overdraw and fail, depending on order.
WORKLOAD = (
    ("teller.1", Transfer("alice", "bob", 30)),
    ("teller.3", Transfer("bob", "carol", 70)),
    ("teller.2", Transfer("dave", "erin", 50)),
    ("teller.1", Transfer("carol", "alice", 10)),
    ("teller.2", Transfer("erin", "dave", 100)),
    ("teller.3", Transfer("alice", "carol", 60)),
    ("teller.1", Transfer("bob", "alice", 500)),
    ("teller.2", Transfer("erin", "dave", 70)),
)


def account_cap(sim, account):
    """The capability of ``account``, minted as the branch's host may."""
    for bname, (_, balances) in BRANCHES.items():
        if account in balances:
            return sim.cap(bname, ("account", account))
    raise KeyError(account)


def balances(sim):
    """Every account's balance, across branches."""
    out = {}
    for bname in BRANCHES:
        out.update(sim.state(bname) or {})
    return out


def build_with(sim, workload=WORKLOAD):
    """Spawn branches and tellers on two hosts, submit ``workload``, add invariants."""
    for h in HOSTS:  # unless the caller (the CLI, a test) already made them
        sim.add_host(h, exist_ok=True)
    for bname, (host, opening) in BRANCHES.items():
        sim.spawn(bname, branch, Map(opening), host=host)
    for tname, (host, bname) in TELLERS.items():
        accounts = Map({a: sim.cap(bname, ("account", a)) for a in BRANCHES[bname][1]})
        sim.spawn(tname, teller, accounts, host=host)
    for tname, t in workload:
        sim.send(sim.cap(tname, "desk"), t)

    def total_money_is_conserved(s):
        # States are None until their init batch runs; count the opening balances then.
        total = sum(sum((s.state(b) or Map(o)).values()) for b, (_, o) in BRANCHES.items())
        return total == TOTAL

    def no_account_is_negative(s):
        return all(v >= 0 for v in balances(s).values())

    def receipts_only_for_requests(s):
        return all((s.state(t) or Map(asked=0, confirmed=0))["confirmed"]
                   <= (s.state(t) or Map(asked=0))["asked"] for t in TELLERS)

    sim.invariant(total_money_is_conserved)
    sim.invariant(no_account_is_negative)
    sim.invariant(receipts_only_for_requests)


def build(sim):
    """Entry point for ``avm sim examples/bank.py``."""
    build_with(sim, WORKLOAD)
