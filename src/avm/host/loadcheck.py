"""A crash workload for hosts: the kill -9 test and the soak script run it in a child.

The child opens a host on a store and keeps it busy:

* two machines ``p`` and ``q`` bounce one ``Linear`` ball between them forever, so a
  batch is always running and the linear census must stay exactly 1;
* a client sends ``("n", k)`` to ``fwd`` one at a time, ``k`` being the client channel's
  next sequence number as committed, and reports ``("ack", k)`` once ``send`` returned
  (the batch is committed); ``fwd`` forwards each to ``sink``, which records every ``k``
  it receives in order.

After any number of ``kill -9`` and restarts, ``sink`` must hold exactly ``1..N`` in
order, ``N`` being the committed client sequence number, and every acknowledged ``k``
must be at most ``N``: nothing acknowledged is lost, nothing applied twice, nothing out
of order (checked with :class:`avm.testing.Checker`).

Messages to the parent go through a ``multiprocessing`` connection: each is one small
write, so a kill never leaves half of one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import Behavior, Linear, Map
from ..testing import Checker, census
from .api import Host, open

__all__ = ["BEHAVIORS", "child", "check"]

LOAD_CLIENT = "load"

sink = Behavior("loadcheck.sink")


@sink.init
def _sink_init(state: Any, args: Any) -> tuple:
    return [], ()


@sink.on("n")
def _sink_n(state: tuple, k: int) -> tuple:
    return [], (*state, k)


fwd = Behavior("loadcheck.fwd")


@fwd.init
def _fwd_init(state: Any, to: Any) -> tuple:
    return [], to


@fwd.on("n")
def _fwd_n(to: Any, k: int) -> tuple:
    return [(to, ("n", k))], to


ball = Behavior("loadcheck.ball")


@ball.init
def _ball_init(state: Any, args: Any) -> tuple:
    return [], Map({"other": None, "bounces": 0})


@ball.on("other")
def _ball_other(state: Map, other: Any) -> tuple:
    return [], state.set("other", other)


@ball.on("ball")
def _ball_ball(state: Map, b: Any) -> tuple:
    return [(state["other"], ("ball", b))], state.set("bounces", state["bounces"] + 1)


BEHAVIORS = [sink, fwd, ball]


def _linear(h: Host) -> int:
    return census(h._rt).linear  # type: ignore[arg-type]  # duck-typed: .net and .env


async def _setup(h: Host) -> None:
    s = await h.spawn("sink", sink)
    await h.spawn("fwd", fwd, s)
    p = await h.spawn("p", ball)
    q = await h.spawn("q", ball)
    await h.submit([(p, ("other", q)), (q, ("other", p))])
    await h.send(p, ("ball", Linear("ball")))


def _client_chan(h: Host) -> tuple:
    return (("client", LOAD_CLIENT), h.address("fwd"))


async def _run(path: str, conn: Any, mode: str, durability: str) -> None:
    async with open(path, behaviors=BEHAVIORS, durability=durability) as h:
        if mode == "setup":
            await _setup(h)
            conn.send(("ready", _linear(h)))
            return
        if mode == "check":
            await _drain(h)
            seen = await h.state("sink")
            net = h.network
            conn.send(("report", seen, net.next_seq.get(_client_chan(h), 0), _linear(h)))
            return
        conn.send(("start", _linear(h)))
        fwd_cap = h.cap("fwd")
        chan = _client_chan(h)
        while True:
            k = h._rt.net.next_seq.get(chan, 0) + 1
            await h.send(fwd_cap, ("n", k), client=LOAD_CLIENT)
            conn.send(("ack", k))


async def _drain(h: Host) -> None:
    """Wait until everything but the ball has run (the ball never stops)."""
    ball_addrs = {h.address("p"), h.address("q")}
    while True:
        await h.flush()
        if all(chan[1] in ball_addrs for chan in h._rt.net.live):
            await h.flush()
            return
        await asyncio.sleep(0.001)


def child(path: str, conn: Any, mode: str = "load", durability: str = "normal") -> None:
    """The child process: ``setup``, ``load`` (until killed) or ``check``."""
    asyncio.run(_run(path, conn, mode, durability))


def check(seen: tuple, committed: int, acked: list[int]) -> dict[str, int]:
    """Lost, duplicated and reordered batches of the client channel, by the shared checker."""
    c = Checker()
    chan = (("client", LOAD_CLIENT), "fwd")
    for k in range(1, committed + 1):
        c.committed(chan, k)
    for k in seen:
        c.applied(chan, k)
    report = c.report(quiescent=True)
    pair = next(p for p in report.pairs if p.chan == chan) if report.pairs else None
    return {
        "committed": committed,
        "applied": len(seen),
        "lost": pair.lost if pair else 0,
        "duplicated": pair.duplicated if pair else 0,
        "reordered": pair.order if pair else 0,
        "phantoms": pair.phantoms if pair else 0,
        "acked_not_committed": sum(1 for k in acked if k > committed),
        "violations": c.violations,
    }
