"""State and batch routes of the host's HTTP control API (issue 9 item 3).

* ``GET /machines/{name}/state/at?path=`` (read token): one part of the committed state.
* ``POST /machines/{name}/state`` (admin token): an operator's edit, the whole value or
  paths, as one transaction through the core's value rules, audited in the same commit
  (:mod:`avm.host.stateedit`); a refused edit (400) or a stale ``expect`` (409) changes
  nothing.
* ``GET /audit``, ``GET /machines/{name}/audit`` (read token): who changed what, when.
* ``GET /batches/history``, ``/batches/failures``, ``/batches/drops`` (read token): the
  store's logs, newest first, optionally of one machine, paged by id (``before`` = the
  ``next`` of the previous page). ``GET /batches/dead-letters``: the linear and relevant
  values nobody could take back, per host, paged by offset.

Values are JSON with capabilities opaque (never their contexts); values given are
Python literals (:mod:`avm.host.literal`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..core.codec import decode, encode
from .api import Host
from .literal import parse_value, to_json, to_text
from .stateedit import CHANGES_MAX, WHO_CHARS_MAX, StateConflict
from .valuepath import ABSENT, PATH_CHARS_MAX

__all__ = ["add_state_routes"]

PAGE_MAX = 10_000

# At module level: FastAPI resolves the (string) annotations of routes in their globals.
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX)]
ROW_ID_MAX = (1 << 63) - 1  # SQLite's integers
Before = Annotated[int | None, Query(ge=0, le=ROW_ID_MAX,
                                     description="Only rows with a smaller id (paging).")]

_PATH_HELP = ('A path into the state: accounts.ann, log[2], ["a b"] (avm state); '
              'empty for the whole state.')


class PathValue(BaseModel):
    path: str = Field(max_length=PATH_CHARS_MAX, description=_PATH_HELP)
    value: str = Field(description="A Python literal, e.g. 5, \"text\", (1, 2), {\"k\": 1}.")


class StateEditIn(BaseModel):
    value: str | None = Field(None, description="The whole new state as a Python literal "
                              "(applied before `set`).")
    set: list[PathValue] = Field(default_factory=list, max_length=CHANGES_MAX,
                                 description="Parts to change, in order.")
    expect: list[PathValue] = Field(default_factory=list, max_length=CHANGES_MAX,
                                    description="Parts that must still have these values "
                                    "(else 409 and nothing changes).")
    who: str = Field("http", min_length=1, max_length=WHO_CHARS_MAX,
                     description="The editor's name, for the audit.")


class ChangeOut(BaseModel):
    path: str
    before: Any = Field(description="JSON; {\"$absent\": true} for a key that was not there.")
    after: Any


class StateEditOut(BaseModel):
    name: str
    who: str
    at: int
    changes: list[ChangeOut]


class StateAtOut(BaseModel):
    name: str
    path: str
    value: Any
    text: str


class AuditRow(BaseModel):
    id: int
    at: int
    who: str
    machine: str
    act: str
    detail: str
    changes: list[ChangeOut]


class AuditOut(BaseModel):
    rows: list[AuditRow]
    next: int | None = Field(None, description="Pass as `before` for the next page.")
    note: str | None = None


class PageOut(BaseModel):
    rows: list[dict[str, Any]]
    next: int | None = Field(None, description="Pass as `before` (or `offset`) for the next "
                             "page; null when this was the last.")
    note: str | None = None


_COLS = {
    "failures": ("id", "at", "chan", "seq", "dest", "rule", "detail"),
    "drops": ("id", "at", "chan", "seq", "dest", "reason"),
    "history": ("id", "at", "chan", "seq", "dest", "ok", "steps", "read_only"),
}


def _read_page(path: Path, table: str, dest: bytes | None, limit: int,
               before: int | None) -> list[tuple]:
    cols = _COLS[table]
    where: list[str] = []
    args: list[Any] = []
    if dest is not None:
        where.append("dest = ?")
        args.append(encode(dest))
    if before is not None:
        where.append("id < ?")
        args.append(before)
    sql = (f"SELECT {', '.join(cols)} FROM {table}"  # noqa: S608 - fixed names
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return db.execute(sql, (*args, limit)).fetchall()
    finally:
        db.close()


def add_state_routes(app: FastAPI, host: Host, rd: list, ad: list, names: Any) -> None:
    from .http import _one, _party  # the control API's own helpers

    tags_s: list[str | Enum] = ["machines"]
    tags_b: list[str | Enum] = ["batches"]

    def j(v: Any) -> Any:
        return {"$absent": True} if v is ABSENT else to_json(v, names)

    def mint(name: str, context: Any = None, priority: float = 0.0) -> Any:
        return host.cap(name, context, priority)

    def changes(cs: Any) -> list[dict]:
        return [{"path": c.path, "before": j(c.before), "after": j(c.after)} for c in cs]

    @app.get("/machines/{name}/state/at", response_model=StateAtOut, dependencies=rd,
             tags=tags_s)
    async def state_at(name: str, path: Annotated[str, Query(max_length=PATH_CHARS_MAX,
                                                             description=_PATH_HELP)] = "",
                       ) -> JSONResponse:
        """One part of the committed state (capabilities opaque)."""
        _one(host, name)
        v = await host.state_at(name, path)
        return JSONResponse({"name": name, "path": path, "value": to_json(v, names),
                             "text": to_text(v)})

    @app.post("/machines/{name}/state", response_model=StateEditOut, dependencies=ad,
              tags=tags_s, responses={409: {"description": "an `expect` no longer holds"}})
    async def edit(name: str, body: StateEditIn, request: Request) -> JSONResponse:
        """Edit the state (the whole value, or parts) as one audited transaction through
        the value rules; refused edits change nothing."""
        _one(host, name)
        value: Any = parse_value(body.value, mint) if body.value is not None else None
        sets = [(c.path, parse_value(c.value, mint)) for c in body.set]
        expects = [(c.path, parse_value(c.value, mint)) for c in body.expect]
        peer = request.client.host if request.client is not None else "?"
        who = f"{body.who} (http {peer})"[:WHO_CHARS_MAX]
        try:
            e = await host.set_state(name, *(() if body.value is None else (value,)),
                                     set=sets, expect=expects, who=who)
        except StateConflict as err:
            return JSONResponse({"error": "StateConflict", "detail": str(err)}, 409)
        return JSONResponse({"name": name, "who": e.who, "at": e.at,
                             "changes": changes(e.changes)})

    async def audit_rows(machine: str | None, limit: int, before: int | None) -> JSONResponse:
        if host.store.path is None:
            return JSONResponse({"rows": [], "next": None,
                                 "note": "an in-memory store keeps no audit"})
        rows = await host.audit(machine, limit, before)
        out = [{**{k: r[k] for k in ("id", "at", "who", "machine", "act", "detail")},
                "changes": changes(r["changes"])} for r in rows]
        return JSONResponse({"rows": out, "next": out[-1]["id"] if len(out) == limit else None})

    @app.get("/audit", response_model=AuditOut, dependencies=rd, tags=tags_s)
    async def audit_all(limit: Limit = 100, before: Before = None) -> JSONResponse:
        """Operators' state edits, newest first: who, when, which machine, what."""
        return await audit_rows(None, limit, before)

    @app.get("/machines/{name}/audit", response_model=AuditOut, dependencies=rd, tags=tags_s)
    async def audit_one(name: str, limit: Limit = 100, before: Before = None) -> JSONResponse:
        """One machine's state edits, newest first."""
        _one(host, name)
        return await audit_rows(name, limit, before)

    def page_route(table: str, doc: str) -> None:
        cols = _COLS[table]

        async def route(machine: Annotated[str | None, Query(description="only batches to "
                                                             "this machine")] = None,
                        limit: Limit = 100, before: Before = None) -> JSONResponse:
            dest = _one(host, machine).address if machine is not None else None
            path = host.store.path
            if path is None:
                return JSONResponse({"rows": [], "next": None,
                                     "note": "an in-memory store keeps no logs"})
            await host.flush()
            rows = await asyncio.to_thread(_read_page, path, table, dest, limit, before)
            out = []
            for row in rows:
                d = dict(zip(cols, row, strict=True))
                for k in ("chan", "dest"):
                    d[k] = _party(decode(d[k]), names)
                for k in ("ok", "read_only"):
                    if k in d:
                        d[k] = bool(d[k])
                out.append(d)
            return JSONResponse({"rows": out,
                                 "next": out[-1]["id"] if len(out) == limit else None})

        route.__doc__ = doc
        app.get(f"/batches/{table}", response_model=PageOut, dependencies=rd, tags=tags_b,
                name=f"batches_{table}")(route)

    page_route("history", "Applied batches (the newest 10,000 are kept), newest first.")
    page_route("failures", "Failed batches with their rule and reason, newest first.")
    page_route("drops", "Dropped batches with their reason, newest first.")

    @app.get("/batches/dead-letters", response_model=PageOut, dependencies=rd, tags=tags_b)
    async def dead_letters(host_name: Annotated[str | None, Query(alias="host", description=
                                                                   "only this host's")] = None,
                           offset: Annotated[int, Query(ge=0, le=ROW_ID_MAX)] = 0,
                           limit: Limit = 100) -> JSONResponse:
        """Linear and relevant values nobody could take back (D7), oldest first, per host;
        capabilities opaque."""
        net = host.network
        entries = []
        for h, letters in sorted(net.dead_letters.items()):
            if host_name is not None and h != host_name:
                continue
            for i, e in enumerate(letters):
                entries.append((h, i, e))
        page = entries[offset:offset + limit]
        rows = [{"host": h, "index": i, "reason": e.get("reason"), "rule": e.get("rule"),
                 "sender": _party(e.get("sender"), names), "dest": _party(e.get("dest"), names),
                 "seq": e.get("seq"), "at": e.get("at"), "values": to_json(e.get("values"), names)}
                for h, i, e in page]
        more = offset + limit < len(entries)
        return JSONResponse({"rows": rows, "next": offset + limit if more else None})
