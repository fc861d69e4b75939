"""An asyncio client of a host's HTTP control API (:mod:`avm.host.http`), on aiohttp.

::

    async with avm.host.client.connect(token_file="app.avm.http") as c:
        await c.send("counter", '("add", 1)')
        print(await c.ask("counter", '"get"'))         # the answer as JSON
        print([m["name"] for m in await c.machines()])

Messages and contexts are text in the syntax of :mod:`avm.host.literal` (a Python
literal; ``cap("machine", context)`` for a capability); answers and states come back as
JSON with capabilities opaque. Errors of the host are raised as :class:`HostError` with
the HTTP status and the host's explanation.

aiohttp rather than httpx: its client costs half as much per request (a round trip of
``ask`` over one connection took 0.8 ms against 1.4 ms; ``python bench/host.py``).
"""

from __future__ import annotations

import json as _json
import os
from types import TracebackType
from typing import Any

import aiohttp

from ..core.errors import AvmError, UsageError
from .http import read_token_file

__all__ = ["Client", "HostError", "connect"]


class HostError(AvmError):
    """The host refused or failed a request: ``status`` is the HTTP status."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{detail} (HTTP {status} {error})")
        self.status, self.error, self.detail = status, error, detail


class Client:
    """One connection pool to one host. Use :func:`connect`, or close it yourself."""

    def __init__(self, url: str, token: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:  # made in the running loop, on first use
            self._http = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _call(self, method: str, path: str, json: Any = None,
                    params: dict[str, Any] | None = None) -> Any:
        try:
            async with self._session().request(method, self.url + path, json=json,
                                               params=params) as r:
                text = await r.text()
                status, reason, ctype = r.status, r.reason or "", r.content_type
        except (aiohttp.ClientConnectionError, OSError) as e:
            raise UsageError(f"cannot reach the host at {self.url} ({type(e).__name__}: {e}): "
                             f"is it running (avm host run --store STORE --http ...)?") from None
        if status >= 400:
            try:
                body = _json.loads(text)
                error, detail = str(body.get("error", "")), str(body.get("detail", text))
            except (ValueError, AttributeError):
                error, detail = reason, text
            raise HostError(status, error, detail)
        if ctype == "application/json":
            return _json.loads(text)
        return text

    # -- reading ------------------------------------------------------------------------
    async def machines(self, prefix: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        """Machines by name: name, address, behavior, status, keyver, batches, failures, queued."""
        return (await self._call("GET", "/machines",
                                 params={"prefix": prefix, "limit": limit}))["machines"]

    async def machine(self, name: str) -> dict[str, Any]:
        return await self._call("GET", f"/machines/{name}")

    async def state(self, name: str) -> dict[str, Any]:
        """``{"name", "state" (JSON), "text"}``: the committed state."""
        return await self._call("GET", f"/machines/{name}/state")

    async def state_at(self, name: str, path: str = "") -> dict[str, Any]:
        """``{"name", "path", "value" (JSON), "text"}``: one part of the committed state."""
        return await self._call("GET", f"/machines/{name}/state/at", params={"path": path})

    async def audit(self, name: str | None = None, *, limit: int = 100,
                    before: int | None = None) -> dict[str, Any]:
        """``{"rows", "next"}``: operators' state edits, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        return await self._call("GET", "/audit" if name is None else f"/machines/{name}/audit",
                                params=params)

    async def batches(self, kind: str, *, machine: str | None = None, limit: int = 100,
                      before: int | None = None) -> dict[str, Any]:
        """``{"rows", "next"}`` of ``history``, ``failures`` or ``drops``, newest first;
        ``dead-letters`` pages by offset (pass ``next`` as ``before``)."""
        params: dict[str, Any] = {"limit": limit}
        if kind == "dead-letters":
            params["offset"] = before or 0
        else:
            if machine is not None:
                params["machine"] = machine
            if before is not None:
                params["before"] = before
        return await self._call("GET", f"/batches/{kind}", params=params)

    async def failures(self, limit: int = 100) -> list[dict[str, Any]]:
        return (await self._call("GET", "/failures", params={"limit": limit}))["rows"]

    async def drops(self, limit: int = 100) -> list[dict[str, Any]]:
        return (await self._call("GET", "/drops", params={"limit": limit}))["rows"]

    async def history(self, limit: int = 100) -> list[dict[str, Any]]:
        return (await self._call("GET", "/history", params={"limit": limit}))["rows"]

    async def stats(self) -> dict[str, int]:
        return (await self._call("GET", "/stats"))["counters"]

    async def metrics(self) -> str:
        """The Prometheus text."""
        return await self._call("GET", "/metrics")

    async def openapi(self) -> dict[str, Any]:
        return await self._call("GET", "/openapi.json")

    # -- acting -------------------------------------------------------------------------
    async def send(self, name: str, content: str, *, context: str = "None",
                   client: str = "http") -> int:
        """Send one message to ``name``; returns its batch's sequence number once queued."""
        body = {"content": content, "context": context, "client": client}
        return (await self._call("POST", f"/machines/{name}/send", json=body))["seq"]

    async def ask(self, name: str, content: str, *, context: str = "None",
                  timeout: float = 30.0, client: str = "http") -> dict[str, Any]:
        """Ask ``name`` (the reply capability is appended); ``{"answer", "text"}``."""
        body = {"content": content, "context": context, "timeout": timeout, "client": client}
        return await self._call("POST", f"/machines/{name}/ask", json=body)

    async def suspend(self, name: str) -> str:
        return (await self._call("POST", f"/machines/{name}/suspend"))["status"]

    async def resume(self, name: str) -> str:
        return (await self._call("POST", f"/machines/{name}/resume"))["status"]

    async def step(self, name: str) -> dict[str, Any]:
        """Run one batch of the suspended machine ``name`` (admin token); what ran."""
        return await self._call("POST", f"/machines/{name}/step")

    async def stop(self, name: str) -> str:
        return (await self._call("POST", f"/machines/{name}/stop"))["status"]

    async def restart(self, name: str, info: str = "None") -> str:
        return (await self._call("POST", f"/machines/{name}/restart",
                                 json={"info": info}))["status"]

    async def bind(self, name: str, word: str, *, branch: str = "main",
                   version: int | None = None) -> dict[str, Any]:
        """Run ``word`` on machine ``name`` from its next batch (admin token); following
        the word's head, or pinned to ``version``."""
        return await self._call("POST", f"/machines/{name}/bind",
                                json={"word": word, "branch": branch, "version": version})

    async def rollback(self, name: str) -> dict[str, Any]:
        """Undo the machine's last rebind (admin token)."""
        return await self._call("POST", f"/machines/{name}/rollback")

    async def peek(self, name: str, *, source: str | None = None, version: int | None = None,
                   word: str | None = None, branch: str | None = None,
                   last: int = 10) -> dict[str, Any]:
        """A dry run of ``name``'s newest batches against ``source`` or ``version``
        (admin token: it runs code); the report as JSON."""
        body = {"source": source, "version": version, "word": word, "branch": branch,
                "last": last}
        return await self._call("POST", f"/machines/{name}/peek", json=body)

    async def edit_state(self, name: str, *, value: str | None = None,
                         set: list[tuple[str, str]] | None = None,  # noqa: A002 - the API's verb
                         expect: list[tuple[str, str]] | None = None,
                         who: str = "http") -> dict[str, Any]:
        """Edit ``name``'s state (``value``: the whole, a Python literal; ``set``: (path,
        literal) pairs) as one audited transaction; ``{"changes", ...}`` once committed."""
        body = {"value": value, "who": who,
                "set": [{"path": p, "value": v} for p, v in set or ()],
                "expect": [{"path": p, "value": v} for p, v in expect or ()]}
        return await self._call("POST", f"/machines/{name}/state", json=body)

    async def move(self, name: str, to: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Move ``name`` to peer host ``to`` (admin token); ``{"to", "destination",
        "seq", "phase", "forwarded"}`` once this host forwards to it."""
        return await self._call("POST", f"/machines/{name}/move",
                                json={"to": to, "timeout": timeout})

    async def destroy(self, name: str) -> str:
        return (await self._call("POST", f"/machines/{name}/destroy"))["status"]


def connect(url: str | None = None, token: str | None = None, *,
            token_file: str | os.PathLike | None = None, admin: bool = True,
            timeout: float = 60.0) -> Client:
    """A client from ``url`` and ``token``, or from a token file (its admin token, or the
    read token with ``admin=False``); flags given win over the file."""
    if url is None or token is None:
        if token_file is None:
            raise UsageError("give the host's address and token (--url, --token), or its "
                             "token file (--token-file STORE.http, or --store STORE)")
        data = read_token_file(token_file)
        url = url or data["url"]
        token = token or data["admin" if admin else "read"]
    return Client(url, token, timeout=timeout)
