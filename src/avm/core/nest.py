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

What stays behind: invariants that ``build`` registers are checked while the init batch
settles; later steps run the inner network without them (check the outer network's
invariants instead, reading inner states with :func:`inner_state`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .errors import AvmError
from .machine import Behavior
from .network import Config, Network
from .sim import Sim
from .values import Map

__all__ = ["nest", "inner_state", "inner_network", "ROUTE"]

ROUTE = "route"


def nest(
    build: Callable[[Sim], None], *, name: str = "nest", hosts: tuple[str, ...] = ("h0",),
    max_steps: int = 1_000_000,
) -> Behavior:
    """A behavior whose state is the network that ``build`` sets up.

    The init argument is the inner network's seed (an int, default 0). ``build`` is called
    once, at init, with a fresh :class:`Sim`; it may spawn machines and send messages.
    """
    b = Behavior(name)
    behaviors: dict[str, Callable] = {}

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

    def _settle(sim: Sim) -> tuple[list, Map]:
        report = sim.run(max_steps)
        if not report.quiescent:
            raise AvmError(f"nested network did not settle within {max_steps} steps")
        out = list(sim.net.exits)
        sim.restore(replace(sim.net, exits=()))
        return out, Map({"net": sim.net})

    @b.init
    def _init(state: Any, seed: Any) -> tuple:
        seed = 0 if seed is None else seed
        if type(seed) is not int:
            raise AvmError("a nested network's init argument is its seed, an int")
        sim = Sim(seed=seed, hosts=hosts, config=Config(boundary=True), record=False)
        build(sim)
        behaviors.update(sim.env.behaviors)
        return _settle(sim)

    @b.otherwise
    def _route(state: Map, content: Any, *, ctx: Any) -> tuple:
        if type(ctx) is not tuple or len(ctx) != 3 or ctx[0] != ROUTE:
            raise AvmError(f"{name}: messages must come through route capabilities, got {ctx!r}")
        _, target, inner_ctx = ctx
        sim = _sim(state["net"])
        sim.send(sim.cap(target, inner_ctx), content, client="outer")
        return _settle(sim)

    return b


def inner_network(state: Map) -> Network:
    return state["net"]


def inner_state(state: Map, name: str) -> Any:
    """The state of inner machine ``name`` in a nesting machine's ``state``."""
    net = state["net"]
    return net.machines[net.names[name]].state
