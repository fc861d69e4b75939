"""Hierarchy: a whole network inside one machine's state (DESIGN section 7).

    "Hierarchy: a machine whose state is a network, whose step routes its messages into
    that network and emits what leaves it. An application must behave the same as
    top-level machines and nested inside one machine."

:func:`nest` turns an application's *build function* (the same ``build(sim)`` that sets
it up at top level) into a behavior. The nesting machine's state is
``Map({"net": Network})``: an ordinary immutable value, so the host stores, hashes and
shows it like any other state. Each outer message is routed into the inner network,
which then runs until it is quiescent; messages addressed outside it leave as the outer
machine's outputs. Nothing here needs host support: it is only a step function.

Routing in: an outer capability with context ``("route", machine_name, inner_context)``
reaches inner machine ``machine_name`` with ``inner_context``. The nesting machine's host
mints them (``sim.cap("world", ("route", "bank", None))``), or the machine itself with its
``Self``.

Keys: the inner network's key material is never the init argument (which stays the inner
*scheduling* seed) and never anything public. On its ``env`` signal the nesting machine
asks the outer network's ``random`` service for ``SECRET_BYTES`` bytes and builds the
inner network only when the answer arrives, with that answer as its secret
(:mod:`avm.core.keys`). So two nests spawned with the same init argument have different
keys, and the inner keys are as unpredictable as the outer machine's ``random`` stream.
Outer messages that arrive before the answer wait, in order, in the state
(``Map({"seed", "queue"})``) and are routed in right after the inner network is built.
What this does not hide: the inner network, keys included, *is* the nesting machine's
state, so whoever can read that state (its host, a debugger) can read the inner keys.

Transparent capabilities: an inner capability that leaves in a message (an inner machine
answers an outer reply capability with a capability of its own) would name an address
the outer network does not know. So on the way out every inner capability in an exit's
contents becomes the nesting machine's capability ``(INNER, inner_cap)`` (same priority,
same substructural kind), and a message through it is delivered inside to ``inner_cap``;
on the way in, such a wrapper is unwrapped, so inner machines get their own capabilities
back. Outer capabilities need nothing: inside, a batch to an address the inner network
does not know leaves through its boundary.

Time: inner ``time`` answers follow the outer ``time`` service. Routing an outer message
in, the nesting machine also asks the outer ``time`` service (at most one request
outstanding) and, when the answer arrives, moves the inner clock forward to it, never
back; in between, inner time advances with inner steps as usual. So inner time lags outer
time by at most one round trip, and messages are still routed in by the batch that
carried them, never held back waiting for an answer (one that never comes, or a message
that fails, would otherwise block the ones behind it). ``follow_time=False`` leaves the
inner clock alone.

Timers: the inner network has timers of its own (``avm.core.timers``). A top-level
simulator jumps its clock to the next timer when nothing else can run; inside a nest
that jump would run inner time ahead of outer time (a one-hour inner deadline would
expire within one outer step). So the nest runs its inner network until only inner
timers are left, asks the outer ``timer`` service to wake it when the earliest is due
(``("at", due_ms, ...)``, one wake outstanding at a time), and on waking moves the inner
clock to that tick and lets the timers fire. An answer from the outer ``time`` service
that reaches an inner timer fires it too.

Destruction: a linear value that came in and that an inner machine sends to the inner
``null`` is gone from the inner network, which the outer step would see as a drop. The
nesting machine forwards what the inner ``null`` destroyed during a step to the outer
``null``, so the outer census counts the destruction where it happened.

What stays behind: invariants that ``build`` registers are checked while the init batch
settles; later steps run the inner network without them (check the outer network's
invariants instead, reading inner states with :func:`inner_state`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import timers
from .caps import Capability, Keyring, Self, unseal_context
from .errors import AvmError
from .keys import SECRET_BYTES
from .machine import Behavior
from .network import Config, Network, events, new_network, quiescent
from .patterns import map_capabilities
from .sim import Sim
from .values import NO_DROP, Map, item_identity, substructural_items
from .values import replace_fields as replace

__all__ = ["nest", "inner_state", "inner_network", "ROUTE", "INNER", "KEY_CONTEXT",
           "TIME_CONTEXT", "WAKE_CONTEXT", "TIMER_SET_CONTEXT"]

ROUTE = "route"
#: First element of ``(INNER, inner_cap)``: the outer face of an inner capability.
INNER = "inner"
#: The context of the capability the outer ``random`` service answers the key request to.
KEY_CONTEXT = ("nest-key-material",)
#: The context of the capability the outer ``time`` service answers to.
TIME_CONTEXT = ("nest-time",)
#: The context the outer ``timer`` service wakes the nest through, when an inner timer
#: is due; and the one its ``("timer", cancel)`` answers come to.
WAKE_CONTEXT = ("nest-wake",)
TIMER_SET_CONTEXT = ("nest-timer-set",)

_NULLED = ("null.linear", "null.relevant")
#: Outer messages routed in while a time request is outstanding before asking again (an
#: answer that never comes must not stop inner time from following).
TIME_ASKS_PATIENCE = 16


def nest(
    build: Callable[[Sim], None], *, name: str = "nest", hosts: tuple[str, ...] = ("h0",),
    max_steps: int = 1_000_000, follow_time: bool = True,
) -> Behavior:
    """A behavior whose state is the network that ``build`` sets up.

    The init argument is the inner network's scheduling seed (an int, default 0), not
    its keys: those come from the outer ``random`` service (see the module text).
    ``build`` is called once, when the key material arrives, with a fresh :class:`Sim`;
    it may spawn machines and send messages. ``follow_time``: inner time follows the
    outer ``time`` service (one outer request per group of outer messages).
    """
    b = Behavior(name)
    behaviors: dict[str, Callable] = {}

    def _fresh(seed: int, secret: bytes) -> Sim:
        cfg = Config(boundary=True)
        sim = Sim(seed=seed, hosts=(), config=cfg, record=False)
        sim.restore(new_network(seed, cfg, hosts, secret=secret))
        return sim

    def _sim(net: Network) -> Sim:
        if not behaviors:
            # A nest restored from storage or moved here never ran its init in this
            # process: learn the behavior table by running build on a scratch network.
            # build is deterministic, so this is the same table init saw.
            scratch = Sim(seed=net.seed, hosts=hosts, record=False)
            build(scratch)
            behaviors.update(scratch.env.behaviors)
        sim = Sim(seed=net.seed, hosts=(), record=False)
        sim.env.behaviors.update(behaviors)
        sim.restore(net)
        return sim

    def _paced(state: Map) -> bool:
        return follow_time and state.get("timer") is not None

    def _run_inner(sim: Sim, paced: bool) -> None:
        """Run the inner network until it is quiescent, or (``paced``) until all that is
        left is inner timers: jumping the inner clock to them would run inner time ahead
        of outer time, so the outer ``timer`` service wakes the nest instead."""
        if not paced:
            if not sim.run(max_steps).quiescent:
                raise AvmError(f"nested network did not settle within {max_steps} steps")
            return
        for _ in range(max_steps):
            prev = sim.net
            evs = sim.step()
            if len(evs) == 1 and type(evs[0]) is events.Idle:
                break
            if not evs and sim.net.now > prev.now:
                wake = timers.next_due(prev)
                if wake is not None and sim.net.now >= wake:
                    sim.restore(prev)  # a jump to an inner timer: outer time decides
                    break
        else:
            raise AvmError(f"nested network did not settle within {max_steps} steps")
        net = sim.net
        if not quiescent(net) and (net.live or net.wire or net.outbox or net.held):
            raise AvmError("nested network is stuck: batches wait that nothing can run")

    def _wake_later(state: Map, out: list) -> Map:
        """Ask the outer timer service to wake the nest when its next inner timer is due."""
        net = state["net"]
        due = timers.next_due(net)
        if due is None or not _paced(state):
            return state
        asked = state.get("wake")
        if asked is not None and asked <= due:
            return state  # an earlier (or the same) wake is already set
        me = state["me"]
        due_ms = net.config.epoch_ms + due * net.config.tick_ms
        out.append((state["timer"], (me(TIMER_SET_CONTEXT),
                                     ("at", due_ms, me(WAKE_CONTEXT), ("wake", due)))))
        return state.set("wake", due)

    def _settle(sim: Sim, state: Map, out: list) -> Map:
        _run_inner(sim, _paced(state))
        me = state["me"]
        machines = sim.net.machines

        def export(cap: Capability) -> Capability:
            if cap.commons is not None:
                cname, args = cap.commons
                new = map_capabilities(args, export)
                return cap if new is args else Capability(cap.address, commons=(cname, new))
            if cap.address in machines:
                return me((INNER, cap), cap.priority)
            return cap

        for cap, content in sim.net.exits:
            out.append((cap, map_capabilities(content, export)))
        sim.restore(replace(sim.net, exits=()))
        return _wake_later(state.set("net", sim.net), out)

    def _import(state: Map, content: Any) -> Any:
        me: Self = state["me"]
        ring = Keyring(me.address, me._key)  # type: ignore[arg-type]

        def unwrap(cap: Capability) -> Capability:
            if cap.commons is not None:
                cname, args = cap.commons
                new = map_capabilities(args, unwrap)
                return cap if new is args else Capability(cap.address, commons=(cname, new))
            if cap.address == me.address and not cap.kind:
                try:
                    ctx = unseal_context(cap, ring)
                except AvmError:
                    return cap
                if _is_inner(ctx):
                    return ctx[1]
            return cap

        return map_capabilities(content, unwrap)

    def _route_in(state: Map, ctx: tuple, content: Any, out: list) -> Map:
        sim = _sim(state["net"])
        before = _nulled(sim.net)
        content = _import(state, content)
        if ctx[0] == INNER:
            dest = ctx[1]
        else:
            _, target, inner_ctx = ctx
            dest = sim.cap(target, inner_ctx)
        sim.send(dest, content, client="outer")
        new = _settle(sim, state, out)
        if _nulled(new["net"]) != before:
            _forward_destroyed(state, ctx, content, new, out)
        return new

    def _forward_destroyed(state: Map, ctx: Any, content: Any, new: Map, out: list) -> None:
        # What the inner null consumed is gone from the inner network; tell the outer
        # null, so the outer step (and census) sees a destruction, not a drop.
        kept = {item_identity(x) for x in substructural_items(new["net"])}
        for _, c in out:
            kept.update(item_identity(x) for x in substructural_items(c))
        gone = []
        seen: set = set()
        for x in (*substructural_items(ctx), *substructural_items(content),
                  *substructural_items(state["net"])):
            i = item_identity(x)
            if x.kind & NO_DROP and i not in kept and i not in seen:
                seen.add(i)
                gone.append(x)
        if gone:
            out.append((state["null"], tuple(gone)))

    def _flush(state: Map, out: list) -> Map:
        """Route the queued outer messages in, once the inner network exists."""
        if "net" not in state:
            return state
        queue = state["queue"]
        state = state.set("queue", ())
        for ctx, queued in queue:
            state = _route_in(state, ctx, queued, out)
        return state

    def _ask_time(state: Map, out: list) -> Map:
        """Ask the outer time service, unless a request is outstanding (but never
        trust one lost answer for long: re-ask after ``TIME_ASKS_PATIENCE`` messages)."""
        if not follow_time or state.get("time") is None:
            return state
        waiting = state.get("asking", 0)
        if waiting and waiting < TIME_ASKS_PATIENCE:
            return state.set("asking", waiting + 1)
        out.append((state["time"], (state["me"](TIME_CONTEXT), None)))
        return state.set("asking", 1)

    @b.init
    def _init(state: Any, seed: Any) -> tuple:
        seed = 0 if seed is None else seed
        if type(seed) is not int:
            raise AvmError("a nested network's init argument is its scheduling seed, an int")
        return [], Map({"seed": seed, "queue": (), "asking": 0})

    @b.signal("self")
    def _learn_self(state: Map, me: Any) -> tuple:
        # A rotated key: wrappers made before stop working, new ones use the new Self.
        return [], state.set("me", me)

    @b.signal("env")
    def _ask_for_keys(state: Map, env: Any) -> tuple:
        if "net" in state:
            return [], state
        me = state.get("me")
        ask = env.get("random") if type(env) is Map else None
        if type(me) is not Self or ask is None:
            raise AvmError(f"{name}: a nested network needs its Self and the random service")
        state = state.update(null=env.get("null"), time=env.get("time"),
                             timer=env.get("timer"))
        outs: list = [(ask, (me(KEY_CONTEXT), SECRET_BYTES))]
        return outs, _ask_time(state, outs)

    @b.otherwise
    def _route(state: Map, content: Any, *, ctx: Any) -> tuple:
        if type(ctx) is tuple and ctx == KEY_CONTEXT:
            return _keyed(state, content)
        if type(ctx) is tuple and ctx == TIME_CONTEXT:
            return _timed(state, content)
        if type(ctx) is tuple and ctx == WAKE_CONTEXT:
            return _woken(state, content)
        if type(ctx) is tuple and ctx == TIMER_SET_CONTEXT:
            return [], state  # ("timer", cancel): a wake is never cancelled, only ignored
        if not (_is_inner(ctx) or (
                type(ctx) is tuple and len(ctx) == 3 and ctx[0] == ROUTE)):
            raise AvmError(f"{name}: messages must come through route capabilities")
        out: list = []
        if "net" not in state:  # the key material has not arrived yet: wait in order
            return out, state.set("queue", (*state["queue"], (ctx, content)))
        state = _route_in(state, ctx, content, out)
        return out, _ask_time(state, out)

    def _timed(state: Map, content: Any) -> tuple:
        if (type(content) is not tuple or len(content) != 2 or content[0] != "time"
                or type(content[1]) is not int):
            raise AvmError(f"{name}: expected ('time', milliseconds) from the time service")
        state = state.update(asking=0, outer_ms=content[1])
        if "net" not in state:
            return [], state
        out: list = []
        state = state.set("net", _follow(state["net"], content[1]))
        if timers.next_due(state["net"]) is not None and _paced(state):
            # Inner timers the new time has reached fire now.
            sim = _sim(state["net"])
            before = _nulled(sim.net)
            new = _settle(sim, state, out)
            if _nulled(new["net"]) != before:
                _forward_destroyed(state, (), (), new, out)
            state = new
        return out, state

    def _woken(state: Map, content: Any) -> tuple:
        if (type(content) is not tuple or len(content) != 2 or content[0] != "wake"
                or type(content[1]) is not int):
            raise AvmError(f"{name}: expected ('wake', tick) from the timer service")
        state = state.set("wake", None)
        if "net" not in state:
            return [], state
        net = state["net"]
        if content[1] > net.now:  # outer time has reached the inner timer: move to it
            net = replace(net, now=content[1])
        out: list = []
        sim = _sim(net)
        before = _nulled(sim.net)
        new = _settle(sim, state, out)
        if _nulled(new["net"]) != before:
            _forward_destroyed(state, (), (), new, out)
        return out, new

    def _keyed(state: Map, content: Any) -> tuple:
        if "net" in state:
            raise AvmError(f"{name}: the nested network already has its key material")
        if (type(content) is not tuple or len(content) != 2 or content[0] != "random"
                or type(content[1]) is not bytes or len(content[1]) < SECRET_BYTES):
            raise AvmError(f"{name}: expected ('random', {SECRET_BYTES} bytes) for its keys")
        sim = _fresh(state["seed"], content[1])
        if state.get("outer_ms") is not None:
            sim.restore(_follow(sim.net, state["outer_ms"], at_start=True))
        build(sim)
        behaviors.update(sim.env.behaviors)
        out: list = []
        new = _settle(sim, state, out)
        return out, _flush(new, out)

    return b


def _is_inner(ctx: Any) -> bool:
    return (type(ctx) is tuple and len(ctx) == 2 and type(ctx[0]) is str and ctx[0] == INNER
            and type(ctx[1]) is Capability)


def _nulled(net: Network) -> tuple:
    return tuple(net.stats.get(k, 0) for k in _NULLED)


def _follow(net: Network, outer_ms: int, at_start: bool = False) -> Network:
    """``net`` with its clock moved forward so that its ``time`` answers ``outer_ms`` now.

    A fresh network takes the outer time as its epoch. Later the clock moves by whole
    ticks, never back: inner timers are kept in ticks, so moving the epoch instead would
    shift every timer already set."""
    cfg = net.config
    tick = cfg.tick_ms if cfg.tick_ms > 0 else 1
    now_ms = cfg.epoch_ms + net.now * tick
    if outer_ms <= now_ms:
        return net  # never back: inner time is monotonic
    if at_start:
        return replace(net, config=replace(cfg, epoch_ms=outer_ms - net.now * tick))
    return replace(net, now=net.now + (outer_ms - now_ms) // tick)


def inner_network(state: Map) -> Network:
    """The inner network of a nesting machine's ``state`` (once its keys have arrived)."""
    if type(state) is not Map or "net" not in state:
        raise AvmError("this nested network is not built yet: its key material has not arrived")
    return state["net"]


def inner_state(state: Map, name: str) -> Any:
    """The state of inner machine ``name`` in a nesting machine's ``state``."""
    net = inner_network(state)
    return net.machines[net.names[name]].state
