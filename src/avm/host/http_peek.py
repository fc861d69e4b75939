"""The peek route of the host's HTTP control API (issue 9 items 2 and 3).

``POST /machines/{name}/peek`` replays the machine's newest batches against a version of
the dictionary or against source text, commits nothing, and answers how states and
outputs would differ (:mod:`avm.host.peek`). It takes the **admin** token although it
changes nothing: it runs code (the source given, or a version) in the host, which a
read-only token must never be able to make happen. Source that does not compile answers
400 with the compiler's message. On a host with isolated workers the code runs in the
machine's worker, as its batches do.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..core.errors import UsageError
from .api import Host
from .peek import LAST_DEFAULT, peek
from .store import REPLAY_PER_MACHINE_MAX

__all__ = ["add_peek_routes", "PeekIn", "PeekOut"]


class PeekIn(BaseModel):
    source: str | None = Field(None, description="Python source of the word to try (compiled "
                               "and run, never stored). Give this or `version`.")
    version: int | None = Field(None, ge=0, le=(1 << 63) - 1,
                                description="A version id of the dictionary to try.")
    word: str | None = Field(None, description="The word `source` is a version of (default: "
                             "the word the machine is bound to).")
    branch: str | None = Field(None, description="The branch whose words `use()` reaches "
                               "(default: the machine's binding's).")
    last: int = Field(LAST_DEFAULT, ge=1, le=REPLAY_PER_MACHINE_MAX,
                      description="How many of the newest recorded batches to replay.")


class PeekOut(BaseModel):
    name: str
    code: str = Field(description="What ran: a version, or the source of a word.")
    replayed: int
    differ: int = Field(description="Batches whose state, outputs or outcome differ.")
    note: str | None = None
    batches: list[dict[str, Any]] = Field(description="Oldest first: seq, sender, "
                                          "committed/peek outcome, from, state and outputs "
                                          "(equal or differs), changes (path, committed, "
                                          "peek; capabilities opaque), both outputs.")


def add_peek_routes(app: FastAPI, host: Host, rd: list, ad: list, names: Any) -> None:
    tags: list[str | Enum] = ["dictionary"]

    @app.post("/machines/{name}/peek", dependencies=ad, tags=tags, response_model=PeekOut,
              responses={400: {"description": "does not compile, or refused here"}})
    async def peek_route(name: str, body: PeekIn) -> JSONResponse:
        """A dry run (admin token: it runs code): replay the machine's newest batches
        against a version or source text; commit nothing; report the differences."""
        if (body.source is None) == (body.version is None):
            raise UsageError("give either source (text) or version (an id), not both")
        new: str | int = body.source if body.source is not None else int(body.version or 0)
        report = await peek(host, name, new, last=body.last, word=body.word,
                            branch=body.branch)
        return JSONResponse(report.to_json(names))
