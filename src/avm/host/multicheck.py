"""A workload for several host processes: the multi-host tests and the soak script run it.

    "Three or more host processes on 127.0.0.1 exchange batches; the shared checker
    reports P1-P7 with 0 anomalies under proxy faults and under random host kills,
    duplicates refused > 0, and the linear census constant." (issue 8)

Host ``i`` of ``n`` (a child process, :func:`child`) serves three machines and runs on
its own store and identity in one folder:

* ``fwd`` forwards every ``("n", k)`` its client sends to ``sink`` of host ``i+1``
  (mod n): a machine-to-machine channel across hosts, numbered by the core;
* ``sink`` records the ``k`` it receives, in order;
* ``ball`` passes a ``Linear`` ball on to ``ball`` of host ``i+1``, forever: ``n``
  balls circle the ring, so linear values are always crossing hosts.

The client sends ``("n", k)`` to ``fwd``, ``k`` being its channel's next number as
committed, so after any number of kills the sink of host ``i+1`` must hold exactly
``1..N``, ``N`` being host ``i``'s committed number: nothing lost, nothing twice, in
order. Every :data:`FORGE_EVERY`-th send, the client also sends a capability to the
remote sink with one bit of its ciphertext flipped: it must never apply (P7).

Hosts find each other through the DHT (``--join`` is every other host's port) and
learn the machines from introduction files in the folder (:mod:`avm.host.netjoin`).
With a fault spec, each host publishes the endpoint of a fault proxy in front of its
listener, so every link between two hosts runs through injected faults.

:func:`check` reads the stopped hosts' stores and feeds :class:`avm.testing.Checker`
(per channel: committed, applied, lost, duplicated, order, phantoms) and takes the
census of the whole system: a batch still in a sender's outbox that its receiver has
already committed is counted once, at the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .. import Behavior, Linear, Map
from ..core.caps import Capability
from ..core.values import replace_fields
from ..naming.records import RecordError
from ..testing import Checker, Report, census
from .api import Host, open
from .identity import host_name, load_or_create
from .netjoin import HostNet, read_introduction, write_introduction
from .store import Store

__all__ = ["BEHAVIORS", "Options", "child", "check", "CheckResult", "free_ports", "FORGE_EVERY"]

#: Every how many sends the client also sends a forged capability.
FORGE_EVERY = 10
#: Batches waiting in the outbox beyond which the client waits (a bounded backlog).
BACKLOG_MAX = 200
#: Sends between two progress reports to the parent.
REPORT_EVERY = 20

sink = Behavior("multicheck.sink")


@sink.init
def _sink_init(state: Any, args: Any) -> tuple:
    return [], ()


@sink.on("n")
def _sink_n(state: tuple, k: int) -> tuple:
    return [], (*state, k)


@sink.on("forged")
def _sink_forged(state: tuple, k: int) -> tuple:
    return [], (*state, ("forged", k))


fwd = Behavior("multicheck.fwd")


@fwd.init
def _fwd_init(state: Any, args: Any) -> tuple:
    return [], None


@fwd.on("to")
def _fwd_to(state: Any, to: Any) -> tuple:
    return [], to


@fwd.on("n")
def _fwd_n(to: Any, k: int) -> tuple:
    return [(to, ("n", k))], to


ball = Behavior("multicheck.ball")


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


@dataclass(frozen=True)
class Options:
    """One run's settings, the same for every host of it."""

    folder: str
    n: int
    ports: tuple[int, ...]
    chaos: str | None = None  # a FaultSpec text; each host's seed is made distinct
    ttl_seconds: float = 30.0
    durability: str = "normal"
    pace_seconds: float = 0.0  # pause between two client sends
    #: hand the routing record over in the introduction too; False: only the DHT finds it
    learn_records: bool = True
    #: join the DHT through every other host's port; False: through host 0's only (the
    #: others are then found by Kademlia's own lookups)
    join_all: bool = True


