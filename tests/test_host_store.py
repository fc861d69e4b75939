"""The host's store: what it loads is exactly what was committed (avm.host.store)."""

from __future__ import annotations

import importlib
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avm import Linear, Sim, encode
from avm.core.network import MachineRecord
from avm.core.values import replace_fields
from avm.host import store as s
from avm.host.store import Dirty, GroupCommitter, Store, StoreError, dirty_from_events

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = ("counter", "bank", "chat", "blog")


def _sim(example: str, seed: int, faults: str | None = None) -> Sim:
    mod = importlib.import_module(f"examples.{example}")
    sim = Sim(seed=seed, hosts=getattr(mod, "HOSTS", ("h0",)), faults=faults)
    importlib.import_module(f"examples.{example}").build(sim)
    return sim


def _same(a, b) -> bool:
    return encode(a) == encode(b)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(example=st.sampled_from(EXAMPLES), seed=st.integers(0, 50),
       faults=st.sampled_from([None, "all"]),
       groups=st.lists(st.integers(1, 7), min_size=1, max_size=60))
def test_load_gives_exactly_the_network_at_each_commit(tmp_path_factory, example, seed, faults,
                                                       groups):
    """Steps grouped into commits at arbitrary points: after each commit the store loads
    (in a fresh Store) the very network, byte for byte. This is what makes the rows the
    step events name (dirty_from_events) complete: a row missed here fails the test."""
    path = tmp_path_factory.mktemp("st") / "s.avm"
    sim = _sim(example, seed, faults)
    store = Store(path, "normal")
    store.write(sim.net, Dirty(everything=True))
    for n in groups:
        d = Dirty()
        for _ in range(n):
            dirty_from_events(sim.step(), d)
        store.write(sim.net, d)
        fresh = Store(path, "normal")
        assert _same(fresh.load(), sim.net)
        fresh.close()
    store.close()


def _linear_sim() -> Sim:
    """Failures, linear values, random answers and dead letters, all on one host."""
    import avm

    b = avm.Behavior("keeper")

    @b.init
    def init(state, args):
        return [], avm.Map({"n": 0, "me": None, "tok": None})

    @b.signal("self")
    def got_self(state, me):
        return [], state.set("me", me)

    @b.signal("env")
    def got_env(state, env):
        return [(env["random"], (state["me"]("rnd"), 4))], state

    @b.on("random")
    def rnd(state, data):
        return [], state.set("n", state["n"] + 1)

    @b.on("take")
    def take(state, tok):
        return [], state.set("tok", tok)

    @b.on("boom")
    def boom(state):
        raise ValueError("boom")

    sim = Sim(seed=3)
    sim.spawn("k", b)
    sim.run()
    c = sim.cap("k", "main")
    sim.submit([(c, ("take", Linear("coin")))])
    sim.submit([(c, ("boom",))])
    sim.submit([(c, ("boom",)), (c, ("take", Linear("other")))])  # fails: goes to dead letters
    return sim


def test_failures_linear_values_and_dead_letters_round_trip(tmp_path):
    path = tmp_path / "s.avm"
    sim = _linear_sim()
    store = Store(path)
    store.write(sim.net, Dirty(everything=True))
    while True:
        d = Dirty()
        evs = sim.step()
        dirty_from_events(evs, d)
        store.write(sim.net, d)
        if len(evs) == 1 and type(evs[0]).__name__ == "Idle":
            break
    loaded = Store(path).load()
    assert _same(loaded, sim.net)
    assert loaded.machines[sim.address("k")].state["n"] == 1
    assert [f[4] for f in store.failures()] == ["exception", "exception"]
    assert sim.net.dead_letters  # the second batch's linear coin had nowhere to go


def test_a_stored_self_is_bound_again_when_loaded(tmp_path):
    path = tmp_path / "s.avm"
    sim = _linear_sim()
    sim.run()
    Store(path).write(sim.net, Dirty(everything=True))
    me = Store(path).load().machines[sim.address("k")].state["me"]
    assert me._key is not None  # it can make capabilities again
    assert me("x").address == sim.address("k")


def test_a_state_that_does_not_round_trip_never_commits(tmp_path, monkeypatch):
    path = tmp_path / "s.avm"
    sim = _sim("counter", 1)
    sim.run()
    store = Store(path)
    store.write(sim.net, Dirty(everything=True))
    addr = sim.address("counter")
    m = sim.net.machines[addr]
    bad = tuple.__new__(MachineRecord, (m.name, [1, 2], *tuple(m)[2:]))  # a list: not a value
    net = replace_fields(sim.net, machines=sim.net.machines._set_plain(addr, bad))
    with pytest.raises(StoreError, match="refusing to commit"):
        store.write(net, Dirty(machines={addr}))
    assert Store(path).load().machines[addr].state == 6
    # An encoding that does not decode back is refused the same way.
    monkeypatch.setattr(s, "decode", lambda b: (_ for _ in ()).throw(s.AvmError("no")))
    with pytest.raises(StoreError):
        store.write(sim.net, Dirty(machines={addr}))


def test_keys_are_apart_from_states_in_a_0600_file(tmp_path):
    path = tmp_path / "s.avm"
    sim = _sim("counter", 1)
    sim.run()
    store = Store(path)
    store.write(sim.net, Dirty(everything=True))
    key_file = Path(str(path) + ".keys")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    main_bytes = b"".join(p.read_bytes() for p in tmp_path.iterdir()
                          if not p.name.startswith("s.avm.keys"))
    secrets = [sim.net.secret] + [k for vs in sim.net.keys.values() for k in vs.values()]
    assert secrets and all(k not in main_bytes for k in secrets)
    store.close()
    all_key_bytes = b"".join(p.read_bytes() for p in tmp_path.iterdir()
                             if p.name.startswith("s.avm.keys"))
    assert all(k in all_key_bytes for k in secrets)


