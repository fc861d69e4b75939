"""The lean ask path of the HTTP API (avm.host.http._FastAsk) answers exactly as the
documented FastAPI route does, and hands FastAPI everything it does not take exactly.

Each case is asked twice: through the server (which answers asks on the lean path) and
through the FastAPI application alone (the route as documented); the answers match.
"""

from __future__ import annotations

import asyncio
import json

import httpx

import avm
import avm.host
from avm import Map
from avm.host import http as hh

keeper = avm.Behavior("http.fastask.keeper")


@keeper.init
def _init(state, args):
    return [], Map({"n": 0})


@keeper.on("get")
def _get(state, reply):
    return [(reply, ("n", state["n"]))], state


@keeper.on("boom")
def _boom(state, reply):
    raise ValueError("boom")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def _cases(admin: str, read: str) -> list[tuple[str, dict, bytes]]:
    j = {"Content-Type": "application/json"}
    a = {**j, "Authorization": "Bearer " + admin}

    def body(**kw) -> bytes:
        return json.dumps(kw).encode()

    return [
        ("/machines/k/ask", a, body(content='"get"')),
        ("/machines/k/ask", {**a, "Authorization": "bearer " + admin}, body(content='("get",)')),
        ("/machines/k/ask", a, body(content='"get"', timeout=5, client="c1", context="None")),
        ("/machines/k/ask", a, body(content='"get"', timeout="5")),  # coerced by pydantic
        ("/machines/k/ask", a, body(content='"get"', timeout=0)),  # refused: 422
        ("/machines/k/ask", a, body(content='"get"', timeout=True)),
        ("/machines/k/ask", a, body(content=1)),
        ("/machines/k/ask", a, body(content='"get"', extra=1)),
        ("/machines/k/ask", a, body()),
        ("/machines/k/ask", a, b"{not json"),
        ("/machines/k/ask", a, b"[1]"),
        ("/machines/k/ask", a, body(content="1")),  # not a tuple or a str: 400
        ("/machines/k/ask", a, body(content='"boom"')),  # the request fails: 422
        ("/machines/k/ask", a, body(content='("get"')),  # not a literal: 400
        ("/machines/nobody/ask", a, body(content='"get"')),  # 404
        ("/machines/~replies/ask", a, body(content='"get"')),
        ("/machines/k/ask", {**j, "Authorization": "Bearer " + read}, body(content='"get"')),
        ("/machines/k/ask", j, body(content='"get"')),
        ("/machines/k/ask", {**j, "Authorization": "Bearer " + admin[:-1] + "0"},
         body(content='"get"')),
        ("/machines/k/ask", {"Authorization": "Bearer " + admin}, body(content='"get"')),
        ("/machines/k/ask", {**a, "Content-Type": "text/plain"}, body(content='"get"')),
        ("/machines/k/ask", a, body(content='"get"', pad="x" * (hh.FAST_ASK_BODY_BYTES_MAX + 1))),
    ]


def test_the_lean_path_answers_as_the_route_does(tmp_path, monkeypatch):
    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[keeper],
                                 durability="normal") as h:
            await h.spawn("k", keeper, None)
            async with hh.serve(h) as api:
                fast_calls = []
                real = api.app.state.ask

                async def counted(*a):
                    fast_calls.append(a)
                    return await real(*a)

                cases = _cases(api.tokens.admin, api.tokens.read)
                served, direct = [], []
                async with httpx.AsyncClient(base_url=api.url) as c:
                    for path, headers, content in cases:
                        r = await c.post(path, headers=headers, content=content)
                        served.append((r.status_code, r.json()))
                fast = hh._FastAsk(api.app)
                fast.ask = counted
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app),
                                             base_url="http://t") as c:
                    for path, headers, content in cases:
                        r = await c.post(path, headers=headers, content=content)
                        direct.append((r.status_code, r.json()))
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fast),
                                             base_url="http://t") as c:
                    again = []
                    for path, headers, content in cases:
                        r = await c.post(path, headers=headers, content=content)
                        again.append((r.status_code, r.json()))
                doc = json.loads((await httpx.AsyncClient(base_url=api.url).get(
                    "/openapi.json")).text)
        return cases, served, direct, again, fast_calls, doc

    cases, served, direct, again, fast_calls, doc = run(go())
    assert served == direct == again
    statuses = [s for s, _ in served]
    assert statuses[:4] == [200, 200, 200, 200]
    assert served[0][1]["answer"] == ["n", 0]
    assert {401, 403, 404, 400, 422} <= set(statuses)
    # the lean path took the exact ones (and the errors after the ask began) only
    assert len(fast_calls) == 8
    assert "/machines/{name}/ask" in doc["paths"]
    assert "HTTPBearer" in json.dumps(doc["paths"]["/machines/{name}/ask"])


def test_other_routes_and_methods_pass_through(tmp_path):
    async def go():
        async with avm.host.open(None, behaviors=[keeper], durability="memory") as h:
            await h.spawn("k", keeper, None)
            async with hh.serve(h) as api:
                auth = {"Authorization": "Bearer " + api.tokens.admin}
                async with httpx.AsyncClient(base_url=api.url) as c:
                    return [(await c.get("/machines/k/ask", headers=auth)).status_code,
                            (await c.post("/machines/k/send", headers=auth,
                                          json={"content": '"get"'})).status_code,
                            (await c.post("/machines/k/x/ask", headers=auth,
                                          json={"content": '"get"'})).status_code]

    assert run(go()) == [405, 200, 404]
