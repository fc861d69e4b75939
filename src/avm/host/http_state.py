"""State and batch routes of the host's HTTP control API (issue 9 item 3).

* ``GET /machines/{name}/state/at?path=`` (read token): one part of the committed state.
* ``GET /machines/{name}/state/tree?path=&offset=&limit=`` (read token): one level of the
  committed state at ``path``, a page of its children at a time, each a leaf (with its
  value) or a container (with its size; its value too when it is small), so a browser
  walks a state of 100,000 entries asking only for what it shows.
* :class:`MachineLister`: the machine list of ``GET /machines`` filtered, sorted and
  paged on the host (by name, behavior, status, batches, failures or queue).
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
import bisect
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..core.codec import decode, encode
from ..core.values import SUBSTRUCTURAL_TYPES, Map, _record_fields, display, record_name
from .api import REPLIES, Host, MachineInfo
from .literal import parse_value, to_json, to_text
from .stateedit import CHANGES_MAX, WHO_CHARS_MAX, StateConflict
from .valuepath import ABSENT, PATH_CHARS_MAX, Segment, format_path, get_at, parse_path

__all__ = ["add_state_routes", "MachineLister", "MachineSort", "MachineStatus",
           "tree_page", "TREE_PAGE_MAX", "SMALL_NODES"]

PAGE_MAX = 10_000
#: Children per page of ``/state/tree`` at most.
TREE_PAGE_MAX = 1_000
#: A container of at most this many values (all the way down) comes whole, with its
#: value: the page draws it without asking again. Larger ones come as their size.
SMALL_NODES = 200

MachineSort = Literal["name", "behavior", "status", "batches", "failures", "queued"]
MachineStatus = Literal["running", "suspended", "stopped"]

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


class TreeNode(BaseModel):
    label: str
    path: str = Field(description="Its path (as `path` takes it).")
    kind: str = Field(description="map, tuple, a record's name, or an atom's type.")
    size: int | None = Field(description="Children of a container; null for a leaf.")
    lazy: bool = Field(description="A large container: its value is not sent; ask for its "
                       "children with its path.")
    value: Any = Field(description="JSON (capabilities opaque); null when lazy.")


class StateTreeOut(BaseModel):
    name: str
    path: str
    kind: str
    size: int | None
    lazy: bool
    value: Any
    offset: int
    next: int | None = Field(description="The offset of the next page of children; null "
                             "when this was the last.")
    children: list[TreeNode]


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

    @app.get("/machines/{name}/state/tree", response_model=StateTreeOut, dependencies=rd,
             tags=tags_s)
    async def state_tree(name: str,
                         path: Annotated[str, Query(max_length=PATH_CHARS_MAX,
                                                    description=_PATH_HELP)] = "",
                         offset: Annotated[int, Query(ge=0, le=ROW_ID_MAX)] = 0,
                         limit: Annotated[int, Query(ge=1, le=TREE_PAGE_MAX)] = 200,
                         ) -> JSONResponse:
        """One level of the committed state at ``path`` and a page of its children (a
        browsable tree of a large state: ask for a container's children when it is
        opened). Each node has its kind and size, and its value (JSON, capabilities
        opaque) when it is a leaf or a small container; a large one is ``lazy``."""
        _one(host, name)
        v = await host.state(name)
        return JSONResponse({"name": name, **tree_page(v, path, offset, limit, names)})

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


# ---------------------------------------------------------------------------------------
# The machine list, filtered, sorted and paged on the host
# ---------------------------------------------------------------------------------------


class MachineLister:
    """``GET /machines``: the machines matching a filter, in an order, one page of them.

    A host of 100,000 machines answers a page in milliseconds and a filtered or sorted one
    in about a tenth of a second: the names are sorted once (again only when a machine
    was spawned or destroyed: the committed name map is another object then), the raw
    maps are read (a :class:`~avm.Map` iterates in its fixed key order, which it sorts
    again after every change: right for a step, far too slow for a listing that needs no
    order), a record is read only where a filter or an order needs it, and a row is made
    only for the page.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self._names: Any = None
        self._keys: list[str] = []
        self._addrs: list[bytes] = []

    def names(self) -> list[str]:
        """Every machine's name, sorted. Called once when the API starts, so the first
        page does not pay for sorting 100,000 names."""
        raw = self.host._rt.committed.names._m
        if raw is not self._names:
            keys = sorted(raw.keys())  # text only: ~0.1 s for 100,000
            i = bisect.bisect_left(keys, REPLIES)
            if i < len(keys) and keys[i] == REPLIES:
                del keys[i]
            self._keys, self._addrs, self._names = keys, [raw[k] for k in keys], raw
        return self._keys

    def depths(self) -> dict[bytes, int]:
        """Batches queued per machine address."""
        out: dict[bytes, int] = {}
        for chan, _seq in self.host._rt.net.pending._m:
            d = chan[1]
            if type(d) is bytes:
                out[d] = out.get(d, 0) + 1
        return out

    def info(self, m: MachineInfo) -> dict[str, Any]:
        """One machine's row (``GET /machines/{name}``)."""
        per = self.host._rt.per_machine.get(m.address, (0, 0))
        queued = sum(1 for chan, _ in self.host._rt.net.pending._m if chan[1] == m.address)
        return _row((m.name, m.address, m.behavior, m.status, m.keyver), per, queued)

    def page(self, prefix: str = "", match: str = "", status: str | None = None,
             sort: str = "name", desc: bool = False, offset: int = 0,
             limit: int = 1000) -> tuple[list[dict[str, Any]], int, int]:
        """``(rows, matched, total)``: the page ``offset:offset+limit`` of the machines
        named ``prefix...`` whose name or behavior contains ``match`` (case-insensitive)
        or whose status is ``match``, of ``status``, ordered by ``sort`` (then by name)."""
        rt = self.host._rt
        per = rt.per_machine
        f = match.strip().lower()
        depths = self.depths() if sort == "queued" else None
        if rt.evicted_any:  # some records are only in the store: the host's own union
            rows = [(m.name, m.address, m.behavior, m.status, m.keyver)
                    for m in self.host.machines(prefix)]
            total = len(rows)
            rows = [r for r in rows if _passes(r, status, f)]
            matched = len(rows)
            if sort != "name" or desc:
                rows.sort(key=_key(sort, per, depths), reverse=desc)  # stable: by name within
            chosen = rows[offset:offset + limit]
        else:
            keys = self.names()
            addrs = self._addrs
            mm = rt.committed.machines._m
            lo, hi = 0, len(keys)
            if prefix:
                lo = bisect.bisect_left(keys, prefix)
                hi = bisect.bisect_left(keys, prefix + "\U0010ffff", lo)
            total = hi - lo
            idx: Any = range(lo, hi)
            if status is not None or f:
                idx = [j for j in idx if (m := mm.get(addrs[j])) is not None
                       and _passes((keys[j], b"", m.behavior, m.status), status, f)]
            matched = len(idx)
            if sort in ("behavior", "status"):
                field = "behavior" if sort == "behavior" else "status"
                idx = sorted(idx, key=lambda j: getattr(mm.get(addrs[j]), field, ""),
                             reverse=desc)
            elif sort != "name":
                zero = (0, 0)
                if sort == "queued":
                    d = depths or {}
                    idx = sorted(idx, key=lambda j: d.get(addrs[j], 0), reverse=desc)
                else:
                    i = 0 if sort == "batches" else 1
                    idx = sorted(idx, key=lambda j: (per.get(addrs[j]) or zero)[i],
                                 reverse=desc)
            elif desc:
                idx = idx[::-1]
            chosen = []
            for j in idx[offset:offset + limit]:
                m = mm.get(addrs[j])
                if m is not None:
                    chosen.append((keys[j], addrs[j], m.behavior, m.status, m.keyver))
        if depths is None:
            wanted = {r[1] for r in chosen}
            depths = {}
            if wanted:
                for chan, _seq in rt.net.pending._m:
                    d = chan[1]
                    if d in wanted:
                        depths[d] = depths.get(d, 0) + 1
        out = [_row(r, per.get(r[1], (0, 0)), depths.get(r[1], 0)) for r in chosen]
        return out, matched, total


