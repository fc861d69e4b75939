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

from typing import Any

from . import codec, matmul
from .caps import Capability
from .errors import ValueRuleError
from .keys import stream_bytes
from .machine import capability_problem
from .values import KIND_NAMES, Map, kind_of, value_type

__all__ = ["SERVICES", "serve", "reflect", "RANDOM_BYTES_MAX"]

SERVICES = ("random", "time", "null", "reflect", "hash", "feedback", "timer", "matmul")
RANDOM_BYTES_MAX = 1 << 16


def reflect(v: Any) -> Map:
    """A one-level description of a value: its type, size and substructural kind.

    Read from the table of value types (``values.VALUE_TYPES``): every value type has a
    name there, so reflect answers for every value (a Sealer, an Unsealer, a record...).
    """
    row = value_type(type(v))
    if row is None:
        raise ValueRuleError("$", f"reflect takes a value, not a {type(v).__name__}")
    desc: dict[str, Any] = {"kind": KIND_NAMES[kind_of(v)], "type": row.name}
    if row.describe is not None:
        desc.update(row.describe(v))
    return Map(desc)


def serve(
    service: str, content: Any, now_ms: int, rng: Any
) -> tuple[list[tuple[Capability, Any]], Any, str | None]:
    """Answer one request. Returns (outputs, new rng state, error or None).

    Never raises (P9): whatever a service cannot handle (a value it does not know, a
    malformed reply capability, an exception inside it) becomes a refusal with a reason
    that names the service and the error type, and the random state is left untouched.
    """
    try:
        outs, new_rng, err = _answer(service, content, now_ms, rng)
    except Exception as e:
        return [], rng, f"{_text(service)} could not answer the request ({type(e).__name__})"
    for reply, _ in outs:
        problem = capability_problem(reply)
        if problem is not None:
            return [], rng, f"{_text(service)}: the reply capability is malformed"
    return outs, new_rng, err


def _text(service: Any) -> str:
    return service if type(service) is str else "commons service"


def _answer(
    service: str, content: Any, now_ms: int, rng: Any
) -> tuple[list[tuple[Capability, Any]], Any, str | None]:
    """Answer one request. Returns (outputs, new rng state, error or None).

    ``rng`` is the requester's keyed random stream ``(key, counter)`` (see
    :mod:`avm.core.keys`); only ``random`` reads it.

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
        data, rng = stream_bytes(rng, arg)
        return [(reply, ("random", data))], rng, None
    if service == "hash":
        # Like reflect, the value comes back with the answer: asking about a linear
        # value must not destroy it.
        return [(reply, ("hash", codec.value_hash(arg), arg))], rng, None
    if service == "reflect":
        return [(reply, ("reflect", reflect(arg), arg))], rng, None
    if service == "matmul":
        why = matmul.problem(arg)
        if why is not None:
            return [], rng, why
        return [(reply, ("matmul", matmul.product(arg[0], arg[1])))], rng, None
    return [], rng, f"unknown commons service {service!r}; known: {', '.join(SERVICES)}"
