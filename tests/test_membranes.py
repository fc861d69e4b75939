"""Membranes wrap what crosses them (DESIGN section 5, the E / Spritely membrane).

A membrane that only filtered message names would leave every capability carried through
it working after revocation: a reply capability carried in, a capability handed out in
an answer. These tests try to keep such a capability alive past revocation in every way
we could think of (passed in, passed out, nested in records, tuples, maps and record map keys, passed
through twice, through two membranes in series, linear ones, after key rotation), and
check that linear values crossing are never copied or lost (the census, P8)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

import avm
from avm import Linear, Map
from avm.core.caps import Capability
from avm.core.netvalue import commons_env
from avm.core.network import events
from avm.core.patterns import (
    ADMIN,
    INWARD,
    OUTWARD,
    USE,
    Refused,
    caretaker,
    forwarder_caps,
    map_capabilities,
    membrane,
    membrane_args,
)
from avm.testing import watch_census

ALLOW = ("ask", "give", "hit", "keep", "echo", "all", "again", "spend", "boom")


@avm.record(name="tests.membranes.Envelope")
class Envelope:
    to: Capability
    extra: tuple = ()


def _caps_in(value) -> list[Capability]:
    found: list[Capability] = []

    def collect(c: Capability) -> Capability:
        found.append(c)
        return c

    map_capabilities(value, collect)
    return found


# -- the inside: a server that keeps, answers and calls back what it was given -------------

server = avm.Behavior("tests.membranes.server")


@server.init
def _server_init(_s, _a):
    return [], Map(me=None, null=None, kept=(), hits=0)


@server.signal("self")
def _server_self(s, me):
    return [], s.set("me", me)


@server.signal("env")
def _server_env(s, env):
    return [], s.set("null", env["null"])


@server.on("ask")
def _server_ask(s, reply):
    return [(reply, ("answer", 1))], s.set("kept", (*s["kept"], reply))


@server.on("keep")
def _server_keep(s, *values):
    return [], s.set("kept", (*s["kept"], *values))


@server.on("give")
def _server_give(s, reply):
    return [(reply, ("key", s["me"]("secret")))], s


@server.on("hit")
def _server_hit(s):
    return [], s.set("hits", s["hits"] + 1)


@server.on("echo")
def _server_echo(s, reply, x):
    return [(reply, ("echo", x))], s


@server.on("all")
def _server_all(s, value):
    # Keep every capability found anywhere in value, and greet each one.
    caps = tuple(_caps_in(value))
    return [(c, ("hello", i)) for i, c in enumerate(caps)], s.set("kept", (*s["kept"], *caps))


@server.on("again")
def _server_again(s):
    # Call back every capability kept so far (only the unrestricted ones: a linear one
    # may be used once, by "spend").
    return [(c, ("again", i)) for i, c in enumerate(s["kept"]) if not c.kind], s


@server.on("spend")
def _server_spend(s):
    linear = [c for c in s["kept"] if c.kind]
    rest = tuple(c for c in s["kept"] if not c.kind)
    return [(c, "pay") for c in linear], s.set("kept", rest)


@server.on("boom")
def _server_boom(s, *_):
    raise ValueError("boom")


# -- the outside: a vault whose linear capabilities are spent by a message --------------

vault = avm.Behavior("tests.membranes.vault")


@vault.init
def _vault_init(_s, _a):
    return [], Map(null=None, paid=0)


@vault.signal("env")
def _vault_env(s, env):
    return [], s.set("null", env["null"])


@vault.otherwise
def _vault_pay(s, content, *, ctx):
    # Each linear capability is spent once: its linear context goes to null.
    return [(s["null"], ctx)], s.set("paid", s["paid"] + 1)


def world(seed: int = 0, allow=ALLOW, **kw) -> tuple[avm.Sim, Capability, Capability]:
    sim = avm.Sim(seed=seed, **kw)
    sim.spawn("server", server, None)
    sim.spawn("m", membrane(), membrane_args(sim.cap("server", "main"), allow))
    use, admin = forwarder_caps(sim, "m")
    return sim, use, admin


def failed_at(sim: avm.Sim, name: str) -> list[avm.Failure]:
    addr = sim.address(name)
    return [e.failure for e in sim.trace
            if type(e) is events.Applied and e.dest == addr and not e.ok]


def revoke(sim: avm.Sim, admin: Capability) -> None:
    sim.send(admin, "revoke")
    assert sim.run().quiescent


# -- passed in ---------------------------------------------------------------------------


def test_a_reply_capability_carried_in_is_wrapped_and_dies_with_the_membrane():
    sim, use, admin = world()
    p = sim.probe("p")
    sim.send(use, ("ask", p))
    sim.run()
    assert sim.received("p") == (("answer", 1),)  # the answer came back out
    [kept] = sim.state("server")["kept"]
    assert kept != p and kept.address == sim.address("m")  # the server holds a wrapper
    assert kept == sim.cap("m", (OUTWARD, p))
    sim.send(sim.cap("server", "main"), "again")
    sim.run()
    assert sim.received("p") == (("answer", 1), ("again", 0))
    revoke(sim, admin)
    sim.send(sim.cap("server", "main"), "again")
    sim.run()
    assert sim.received("p") == (("answer", 1), ("again", 0))  # cut off
    assert [f.error_type for f in failed_at(sim, "m")] == ["Revoked"]


def test_a_capability_carried_out_in_an_answer_is_wrapped_and_dies_with_the_membrane():
    sim, use, admin = world()
    p = sim.probe("p")
    sim.send(use, ("give", p))
    sim.run()
    [(_, key)] = sim.received("p")
    secret = sim.cap("server", "secret")
    assert key != secret and key == sim.cap("m", (INWARD, secret))
    sim.send(key, "hit")
    sim.run()
    assert sim.state("server")["hits"] == 1
    revoke(sim, admin)
    sim.send(key, "hit")
    sim.run()
    assert sim.state("server")["hits"] == 1
    assert [f.error_type for f in failed_at(sim, "m")] == ["Revoked"]


def test_the_allow_list_holds_for_capabilities_carried_out():
    # An answer's capability is no way around the attenuation.
    sim, use, _ = world(allow=("give", "hit"))
    p = sim.probe("p")
    sim.send(use, ("give", p))
    sim.run()
    key = sim.received("p")[0][1]
    sim.send(key, ("boom", 1))
    sim.send(key, "hit")
    sim.run()
    assert sim.state("server")["hits"] == 1
    assert [f.error_type for f in failed_at(sim, "m")] == ["Refused"]


def test_answers_coming_out_are_not_filtered():
    # The allow-list attenuates what goes in; the holders' own capabilities take anything.
    sim, use, _ = world(allow=("ask",))
    p = sim.probe("p")
    sim.send(use, ("ask", p))
    sim.run()
    assert sim.received("p") == (("answer", 1),)  # "answer" is not on the list


@given(seed=st.integers(0, 2**16), shape=st.integers(0, 2**20))
@settings(max_examples=25, deadline=None)
def test_nested_capabilities_all_die_with_the_membrane(seed, shape):
    sim, use, admin = world(seed)
    probes = [sim.probe(f"p{i}") for i in range(4)]
    value = _nest(probes, shape)
    sim.send(use, ("all", value))
    sim.run()
    kept = sim.state("server")["kept"]
    assert len(kept) == len(_caps_in(value))
    assert all(c.address == sim.address("m") for c in kept)  # every one wrapped
    greeted = sum(len(sim.received(f"p{i}")) for i in range(4))
    assert greeted == len(kept)
    revoke(sim, admin)
    sim.send(sim.cap("server", "main"), "again")
    sim.run()
    assert sum(len(sim.received(f"p{i}")) for i in range(4)) == greeted


def _nest(caps: list[Capability], shape: int):
    """A value holding ``caps`` in records, tuples, map values and record keys, by ``shape``."""
    parts = []
    for i, c in enumerate(caps):
        how = (shape >> (3 * i)) & 7
        if how == 0:
            parts.append(c)
        elif how == 1:
            parts.append(Envelope(c, (i,)))
        elif how == 2:
            parts.append(((i, (c,)),))
        elif how == 3:
            parts.append(Map({Envelope(c): i}))  # a record key
        elif how == 4:
            parts.append(Map({"k": (Envelope(c),)}))
        elif how == 5:
            parts.append(Envelope(c, (Map({i: c}),)))  # the same capability twice
        elif how == 6:
            parts.append(avm.Affine("plain"))  # a substructural value without caps passes
            parts.append(c)
        else:
            parts.append(Map({Envelope(c, (i,)): Envelope(c)}))
    return tuple(parts)


def test_records_map_keys_and_tuples_are_rebuilt_with_wrappers():
    sim, use, _ = world()
    p, q = sim.probe("p"), sim.probe("q")
    value = (Envelope(p, (q,)), Map({Envelope(p): "k", "v": q}))
    sim.send(use, ("keep", value))
    sim.run()
    [got] = sim.state("server")["kept"]
    wp, wq = sim.cap("m", (OUTWARD, p)), sim.cap("m", (OUTWARD, q))
    assert got == (Envelope(wp, (wq,)), Map({Envelope(wp): "k", "v": wq}))


# -- passed through twice ----------------------------------------------------------------


def test_a_capability_passed_in_and_back_out_is_the_holders_own_again():
    sim, use, _ = world()
    p, q = sim.probe("p"), sim.probe("q")
    sim.send(use, ("echo", p, q))
    sim.run()
    [(_, back)] = sim.received("p")
    assert back == q and avm.encode(back) == avm.encode(q)  # unwrapped, exactly


def test_a_capability_passed_out_and_back_in_is_the_servers_own_again():
    sim, use, _ = world()
    p = sim.probe("p")
    sim.send(use, ("give", p))
    sim.run()
    key = sim.received("p")[0][1]
    sim.send(use, ("keep", key, use))  # its own capability, and the membrane's use
    sim.run()
    assert sim.state("server")["kept"] == (sim.cap("server", "secret"), sim.cap("server", "main"))


def test_the_same_capability_crossing_twice_gets_the_same_wrapper():
    sim, use, _ = world()
    p = sim.probe("p")
    sim.send(use, ("keep", p))
    sim.run()
    sim.send(use, ("keep", p))
    sim.run()
    a, b = sim.state("server")["kept"]
    assert a == b


def test_two_membranes_in_series_are_each_enough_to_cut_it():
    for which in ("m", "m2"):
        sim, use, _ = world()
        sim.spawn("m2", membrane(), membrane_args(use, ALLOW))
        use2, _ = forwarder_caps(sim, "m2")
        p = sim.probe("p")
        sim.send(use2, ("ask", p))
        sim.send(use2, ("give", p))
        sim.run()
        [kept] = sim.state("server")["kept"]
        assert kept.address == sim.address("m")  # the inner membrane's wrapper...
        key = sim.received("p")[1][1]
        assert key.address == sim.address("m2")  # ...and the outer one's, going out
        revoke(sim, sim.cap(which, ADMIN))
        sim.send(sim.cap("server", "main"), "again")
        sim.send(key, "hit")
        sim.run()
        assert sim.received("p") == (("answer", 1), ("key", key))
        assert sim.state("server")["hits"] == 0
        assert {f.error_type for f in failed_at(sim, which)} == {"Revoked"}


def test_a_wrapper_carried_in_after_revocation_is_refused():
    sim, use, admin = world()
    p = sim.probe("p")
    sim.send(use, ("give", p))
    sim.run()
    key = sim.received("p")[0][1]
    revoke(sim, admin)
    sim.send(use, ("keep", key))
    sim.run()
    assert sim.state("server")["kept"] == ()
    # A wrapper rebuilt from the membrane's fields with another context cannot be made by
    # a holder (the context is sealed); and through a caretaker it is not unwrapped.
    sim.spawn("ct", caretaker(), key)
    sim.send(sim.cap("ct", USE), "hit")
    sim.run()
    assert sim.state("server")["hits"] == 0


def test_key_rotation_of_the_membrane_kills_its_wrappers_and_it_keeps_working():
    sim, use, _ = world()
    p = sim.probe("p")
    sim.send(use, ("ask", p))
    sim.run()
    sim.rotate_key("m")
    sim.run()
    sim.send(sim.cap("server", "main"), "again")  # the old wrapper: retired key
    new_use = sim.cap("m", USE)
    sim.send(new_use, ("ask", p))  # wrapped with the new Self
    sim.run()
    assert sim.received("p") == (("answer", 1), ("answer", 1))
    assert [f.rule for f in failed_at(sim, "m")] == ["unseal"]


def test_commons_capabilities_pass_as_they_are():
    sim, use, _ = world()
    null = commons_env(sim.net, "h0")["null"]
    sim.send(use, ("keep", null))
    sim.run()
    assert sim.state("server")["kept"] == (null,)


def test_caretakers_do_not_wrap():
    # The documented difference: a caretaker forwards contents as they are.
    sim = avm.Sim(seed=0)
    sim.spawn("server", server, None)
    sim.spawn("ct", caretaker(), sim.cap("server", "main"))
    p = sim.probe("p")
    sim.send(sim.cap("ct", USE), ("keep", p))
    sim.run()
    assert sim.state("server")["kept"] == (p,)


# -- linear values crossing ------------------------------------------------------------


def linear_world(seed: int = 0):
    sim, use, admin = world(seed)
    sim.spawn("vault", vault, None)
    watch = watch_census(sim)
    return sim, use, admin, watch


def test_a_linear_capability_gets_a_linear_wrapper_used_once():
    sim, use, _, watch = linear_world()
    coin = sim.cap("vault", Linear("coin"))
    sim.send(use, ("keep", coin))
    sim.run()
    [w] = sim.state("server")["kept"]
    assert w.kind == coin.kind and w.address == sim.address("m")
    sim.send(sim.cap("server", "main"), "spend")
    sim.run()
    assert sim.state("vault")["paid"] == 1
    assert failed_at(sim, "m") == []
    watch.report().assert_ok()


def test_a_server_cannot_copy_a_linear_wrapper():
    copier = avm.Behavior("tests.membranes.copier")

    @copier.on("keep")
    def _keep(s, c):
        return [(c, "pay"), (c, "pay")], s

    sim = avm.Sim(seed=0)
    sim.spawn("server", copier, None)
    sim.spawn("vault", vault, None)
    sim.spawn("m", membrane(), membrane_args(sim.cap("server", "main"), ("keep",)))
    watch = watch_census(sim)
    sim.send(sim.cap("m", USE), ("keep", sim.cap("vault", Linear("coin"))))
    sim.run()
    assert sim.state("vault")["paid"] == 0
    assert [f.rule for f in failed_at(sim, "server")] == ["substructural"]
    watch.report().assert_ok()


def test_a_linear_wrapper_used_after_revocation_goes_to_the_dead_letters():
    sim, use, admin, watch = linear_world()
    sim.send(use, ("keep", sim.cap("vault", Linear("coin"))))
    sim.run()
    revoke(sim, admin)
    sim.send(sim.cap("server", "main"), "spend")
    sim.run()
    assert sim.state("vault")["paid"] == 0
    assert [f.error_type for f in failed_at(sim, "m")] == ["Revoked"]
    # Given back to the server, which takes no returned values: they are dead letters.
    assert sim.dead_letters()
    report = watch.report().assert_ok()
    assert report.census.linear == 1 and report.dead_letters >= 1


def test_a_failed_forward_of_linear_values_dead_letters_them():
    sim, use, _, watch = linear_world()
    sim.send(use, ("boom", Linear("token"), sim.cap("vault", Linear("coin"))))
    sim.run()
    assert [f.detail for f in failed_at(sim, "server")] == ["boom"]
    # Back to the membrane, which cannot tell whose they were: not copied, not lost.
    letters = sim.dead_letters()
    assert letters
    report = watch.report().assert_ok()
    assert report.census.linear == 2 and report.census.places["dead letters"] == 2


def test_a_capability_inside_a_linear_value_is_refused_not_leaked():
    sim, use, _, watch = linear_world()
    p = sim.probe("p")
    sim.send(use, ("keep", Linear(("ticket", p))))
    sim.send(use, ("keep", avm.Relevant((p,))))
    sim.run()
    assert sim.state("server")["kept"] == ()
    assert [f.error_type for f in failed_at(sim, "m")] == ["Refused", "Refused"]
    watch.report().assert_ok()


def test_a_linear_value_without_capabilities_crosses_as_it_is():
    sim, use, _, watch = linear_world()
    token = Linear("token")
    sim.send(use, ("keep", token))
    sim.run()
    assert sim.state("server")["kept"] == (token,)
    watch.report().assert_ok()


@given(seed=st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_linear_traffic_through_a_membrane_is_conserved_under_faults(seed):
    sim, use, admin = world(seed, hosts=("h0", "h1", "h2"), faults="all")
    sim.spawn("vault", vault, None, host="h2")
    watch = watch_census(sim)
    for i in range(4):
        sim.send(use, ("keep", sim.cap("vault", Linear(("coin", i)))))
    sim.send(sim.cap("server", "main"), "spend")
    if seed % 2:
        sim.send(admin, "revoke")
    sim.send(sim.cap("server", "main"), "spend")
    avm.testing.heal(sim)
    assert sim.run().quiescent
    watch.report().assert_ok()
    paid = sim.state("vault")["paid"]
    assert paid <= 4  # never more than the coins that exist


# -- map_capabilities, the walk ---------------------------------------------------------


def _pool() -> list[Capability]:
    sim = avm.Sim(seed=9)
    sim.spawn("a", server, None)
    return [sim.cap("a", i) for i in range(3)]


POOL = _pool()

values = st.recursive(
    st.one_of(st.sampled_from(POOL), st.integers(-3, 3), st.text(max_size=2), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple),
        st.builds(Envelope, st.sampled_from(POOL), st.lists(inner, max_size=2).map(tuple)),
        st.dictionaries(st.one_of(st.builds(Envelope, st.sampled_from(POOL)), st.integers(0, 5)), inner,
                        max_size=3).map(Map),
    ),
    max_leaves=12,
)


@given(values)
def test_map_capabilities_identity_gives_the_same_object(v):
    assert map_capabilities(v, lambda c: c) is v


@given(values)
def test_map_capabilities_replaces_every_capability_and_can_be_undone(v):
    shifted = {c: POOL[(i + 1) % 3] for i, c in enumerate(POOL)}
    back = {b: a for a, b in shifted.items()}
    w = map_capabilities(v, lambda c: shifted[c])
    # The same capabilities, each shifted (as multisets: a map may reorder its keys).
    assert Counter(avm.encode(shifted[c]) for c in _caps_in(v)) == Counter(
        avm.encode(c) for c in _caps_in(w))
    assert map_capabilities(w, lambda c: back[c]) == v


def test_map_capabilities_refuses_what_it_cannot_rebuild():
    c = POOL[0]
    for v in (Linear(c), avm.Affine((1, c)), avm.Relevant(Envelope(c))):
        try:
            map_capabilities(v, lambda x: POOL[1])
        except Refused:
            pass
        else:
            raise AssertionError(f"{v!r} was rebuilt")
        assert map_capabilities(v, lambda x: x) is v  # unchanged: fine
    # Two keys that become one would lose an entry.
    try:
        map_capabilities(Map({Envelope(POOL[0]): 1, Envelope(POOL[1]): 2}), lambda x: POOL[2])
    except Refused:
        pass
    else:
        raise AssertionError("a map lost a key")


def test_relevant_and_affine_capabilities_get_wrappers_of_their_kind():
    sim, use, _, watch = linear_world()
    rel = sim.cap("vault", avm.Relevant("rel"))
    aff = sim.cap("vault", avm.Affine("aff"))
    sim.send(use, ("keep", rel, aff))
    sim.run()
    w_rel, w_aff = sim.state("server")["kept"]
    assert (w_rel.kind, w_aff.kind) == (rel.kind, aff.kind) == (avm.RELEVANT, avm.AFFINE)
    assert {w_rel.address, w_aff.address} == {sim.address("m")}
    assert failed_at(sim, "m") == []
    watch.report().assert_ok()
