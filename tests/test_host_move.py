"""Machines that move between live hosts (issue 8, item 5; avm.host.migrate).

Three durable hosts A, B, C peered over TLS on 127.0.0.1. A machine on B that keeps
an ordered log of what it received moves to C while A (and B's own machines) keep
sending; the log at C must hold every batch exactly once and in order per sender, and
the machine's own batches out must continue their numbers. Crashes are simulated at
every phase of the move (the host stops committing and closes; it reopens from its
store) and the machine must end up live on exactly one host with the same log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

import avm
import avm.host
from avm.core.caps import IdentityKey
from avm.core.errors import UnknownName, UsageError
from avm.host.migrate import (
    PHASES,
    TRANSITIONS,
    MoveInterrupted,
    MoveLog,
    Mover,
    MoveRefused,
    decode_image,
)
from avm.host.peering import Peering
from avm.wire.transport import HostIdentity, TransportConfig

log = avm.Behavior("log")


@log.on("rec")
def _rec(state, tag, n):
    return [], (*state, (tag, n))


@log.on("echo")
def _echo(state, to, n):
    """Record, and send ("rec", "echo", n) on to ``to``: the machine's own channel out."""
    return [(to, ("rec", "echo", n))], (*state, ("echo", n))


IDS = {n: HostIdentity(IdentityKey.from_seed(f"move-host-{n}".encode()), (("host", n),))
       for n in "abc"}
