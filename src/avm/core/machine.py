"""Machines and transactional batch execution (DESIGN sections 3 and 4, rules 1-3).

    "A batch is processed all-or-nothing. If any step raises, violates the value or
    substructural rules, or the batch is abandoned, the machine's state is as if the
    batch never arrived and none of its outputs are sent."

:func:`run_batch` is the one place where a step function is called, by the simulator and
(later) by hosts alike. It folds the step over the batch's messages, checking at every
step boundary that the step kept its contract, that its outputs are values, and that
substructural items were conserved. Because states are immutable, rollback is free: on
failure we simply keep the state we started from.

The hot loop is written for the common case (small atoms, a large :class:`Map` updated
one key at a time) so that checking costs a few type tests per message; anything unusual
falls through to the full checks, which say precisely what went wrong and where.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .caps import Capability
from .errors import AvmError, SignalError, StepContractError, SubstructuralError, ValueRuleError
from .values import _ATOMS, Map, _Invalid, _walk, check_conservation, check_value

__all__ = [
    "SIGNAL",
    "ANY",
    "Message",
    "StepFn",
    "Failure",
    "BatchResult",
    "run_batch",
    "partition",
    "Behavior",
]

#: The default signal context: life-cycle messages arrive as ``Message(SIGNAL, (name, args))``.
SIGNAL = "avm:signal"


class _Any:
    """Matches every context in ``Behavior.on``."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()


class Message(NamedTuple):
    """What a step receives: the (private, unforgeable) context and the sender's content."""

    context: Any
    content: Any


StepFn = Callable[[Message, Any], tuple[Sequence[tuple[Capability, Any]], Any]]


@dataclass(frozen=True)
class Failure:
    """Why a batch failed. Always *definite*: nothing of the batch was applied.

    ``rule`` is one of ``exception`` (the step raised), ``contract`` (wrong return shape or
    a message to something that is not a capability), ``value`` (a mutable or unknown
    value in the outputs or state), ``substructural`` (a linear, affine or relevant value
    copied or dropped), ``signal`` (unknown strong signal), ``unseal`` (a capability in the
    batch failed to open), ``timeout`` (interrupted too often or past its deadline),
    ``undeliverable`` (unknown or unreachable machine).
    """

    rule: str
    detail: str
    index: int | None = None
    error_type: str = ""
    path: str = ""

    def __str__(self) -> str:
        where = f" at message {self.index}" if self.index is not None else ""
        return f"{self.rule}{where}: {self.detail}"


class BatchResult(NamedTuple):
    """Outcome of :func:`run_batch`: a new state and outputs, or a failure and nothing."""

    ok: bool
    state: Any
    outputs: tuple[tuple[Capability, Any], ...]
    failure: Failure | None
    steps: int
    state_items: list | None


def _census(v: Any, out: list) -> None:
    """Collect substructural items of an already-validated value."""
    if type(v) not in _ATOMS:
        _walk(v, out)


def _fail(rule: str, e: BaseException | str, index: int | None, path: str = "") -> BatchResult:
    if isinstance(e, BaseException):
        detail = str(e) or type(e).__name__
        etype = type(e).__name__
        path = path or getattr(e, "path", "") or ""
    else:
        detail, etype = e, ""
    return BatchResult(False, None, (), Failure(rule, detail, index, etype, path), index or 0, None)


