"""Isolated steps (avm.host.isolation): one worker per trust domain, budgets, recheck.

Every behavior here is defined at module level: workers import them by reference.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys

import pytest
from examples.counter import counter
from hypothesis import given, settings
from hypothesis import strategies as st

import avm
import avm.host
from avm import Linear, Map
from avm.core import machine as core_machine
from avm.core.codec import encode
from avm.core.machine import Message, run_batch
from avm.host import isolation
from avm.host.isolation import Pool, recheck
from spawning import maker

# -- behaviors ----------------------------------------------------------------------------

snoop = avm.Behavior("snoop")


@snoop.init
def _snoop_init(state, args):
    return [], Map({"mark": args, "found": ()})


def _reachable_texts(skip: set) -> list:
    """Every bytes-like or str object a step can reach: gc, module globals, frames."""
    seen: set = set()
    out: list = []

    def take(o):
        if id(o) in seen or id(o) in skip:
            return
        seen.add(id(o))
        if type(o) in (bytes, bytearray, str):
            out.append(o)

    objs = gc.get_objects()
    for o in objs:
        take(o)
        for r in gc.get_referents(o):
            take(r)
    for mod in list(sys.modules.values()):
        for v in list(getattr(mod, "__dict__", {}).values()):
            take(v)
    for f in sys._current_frames().values():
        while f is not None:
            for v in list(f.f_locals.values()):
                take(v)
                if type(v) in (tuple, list):
                    for x in v:
                        take(x)
            f = f.f_back
    return out


@snoop.on("search")
def _search(state, job):
    """A malicious step: looks for other machines' key bytes and state anywhere."""
    mask, masked = job
    needles = [bytes(a ^ b for a, b in zip(m, mask, strict=False)) for m in masked]
    skip = {id(n) for n in needles} | {id(job), id(mask), *map(id, masked)}
    texts = _reachable_texts(skip)
    found = []
    for n in needles:
        h = n.hex()
        found.append(any((n in t) if type(t) is not str else (h in t) for t in texts))
    return [], state.set("found", tuple(found)).set("pid", os.getpid())


def loop(msg, state):
    if msg.content == "spin":
        while True:
            pass
    return [], state


def hog(msg, state):
    if msg.content == "eat":
        chunks = []
        while True:
            chunks.append(bytearray(16 << 20))
    return [], state


vault = avm.Behavior("vault")


@vault.init
def _vault_init(state, args):
    return [], Map({"token": Linear(("gold", args)), "n": 0})


@vault.on("touch")
def _touch(state, _x):
    return [], state.set("n", state["n"] + 1)


def _lying_run_batch(step, state, msgs, state_items=None, plain_messages=False):
    """What a compromised worker does: run honestly, then copy the linear token."""
    r = run_batch(step, state, msgs, state_items, plain_messages)
    if r.ok and type(r.state) is Map and "token" in r.state:
        r = r._replace(state=r.state.set("copy", r.state["token"]))
    return r


def lying_serve(conn, behaviors, memory_bytes):
    isolation.run_batch = _lying_run_batch
    isolation._serve(conn, behaviors, memory_bytes)


def sealer(msg, state):
    """Seals its token into a capability to itself, and takes it back when it arrives."""
    ctx, c = msg
    name = c[0] if type(c) is tuple else c
    if name == "init":
        return [], Map({"token": Linear(("gold", c[1])), "me": None, "trips": 0})
    if name == "self":
        return [], state.set("me", c[1])
    if name == "send":
        cap = state["me"](("tok", state["token"]))
        return [(cap, "back")], state.set("token", None)
    if name == "back":
        return [], state.set("token", ctx[1]).set("trips", state["trips"] + 1)
    return [], state


def run(coro, seconds=120):
    return asyncio.run(asyncio.wait_for(coro, seconds))


async def _wait(cond, timeout=60.0):
    loop_ = asyncio.get_running_loop()
    end = loop_.time() + timeout
    while not await cond():
        assert loop_.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


# -- tests ----------------------------------------------------------------------------------


def test_inline_is_the_default_and_sets_no_runner():
    async def go():
        async with avm.host.open(None, behaviors=[counter]) as h:
            assert h._rt.env.batch_runner is None and h._pool is None
            cap = await h.spawn("c", counter, 0, domain="alice")
            await h.send(cap, ("add", 2))
            assert await h.ask(cap, "get") == ("count", 2)

    run(go())