CFG = TransportConfig(handshake_seconds=2, idle_seconds=10, reconnect_min_seconds=0.02,
                      reconnect_max_seconds=0.2)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def until(cond, timeout: float = 30.0, what: str = "condition") -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not await cond():
        assert asyncio.get_running_loop().time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Net:
    """Hosts a, b, c over one directory; each peers with the other two (the first of a
    pair in name order listens, the second dials)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts: dict[str, avm.host.Host] = {}
        self.peerings: dict[str, Peering] = {}
        self.movers: dict[str, Mover] = {}
        self.ports: dict[str, int] = {}

    async def open(self, name: str, peers: bool = True) -> avm.host.Host:
        h = await avm.host.open(self.root / f"{name}.avm", behaviors=[log])
        p = Peering(h._rt, IDS[name], CFG)
        self.ports[name] = await p.listen(port=self.ports.get(name, 0))
        self.hosts[name], self.peerings[name] = h, p
        if peers:
            self.join(name)
        return h

    def join(self, name: str) -> None:
        """Peer with the other two, dialing them (they dial us too: either side can
        start a link after a restart)."""
        p = self.peerings[name]
        for other in "abc":
            if other != name:
                p.add_peer(other, IDS[other].address, ("127.0.0.1", self.ports[other]))
        self.movers[name] = Mover(self.hosts[name], p, resend_seconds=0.2)

    async def start(self) -> None:
        for n in "abc":
            await self.open(n, peers=False)
        for n in "abc":
            self.join(n)

    async def crash(self, name: str) -> None:
        """As kill -9 would leave it: nothing more is committed; what was committed stays."""
        h = self.hosts.pop(name)
        rt = h._rt
        rt.failed = RuntimeError("simulated crash")
        await self.movers.pop(name).close()
        await self.peerings.pop(name).close()
        with contextlib.suppress(BaseException):
            await avm.host.close(h)

    async def close(self) -> None:
        for n in list(self.hosts):
            await self.movers.pop(n).close()
            await self.peerings.pop(n).close()
            await avm.host.close(self.hosts.pop(n))


async def where(net: Net, name: str) -> list[str]:
    """The hosts on which machine ``name`` is committed."""
    out = []
    for n, h in net.hosts.items():
        c = await h._rt.durable()
        if name in c.names:
            out.append(n)
    return out


async def log_of(net: Net, name: str) -> tuple:
    (n,) = await where(net, name)
    return await net.hosts[n].state(name)


def check_log(entries: tuple, expect: dict[str, int]) -> None:
    """Per tag: exactly 1..n, in order (nothing lost, doubled or reordered)."""
    got: dict[str, list[int]] = {}
    for tag, n in entries:
        got.setdefault(tag, []).append(n)
    assert {t: len(v) for t, v in got.items()} == expect, got
    for tag, v in got.items():
        assert v == list(range(1, expect[tag] + 1)), (tag, v)


async def settled(net: Net) -> bool:
    for h in net.hosts.values():
        c = await h._rt.durable()
        if c.outbox or c.held:
            return False
    return True


def test_phases_and_transitions_are_data():
    assert set(PHASES) == {p for t in TRANSITIONS for p in t}
    assert ("done", "sent") not in TRANSITIONS and ("aborted", "sent") not in TRANSITIONS


def test_a_machine_moves_while_senders_send_and_nothing_is_lost_or_reordered(tmp_path):
    async def go():
        net = Net(tmp_path)
        await net.start()
        a, b, c = (net.hosts[n] for n in "abc")
        try:
            mcap = await b.spawn("m", log, ())
            await b.spawn("sink", log, ())  # a machine of B that m talks to
            sink = b.cap("sink")
            net.peerings["a"].add_remote(mcap.address, "b")
            sent = {"a": 0, "b": 0, "echo": 0}

            async def send(src: str, k: int) -> None:
                for _ in range(k):
                    sent[src] += 1
                    h = net.hosts[src]
                    # clients named apart: a client's channel is named by the client's
                    # name only, whichever host it is on
                    if src == "b":  # a client of B: a local channel that goes on the wire
                        await h.send(mcap, ("rec", "b", sent["b"]), client="b-client")
                    else:
                        await h.send(mcap, ("rec", "a", sent["a"]), client="a-client")

            async def echo(k: int) -> None:
                for _ in range(k):
                    sent["echo"] += 1
                    await net.hosts["a"].send(mcap, ("echo", sink, sent["echo"]),
                                              client="a-echo")

            await send("a", 10)
            await send("b", 5)
            await echo(3)
            # A keeps sending while B moves the machine
            mover = asyncio.ensure_future(b.move("m", to="c"))
            while not mover.done():
                await send("a", 1)
                await asyncio.sleep(0)
            result = await mover
            assert result.to == "c" and result.phase == "done"
            assert result.destination == IDS["c"].address
            with pytest.raises(UnknownName):
                b.address("m")
            await send("a", 10)  # through B, the forwarder
            await send("b", 5)  # B's client: on the wire to C now
            await echo(3)  # m at C sends to B's sink on the channel it had
            net.peerings["a"].add_remote(mcap.address, "c")  # A learns the new place
            await send("a", 10)

            async def all_in():
                try:
                    entries = await log_of(net, "m")
                except (ValueError, UnknownName):
                    return False
                return len(entries) == sum(sent.values())
            await until(all_in, what="every batch at C")
            await until(lambda: settled(net), what="outboxes empty")
            assert await where(net, "m") == ["c"]
            check_log(await log_of(net, "m"), {"a": sent["a"], "b": sent["b"],
                                               "echo": sent["echo"]})
            check_log(await b.state("sink"), {"echo": sent["echo"]})
            assert net.peerings["b"].counts["relayed"] > 0
            assert net.movers["c"].stats.moved_in == 1
            assert net.movers["b"].stats.moved_out == 1
            rows = net.movers["b"].log.rows()
            assert [r.phase for r in rows] == ["done"]
            # the move log is secret (it held the machine's keys)
            assert os.stat(tmp_path / "b.avm.moves").st_mode & 0o077 == 0
        finally:
            await net.close()
    run(go())


def test_bad_moves_are_refused_and_change_nothing(tmp_path):
    async def go():
        net = Net(tmp_path)
        await net.start()
        b, c = net.hosts["b"], net.hosts["c"]
        try:
            await b.spawn("m", log, ())
            with pytest.raises(UsageError):
                await b.move("m", to="nowhere")
            with pytest.raises(UnknownName):
                await b.move("nobody", to="c")
            await c.spawn("m", log, ())  # the name is taken at C: a definite refusal
            with pytest.raises(MoveRefused):
                await b.move("m", to="c")
            assert sorted(await where(net, "m")) == ["b", "c"]
            assert b.record("m").status == "running"  # it runs at B again
            await b.send(b.cap("m"), ("rec", "x", 1))
            await b.idle()
            assert await b.state("m") == (("x", 1),)
            assert [r.phase for r in net.movers["b"].log.rows()] == ["aborted"]
            assert net.movers["c"].stats.refused_in == 1
        finally:
            await net.close()
    run(go())


@pytest.mark.parametrize("point", ["prepared", "exported", "imported", "acked", "switched"])
def test_a_crash_at_any_phase_leaves_the_machine_live_on_exactly_one_host(tmp_path, point):
    """The host that stops at ``point`` (B, or C for "imported") crashes there and
    reopens from its store; the move completes, and every batch A sent before, during
    and after is in the machine's log once, in order."""
    async def go():
        net = Net(tmp_path)
        await net.start()
        a, b = net.hosts["a"], net.hosts["b"]
        try:
            mcap = await b.spawn("m", log, ())
            net.peerings["a"].add_remote(mcap.address, "b")
            n = 0
            for _ in range(10):
                n += 1
                await a.send(mcap, ("rec", "a", n))
            victim = "c" if point == "imported" else "b"
            hit = asyncio.Event()

            def fault(at: str) -> bool:
                if at == point:
                    hit.set()
                    return True
                return False
            net.movers[victim].fault = fault
            mover = asyncio.ensure_future(b.move("m", to="c"))
            await asyncio.wait_for(hit.wait(), 20)
            for _ in range(5):  # batches in flight while the victim is stopped there
                n += 1
                await a.send(mcap, ("rec", "a", n))
            await net.crash(victim)
            if victim == "b":
                with pytest.raises((MoveInterrupted, asyncio.CancelledError)):
                    await mover
            await net.open(victim)  # the move resumes from the move log
            if victim == "c":
                await mover  # B's resend gets the ack of what C committed before the crash

            async def moved():
                return await where(net, "m") == ["c"] and all(
                    r.phase == "done" for r in net.movers["b"].log.rows())
            await until(moved, what="the move to finish")
            for _ in range(5):
                n += 1
                await net.hosts["a"].send(mcap, ("rec", "a", n))

            async def all_in():
                return len(await log_of(net, "m")) == n
            await until(all_in, what="every batch at C")
            await until(lambda: settled(net), what="outboxes empty")
            check_log(await log_of(net, "m"), {"a": n})
        finally:
            await net.close()
    run(go())


