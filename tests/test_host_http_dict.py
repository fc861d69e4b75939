"""The dictionary's HTTP routes: edit a word over HTTP and see a bound machine run it at
its next batch with its state kept; conflicts answer 409, code that does not compile
400, and a refused request changes nothing; roll back in one request."""

from __future__ import annotations

import asyncio

import httpx

import avm.host
from avm.host import http as hh

COUNTER = '''
import avm
behavior = avm.Behavior("counter")

@behavior.init
def _init(state, args):
    return [], 0

@behavior.on("tick")
def _tick(n):
    return [], n + STEP
'''


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_edit_bind_conflict_and_rollback_over_http(tmp_path):
    store = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(store) as h:
            d = h.live.dictionary
            d.edit("main", "counter", COUNTER.replace("STEP", "1"))
            h.behavior(d.load("main", "counter"), "boot")
            await h.spawn("c", "boot")
            async with hh.serve(h, token_file=hh.token_file_for(store)) as api:
                admin = {"Authorization": "Bearer " + api.tokens.admin}
                read = {"Authorization": "Bearer " + api.tokens.read}
                async with httpx.AsyncClient(base_url=api.url, headers=admin) as c:
                    r = await c.post("/machines/c/bind", json={"word": "counter"})
                    assert r.status_code == 200 and r.json()["behavior"].startswith("dict:")

                    async def tick_and_read() -> int:
                        await c.post("/machines/c/send", json={"content": '("tick",)'})
                        await h.idle()
                        return (await c.get("/machines/c/state")).json()["state"]

                    assert await tick_and_read() == 1
                    head = (await c.get("/dictionary/words/counter")).json()
                    r = await c.post("/dictionary/words/counter", json={
                        "source": COUNTER.replace("STEP", "2"), "expect": head["id"],
                        "author": "ann", "message": "by two"})
                    assert r.status_code == 200
                    assert await tick_and_read() == 3  # the new version, the state kept

                    stale = await c.post("/dictionary/words/counter", json={
                        "source": COUNTER.replace("STEP", "5"), "expect": head["id"]})
                    assert stale.status_code == 409 and "someone else" in stale.json()["detail"]
                    bad = await c.post("/dictionary/words/counter", json={"source": "def f(:\n"})
                    assert bad.status_code == 400 and "line 1" in bad.json()["detail"]
                    assert await tick_and_read() == 5  # neither refused edit took effect

                    r = await c.post("/machines/c/rollback")
                    assert r.status_code == 200
                    assert await tick_and_read() == 6  # version 1 again

                    hist = (await c.get("/dictionary/words/counter/history")).json()["versions"]
                    assert [v["message"] for v in hist][:1] == ["by two"]
                    diff = (await c.get("/dictionary/words/counter/diff")).json()["diff"]
                    assert "-    return [], n + 1" in diff and "+    return [], n + 2" in diff
                    b = (await c.get("/machines/c/binding")).json()
                    assert b["bound"] and not b["follows"]

                    await c.post("/dictionary/branches", json={"name": "dev"})
                    await c.post("/dictionary/words/counter", json={
                        "source": COUNTER.replace("STEP", "3"), "branch": "dev"})
                    await c.post("/dictionary/words/counter", json={
                        "source": COUNTER.replace("STEP", "4")})
                    r = await c.post("/dictionary/merge", json={"source": "dev"})
                    assert r.status_code == 409
                    (conflict,) = r.json()["conflicts"]
                    assert conflict["word"] == "counter" and "n + 3" in conflict["theirs"]
                    r = await c.post("/dictionary/words/counter", headers=read,
                                     json={"source": "x = 1\n"})
                    assert r.status_code == 403  # the read token changes nothing
                    assert "n + 4" in (await c.get("/dictionary/words/counter")).json()["source"]

    run(go())