def test_workers_run_steps_elsewhere_with_the_same_results():
    async def go(mode):
        async with avm.host.open(None, behaviors=[counter], isolation=mode) as h:
            a = await h.spawn("a", counter, 0, domain="alice")
            b = await h.spawn("b", counter, 10, domain="bob")
            for n in (1, 2, 3):
                await h.send(a, ("add", n))
                await h.send(b, ("add", n * 10))
            got = (await h.ask(a, "get"), await h.ask(b, "get"))
            pids = {} if h._pool is None else {d: w.proc.pid for d, w in h._pool.workers.items()}
            return got, pids

    inline, _ = run(go("inline"))
    workers, pids = run(go("workers"))
    assert inline == workers == (("count", 6), ("count", 70))
    assert set(pids) == {"alice", "bob"}
    assert os.getpid() not in pids.values() and pids["alice"] != pids["bob"]


def test_a_token_sealed_into_a_capability_passes_the_recheck():
    """Honest results that carry a linear value inside a Self-made capability pass."""
    async def go(mode):
        async with avm.host.open(None, behaviors={"sealer": sealer}, isolation=mode) as h:
            cap = await h.spawn("s", "sealer", 7, domain="alice")
            for _ in range(3):
                await h.send(cap, "send")
                await h.idle()
            s = await h.state("s")
            return s["token"], s["trips"], h.stats().get("batch.failed", 0)

    assert run(go("inline")) == run(go("workers")) == (Linear(("gold", 7)), 3, 0)


def test_a_step_finds_no_other_domains_keys_or_states():
    mark_a, mark_b = os.urandom(24), os.urandom(24)

    async def go():
        async with avm.host.open(None, behaviors=[snoop], isolation="workers") as h:
            a = await h.spawn("a", snoop, mark_a, domain="alice")
            await h.spawn("b", snoop, mark_b, domain="bob")
            await h.spawn("a2", snoop, b"x", domain="alice")  # alice's other machine
            await h.idle()
            net = h.network
            key = {n: net.keys[net.names[n]][0] for n in ("a", "b")}
            mask = os.urandom(32)
            masked = tuple(bytes(x ^ y for x, y in zip(n, mask, strict=False))
                           for n in (key["b"], mark_b, key["a"], mark_a))
            await h.send(a, ("search", (mask, masked)))
            await h.idle()
            return await h.state("a")

    s = run(go())
    b_key, b_state, a_key, a_state = s["found"]
    assert (a_key, a_state) == (True, True)  # the search works: it sees its own
    assert (b_key, b_state) == (False, False)  # and finds nothing of bob's
    assert s["pid"] != os.getpid()


def test_runaway_steps_time_out_while_another_domain_keeps_counting():
    async def go():
        async with avm.host.open(None, behaviors=[counter, loop, hog], isolation="workers",
                                 step_seconds=2.0, step_memory_bytes=400 << 20) as h:
            c = await h.spawn("c", counter, 0, domain="bob")
            spin = await h.spawn("spin", loop, 0, domain="mallory")
            eat = await h.spawn("eat", hog, 0, domain="eve")
            await h.idle()
            bob = h._pool.workers["bob"].proc.pid
            for cap, what in ((spin, "spin"), (eat, "eat")):
                with pytest.raises(avm.host.AskFailed) as e:
                    await h.ask(cap, lambda r, what=what: what)
                assert e.value.failure.rule == "timeout", e.value.failure
                assert ("memory" in e.value.failure.detail) == (what == "eat")
                await h.send(c, ("add", 1))
            assert await h.ask(c, "get") == ("count", 2)
            assert h._pool.workers["bob"].proc.pid == bob  # bob's worker was not touched
            assert h._pool.counters["killed"] == 2
            assert "mallory" not in h._pool.workers and "eve" not in h._pool.workers
            await h.send(spin, "fine")  # a runaway domain gets a new worker and runs again
            await h.idle()
            assert "mallory" in h._pool.workers

    run(go())


def test_a_lying_worker_is_caught_by_the_recheck():
    async def go():
        async with avm.host.open(None, behaviors=[vault], isolation="workers") as h:
            v = await h.spawn("v", vault, 1, domain="alice")
            await h.idle()
            before = await h.state("v")
            h._pool.close()
            h._pool.target = lying_serve  # alice's next worker copies what it received
            with pytest.raises(avm.host.AskFailed) as e:
                await h.ask(v, lambda r: ("touch", 0))
            assert e.value.failure.rule == "substructural"
            assert e.value.failure.error_type == "recheck"
            assert "copied" in e.value.failure.detail
            assert encode(await h.state("v")) == encode(before)  # nothing applied
            return h._pool.counters["rejected"]

    assert run(go()) == 1


