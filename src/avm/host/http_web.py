"""The host's web page: ``GET /`` and its assets under ``/ui/`` (docs/web.md).

The page is plain HTML, CSS and JavaScript modules shipped inside the package
(``avm/host/web/``, package data: a wheel and an editable install both have them), with
no build step, and it loads nothing from anywhere but the host itself: its
``Content-Security-Policy`` allows only the page's own origin, so even a mistake in it
cannot fetch from the internet. The page needs no token to load; it asks for one (kept
in the tab's ``sessionStorage``) and sends it to the API like any client
(``Authorization: Bearer``), so what it may change is what that token may.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

__all__ = ["WEB_DIR", "CSP", "add_web_routes"]

#: The page's files (package data).
WEB_DIR = Path(__file__).with_name("web")
#: Only the host's own origin, for everything (scripts, styles, fetches, images).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


class _Assets(StaticFiles):
    """The page's assets, with the same security headers as the page."""

    async def get_response(self, path: str, scope):  # type: ignore[no-untyped-def]
        r = await super().get_response(path, scope)
        r.headers.update(_HEADERS)
        return r


def add_web_routes(app: FastAPI) -> None:
    if not (WEB_DIR / "index.html").is_file():  # an installation without package data
        return

    @app.get("/", response_class=HTMLResponse, tags=["web"],
             responses={200: {"content": {"text/html": {}}}})
    async def page() -> Response:
        """The web page (no token needed to load it; it asks for one)."""
        return HTMLResponse((WEB_DIR / "index.html").read_bytes(), headers=_HEADERS)

    app.mount("/ui", _Assets(directory=WEB_DIR), name="ui")
