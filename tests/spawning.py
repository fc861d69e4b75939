"""A machine that makes machines through a spawner capability (tests of hosts).

Kept in a module of its own so that isolated workers can import it by name."""

from __future__ import annotations

import avm
from avm import Map

maker = avm.Behavior("maker")


@maker.init
def _maker_init(state, args):
    return [], Map({"env": None, "me": None, "made": None})


@maker.signal("self")
def _maker_self(state, me):
    return [], state.set("me", me)


@maker.signal("env")
def _maker_env(state, env):
    return [], state.set("env", env)


@maker.on("make")
def _maker_make(state, start):
    return [(state["env"]["spawner"], (state["me"]("made"), ("spawn", "counter", start)))], state


@maker.on("spawned")
def _maker_spawned(state, cap):
    return [(cap, ("add", 1))], state.set("made", cap)


@maker.on("ask")
def _maker_ask(state, reply):
    return [(state["made"], ("get", reply))], state
