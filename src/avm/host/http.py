"""The HTTP control API of a running host (FastAPI on uvicorn, in the host's event loop).

::

    async with avm.host.open("app.avm", behaviors=[counter]) as h:
        async with avm.host.http.serve(h, token_file="app.avm.http") as api:
            print(api.url, api.tokens.read)   # http://127.0.0.1:PORT ...

The server runs as a task of the host's own event loop (``uvicorn.Server.serve``), in the
process of the :class:`~avm.host.runtime.Runtime`, and every route calls the embedded API
(:class:`avm.host.Host`): there is no second way to act on the network.

**Bound to 127.0.0.1** unless told otherwise. **Two bearer tokens**, 32 bytes each from
``os.urandom``, drawn at every start: the *admin* token may do anything, the *read* token
only the ``GET`` routes (listing, states, logs, stats, metrics); a route that changes
something refuses the read token with 403, and no token or a wrong one with 401. Tokens
are compared in constant time (:func:`hmac.compare_digest`). They are written, with the
address, to a JSON file created with mode 0600 (by default beside the store:
``STORE.http``), which the CLI and :mod:`avm.host.client` read.

The OpenAPI document is served at ``/openapi.json`` (FastAPI generates it from the
routes), the Prometheus metrics at ``/metrics`` (:mod:`avm.host.metrics`). Messages are
given as text (:mod:`avm.host.literal`); values are answered as JSON with capabilities
opaque.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.codec import decode
from ..core.errors import AvmError, UnknownName, UsageError
from ..core.netvalue import who
from .api import REPLIES, AskFailed, Host, MachineInfo
from .http_state import MachineLister, MachineSort, MachineStatus
from .literal import parse_value, to_json, to_text
from .metrics import event, render
from .store import StoreError

__all__ = ["Tokens", "HttpApi", "serve", "make_app", "token_file_for", "read_token_file",
           "parse_bind", "DEFAULT_BIND", "TOKEN_FILE_SUFFIX"]

DEFAULT_BIND = "127.0.0.1:0"
_STATUSES = {int(x) for x in HTTPStatus}
TOKEN_FILE_SUFFIX = ".http"
LOG_LIMIT_MAX = 10_000
MACHINES_LIMIT_MAX = 100_000


@dataclass(frozen=True)
class Tokens:
    """The admin token (changes anything) and the read token (views only)."""

    admin: str
    read: str

    @classmethod
    def new(cls) -> Tokens:
        return cls(os.urandom(32).hex(), os.urandom(32).hex())


def token_file_for(store: str | os.PathLike) -> Path:
    """Where ``avm host run`` writes the address and tokens of a store's HTTP API."""
    return Path(str(store) + TOKEN_FILE_SUFFIX)


