"""The host's web page is served by the host, ships in the package, and loads nothing
from anywhere else (avm.host.http_web). The browser tests are tests/test_web_browser.py."""

from __future__ import annotations

import asyncio
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest

import avm
import avm.host
from avm import Map
from avm.host import http as hh
from avm.host.http_web import CSP, WEB_DIR

ROOT = Path(__file__).resolve().parents[1]


def _get_all(paths):
    async def go():
        async with avm.host.open(None) as h, hh.serve(h) as api:
            async with httpx.AsyncClient(base_url=api.url) as c:
                return {p: await c.get(p) for p in paths}

    return asyncio.run(asyncio.wait_for(go(), 60))


def test_the_page_and_its_assets_are_served_without_a_token_with_a_strict_csp():
    assets = sorted(p.name for p in WEB_DIR.iterdir() if p.is_file())
    assert {"index.html", "app.js", "api.js", "tree.js", "code.js", "graph.js", "style.css"} <= set(assets)
    got = _get_all(["/", *(f"/ui/{a}" for a in assets), "/ui/nothing.js", "/ui/../http.py"])
    page = got["/"]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert "connect-src 'self'" in CSP and "default-src 'self'" in CSP
    for a in assets:
        r = got[f"/ui/{a}"]
        assert r.status_code == 200, a
        assert r.content == (WEB_DIR / a).read_bytes()
        assert r.headers["content-security-policy"] == CSP
    assert "javascript" in got["/ui/app.js"].headers["content-type"]
    assert got["/ui/nothing.js"].status_code == 404
    assert got["/ui/../http.py"].status_code == 404


def test_every_script_and_style_the_page_names_is_one_of_its_own_files():
    html = (WEB_DIR / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert refs
    for ref in refs:
        assert ref.startswith("/ui/"), ref
        assert (WEB_DIR / ref[4:]).is_file(), ref
    for js in WEB_DIR.glob("*.js"):
        for imp in re.findall(r'from "([^"]+)"', js.read_text()):
            assert imp.startswith("./") and (WEB_DIR / imp[2:]).is_file(), (js.name, imp)


def test_no_asset_names_an_address_outside_the_host():
    for f in WEB_DIR.iterdir():
        text = f.read_text()
        urls = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"')]*", text))
        urls -= {"http://www.w3.org/2000/svg"}  # the SVG namespace: a name, never fetched
        urls = {u for u in urls if not u.startswith("//") or "." in u.split("/")[2]}
        assert not urls, (f.name, urls)


def test_the_package_data_globs_ship_every_asset():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = cfg["tool"]["setuptools"]["package-data"]["avm"]
    for f in WEB_DIR.iterdir():
        rel = f"host/web/{f.name}"
        assert any(fnmatch(rel, g) for g in globs), rel


def test_the_page_is_in_the_openapi_document_and_the_assets_are_not_routes_of_it():
    got = _get_all(["/openapi.json"])
    paths = got["/openapi.json"].json()["paths"]
    assert "get" in paths["/"]
    assert not any(p.startswith("/ui") for p in paths)


# -- the machine list and the state tree, paged on the host (issue 9: 100,000 machines, a
# state of 100,000 entries; the page asks only for what it shows) -----------------------

lister_cell = avm.Behavior("web.lister.cell")
other_cell = avm.Behavior("web.lister.other")


@lister_cell.init
def _lc_init(state, args):
    return [], args


@lister_cell.on("add")
def _lc_add(n, k):
    return [], n + k


@other_cell.init
def _oc_init(state, args):
    return [], args


@other_cell.on("add")
def _oc_add(n, k):
    return [], n + k


@avm.record(name="tests.web.Point")
class Point:
    x: object
    y: object


def _reference(h, per, depths, prefix, match, status, sort, desc):
    rows = [m for m in h.machines(prefix)]
    if status:
        rows = [m for m in rows if m.status == status]
    f = match.lower()
    if f:
        rows = [m for m in rows if f in m.name.lower() or f in m.behavior.lower() or m.status == f]
    key = {"name": lambda m: m.name, "behavior": lambda m: m.behavior,
           "status": lambda m: m.status, "batches": lambda m: per.get(m.name, (0, 0))[0],
           "failures": lambda m: per.get(m.name, (0, 0))[1],
           "queued": lambda m: depths.get(m.name, 0)}[sort]
    rows.sort(key=lambda m: m.name)
    rows.sort(key=key, reverse=desc)
    return [m.name for m in rows]


