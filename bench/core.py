"""Throughput of the pure core against the obvious alternatives, in one run.

    python bench/core.py            # full run (about two minutes on 2 cores)
    python bench/core.py --quick    # smaller counts, for a smoke test

Every contender runs the *same* step function, a counter ``(msg, n) -> ((), n + k)``:

* bare loop      a Python ``for`` calling the step function: the floor, no checks at all;
* run_batch      avm's batch executor alone (all step-boundary checks, no network);
* sim 1 batch    the simulator, one client batch of N messages (submit + schedule + run);
* sim N batches  the simulator, N single-message batches (per-batch overhead dominates);
* sim +linear    like "sim 1 batch" with 16 linear tokens kept in the state, so the
                 substructural census runs at every step;
* pykka          Pykka actors: N ``tell`` then one ``ask`` (threads);
* asyncio queue  one consumer task draining a plain ``asyncio.Queue``.

Then steps per second for a state Map of 1k, 10k and 100k entries updated one key per
message, which should be roughly flat (a persistent map: O(log n) per update), next to
copying a dict per message, which is O(n).

Then what a step costs against what is queued (issue 6, item 11): microseconds per step
with 1,000 batches in flight between two hosts against 10, and per batch with 3,000
live channels into one machine against 10 (the scheduler's indexes, avm.core.inbox,
should keep both ratios near 1x); and N machines spawned and initialized (run to
quiescence), in a fresh process, with the resident memory each one adds: by
``Sim.spawn_many`` (which paces the garbage collector as ``Sim.run`` does), and a fifth
as many by ``Sim.spawn`` in a loop (Python's default collector thresholds).

Figures are messages per second; ratios are against Pykka's ``tell``. The last table
lists the targets and whether this run met them: every figure in it is a ratio
measured in this run, or a time and a size.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from avm import SIGNAL, Behavior, Config, Faults, Linear, Map, Message, Sim, run_batch


def step(msg, n):
    return (), n + msg.content


def best_of(fn: Callable[[], float], repeat: int) -> float:
    """Best (highest) rate of ``repeat`` runs: the least disturbed by the machine."""
    rates = []
    for _ in range(repeat):
        gc.collect()
        rates.append(fn())
    return max(rates)


def bench_bare(n: int) -> float:
    msgs = [Message(None, 1)] * n
    t = time.perf_counter()
    s = 0
    for m in msgs:
        _, s = step(m, s)
    dt = time.perf_counter() - t
    assert s == n
    return n / dt


def bench_run_batch(n: int) -> float:
    msgs = [Message(None, 1)] * n
    t = time.perf_counter()
    r = run_batch(step, 0, msgs)
    dt = time.perf_counter() - t
    assert r.ok and r.state == n
    return n / dt


def _counter_sim(linear: bool, as_map: bool = False) -> tuple[Sim, object]:
    """The counter as a raw step function (the same ``step`` every contender runs), plus
    the life-cycle signals every machine receives at creation. ``as_map`` keeps the
    count in a Map beside 16 tokens, linear or (to isolate the checks' cost) plain."""
    if linear or as_map:
        wrap = Linear if linear else (lambda v: v)

        def counter(msg, state):
            if msg.context == SIGNAL:
                if msg.content[0] == "init":
                    tokens = Map({i: wrap(("token", i)) for i in range(16)})
                    return (), Map({"n": 0, "tokens": tokens})
                return (), state
            return (), state.set("n", state["n"] + msg.content)
    else:
        def counter(msg, state):
            if msg.context == SIGNAL:
                return (), 0 if state is None else state
            return step(msg, state)

    sim = Sim(seed=1, record=False)
    sim.spawn("c", counter)
    sim.run()
    return sim, sim.cap("c")


def bench_sim_one_batch(n: int, linear: bool = False, as_map: bool = False) -> float:
    sim, cap = _counter_sim(linear, as_map)
    msgs = [(cap, 1)] * n
    t = time.perf_counter()
    sim.submit(msgs)
    sim.run()
    dt = time.perf_counter() - t
    final = sim.state("c")
    assert (final["n"] if linear or as_map else final) == n, final
    return n / dt


def bench_sim_many_batches(n: int) -> float:
    sim, cap = _counter_sim(False)
    t = time.perf_counter()
    for _ in range(n):
        sim.send(cap, 1)
    sim.run()
    dt = time.perf_counter() - t
    assert sim.state("c") == n
    return n / dt


def bench_pykka(n: int) -> float:
    import pykka

    class Counter(pykka.ThreadingActor):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def on_receive(self, message):
            if message == "get":
                return self.n
            _, self.n = step(Message(None, message), self.n)
            return None

    ref = Counter.start()
    try:
        t = time.perf_counter()
        for _ in range(n):
            ref.tell(1)
        got = ref.ask("get")
        dt = time.perf_counter() - t
    finally:
        ref.stop()
    assert got == n
    return n / dt


def bench_asyncio(n: int) -> float:
    async def main() -> float:
        q: asyncio.Queue = asyncio.Queue()
        done = asyncio.Event()
        state = {"n": 0}

        async def consumer() -> None:
            s = 0
            for _ in range(n):
                m = await q.get()
                _, s = step(m, s)
            state["n"] = s
            done.set()

        task = asyncio.create_task(consumer())
        msg = Message(None, 1)
        t = time.perf_counter()
        for _ in range(n):
            q.put_nowait(msg)
        await done.wait()
        dt = time.perf_counter() - t
        await task
        assert state["n"] == n
        return n / dt

    return asyncio.run(main())


def bench_big_state(entries: int, n: int) -> float:
    b = Behavior("kv")

    @b.init
    def init(state, size):
        return [], Map({i: 0 for i in range(size)})

    @b.on("bump")
    def bump(state, key):
        return [], state.set(key, state[key] + 1)

    sim = Sim(seed=1, record=False)
    sim.spawn("kv", b, entries)
    sim.run()
    cap = sim.cap("kv")
    msgs = [(cap, ("bump", i % entries)) for i in range(n)]
    t = time.perf_counter()
    sim.submit(msgs)
    sim.run()
    dt = time.perf_counter() - t
    assert sim.state("kv")[0] >= 1
    return n / dt


def bench_naive_copy(entries: int, n: int) -> float:
    """The obvious way to keep state immutable without a persistent map: copy a dict."""
    state = {i: 0 for i in range(entries)}
    t = time.perf_counter()
    for i in range(n):
        new = dict(state)  # O(n) per message
        k = i % entries
        new[k] = state[k] + 1
        state = new
    dt = time.perf_counter() - t
    return n / dt


def _relay_behaviors() -> tuple[Behavior, Behavior]:
    sender = Behavior("bench.sender")

    @sender.on("go")
    def go(state, target):
        return [(target, ("n",))], state

    sink = Behavior("bench.sink")

    @sink.on("n")
    def n(state):
        return [], state + 1

    return sender, sink


def bench_in_flight(k: int, rounds: int) -> float:
    """Microseconds per step while ``k`` batches are in flight between two hosts.

    ``k`` machines on h0 each send one batch to a machine on h1; every transmission
    takes 2,000-3,000 ticks, so all ``k`` are on the wire (and in the outbox) at once.
    ``rounds`` repeats this, so that small ``k`` are measured over as many steps.
    """
    sender, sink = _relay_behaviors()
    cfg = Config(retry_ticks=10**7, retry_ticks_max=10**7,
                 faults=Faults(delay_min=2_000, delay_max=3_000))
    sim = Sim(seed=5, hosts=("h0", "h1"), config=cfg, record=False)
    sim.spawn("sink", sink, 0, host="h1")
    for i in range(k):
        sim.spawn(f"s{i}", sender, None, host="h0")
    sim.run()
    target = sim.cap("sink")
    caps = [sim.cap(f"s{i}") for i in range(k)]
    steps = 0
    t = time.perf_counter()
    for _ in range(rounds):
        sim.submit([(c, ("go", target)) for c in caps])
        steps += sim.run().steps
    dt = time.perf_counter() - t
    assert sim.state("sink") == k * rounds
    return dt / steps * 1e6


def bench_live_channels(k: int, rounds: int) -> float:
    """Microseconds per batch with ``k`` live channels: ``k`` clients, one machine."""
    _, sink = _relay_behaviors()
    sim = Sim(seed=4, record=False)
    sim.spawn("sink", sink, 0)
    sim.run()
    cap = sim.cap("sink")
    total = 0.0
    for _ in range(rounds):
        for i in range(k):
            sim.send(cap, ("n",), client=f"client{i}")
        t = time.perf_counter()
        sim.run()
        total += time.perf_counter() - t
    assert sim.state("sink") == k * rounds
    return total / (k * rounds) * 1e6


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def many_machines(n: int, loop: bool = False) -> dict:
    """Spawn ``n`` machines and run their init batches; time and resident bytes added.

    By ``Sim.spawn_many`` (the collector paced, as in ``Sim.run``), or with ``loop`` by
    calling ``Sim.spawn`` ``n`` times (the collector at Python's default thresholds)."""
    cell = Behavior("bench.cell")

    @cell.init
    def init(state, i):
        return [], i

    sim = Sim(seed=1, record=False)
    sim.spawn("warm", cell, -1)
    sim.run()
    gc.collect()
    before = _rss()
    t = time.perf_counter()
    if loop:
        for i in range(n):
            sim.spawn(f"m{i}", cell, i)
    else:
        sim.spawn_many(cell, ((f"m{i}", i) for i in range(n)))
    spawned = time.perf_counter() - t
    report = sim.run()
    total = time.perf_counter() - t
    assert report.quiescent and sim.state(f"m{n - 1}") == n - 1
    gc.collect()
    return {"n": n, "spawn_s": spawned, "total_s": total, "bytes": (_rss() - before) / n}


def bench_many_machines(n: int, loop: bool = False) -> dict:
    """:func:`many_machines` in a fresh process, so its memory figure is its own."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--many", str(n),
         *(["--loop"] if loop else [])],
        check=True, capture_output=True, text=True, env={**os.environ})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts, one repetition")
    p.add_argument("-n", type=int, default=100_000, help="messages per run (default 100000)")
    p.add_argument("--machines", type=int, default=100_000,
                   help="machines spawned and initialized (default 100000; --quick: 10000)")
    p.add_argument("--many", type=int, help=argparse.SUPPRESS)  # the subprocess of bench_many_machines
    p.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.many:
        print(json.dumps(many_machines(args.many, args.loop)))
        return 0
    n = 10_000 if args.quick else args.n
    rep = 1 if args.quick else 3
    few = max(1_000, n // 5)  # single-message batches are slow: fewer of them

    print(f"avm core benchmark: {n} messages per run, best of {rep}, Python {sys.version.split()[0]}",
          f"({threading.active_count()} thread)")
    rows: list[tuple[str, float, str]] = []

    def row(name: str, rate: float, note: str = "") -> None:
        rows.append((name, rate, note))
        print(f"  measured {name:<16} {rate:>12,.0f} msg/s", flush=True)

    row("bare loop", best_of(lambda: bench_bare(n), rep), "floor: no checks")
    row("run_batch", best_of(lambda: bench_run_batch(n), rep), "executor alone")
    row("sim 1 batch", best_of(lambda: bench_sim_one_batch(n), rep), f"1 batch of {n}")
    row("sim map state", best_of(lambda: bench_sim_one_batch(n, as_map=True), rep), "Map + 16 plain tokens")
    row("sim +linear", best_of(lambda: bench_sim_one_batch(n, True), rep), "Map + 16 linear tokens")
    row("sim N batches", best_of(lambda: bench_sim_many_batches(few), rep), f"{few} batches of 1")
    row("pykka tell", best_of(lambda: bench_pykka(n), rep), "threads, N tell + 1 ask")
    row("asyncio queue", best_of(lambda: bench_asyncio(n), rep), "one consumer task")
    pykka = next(r for name, r, _ in rows if name == "pykka tell")

    print()
    print(f"{'contender':<16} {'msg/s':>12} {'x pykka':>9}  note")
    print("-" * 62)
    for name, rate, note in rows:
        print(f"{name:<16} {rate:>12,.0f} {rate / pykka:>8.2f}x  {note}")

    print()
    print("state size vs. cost: one key of a state Map updated per message (in the simulator),")
    print("against copying a plain dict per message (the naive way to keep states immutable)")
    print(f"{'entries':>10} {'avm steps/s':>12} {'vs 1k':>7} {'dict copy/s':>12} {'avm / copy':>11}")
    base = None
    for entries in (1_000, 10_000, 100_000):
        rate = best_of(lambda e=entries: bench_big_state(e, n // 2), rep)
        copies = max(50, 2_000_000 // entries)
        naive = best_of(lambda e=entries, c=copies: bench_naive_copy(e, c), rep)
        base = base or rate
        print(f"{entries:>10,} {rate:>12,.0f} {rate / base:>6.2f}x {naive:>12,.0f} {rate / naive:>10.1f}x")

    print()
    print("a step's cost against what is queued (best of", rep, "runs each)")
    few_k, many_k = 10, 1_000
    fl_few = min(bench_in_flight(few_k, 100) for _ in range(rep))
    fl_many = min(bench_in_flight(many_k, 1) for _ in range(rep))
    ch_few = min(bench_live_channels(10, 300) for _ in range(rep))
    ch_many = min(bench_live_channels(3_000, 1) for _ in range(rep))
    print(f"  in flight between hosts: {few_k:>5} -> {fl_few:7.1f} us/step   "
          f"{many_k:>5} -> {fl_many:7.1f} us/step   ratio {fl_many / fl_few:.2f}x")
    print(f"  live channels:              10 -> {ch_few:7.1f} us/batch  "
          f"3,000 -> {ch_many:7.1f} us/batch  ratio {ch_many / ch_few:.2f}x")

    machines = 10_000 if args.quick and args.machines == 100_000 else args.machines
    many = bench_many_machines(machines)
    print(f"  {machines:,} machines, Sim.spawn_many + run: {many['total_s']:.2f} s "
          f"(spawn {many['spawn_s']:.2f} s), {many['bytes']:,.0f} bytes per machine")
    looped = max(1_000, machines // 5)
    loop = bench_many_machines(looped, loop=True)
    print(f"  {looped:,} machines, Sim.spawn in a loop + run: {loop['total_s']:.2f} s "
          f"(spawn {loop['spawn_s']:.2f} s), {loop['bytes']:,.0f} bytes per machine "
          f"(us per machine: loop {loop['total_s'] / looped * 1e6:.0f}, "
          f"spawn_many {many['total_s'] / machines * 1e6:.0f})")

    rate = {name: r for name, r, _ in rows}
    targets = [
        ("single-message batches vs pykka tell", rate["sim N batches"] / pykka, ">= 1x", rate["sim N batches"] / pykka >= 1),
        ("one large batch vs pykka tell", rate["sim 1 batch"] / pykka, ">= 5x", rate["sim 1 batch"] / pykka >= 5),
        (f"step cost, {many_k:,} vs {few_k} in flight", fl_many / fl_few, "<= 1.5x", fl_many / fl_few <= 1.5),
        ("batch cost, 3,000 vs 10 live channels", ch_many / ch_few, "<= 1.5x", ch_many / ch_few <= 1.5),
    ]
    print()
    print(f"{'target (issue 6, item 11)':<42} {'measured':>12} {'wanted':>8}  met")
    print("-" * 70)
    for name, value, wanted, ok in targets:
        print(f"{name:<42} {value:>11.2f}x {wanted:>8}  {'yes' if ok else 'NO'}")
    ok_many = many["total_s"] < 10 and many["bytes"] <= 4096
    print(f"{f'{machines:,} machines spawned + initialized':<42} {many['total_s']:>10.2f} s {'< 10 s':>8}  "
          f"{'yes' if many['total_s'] < 10 else 'NO'}")
    print(f"{'  bytes per machine':<42} {many['bytes']:>12,.0f} {'<= 4096':>8}  "
          f"{'yes' if many['bytes'] <= 4096 else 'NO'}")
    del ok_many
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