def test_the_move_log_records_an_image_that_decodes(tmp_path):
    path = tmp_path / "x.moves"
    ml = MoveLog(path)
    assert ml.rows() == [] and ml.next_seq(b"h" * 32) == 1
    ml.close()
    with pytest.raises(Exception, match="image"):
        decode_image(b"\x00")


def test_move_over_http_and_the_cli(tmp_path, capsys):
    """POST /machines/{name}/move (admin token; in the OpenAPI document) and
    ``avm machine move NAME --to HOST``, against a live host."""
    import httpx

    from avm.cli import main
    from avm.host import client as hc
    from avm.host import http as hh

    async def go():
        net = Net(tmp_path)
        await net.start()
        b, c = net.hosts["b"], net.hosts["c"]
        try:
            await b.spawn("m1", log, ())
            await b.spawn("m2", log, ())
            await b.send(b.cap("m1"), ("rec", "x", 1))
            tf = tmp_path / "b.avm.http"
            async with hh.serve(b, token_file=tf) as api:
                async with httpx.AsyncClient() as raw:
                    doc = (await raw.get(api.url + "/openapi.json")).json()
                    assert "post" in doc["paths"]["/machines/{name}/move"]
                    r = await raw.post(api.url + "/machines/m1/move", json={"to": "c"},
                                       headers={"Authorization": "Bearer " + api.tokens.read})
                    assert r.status_code == 403
                    assert "m1" in b._rt.net.names  # nothing changed
                async with hc.connect(token_file=tf) as cl:
                    with pytest.raises(hc.HostError) as e:
                        await cl.move("m1", "nowhere")
                    assert e.value.status == 400
                    got = await cl.move("m1", "c")
                    assert got["to"] == "c" and got["phase"] == "done"
                code = await asyncio.to_thread(
                    main, ["machine", "move", "m2", "--to", "c", "--token-file", str(tf)])
                assert code == 0
            assert await where(net, "m1") == ["c"] and await where(net, "m2") == ["c"]
            assert await c.state("m1") == (("x", 1),)
        finally:
            await net.close()
    run(go())
    assert "m2: moved to c" in capsys.readouterr().out


def test_a_host_without_peers_refuses_to_move(tmp_path):
    async def go():
        async with avm.host.open(None, behaviors=[log]) as h:
            await h.spawn("m", log, ())
            with pytest.raises(UsageError, match="no peers"):
                await h.move("m", to="c")
    run(go())


@pytest.mark.parametrize("switch", [False, True])
def test_a_machine_moves_there_and_back_and_there_again(tmp_path, switch):
    """B -> C -> B -> C while A sends (to B all along, or following each move): the
    hosts relay to each other, and a session whose channel numbers were overtaken on
    another path is renewed; every batch is in the log once, in order."""
    async def go():
        net = Net(tmp_path)
        await net.start()
        a = net.hosts["a"]
        try:
            mcap = await net.hosts["b"].spawn("m", log, ())
            net.peerings["a"].add_remote(mcap.address, "b")
            n = 0

            async def send(k: int) -> None:
                nonlocal n
                for _ in range(k):
                    n += 1
                    await a.send(mcap, ("rec", "a", n))

            await send(5)
            for src, dst in (("b", "c"), ("c", "b"), ("b", "c")):
                mv = asyncio.ensure_future(net.hosts[src].move("m", to=dst))
                while not mv.done():
                    await send(1)
                    await asyncio.sleep(0)
                await mv
                if switch:
                    net.peerings["a"].add_remote(mcap.address, dst)
                await send(5)

            async def all_in():
                return len(await log_of(net, "m")) == n
            await until(all_in, what="every batch at C")
            await until(lambda: settled(net), what="outboxes empty")
            assert await where(net, "m") == ["c"]
            check_log(await log_of(net, "m"), {"a": n})
        finally:
            await net.close()
    run(go())