def read_token_file(path: str | os.PathLike) -> dict[str, str]:
    """``{"url", "admin", "read"}`` from a token file, or a :class:`UsageError` saying why."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"no token file {path}: is the host running (avm host run --store "
                         f"STORE --http ...)? or pass --url and --token") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the token file {path}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str)
                                             for k in ("url", "admin", "read")):
        raise UsageError(f"{path} is not an avm token file (url, admin, read)")
    return data


def _write_token_file(path: Path, url: str, tokens: Tokens) -> None:
    """Write atomically, mode 0600 from the start (never readable by others, even briefly)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps({"url": url, "admin": tokens.admin, "read": tokens.read,
                                 "pid": os.getpid()}).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def parse_bind(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``; ``":0"`` or ``"0"`` binds 127.0.0.1."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        n = int(port)
    except ValueError:
        raise UsageError(f"--http takes HOST:PORT (e.g. 127.0.0.1:8080, or :0 for any "
                         f"free port), not {text!r}") from None
    if not 0 <= n <= 65535:
        raise UsageError(f"port {n} is out of range 0..65535")
    return host, n


# ---------------------------------------------------------------------------------------
# Models (the OpenAPI document's schemas)
# ---------------------------------------------------------------------------------------

CONTENT_HELP = ('A Python literal: ("add", 1), "get", {"k": 1}; cap("machine", context) '
                'is a capability to one of the host\'s machines.')


class SendIn(BaseModel):
    content: str = Field(description=CONTENT_HELP, examples=['("add", 1)'])
    context: str = Field("None", description="The context of the capability the message is "
                         "sent through, as a Python literal.", examples=['"main"'])
    client: str = Field("http", description="The client name (the batch's sender).")


class AskIn(SendIn):
    timeout: float = Field(30.0, gt=0, le=3600, description="Seconds to wait for the answer.")


class RestartIn(BaseModel):
    info: str = Field("None", description="What the (\"restart\", info) signal carries, as a "
                      "Python literal.")


class MachineOut(BaseModel):
    name: str
    address: str
    behavior: str
    status: str
    keyver: int
    batches: int = Field(description="Batches applied since the host started.")
    failures: int = Field(description="Batches failed since the host started.")
    queued: int = Field(description="Batches queued for it now.")


class MachinesOut(BaseModel):
    machines: list[MachineOut]
    matched: int = Field(description="Machines that pass the filters (all pages).")
    total: int = Field(description="Machines named with the prefix (or all of them).")
    offset: int


class StateOut(BaseModel):
    name: str
    state: Any = Field(description="The committed state as JSON; capabilities opaque.")
    text: str = Field(description="The state displayed (capabilities show no context).")


class SentOut(BaseModel):
    name: str
    seq: int = Field(description="The batch's sequence number on its channel.")


class AnswerOut(BaseModel):
    name: str
    answer: Any
    text: str


class ControlOut(BaseModel):
    name: str
    status: str


class StepOut(BaseModel):
    name: str
    status: str = Field(description="Its status after the step (suspended).")
    seq: int = Field(description="The batch's sequence number on its channel.")
    sender: str = Field(description="The batch's sender (a machine's or client's name).")
    ok: bool = Field(description="Whether the batch committed (else it failed).")
    steps: int = Field(description="Messages the batch ran.")
    rule: str | None = Field(None, description="The rule a failed batch broke.")
    detail: str | None = Field(None, description="Why a failed batch failed.")
    queued: int = Field(description="Batches still queued for it.")


class RowsOut(BaseModel):
    rows: list[dict[str, Any]]
    note: str | None = None


class StatsOut(BaseModel):
    counters: dict[str, int]


class ErrorOut(BaseModel):
    error: str
    detail: str


class _ValidationItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class HTTPValidationError(BaseModel):
    """FastAPI's answer to a request that does not fit the route's schema (422)."""

    detail: list[_ValidationItem]


# ---------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------


def make_app(host: Host, tokens: Tokens, token_file: Path | None = None) -> FastAPI:
    """The ASGI application of ``host``'s control API (routes call the embedded API)."""
    app = FastAPI(
        title="avm host control API",
        version="1",
        description=("Control a running avm host: list machines, read states, send, ask, "
                     "suspend/resume/stop/restart/destroy, logs, stats, metrics. GET routes "
                     "take the read or the admin token; every other route the admin token "
                     "(`Authorization: Bearer TOKEN`)."),
        docs_url=None, redoc_url=None,
        responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    )
    where = f" (in {token_file})" if token_file is not None else ""
    admin_b, read_b = tokens.admin.encode(), tokens.read.encode()

    def _given(cred: HTTPAuthorizationCredentials | None) -> bytes:
        if cred is None:
            raise _Denied(401, f"this route needs a token: send Authorization: Bearer TOKEN{where}")
        return cred.credentials.encode()

    async def reader(cred: _Credentials) -> None:  # async: sync ones run in a thread pool
        t = _given(cred)
        ok_admin = hmac.compare_digest(t, admin_b)
        ok_read = hmac.compare_digest(t, read_b)
        if not (ok_admin or ok_read):
            raise _Denied(401, f"wrong token: use the read or admin token{where}")

    async def admin(cred: _Credentials) -> None:
        t = _given(cred)
        if hmac.compare_digest(t, admin_b):
            return
        if hmac.compare_digest(t, read_b):
            raise _Denied(403, f"the read token cannot change anything: use the admin token{where}")
        raise _Denied(401, f"wrong token: this route needs the admin token{where}")

    @app.exception_handler(_Denied)
    async def _denied(request: Request, e: _Denied) -> JSONResponse:
        return JSONResponse({"error": "unauthorized" if e.status == 401 else "forbidden",
                             "detail": e.detail}, e.status,
                            headers={"WWW-Authenticate": "Bearer"} if e.status == 401 else None)

    @app.exception_handler(AvmError)
    async def _avm_error(request: Request, e: AvmError) -> JSONResponse:
        return _error_response(e)

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, e: OverflowError) -> JSONResponse:
        return _error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own (a body that is not JSON: 400, no such route: 404) in the shape
        # every error of this API has, so answers match the documented ErrorOut.
        phrase = HTTPStatus(e.status_code).phrase if e.status_code in _STATUSES else "error"
        return JSONResponse({"error": phrase, "detail": str(e.detail)}, e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(TimeoutError)
    async def _timeout(request: Request, e: TimeoutError) -> JSONResponse:
        return _error_response(e)

    names = _namer(host)
    rd, ad = [Depends(reader)], [Depends(admin)]

    lister = MachineLister(host)
    lister.names()  # sorted now, not when the first page is asked for

    @app.get("/machines", response_model=MachinesOut, dependencies=rd, tags=["machines"])
    async def machines(prefix: Annotated[str, Query(description="only names starting so")] = "",
                       limit: Annotated[int, Query(ge=1, le=MACHINES_LIMIT_MAX)] = 1000,
                       offset: Annotated[int, Query(ge=0, le=1 << 62,
                                                    description="skip this many (paging)")] = 0,
                       match: Annotated[str, Query(max_length=200, description=
                                                   "only names or behaviors containing this "
                                                   "(any case), or of this status")] = "",
                       status: Annotated[MachineStatus | None, Query(description=
                                                                      "only these")] = None,
                       sort: Annotated[MachineSort, Query(description="the order")] = "name",
                       desc: Annotated[bool, Query(description="largest first")] = False,
                       ) -> JSONResponse:
        """The machines with their statistics since the host started: filtered, sorted
        and paged here (``offset``, at most ``limit``), so a host of 100,000 machines
        answers a page, not all of them. ``matched``: how many passed the filters."""
        rows, matched, total = lister.page(prefix, match, status, sort, desc, offset, limit)
        return JSONResponse({"machines": rows, "matched": matched, "total": total,
                             "offset": offset})

    @app.get("/machines/{name}", response_model=MachineOut, dependencies=rd, tags=["machines"],
             responses={404: {"model": ErrorOut}})
    async def machine(name: str) -> JSONResponse:
        """One machine."""
        return JSONResponse(lister.info(_one(host, name)))

    @app.get("/machines/{name}/state", response_model=StateOut, dependencies=rd,
             tags=["machines"], responses={404: {"model": ErrorOut}})
    async def state(name: str) -> JSONResponse:
        """The machine's committed state (capabilities opaque: never their contexts)."""
        _one(host, name)
        v = await host.state(name)
        return JSONResponse({"name": name, "state": to_json(v, names), "text": to_text(v)})

    def _mint(name: str, context: Any = None, priority: float = 0.0) -> Any:
        return host.cap(name, context, priority)

    targets: dict[tuple, Any] = {}

    def _target(name: str, context_text: str) -> Any:
        """The capability a request goes through; minted once per machine, key and context
        (clients repeat the same few; sealing one costs an AES-SIV encryption)."""
        addr = _one(host, name).address  # not the host's own replies machine
        m = host._rt.net.machines.get(addr)
        key = (addr, getattr(m, "keyver", None), context_text)
        cap = targets.get(key)
        if cap is None:
            if len(targets) >= 1024:
                targets.clear()
            cap = targets[key] = host.cap(name, parse_value(context_text))
        return cap

    @app.post("/machines/{name}/send", response_model=SentOut, dependencies=ad,
              tags=["messages"], responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}})
    async def send(name: str, body: SendIn) -> JSONResponse:
        """Send one message; answered once it is queued durably."""
        cap = _target(name, body.context)
        content = parse_value(body.content, _mint)
        sent = await host.submit([(cap, content)], client=body.client)
        return JSONResponse({"name": name, "seq": sent[0][1] if sent else 0})

    @app.post("/machines/{name}/ask", response_model=AnswerOut, dependencies=ad,
              tags=["messages"], responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut},
                                            422: {"model": ErrorOut | HTTPValidationError,
                                                  "description": "the request failed or was "
                                                  "dropped (ErrorOut), or its body is not "
                                                  "valid (HTTPValidationError)"},
                                            504: {"model": ErrorOut}})
    async def ask(name: str, body: AskIn) -> JSONResponse:
        """Send a request with a reply capability appended; answer with the first reply."""
        return await _ask(name, body.content, body.context, body.timeout, body.client)

    async def _ask(name: str, content_text: str, context_text: str, timeout: float,
                   client: str) -> JSONResponse:
        # The route's body, shared with the lean path (_FastAsk): one way to ask.
        cap = _target(name, context_text)
        content = parse_value(content_text, _mint)
        if type(content) not in (tuple, str):
            raise UsageError('ask takes a tuple or a str, e.g. "get" or ("get",): the reply '
                             'capability is appended')
        v = await host.ask(cap, content, timeout=timeout, client=client)
        return JSONResponse({"name": name, "answer": to_json(v, names), "text": to_text(v)})

    app.state.ask = _ask
    app.state.admin_token = admin_b

    def _control(action: str, doc: str) -> None:
        async def route(name: str) -> JSONResponse:
            await getattr(host, action)(name)
            return JSONResponse({"name": name, "status": _status(host, name)})

        route.__doc__ = doc
        app.post(f"/machines/{{name}}/{action}", response_model=ControlOut, dependencies=ad,
                 tags=["control"], name=action, responses={404: {"model": ErrorOut}})(route)

    _control("suspend", "Stop running its batches; what arrives is queued.")
    _control("resume", "Run it again, its queue first.")
    _control("stop", "Stop it: batches to it are dropped.")
    _control("destroy", "Remove it, its state and its keys.")

    @app.post("/machines/{name}/step", response_model=StepOut, dependencies=ad,
              tags=["control"], responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut},
                                           504: {"model": ErrorOut}})
    async def step(name: str) -> JSONResponse:
        """Run exactly one batch of a suspended machine (a debugger's single step); it
        stays suspended. 400 if it is not suspended or has nothing queued."""
        _one(host, name)
        e = await host.step(name)
        f = e.failure
        return JSONResponse({"name": name, "status": _status(host, name), "seq": e.seq,
                             "sender": who(host._rt.net, e.chan[0]), "ok": e.ok, "steps": e.steps,
                             "rule": getattr(f, "rule", None) if f is not None else None,
                             "detail": str(f) if f is not None else None,
                             "queued": lister.info(_one(host, name))["queued"]})

    @app.post("/machines/{name}/restart", response_model=ControlOut, dependencies=ad,
              tags=["control"], responses={404: {"model": ErrorOut}})
    async def restart(name: str, body: RestartIn | None = None) -> JSONResponse:
        """Run it again and send it the life-cycle signal ("restart", info)."""
        await host.restart(name, parse_value(body.info) if body is not None else None)
        return JSONResponse({"name": name, "status": _status(host, name)})

    for table, doc in (("failures", "The newest failed batches (from the store)."),
                       ("drops", "The newest dropped batches (from the store)."),
                       ("history", "The newest applied batches (from the store).")):
        _log_route(app, host, table, doc, rd, names)

    @app.get("/stats", response_model=StatsOut, dependencies=rd, tags=["observe"])
    async def stats() -> JSONResponse:
        """The core's committed counters and the runtime's since start."""
        return JSONResponse({"counters": host.stats()})

    @app.get("/metrics", dependencies=rd, tags=["observe"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus text format (prefix avm_)."""
        return PlainTextResponse(render(host), media_type="text/plain; version=0.0.4")

    from .http_dict import add_dictionary_routes

    add_dictionary_routes(app, host, rd, ad)
    from .http_move import add_move_routes  # moving a machine to a peer host (admin)

    add_move_routes(app, host, ad)
    from .http_peek import add_peek_routes  # the peek route (admin: it runs code)

    add_peek_routes(app, host, rd, ad, names)
    from .http_state import add_state_routes  # state parts and edits, audit, batch pages

    add_state_routes(app, host, rd, ad, names)

    from .http_events import add_event_routes

    app.state.feed = add_event_routes(app, host, rd)

    from .http_web import add_web_routes

    add_web_routes(app)
    return app


_BEARER = HTTPBearer(auto_error=False, description="The read token (GET routes) or the admin "
                     "token (any route), from the host's token file.")
# At module level: FastAPI resolves the (string) annotations of routes in their globals.
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


def _error_response(e: BaseException) -> JSONResponse:
    """The answer to an error of a route (the exception handlers' and _FastAsk's)."""
    if isinstance(e, TimeoutError):
        return JSONResponse({"error": "TimeoutError", "detail": "no answer in time: ask again "
                             "with a longer timeout, or read the machine's failures"}, 504)
    if isinstance(e, OverflowError):
        # a number too large for the store (SQLite's 64-bit integers): bad input
        return JSONResponse({"error": "OverflowError", "detail": f"a number is out of "
                             f"range: {e}"}, 400)
    if isinstance(e, UnknownName):
        status, text = 404, str(e.args[0]) if e.args else "unknown name"
    elif isinstance(e, StoreError):
        status, text = 503, str(e)
    elif isinstance(e, AskFailed):
        status, text = 422, str(e)
    else:
        status, text = 400, str(e)
    return JSONResponse({"error": type(e).__name__, "detail": text}, status)


#: The largest body the lean ask path reads itself; a larger one goes to FastAPI.
FAST_ASK_BODY_BYTES_MAX = 64 * 1024
_ASK_FIELDS = frozenset({"content", "context", "client", "timeout"})


class _FastAsk:
    """``POST /machines/{name}/ask`` without FastAPI's machinery; everything else, and
    any ask this path does not take exactly, goes to the FastAPI application.

    Why: FastAPI's middleware, dependency solving and body model cost about as much per
    request as the ask itself (half of a round trip over one connection). This path
    takes only requests the documented route would take the same way (the admin token
    exactly, a JSON body whose fields have exactly the schema's types), then runs the
    route's own body (``app.state.ask``) and answers errors as the route's handlers do.
    Anything else (no token, the read token, a field FastAPI would coerce or refuse, a
    large body) is handed to FastAPI with the body read so far, and gets FastAPI's
    answer (401, 403, 422, ...). The route stays in ``/openapi.json``: it is the same
    route, with the same schema; this only answers it sooner.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.ask = app.state.ask
        self.bearer = b"bearer " + app.state.admin_token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if not (path.startswith("/machines/") and path.endswith("/ask")):
            return await self.app(scope, receive, send)
        name = path[len("/machines/"):-len("/ask")]
        auth = ctype = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v
            elif k == b"content-type":
                ctype = v
        ok = (name and "/" not in name and ctype == b"application/json" and auth is not None
              and len(auth) == len(self.bearer)
              and hmac.compare_digest(auth[:7].lower() + auth[7:], self.bearer))
        chunks: list[bytes] = []
        size = 0
        more = True
        while ok and more:
            m = await receive()
            if m["type"] != "http.request":  # the client went away
                return await self.app(scope, _replay(chunks, True, m, receive), send)
            chunk = m.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = m.get("more_body", False)
            ok = size <= FAST_ASK_BODY_BYTES_MAX
        args = _ask_args(b"".join(chunks)) if ok else None
        if args is None:
            return await self.app(scope, _replay(chunks, more, None, receive), send)
        try:
            r = await self.ask(name, *args)
        except (AvmError, TimeoutError, OverflowError) as e:
            r = _error_response(e)
        await r(scope, receive, send)


def _ask_args(body: bytes) -> tuple | None:
    """(content, context, timeout, client) if the body is exactly the schema's, else None."""
    try:
        d = json.loads(body)
    except ValueError:
        return None
    if type(d) is not dict or not d.keys() <= _ASK_FIELDS:
        return None
    content = d.get("content")
    context = d.get("context", "None")
    client = d.get("client", "http")
    timeout = d.get("timeout", 30.0)
    if type(content) is not str or type(context) is not str or type(client) is not str:
        return None
    if type(timeout) not in (int, float) or not 0 < timeout <= 3600:
        return None
    return content, context, float(timeout), client


def _replay(chunks: list[bytes], more: bool, last: dict | None, receive: Any) -> Any:
    """A ``receive`` that gives what was read already (then ``last``), then reads on."""
    if not chunks and last is None:
        return receive
    queue: list[dict] = [{"type": "http.request", "body": b"".join(chunks), "more_body": more}]
    if last is not None:
        queue.append(last)

    async def again() -> dict:
        if queue:
            return queue.pop(0)
        return await receive()

    return again


class _Denied(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _one(host: Host, name: str) -> Any:
    addr = host.network.names.get(name) if name != REPLIES else None
    try:
        m = host.record(name) if addr is not None else None  # evicted ones from the store
    except UnknownName:
        m = None
    if m is None or addr is None:
        raise UnknownName(f"no machine named {name!r}: GET /machines lists them")
    return MachineInfo(m.name, addr, m.behavior, m.status, m.keyver)


def _status(host: Host, name: str) -> str:
    try:
        return host.record(name).status if name in host.network.names else "destroyed"
    except UnknownName:
        return "destroyed"


def _namer(host: Host) -> Any:
    def name(addr: bytes) -> str | None:
        m = host._rt.net.machines.get(addr)
        return m.name if m is not None else None

    return name


_LOG_COLUMNS = {
    "failures": ("at", "chan", "seq", "dest", "rule", "detail"),
    "drops": ("at", "chan", "seq", "dest", "reason"),
    "history": ("at", "chan", "seq", "dest", "ok", "steps", "read_only"),
}


def _log_route(app: FastAPI, host: Host, table: str, doc: str, deps: list, names: Any) -> None:
    cols = _LOG_COLUMNS[table]

    async def route(limit: Annotated[int, Query(ge=1, le=LOG_LIMIT_MAX)] = 100) -> JSONResponse:
        path = host.store.path
        if path is None:
            return JSONResponse({"rows": [], "note": "an in-memory store keeps no logs"})
        await host.flush()
        rows = await asyncio.to_thread(_read_log, path, table, cols, limit)
        out = []
        for row in rows:
            d = dict(zip(cols, row, strict=True))
            for k in ("chan", "dest"):
                d[k] = _party(decode(d[k]), names)
            for k in ("ok", "read_only"):
                if k in d:
                    d[k] = bool(d[k])
            out.append(d)
        return JSONResponse({"rows": out})

    route.__doc__ = doc
    app.get(f"/{table}", response_model=RowsOut, dependencies=deps, tags=["observe"],
            name=table)(route)


def _party(v: Any, names: Any) -> Any:
    """A channel ``(sender, dest)`` or a destination with machine names where known."""
    if type(v) is bytes:
        return names(v) or v.hex()
    if type(v) is tuple:
        return [_party(x, names) for x in v]
    return to_json(v, names)


def _read_log(path: Path, table: str, cols: tuple, limit: int) -> list[tuple]:
    """Read with a connection of its own (read-only): the writer thread keeps its own."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return db.execute(f"SELECT {', '.join(cols)} FROM {table} "  # noqa: S608 - fixed names
                          "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    finally:
        db.close()


# ---------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the host owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpApi:
    """The control API serving one host; :func:`serve` makes and starts one."""

    def __init__(self, host: Host, bind: str = DEFAULT_BIND,
                 token_file: str | os.PathLike | None = None,
                 tokens: Tokens | None = None) -> None:
        self.host = host
        self.bind = parse_bind(bind)
        self.tokens = tokens or Tokens.new()
        self.token_file = Path(token_file) if token_file is not None else None
        self.app = make_app(host, self.tokens, self.token_file)
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None
        self.url = ""

    async def start(self) -> None:
        h, port = self.bind
        family = socket.AF_INET6 if ":" in h else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when
        # their proto says TCP (else Nagle and delayed ACKs cost 40 ms a request).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((h, port))
            sock.listen(256)
        except OSError as e:
            sock.close()
            raise UsageError(f"cannot listen on {h}:{port} ({e.strerror}): pick another "
                             f"--http HOST:PORT (port 0 takes any free one)") from None
        port = sock.getsockname()[1]
        shown = f"[{h}]" if family == socket.AF_INET6 else h
        self.url = f"http://{shown}:{port}"
        config = uvicorn.Config(_FastAsk(self.app), log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="avm-http")
        while not self._server.started:  # startup only binds the listening socket we made
            if self._task.done():
                self._task.result()
                raise UsageError("the HTTP server stopped while starting")
            await asyncio.sleep(0.001)
        if self.token_file is not None:
            _write_token_file(self.token_file, self.url, self.tokens)
        event("http.start", url=self.url, token_file=str(self.token_file)
              if self.token_file is not None else None)

    async def stop(self) -> None:
        feed = getattr(self.app.state, "feed", None)
        if feed is not None:
            feed.close()  # end the event streams: the server waits for open responses
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
        if self.token_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.token_file)
        event("http.stop", url=self.url)


@contextlib.asynccontextmanager
async def serve(host: Host, bind: str = DEFAULT_BIND,
                token_file: str | os.PathLike | None = None,
                tokens: Tokens | None = None) -> AsyncIterator[HttpApi]:
    """Serve ``host``'s control API while the block runs (tokens in ``token_file``)."""
    api = HttpApi(host, bind, token_file, tokens)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