def test_recheck_refuses_forged_answers():
    class Net:  # what recheck reads of the network
        keys = Map()

    tok = Linear("gold")
    state = Map({"t": tok})
    msgs = [Message("ctx", ("touch", 0))]
    addr = b"\x01" * 32
    honest = encode(("ok", state, (), 1, ((encode(tok), (1,), 0),)))
    assert recheck(Net, addr, state, msgs, honest).ok
    # A second equal token the report calls new is what a step may do (it mints one):
    minted = encode(("ok", Map({"t": tok, "u": tok}), (), 1, ((encode(tok), (1,), 1),)))
    assert recheck(Net, addr, state, msgs, minted).ok
    forged = [
        b"\xff not cbor",
        encode(("ok", state, (), 1, ())),  # leaves the token out of the report
        encode(("ok", Map({"t": tok, "u": tok}), (), 1, ((encode(tok), (2,), 0),))),
        encode(("ok", Map(), (), 1, ((encode(tok), (0,), 0),))),  # dropped
        encode(("ok", Map(), (), 1, ((encode(tok), (1,), 0),))),  # claims a kept one
        encode(("ok", state, ((1, 2),), 1, ((encode(tok), (1,), 0),))),
        encode(("maybe",)),
    ]
    for blob in forged:
        r = recheck(Net, addr, state, msgs, blob)
        assert not r.ok and r.failure.error_type == "recheck", blob
    # A failure names only rules the host knows, and the worker does not count the steps.
    r = recheck(Net, addr, state, msgs, encode(("fail", "made-up", "x" * 5000, 99, "E", "")))
    assert r.failure.rule == "internal" and len(r.failure.detail) <= 1000
    assert r.failure.index is None
    r = recheck(Net, addr, state, msgs, encode(("ok", state, (), 10**9, ((encode(tok), (1,), 0),))))
    assert r.ok and r.steps == len(msgs)


def _mover(msg, state):
    """Moves tokens between the state and new tokens, by the message's instructions."""
    op = msg.content
    toks = state
    if op == "mint":
        return [], (*toks, Linear(("t", len(toks))))
    if op == "swap" and toks:
        return [], (*toks[1:], toks[0])
    if op == "keep":
        return [], toks
    return [], toks


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["mint", "swap", "keep"]), min_size=1, max_size=6),
       st.integers(0, 3))
def test_recheck_accepts_what_run_batch_accepts(ops, n0):
    """An honest worker's answer is never refused: the recheck changes no result."""
    state = tuple(Linear(("s", i)) for i in range(n0))
    msgs = [Message("ctx", op) for op in ops]
    direct = run_batch(_mover, state, msgs)
    blob = isolation._answer(
        __import__("pickle").dumps(("m", b"\x01" * 32, {}, encode(state),
                                    encode(tuple(tuple(m) for m in msgs)), False)),
        {"m": _mover})

    class Net:
        keys = Map()

    r = recheck(Net, b"\x01" * 32, state, msgs, blob)
    assert r.ok == direct.ok
    assert encode(r.state) == encode(direct.state)


def test_domains_are_kept_in_the_store(tmp_path):
    path = tmp_path / "h.avm"

    async def first():
        async with avm.host.open(path, behaviors=[counter]) as h:
            await h.spawn("a", counter, 0, domain="alice")
            await h.spawn("b", counter, 0)
            return h.address("a")

    a = run(first())

    async def second():
        async with avm.host.open(path, behaviors=[counter], isolation="workers") as h:
            assert h._pool.domain_of(a) == "alice"
            assert h._pool.domain_of(h.address("b")) == isolation.DEFAULT_DOMAIN
            cap = h.cap("a")
            await h.send(cap, ("add", 5))
            return await h.ask(cap, "get"), set(h._pool.workers)

    got, domains = run(second())
    assert got == ("count", 5) and domains == {"alice"}


