"""The move route of the host's HTTP control API (issue 8, item 5).

``POST /machines/{name}/move`` with ``{"to": PEER}`` moves the machine, with its state,
keys and queues, to a peer host of this one (:mod:`avm.host.migrate`) and answers once
this host forwards to it. Admin token: it hands the machine's keys to another host.
A peer that refuses the image answers 409 (the machine runs here again); a move that
does not finish within ``timeout`` answers 504, and its outcome is then *not known
yet*: it goes on (the move log carries it across restarts) until the destination
answers.
"""

from __future__ import annotations

from enum import Enum

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..core.caps import address_text
from .api import Host
from .migrate import MoveRefused, MoveTimeout

__all__ = ["add_move_routes", "MoveIn", "MoveOut"]


class MoveIn(BaseModel):
    to: str = Field(description="The peer host to move it to, by the name this host knows "
                    "it by (`avm host run --join`).", examples=["b"])
    timeout: float = Field(60.0, gt=0, le=3600, description="Seconds to wait for the "
                           "move to finish (it goes on after that; see 504).")


class MoveOut(BaseModel):
    name: str
    to: str
    destination: str = Field(description="The destination host's address.")
    seq: int = Field(description="The image's number on the move channel.")
    phase: str = Field(description="\"done\": the destination committed it and this host "
                       "forwards to it.")
    forwarded: int = Field(description="Batches that arrived during the move, relayed on.")


def add_move_routes(app: FastAPI, host: Host, ad: list) -> None:
    from .http import ErrorOut

    tags: list[str | Enum] = ["control"]

    @app.post("/machines/{name}/move", dependencies=ad, tags=tags, response_model=MoveOut,
              responses={400: {"model": ErrorOut,
                               "description": "not a peer, already moving, too large"},
                         404: {"model": ErrorOut, "description": "no such machine"},
                         409: {"model": ErrorOut,
                               "description": "the destination refused it: it runs here"},
                         504: {"model": ErrorOut,
                               "description": "not finished in time: outcome not known yet"}})
    async def move_route(name: str, body: MoveIn) -> JSONResponse:
        """Move it with its state, keys and queues to a peer host (admin token)."""
        try:
            r = await host.move(name, to=body.to, timeout=body.timeout)
        except MoveRefused as e:
            return JSONResponse({"error": type(e).__name__, "detail": str(e)}, 409)
        except MoveTimeout as e:
            return JSONResponse({"error": type(e).__name__, "detail": str(e)}, 504)
        return JSONResponse({"name": r.name, "to": r.to,
                             "destination": address_text(r.destination), "seq": r.seq,
                             "phase": r.phase, "forwarded": r.forwarded})
