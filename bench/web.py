"""How fast the web page's views render on a big host: ``python bench/web.py [--machines N]``.

A host in memory with N machines (default 100,000, made by ``Host.spawn_many``) and one
machine whose state is a Map of ``--entries`` entries (default 100,000), its HTTP API and
page on 127.0.0.1, and Debian's Chromium headless (``/usr/bin/chromium``) driven by
Playwright. For each view: the seconds from opening it (the page already loaded, its
token set) until it shows what it is for (the machine table's rows, the state tree's
first page, the network's nodes, the batches' counters, the dictionary's words), printed
beside the target of issue 9 (1 s) and the ratio (the batches view shows what arrives:
its figure is the view's switch, the events come every second). Numbers vary with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import avm  # noqa: E402
import avm.host  # noqa: E402
from avm import Map  # noqa: E402
from avm.host import http as hh  # noqa: E402

cell = avm.Behavior("bench.web.cell")


@cell.init
def _init(state, args):
    return [], args


@cell.on("get")
def _get(n, reply):
    return [(reply, ("n", n))], n


TARGET = 1.0


def serve(n: int, entries: int, ready: threading.Event, info: dict, stop: threading.Event) -> None:
    async def go() -> None:
        async with avm.host.open(None, behaviors=[cell]) as h:
            t = time.perf_counter()
            await h.spawn_many(cell, ((f"m{i:06d}", i) for i in range(n)))
            await h.spawn("big", cell, Map({f"k{i:06d}": i for i in range(entries)}))
            h.live.dictionary.edit("main", "w", "x = 1\n")
            await h.idle()
            info["setup_seconds"] = time.perf_counter() - t
            async with hh.serve(h) as api:
                info["url"], info["token"] = api.url, api.tokens.read
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.05)

    asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--machines", type=int, default=100_000)
    ap.add_argument("--entries", type=int, default=100_000)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    ready, stop, info = threading.Event(), threading.Event(), {}
    th = threading.Thread(target=serve, args=(a.machines, a.entries, ready, info, stop), daemon=True)
    th.start()
    if not ready.wait(600):
        raise SystemExit("the host did not start")
    print(f"host: {a.machines:,} machines and a state of {a.entries:,} entries, made in "
          f"{info['setup_seconds']:.1f} s", flush=True)
    views = [
        ("machines (table of all machines, first page)", "#machines", "#machine-table tbody tr",
         "#machine-table tbody"),
        (f"machine (state tree of {a.entries:,} entries, first page)", "#machine/big",
         '#state-tree li[data-path="k000199"]', "#state-tree"),
        ("network (picture of the busiest machines)", "#network", "#net-svg .node", "#net-svg"),
        ("batches (the live log shown)", "#batches", "#view-batches.active", "#batch-note"),
        ("dictionary (words of main)", "#dictionary", "#dict-words li", "#dict-words"),
    ]
    rows = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1280, "height": 820})
        page.set_default_timeout(60_000)
        page.add_init_script(f"sessionStorage.setItem('avm.token', {json.dumps(info['token'])})")
        t = time.perf_counter()
        page.goto(info["url"] + "/#batches")
        page.wait_for_selector("#live-state.live")
        rows.append(("page load (to live)", time.perf_counter() - t))
        for label, hash_, done, clear in views:
            page.evaluate("location.hash = '#empty'")
            # what the view showed before is removed: the clock runs until it is drawn again
            page.evaluate(f"document.querySelector({json.dumps(clear)}).replaceChildren()")
            t = time.perf_counter()
            page.evaluate(f"location.hash = {json.dumps(hash_)}")
            page.wait_for_selector(done, state="attached")
            rows.append((label, time.perf_counter() - t))
        b.close()
    stop.set()
    print(f"{'view':56} {'seconds':>8} {'/ target 1 s':>13}")
    for label, s in rows:
        print(f"{label:56} {s:8.3f} {s / TARGET:12.2f}x")


if __name__ == "__main__":
    main()
