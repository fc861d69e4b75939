"""An auction with bidders on three hosts and a one-hour deadline.

Two kinds of machine:

``auction.house``
    Runs one auction. At creation it arms a timer (the ``timer`` service of its ``env``)
    that sends it ``"close"`` when the deadline has passed. Until then it takes bids: a bid
    is accepted only if it beats the best bid so far, so the accepted bids rise strictly
    and the last one accepted is the highest. After the close every bid is rejected as
    ``closed``, and the winner is announced to every bidder that joined, once. Each bidder reaches
    the house through its own capability (context ``("bidder", name)``), so a bid says
    who made it and nobody can bid in another's name. The close can only come through
    the capability the house gave the timer (context ``"close"``).

``auction.bidder``
    Joins the house at creation (sending it a capability for the news), then bids on
    a plan of ``(after_ms, amount)``: for each entry it arms a timer, and when it
    fires, asks the house with ``avm.ask`` (a correlation id per bid, and a time-out), so
    an answer, a failure or a time-out each end the bid exactly once. It remembers what
    was accepted and who won.

Time is virtual: the one-hour deadline and the bids spread over it cost a few steps
each, because the network's clock jumps to the next timer when nothing else can run.
Bids planned after the deadline, and bids that were sent in time but delayed past it by
faults, are rejected: the deadline is when the house closes, on its own host's clock.

``avm sim examples/auction.py --faults all`` runs it across a lossy, duplicating,
reordering, crashing set of links; the invariants below are checked after every step.
"""

import avm
from avm import Map

DEADLINE_MS = 3_600_000  # one hour
ASK_TIMEOUT_MS = 600_000  # a bid not answered within ten minutes counts as lost

house = avm.Behavior("auction.house")


@house.init
def open_house(_state, deadline_ms):
    return [], Map(deadline=deadline_ms, bidders=Map(), best=None, accepted=(),
                   rejected=0, closed=False, winner=None, env=None, me=None)


@house.signal("self")
def house_self(state, me):
    return [], state.set("me", me)


@house.signal("env")
def house_env(state, env):
    me = state["me"]
    arm = (me("armed"), ("after", state["deadline"], me("close"), "close"))
    return [(env["timer"], arm)], state.set("env", env)


@house.on("timer", context="armed")
def armed(state, _cancel):
    return [], state  # the deadline is never cancelled


@house.on("join", context="bidder")
def join(state, news, *, ctx):
    if state["closed"]:
        return [(news, ("winner",) + (state["winner"] or (None, 0)))], state
    return [], state.set("bidders", state["bidders"].set(ctx[1], news))


@house.on("bid", context="bidder")
def bid(state, amount, reply, *, ctx):
    who = ctx[1]
    if type(amount) is not int or amount <= 0:
        return [(reply, ("rejected", amount, "not a positive int"))], state
    if state["closed"]:
        return [(reply, ("rejected", amount, "closed"))], state.set("rejected", state["rejected"] + 1)
    best = state["best"]
    if best is not None and amount <= best[1]:
        return [(reply, ("rejected", amount, "low"))], state.set("rejected", state["rejected"] + 1)
    state = state.set("best", (who, amount)).set("accepted", (*state["accepted"], (who, amount)))
    return [(reply, ("accepted", amount))], state


@house.on("close", context="close")
def close(state):
    if state["closed"]:
        return [], state
    winner = state["best"]
    news = ("winner",) + (winner if winner is not None else (None, 0))
    outs = [(cap, news) for _, cap in sorted(state["bidders"].items())]
    return outs, state.set("closed", True).set("winner", winner)


bidder_b = avm.Behavior("auction.bidder")


@bidder_b.init
def open_bidder(_state, args):
    house_cap, plan = args
    return [], Map(house=house_cap, plan=plan, accepted=(), rejected=(), lost=(),
                   winner=None, told=0, env=None, me=None)


@bidder_b.signal("self")
def bidder_self(state, me):
    return [], state.set("me", me)


@bidder_b.signal("env")
def bidder_env(state, env):
    me = state["me"]
    outs = [(state["house"], ("join", me("news")))]
    outs.extend((env["timer"], (me("armed"), ("after", after, me("go"), ("go", i))))
                for i, (after, _amount) in enumerate(state["plan"]))
    return outs, state.set("env", env)


@bidder_b.on("timer", context="armed")
def bid_armed(state, _cancel):
    return [], state