def free_ports(n: int) -> tuple[int, ...]:
    """``n`` port numbers free on 127.0.0.1 for both TCP and UDP, just now."""
    out: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(out) < n:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                t.close()
                u.close()
                continue
            held += [t, u]
            out.append(port)
    finally:
        for s in held:
            s.close()
    return tuple(out)


def _paths(o: Options, i: int) -> tuple[Path, Path, Path]:
    d = Path(o.folder)
    return d / f"h{i}.avm", d / f"h{i}.identity", d / f"h{i}.intro"


def _client(i: int) -> str:
    return f"load.{i}"


async def _intro_of(o: Options, j: int, timeout: float = 120.0) -> tuple[bytes, dict, bytes | None]:
    path = _paths(o, j)[2]
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"host {j} wrote no introduction")
        await asyncio.sleep(0.02)
    return read_introduction(path)


async def _setup(h: Host, net: HostNet, o: Options, i: int) -> None:
    """Once per store: the machines, the introduction, the ring's links, the ball."""
    if "sink" not in {m.name for m in h.machines()}:
        await h.spawn("sink", sink)
        await h.spawn("fwd", fwd)
        await h.spawn("ball", ball)
    assert net.naming is not None
    intro = _paths(o, i)[2]
    if not intro.exists():
        record = (await net.naming.publish()).data if o.learn_records else None
        write_introduction(intro, net.address, {"sink": h.cap("sink"), "ball": h.cap("ball")},
                           record)
    nxt = (i + 1) % o.n
    addr, caps, record = await _intro_of(o, nxt)
    if record is not None and o.learn_records:
        with contextlib.suppress(RecordError):  # an old one: the DHT has a newer record
            net.learn_record(record)
    for name in ("sink", "ball"):
        if h.network.remote.get(caps[name].address) is None:
            net.add_remote(caps[name].address, addr)
    if await h.state("fwd") is None:
        await h.send(h.cap("fwd"), ("to", caps["sink"]))
    st = await h.state("ball")
    if st["other"] is None:
        await h.send(h.cap("ball"), ("other", caps["ball"]))
        await h.send(h.cap("ball"), ("ball", Linear(f"ball.{i}")))


def _forge(cap: Capability, k: int) -> Capability:
    sealed = bytearray(cap.sealed)
    sealed[k % len(sealed)] ^= 1 << (k % 8)
    return Capability(cap.address, cap.keyver, cap.kind, cap.priority, bytes(sealed))


