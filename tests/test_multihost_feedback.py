"""Feedback and returned linear values of a batch that fails on another host.

Host A's machine hands a linear coin, through the ``feedback`` service, to a machine on
host B that refuses it. The failed report crosses back to A, and so does the coin
(:mod:`avm.host.returns`): the giver's ``returned`` handler gets it with the rule of
B's failure, no dead letter is left on either host, and the census of both hosts
together is 1 before, during and after."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import avm
import avm.host
from avm import Linear, Map
from avm.core.netvalue import Env
from avm.host.identity import host_name, load_or_create
from avm.host.netjoin import HostNet
from avm.testing import census
from avm.wire.transport import TransportConfig

CFG = TransportConfig(handshake_seconds=5, idle_seconds=20, reconnect_min_seconds=0.02,
                      reconnect_max_seconds=0.2)

giver = avm.Behavior("feedback.giver")


@giver.init
def _giver_init(state, args):
    return [], Map({"env": None, "me": None, "coin": Linear("coin"), "got": ()})


@giver.signal("self")
def _giver_self(state, me):
    return [], state.set("me", me)


@giver.signal("env")
def _giver_env(state, env):
    return [], state.set("env", env)


@giver.returned
def _giver_returned(state, info):  # keeps what came back (dropping it would fail)
    got = (*state["got"], ("returned", info["rule"], len(info["values"])))
    return [], state.set("got", got).set("back", info["values"])


@giver.on("give")
def _giver_give(state, target):
    msg = (target, ("take", state["coin"]), state["me"]("status"), "t1")
    return [(state["env"]["feedback"], msg)], state.delete("coin")


@giver.otherwise
def _giver_report(state, content):
    return [], state.set("got", (*state["got"], content[:2]))


refuser = avm.Behavior("feedback.refuser")


@refuser.on("take")
def _refuser_take(state, coin):
    raise RuntimeError("not taking it")


def _linear(h) -> int:
    return census(SimpleNamespace(net=h._rt.committed, env=Env())).linear


async def _until(cond, timeout: float = 60.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not await cond():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.02)


def test_a_failure_on_another_host_reports_back_and_keeps_the_coin(tmp_path):
    async def go():
        ia, _ = load_or_create(tmp_path / "a.identity")
        ib, _ = load_or_create(tmp_path / "b.identity")
        beh = [giver, refuser]
        async with avm.host.open(tmp_path / "a.avm", behaviors=beh, host=host_name(ia)) as a, \
                avm.host.open(tmp_path / "b.avm", behaviors=beh, host=host_name(ib)) as b:
            na = await HostNet(a, ia, config=CFG).start()
            nb = await HostNet(b, ib, join=[("127.0.0.1", na.port)], config=CFG).start()
            try:
                await nb.joined.wait()
                g = await a.spawn("giver", giver)
                r = await b.spawn("refuser", refuser)
                await a.flush()
                assert _linear(a) + _linear(b) == 1
                na.add_remote(r.address, ib.address)
                await a.send(g, ("give", r))

                async def reported():
                    return any(x[0] == "failed" for x in (await a.state("giver"))["got"])
                await _until(reported)  # the feedback crossed back from B
                got = (await a.state("giver"))["got"]
                assert [x for x in got if x[0] == "failed"] == [("failed", "t1")]

                async def settled():
                    return not (await a._rt.durable()).outbox and not (await b._rt.durable()).outbox
                await _until(settled)
                assert _linear(a) + _linear(b) == 1  # conserved across the two hosts
                assert nb.learned["machines"] >= 1


                async def back():
                    return "back" in (await a.state("giver"))
                await _until(back)  # the coin came home
                await _until(settled)
                st = await a.state("giver")
                assert ("returned", "exception", 1) in st["got"]
                assert st["back"][0][1] == ("take", Linear("coin"))
                assert not a._rt.committed.dead_letters and not b._rt.committed.dead_letters
                assert nb.returns.counts["sent-home"] == 1 and na.returns.counts["given-back"] == 1
                assert _linear(a) + _linear(b) == 1
            finally:
                await na.close()
                await nb.close()
    asyncio.run(asyncio.wait_for(go(), 120))