@bidder_b.on("go", context="go")
def go(state, i):
    amount = state["plan"][i][1]
    return avm.ask(state, state["me"], state["env"], state["house"], ("bid", amount, avm.REPLY),
                   i, timeout_ms=ASK_TIMEOUT_MS)


@bidder_b.on("winner", context="news")
def told(state, name, amount):
    return [], state.set("winner", (name, amount)).set("told", state["told"] + 1)


def _answered(state, i, answer):
    amount = state["plan"][i][1]
    if type(answer) is tuple and answer[:1] == ("accepted",):
        return [], state.set("accepted", (*state["accepted"], amount))
    return [], state.set("rejected", (*state["rejected"], amount))


def _failed(state, i, why, _detail):
    return [], state.set("lost", (*state["lost"], (state["plan"][i][1], why)))


bidder = avm.asking(bidder_b, _answered, _failed, name="auction.bidder")

# -- the network -------------------------------------------------------------------------

HOSTS = ("h0", "h1", "h2")
HOUSE = ("auction", "h0")
#: bidder name -> (host, plan of (after_ms, amount)). Some bids come after the deadline.
BIDDERS = {
    "ann": ("h0", ((60_000, 100), (1_800_000, 260), (3_700_000, 999))),
    "ben": ("h1", ((120_000, 150), (2_400_000, 300))),
    "cat": ("h1", ((900_000, 120), (3_500_000, 310))),
    "dan": ("h2", ((30_000, 90), (3_000_000, 305), (3_650_000, 400))),
    "eve": ("h2", ((3_599_000, 320), (3_601_000, 500))),
}


def build_with(sim, bidders=BIDDERS, deadline_ms=DEADLINE_MS):
    """Spawn the house and the bidders on three hosts; add the invariants."""
    for h in HOSTS:  # unless the caller (the CLI, a test) already made them
        sim.add_host(h, exist_ok=True)
    name, host = HOUSE
    sim.spawn(name, house, deadline_ms, host=host)
    close_at = sim.net.now + deadline_ms  # the house arms its timer later than this
    for b, (bhost, plan) in bidders.items():
        sim.spawn(b, bidder, (sim.cap(name, ("bidder", b)), plan), host=bhost)
    seen = {"closed": False, "accepted": 0}

    def no_bid_accepted_after_the_close(s):
        st = s.state(name)
        if st is None:
            return True
        n = len(st["accepted"])
        ok = not (seen["closed"] and n != seen["accepted"])
        if st["closed"] and not seen["closed"] and s.net.now < close_at:
            return False  # closed before the deadline
        seen["closed"], seen["accepted"] = st["closed"], n
        return ok

    def accepted_bids_rise(s):
        st = s.state(name)
        amounts = [a for _, a in (st["accepted"] if st else ())]
        return all(x < y for x, y in zip(amounts, amounts[1:], strict=False))

    def the_winner_is_the_highest_accepted_bid(s):
        st = s.state(name)
        if st is None or not st["closed"]:
            return True
        acc = st["accepted"]
        return st["winner"] == (acc[-1] if acc else None)

    def a_bidder_is_told_at_most_once_and_the_truth(s):
        st = s.state(name)
        for b in bidders:
            bs = s.state(b)
            if bs is None or type(bs) is not Map:
                continue
            if bs["told"] > 1:
                return False
            if bs["told"] and bs["winner"] != (st["winner"] or (None, 0)):
                return False
            mine = {a for who, a in st["accepted"] if who == b}
            if not set(bs["accepted"]) <= mine:  # a bidder believes only what happened
                return False
        return True

    sim.invariant(no_bid_accepted_after_the_close)
    sim.invariant(accepted_bids_rise)
    sim.invariant(the_winner_is_the_highest_accepted_bid)
    sim.invariant(a_bidder_is_told_at_most_once_and_the_truth)


def build(sim):
    """Entry point for ``avm sim examples/auction.py``."""
    build_with(sim, BIDDERS)


def summary(sim):
    """Who won, and what each bidder saw: for scripts and tests."""
    st = sim.state(HOUSE[0])
    return {"winner": st["winner"], "accepted": st["accepted"], "rejected": st["rejected"],
            "bidders": {b: (sim.state(b)["accepted"], sim.state(b)["rejected"],
                            sim.state(b)["lost"], sim.state(b)["winner"]) for b in BIDDERS
                        if b in sim.net.names}}
