"""Live events over Server-Sent Events (avm.host.http_events): GET /events.

A real uvicorn on 127.0.0.1 (any free port) and an httpx stream; every wait is on a
condition (an event read, a subscriber list emptied), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json

import httpx

import avm
import avm.host
from avm import Map
from avm.host import http as hh
from avm.host import http_events as he

keeper = avm.Behavior("events.keeper")


@keeper.init
def _init(state, args):
    return [], Map({"n": 0})


@keeper.on("add")
def _add(state, n):
    return [], state.set("n", state["n"] + n)


@keeper.on("boom")
def _boom(state):
    raise ValueError("boom on purpose")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _with_api(tmp_path, fn):
    async with avm.host.open(tmp_path / "h.avm", behaviors=[keeper], durability="normal") as h:
        await h.spawn("k", keeper, None)
        await h.spawn("j", keeper, None)
        await h.idle()
        async with hh.serve(h) as api:
            return await fn(h, api)


class Events:
    """Reads SSE frames from an httpx streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.seen: list[tuple[str, dict]] = []

    async def next(self) -> tuple[str, dict]:
        kind, data = None, None
        async for line in self.lines:
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and kind is not None:
                self.seen.append((kind, data))
                return kind, data
        raise EOFError("the stream ended")

    async def until(self, pred) -> tuple[str, dict]:
        while True:
            kind, data = await self.next()
            if pred(kind, data):
                return kind, data


def _auth(token):
    return {"Authorization": "Bearer " + token}


def test_events_need_a_token_and_take_the_read_token(tmp_path):
    async def go(h, api):
        async with httpx.AsyncClient(base_url=api.url) as c:
            none = await c.get("/events?limit=1")
            wrong = await c.get("/events?limit=1", headers=_auth("2" * 64))
            ok = await c.get("/events?limit=1", headers=_auth(api.tokens.read))
        return none.status_code, wrong.status_code, ok

    none, wrong, ok = run(_with_api(tmp_path, go))
    assert (none, wrong) == (401, 401)
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/event-stream")
    assert "event: hello" in ok.text and ok.text.count("event: ") == 1


def test_batches_failures_status_changes_and_counters_arrive_once_committed(tmp_path):
    async def go(h, api):
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as c, \
                c.stream("GET", "/events", headers=_auth(api.tokens.read)) as r:
            ev = Events(r)
            hello = await ev.next()
            assert hello[0] == "hello" and hello[1]["machines"] == 2
            await h.send(h.cap("k"), ("add", 5), client="tester")
            kind, b = await ev.until(lambda k, d: k == "batch" and d["machine"] == "k")
            # published only once committed: the committed network already holds it
            committed = h.network.machines[h.address("k")].state
            await h.send(h.cap("k"), ("boom",), client="tester")
            _, f = await ev.until(lambda k, d: k == "failure")
            await h.suspend("j")
            _, s = await ev.until(lambda k, d: k == "machine" and d["machine"] == "j")
            await h.resume("j")
            _, s2 = await ev.until(lambda k, d: k == "machine" and d["machine"] == "j")
            _, cn = await ev.until(lambda k, d: k == "counters" and d["batches"] > 0)
            return b, committed, f, s, s2, cn

    b, committed, f, s, s2, cn = run(_with_api(tmp_path, go))
    assert b["sender"] == "client:tester" and b["ok"] is True and b["behavior"] == "events.keeper"
    assert committed["n"] == 5
    assert f["machine"] == "k" and f["rule"] == "exception" and "boom on purpose" in f["detail"]
    assert (s["change"], s["status"], s["was"]) == ("status", "suspended", "running")
    assert (s2["status"], s2["was"]) == ("running", "suspended")
    edge = {(e["from"], e["to"]): e for e in cn["edges"]}
    assert ("client:tester", "k") in edge
    assert cn["totals"]["batches"] >= 2


