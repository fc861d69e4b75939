"""Nothing vanishes, nothing is copied: conservation across the network (issue 5, items 9,
11 and 14).

    "P8 conservation: the number of linear (and relevant) values in the whole network,
    counted over states, queues, the wire, returned and dead-letter values, changes only
    through null, under every fault." (TESTING.md)

* A batch that fails, is dropped or cannot be delivered gives its linear and relevant
  values back to the sending machine (the ``~returned`` weak signal); where the sender
  cannot take them they become dead letters of the host (D7). ``null`` is the one way to
  destroy a linear value, and what it consumed is counted.
* The runtime copies nothing: a spent retry budget keeps the batch with the sender until
  the outcome is known, and feedback reports once.
* The census (``avm.testing.watch_census``) holds across 1,000 seeds with every fault.
* Values cross between machines as a host delivers them: no bound ``Self`` and no held
  plaintext reach another machine (item 11).
* The checker compares real batch hashes (item 14).

The census workload (``juggler`` machines) is also what ``bench/soak_census.py`` runs.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from avm import (
    Behavior,
    Capability,
    CapabilityError,
    Config,
    Faults,
    InvariantViolation,
    Linear,
    Map,
    Relevant,
    Sim,
    UsageError,
)
from avm.core import delivery
from avm.core.caps import siv_sealer_pair
from avm.core.network import events
from avm.core.values import replace_fields
from avm.testing import (
    Checker,
    census,
    check_census,
    check_sim,
    fault_counts,
    heal,
    make_sim,
    run_until_quiescent,
    watch_census,
)

# ---------------------------------------------------------------------------------------
# A wallet of linear coins, and machines that refuse them
# ---------------------------------------------------------------------------------------

wallet = Behavior("conserve.wallet")


@wallet.init
def _w_init(state, coins):
    return [], Map({"coins": coins, "returned": 0, "env": None})


@wallet.signal("env")
def _w_env(state, env):
    return [], state.set("env", env)


@wallet.on("spend")
def _w_spend(state, target, *prefix):
    """Send the first coin to ``target`` as ``(*prefix, coin)``."""
    coin, *rest = state["coins"]
    return [(target, (*prefix, coin))], state.set("coins", tuple(rest))


@wallet.on("spend_to")
def _w_spend_to(state, service, *prefix):
    """The same, to one of the commons services of the environment."""
    return _w_spend(state, state["env"][service], *prefix)


@wallet.on("coin")
def _w_coin(state, c):
    return [], state.set("coins", (*state["coins"], c))


@wallet.returned
def _w_returned(state, info):
    assert info["rule"] and info["reason"]  # D7's shape
    got = tuple(content[-1] for _cap, content in info["values"])
    return [], state.set("coins", (*state["coins"], *got)).set(
        "returned", state["returned"] + len(got))


#: The same wallet, but it does not take returned values (so ignores the weak signal).
careless = Behavior("conserve.careless")
careless.on("spend")(_w_spend)
careless.init(_w_init)

breaker = Behavior("conserve.breaker")


@breaker.otherwise
def _break(state, content):
    raise ValueError("refused on purpose")


def coins(sim: Sim, name: str) -> tuple:
    return sim.state(name)["coins"]


def two_wallets(hosts=("h0",), faults=None, config=None, seed=1) -> Sim:
    sim = Sim(seed=seed, hosts=hosts, faults=faults, config=config)
    watch_census(sim)
    sim.spawn("w", wallet, (Linear("c1"), Linear("c2")), host=hosts[0])
    sim.spawn("v", wallet, (), host=hosts[-1])
    sim.spawn("b", breaker, host=hosts[-1])
    sim.run()
    return sim


# ---------------------------------------------------------------------------------------
# Item 9: values come back, or become dead letters
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hosts", [("h0",), ("h0", "h1")])
def test_a_failed_batch_gives_its_linear_values_back_to_the_sender(hosts):
    sim = two_wallets(hosts)
    sim.send(sim.cap("w"), ("spend", sim.cap("b"), "coin"))
    sim.run()
    assert sorted(c.value for c in coins(sim, "w")) == ["c1", "c2"]
    assert sim.state("w")["returned"] == 1
    assert sim.stats()["returned.messages"] == 1
    assert check_census(sim).assert_ok().census.linear == 2
    # The sender learns the rule and message index only, nothing of the receiver's (D6).
    [back] = [e for e in sim.trace if type(e) is events.Applied and e.chan[0][:2] == ("~", "returned")]
    info = back.messages[0].content[1]
    assert info["rule"] == "exception" and "refused on purpose" not in info["reason"]


@pytest.mark.parametrize("how", ["stopped", "unknown address"])
def test_a_dropped_batch_gives_its_values_back(how):
    sim = two_wallets(("h0", "h1"))
    target = sim.cap("v")
    if how == "stopped":
        sim.stop("v")
    else:
        sim.export_machine("v")
        check_census(sim)  # v held no coins: exporting it changed nothing
    sim.send(sim.cap("w"), ("spend", target, "coin"))
    sim.run()
    assert len(coins(sim, "w")) == 2
    assert check_census(sim).ok
    [dropped] = [e for e in sim.trace if type(e) is events.Dropped]
    assert dropped.reason == ("machine stopped" if how == "stopped" else "unknown address")


@pytest.mark.parametrize("request_", [
    ("time", "me"),  # time answers the time and would drop the coin
    ("random",),  # malformed: random takes (reply, byte count)
    ("feedback",),  # malformed: feedback takes (target, content, status, tag)
    ("nonsense",),
])
def test_a_commons_service_keeps_consumes_or_refuses_and_returns(request_):
    sim = two_wallets()
    service, *rest = request_
    env = sim.state("w")["env"]
    if service == "nonsense":
        target = Capability(env["null"].address, commons=("nonsense", ()))
        sim.send(sim.cap("w"), ("spend", target))
    else:
        prefix = tuple(sim.cap("w") for _ in rest)
        sim.send(sim.cap("w"), ("spend_to", service, *prefix))
    sim.run()
    assert len(coins(sim, "w")) == 2, sim.stats()
    assert sim.stats()["commons.refused"] == 1 and sim.stats()["returned.messages"] == 1
    assert check_census(sim).ok


def test_null_is_the_one_way_to_destroy_a_linear_value_and_is_counted():
    sim = two_wallets()
    sim.send(sim.cap("w"), ("spend_to", "null"))
    sim.run()
    assert len(coins(sim, "w")) == 1
    assert sim.stats()["null.linear"] == 1
    report = check_census(sim).assert_ok()
    assert (report.nulled, report.census.linear) == (1, 1)


def test_reflect_echoes_what_it_was_asked_about():
    sim = two_wallets()
    sim.send(sim.cap("w"), ("spend_to", "reflect", sim.cap("w")))
    sim.run()
    assert check_census(sim).assert_ok().census.linear == 2
    assert "commons.refused" not in sim.stats()


def test_what_a_client_sent_and_nobody_can_take_back_becomes_a_dead_letter():
    sim = two_wallets(("h0", "h1"))
    sim.send(sim.cap("b"), ("coin", Linear("from-client")))
    sim.run()
    [letter] = sim.dead_letters()
    assert letter["host"] == "h1" and letter["rule"] == "exception"
    assert letter["sender"] == ("client", "client")
    [(_cap, content)] = letter["values"]
    assert content == ("coin", Linear("from-client"))
    assert sim.stats()["dead-letters.messages"] == 1
    assert sim.dead_letters("h0") == ()
    assert any(type(e) is events.DeadLetter for e in sim.trace)
    assert check_census(sim).assert_ok().census.places["dead letters"] == 1


def test_a_sender_that_does_not_take_its_values_back_gets_dead_letters_not_a_loop():
    sim = Sim(seed=2, hosts=("h0", "h1"))
    watch_census(sim)
    sim.spawn("w", careless, (Linear("c1"),), host="h0")
    sim.spawn("b", breaker, host="h1")
    sim.run()
    sim.send(sim.cap("w"), ("spend", sim.cap("b"), "coin"))
    sim.run()
    # The ~returned signal was ignored (weak), which dropped the coin: that batch failed,
    # and a ~returned batch never bounces again.
    fails = [e.failure.rule for e in sim.trace if type(e) is events.Applied and not e.ok]
    assert fails == ["exception", "substructural"]
    [letter] = sim.dead_letters()
    assert letter["values"][0][1] == ("coin", Linear("c1"))
    assert letter["sender"] == sim.address("w") and letter["host"] == "h0"
    assert "not taken back" in letter["reason"]
    assert check_census(sim).ok and sim.stats()["returned.batches"] == 1


def test_a_stopped_sender_gets_dead_letters():
    sim = two_wallets(("h0", "h1"))
    sim.send(sim.cap("w"), ("spend", sim.cap("b"), "coin"))
    sim.step()  # w sends the coin (the batch to b is now on the wire)
    sim.stop("w")
    sim.run()
    [letter] = sim.dead_letters()
    assert letter["sender"] == sim.address("w") and letter["values"][0][1][1] == Linear("c1")
    assert check_census(sim).ok


def test_relevant_values_come_back_too():
    sim = Sim(seed=3)
    watch_census(sim)
    sim.spawn("w", wallet, (Relevant("badge"),))
    sim.spawn("b", breaker)
    sim.run()
    sim.send(sim.cap("w"), ("spend", sim.cap("b"), "coin"))
    sim.run()
    assert coins(sim, "w") == (Relevant("badge"),)
    report = check_census(sim).assert_ok()
    assert report.census.relevant == 1


def test_a_linear_capability_carried_by_a_failing_batch_comes_back():
    bank = Behavior("conserve.bank")

    @bank.signal("self")
    def _me(state, me):
        return [], me

    @bank.on("mint")
    def _mint(state, to):
        return [(to, ("coin", state(("voucher", Linear(1)))))], state

    @bank.on("redeem")
    def _redeem(state, *, ctx):
        raise ValueError("closed today")

    sim = Sim(seed=4, hosts=("h0", "h1"))
    watch_census(sim)
    sim.spawn("bank", bank, host="h1")
    sim.spawn("w", wallet, (), host="h0")
    sim.spawn("b", breaker, host="h1")
    sim.run()
    sim.send(sim.cap("bank"), ("mint", sim.cap("w")))
    sim.run()
    [voucher] = coins(sim, "w")
    assert voucher.kind and census(sim).linear == 1  # counted as its context's items
    sim.send(sim.cap("w"), ("spend", sim.cap("b"), "coin"))
    sim.run()
    assert coins(sim, "w") == (voucher,)
    assert check_census(sim).assert_ok().census.linear == 1


def test_a_linear_capability_used_as_target_of_a_failing_batch_comes_back():
    bank = Behavior("conserve.bank2")

    @bank.signal("self")
    def _me(state, me):
        return [], me

    @bank.on("mint")
    def _mint(state, to):
        return [(to, ("coin", state(("voucher", Linear(1)))))], state

    @bank.otherwise
    def _closed(state, content):
        raise ValueError("closed today")

    user = Behavior("conserve.user")
    user.init(_w_init)
    user.on("coin")(_w_coin)

    @user.returned
    def _back(state, info):  # here the linear thing is the capability the message used
        return [], state.set("coins", (*state["coins"], *(c for c, _ in info["values"])))

    @user.on("use")
    def _use(state):
        voucher, *rest = state["coins"]
        return [(voucher, "redeem")], state.set("coins", tuple(rest))

    sim = Sim(seed=5, hosts=("h0", "h1"))
    watch_census(sim)
    sim.spawn("bank", bank, host="h1")
    sim.spawn("u", user, (), host="h0")
    sim.run()
    sim.send(sim.cap("bank"), ("mint", sim.cap("u")))
    sim.run()
    [voucher] = coins(sim, "u")
    sim.send(sim.cap("u"), ("use",))
    sim.run()
    assert coins(sim, "u") == (voucher,)  # the message's own capability, back
    assert check_census(sim).assert_ok().census.linear == 1


# ---------------------------------------------------------------------------------------
# Item 9: a spent retry budget copies nothing and loses nothing
# ---------------------------------------------------------------------------------------

RETRY = Config(retry_max=2, retry_ticks=2, retry_ticks_max=4)


def test_a_spent_retry_budget_keeps_the_values_with_the_sender_until_the_outcome_is_known():
    sim = two_wallets(("h0", "h1"), faults=Faults(loss=1.0), config=RETRY)
    sim.send(sim.cap("w"), ("spend", sim.cap("v"), "coin"))
    sim.run(max_steps=500)
    assert sim.stats()["drop.unreachable"] == 1  # indefinite: it may have been applied
    assert len(coins(sim, "w")) == 1
    assert census(sim).places["in transit"] == 1  # kept in the sender's outbox
    assert check_census(sim).ok
    heal(sim)
    run_until_quiescent(sim)
    # The receiver never had it and skipped the number: definite, the coin goes back.
    assert sorted(c.value for c in coins(sim, "w")) == ["c1", "c2"] and coins(sim, "v") == ()
    assert [e.definite for e in sim.trace if type(e) is events.Dropped] == [False, True]
    assert check_census(sim).assert_ok().census.linear == 2
    assert check_sim(sim).ok


relay = Behavior("conserve.relay")


@relay.signal("env")
def _r_env(state, env):
    return [], env


@relay.on("send")
def _r_send(state, msgs):
    return list(msgs), state


def test_a_spent_retry_budget_never_duplicates_a_linear_feedback_tag():
    """The batch arrives and is applied, but every acknowledgement is lost until the
    sender gives up: the outcome is unknown to it, so it reports nothing; the batch
    itself reports "delivered". Before, the sender also reported "failed" with the same
    (linear) tag: one value, twice."""
    sim = Sim(seed=6, hosts=("h0", "h1"), config=RETRY)
    watch_census(sim)
    p = sim.probe("p", host="h0")
    sim.spawn("src", relay, host="h0")
    sim.spawn("t", wallet, (), host="h1")
    sim.run()
    fb = sim.state("src")["feedback"]
    sim.send(sim.cap("src"), ("send", ((fb, (sim.cap("t"), ("coin", Linear("x")), p,
                                             Linear("tag"))),)))
    chan = (sim.address("src"), sim.address("t"))
    while "drop.unreachable" not in sim.stats():
        sim.step()
        wire = sim.net.wire  # lose every acknowledgement of the channel, nothing else
        for k, w in list(wire._m.items()):
            if w[0] == "ack" and w[3] == chan:
                wire = wire.delete(k)
        sim.restore(replace_fields(sim.net, wire=wire))
    run_until_quiescent(sim)
    statuses = [e for e in sim.trace if type(e) is events.Created
                and e.chan == (("~", "feedback", "h1"), sim.address("p"))]
    assert len(statuses) == 1 and not sim.failures("p")
    assert sim.received("p") == (("delivered", Linear("tag")),)
    assert coins(sim, "t") == (Linear("x"),)
    assert check_census(sim).assert_ok().census.linear == 2


# ---------------------------------------------------------------------------------------
# The census: 1,000 seeds, every fault kind
# ---------------------------------------------------------------------------------------


def make_juggler(name: str, takes_returned: bool) -> Behavior:
    """Passes linear coins and relevant badges around, through every path that may lose
    or copy one: peers on other hosts, a machine that fails, a stopped one, an unknown
    address, null, time (refuses), reflect (echoes), a malformed request, feedback with
    a linear tag; its own steps fail now and then."""
    b = Behavior(name)

    @b.init
    def _init(state, args):
        mine, badges, n = args
        return [], Map({"coins": mine, "badges": badges, "n": n, "peers": (), "back": ()})

    @b.signal("self")
    def _self(state, me):
        return [], state.set("me", me("in"))

    @b.signal("env")
    def _env(state, env):
        return [], state.set("env", env)

    @b.on("peers")
    def _peers(state, peers):
        return [], state.set("peers", peers)

    @b.on("go")
    def _go(state, k):
        n = state["n"] + 1
        state = state.set("n", n)
        me, peers, env = state["me"], state["peers"], state["env"]
        outs = [(me, ("go", k - 1))] if k > 0 else []
        if n % 13 == 12:
            raise ValueError("a flaky step")
        if state["coins"] and peers:
            coin, state = state["coins"][0], state.set("coins", state["coins"][1:])
            peer = peers[(n * 7 + k) % len(peers)]
            way = n % 8
            if way == 3:
                outs.append((env["time"], (me, coin)))  # refused: it would drop the coin
            elif way == 4:
                outs.append((env["feedback"], (peer, ("coin", coin), me, Linear(("tag", n)))))
            elif way == 5:
                outs.append((env["null"], coin))  # the one way to destroy it
            elif way == 6:
                outs.append((env["reflect"], (me, coin)))  # echoed back
            elif way == 7:
                outs.append((env["random"], coin))  # malformed: refused
            else:
                outs.append((peer, ("coin", coin)))
        if peers:
            outs.append((peers[0], ("ping", n)))  # one busy channel: reordering
        if state["badges"] and peers and n % 4 == 1:
            outs.append((peers[n % len(peers)], ("badge", state["badges"][0])))  # a copy
        return outs, state

    @b.on("coin")
    def _coin(state, c):
        if state["n"] % 7 == 5:
            raise ValueError("a flaky coin")
        return [], state.set("coins", (*state["coins"], c))

    @b.on("ping")
    def _ping(state, n):
        return [], state

    @b.on("badge")
    def _badge(state, x):
        return [], state.set("badges", (*state["badges"], x))

    @b.on("reflect")
    def _reflect(state, _desc, c):
        return [], state.set("coins", (*state["coins"], c))

    @b.on("delivered")
    def _delivered(state, tag):
        return [], state.set("coins", (*state["coins"], tag))

    @b.on("failed")
    def _failed(state, tag, _why):
        return [], state.set("coins", (*state["coins"], tag))

    if takes_returned:
        @b.returned
        def _returned(state, info):
            return [], state.set("back", (*state["back"], *info["values"]))

    return b


JUGGLER = make_juggler("conserve.juggler", True)
CARELESS = make_juggler("conserve.juggler-careless", False)


def build_jugglers(sim: Sim, jugglers: int = 2, coins_each: int = 1, go: int = 2,
                   offset: int = 0) -> None:
    hosts = sim.hosts
    names = []
    for i in range(jugglers):
        beh = CARELESS if i == jugglers - 1 else JUGGLER
        mine = tuple(Linear(("coin", i, j)) for j in range(coins_each))
        badges = (Relevant(("badge", i)),) if i % 2 == 0 else ()
        sim.spawn(f"j{i}", beh, (mine, badges, i * 3 + offset), host=hosts[i % len(hosts)])
        names.append(f"j{i}")
    sim.spawn("breaker", breaker, host=hosts[-1])
    sim.spawn("stopped", breaker, host=hosts[0])
    sim.stop("stopped")
    sim.spawn("ghost", breaker, host=hosts[0])
    ghost = sim.cap("ghost", "in")
    sim.export_machine("ghost")  # from now on an unknown address
    peers = tuple(sim.cap(n, "in") for n in names) + (
        sim.cap("breaker", "in"), sim.cap("stopped", "in"), ghost)
    for n in names:
        sim.send(sim.cap(n, "in"), ("peers", peers))
        sim.send(sim.cap(n, "in"), ("go", go))
    sim.send(sim.cap("breaker", "in"), ("coin", Linear("from-a-client")))


#: Every fault of the model, a retry budget small enough to be spent, short outages.
CENSUS_FAULTS = "loss=0.2,dup=0.2,corrupt=0.1,delay=1-30,crash=0.02,partition=0.02,down=5-30,cut=5-40"
CENSUS_CONFIG = Config(retry_max=2, retry_ticks=2, retry_ticks_max=8)
#: What must have happened over a census run: every fault kind and every way to fail.
CENSUS_KINDS = ("loss", "duplicate", "corrupt", "reorder", "crash", "partition",
                "drop.unreachable", "drop.stopped", "drop.unknown-address", "batch.failed",
                "commons.refused", "returned.messages", "dead-letters.messages",
                "null.linear", "batch.skipped-abandoned")


def census_seed(seed: int, steps: int = 8, **kw) -> tuple[Sim, Counter]:
    """One seed: faults on, a juggler stopped half-way, heal, quiescence; the census is
    checked after every step (a violation raises InvariantViolation with the seed)."""
    sim = make_sim(seed, 3, CENSUS_FAULTS, CENSUS_CONFIG)
    watch_census(sim)
    build_jugglers(sim, offset=seed % 13, **kw)
    sim.run(steps)
    sim.stop("j1")  # its values now go to dead letters
    sim.run(steps)
    heal(sim)
    run_until_quiescent(sim, 20_000)
    check_census(sim).assert_ok()
    kinds = Counter(fault_counts(sim.trace))
    stats = sim.net.stats
    for k in CENSUS_KINDS:
        kinds[k] += stats.get(k, 0)
    return sim, kinds


def test_census_holds_across_1000_seeds_with_every_fault_kind():
    kinds: Counter = Counter()
    for seed in range(1_000):
        kinds.update(census_seed(seed)[1])
    missing = [k for k in CENSUS_KINDS if not kinds[k]]
    assert not missing, f"never happened: {missing} ({dict(kinds)})"


def test_census_catches_a_runtime_that_loses_a_value(monkeypatch):
    monkeypatch.setattr(delivery, "give_back", lambda net, *a, **k: (net, []))
    monkeypatch.setattr("avm.core.network.give_back", delivery.give_back)
    sim = two_wallets()
    sim.send(sim.cap("w"), ("spend", sim.cap("b"), "coin"))
    with pytest.raises(InvariantViolation) as info:
        sim.run()
    assert "vanished" in str(info.value) and "c1" in str(info.value)


def test_census_catches_a_runtime_that_copies_a_value():
    sim = two_wallets()
    m = sim.machine("w")
    state = m.state.set("coins", (*m.state["coins"], m.state["coins"][0]))
    sim.restore(replace_fields(sim.net, machines=sim.net.machines.set(
        sim.address("w"), replace_fields(m, state=state))))
    sim.send(sim.cap("v"), ("coin", 1))
    with pytest.raises(InvariantViolation) as info:
        sim.run()
    assert "copied" in str(info.value)


def test_check_census_needs_the_watch():
    with pytest.raises(UsageError, match="watch_census"):
        check_census(Sim())


# ---------------------------------------------------------------------------------------
# Item 11: only what a host would deliver crosses between machines
# ---------------------------------------------------------------------------------------

holder = Behavior("conserve.holder")


@holder.init
def _h_init(state, key):
    return [], Map({"key": key, "seen": ()})


@holder.signal("self")
def _h_self(state, me):
    return [], state.set("me", me)


@holder.on("give_self")
def _h_give_self(state, to):
    return [(to, ("self", state["me"]))], state


@holder.on("give_linear")
def _h_give_linear(state, to):
    cap = state["me"](("one-shot", Linear("ticket")))
    sealer, _ = siv_sealer_pair(state["key"])
    sealed = sealer.seal(Linear("secret"))
    return [(to, ("held", cap, sealed))], state


@holder.on("self")
def _h_got_self(state, s):
    try:
        s("anything")
        can = "can mint"
    except CapabilityError:
        can = "unbound"
    return [], state.set("seen", (*state["seen"], can)).set("other", s)


@holder.on("send_back")
def _h_send_back(state, to):
    return [(to, ("self", state["other"]))], state


@holder.on("held")
def _h_held(state, cap, sealed):
    return [], state.set("seen", (*state["seen"], len(cap._held), len(sealed._held))).set(
        "kept", (cap, sealed))


@pytest.mark.parametrize("hosts", [("h0",), ("h0", "h1")])
def test_a_self_arrives_unbound_except_at_its_own_machine(hosts):
    sim = Sim(seed=7, hosts=hosts)
    sim.spawn("a", holder, b"k" * 64, host=hosts[0])
    sim.spawn("b", holder, b"k" * 64, host=hosts[-1])
    sim.run()
    sim.send(sim.cap("a"), ("give_self", sim.cap("b")))
    sim.run()
    assert sim.state("b")["seen"] == ("unbound",)  # b cannot mint a's capabilities
    sim.send(sim.cap("b"), ("send_back", sim.cap("a")))
    sim.run()
    assert sim.state("a")["seen"] == ("can mint",)  # home again: its host binds it
    assert sim.state("b")["other"] == sim.state("a")["me"]  # equal as values either way


def test_held_plaintext_never_reaches_the_receiver():
    sim = Sim(seed=8)
    watch_census(sim)
    sim.spawn("a", holder, b"k" * 64)
    sim.spawn("b", holder, b"k" * 64)
    sim.run()
    sim.send(sim.cap("a"), ("give_linear", sim.cap("b")))
    sim.run()
    assert sim.state("b")["seen"] == (0, 0)
    assert check_census(sim).ok


def test_values_that_need_no_stripping_cross_as_they_are():
    from avm.core.conserve import transit

    sim = Sim(seed=9)
    sim.spawn("a", holder, b"k" * 64)
    msgs = ((sim.cap("a"), 1), (sim.cap("a"), ("x", (1, 2), Map({"k": b"v"}))))
    assert transit(sim.net.keys, sim.address("a"), msgs) is msgs


# ---------------------------------------------------------------------------------------
# Item 14: the checker compares real batch hashes
# ---------------------------------------------------------------------------------------


def test_the_checker_compares_batch_hashes_not_message_counts():
    sim = two_wallets()
    sim.send(sim.cap("v"), ("coin", 1))
    sim.run()
    trace = list(sim.trace)
    [i] = [k for k, e in enumerate(trace) if type(e) is events.Applied and e.chan[0] == ("client", "client")
           and e.dest == sim.address("v")]
    ev = trace[i]
    other = replace_fields(ev.batch, messages=((ev.batch.messages[0][0], ("coin", 2)),))
    trace[i] = dataclasses.replace(ev, batch=other)  # same size, other contents
    report = Checker.from_trace(trace).report()
    assert report.total("hash_mismatches") == 1
    assert Checker.from_trace(sim.trace).report().total("hash_mismatches") == 0
