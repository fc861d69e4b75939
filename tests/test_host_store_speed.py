"""What makes the store's group commit cheap keeps it exact (avm.host.store):
multi-row statements, no rows for batches made and run between two commits, the
committed encodings of unchanged states reused, channel encodings shared in a commit."""

from __future__ import annotations

import importlib

from avm import Behavior, Sim, encode
from avm.core import network as nw
from avm.core.netvalue import quiescent
from avm.host import store as s
from avm.host.store import Dirty, Store, dirty_from_events


def _sim(example: str, seed: int) -> Sim:
    mod = importlib.import_module(f"examples.{example}")
    sim = Sim(seed=seed, hosts=getattr(mod, "HOSTS", ("h0",)))
    mod.build(sim)
    return sim


counter = Behavior("test.store_speed.counter")


@counter.init
def _init(state, args):
    return [], 0


@counter.otherwise
def _count(state, content):
    return [], state + content


def _counter_sim() -> Sim:
    sim = Sim(seed=1, record=False)
    sim.spawn("c", counter)
    sim.run()
    return sim


def test_a_large_group_loads_exactly_and_keeps_its_history_in_order(tmp_path):
    """Hundreds of steps in one commit cross every statement size of _many (256, 32,
    4, 1 rows); what loads is the network, byte for byte, and the history rows are the
    applied batches, newest first."""
    path = tmp_path / "s.avm"
    sim = _counter_sim()
    for _ in range(400):
        sim.send(sim.cap("c"), 1)
    store = Store(path, "normal")
    store.write(sim.net, Dirty(everything=True))
    d = Dirty()
    applied = []
    for _ in range(5000):
        evs = sim.step()
        dirty_from_events(evs, d)
        applied += [(e.chan, e.seq) for e in evs if type(e).__name__ == "Applied"]
        if quiescent(sim.net):
            break
    assert len(d.history) > 256 + 32 + 4 + 1  # every size is used
    store.write(sim.net, d)
    fresh = Store(path, "normal")
    assert encode(fresh.load()) == encode(sim.net)
    got = [(c, q) for _, c, q, *_ in fresh.history(limit=len(applied))]
    assert got == applied[::-1]
    fresh.close()
    store.close()


def test_batches_made_and_run_between_commits_leave_no_queue_rows(tmp_path, monkeypatch):
    path = tmp_path / "s.avm"
    sim = _counter_sim()
    store = Store(path, "normal")
    store.write(sim.net, Dirty(everything=True))
    d = Dirty()
    for _ in range(10):
        sim.net, evs = nw.submit(sim.net, [(sim.cap("c"), 1)], "client")
        dirty_from_events(evs, d)
    while not quiescent(sim.net):
        dirty_from_events(sim.step(), d)
    assert d.born and d.pending  # batches were made, and are gone again
    deletes: list = []
    real = s._many

    def spy(db, head, rows, tail=""):
        if head.startswith("DELETE FROM queue"):
            deletes.extend(rows)
        real(db, head, rows, tail)

    monkeypatch.setattr(s, "_many", spy)
    store.write(sim.net, d)
    assert deletes == []  # nothing of them had reached the store
    assert encode(Store(path, "normal").load()) == encode(sim.net)


def test_a_queued_batch_committed_earlier_is_deleted_when_it_runs(tmp_path):
    path = tmp_path / "s.avm"
    sim = _sim("counter", 1)
    store = Store(path, "normal")
    store.write(sim.net, Dirty(everything=True))  # the queued init batches are rows now
    assert store._db.execute("SELECT count(*) FROM queue").fetchone()[0] > 0
    d = Dirty()
    while not quiescent(sim.net):
        dirty_from_events(sim.step(), d)
    store.write(sim.net, d)
    assert store._db.execute("SELECT count(*) FROM queue").fetchone()[0] == 0
    assert encode(Store(path, "normal").load()) == encode(sim.net)