def test_a_rebind_is_a_machine_event_with_the_new_behavior(tmp_path):
    word = ("import avm\nbehavior = avm.Behavior('w')\n\n@behavior.on('add')\n"
            "def _add(s, n):\n    return [], s.set('n', s['n'] + 2 * n)\n")

    async def go(h, api):
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as c, \
                c.stream("GET", "/events", headers=_auth(api.tokens.read)) as r:
            ev = Events(r)
            await ev.next()
            h.live.dictionary.edit("main", "double", word)
            await h.live.bind("k", "double")
            _, m = await ev.until(lambda k, d: k == "machine" and d["change"] == "behavior")
            await h.send(h.cap("k"), ("add", 3))
            _, b = await ev.until(lambda k, d: k == "batch" and d["machine"] == "k")
            return m, b, await h.state("k")

    m, b, state = run(_with_api(tmp_path, go))
    assert m["behavior"].startswith("dict:main/double@") and m["was"] == "events.keeper"
    assert b["behavior"] == m["behavior"]
    assert state["n"] == 6


def test_a_listener_that_does_not_read_misses_events_and_is_told_how_many(tmp_path):
    async def go(h, api):
        feed = he.Feed(h, counters_seconds=3600, queue_size=5)
        slow = feed.subscribe()
        assert h._rt.subscribers == [feed._on_events]
        cap = h.cap("k")
        for _ in range(20):
            await h.send(cap, ("add", 1))
        await h.idle()
        # the host ran everything although nobody read: wait for the feed to publish
        while len(slow.queue) < 5 or not slow.dropped:
            await asyncio.sleep(0.01)
        got = await slow.take()
        feed.unsubscribe(slow)
        return got, await h.state("k"), h._rt.subscribers, feed._task

    got, state, subscribers, task = run(_with_api(tmp_path, go))
    assert state["n"] == 20
    kinds = [k for k, _ in got]
    assert kinds[0] == "dropped" and got[0][1]["dropped"] >= 15  # 1 hello + 20 batches, 5 kept
    assert len(got) == 1 + 5
    assert subscribers == [] and task is None  # no listener: the runtime calls nobody


def test_listener_queue_is_bounded():
    async def go():
        q = he.Listener(size=3)
        for i in range(10):
            q.put(("batch", {"i": i}))
        first = await q.take()
        q.put(("batch", {"i": 10}))
        second = await q.take()
        empty = await q.take(timeout=0.01)
        q.close()
        closed = await q.take()
        return first, second, empty, closed

    first, second, empty, closed = run(go())
    assert first == [("dropped", {"dropped": 7}), *[("batch", {"i": i}) for i in range(3)]]
    assert second == [("batch", {"i": 10})]
    assert empty == [] and closed is None


def test_a_closed_stream_unsubscribes_and_stopping_ends_open_streams(tmp_path):
    async def go(h, api):
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as c:
            async with c.stream("GET", "/events", headers=_auth(api.tokens.read)) as r:
                await Events(r).next()
                assert len(h._rt.subscribers) == 1
            while h._rt.subscribers:  # the server noticed the disconnect
                await asyncio.sleep(0.01)
            r = await c.send(c.build_request("GET", "/events", headers=_auth(api.tokens.read)),
                             stream=True)
            ev = Events(r)
            await ev.next()
            t0 = asyncio.get_running_loop().time()
            await api.stop()  # must not wait for the endless stream
            took = asyncio.get_running_loop().time() - t0
            try:
                while True:
                    await ev.next()
            except (EOFError, httpx.HTTPError):
                pass
            await r.aclose()
            return took

    took = run(_with_api(tmp_path, go))  # (serve's own stop is then a no-op)
    assert took < 1.5  # uvicorn's graceful shutdown would wait 2 s for an open response


def test_sse_frame_is_one_json_line():
    frame = he.sse_frame("batch", {"a": "x\ny"}, 7).decode()
    assert frame == 'event: batch\nid: 7\ndata: {"a":"x\\ny"}\n\n'
