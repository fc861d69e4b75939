"""State edits (issue 9 item 3): one audited transaction through the core's value rules;
refused edits change nothing. Batch pages (history, failures, drops, dead letters) over
HTTP, and ``avm state get|edit|audit``."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import avm
import avm.host
from avm import Linear, Map
from avm.cli import main
from avm.core.errors import SubstructuralError, ValueRuleError
from avm.host import http as hh
from avm.host.state_cli import split_assignment
from avm.host.stateedit import ABSENT, StateConflict
from avm.host.valuepath import diff, format_path, get_at, parse_path, set_at

keeper = avm.Behavior("state.keeper")


@keeper.init
def _init(state, args):
    return [], Map({"n": 0, "log": (1, 2, 3), "acct": Map({"ann": Map({"limit": 50})})})


@keeper.on("add")
def _add(state, k):
    return [], state.set("n", state["n"] + k)


@keeper.on("fail")
def _fail(state):
    raise RuntimeError("asked to fail")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def audit_rows(path) -> list:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, who, machine, detail FROM audit ORDER BY id").fetchall()
    finally:
        db.close()


def test_edits_are_audited_and_refused_edits_change_nothing(tmp_path):
    path = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(path, behaviors=[keeper], clock=lambda: 1_700_000_000.0) as h:
            await h.spawn("k", keeper)
            e = await h.set_state("k", set=[("n", 5), ("acct.ann.limit", 100),
                                            ("acct.bob", Map({"limit": 1}))], who="ann")
            s = await h.state("k")
            assert s["n"] == 5 and s["acct"]["ann"]["limit"] == 100
            assert s["acct"]["bob"] == Map({"limit": 1})
            assert [(c.path, c.before, c.after) for c in e.changes] == [
                ("$.n", 0, 5), ("$.acct.ann.limit", 50, 100),
                ("$.acct.bob", ABSENT, Map({"limit": 1}))]
            assert e.at == 1_700_000_000_000 and e.who == "ann"
            rows = await h.audit("k")
            assert len(rows) == 1 and rows[0]["who"] == "ann" and rows[0]["at"] == e.at
            assert [(c.path, c.before, c.after) for c in rows[0]["changes"]] == [
                (c.path, c.before, c.after) for c in e.changes]

            before = await h.state("k")
            refused = [
                (ValueRuleError, dict(set=[("n", [1, 2])])),  # a list is not a value
                (avm.UsageError, dict(set=[("n", 6), ("log[7]", 1)])),  # no item 7: all or nothing
                (avm.UsageError, dict(set=[("n.deeper", 1)])),  # nothing inside an int
                (avm.UsageError, dict(set=[("n]", 1)])),  # not a path
                (StateConflict, dict(set=[("n", 9)], expect=[("n", 4)])),  # stale
                (SubstructuralError, dict(set=[("coin", Linear(1))])),  # minting a linear value
                (avm.UsageError, dict()),  # nothing to change
            ]
            for err, kw in refused:
                with pytest.raises(err):
                    await h.set_state("k", **kw, who="mallory")
                assert await h.state("k") is before
            assert len(await h.audit()) == 1  # none of them audited

            # a state edit between batches: a peek would start again from the committed
            # state there; here the machine simply goes on from the edited state
            await h.send(h.cap("k"), ("add", 1))
            await h.idle()
            assert (await h.state("k"))["n"] == 6
            await h.set_state("k", Map({"n": 0}), who="ann")  # the whole value
            assert await h.state("k") == Map({"n": 0})
            assert await h.state_at("k", "$.n") == 0

    run(go())
    rows = audit_rows(path)
    assert [r[1:3] for r in rows] == [("ann", "k"), ("ann", "k")]
    assert rows[1][3].startswith("$ = ")


def test_linear_values_in_a_state_are_conserved_by_edits(tmp_path):
    holder = avm.Behavior("state.holder")

    @holder.on("take")
    def _take(state, coin):
        return [], Map({"coin": coin, "n": 0})

    async def go():
        async with avm.host.open(tmp_path / "h.avm", behaviors=[holder]) as h:
            await h.spawn("w", holder, None)
            await h.send(h.cap("w"), ("take", Linear(5)))
            await h.idle()
            s = await h.state("w")
            with pytest.raises(SubstructuralError):  # dropping the linear coin
                await h.set_state("w", set=[("coin", 0)])
            with pytest.raises(SubstructuralError):  # copying it
                await h.set_state("w", set=[("copy", s["coin"])])
            assert await h.state("w") is s
            await h.set_state("w", set=[("n", 7)])  # the coin stays where it was
            assert (await h.state("w"))["coin"] == Linear(5)

    run(go())


@st.composite
def segments(draw):
    kinds = st.one_of(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,5}", fullmatch=True).map(lambda k: ("name", k)),
        st.integers(0, 50).map(lambda i: ("key", i)),
        st.one_of(st.text(max_size=6), st.binary(max_size=4), st.booleans(), st.none(),
                  st.tuples(st.integers(), st.text(max_size=3))).map(lambda k: ("key", k)))
    return tuple(draw(st.lists(kinds, max_size=5)))


def _norm(segs):
    # a name and the text key of the same spelling are one segment
    return tuple(("key", v) if k == "name" else (k, v) for k, v in segs)


@given(segments())
def test_a_formatted_path_parses_back(segs):
    assert _norm(parse_path(format_path(segs))) == _norm(segs)


values = st.recursive(
    st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none(), st.booleans()),
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.dictionaries(st.sampled_from("abc"), inner, max_size=3).map(Map)),
    max_leaves=10)


def _paths(v, segs=()):
    yield segs
    if type(v) is Map:
        for k, x in v.items():
            yield from _paths(x, (*segs, ("key", k)))
    elif type(v) is tuple:
        for i, x in enumerate(v):
            yield from _paths(x, (*segs, ("key", i)))


@given(values, st.data())
def test_set_then_get_and_diff_name_exactly_the_change(v, data):
    segs = data.draw(st.sampled_from(list(_paths(v))))
    new = data.draw(st.integers(100, 200))  # differs from every leaf drawn above
    w = set_at(v, segs, new)
    assert get_at(w, format_path(segs)) == new
    assert diff(v, v) == ([], False)
    changes, cut = diff(v, w)
    assert not cut and changes == [(format_path(segs), get_at(v, segs), new)]


def test_split_assignment():
    assert split_assignment("a.b=5") == ("a.b", "5")
    assert split_assignment('["x=y"]="z=w"') == ('["x=y"]', '"z=w"')
    with pytest.raises(avm.UsageError, match="PATH=LITERAL"):
        split_assignment("nothing")


def test_state_and_batch_routes_over_http_and_the_cli(tmp_path, capsys):
    store = tmp_path / "h.avm"

    async def go():
        async with avm.host.open(store, behaviors=[keeper]) as h:
            await h.spawn("k", keeper)
            await h.spawn("other", keeper)
            for i in range(7):
                await h.send(h.cap("k"), ("add", i))
            await h.send(h.cap("other"), ("add", 1))
            await h.send(h.cap("k"), ("fail",))
            await h.stop("other")
            await h.send(h.cap("other"), ("take", Linear(3)))  # dropped: a dead letter
            await h.idle()
            async with hh.serve(h, token_file=hh.token_file_for(store)) as api:
                admin = {"Authorization": "Bearer " + api.tokens.admin}
                read = {"Authorization": "Bearer " + api.tokens.read}
                async with httpx.AsyncClient(base_url=api.url, headers=read) as c:
                    edit = {"set": [{"path": "n", "value": "100"}], "who": "ann"}
                    r = await c.post("/machines/k/state", json=edit)
                    assert r.status_code == 403
                    r = await c.post("/machines/k/state", json=edit, headers=admin)
                    assert r.status_code == 200, r.text
                    assert r.json()["changes"] == [{"path": "$.n", "before": 21, "after": 100}]
                    assert r.json()["who"].startswith("ann (http 127.0.0.1")
                    for bad, status in (({"set": [{"path": "n", "value": "[1]"}]}, 400),
                                        ({"set": [{"path": "log[9]", "value": "1"}]}, 400),
                                        ({"value": "(", "who": "x"}, 400),
                                        ({"set": [{"path": "n", "value": "1"}],
                                          "expect": [{"path": "n", "value": "5"}]}, 409)):
                        r = await c.post("/machines/k/state", json=bad, headers=admin)
                        assert r.status_code == status, (bad, r.text)
                    r = await c.get("/machines/k/state/at", params={"path": "acct.ann"})
                    assert r.json()["value"] == {"limit": 50}
                    assert (await c.get("/machines/k/state/at", params={"path": "n"})
                            ).json()["value"] == 100
                    r = await c.get("/machines/k/state/at", params={"path": "zz"})
                    assert r.status_code == 400
                    audit = (await c.get("/machines/k/audit")).json()
                    assert len(audit["rows"]) == 1 and audit["rows"][0]["who"].startswith("ann")
                    assert (await c.get("/audit")).json()["rows"] == audit["rows"]

                    # paging: the pages of 3 cover every row of k, newest first, once
                    got, before = [], None
                    while True:
                        params = {"machine": "k", "limit": 3}
                        if before is not None:
                            params["before"] = before
                        page = (await c.get("/batches/history", params=params)).json()
                        got += page["rows"]
                        before = page["next"]
                        if before is None:
                            break
                    whole = (await c.get("/batches/history", params={"limit": 1000})).json()
                    assert whole["next"] is None
                    assert got == [r for r in whole["rows"] if r["dest"] == "k"]
                    assert len(got) >= 8 and len({r["id"] for r in got}) == len(got)
                    assert [r["id"] for r in got] == sorted((r["id"] for r in got), reverse=True)
                    fails = (await c.get("/batches/failures", params={"machine": "k"})).json()
                    assert [f["rule"] for f in fails["rows"]] == ["exception"]
                    drops = (await c.get("/batches/drops")).json()["rows"]
                    assert [d["dest"] for d in drops] == ["other"]
                    letters = (await c.get("/batches/dead-letters")).json()
                    assert len(letters["rows"]) == 1
                    assert letters["rows"][0]["values"][0][1] == ["take", {"$linear": 3}]
                    assert (await c.get("/batches/history", params={"machine": "nobody"})
                            ).status_code == 404

                s = ["--store", str(store)]

                async def cli(*args):
                    rc = await asyncio.to_thread(main, [*args, *s])
                    return rc, capsys.readouterr()

                rc, out = await cli("state", "get", "k", "--path", "acct.ann", "--json")
                assert rc == 0 and json.loads(out.out) == {"limit": 50}
                rc, out = await cli("state", "edit", "k", "--set", "acct.ann.limit=75",
                                    "--expect", "acct.ann.limit=50", "--who", "bob")
                assert rc == 0 and "$.acct.ann.limit: 50 -> 75" in out.out
                rc, out = await cli("state", "edit", "k", "--set", "n=[1]")
                assert rc == 2 and "tuple" in out.err
                rc, out = await cli("state", "edit", "k", "--set", "n=1", "--expect", "n=3")
                assert rc == 2 and "409" in out.err
                rc, out = await cli("state", "edit", "k")
                assert rc == 2 and "nothing to change" in out.err
                rc, out = await cli("state", "get", "k")
                assert rc == 0 and "'n': 100" in out.out and "'limit': 75" in out.out
                rc, out = await cli("state", "audit", "k")
                assert rc == 0 and "bob" in out.out.splitlines()[0] and "ann" in out.out
                data = json.loads(hh.token_file_for(store).read_text())
                rc = await asyncio.to_thread(main, [
                    "state", "edit", "k", "--set", "n=1", "--url", data["url"],
                    "--token", data["read"]])
                assert rc == 2 and "admin token" in capsys.readouterr().err
            assert (await h.state("k"))["n"] == 100

    run(go())


def test_state_help(capsys):
    assert main(["state", "--help"]) == 0
    out = capsys.readouterr().out
    assert "get" in out and "edit" in out and "accounts.ann" in out
    assert main(["state", "get", "--help"]) == 0
    assert "--path" in capsys.readouterr().out