def _passes(r: tuple, status: str | None, f: str) -> bool:
    """Does row ``(name, address, behavior, status, ...)`` pass the filters?"""
    if status is not None and r[3] != status:
        return False
    return not f or f in r[0].lower() or f in r[2].lower() or r[3] == f


def _key(sort: str, per: dict, depths: dict[bytes, int] | None) -> Callable[[tuple], Any]:
    """The sort key of a row ``(name, address, behavior, status, keyver)``."""
    if sort == "name":
        return lambda r: r[0]
    if sort == "behavior":
        return lambda r: r[2]
    if sort == "status":
        return lambda r: r[3]
    if sort == "queued":
        d = depths or {}
        return lambda r: d.get(r[1], 0)
    i = 0 if sort == "batches" else 1
    return lambda r: (per.get(r[1]) or (0, 0))[i]


def _row(r: tuple, per: Any, queued: int) -> dict[str, Any]:
    return {"name": r[0], "address": r[1].hex(), "behavior": r[2], "status": r[3],
            "keyver": r[4], "batches": per[0], "failures": per[1], "queued": queued}


# ---------------------------------------------------------------------------------------
# A state, one level and one page at a time
# ---------------------------------------------------------------------------------------

_KEY_ORDERS: OrderedDict[int, tuple[Any, list]] = OrderedDict()
_KEY_ORDERS_MAX = 8


