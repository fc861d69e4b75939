"""``avm demo`` and ``avm host run``: a real host with applications and clients.

The demo opens a host on an embedded store (a fresh temporary folder, or ``--dir``),
builds the example applications on it the first time (the same ``build`` functions the
simulator runs), and starts clients that send work: the counter is incremented and
asked for its count, the bank moves money between accounts through a teller. Every few
seconds it prints what ran, what was committed, and the figures that must hold (the
bank's total is conserved). Run it again on the same folder: the machines and their
states come back from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from ..core.errors import UsageError
from ..core.values import Map
from .api import Host, open
from .apps import BuildOnHost, behaviors_of, load_module

if TYPE_CHECKING:
    from .http import HttpApi

__all__ = ["DEMO_APPS", "NetOptions", "demo", "host_run"]

#: Example applications the demo runs (module, machine-name prefix).
DEMO_APPS = (("examples.counter", "counter."), ("examples.bank", "bank."),
             ("examples.chat", "chat."))
REPORT_SECONDS = 2.0
#: The demo's machine whose code lives in the dictionary (edit it on the web page).
LIVE = "live.counter"
LIVE_SOURCE = '''"""A counter whose code lives in the host's dictionary: edit STEP on the web page."""
import avm

behavior = avm.Behavior("live.counter")
STEP = 1


@behavior.init
def _init(state, args):
    return [], 0


@behavior.on("tick")
def _tick(n):
    return [], n + STEP


@behavior.on("add")
def _add(n, k):
    return [], n + k