def run_batch(
    step: StepFn, state: Any, messages: Sequence[Message], state_items: list | None = None,
    plain_messages: bool = False,
) -> BatchResult:
    """Fold ``step`` over ``messages`` from ``state``; all or nothing (rules 1 and 2).

    ``state_items`` may pass the substructural items of ``state`` if the caller knows them,
    saving one walk. ``plain_messages`` says the caller knows no message holds a
    substructural item (the network knows it from the batch), saving one walk per message.
    """
    outputs: list = []
    cur = state
    if state_items is None:
        state_items = []
        _census(state, state_items)
    cur_items = state_items
    for i, msg in enumerate(messages):
        try:
            result = step(msg, cur)
        except AvmError as e:
            return _fail(_RULE_OF.get(type(e), "exception"), e, i)
        except RecursionError as e:
            return _fail("exception", e, i)
        except Exception as e:
            return _fail("exception", e, i)
        if type(result) is not tuple or len(result) != 2:
            return _fail("contract", _shape_error(result), i)
        outs, new_state = result
        # -- outputs ----------------------------------------------------------------
        msg_out_items: list = []
        if outs:
            if type(outs) is not list and type(outs) is not tuple:
                return _fail("contract", (
                    f"the outputs must be a list or tuple of (capability, content) pairs, "
                    f"got a {type(outs).__name__}"), i)
            for j, o in enumerate(outs):
                if type(o) is not tuple or len(o) != 2:
                    return _fail("contract", (
                        f"output {j} must be a (capability, content) pair, got {_short(o)}"), i,
                        f"$.outputs[{j}]")
                cap, content = o
                if type(cap) is not Capability:
                    return _fail("contract", (
                        f"output {j} is sent to a {type(cap).__name__} ({_short(cap)}), which "
                        "is not a capability; send only to capabilities you were given or made "
                        "with Self"), i, f"$.outputs[{j}][0]")
                if type(content) in _ATOMS:
                    n = 0
                else:
                    try:
                        n = _walk(content, None)
                    except _Invalid:
                        try:  # again, slowly, for the path
                            check_value(content, f"$.outputs[{j}].content")
                        except ValueRuleError as e:
                            return _fail("value", e, i)
                        raise AssertionError("unreachable") from None
                    except RecursionError:
                        return _fail("value", f"$.outputs[{j}].content: value nested too deeply", i)
                if cap.kind:
                    msg_out_items.append(cap)
                if cap._held:
                    for h in cap._held:
                        _census(h, msg_out_items)
                if n:
                    _census(content, msg_out_items)
                outputs.append(o)
        # -- new state --------------------------------------------------------------
        same_items = False
        if new_state is cur:
            new_items = cur_items
            same_items = True
        elif type(new_state) in _ATOMS:
            new_items = []
        elif cur_items and _same_substructure(cur, new_state):
            # A Map state whose substructural entries are the very same objects: the
            # common "update one plain key, keep the tokens" step costs O(tokens)
            # identity tests instead of a census.
            new_items = cur_items
            same_items = True
        else:
            try:
                n = check_value(new_state, "$.state")
            except ValueRuleError as e:
                return _fail("value", e, i)
            new_items = []
            if n:
                _census(new_state, new_items)
        # -- conservation -------------------------------------------------------------
        ctx, content = msg
        if same_items and not msg_out_items and (plain_messages or (
                type(ctx) in _ATOMS and type(content) in _ATOMS)):
            # The state holds the same items, nothing came in, nothing went out.
            pass
        elif cur_items or new_items or msg_out_items or not plain_messages and (
                type(ctx) not in _ATOMS or type(content) not in _ATOMS):
            in_items = list(cur_items)
            try:
                _census(ctx, in_items)
                _census(content, in_items)
            except _Invalid:
                return _fail("value", "the message is not a value", i)
            if in_items or new_items or msg_out_items:
                try:
                    check_conservation(
                        [("$.state_before", cur), ("$.message.context", ctx),
                         ("$.message.content", content)],
                        [("$.state", new_state), ("$.outputs", tuple(outs) if outs else ())],
                        in_items, new_items + msg_out_items)
                except SubstructuralError as e:
                    return _fail("substructural", e, i)
        cur = new_state
        cur_items = new_items
    return BatchResult(True, cur, tuple(outputs), None, len(messages), cur_items)


_RULE_OF = {
    SignalError: "signal",
    SubstructuralError: "substructural",
    ValueRuleError: "value",
    StepContractError: "contract",
}


def _same_substructure(old: Any, new: Any) -> bool:
    """True when two Map states hold their substructural items in identical objects.

    The new map must have been validated by construction (Map validates on the way in),
    so only its substructural index needs comparing, entry by entry, by identity.
    """
    if type(old) is not Map or type(new) is not Map:
        return False
    if old._tok is new._tok:
        return True
    osubs, nsubs = old._subs, new._subs
    if len(osubs) != len(nsubs):
        return False
    om, nm = old._m, new._m
    for k in osubs:
        if k not in nsubs or nm.get(k) is not om[k]:
            return False
    return True


def _shape_error(result: Any) -> str:
    return (
        "a step must return (outputs, new_state), a pair; got "
        f"{_short(result)}. Return ([], state) to send nothing."
    )


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def destination(cap: Capability) -> Any:
    """The machine (address) or commons service (``("~", name)``) a capability reaches."""
    return ("~", cap.commons[0]) if cap.commons is not None else cap.address


def partition(outputs: Sequence[tuple[Capability, Any]]) -> list[tuple[Any, tuple]]:
    """Group outputs by destination, keeping relative order (rule 3).

    The key is the destination machine's address, except that commons capabilities are
    grouped per service (they are answered locally, not by the origin machine). Groups come
    out in the order of their first message, so the result is deterministic.
    """
    groups: dict[Any, list] = {}
    for o in outputs:
        key = destination(o[0])
        g = groups.get(key)
        if g is None:
            groups[key] = [o]
        else:
            g.append(o)
    return [(k, tuple(v)) for k, v in groups.items()]


# ---------------------------------------------------------------------------------------
# A pleasant way to write behaviors
# ---------------------------------------------------------------------------------------


