"""A request that ``Sim.ask`` takes means the same to a host's ``ask``.

A host's ``ask`` appended the reply to every tuple, so ``("balance", avm.REPLY)``, the
simulator's way to write a request, went out as ``("balance", avm.REPLY, reply)`` and
failed: a test's asks did not carry over to a host. It now reads requests with
:func:`avm.core.ask.outside_request`; the simulator stays strict (``"get"`` needs the mark
there)."""

from __future__ import annotations

import asyncio

import pytest

import avm
import avm.host
from avm.core.ask import outside_request

acct = avm.Behavior("test.outside.acct")


@acct.on("balance")
def balance(state, reply):
    return [(reply, ("balance", state))], state


@acct.on("between")
def between(state, lo, reply, hi):
    return [(reply, ("between", lo <= state <= hi))], state


SIM_REQUESTS = [
    (("balance", avm.REPLY), ("balance", 5)),
    (lambda reply: ("balance", reply), ("balance", 5)),
    (("between", 1, avm.REPLY, 9), ("between", True)),
]
HOST_ONLY = [("balance", ("balance", 5)), (("balance",), ("balance", 5))]


def _host_ask(request_):
    async def on_a_host():
        async with avm.host.open(None, behaviors=[acct]) as h:
            cap = await h.spawn("a", acct, 5)
            return await h.ask(cap, request_, timeout=10)

    return asyncio.run(on_a_host())


@pytest.mark.parametrize("request_, answer", SIM_REQUESTS)
def test_what_the_simulator_asks_a_host_answers_the_same(request_, answer):
    sim = avm.Sim(seed=1)
    sim.spawn("a", acct, 5)
    assert sim.ask(sim.cap("a"), request_) == answer
    assert _host_ask(request_) == answer


@pytest.mark.parametrize("request_, answer", HOST_ONLY)
def test_a_host_also_appends_the_reply_to_a_text_or_a_tuple(request_, answer):
    assert _host_ask(request_) == answer


def test_the_reply_goes_where_the_mark_is_or_at_the_end():
    sim = avm.Sim(seed=1)
    sim.spawn("a", acct, 0)
    r = sim.cap("a")
    assert outside_request("get", r) == ("get", r)
    assert outside_request(("get", 1), r) == ("get", 1, r)
    assert outside_request(("get", avm.REPLY, 1), r) == ("get", r, 1)
    assert outside_request(avm.REPLY, r) is r
    for bad in (5, None, b"get", avm.Map(a=1)):
        with pytest.raises(avm.UsageError, match="ask takes a text, a tuple"):
            outside_request(bad, r)
