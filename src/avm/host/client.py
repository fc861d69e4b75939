"""An asyncio client of a host's HTTP control API (:mod:`avm.host.http`), on httpx.

::

    async with avm.host.client.connect(token_file="app.avm.http") as c:
        await c.send("counter", '("add", 1)')
        print(await c.ask("counter", '"get"'))         # the answer as JSON
        print([m["name"] for m in await c.machines()])

Messages and contexts are text in the syntax of :mod:`avm.host.literal` (a Python
literal; ``cap("machine", context)`` for a capability); answers and states come back as
JSON with capabilities opaque. Errors of the host are raised as :class:`HostError` with
the HTTP status and the host's explanation.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import httpx

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
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout,
                                       headers={"Authorization": f"Bearer {token}"})

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _call(self, method: str, path: str, json: Any = None,
                    params: dict[str, Any] | None = None) -> Any:
        try:
            r = await self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as e:
            raise UsageError(f"cannot reach the host at {self.url} ({type(e).__name__}: {e}): "
                             f"is it running (avm host run --store STORE --http ...)?") from None
        if r.status_code >= 400:
            try:
                body = r.json()
                error, detail = str(body.get("error", "")), str(body.get("detail", r.text))
            except ValueError:
                error, detail = r.reason_phrase, r.text
            raise HostError(r.status_code, error, detail)
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.text

    # -- reading ------------------------------------------------------------------------
    async def machines(self) -> list[dict[str, Any]]:
        """Every machine: name, address, behavior, status, keyver, batches, failures, queued."""
        return (await self._call("GET", "/machines"))["machines"]

    async def machine(self, name: str) -> dict[str, Any]:
        return await self._call("GET", f"/machines/{name}")

    async def state(self, name: str) -> dict[str, Any]:
        """``{"name", "state" (JSON), "text"}``: the committed state."""
        return await self._call("GET", f"/machines/{name}/state")

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

    async def stop(self, name: str) -> str:
        return (await self._call("POST", f"/machines/{name}/stop"))["status"]

    async def restart(self, name: str, info: str = "None") -> str:
        return (await self._call("POST", f"/machines/{name}/restart",
                                 json={"info": info}))["status"]

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