# -- real processes: avm host run --listen/--join, avm machine move, a host dying -------

APP = '''
import os

import avm

log = avm.Behavior("log")


@log.on("rec")
def _rec(state, tag, n):
    return [], (*state, (tag, n))


def build(sim):
    if os.environ.get("AVM_TEST_SPAWN"):
        sim.spawn("m", log, ())
        sim.spawn("sink", log, ())  # stays: the store is never empty again


async def net_main(host, hostnet):
    die = os.environ.get("AVM_TEST_DIE_AT")

    def fault(at):
        if at == die:
            os._exit(9)  # as kill -9 at that point: nothing after it runs or commits
        return False
    hostnet.mover.fault = fault
'''


class _Proc:
    """A child ``avm`` process whose output lines are read as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict) -> None:
        import queue
        import subprocess
        import sys
        import threading

        src = str(Path(__file__).resolve().parent.parent / "src")
        self.p = subprocess.Popen([sys.executable, "-m", "avm", *args], cwd=cwd,
                                  env={**os.environ, "PYTHONPATH": src, **env}, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []

        def read() -> None:
            assert self.p.stdout is not None
            for line in self.p.stdout:
                self.lines.put(line)
            self.lines.put("")
        threading.Thread(target=read, daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        import queue
        import time

        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r}; saw {self.seen}") from None
            if line == "":
                raise AssertionError(f"exited ({self.p.wait()}) before {text!r}; saw {self.seen}")
            self.seen.append(line)
            if text in line:
                return line

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=30)


# One real-process case (about 15 s: three process starts and a DHT lookup); the other
# points are crashed in process above. ("c", "imported") runs the same way.
@pytest.mark.parametrize("victim,point", [("b", "acked")])
def test_real_hosts_move_a_machine_and_one_dies_mid_move(tmp_path, victim, point):
    """Two ``avm host run --listen`` processes; ``avm machine move m --to ADDRESS`` on B;
    the victim exits at once at ``point`` (B after C committed and acked, before B
    switched; C after its commit, before its ack) and is started again from its store.
    The machine ends on C alone with its queue and state: every batch once, in order."""
    import subprocess
    import sys
    import time

    from avm.host import client as hc
    from avm.host.multicheck import free_ports

    (tmp_path / "moveapp.py").write_text(APP)
    pb, pc = free_ports(2)
    procs: list[_Proc] = []

    def start(name: str, port: int, env: dict, *more: str) -> _Proc:
        p = _Proc(["host", "run", "--store", f"{name}.avm", "--app", "moveapp.py",
                   "--listen", f"127.0.0.1:{port}", "--http", "127.0.0.1:0", "--log", "off",
                   *more], tmp_path, env)
        procs.append(p)
        return p

    def die(name: str) -> dict:
        return {"AVM_TEST_DIE_AT": point} if name == victim else {}

    async def call(name: str, fn):
        async with hc.connect(token_file=tmp_path / f"{name}.avm.http") as c:
            return await fn(c)

    def names(name: str) -> set[str]:
        return {r["name"] for r in asyncio.run(call(name, lambda c: c.machines()))}

    try:
        b = start("b", pb, {"AVM_TEST_SPAWN": "1", **die("b")})
        b.wait_for("address")
        b.wait_for("serving")
        c = start("c", pc, die("c"), "--join", f"127.0.0.1:{pb}")
        addr_c = c.wait_for("address").split("address ")[1].split()[0]
        c.wait_for("serving")

        async def fill(cl):
            for i in range(1, 21):
                await cl.send("m", f'("rec", "x", {i})')
        asyncio.run(call("b", fill))
        mv = subprocess.run([sys.executable, "-m", "avm", "machine", "move", "m", "--to",
                             addr_c, "--store", "b.avm", "--timeout", "5"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve()
                                                                 .parent.parent / "src")},
                            capture_output=True, text=True, timeout=60)
        dead = b if victim == "b" else c
        assert dead.p.wait(timeout=30) == 9  # it died at the point, as asked
        assert mv.returncode != 0  # the move's outcome was not known to the caller
        # started again from its store: the move log carries the move to its end
        # (joining the DHT through the other, which finds it its peer's record again)
        again = start(victim, pb if victim == "b" else pc, {},
                      "--join", f"127.0.0.1:{pc if victim == 'b' else pb}")
        again.wait_for("serving")
        end = time.monotonic() + 60
        while True:
            on_b, on_c = "m" in names("b"), "m" in names("c")
            if on_c and not on_b:
                break
            assert time.monotonic() < end, (on_b, on_c)
            time.sleep(0.1)
        assert "sink" in names("b")
        st = asyncio.run(call("c", lambda cl: cl.state("m")))
        assert st["text"] == repr(tuple(("x", i) for i in range(1, 21)))
    finally:
        for p in procs:
            p.stop()