def test_the_machine_list_is_filtered_sorted_and_paged_on_the_host_as_a_reference_would():
    from avm.host.http_state import MachineLister

    async def go():
        async with avm.host.open(None, behaviors=[lister_cell, other_cell]) as h:
            await h.spawn_many(lister_cell, ((f"a{i:02d}", 0) for i in range(25)))
            await h.spawn_many(other_cell, ((f"b{i:02d}", 0) for i in range(12)))
            for i in range(25):  # batches: a00 gets 0, a01 1, ... (a varied order)
                cap = h.cap(f"a{i:02d}")
                for _ in range((i * 7) % 5):
                    await h.send(cap, ("add", 1))
            await h.send(h.cap("b03"), ("add", "x"))  # a failure
            await h.idle()
            for n in ("a03", "b05", "b07"):
                await h.suspend(n)
            for _ in range(3):
                await h.send(h.cap("b05"), ("add", 1))  # queued: it is suspended
            await h.send(h.cap("b07"), ("add", 1))
            await h.stop("a10")
            await h.idle()
            lister = MachineLister(h)
            per = h.machine_stats()
            depths = {"b05": 3, "b07": 1}
            checked = 0
            for prefix in ("", "a", "b0"):
                for match, status in (("", None), ("", "suspended"), ("OTHER", None),
                                      ("1", None), ("stopped", None), ("zzz", None)):
                    for sort in ("name", "behavior", "status", "batches", "failures", "queued"):
                        for desc in (False, True):
                            want = _reference(h, per, depths, prefix, match, status, sort, desc)
                            for offset, limit in ((0, 1000), (0, 7), (7, 7), (35, 10)):
                                rows, matched, total = lister.page(prefix, match, status, sort,
                                                                   desc, offset, limit)
                                assert [r["name"] for r in rows] == want[offset:offset + limit], (
                                    prefix, match, status, sort, desc, offset)
                                assert matched == len(want)
                                assert total == len(h.machines(prefix))
                                checked += 1
            rows, _, _ = lister.page(sort="queued", desc=True, limit=2)
            assert [(r["name"], r["queued"]) for r in rows] == [("b05", 3), ("b07", 1)]
            rows, _, _ = lister.page(match="b03")
            assert rows[0]["failures"] == 1 and rows[0]["batches"] == 2  # its init, then that
            assert lister.info(h.machines("a04")[0])["batches"] == 1 + (4 * 7) % 5
            # a machine spawned later is listed (the sorted names are kept only while no
            # machine comes or goes)
            await h.spawn("a005", lister_cell, 0)
            assert [r["name"] for r in lister.page("a00")[0]] == ["a00", "a005"]
            await h.destroy("a005")
            assert [r["name"] for r in lister.page("a00")[0]] == ["a00"]
            return checked

    assert asyncio.run(asyncio.wait_for(go(), 60)) == 3 * 6 * 6 * 2 * 4


def test_the_machines_route_pages_and_refuses_bad_parameters():
    async def go():
        async with avm.host.open(None, behaviors=[lister_cell]) as h:
            await h.spawn_many(lister_cell, ((f"m{i:03d}", 0) for i in range(150)))
            async with hh.serve(h) as api:
                hd = {"Authorization": "Bearer " + api.tokens.read}
                async with httpx.AsyncClient(base_url=api.url, headers=hd) as c:
                    r = (await c.get("/machines", params={"offset": 100, "limit": 100})).json()
                    assert [m["name"] for m in r["machines"]] == [f"m{i:03d}" for i in range(100, 150)]
                    assert (r["matched"], r["total"], r["offset"]) == (150, 150, 100)
                    r = (await c.get("/machines", params={"match": "M14", "desc": "true"})).json()
                    assert [m["name"] for m in r["machines"]] == [f"m{i:03d}" for i in range(149, 139, -1)]
                    assert r["matched"] == 10
                    for bad in ({"sort": "rate"}, {"status": "sleeping"}, {"offset": -1},
                                {"limit": 0}, {"match": "x" * 201}):
                        assert (await c.get("/machines", params=bad)).status_code == 422, bad

    asyncio.run(asyncio.wait_for(go(), 60))