def test_an_unchanged_state_object_is_not_encoded_again_and_a_new_one_is(tmp_path,
                                                                         monkeypatch):
    path = tmp_path / "s.avm"
    sim = _sim("bank", 1)
    sim.run()
    store = Store(path, "normal")
    store.write(sim.net, Dirty(everything=True))
    addr = next(a for a, m in sim.net.machines.items() if type(m.state).__name__ == "Map")
    decoded: list = []
    real = s.decode
    monkeypatch.setattr(s, "decode", lambda b: decoded.append(b) or real(b))
    store.write(sim.net, Dirty(machines={addr}))
    assert decoded == []  # the committed encoding of this very object was reused
    m = sim.net.machines[addr]
    new = m.state.set("extra", 1)
    from avm.core.values import replace_fields
    net = replace_fields(sim.net, machines=sim.net.machines._set_plain(
        addr, replace_fields(m, state=new)))
    store.write(net, Dirty(machines={addr}))
    assert len(decoded) == 1  # a new state is encoded and checked
    assert encode(Store(path, "normal").load().machines[addr].state) == encode(new)


def test_only_text_and_byte_keys_share_an_encoding():
    """Equal keys share one encoding only where equal means the same bytes: 1, 1.0 and
    True are equal in Python and encode differently."""
    b = s._Blobs()
    assert b((b"a", ("host", "h0"))) == encode((b"a", ("host", "h0")))
    assert s._textual((b"a", ("~", "random", "h0")))
    for v in ((b"a", 1), (b"a", True), (b"a", 1.0), 1, (b"a", [1])):
        assert not s._textual(v)
    assert b((b"a", 1)) == encode((b"a", 1)) and b((b"a", True)) == encode((b"a", True))
    assert b((b"a", 1)) != b((b"a", True))


def test_the_header_joined_from_cached_fields_is_the_whole_encoding():
    """_HeaderCache joins its fields' encodings, each encoded again only when the field
    is another object: at every step of the examples under faults, the result is the
    header encoded whole, byte for byte."""
    cache = s._HeaderCache()
    assert cache.ok
    for example in ("counter", "bank", "chat", "blog"):
        mod = importlib.import_module(f"examples.{example}")
        sim = Sim(seed=3, hosts=getattr(mod, "HOSTS", ("h0",)), faults="all")
        mod.build(sim)
        for _ in range(150):
            sim.step()
            assert cache(sim.net) == s._header(sim.net)


cell = Behavior("test.store_speed.cell")


@cell.init
def _cell_init(state, n):
    return [], n


@cell.on("get")
def _cell_get(n, reply):
    return [(reply, ("n", n))], n


def test_spawn_many_commits_each_chunk_after_its_init_batches_ran(tmp_path, monkeypatch):
    """The init batches of a chunk run before the chunk is committed (Runtime.
    hold_commits), so none is ever written to the queue, and every machine is there
    (evicted, loaded on demand) with its initial state."""
    import asyncio

    import avm.host
    from avm.host import runtime

    monkeypatch.setattr(runtime, "CHUNK_STEPS", 8)  # the loop would commit every 8 steps
    queued: list = []
    real = s._many

    def spy(db, head, rows, tail=""):
        if head.startswith("INSERT OR REPLACE INTO queue"):
            queued.extend(rows)
        real(db, head, rows, tail)

    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[cell],
                                 durability="normal") as h:
            await h.idle()
            monkeypatch.setattr(s, "_many", spy)
            made = await h.spawn_many(cell, ((f"m{i}", i) for i in range(120)), chunk=50)
            monkeypatch.setattr(s, "_many", real)
            return made, [await h.ask(h.cap(f"m{i}"), "get") for i in (0, 49, 50, 119)]

    made, answers = asyncio.run(asyncio.wait_for(go(), 60))
    assert made == 120
    assert answers == [("n", 0), ("n", 49), ("n", 50), ("n", 119)]
    assert queued == []