class Behavior:
    """Build a step function from small handlers, dispatching on the message content.

    Every handler returns ``(outputs, new_state)``, exactly like a raw step function::

        counter = Behavior("counter")

        @counter.on("add")
        def add(state, n):
            return [], state + n

    * ``@b.on("name")`` handles content ``("name", *args)`` (or the bare text ``"name"``)
      and is called as ``fn(state, *args)``;
    * ``@b.on(RecordClass)`` handles content of that record type: ``fn(state, content)``;
    * a handler that declares a keyword-only parameter ``ctx`` also gets the context;
    * ``@b.on("name", context=c)`` only matches messages sent through a capability whose
      context is ``c`` (or a tuple starting with ``c``): authority lives in the context;
    * ``@b.signal("init")`` (or ``@b.init``), ``@b.signal("self")``, ``@b.signal("env")``
      and ``@b.signal("restart")`` handle life-cycle signals as ``fn(state, args)``.
      Without an ``init`` handler the initial state is the init argument; without the
      others those signals are accepted and ignored. Unknown strong signals fail the
      batch; unknown weak ones (``~name``) are ignored.

    A ``Behavior`` is callable with the step signature, so it goes wherever a step does.
    """

    KNOWN_SIGNALS = frozenset({"init", "self", "env", "restart"})

    def __init__(self, name: str = "behavior", signal: Any = SIGNAL) -> None:
        self.name = name
        self.signal_context = signal
        # key -> ((context filter, handler, wants ctx), ...), tried in order.
        self._by_name: dict[str, tuple[tuple[Any, Callable, bool], ...]] = {}
        self._by_type: dict[type, tuple[tuple[Any, Callable, bool], ...]] = {}
        self._signals: dict[str, Callable] = {}
        self._fallback: tuple[Callable, bool] | None = None

    def __repr__(self) -> str:
        return f"<Behavior {self.name}: {sorted(self._by_name)}>"

    @staticmethod
    def _wants_ctx(fn: Callable) -> bool:
        p = inspect.signature(fn).parameters.get("ctx")
        return p is not None and p.kind is inspect.Parameter.KEYWORD_ONLY

    def on(self, key: str | type, context: Any = ANY) -> Callable[[Callable], Callable]:
        """Handle messages named ``key`` (or of record type ``key``).

        With ``context=``, only messages that arrived through a capability whose context
        equals it, or is a tuple starting with it, match: authority lives in the context,
        so ``@b.on("revoke", context="admin")`` cannot be reached through a capability
        made for anything else. Handlers for one key are tried in the order declared.
        """
        def deco(fn: Callable) -> Callable:
            if not isinstance(key, (str, type)):
                raise TypeError("Behavior.on takes a message name (str) or a record class")
            entry = (context, fn, self._wants_ctx(fn))
            table: dict = self._by_name if isinstance(key, str) else self._by_type
            table[key] = (*table.get(key, ()), entry)
            return fn
        return deco

    def otherwise(self, fn: Callable) -> Callable:
        """Handle every message no other handler matches: ``fn(state, content)``."""
        self._fallback = (fn, self._wants_ctx(fn))
        return fn

    def signal(self, name: str) -> Callable[[Callable], Callable]:
        def deco(fn: Callable) -> Callable:
            self._signals[name] = fn
            return fn
        return deco

    def init(self, fn: Callable) -> Callable:
        self._signals["init"] = fn
        return fn

    def __call__(self, msg: Message, state: Any) -> tuple:
        ctx, content = msg
        if ctx == self.signal_context and type(ctx) is type(self.signal_context):
            return self._on_signal(content, state)
        t = type(content)
        if t is tuple and content and type(content[0]) is str:
            entries = self._by_name.get(content[0])
            args = content[1:]
        elif t is str:
            entries = self._by_name.get(content)
            args = ()
        else:
            entries = self._by_type.get(t)
            args = (content,)
        if entries is not None:
            for want, fn, wants in entries:
                if want is ANY or ctx == want or (
                        type(ctx) is tuple and ctx and ctx[0] == want):
                    return fn(state, *args, ctx=ctx) if wants else fn(state, *args)
        if self._fallback is not None:
            fn, wants = self._fallback
            return fn(state, content, ctx=ctx) if wants else fn(state, content)
        if entries is not None:
            raise StepContractError(
                f"{self.name} does not accept {_short(content)} through a capability with "
                f"context {_short(ctx)}; its handlers want contexts "
                f"{[e[0] for e in entries]}")
        known = sorted(self._by_name) + sorted(c.__name__ for c in self._by_type)
        raise StepContractError(
            f"{self.name} has no handler for message {_short(content)}; it handles {known}")

    def _on_signal(self, content: Any, state: Any) -> tuple:
        if type(content) is not tuple or len(content) != 2 or type(content[0]) is not str:
            raise SignalError(f"malformed signal {_short(content)}: expected (name, args)")
        name, args = content
        fn = self._signals.get(name)
        if fn is not None:
            return fn(state, args)
        if name == "init":
            return [], args
        if name in self.KNOWN_SIGNALS or name.startswith("~"):
            return [], state
        raise SignalError(
            f"{self.name} got the strong signal {name!r}, which it does not handle; add "
            f"@{self.name}.signal({name!r}) or make the sender use a weak signal '~{name}'")

