"""A key-value store whose locks are linear capabilities.

``kv.store``
    Holds the data and, per key, who holds its lock and who waits for it. A client asks
    through the store's public capability (context ``"clients"``) with
    ``("acquire", key, reply)``; when the key is free the store sends the reply
    ``("granted", key, lock)``, where ``lock`` is a *linear* capability: a one-shot
    right of :class:`avm.patterns.OneShots` whose sealed context names the key. A
    linear capability can be neither copied nor dropped, so the lock exists exactly
    once and its holder must give it back. Through the lock the holder sends
    ``("read", reply)`` (the store answers ``("value", key, value, lock)`` with a
    *fresh* lock: the old one is spent), ``("write", value)`` or ``("release",)``
    (both give the lock back; the next waiter is granted). A lock rebuilt from its
    bytes is refused as spent, and one that comes back unused (its holder failed or
    stopped) is taken back by the ``~returned`` signal and the key freed.

``kv.client``
    Increments one shared key ``rounds`` times: acquire, read, write the value plus
    one, acquire again. Clients run on other hosts than the store, so every lock crosses
    lossy, duplicating, reordering links when faults are on.

Mutual exclusion is what makes the increments add up: with three clients doing five
rounds each, the key ends at 15 on every seed and under every fault kind, never less
(a lost update) and never more. The invariants below check, after every step, that at
most one lock per key is outstanding and the store's records agree with its rights.

``avm sim examples/kvlocks.py --faults all`` runs it.
"""

import avm
from avm import Map
from avm.core.patterns import OneShots, Spent, is_one_shot

KEY = "counter"
CLIENTS = {"alice": "h1", "bob": "h2", "carol": "h1"}
ROUNDS = 5

store = avm.Behavior("kv.store")


@store.init
def open_store(_state, _args):
    return [], Map(data=Map(), holder=Map(), waiting=Map(), shots=OneShots(), me=None,
                   null=None)


@store.signal("self")
def store_self(state, me):
    return [], state.set("me", me)


@store.signal("env")
def store_env(state, env):
    return [], state.set("null", env["null"])


def _issue(state, key):
    """A new lock for ``key``: a linear one-shot right, recorded as its holder's."""
    shots, lock, n = state["shots"].issue(state["me"], key, label=key)
    return state.set("shots", shots).set("holder", state["holder"].set(key, n)), lock


def _grant(state, key, reply):
    state, lock = _issue(state, key)
    return [(reply, ("granted", key, lock))], state


def _free(state, key):
    """The lock of ``key`` came back: grant it to the next waiter, if any."""
    state = state.set("holder", state["holder"].discard(key))
    queue = state["waiting"].get(key, ())
    if not queue:
        return [], state
    state = state.set("waiting", state["waiting"].set(key, queue[1:]))
    return _grant(state, key, queue[0])


@store.on("acquire", context="clients")
def acquire(state, key, reply):
    if key in state["holder"]:
        waiting = state["waiting"]
        return [], state.set("waiting", waiting.set(key, (*waiting.get(key, ()), reply)))
    return _grant(state, key, reply)


@store.otherwise
def through_a_lock(state, content, *, ctx):
    """A message sent through a lock: spend the right, then act on its key."""
    if not is_one_shot(ctx):
        raise avm.UsageError("kv.store takes acquire through its clients capability, "
                             "and read/write/release through a lock")
    shots, key, destroy = state["shots"].redeem(ctx, state["null"])  # Spent if reused
    state = state.set("shots", shots)
    op = content[0] if type(content) is tuple and content else content
    if op == "read":  # the holder keeps the key: a fresh lock comes with the value
        state, lock = _issue(state, key)
        return destroy + [(content[1], ("value", key, state["data"].get(key), lock))], state
    if op == "write":
        state = state.set("data", state["data"].set(key, content[1]))
        outs, state = _free(state, key)
        return destroy + outs, state
    if op == "release":
        outs, state = _free(state, key)
        return destroy + outs, state
    raise avm.UsageError(f"a lock takes read, write or release, not {op!r}")


@store.returned
def lock_came_back(state, info):
    """A lock its holder never got (or could not use): cancel the right, free the key."""
    shots, outs, rest, rights = state["shots"].returned(state["me"], info, state["null"])
    state = state.set("shots", shots)
    for _, key, _ in rights:
        more, state = _free(state, key)
        outs = outs + more
    return outs + [(state["null"], m) for m in rest], state


client = avm.Behavior("kv.client")


@client.init
def start_client(_state, args):
    store_cap, rounds = args
    return [], Map(store=store_cap, left=rounds, done=0, me=None, seen=())


@client.signal("self")
def client_self(state, me):
    return [(state["store"], ("acquire", KEY, me("grant")))], state.set("me", me)


@client.on("granted", context="grant")
def granted(state, key, lock):
    return [(lock, ("read", state["me"]("value")))], state


@client.on("value", context="value")
def value(state, key, current, lock):
    n = (current or 0) + 1
    state = state.set("left", state["left"] - 1).set("done", state["done"] + 1)
    state = state.set("seen", (*state["seen"], n))
    outs = [(lock, ("write", n))]
    if state["left"] > 0:
        outs.append((state["store"], ("acquire", KEY, state["me"]("grant"))))
    return outs, state


def build(sim):
    for h in ("h0", *CLIENTS.values()):
        sim.add_host(h, exist_ok=True)
    sim.spawn("store", store, None, host="h0")
    public = sim.cap("store", "clients")
    for name, host in CLIENTS.items():
        sim.spawn(name, client, (public, ROUNDS), host=host)

    def one_lock_per_key(s):
        st = s.state("store")
        if st is None:
            return True
        outstanding = st["shots"].outstanding
        held = st["holder"]
        return len(outstanding) <= len(held) and all(
            outstanding.get(n) == key for key, n in held.items() if n in outstanding)

    def increments_never_lost(s):
        st = s.state("store")
        if st is None:
            return True
        done = sum((s.state(c) or Map(done=0))["done"] for c in CLIENTS)
        value = st["data"].get(KEY) or 0
        return value <= done <= value + 1  # at most the one write in flight

    sim.invariant(one_lock_per_key)
    sim.invariant(increments_never_lost)


__all__ = ["store", "client", "build", "Spent", "KEY", "CLIENTS", "ROUNDS"]