def test_the_state_tree_pages_every_child_once_with_paths_that_reach_them():
    from avm.host.http_state import tree_page
    from avm.host.literal import to_json
    from avm.host.valuepath import get_at

    big = Map({f"k{i:05d}": i for i in range(1_000)})
    state = Map({"n": 7, "big": big, "log": tuple(range(450)), "pt": Point(1, (2, 3)),
                 "small": Map({"a b": 1, 3: "three"}), "deep": (Map({"x": tuple(range(300))}),)})
    names = lambda a: None  # noqa: E731
    top = tree_page(state, "$", 0, 100, names)
    assert top["kind"] == "map" and top["lazy"] and top["size"] == 6 and top["next"] is None
    kids = {c["label"]: c for c in top["children"]}
    assert [c["label"] for c in top["children"]] == sorted(kids)
    assert kids["n"] == {"label": "n", "path": "n", "kind": "int", "size": None, "lazy": False,
                         "value": 7}
    assert kids["small"]["value"] == to_json(state["small"]) and not kids["small"]["lazy"]
    assert kids["pt"]["kind"] == "tests.web.Point" and kids["pt"]["value"]["fields"]["y"] == [2, 3]
    for lazy in ("big", "log", "deep"):
        assert kids[lazy]["lazy"] and kids[lazy]["value"] is None, lazy
    # page through each large container: every child once, in order, its path reaching it
    for path, want in (("big", list(big.items())), ("log", list(enumerate(state["log"]))),
                       ("deep[0].x", list(enumerate(state["deep"][0]["x"])))):
        seen, offset = [], 0
        while offset is not None:
            page = tree_page(state, path, offset, 128, names)
            assert page["path"] == path and page["size"] == len(want)
            for c in page["children"]:
                assert to_json(get_at(state, c["path"])) == c["value"]
                seen.append(c["value"])
            offset = page["next"]
        assert seen == [v for _, v in want]
    # a child's path, given back, is that child's own level
    deep = tree_page(state, kids["deep"]["path"], 0, 10, names)
    assert deep["children"][0]["path"] == "deep[0]" and deep["children"][0]["lazy"]
    odd = tree_page(state, "small", 0, 10, names)["children"]
    assert [to_json(get_at(state, c["path"])) for c in odd] == [c["value"] for c in odd]
    with pytest.raises(avm.UsageError):
        tree_page(state, "nothing.here", 0, 10, names)


def test_the_state_tree_route_shows_capabilities_opaque_and_needs_a_token():
    async def go():
        async with avm.host.open(None, behaviors=[lister_cell]) as h:
            await h.spawn("t", lister_cell, 0)
            secret = "the-context-is-a-secret"
            caps = tuple(h.cap("t", (secret, i)) for i in range(300))
            await h.spawn("holder", lister_cell, Map({"caps": caps, "one": caps[0]}))
            async with hh.serve(h) as api:
                async with httpx.AsyncClient(base_url=api.url) as c:
                    assert (await c.get("/machines/holder/state/tree")).status_code == 401
                    hd = {"Authorization": "Bearer " + api.tokens.read}
                    top = await c.get("/machines/holder/state/tree", headers=hd)
                    page = await c.get("/machines/holder/state/tree", headers=hd,
                                       params={"path": "caps", "offset": 250, "limit": 100})
                    bad = await c.get("/machines/holder/state/tree", headers=hd,
                                      params={"path": "caps[", "limit": 5})
                    nobody = await c.get("/machines/nobody/state/tree", headers=hd)
                    return top, page, bad, nobody

    top, page, bad, nobody = asyncio.run(asyncio.wait_for(go(), 60))
    assert top.status_code == 200 and page.status_code == 200
    assert "the-context-is-a-secret" not in top.text + page.text
    one = next(c for c in top.json()["children"] if c["label"] == "one")
    assert one["value"] == {"$cap": "t"}
    p = page.json()
    assert len(p["children"]) == 50 and p["next"] is None
    assert p["children"][0]["path"] == "caps[250]" and p["children"][0]["value"] == {"$cap": "t"}
    assert bad.status_code == 400 and nobody.status_code == 404


def test_every_view_has_a_screenshot_in_the_docs_and_the_readme_shows_them():
    readme = (ROOT / "README.md").read_text()
    web = (ROOT / "docs" / "web.md").read_text()
    for view in ("machines", "machine", "batches", "network", "dictionary"):
        png = ROOT / "docs" / "screenshots" / f"{view}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png  # made by the browser tests
        assert f"docs/screenshots/{view}.png" in readme, view
        assert f"screenshots/{view}.png" in web, view
