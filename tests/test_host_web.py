"""The host's web page is served by the host, ships in the package, and loads nothing
from anywhere else (avm.host.http_web). The browser tests are tests/test_web_browser.py."""

from __future__ import annotations

import asyncio
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import httpx

import avm.host
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