def _keys_of(v: Map) -> list:
    """A Map's keys in the order shown: text keys sorted as text (what the Map's own
    order gives them, but without its per-key sort keys: 100,000 keys in ~50 ms), other
    maps in their fixed order. Kept for the last few maps shown (paging one map asks
    for its keys again)."""
    raw = v._m
    got = _KEY_ORDERS.get(id(raw))
    if got is not None and got[0] is raw:
        _KEY_ORDERS.move_to_end(id(raw))
        return got[1]
    keys = list(raw.keys())
    if all(type(k) is str for k in keys):
        keys.sort()
    else:
        keys = list(v)
    _KEY_ORDERS[id(raw)] = (raw, keys)
    while len(_KEY_ORDERS) > _KEY_ORDERS_MAX:
        _KEY_ORDERS.popitem(last=False)
    return keys


def _children(v: Any) -> tuple[int, Callable[[int, int], list[tuple[str, Segment, Any]]]] | None:
    """``(size, page)`` of a container the paths reach into (Map, tuple, record), where
    ``page(offset, limit)`` lists ``(label, segment, child)``; None for a leaf."""
    t = type(v)
    if t is Map:
        def page_map(o: int, n: int) -> list[tuple[str, Segment, Any]]:
            m = v._m
            return [(k if type(k) is str else display(k), ("key", k), m[k])
                    for k in _keys_of(v)[o:o + n]]
        return len(v), page_map
    if t is tuple:
        return len(v), lambda o, n: [(f"[{i}]", ("key", i), v[i])
                                     for i in range(o, min(len(v), o + n))]
    fields = _record_fields(t)
    if fields is not None:
        return len(fields), lambda o, n: [(f, ("name", f), getattr(v, f))
                                          for f in fields[o:o + n]]
    return None


def _small(v: Any, budget: int) -> int:
    """``budget`` less the values in ``v`` (all the way down); negative once over."""
    budget -= 1
    if budget < 0:
        return budget
    t = type(v)
    if t is Map:
        if len(v) > budget:
            return -1
        for k, x in v._m.items():
            budget = _small(x, _small(k, budget))
            if budget < 0:
                return budget
        return budget
    if t is tuple:
        if len(v) > budget:
            return -1
        for x in v:
            budget = _small(x, budget)
            if budget < 0:
                return budget
        return budget
    fields = _record_fields(t)
    if fields is not None:
        for f in fields:
            budget = _small(getattr(v, f), budget)
            if budget < 0:
                return budget
        return budget
    if t in SUBSTRUCTURAL_TYPES:
        return _small(v.value, budget)
    return budget


def _client_path(segs: tuple[Segment, ...]) -> str:
    """A path as the page writes it: ``$`` for the state, else without the ``$.``."""
    s = format_path(segs)
    return "$" if s == "$" else s[2:] if s.startswith("$.") else s[1:]


def _node(v: Any, names: Any) -> dict[str, Any]:
    """What the tree shows of a value: its kind and size; its value (JSON, capabilities
    opaque) if it is a leaf or a small container, else ``lazy``."""
    kids = _children(v)
    t = type(v)
    kind = ("map" if t is Map else "tuple" if t is tuple else record_name(t) if kids is not None
            else t.__name__)
    if kids is None:
        if t in SUBSTRUCTURAL_TYPES and _small(v, SMALL_NODES) < 0:  # a big wrapped value
            text = to_text(v)
            return {"kind": kind, "size": None, "lazy": False,
                    "value": {"$value": text[:200] + ("..." if len(text) > 200 else "")}}
        return {"kind": kind, "size": None, "lazy": False, "value": to_json(v, names)}
    size = kids[0]
    if _small(v, SMALL_NODES) >= 0:
        return {"kind": kind, "size": size, "lazy": False, "value": to_json(v, names)}
    return {"kind": kind, "size": size, "lazy": True, "value": None}


def tree_page(state: Any, path: str, offset: int, limit: int, names: Any) -> dict[str, Any]:
    """One level of ``state`` at ``path``: the node, and the children ``offset`` to
    ``offset + limit`` (each a node with its label and path); ``next`` is the offset of
    the next page, or None. A leaf has no children."""
    segs = parse_path(path)
    v = get_at(state, segs)
    out = {"path": _client_path(segs), **_node(v, names), "offset": offset,
           "next": None, "children": []}
    kids = _children(v)
    if kids is None:
        return out
    size, page = kids
    out["children"] = [{"label": label, "path": _client_path((*segs, seg)), **_node(x, names)}
                       for label, seg, x in page(offset, limit)]
    out["next"] = offset + limit if offset + limit < size else None
    return out
