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

What stays behind: invariants that ``build`` registers are checked while the init batch
settles; later steps run the inner network without them (check the outer network's
invariants instead, reading inner states with :func:`inner_state`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .caps import Self
from .errors import AvmError
from .keys import SECRET_BYTES
from .machine import Behavior
from .network import Config, Network, new_network
from .sim import Sim
from .values import Map
from .values import replace_fields as replace

__all__ = ["nest", "inner_state", "inner_network", "ROUTE", "KEY_CONTEXT"]

ROUTE = "route"
#: The context of the capability the outer ``random`` service answers the key request to.
KEY_CONTEXT = ("nest-key-material",)


def nest(
    build: Callable[[Sim], None], *, name: str = "nest", hosts: tuple[str, ...] = ("h0",),
    max_steps: int = 1_000_000,
) -> Behavior:
    """A behavior whose state is the network that ``build`` sets up.

    The init argument is the inner network's scheduling seed (an int, default 0), not
    its keys: those come from the outer ``random`` service (see the module text).
    ``build`` is called once, when the key material arrives, with a fresh :class:`Sim`;
    it may spawn machines and send messages.
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

    def _settle(sim: Sim, out: list) -> Map:
        report = sim.run(max_steps)
        if not report.quiescent:
            raise AvmError(f"nested network did not settle within {max_steps} steps")
        out.extend(sim.net.exits)
        sim.restore(replace(sim.net, exits=()))
        return Map({"net": sim.net})

    def _route_in(sim: Sim, ctx: tuple, content: Any, out: list) -> Map:
        _, target, inner_ctx = ctx
        sim.send(sim.cap(target, inner_ctx), content, client="outer")
        return _settle(sim, out)

    @b.init
    def _init(state: Any, seed: Any) -> tuple:
        seed = 0 if seed is None else seed
        if type(seed) is not int:
            raise AvmError("a nested network's init argument is its scheduling seed, an int")
        return [], Map({"seed": seed, "queue": ()})

    @b.signal("self")
    def _learn_self(state: Map, me: Any) -> tuple:
        if "net" in state:
            return [], state  # a rotated key: the nest mints no capabilities after keying
        return [], state.set("me", me)

    @b.signal("env")
    def _ask_for_keys(state: Map, env: Any) -> tuple:
        if "net" in state:
            return [], state
        me = state.get("me")
        ask = env.get("random") if type(env) is Map else None
        if type(me) is not Self or ask is None:
            raise AvmError(f"{name}: a nested network needs its Self and the random service")
        return [(ask, (me(KEY_CONTEXT), SECRET_BYTES))], state

    @b.otherwise
    def _route(state: Map, content: Any, *, ctx: Any) -> tuple:
        if type(ctx) is tuple and ctx == KEY_CONTEXT:
            return _keyed(state, content)
        if type(ctx) is not tuple or len(ctx) != 3 or ctx[0] != ROUTE:
            raise AvmError(f"{name}: messages must come through route capabilities")
        if "net" not in state:  # the key material has not arrived yet: wait in order
            return [], state.set("queue", (*state["queue"], (ctx, content)))
        out: list = []
        new = _route_in(_sim(state["net"]), ctx, content, out)
        return out, new

    def _keyed(state: Map, content: Any) -> tuple:
        if "net" in state:
            raise AvmError(f"{name}: the nested network already has its key material")
        if (type(content) is not tuple or len(content) != 2 or content[0] != "random"
                or type(content[1]) is not bytes or len(content[1]) < SECRET_BYTES):
            raise AvmError(f"{name}: expected ('random', {SECRET_BYTES} bytes) for its keys")
        sim = _fresh(state["seed"], content[1])
        build(sim)
        behaviors.update(sim.env.behaviors)
        out: list = []
        new = _settle(sim, out)
        for ctx, queued in state["queue"]:
            new = _route_in(_sim(new["net"]), ctx, queued, out)
        return out, new

    return b


def inner_network(state: Map) -> Network:
    """The inner network of a nesting machine's ``state`` (once its keys have arrived)."""
    if type(state) is not Map or "net" not in state:
        raise AvmError("this nested network is not built yet: its key material has not arrived")
    return state["net"]


def inner_state(state: Map, name: str) -> Any:
    """The state of inner machine ``name`` in a nesting machine's ``state``."""
    net = inner_network(state)
    return net.machines[net.names[name]].state
