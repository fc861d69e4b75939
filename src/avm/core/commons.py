"""Commons services (DESIGN section 6): stateless services any host answers locally.

    "Some services do not care who answers: secure random bytes, estimated UTC time,
    null (a bit bucket that also consumes linear values), reflection on a value's
    structure, secure hashing, ... and feedback (send with delivery status)."

Protocol, the same for every service: the request content is ``(reply_cap, argument)``
and the answer is one message ``(reply_cap, (service_name, result))``, so a machine can
route answers with ``Behavior.on("random")`` and tell concurrent requests apart by the
reply capability's context. ``hash`` and ``reflect`` answer ``(name, result, argument)``:
the argument comes back, so asking about a linear value does not destroy it. ``null`` answers nothing; ``feedback`` is handled by the
network itself (it needs to see delivery).

Services here are pure: the random source and the clock are arguments.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from . import codec
from .caps import Capability, Self
from .schedule import rng_bytes
from .values import KIND_NAMES, Map, Sealed, Substructural, kind_of

__all__ = ["SERVICES", "serve", "reflect", "RANDOM_BYTES_MAX"]

SERVICES = ("random", "time", "null", "reflect", "hash", "feedback")
RANDOM_BYTES_MAX = 1 << 16


def reflect(v: Any) -> Map:
    """A one-level description of a value: its type, size and substructural kind."""
    t = type(v)
    desc: dict[str, Any] = {"kind": KIND_NAMES[kind_of(v)]}
    if v is None:
        desc["type"] = "none"
    elif t is bool:
        desc["type"] = "bool"
    elif t is int:
        desc["type"] = "int"
    elif t is float:
        desc["type"] = "float"
    elif t is Fraction:
        desc["type"] = "fraction"
    elif t is str:
        desc.update(type="text", size=len(v))
    elif t is bytes:
        desc.update(type="bytes", size=len(v))
    elif t is tuple:
        desc.update(type="tuple", size=len(v))
    elif t is Map:
        desc.update(type="map", size=len(v))
    elif isinstance(v, Substructural):
        desc["type"] = type(v).__name__.lower()
    elif t is Sealed:
        desc.update(type="sealed", sealer=v.sealer)
    elif t is Capability:
        desc.update(type="capability", commons=v.is_commons)
    elif t is Self:
        desc["type"] = "self"
    else:
        desc["type"] = "record"
        from .values import record_name
        desc["name"] = record_name(t)
    return Map(desc)


def serve(
    service: str, content: Any, now_ms: int, rng: int
) -> tuple[list[tuple[Capability, Any]], int, str | None]:
    """Answer one request. Returns (outputs, new rng state, error or None).

    A malformed request is refused with a reason and no output; the network counts it.
    """
    if service == "null":
        return [], rng, None
    if type(content) is not tuple or len(content) != 2 or type(content[0]) is not Capability:
        if service == "time" and type(content) is Capability:
            return [(content, ("time", now_ms))], rng, None
        return [], rng, f"{service} request must be (reply_capability, argument)"
    reply, arg = content
    if service == "time":
        return [(reply, ("time", now_ms))], rng, None
    if service == "random":
        if type(arg) is not int or not 0 <= arg <= RANDOM_BYTES_MAX:
            return [], rng, f"random takes a byte count in [0, {RANDOM_BYTES_MAX}]"
        data, rng = rng_bytes(rng, arg)
        return [(reply, ("random", data))], rng, None
    if service == "hash":
        # Like reflect, the value comes back with the answer: asking about a linear
        # value must not destroy it.
        return [(reply, ("hash", codec.value_hash(arg), arg))], rng, None
    if service == "reflect":
        return [(reply, ("reflect", reflect(arg), arg))], rng, None
    return [], rng, f"unknown commons service {service!r}; known: {', '.join(SERVICES)}"
