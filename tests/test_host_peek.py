"""Peek (issue 9 item 2): a machine's recent batches replayed against a new version of its
word, committing nothing, with per-batch differences of state and outputs."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3

import pytest

import avm
import avm.host
from avm import Map
from avm.host import isolation
from avm.host.dictionary import CompileError
from avm.host.peek import PeekRefused
from avm.host.store import REPLAY_PER_MACHINE_MAX

COUNTER = '''
import avm
behavior = avm.Behavior("counter")

@behavior.init
def _init(state, args):
    return [], avm.Map({"n": 0})

@behavior.on("tick")
def _tick(state):
    return [], state.set("n", state["n"] + STEP)

@behavior.on("get")
def _get(state, reply):
    return [(reply, ("n", state["n"]))], state
'''


def counter(step: int) -> str:
    return COUNTER.replace("STEP", str(step))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def bound_counter(h) -> None:
    d = h.live.dictionary
    d.edit("main", "counter", counter(1), author="ann")
    h.behavior(d.load("main", "counter"), "boot")
    await h.spawn("c", "boot")
    await h.live.bind("c", "counter")


def snapshot(path) -> dict:
    """Everything a peek must leave alone, read from the store file itself."""
    db = sqlite3.connect(path)
    try:
        q = {t: db.execute(f"SELECT count(*), max(id) FROM {t}").fetchone()  # noqa: S608
             for t in ("history", "replay", "failures", "drops", "dict_versions")}
        q["machines"] = db.execute("SELECT name, behavior, state FROM machines "
                                   "ORDER BY name").fetchall()
        q["queue"] = db.execute("SELECT count(*) FROM queue").fetchone()
        return q
    finally:
        db.close()


def test_peek_shows_a_counter_by_two_and_commits_nothing(tmp_path):
    path = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(path) as h:
            await bound_counter(h)
            for _ in range(3):
                await h.send(h.cap("c"), ("tick",))
            assert await h.ask(h.cap("c"), "get") == ("n", 3)
            await h.idle()
            state = await h.state("c")
            before = snapshot(path)

            report = await h.live.peek("c", counter(2), last=10)

            await h.flush()
            assert snapshot(path) == before  # no state, history, queue or version written
            assert await h.state("c") is state
            assert report.code == "source of counter (not stored)"
            assert [b.start for b in report.batches] == ["committed", "peek", "peek", "peek"]
            ticks, get = report.batches[:3], report.batches[3]
            # the new version's state carries: 2, 4, 6 where 1, 2, 3 were committed
            assert [b.state_changes for b in ticks] == [
                [("$.n", k, 2 * k)] for k in (1, 2, 3)]
            assert all(b.outputs_equal and not b.equal for b in ticks)
            # the ask's answer would have been ("n", 6)
            assert get.state_equal is False and get.outputs_equal is False
            assert [c for _, c in get.committed_outputs] == [("n", 3)]
            assert [c for _, c in get.peek_outputs] == [("n", 6)]
            assert get.outputs_changes == [("$[0][1][1]", 3, 6)]
            assert report.differ == 4
            j = report.to_json(lambda a: "c" if a == h.address("c") else None)
            assert j["batches"][3]["outputs"] == "differs"
            assert j["batches"][3]["changes"]["outputs"] == [
                {"path": "$[0][1][1]", "committed": 3, "peek": 6}]
            assert "$cap" in j["batches"][3]["peek_outputs"][0]["to"]  # opaque

            # the same code replays to exactly what was committed
            same = await h.live.peek("c", counter(1))
            assert same.differ == 0 and len(same.batches) == 4
            # and the machine still runs version 1
            await h.send(h.cap("c"), ("tick",))
            await h.idle()
            assert (await h.state("c"))["n"] == 4

    run(go())


def test_peek_a_stored_version_and_last(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "h.avm") as h:
            await bound_counter(h)
            for _ in range(5):
                await h.send(h.cap("c"), ("tick",))
            await h.idle()
            v3 = h.live.dictionary.edit("main", "counter", counter(3))  # not bound
            r = await h.live.peek("c", v3.id, last=2)
            assert r.code == f"version {v3.id} of counter"
            assert [b.state_changes for b in r.batches] == [[("$.n", 4, 6)], [("$.n", 5, 9)]]  # from 3: 6, 9
            assert r.batches[0].start == "committed"  # older batches not replayed
            assert (await h.state("c")) == Map({"n": 5})
            with pytest.raises(avm.UsageError, match="last is 1 to"):
                await h.live.peek("c", v3.id, last=REPLAY_PER_MACHINE_MAX + 1)

    run(go())


def test_peek_refuses_source_that_does_not_compile(tmp_path):
    path = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(path) as h:
            await bound_counter(h)
            await h.send(h.cap("c"), ("tick",))
            await h.idle()
            before = snapshot(path)
            with pytest.raises(CompileError, match=r"counter: .*\(line 2") as e:
                await h.live.peek("c", "x = 1\ndef broken(:\n")
            assert e.value.lineno == 2
            await h.flush()
            assert snapshot(path) == before

    run(go())


def test_a_failing_version_fails_its_batches_in_the_peek_only(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "h.avm") as h:
            await bound_counter(h)
            for _ in range(2):
                await h.send(h.cap("c"), ("tick",))
            await h.idle()
            bad = counter(1).replace('state["n"] + 1', 'state["nope"] + 1')
            r = await h.live.peek("c", bad)
            assert [b.peek_ok for b in r.batches] == [False, False]
            assert all("KeyError" in b.peek_failure or "nope" in b.peek_failure
                       for b in r.batches)
            # a failed batch commits nothing: the peek's state stays where it was
            assert [b.state_changes for b in r.batches] == [
                [("$.n", 1, 0)], [("$.n", 2, 0)]]
            assert (await h.state("c"))["n"] == 2

    run(go())


def test_replay_rows_are_bounded_per_machine(tmp_path):
    path = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(path) as h:
            await bound_counter(h)
            c = h.cap("c")
            for _ in range(REPLAY_PER_MACHINE_MAX + 8):
                await h.send(c, ("tick",))
            await h.submit([(c, ("tick",))] * 3)  # one batch of three messages
            await h.idle()
            r = await h.live.peek("c", counter(1), last=REPLAY_PER_MACHINE_MAX)
            assert len(r.batches) == REPLAY_PER_MACHINE_MAX and r.differ == 0
            await h.destroy("c")

    run(go())
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM replay").fetchone() == (0,)  # gone with it
    db.close()


boot = avm.Behavior("peek.boot")  # module level: isolated workers import it by reference


@boot.init
def _boot_init(state, args):
    return [], Map({"n": 0})


def test_peek_runs_in_the_machines_worker_with_isolated_workers(tmp_path):
    """With isolation="workers" the peeked code loads and runs in the machine's domain's
    worker, never in the host (its top level writes the pid of whoever runs it)."""
    marker = tmp_path / "ran-in"
    probe = counter(2) + f"\nimport os\nopen({str(marker)!r}, 'a').write(str(os.getpid()) + ' ')\n"

    async def go():
        async with avm.host.open(tmp_path / "w.avm", behaviors=[boot], isolation="workers") as h:
            await h.spawn("c", boot, domain="alice")
            h.live.dictionary.edit("main", "counter", counter(1))
            await h.live.bind("c", "counter")
            for _ in range(2):
                await h.send(h.cap("c"), ("tick",))
            await h.idle()
            r = await h.live.peek("c", probe)
            with pytest.raises(CompileError):
                await h.live.peek("c", "def (:\n")
            return r, await h.state("c"), isolation.pid_of(h._pool, "alice")

    r, state, alice = run(go())
    assert [b.state_changes for b in r.batches] == [[("$.n", 1, 2)], [("$.n", 2, 4)]]
    assert state == Map({"n": 2})
    ran = {int(x) for x in marker.read_text().split()}
    assert ran == {alice} and os.getpid() not in ran


def test_peek_is_refused_in_memory(tmp_path):
    async def go():
        async with avm.host.open(None) as h:
            with pytest.raises(PeekRefused, match="in-memory"):
                await h.live.peek("c", counter(2))

    run(go())


def test_peek_of_a_machine_never_bound(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "h.avm") as h:
            d = h.live.dictionary
            d.edit("main", "counter", counter(1))
            h.behavior(d.load("main", "counter"), "boot")
            await h.spawn("c", "boot")
            await h.send(h.cap("c"), ("tick",))
            await h.idle()
            with pytest.raises(PeekRefused, match="not bound to a word"):
                await h.live.peek("c", counter(2))
            r = await h.live.peek("c", counter(2), word="counter")
            assert r.batches == [] and "only batches that ran while it was bound" in r.note

    run(go())


def test_peek_over_http_needs_the_admin_token_and_the_cli(tmp_path, capsys):
    import httpx

    from avm.cli import main
    from avm.host import http as hh

    store = tmp_path / "h.avm"
    (tmp_path / "by2.py").write_text(counter(2))

    async def go():
        async with avm.host.open(store) as h:
            await bound_counter(h)
            for _ in range(2):
                await h.send(h.cap("c"), ("tick",))
            await h.idle()
            async with hh.serve(h, token_file=hh.token_file_for(store)) as api:
                body = {"source": counter(2), "last": 5}
                async with httpx.AsyncClient(base_url=api.url) as c:
                    read = {"Authorization": "Bearer " + api.tokens.read}
                    admin = {"Authorization": "Bearer " + api.tokens.admin}
                    r = await c.post("/machines/c/peek", json=body, headers=read)
                    assert r.status_code == 403  # it runs code: the read token may not
                    r = await c.post("/machines/c/peek", json=body)
                    assert r.status_code == 401
                    r = await c.post("/machines/c/peek", json=body, headers=admin)
                    assert r.status_code == 200, r.text
                    j = r.json()
                    assert (j["replayed"], j["differ"]) == (2, 2)
                    assert j["batches"][1]["changes"]["state"] == [
                        {"path": "$.n", "committed": 2, "peek": 4}]
                    r = await c.post("/machines/c/peek", json={"source": "def (:\n"},
                                     headers=admin)
                    assert r.status_code == 400 and r.json()["error"] == "CompileError"
                    assert "line 1" in r.json()["detail"]
                    r = await c.post("/machines/c/peek", json={}, headers=admin)
                    assert r.status_code == 400 and "either source" in r.json()["detail"]
                    r = await c.post("/machines/nobody/peek", json=body, headers=admin)
                    assert r.status_code == 404
                s = ["--store", str(store)]
                rc = await asyncio.to_thread(
                    main, ["dict", "peek", "c", str(tmp_path / "by2.py"), *s])
                out = capsys.readouterr().out
                assert rc == 0, out
                assert "2 batches replayed, 2 differ" in out
                assert "state $.n: 2 -> 4" in out
                v = h.live.dictionary.head("main", "counter").id
                rc = await asyncio.to_thread(
                    main, ["dict", "peek", "c", "--version", str(v), "--json", *s])
                assert rc == 0
                assert json.loads(capsys.readouterr().out)["differ"] == 0
                rc = await asyncio.to_thread(main, ["dict", "peek", "c", *s])
                assert rc == 2 and "--version" in capsys.readouterr().err
            assert await h.state("c") == Map({"n": 2})

    run(go())


def test_dict_peek_help(capsys):
    from avm.cli import main

    assert main(["dict", "peek", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--version" in out and "admin token" in out and "--url" in out


def test_after_a_state_edit_the_replay_starts_again_from_the_committed_state(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "h.avm") as h:
            await bound_counter(h)
            await h.send(h.cap("c"), ("tick",))
            await h.idle()
            await h.set_state("c", set=[("n", 10)], who="ann")
            await h.send(h.cap("c"), ("tick",))
            await h.idle()
            r = await h.live.peek("c", counter(2))
            assert [b.start for b in r.batches] == ["committed", "committed"]
            assert [b.state_changes for b in r.batches] == [[("$.n", 1, 2)], [("$.n", 11, 12)]]

    run(go())


def test_dict_bind_and_rollback_on_the_running_host(tmp_path, capsys):
    """``avm dict bind`` / ``rollback`` (issue 9 item 5) over the host's API: the machine
    counts by two from its next batch with its state kept, then by one again; a wrong
    token changes nothing."""
    from avm.cli import main
    from avm.host import http as hh

    store = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(store) as h:
            await bound_counter(h)
            await h.send(h.cap("c"), ("tick",))
            await h.idle()
            v2 = h.live.dictionary.edit("main", "by2", counter(2), author="ann").id
            async with hh.serve(h, token_file=hh.token_file_for(store)) as api:
                s = ["--store", str(store)]
                rc = await asyncio.to_thread(
                    main, ["dict", "bind", "c", "by2", "--url", api.url, "--token",
                           api.tokens.read])
                assert rc == 2 and "403" in capsys.readouterr().err
                assert h.live.bindings()["c"][1] == "counter"
                rc = await asyncio.to_thread(main, ["dict", "bind", "c", "by2", *s])
                assert rc == 0
                assert f"runs dict:main/by2@{v2}" in capsys.readouterr().out
                await h.send(h.cap("c"), ("tick",))
                await h.idle()
                assert (await h.state("c"))["n"] == 3  # 1 + 2: state kept, new code
                rc = await asyncio.to_thread(main, ["dict", "rollback", "c", "--json", *s])
                assert rc == 0
                assert json.loads(capsys.readouterr().out)["behavior"].startswith(
                    "dict:main/counter@")
                await h.send(h.cap("c"), ("tick",))
                await h.idle()
                assert (await h.state("c"))["n"] == 4
                rc = await asyncio.to_thread(main, ["dict", "bind", "c", "nope", *s])
                assert rc == 2 and "nope" in capsys.readouterr().err

    run(go())