@pytest.mark.parametrize("isolation_mode", ["inline", "workers"])
def test_a_machine_made_by_a_spawner_joins_the_askers_domain(tmp_path, isolation_mode):
    """Issue 7 item 3: a spawned child runs with its maker's owner, never in "default"
    (where it would share a worker with other owners' machines)."""
    path = tmp_path / "h.avm"

    async def first():
        async with avm.host.open(path, behaviors=[maker, counter],
                                 isolation=isolation_mode) as h:
            sp, _revoke = await h.spawner(["counter"])
            m = await h.spawn("maker", maker, env={"spawner": sp}, domain="alice")
            plain = await h.spawn("plain", maker, env={"spawner": sp})
            await h.send(m, ("make", 41))
            await h.send(plain, ("make", 1))
            assert await h.ask(m, "ask") == ("count", 42)
            assert await h.ask(plain, "ask") == ("count", 2)
            kids = {m.name for m in h.machines() if m.name.startswith("counter~")}
            assert len(kids) == 2
            if isolation_mode == "workers":
                # alice's child ran in alice's worker, the other one in the default one
                assert set(h._pool.workers) == {"alice", isolation.DEFAULT_DOMAIN}
            return {n: h._rt.domains.get(h.address(n)) for n in kids}

    doms = run(first())
    assert sorted(doms.values(), key=str) == [None, "alice"]

    async def second():
        async with avm.host.open(path, behaviors=[maker, counter], isolation="workers") as h:
            return {n: h._pool.domain_of(h.address(n)) for n in doms}

    assert run(second()) == {n: d or isolation.DEFAULT_DOMAIN for n, d in doms.items()}


def test_bad_arguments_are_refused():
    with pytest.raises(avm.UsageError):
        avm.host.open(None, isolation="threads")
    with pytest.raises(avm.UsageError):
        Pool({"f": lambda m, s: ([], s)})  # not importable by reference
    with pytest.raises(avm.UsageError):
        Pool({}, seconds=0)

    async def go():
        async with avm.host.open(None, behaviors=[counter]) as h:
            with pytest.raises(avm.UsageError):
                await h.spawn("x", counter, 0, domain="")

    run(go())


assert core_machine.run_batch is run_batch  # the worker runs the core's own function


WORD = '''
import avm, os
behavior = avm.Behavior("counter")

@behavior.on("add")
def _add(count, n):
    return [], count + STEP * n

@behavior.on("get")
def _get(count, reply):
    return [(reply, ("count", count))], count

@behavior.on("pid")
def _pid(count, reply):
    return [(reply, ("pid", os.getpid()))], count
'''


def test_dictionary_words_run_in_the_domains_worker_never_in_the_host(tmp_path):
    """Issue 9 item 2: "Code from the dictionary runs under the host's isolation rules".
    A word's code (top level included) runs in the machine's domain's worker; a word
    that raises at load is refused in the worker, before any rebind; a reopened host
    loads the bound version into the workers from the store."""
    path = tmp_path / "h.avm"
    marker = tmp_path / "loaded-in"
    probe = WORD + f"\nopen({str(marker)!r}, 'a').write(str(os.getpid()) + '\\n')\n"

    async def first():
        async with avm.host.open(path, behaviors=[counter], isolation="workers") as h:
            cap = await h.spawn("c", counter, 0, domain="alice")
            await h.send(cap, ("add", 1))
            h.live.dictionary.edit("main", "counter", probe.replace("STEP", "2"))
            await h.live.bind("c", "counter")
            await h.send(cap, ("add", 1))
            got = await h.ask(cap, "get")
            pid = (await h.ask(cap, "pid"))[1]
            with pytest.raises(avm.AvmError, match="failed to load"):
                await h.live.edit("main", "counter", "raise RuntimeError('at import')\n")
            await h.send(cap, ("add", 1))
            after = await h.ask(cap, "get")
            return got, pid, isolation.pid_of(h._pool, "alice"), after

    got, pid, alice_pid, after = run(first())
    assert got == ("count", 3) and after == ("count", 5)  # counted by two, state kept
    assert pid == alice_pid != os.getpid()
    loaders = {int(x) for x in marker.read_text().split()}
    assert os.getpid() not in loaders and alice_pid in loaders

    async def second():
        async with avm.host.open(path, behaviors=[counter], isolation="workers") as h:
            cap = h.cap("c")
            await h.send(cap, ("add", 10))
            return await h.ask(cap, "get"), isolation.pid_of(h._pool, "alice")

    got2, pid2 = run(second())
    assert got2 == ("count", 25)
    loaders = {int(x) for x in marker.read_text().split()}
    assert os.getpid() not in loaders and pid2 in loaders
