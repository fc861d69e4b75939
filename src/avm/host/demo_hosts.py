"""``avm demo --hosts N``: the examples spread over N host processes that talk.

The parent starts N child processes (``avm demo --role I``), one host each, on stores
in one folder, and prints what they say, each line prefixed with its host. Host 0
runs the counter (and the live counter), host 1 the bank, host 2 the chat room; any
further host runs clients only. Every host listens on 127.0.0.1 (TLS, and a DHT node on
the same UDP port), host 0 first; the others join the DHT through it and publish their
routing records. A host writes an *introduction* (its address, routing record and the
capabilities it offers) into the folder, and reads the others' (:mod:`avm.host.netjoin`):
that is how a client on one host holds a capability to a machine on another.

What crosses hosts: clients on hosts 1.. add to and ask the counter on host 0 (the
request carries a reply capability to the asking host, so the answer crosses back),
and clients on every other host move money through the bank's teller on host 1. Each
host prints its web page address, and every few seconds its batches, what went over
the wire, the remote counter's answer and, on the bank's host, the bank's total.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import TextIO

from ..core.caps import Capability, address_text
from ..core.errors import UsageError
from ..core.values import Map
from ..naming.records import RecordError, decode_record, split_endpoint
from .api import Host, open
from .apps import behaviors_of
from .identity import host_name, load_or_create
from .netjoin import HostNet, read_introduction, write_introduction

__all__ = ["demo_hosts", "demo_role", "HOSTS_MAX"]

#: Host processes ``avm demo --hosts`` starts at most.
HOSTS_MAX = 20
INTRO_WAIT_SECONDS = 60.0
REPORT_SECONDS = 2.0


def _intro(base: Path, i: int) -> Path:
    return base / f"host{i}.intro"


async def _read_intro(base: Path, i: int, stop: asyncio.Event) -> tuple[bytes, dict, bytes | None]:
    path = _intro(base, i)
    end = time.monotonic() + INTRO_WAIT_SECONDS
    while not path.exists():
        if time.monotonic() > end or stop.is_set():
            raise UsageError(f"host {i} did not write its introduction {path}")
        await asyncio.sleep(0.05)
    return read_introduction(path)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _remote_counter(h: Host, i: int, cap: Capability, stop: asyncio.Event,
                          seen: dict) -> None:
    """Add to the counter on host 0 and ask it; the answer crosses back."""
    client = f"demo.{i}.counter"
    while not stop.is_set():
        with contextlib.suppress(Exception):  # a slow answer is tried again
            await h.send(cap, ("add", 1), client=client)
            seen["counter"] = await h.ask(cap, "get", client=client, timeout=10)
        await _pause(stop, 0.2)


async def _remote_bank(h: Host, i: int, teller: Capability, bank: ModuleType,
                       stop: asyncio.Event, seen: dict) -> None:
    rng = random.Random()
    names = list(bank.BRANCHES["branch.north"][1])
    while not stop.is_set():
        a, b = rng.sample(names, 2)
        await h.send(teller, bank.Transfer(a, b, rng.randint(1, 40)), client=f"demo.{i}.bank")
        seen["transfers"] = seen.get("transfers", 0) + 1
        await _pause(stop, 0.25)


async def demo_role(i: int, n: int, folder: str, seconds: float | None = None,
                    out: TextIO | None = None, http: str | None = "127.0.0.1:0") -> None:
    """Host ``i`` of ``n`` of the demo (a child process of :func:`demo_hosts`)."""
    import logging

    from .demo import (
        _build,
        _build_live,
        _counter_client,
        _http,
        _import_examples,
        _stop_on_signals,
    )

    # a peer that stops is "no response" / "did not receive reply" to the DHT: expected
    for name in ("kademlia", "rpcudp"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    out = out or sys.stdout
    base = Path(folder)
    apps = _import_examples()
    mine = [apps[i]] if i < len(apps) else []
    bank = next(m for m, p in apps if p == "bank.")
    path = base / f"host{i}.avm"
    identity, _ = load_or_create(base / f"host{i}.avm.identity")
    stop = asyncio.Event()
    restore = _stop_on_signals(stop)
    async with open(path, behaviors=behaviors_of(m for m, _ in apps),
                    host=host_name(identity)) as h, _http(h, http, path) as api:
        await _build(h, mine)
        if i == 0:
            await _build_live(h)
        join: list[tuple[str, int]] = []
        if i > 0:
            _, _, rec = await _read_intro(base, 0, stop)
            if rec is not None:
                join = [split_endpoint(e) for e in decode_record(rec).endpoints]
        net = await HostNet(h, identity, listen=("127.0.0.1", 0), join=join,
                            ttl_seconds=600).start()
        clients: list[asyncio.Task] = []
        try:
            offer: dict[str, Capability] = {}
            names = {m.name for m in h.machines()}
            if "counter.counter" in names:
                offer["counter"] = h.cap("counter.counter", "main")
            if "bank.teller.1" in names:
                offer["teller"] = h.cap("bank.teller.1", "desk")
            assert net.naming is not None
            write_introduction(_intro(base, i), net.address, offer,
                               (await net.naming.publish()).data)
            page = f"{api.url}/" if api is not None else "(no HTTP API)"
            print(f"host {i}: address {address_text(net.address)[:16]}..., listening on "
                  f"{net.endpoint}; web page {page} (token in {path}.http); runs "
                  f"{', '.join(p.rstrip('.') for _, p in mine) or 'clients only'}",
                  file=out, flush=True)
            remote: dict[str, Capability] = {}
            for j in range(n):
                if j == i:
                    continue
                addr, caps, rec = await _read_intro(base, j, stop)
                if rec is not None:
                    with contextlib.suppress(RecordError):
                        net.learn_record(rec)
                for name, cap in caps.items():
                    if cap.address not in h.network.remote:
                        net.add_remote(cap.address, addr)
                    remote[name] = cap
            seen: dict = {}
            if "counter" in offer:
                clients.append(asyncio.create_task(_counter_client(h, stop)))
            if "counter" in remote:
                clients.append(asyncio.create_task(_remote_counter(h, i, remote["counter"], stop, seen)))
            teller = remote.get("teller") or offer.get("teller")
            if teller is not None and "teller" not in offer:
                clients.append(asyncio.create_task(_remote_bank(h, i, teller, bank, stop, seen)))
            end = None if seconds is None else time.monotonic() + seconds
            while not stop.is_set():
                wait = REPORT_SECONDS if end is None else max(0.0, min(REPORT_SECONDS, end - time.monotonic()))
                await _pause(stop, wait)
                await _report(h, i, net, seen, bank, out)
                if end is not None and time.monotonic() >= end:
                    stop.set()
        finally:
            stop.set()
            restore()
            await asyncio.gather(*clients, return_exceptions=True)
            await net.close()
    print(f"host {i}: stopped; everything is committed in {path}", file=out, flush=True)


async def _report(h: Host, i: int, net: HostNet, seen: dict, bank: ModuleType, out: TextIO) -> None:
    s = h.stats()
    c = net.peering.counts
    line = (f"host {i}: batches {s.get('batch.ok', 0)} ok, {s.get('batch.failed', 0)} failed; "
            f"wire: {len(net.peering.peers)} peers, sent {c['sent']}, received {c['received']}, "
            f"duplicates refused {c['duplicates']}")
    if "counter" in seen:
        line += f"; remote counter says {seen['counter']}"
    if "transfers" in seen:
        line += f"; {seen['transfers']} transfers sent to the remote bank"
    if any(m.name.startswith("bank.branch") for m in h.machines()):
        total = 0
        for bname, (_, opening) in bank.BRANCHES.items():
            st = await h.state("bank." + bname)
            total += sum((st or Map(opening)).values())
        line += f"; bank total {total} (always {bank.TOTAL})"
    print(line, file=out, flush=True)


async def demo_hosts(n: int, folder: str | None = None, seconds: float | None = None,
                     out: TextIO | None = None) -> Path:
    """Start ``n`` demo hosts as child processes and relay what they print."""
    from .demo import _stop_on_signals

    if not 2 <= n <= HOSTS_MAX:
        raise UsageError(f"--hosts is 2 to {HOSTS_MAX}, not {n}")
    out = out or sys.stdout
    base = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="avm-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob("host*.intro"):
        old.unlink()  # endpoints of an earlier run: written again by each host
    print(f"avm demo: {n} hosts on 127.0.0.1, stores in {base}; each prints its web "
          f"page below. Stop with Ctrl-C; `avm demo --hosts {n} --dir {base}` starts "
          f"them again from their stores.", file=out, flush=True)
    procs: list[asyncio.subprocess.Process] = []
    stop = asyncio.Event()
    restore = _stop_on_signals(stop)
    extra = [] if seconds is None else ["--seconds", str(seconds)]
    relays: list[asyncio.Task] = []

    async def relay(p: asyncio.subprocess.Process) -> None:
        assert p.stdout is not None
        async for raw in p.stdout:
            print(raw.decode(errors="replace").rstrip(), file=out, flush=True)

    try:
        for i in range(n):
            p = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "avm", "demo", "--role", str(i), "--hosts", str(n),
                "--dir", str(base), *extra, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
            procs.append(p)
        relays += [asyncio.create_task(relay(p)) for p in procs]
        async def all_exit() -> None:
            await asyncio.gather(*(p.wait() for p in procs))

        waits = asyncio.create_task(all_exit())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([waits, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        restore()
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()  # each host stops cleanly on SIGTERM
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 30)
            except TimeoutError:
                p.kill()
                await p.wait()
    await asyncio.gather(*relays, return_exceptions=True)
    codes = [p.returncode for p in procs]
    print(f"avm demo: the {n} hosts stopped (exit codes {codes}); stores in {base}",
          file=out, flush=True)
    return base