def test_a_version_1_store_is_migrated(tmp_path):
    for name in ("store_v1.avm", "store_v1.avm.keys"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    path = tmp_path / "store_v1.avm"
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == 1
    db.close()
    store = Store(path)
    assert store.schema_version() == s.SCHEMA_VERSION == 2
    net = store.load()
    sim = _sim("counter", 1)
    sim.run()
    assert _same(net, sim.net)
    # the tables version 2 added work
    d = Dirty(history=[(1, ("a", "b"), 1, b"x", True, 1, False)])
    store.write(net, d)
    assert len(store.history()) == 1
    assert s.check(path).ok


def test_stores_from_the_future_and_other_files_are_refused(tmp_path):
    path = tmp_path / "s.avm"
    Store(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value=99 WHERE key='schema_version'")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)
    other = tmp_path / "o.db"
    db = sqlite3.connect(other)
    with db:
        db.execute("CREATE TABLE meta (key TEXT, value BLOB)")
    db.close()
    with pytest.raises(StoreError, match="not an avm store"):
        Store(other)
    with pytest.raises(StoreError):
        Store(tmp_path / "x.avm", "memory")
    with pytest.raises(StoreError):
        Store(tmp_path / "x.avm", "fsync-sometimes")


def test_backup_and_check(tmp_path):
    path = tmp_path / "s.avm"
    sim = _sim("bank", 2)
    sim.run()
    store = Store(path)
    store.write(sim.net, Dirty(everything=True))
    s.backup(path, tmp_path / "b.avm")  # while the store is open
    with pytest.raises(StoreError, match="exists"):
        s.backup(path, tmp_path / "b.avm")
    assert stat.S_IMODE(os.stat(tmp_path / "b.avm.keys").st_mode) == 0o600
    assert _same(Store(tmp_path / "b.avm").load(), sim.net)
    report = s.check(tmp_path / "b.avm")
    assert report.ok and report.machines == len(sim.net.machines) and report.integrity == "ok"
    # a state that no longer decodes is found
    db = sqlite3.connect(tmp_path / "b.avm")
    with db:
        db.execute("UPDATE machines SET state = x'ff00' WHERE rowid = (SELECT min(rowid) FROM machines)")
    db.close()
    report = s.check(tmp_path / "b.avm")
    assert not report.ok and any("does not decode" in p for p in report.problems)
    with pytest.raises(StoreError):
        Store(tmp_path / "b.avm").load()


def test_group_commit_coalesces_and_acknowledges_after_commit(tmp_path):
    path = tmp_path / "s.avm"
    sim = _sim("chat", 4)
    store = Store(path, "normal")
    gc = GroupCommitter(store)
    futs = [gc.submit(sim.net, Dirty(everything=True))]
    while True:
        d = Dirty()
        evs = sim.step()
        dirty_from_events(evs, d)
        futs.append(gc.submit(sim.net, d))
        if type(evs[0]).__name__ == "Idle":
            break
    for f in futs:
        f.result(timeout=30)
    gc.close()
    assert sum(gc.group_sizes) == len(futs)
    assert store.commits == len(gc.group_sizes) <= len(futs)
    assert _same(Store(path).load(), sim.net)


def test_after_a_failed_commit_nothing_more_commits(tmp_path, monkeypatch):
    path = tmp_path / "s.avm"
    sim = _sim("counter", 1)
    store = Store(path)
    gc = GroupCommitter(store)
    gc.submit(sim.net, Dirty(everything=True)).result(timeout=30)

    def fail(net, dirty):
        raise StoreError("disk full")

    monkeypatch.setattr(store, "write", fail)
    f1 = gc.submit(sim.net, Dirty(machines=set(sim.net.machines)))
    with pytest.raises(StoreError, match="disk full"):
        f1.result(timeout=30)
    monkeypatch.undo()
    with pytest.raises(StoreError, match="disk full"):
        gc.submit(sim.net, Dirty()).result(timeout=30)
    gc.close()


def test_memory_mode_writes_nothing(tmp_path):
    store = Store(None, "memory")
    sim = _sim("counter", 1)
    store.write(sim.net, Dirty(everything=True))
    assert store.load() is None and not store.durable and store.commits == 1


def test_cli_store_check_and_backup(tmp_path, capsys):
    from avm.cli import main

    path = tmp_path / "s.avm"
    sim = _sim("counter", 1)
    sim.run()
    Store(path).write(sim.net, Dirty(everything=True))
    assert main(["store", "check", str(path)]) == 0
    assert "integrity ok" in capsys.readouterr().out
    assert main(["store", "backup", str(path), str(tmp_path / "b.avm")]) == 0
    assert main(["store", "check", str(tmp_path / "b.avm")]) == 0
    assert main(["store", "backup", str(path), str(tmp_path / "b.avm")]) == 2
    assert "exists" in capsys.readouterr().err
    db = sqlite3.connect(tmp_path / "b.avm")
    with db:
        db.execute("UPDATE machines SET state = x'ff'")
    db.close()
    assert main(["store", "check", str(tmp_path / "b.avm")]) == 1
    assert main(["store", "check", str(tmp_path / "nothing.avm")]) == 2
