"""Request and response: asking another machine, with a time-out and failure as a message.

Without help every query means minting a reply capability, threading a continuation
through its context, and a caller whose request failed waits forever unless it used
``feedback``. This module packages the pattern, built only from what a machine already
has (its ``Self``, the ``feedback`` and ``timer`` services of its ``env``):

- :func:`ask` (called in a handler) sends the request through ``feedback`` with a reply
  capability for a *correlation id* (the ``tag``), and with ``timeout_ms`` arms a timer;
  it records the ask in the state (a ``Map``, under :data:`ASKS`);
- :func:`asking` wraps the machine's step function: messages on the ask contexts
  ``(ASK, tag, kind)`` never reach the wrapped step; they end the ask exactly once and
  call ``answered(state, tag, content)`` or ``failed(state, tag, why, detail)`` with
  ``why`` ``"failed"`` (the request batch failed or was undeliverable: ``detail`` is
  feedback's reason) or ``"timeout"`` (``detail`` is the time-out in ms).

Whichever comes first wins; the others are ignored: an answer after the time-out, the
time-out after the answer (the timer is cancelled when the answer comes), a delivery
status. A late answer that holds linear values is not taken: its batch fails and the
values go back to their sender.

:meth:`avm.Sim.ask` is the same thing for tests and scripts, from outside the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .caps import Capability, Self
from .errors import AskError, AskFailed, AskTimeout, StepContractError, UsageError
from .values import Map, check_value, record

__all__ = [
    "ASK",
    "ASKS",
    "REPLY",
    "ask",
    "asking",
    "pending_asks",
    "AskError",
    "AskFailed",
    "AskTimeout",
    "fill_reply",
    "outside_request",
]

#: The first element of every ask context ``(ASK, tag, kind)``.
ASK = "avm.ask"
#: The state key that holds the pending asks: ``tag -> Map(cancel=..., timeout=...)``.
ASKS = "avm.asks"


@record(name="avm.Reply")
class ReplyMark:
    """The placeholder for the reply capability in a request (see :func:`fill_reply`).

    A value (a record without fields), so a request holding it can itself travel in a
    message to the machine that will ask."""

    def __repr__(self) -> str:
        return "avm.REPLY"


#: Stands for the reply capability in a request: ``("balance", REPLY)``.
REPLY = ReplyMark()


def fill_reply(request: Any, reply: Capability) -> Any:
    """The request with its reply capability: ``request(reply)`` for a function, else a
    tuple whose top-level :data:`REPLY` elements become ``reply``."""
    if type(request) is ReplyMark:
        return reply
    if type(request) is tuple:
        if any(type(x) is ReplyMark for x in request):
            return tuple(reply if type(x) is ReplyMark else x for x in request)
    elif callable(request):
        return request(reply)
    raise UsageError("a request needs a place for the reply capability: write it as a "
                     "function of the reply (lambda reply: ('get', reply)) or put "
                     "avm.REPLY in the tuple (('get', avm.REPLY))")


def outside_request(request: Any, reply: Capability) -> Any:
    """The content a host's ``ask`` sends for ``request``.

    Every request ``Sim.ask`` takes means the same here (:data:`REPLY` marks and
    functions of the reply, as in :func:`fill_reply`), so a test's asks carry over to a
    host unchanged. A host also appends the reply capability to a text or a tuple
    without a mark: ``"get"`` sends ``("get", reply)``, ``("get", 1)`` sends ``("get", 1,
    reply)``."""
    if type(request) is ReplyMark or callable(request) or (
            type(request) is tuple and any(type(x) is ReplyMark for x in request)):
        return fill_reply(request, reply)
    if type(request) is str:
        return (request, reply)
    if type(request) is tuple:
        return (*request, reply)
    raise UsageError(f"ask takes a text, a tuple (with avm.REPLY where the reply goes, or "
                     f"the reply is appended) or a function of the reply capability, not "
                     f"{type(request).__name__}")


def pending_asks(state: Any) -> Map:
    """The asks of ``state`` still waiting: ``tag -> Map(cancel, timeout)``."""
    if type(state) is not Map:
        return Map()
    asks = state.get(ASKS)
    return asks if type(asks) is Map else Map()


def ask(state: Map, me: Self, env: Map, target: Capability, request: Any, tag: Any, *,
        timeout_ms: int | None = None) -> tuple[list, Map]:
    """Ask ``target``: returns ``(outputs, new_state)`` to return from (or add to) a handler.

    ``request`` is the content, with :data:`REPLY` where the reply capability goes (or a
    function of the reply capability). ``tag`` is the correlation id, any unrestricted
    value not already pending. ``env`` is the machine's environment (it needs
    ``feedback``, and ``timer`` with a time-out). The state must be a ``Map``: the
    pending ask is kept in it under :data:`ASKS`.
    """
    if type(state) is not Map:
        raise StepContractError("ask keeps its pending asks in the state: the state must be a Map")
    if check_value(tag, "$.tag"):
        raise StepContractError("an ask's tag may not hold linear, affine or relevant values")
    asks = pending_asks(state)
    if tag in asks:
        raise StepContractError(f"an ask with tag {tag!r} is already pending")
    if timeout_ms is not None and (type(timeout_ms) is not int or timeout_ms < 0):
        raise StepContractError("timeout_ms is a non-negative int of milliseconds")
    content = fill_reply(request, me((ASK, tag, "answer")))
    outs: list = [(env["feedback"], (target, content, me((ASK, tag, "status")), tag))]
    if timeout_ms is not None:
        outs.append((env["timer"], (me((ASK, tag, "timer")),
                                    ("after", timeout_ms, me((ASK, tag, "timeout")), "timeout"))))
    entry = Map(cancel=None, timeout=timeout_ms)
    return outs, state.set(ASKS, asks.set(tag, entry))


Answered = Callable[[Any, Any, Any], tuple]
Failed = Callable[[Any, Any, str, Any], tuple]


def asking(step: Callable, answered: Answered, failed: Failed | None = None,
           name: str | None = None) -> Callable:
    """Wrap ``step`` so that the outcomes of its asks come as calls, each ask once.

    ``answered(state, tag, content)`` and ``failed(state, tag, why, detail)`` return
    ``(outputs, new_state)`` like handlers. Without ``failed``, a failure or time-out
    only forgets the ask. Every other message goes to ``step`` unchanged.
    """

    def wrapped(msg: Any, state: Any) -> tuple:
        ctx = msg[0]
        if type(ctx) is tuple and len(ctx) == 3 and type(ctx[0]) is str and ctx[0] == ASK:
            return _outcome(ctx[1], ctx[2], msg[1], state, answered, failed)
        return step(msg, state)  # type: ignore[no-any-return]

    wrapped.name = name or getattr(step, "name", None) or getattr(step, "__name__", "asking")  # type: ignore[attr-defined]
    wrapped.__wrapped__ = step  # type: ignore[attr-defined]
    return wrapped


def _outcome(tag: Any, kind: Any, content: Any, state: Any, answered: Answered,
             failed: Failed | None) -> tuple:
    asks = pending_asks(state)
    entry = asks.get(tag)
    if kind == "timer":  # ("timer", cancel): keep it, or cancel at once if already over
        cancel = content[1] if type(content) is tuple and len(content) == 2 else None
        if type(cancel) is not Capability:
            return [], state
        if entry is None:
            return [(cancel, "cancel")], state
        return [], state.set(ASKS, asks.set(tag, entry.set("cancel", cancel)))
    if entry is None:  # over already: a late answer, status or time-out
        if kind == "answer" and check_value(content):
            raise StepContractError("a late answer holds linear values; it is not taken")
        return [], state
    if kind == "status":
        if type(content) is tuple and content and content[0] == "failed" and type(content[0]) is str:
            detail = content[2] if len(content) > 2 else ""
            return _end(state, asks, tag, entry, failed, "failed", detail, None)
        return [], state  # delivered: the answer is still to come
    if kind == "timeout":
        return _end(state, asks, tag, entry, failed, "timeout", entry["timeout"], None)
    if kind == "answer":
        return _end(state, asks, tag, entry, None, "answer", content, answered)
    return [], state


def _end(state: Map, asks: Map, tag: Any, entry: Map, failed: Failed | None, why: str,
         detail: Any, answered: Answered | None) -> tuple:
    state = state.set(ASKS, asks.delete(tag))
    outs: list = []
    cancel = entry.get("cancel")
    if why != "timeout" and type(cancel) is Capability:
        outs.append((cancel, "cancel"))
    if answered is not None:
        more, state = answered(state, tag, detail)
    elif failed is not None:
        more, state = failed(state, tag, why, detail)
    else:
        more = []
    return [*outs, *more], state


# -- Sim.ask: the same from outside the network --------------------------------------

#: The behavior name and the machine name of the simulator's asker (one per Sim).
SIM_ASKER = "avm.asker"
_SIM_CTX = "avm.sim-ask"


def _asker(msg: Any, state: Any) -> tuple:
    """Keeps the first outcome per ask: ``n -> ("answer", content) | ("failed", reason)``."""
    ctx, content = msg
    if not (type(ctx) is tuple and len(ctx) == 3 and ctx[0] == _SIM_CTX):
        return [], (Map() if type(state) is not Map else state)  # life-cycle signals
    n, kind = ctx[1], ctx[2]
    if n in state:
        if kind == "answer" and check_value(content):
            raise StepContractError("a late answer holds linear values; it is not taken")
        return [], state
    if kind == "answer":
        return [], state.set(n, ("answer", content))
    if type(content) is tuple and content and content[0] == "failed":
        return [], state.set(n, ("failed", content[2] if len(content) > 2 else ""))
    return [], state


def sim_ask(sim: Any, cap: Capability, request: Any, *, timeout_ms: int | None = None,
            max_steps: int = 1_000_000, host: str | None = None) -> Any:
    """What :meth:`avm.Sim.ask` does (see there)."""
    from .caps import commons_cap
    from .timers import due_tick

    if type(cap) is not Capability:
        raise UsageError(f"ask needs a capability, not {type(cap).__name__}")
    if timeout_ms is not None and (type(timeout_ms) is not int or timeout_ms < 0):
        raise UsageError("timeout_ms is a non-negative int of milliseconds")
    if SIM_ASKER not in sim.net.names:
        if SIM_ASKER not in sim.env.behaviors:
            sim.behavior(_asker, SIM_ASKER)
        sim.spawn(SIM_ASKER, SIM_ASKER, None, host=host)
    n = sim._asks = getattr(sim, "_asks", 0) + 1
    me = sim.address(SIM_ASKER)
    content = fill_reply(request, sim.cap(SIM_ASKER, (_SIM_CTX, n, "answer")))
    origin = sim.net.hosts[sim.machine(SIM_ASKER).host].address
    status = sim.cap(SIM_ASKER, (_SIM_CTX, n, "status"))
    sim.send(commons_cap(origin, "feedback"), (cap, content, status, n))
    deadline = None if timeout_ms is None else due_tick(sim.net, "after", timeout_ms)
    for _ in range(max_steps):
        state = sim.net.machines[me].state
        if type(state) is Map and n in state:
            kind, value = state[n]
            if kind == "answer":
                return value
            raise AskFailed(value)
        if deadline is not None and sim.net.now > deadline:
            raise AskTimeout(timeout_ms or 0)
        evs = sim.step()
        if len(evs) == 1 and type(evs[0]).__name__ == "Idle":
            state = sim.net.machines[me].state
            if not (type(state) is Map and n in state):
                raise AskError("the network went idle without answering (the request was "
                               "delivered, but nothing was sent to its reply capability)")
    raise AskError(f"no answer within {max_steps} steps")