'''
LIVE_TICK_SECONDS = 0.5


def _import_examples() -> list[tuple[ModuleType, str]]:
    root = Path(__file__).resolve().parents[3]  # a source checkout: examples/ beside src/
    if (root / "examples").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return [(load_module(name), prefix) for name, prefix in DEMO_APPS]
    except ImportError as e:
        raise UsageError(f"the demo runs the examples/ folder of a source checkout of avm "
                         f"(run it from the checkout): {e}") from e


async def _build(h: Host, apps: list[tuple[ModuleType, str]]) -> None:
    for mod, prefix in apps:
        if any(m.name.startswith(prefix) for m in h.machines()):
            continue  # built on an earlier run: its machines came back from the store
        build = getattr(mod, "build", None)
        if build is not None:
            build(BuildOnHost(h, prefix))
    await h.flush()


async def _build_live(h: Host) -> None:
    """The word ``live.counter`` and a machine of that name following it (first run)."""
    from .dictionary import MAIN
    from .live import behavior_name

    if any(m.name == LIVE for m in h.machines()):
        return
    d = h.live.dictionary
    v = (d.head(MAIN, LIVE) if LIVE in d.words(MAIN)
         else d.edit(MAIN, LIVE, LIVE_SOURCE, author="demo", message="count by one"))
    name = behavior_name(MAIN, LIVE, v.id)
    h.behavior(d.load(MAIN, LIVE, version=v.id), name)
    await h.spawn(LIVE, name)
    await h.live.bind(LIVE, LIVE)  # follows the word: an edit takes effect at its next tick


async def _live_client(h: Host, stop: asyncio.Event) -> None:
    c = h.cap(LIVE)
    while not stop.is_set():
        await h.send(c, ("tick",), client="demo.ticker")
        await _pause(stop, LIVE_TICK_SECONDS)


async def _counter_client(h: Host, stop: asyncio.Event) -> None:
    c = h.cap("counter.counter", "main")
    while not stop.is_set():
        await h.send(c, ("add", 1), client="demo.counter")
        await h.ask(c, "get", client="demo.counter")
        await _pause(stop, 0.05)


async def _bank_client(h: Host, stop: asyncio.Event, bank: ModuleType) -> None:
    rng = random.Random()
    teller = h.cap("bank.teller.1", "desk")
    names = list(bank.BRANCHES["branch.north"][1])
    while not stop.is_set():
        a, b = rng.sample(names, 2)
        await h.send(teller, bank.Transfer(a, b, rng.randint(1, 40)), client="demo.bank")
        await _pause(stop, 0.1)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _report(h: Host, out: TextIO, bank: ModuleType | None) -> None:
    s = h.stats()
    line = (f"batches {s.get('batch.ok', 0)} ok, {s.get('batch.failed', 0)} failed; "
            f"commits {s.get('host.commits', 0)}")
    try:
        line += f"; counter = {await h.state('counter.counter')}"
    except Exception:  # noqa: BLE001 - the demo's report must never stop the demo
        pass
    if bank is not None:
        total = 0
        for bname, (_, opening) in bank.BRANCHES.items():
            st = await h.state("bank." + bname)
            total += sum((st or Map(opening)).values())
        line += f"; bank total {total} (always {bank.TOTAL})"
    print(line, file=out, flush=True)


def _stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Ctrl-C and SIGTERM stop the host cleanly; returns what puts the handlers back."""
    loop = asyncio.get_running_loop()
    done = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            done.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass

    def restore() -> None:
        for sig in done:
            loop.remove_signal_handler(sig)

    return restore


async def _serve(h: Host, stop: asyncio.Event, seconds: float | None, out: TextIO,
                 report: Callable[[], Any]) -> None:
    end = None if seconds is None else time.monotonic() + seconds
    while not stop.is_set():
        wait = REPORT_SECONDS if end is None else max(0.0, min(REPORT_SECONDS, end - time.monotonic()))
        await _pause(stop, wait)
        await report()
        if end is not None and time.monotonic() >= end:
            stop.set()


@contextlib.asynccontextmanager
async def _http(h: Host, bind: str | None, store: Path) -> AsyncIterator[HttpApi | None]:
    """The HTTP control API while the block runs (none if ``bind`` is None)."""
    if bind is None:
        yield None
        return
    from .http import serve, token_file_for

    async with serve(h, bind, token_file=token_file_for(store)) as api:
        yield api


def _http_lines(api: HttpApi | None, path: Path) -> str:
    if api is None:
        return ""
    return (f"web page: open {api.url}/ (paste the admin token from the file below)\n"
            f"HTTP control API: {api.url} (OpenAPI {api.url}/openapi.json, Prometheus "
            f"{api.url}/metrics)\n  tokens (admin, read-only) in {api.token_file} (mode 0600)\n")


async def demo(folder: str | None = None, seconds: float | None = None,
               out: TextIO | None = None, http: str | None = "127.0.0.1:0") -> Path:
    """Run the demo; returns the store's path. ``seconds=None`` runs until Ctrl-C.

    ``http``: where the HTTP control API listens (``None``: no API)."""
    out = out or sys.stdout
    base = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="avm-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    path = base / "demo.avm"
    apps = _import_examples()
    bank = next(m for m, p in apps if p == "bank.")
    async with open(path, behaviors=behaviors_of(m for m, _ in apps)) as h, \
            _http(h, http, path) as api:
        fresh = not h.machines()
        await _build(h, apps)
        await _build_live(h)
        machine = "" if api is None else f"""  avm machine ls --store {path}        # the machines, their batches and failures
  avm machine ask counter.counter '"get"' --context '"main"' --store {path}
  avm machine send counter.counter '("add", 10)' --context '"main"' --store {path}
  avm machine state bank.branch.north --store {path}
  avm machine suspend counter.counter --store {path}   # then resume
"""
        print(f"""avm demo: a host with {len(h.machines())} machines, store {path}
  {'created' if fresh else 'reopened'}; durability: full (every commit is fsynced)
  running: the counter (incremented and asked by a client), the bank (a client moves
  money between accounts through a teller), the chat room, and live.counter, whose
  code is the dictionary word live.counter (edit it on the web page: docs/web.md).
{_http_lines(api, path)}
What to type, in another terminal:
{machine}  avm store check {path}            # integrity check, decode every state
  avm store backup {path} copy.avm  # online backup while the demo runs
  kill -9 the demo, run the line below: nothing committed is lost (docs/host.md)
Stop with Ctrl-C; run `avm demo --dir {base}` to start again from the same store.
""", file=out, flush=True)
        stop = asyncio.Event()
        restore = _stop_on_signals(stop)
        clients = [asyncio.create_task(_counter_client(h, stop)),
                   asyncio.create_task(_bank_client(h, stop, bank)),
                   asyncio.create_task(_live_client(h, stop))]
        try:
            await _serve(h, stop, seconds, out, lambda: _report(h, out, bank))
        finally:
            stop.set()
            restore()
            await asyncio.gather(*clients, return_exceptions=True)
            await _report(h, out, bank)
    print(f"stopped; everything is committed in {path}", file=out, flush=True)
    return path


@dataclass(frozen=True)
class NetOptions:
    """``avm host run``'s network options: where to listen, whom to join (issue 8)."""

    listen: tuple[str, int]
    join: tuple[tuple[str, int], ...] = ()
    identity: str | None = None  # default: STORE.identity
    ttl_seconds: float = 3600.0
    dht: bool = True
    chaos: str | None = None


async def host_run(store: str, apps: list[str], seconds: float | None = None,
                   durability: str = "full", out: TextIO | None = None,
                   http: str | None = None, isolation: str = "inline",
                   net: NetOptions | None = None) -> None:
    """``avm host run``: serve a store, building each ``--app`` module the first time;
    with ``http`` (``HOST:PORT``), its HTTP control API too; ``isolation`` as in
    :func:`avm.host.open`. With ``net``, the host listens for peers, joins the DHT and
    publishes its routing record (:mod:`avm.host.netjoin`); a module's
    ``async def net_main(host, hostnet)`` then runs with it."""
    out = out or sys.stdout
    mods = [load_module(a) for a in apps]
    if http is not None:
        from .http import parse_bind

        parse_bind(http)  # a bad --http is refused before the store is opened
    identity = None
    hostname = "h0"
    if net is not None:
        from .identity import host_name, identity_path, load_or_create

        identity, created = load_or_create(net.identity or identity_path(store))
        hostname = host_name(identity)
    async with open(store, behaviors=behaviors_of(mods), durability=durability,
                    isolation=isolation, host=hostname) as h, \
            _http(h, http, Path(store)) as api:
        if not h.machines():  # a new store: build every app once
            for m in mods:
                build = getattr(m, "build", None)
                if build is not None:
                    build(BuildOnHost(h))
            await h.flush()
        hostnet = None
        if net is not None and identity is not None:
            from ..core.caps import address_text
            from .netjoin import HostNet

            hostnet = await HostNet(h, identity, listen=net.listen, join=net.join,
                                    dht=net.dht, ttl_seconds=net.ttl_seconds,
                                    chaos=net.chaos).start()
            print(f"avm host: address {address_text(identity.address)} "
                  f"({'new identity' if created else 'identity'} {net.identity or identity_path(store)})\n"
                  f"  listening on {hostnet.endpoint} (TLS; DHT on UDP "
                  f"{'off' if hostnet.dht is None else 'the same port'})"
                  + (f"; joining {', '.join(f'{a}:{p}' for a, p in net.join)}" if net.join else ""),
                  file=out, flush=True)
        loop = asyncio.get_running_loop()
        for m in mods:
            main = getattr(m, "host_main", None)
            if main is not None:
                loop.create_task(main(h))
            nmain = getattr(m, "net_main", None)
            if nmain is not None and hostnet is not None:
                loop.create_task(nmain(h, hostnet))
        print(f"avm host: serving {store} ({len(h.machines())} machines, durability "
              f"{durability}, steps {isolation}); Ctrl-C to stop", file=out, flush=True)
        if api is not None:
            print(_http_lines(api, Path(store)) + f"  try: avm machine ls --store {store}",
                  file=out, flush=True)
        stop = asyncio.Event()
        restore = _stop_on_signals(stop)

        async def report() -> None:
            s = h.stats()
            line = (f"batches {s.get('batch.ok', 0)} ok, {s.get('batch.failed', 0)} failed; "
                    f"commits {s.get('host.commits', 0)}")
            if hostnet is not None:
                c = hostnet.peering.counts
                line += (f"; peers {len(hostnet.peering.peers)}, wire sent {c['sent']}, "
                         f"received {c['received']}, duplicates refused {c['duplicates']}")
            print(line, file=out, flush=True)

        try:
            await _serve(h, stop, seconds, out, report)
        finally:
            restore()
            if hostnet is not None:
                await hostnet.close()
