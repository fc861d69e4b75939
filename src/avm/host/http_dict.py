"""The dictionary's routes on the host's HTTP control API (issue 9 item 3, a first part).

Reading words, versions, history, diffs and branches needs the read token; editing a
word (which rebinds the machines that follow it), forking and merging branches, and
binding or rolling back a machine need the admin token. A concurrent edit from a stale
head and a merge conflict answer 409 with what conflicts; source that does not compile
answers 400 with the compiler's message. Nothing is changed by a refused request.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .api import Host
from .dictionary import MAIN, EditConflict, MergeConflict, Version

__all__ = ["add_dictionary_routes"]


class EditIn(BaseModel):
    source: str = Field(description="The word's new Python source.")
    branch: str = MAIN
    author: str = "http"
    message: str = ""
    expect: int | None = Field(None, description="The head version the edit starts from; "
                               "a different head is a conflict (409). Omit to edit any head.")
    new: bool = Field(False, description="The word must not exist yet.")


class BranchIn(BaseModel):
    name: str
    from_branch: str = MAIN


class MergeIn(BaseModel):
    source: str
    into: str = MAIN
    author: str = "http"
    resolve: dict[str, str | None] = Field(default_factory=dict, description="word -> the "
                                           "source to keep (null: remove the word)")


class BindIn(BaseModel):
    word: str
    branch: str = MAIN
    version: int | None = Field(None, description="Pin this version; omit to follow the head.")


def _v(v: Version, source: bool = False) -> dict[str, Any]:
    out = {"id": v.id, "word": v.word, "parent": v.parent, "merged": v.merged,
           "sha256": v.sha256, "author": v.author, "at": v.at, "message": v.message,
           "branch": v.branch}
    if source:
        out["source"] = v.source
    return out


def add_dictionary_routes(app: FastAPI, host: Host, rd: list, ad: list) -> None:
    tags: list[str | Enum] = ["dictionary"]

    def d() -> Any:
        return host.live.dictionary

    @app.get("/dictionary/branches", dependencies=rd, tags=tags)
    async def branches() -> JSONResponse:
        """The branches."""
        return JSONResponse({"branches": d().branches()})

    @app.get("/dictionary/words", dependencies=rd, tags=tags)
    async def words(branch: str = MAIN) -> JSONResponse:
        """The words of a branch with their head versions."""
        return JSONResponse({"branch": branch, "words": [
            _v(d().version(vid)) for vid in d().words(branch).values()]})

    @app.get("/dictionary/words/{word}", dependencies=rd, tags=tags)
    async def word(word: str, branch: str = MAIN, version: int | None = None) -> JSONResponse:
        """A word's head on a branch (or one version), with its source."""
        v = d().version(version) if version is not None else d().head(branch, word)
        return JSONResponse(_v(v, source=True))

    @app.get("/dictionary/words/{word}/history", dependencies=rd, tags=tags)
    async def history(word: str, branch: str = MAIN, limit: int = 100) -> JSONResponse:
        """A word's versions, newest first (first parents)."""
        return JSONResponse({"versions": [_v(v) for v in d().history(branch, word, limit)]})

    @app.get("/dictionary/words/{word}/diff", dependencies=rd, tags=tags)
    async def diff(word: str, branch: str = MAIN, a: int | None = None,
                   b: int | None = None) -> JSONResponse:
        """A unified diff from version ``a`` (default: the head's parent) to ``b`` (default:
        the head on ``branch``)."""
        head = d().head(branch, word)
        vb = d().version(b) if b is not None else head
        if a is None:
            if vb.parent is None:
                return JSONResponse({"a": None, "b": vb.id, "diff": "".join(
                    f"+{line}" for line in vb.source.splitlines(keepends=True))})
            a = vb.parent
        return JSONResponse({"a": a, "b": vb.id, "diff": d().diff(a, vb.id)})

    @app.post("/dictionary/words/{word}", dependencies=ad, tags=tags,
              responses={409: {"description": "the word changed since `expect`"}})
    async def edit(word: str, body: EditIn) -> JSONResponse:
        """A new version of a word; the machines that follow it run it from their next
        batch, with their states kept."""
        expect: Any = None if body.new else (body.expect if body.expect is not None else False)
        try:
            v = await host.live.edit(body.branch, word, body.source, author=body.author,
                                     message=body.message, expect=expect)
        except EditConflict as e:
            return JSONResponse({"error": "EditConflict", "detail": str(e)}, 409)
        return JSONResponse(_v(v))

    @app.post("/dictionary/branches", dependencies=ad, tags=tags)
    async def fork(body: BranchIn) -> JSONResponse:
        """Fork a branch."""
        d().branch(body.name, from_branch=body.from_branch)
        return JSONResponse({"branch": body.name, "from": body.from_branch})

    @app.post("/dictionary/merge", dependencies=ad, tags=tags,
              responses={409: {"description": "words changed on both sides"}})
    async def merge(body: MergeIn) -> JSONResponse:
        """Merge one branch into another, three-way per word; conflicts change nothing."""
        try:
            made = d().merge(body.source, body.into, author=body.author, resolve=body.resolve)
        except MergeConflict as e:
            return JSONResponse({"error": "MergeConflict", "detail": str(e), "conflicts": [
                {"word": c.word, "base": c.base, "ours": c.ours, "theirs": c.theirs}
                for c in e.conflicts]}, 409)
        return JSONResponse({"versions": [_v(v) for v in made]})

    @app.get("/machines/{name}/binding", dependencies=rd, tags=tags)
    async def binding(name: str) -> JSONResponse:
        """The word a machine is bound to, if any."""
        host.address(name)
        b = host.live.bindings().get(name)
        if b is None:
            return JSONResponse({"name": name, "bound": False})
        return JSONResponse({"name": name, "bound": True, "branch": b[0], "word": b[1],
                             "follows": b[2], "behavior": b[3], "previous": b[4]})

    @app.post("/machines/{name}/bind", dependencies=ad, tags=tags)
    async def bind(name: str, body: BindIn) -> JSONResponse:
        """Run a word on a machine from its next batch (state kept)."""
        behavior = await host.live.bind(name, body.word, body.branch, version=body.version)
        return JSONResponse({"name": name, "behavior": behavior})

    @app.post("/machines/{name}/rollback", dependencies=ad, tags=tags)
    async def rollback(name: str) -> JSONResponse:
        """Undo the machine's last rebind, in one action."""
        return JSONResponse({"name": name, "behavior": await host.live.rollback(name)})
