"""A debugger's single step (issue 9 item 4, "buttons to ... step"): ``Host.step``,
``POST /machines/{name}/step`` (admin token) and ``avm machine step NAME``. One batch of a
suspended machine runs, by the runtime's own loop, and the machine stays suspended."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import avm
import avm.host
from avm import Map
from avm.cli import main
from avm.host import http as hh

keeper = avm.Behavior("step.keeper")


@keeper.init
def _init(state, args):
    return [], Map({"n": 0})


@keeper.on("add")
def _add(state, k):
    return [], state.set("n", state["n"] + k)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _queue(h, name: str, *contents) -> None:
    """One batch per content (one submit each), queued for ``name``."""
    cap = h.cap(name)
    for c in contents:
        await h.submit([(cap, c)], client="t")


def test_step_runs_exactly_one_batch_and_leaves_the_machine_suspended(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[keeper]) as h:
            await h.spawn("k", keeper)
            await h.spawn("other", keeper)
            await h.idle()
            await h.suspend("k")
            await _queue(h, "k", ("add", 1), ("add", 10), ("add", "x"), ("add", 100))
            await h.idle()  # nothing runs: it is suspended
            assert (await h.state("k"))["n"] == 0
            ran = []
            for expect_n in (1, 11):
                e = await h.step("k")
                assert e.ok and e.steps == 1
                ran.append(e.seq)
                await h.idle()
                assert (await h.state("k"))["n"] == expect_n
                assert h.record("k").status == "suspended"
            e = await h.step("k")  # a failing batch is one batch too
            assert not e.ok and e.failure.rule == "exception"
            await h.idle()
            assert (await h.state("k"))["n"] == 11 and h.record("k").status == "suspended"
            assert ran == sorted(ran) and len(set(ran)) == 2  # in order, one each
            assert sum(1 for c in h._rt.net.live if c[1] == h.address("k")) == 1  # one left
            # the other machine was never held up
            await _queue(h, "other", ("add", 5))
            await h.idle()
            assert (await h.state("other"))["n"] == 5
            await h.resume("k")
            await h.idle()
            assert (await h.state("k"))["n"] == 111

    run(go())


def test_step_is_refused_unless_suspended_with_a_batch_queued_and_changes_nothing(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[keeper]) as h:
            await h.spawn("k", keeper)
            await h.idle()
            with pytest.raises(avm.UsageError, match="suspend it first"):
                await h.step("k")  # running
            await h.suspend("k")
            await _queue(h, "k", ("add", 1))
            await h.idle()
            await h.step("k")
            with pytest.raises(avm.UsageError, match="no batch queued"):
                await h.step("k")
            assert h.record("k").status == "suspended"
            assert (await h.state("k"))["n"] == 1
            with pytest.raises(avm.UnknownName):
                await h.step("nobody")

    run(go())


def test_step_route_needs_the_admin_token_and_answers_what_ran(tmp_path):
    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[keeper]) as h:
            await h.spawn("k", keeper)
            await h.idle()
            await h.suspend("k")
            await _queue(h, "k", ("add", 2), ("add", 3))
            await h.idle()
            async with hh.serve(h) as api, httpx.AsyncClient(base_url=api.url) as c:
                for headers, status in (({}, 401),
                                        ({"Authorization": "Bearer " + "0" * 64}, 401),
                                        ({"Authorization": "Bearer " + api.tokens.read}, 403)):
                    r = await c.post("/machines/k/step", headers=headers)
                    assert r.status_code == status, r.text
                await h.idle()
                assert (await h.state("k"))["n"] == 0  # refused: nothing ran
                admin = {"Authorization": "Bearer " + api.tokens.admin}
                r = await c.post("/machines/k/step", headers=admin)
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["ok"] and body["status"] == "suspended" and body["queued"] == 1
                assert body["sender"] == "client:t", body
                await h.idle()
                assert (await h.state("k"))["n"] == 2
                await c.post("/machines/k/resume", headers=admin)
                r = await c.post("/machines/k/step", headers=admin)
                assert r.status_code == 400 and "suspend it first" in r.json()["detail"]
                r = await c.post("/machines/nobody/step", headers=admin)
                assert r.status_code == 404

    run(go())


def test_avm_machine_step_on_a_live_host(tmp_path, capsys):
    store = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(store, behaviors=[keeper]) as h:
            await h.spawn("k", keeper)
            await h.idle()
            await h.suspend("k")
            await _queue(h, "k", ("add", 7), ("add", 8))
            await h.idle()
            async with hh.serve(h, token_file=hh.token_file_for(store)):
                code = await asyncio.to_thread(main, ["machine", "step", "k", "--store", str(store)])
                assert code == 0
                await h.idle()
                return (await h.state("k"))["n"], h.record("k").status

    n, status = run(go())
    assert (n, status) == (7, "suspended")
    out = capsys.readouterr().out
    assert "k: ran batch" in out and "committed" in out and "suspended, 1 queued" in out