async def _run(o: Options, i: int, conn: Any) -> None:
    import logging

    # "no response from", "did not receive reply", "SSL connection is closed": expected
    # here, where hosts are killed and links cut on purpose
    for name in ("kademlia", "rpcudp", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    store, ident_path, _ = _paths(o, i)
    identity, _ = load_or_create(ident_path)
    chaos = None
    if o.chaos:
        chaos = f"{o.chaos},seed={int.from_bytes(os.urandom(4), 'big')}"
    async with open(store, behaviors=BEHAVIORS, durability=o.durability,
                    host=host_name(identity)) as h:
        join = [("127.0.0.1", p) for j, p in enumerate(o.ports)
                if j != i and (o.join_all or j == 0)]
        net = await HostNet(h, identity, listen=("127.0.0.1", o.ports[i]), join=join,
                            ttl_seconds=o.ttl_seconds, chaos=chaos).start()
        try:
            await _setup(h, net, o, i)
            conn.send(("ready", i))
            _, caps, _ = await _intro_of(o, (i + 1) % o.n)
            fwd_cap = h.cap("fwd")
            chan = (("client", _client(i)), fwd_cap.address)
            stop = Path(o.folder) / "stop"
            sent = 0
            while not stop.exists():
                while len(h._rt.net.outbox) > BACKLOG_MAX and not stop.exists():
                    await asyncio.sleep(0.005)
                k = h._rt.net.next_seq.get(chan, 0) + 1
                await h.send(fwd_cap, ("n", k), client=_client(i))
                if k % FORGE_EVERY == 0:
                    await h.send(_forge(caps["sink"], k), ("forged", k), client=_client(i))
                sent += 1
                if sent % REPORT_EVERY == 0:
                    conn.send(("progress", i, k, net.peering.counts["duplicates"]))
                if o.pace_seconds:
                    await asyncio.sleep(o.pace_seconds)
            while True:  # stopped: report until the parent has seen everything arrive
                c = h._rt.committed
                sink_state = await h.state("sink")
                mine = ("client", _client(i))
                waiting = sum(1 for ch, _ in c.outbox._m if ch[0] == mine)
                conn.send(("status", i, c.next_seq.get(chan, 0), len(sink_state),
                           net.peering.counts["duplicates"], net.statistics().dht_contacts,
                           waiting))
                await asyncio.sleep(0.1)
        finally:
            await net.close()


def child(o: Options, i: int, conn: Any) -> None:
    """The child process of host ``i``: runs until killed."""
    asyncio.run(_run(o, i, conn))


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found in the stopped hosts' stores."""

    report: Report
    linear: int  # linear items of the whole system
    committed: tuple[int, ...]  # per host, its client's committed number
    forged_sent: int
    forged_applied: int
    dropped_unseal: int
    bounces: int


def check(o: Options, refused_by_host: tuple[int, ...] | None = None) -> CheckResult:
    """Read every (stopped) host's store; the shared checker's report and the census.

    ``refused_by_host``: duplicates each host's sessions refused (counted in memory, so
    the parent collects them while the hosts run)."""
    refused_by_host = refused_by_host or (0,) * o.n
    nets = []
    for i in range(o.n):
        s = Store(_paths(o, i)[0], "normal")
        try:
            net = s.load()
        finally:
            s.close()
        assert net is not None, f"host {i} has no store"
        nets.append(net)
    where = {a: j for j, net in enumerate(nets) for a in net.machines._m}
    c = Checker()
    committed = []
    forged_sent = forged_applied = unseal = bounces = 0
    for i, net in enumerate(nets):
        fwd_a = net.names["fwd"]
        n_i = net.next_seq.get((("client", _client(i)), fwd_a), 0)
        committed.append(n_i)
        chan = (("client", _client(i)), f"h{(i + 1) % o.n}.sink")
        for k in range(1, n_i + 1):
            c.committed(chan, k)
        nxt = nets[(i + 1) % o.n]
        forged_sent += net.next_seq.get((("client", _client(i)), nxt.names["sink"]), 0)
        log = nxt.machines[nxt.names["sink"]].state
        for x in log:
            if type(x) is int:
                c.applied(chan, x)
            else:
                forged_applied += 1
        unseal += net.stats.get("drop.unseal", 0)
        bounces += net.machines[net.names["ball"]].state["bounces"]
        refused = nxt.stats.get("wire.duplicate-refused", 0) + refused_by_host[(i + 1) % o.n]
        if refused:
            c.refused_duplicate(chan, None, refused)
    linear = 0
    for net in nets:
        outbox = net.outbox
        for key in list(outbox._m):
            (chan, seq) = key
            j = where.get(chan[1])
            if j is not None and nets[j].received.get(chan, 0) >= seq:
                outbox = outbox.delete(key)  # the receiver has it: counted there
        view = SimpleNamespace(net=replace_fields(net, outbox=outbox), env=_env())
        linear += census(view).linear  # type: ignore[arg-type]  # duck-typed: .net, .env
    return CheckResult(c.report(quiescent=True), linear, tuple(committed), forged_sent,
                       forged_applied, unseal, bounces)


def _env() -> Any:
    from ..core.netvalue import Env

    return Env()


# ---------------------------------------------------------------------------------------
# The parent: start the hosts, kill them, stop them, check
# ---------------------------------------------------------------------------------------

#: Seconds the parent waits for any one thing a child must say (a stuck child fails).
WAIT_SECONDS_MAX = 120.0


@dataclass
class RunFigures:
    """What the parent saw while the hosts ran (the stores say the rest)."""

    kills: int = 0
    restarts: int = 0
    duplicates: int = 0  # duplicates refused by sessions, over every life of every host
    by_host: list[int] = field(default_factory=list)  # the same, per host
    censuses: tuple[int, ...] = ()  # the whole system's linear items, at each full stop
    contacts: tuple[int, ...] = ()  # each host's DHT contacts at the end
    seconds: float = 0.0


class Ring:
    """``n`` host processes of :func:`child` on one folder; kill and restart them.

    Children are forked from a forkserver that has imported this module, so a restart
    costs a fork and opening a store, not an interpreter start.
    """

    def __init__(self, o: Options, progress: Any = None) -> None:
        import multiprocessing

        self.o = o
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["avm.host.multicheck"])
        self.procs: list[Any] = [None] * o.n
        self.conns: list[Any] = [None] * o.n
        self.dups: list[int] = [0] * o.n  # this life's count, per host
        self.status: dict[int, tuple] = {}
        self.sent: list[int] = [0] * o.n  # the highest number each client reported
        self.figures = RunFigures(by_host=[0] * o.n)
        self.progress = progress or (lambda text: None)

    def start(self, i: int) -> None:
        parent, child_end = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(target=child, args=(self.o, i, child_end), daemon=True)
        p.start()
        child_end.close()
        self.procs[i], self.conns[i], self.dups[i] = p, parent, 0

    def start_all(self) -> None:
        for i in range(self.o.n):
            self.start(i)
        self.wait_ready(range(self.o.n))

    def wait_ready(self, which: Any) -> None:
        want = set(which)
        self.pump(lambda: not want, want)

    def pump(self, done: Any, ready: set | None = None, seconds: float = WAIT_SECONDS_MAX) -> None:
        """Read what the children say until ``done()``; fail after ``seconds`` of nothing."""
        from multiprocessing.connection import wait

        quiet_until = time.monotonic() + seconds
        while not done():
            live = [c for c in self.conns if c is not None]
            got = wait(live, timeout=max(0.0, quiet_until - time.monotonic()))
            if not got:
                raise TimeoutError(f"no host said anything for {seconds} s "
                                   f"(waiting: {sorted(ready) if ready else 'status'})")
            for c in got:
                i = self.conns.index(c)
                try:
                    msg: Any = c.recv()  # type: ignore[union-attr,call-arg]
                except EOFError:
                    if self.procs[i] is not None and not self.procs[i].is_alive():
                        raise AssertionError(f"host {i} died (exit code "
                                             f"{self.procs[i].exitcode})") from None
                    continue
                quiet_until = time.monotonic() + seconds
                kind = msg[0]
                if kind == "ready" and ready is not None:
                    ready.discard(msg[1])
                elif kind == "progress":
                    self.dups[i] = max(self.dups[i], msg[3])
                    self.sent[i] = max(self.sent[i], msg[2])
                elif kind == "status":
                    self.dups[i] = max(self.dups[i], msg[4])
                    self.status[i] = msg

    def kill(self, i: int, counted: bool = True) -> None:
        p, c = self.procs[i], self.conns[i]
        p.kill()
        p.join(WAIT_SECONDS_MAX)
        assert p.exitcode == -9, f"host {i} exited with {p.exitcode}, not killed"
        self._count_dups(i)
        try:
            while c.poll(0):
                c.recv()
        except EOFError:
            pass
        c.close()
        self.procs[i] = self.conns[i] = None
        self.figures.kills += counted

    def _count_dups(self, i: int) -> None:
        self.figures.duplicates += self.dups[i]
        self.figures.by_host[i] += self.dups[i]
        self.dups[i] = 0

    def kill_all(self) -> None:
        for i in range(self.o.n):
            if self.procs[i] is not None:
                self.kill(i, counted=False)

    def progressed(self, i: int, reports: int) -> None:
        """Wait until host ``i`` has sent ``reports`` progress reports."""
        seen = [0]
        conn = self.conns[i]
        from multiprocessing.connection import wait

        end = time.monotonic() + WAIT_SECONDS_MAX
        while seen[0] < reports:
            live = [c for c in self.conns if c is not None]
            got = wait(live, timeout=max(0.0, end - time.monotonic()))
            if not got:
                raise TimeoutError(f"host {i} made no progress")
            for c in got:
                j = self.conns.index(c)
                try:
                    msg = c.recv()  # type: ignore[union-attr,call-arg]
                except EOFError:
                    raise AssertionError(f"host {j} died") from None
                if msg[0] == "progress":
                    self.dups[j] = max(self.dups[j], msg[3])
                    self.sent[j] = max(self.sent[j], msg[2])
                    if c is conn:
                        seen[0] += 1

    def census_now(self) -> int:
        """Kill every host, take the census of the stores, start them all again."""
        self.kill_all()
        linear = check(self.o).linear
        self.figures.censuses += (linear,)
        self.start_all()
        self.figures.restarts += self.o.n
        return linear

    def drain(self) -> None:
        """Stop the clients; wait until every sink has everything its sender committed."""
        (Path(self.o.folder) / "stop").touch()

        def arrived() -> bool:
            if len(self.status) < self.o.n:
                return False
            n = self.o.n
            for i in range(n):
                sent = self.status[i][2]
                got = self.status[(i + 1) % n][3]
                if got < sent or self.status[i][6]:
                    return False
            return True

        self.status = {}
        self.pump(arrived)

    def close(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None:
                p.kill()
                p.join(WAIT_SECONDS_MAX)
                self._count_dups(i)
                self.procs[i] = None
            if self.conns[i] is not None:
                self.conns[i].close()
                self.conns[i] = None


def run(o: Options, kills: int, seed: int, progress: Any = None,
        census_every: int = 0, census_start: bool = True, min_sent: int = 0,
        seconds: float = 0.0) -> tuple[CheckResult, RunFigures]:
    """Start the ring, make ``kills`` random kill -9 and restarts (seeded), drain, check.

    ``census_every``: every that many kills, stop all hosts at once and take the census
    (it must not change); ``census_start``: once right after the start too.
    ``min_sent``: before stopping, wait until every client has sent that many batches;
    ``seconds``: and until the run has lasted that long (kills go on meanwhile)."""
    import random

    rng = random.Random(seed)
    ring = Ring(o, progress)
    t0 = time.monotonic()
    try:
        ring.start_all()
        ring.progress(f"{o.n} hosts up after {time.monotonic() - t0:.1f} s")
        if census_start:
            ring.figures.censuses += (check_live_census(ring),)
        k = 0
        while k < kills or time.monotonic() - t0 < seconds or min(ring.sent) < min_sent:
            if k >= kills:
                ring.progressed(rng.randrange(o.n), 1)
                continue
            victim = rng.randrange(o.n)
            ring.progressed(rng.randrange(o.n), rng.randint(1, 2))
            ring.kill(victim)
            ring.start(victim)
            ring.figures.restarts += 1
            ring.wait_ready([victim])
            if census_every and (k + 1) % census_every == 0:
                ring.census_now()
                ring.progress(f"census at kill {k + 1}: {ring.figures.censuses[-1]} linear items")
            k += 1
            ring.progress(f"kill {k}/{kills} at {time.monotonic() - t0:.0f} s: host {victim}; "
                          f"duplicates refused so far {ring.figures.duplicates + sum(ring.dups)}")
        ring.progress(f"draining: clients sent {sum(ring.sent)} batches so far")
        ring.drain()
        ring.figures.contacts = tuple(ring.status[i][5] for i in range(o.n))
        ring.kill_all()
        result = check(o, tuple(ring.figures.by_host))
        ring.figures.censuses += (result.linear,)
    finally:
        ring.close()
        ring.figures.seconds = time.monotonic() - t0
    return result, ring.figures


def check_live_census(ring: Ring) -> int:
    """The census right after the start (every ball given): stop all, count, restart."""
    return ring.census_now()
