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
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import immutables

from .caps import Capability, _check_cap_fields
from .codec import encode
from .errors import (
    CapabilityError,
    CodecError,
    SignalError,
    StepContractError,
    SubstructuralError,
    ValueRuleError,
)
from .values import (
    _ATOMS,
    _BIG,
    _FREE,
    _NBIG,
    BYTES_MAX,
    DEPTH_MAX,
    ITEMS_MAX,
    Map,
    ValueLimitError,
    _Invalid,
    _walk,
    _weigh,
    check_conservation,
    check_size,
    check_value,
    exact_size,
    map_fits,
)

_IMap = immutables.Map

__all__ = [
    "SIGNAL",
    "ANY",
    "Message",
    "StepFn",
    "Failure",
    "PUBLIC_REASONS",
    "public_reason",
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

    def __reduce__(self) -> str:
        # The one ANY, also in another process (behaviors are sent to host workers by
        # pickle): handlers compare the filter with ``is ANY``.
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

    ``rule`` is one of ``exception`` (the step raised), ``contract`` (wrong return shape, a
    message to something that is not a well-formed capability, or a message the behavior
    refuses), ``value`` (a mutable or unknown value in the outputs or state),
    ``substructural`` (a linear, affine or relevant value copied or dropped), ``signal``
    (unknown strong signal), ``unseal`` (a capability in the batch failed to open),
    ``timeout`` (interrupted too often or past its deadline), ``undeliverable`` (unknown
    or unreachable machine), ``internal`` (the runtime itself could not process it).

    Two audiences (DESIGN section 4, rule 10): ``detail``, ``error_type`` and ``path``
    (and ``str(failure)``) are for the receiver's operator and stay in the local trace;
    they may quote the receiver's contexts and values. :attr:`public` is what may go back
    to the sender (feedback, returned values): the rule, the message index and a fixed
    reason, never anything of the receiver's.
    """

    rule: str
    detail: str
    index: int | None = None
    error_type: str = ""
    path: str = ""

    def __str__(self) -> str:
        where = f" at message {self.index}" if self.index is not None else ""
        return f"{self.rule}{where}: {self.detail}"

    @property
    def public(self) -> str:
        """The sender's view: rule, message index, a generic reason; no detail."""
        return public_reason(self.rule, self.index)


#: The generic reason a sender is told for each failure rule (``Failure.public``).
PUBLIC_REASONS = {
    "exception": "the receiving step raised an error",
    "contract": "the receiver refused the message or its step broke the step contract",
    "value": "a value broke the value rules",
    "substructural": "a linear, affine or relevant value was copied or dropped",
    "signal": "the receiver does not handle this signal",
    "unseal": "a capability in the batch did not unseal",
    "timeout": "the batch was interrupted too often or ran past its deadline",
    "undeliverable": "the destination cannot run the batch",
    "internal": "the runtime could not process the batch",
}


def public_reason(rule: str, index: int | None = None) -> str:
    """``"<rule>[ at message <i>]: <generic reason>"``: safe to send to anyone."""
    reason = PUBLIC_REASONS.get(rule, "the batch failed")
    where = f" at message {index}" if type(index) is int else ""
    return f"{rule}{where}: {reason}"


class BatchResult(NamedTuple):
    """Outcome of :func:`run_batch`: a new state and outputs, or a failure and nothing."""

    ok: bool
    state: Any
    outputs: tuple[tuple[Capability, Any], ...]
    failure: Failure | None
    steps: int
    state_items: list | None
    #: No output holds a substructural item (so none needs counting again on its way).
    plain_outputs: bool = False


def _census(v: Any, out: list) -> None:
    """Collect substructural items of an already-validated value."""
    if type(v) not in _ATOMS:
        _walk(v, out)


def safe_text(x: Any, limit: int = 200) -> str:
    """``str(x)``, or a description when ``__str__`` raises or returns no text.

    Step code may raise anything, including an exception whose ``__str__`` or
    ``__repr__`` raises: describing a failure must never fail itself.
    """
    try:
        r = str(x)
        if type(r) is not str:
            raise TypeError
    except Exception:
        return f"<{_type_name(x)} (str() failed)>"
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _type_name(x: Any) -> str:
    try:
        name = type(x).__name__
        return name if type(name) is str else "object"
    except Exception:
        return "object"


def _fail(rule: str, e: BaseException | str, index: int | None, path: str = "") -> BatchResult:
    if isinstance(e, BaseException):
        detail = safe_text(e, 1000) or _type_name(e)
        etype = _type_name(e)
        if not path:
            try:
                p = getattr(e, "path", "")
            except Exception:
                p = ""
            path = p if type(p) is str else ""
    else:
        detail, etype = e, ""
    return BatchResult(False, None, (), Failure(rule, detail, index, etype, path), index or 0, None)


def run_batch(
    step: StepFn, state: Any, messages: Sequence[Message], state_items: list | None = None,
    plain_messages: bool = False,
) -> BatchResult:
    """Fold ``step`` over ``messages`` from ``state``; all or nothing (rules 1 and 2).

    Each message goes through four named steps: call the step (inline), then
    :func:`_check_outputs`, :func:`_check_new_state` and :func:`_check_conservation`.
    The common cases (no outputs, the same state or an atom, nothing substructural
    anywhere) are decided inline, so they cost a few type tests; anything else calls the
    helper, which returns either a failure or what the next message needs.

    ``state_items`` may pass the substructural items of ``state`` if the caller knows them,
    saving one walk. ``plain_messages`` says the caller knows no message holds a
    substructural item (the network knows it from the batch), saving one walk per message.

    Nothing a step does escapes as an exception (P9): a raise (any ``BaseException``
    but ``KeyboardInterrupt``), a result the checks cannot even inspect, or a value too
    deep to walk fails the batch with a reason and a path.
    """
    outputs: list = []
    cur = state
    if state_items is None:
        state_items = []
        try:
            _census(state, state_items)
        except (_Invalid, RecursionError):
            return _fail("value", "the state given to run_batch is not a value", None, "$.state")
    cur_items: Any = state_items
    atoms = _ATOMS
    outs_plain = True
    got: Any
    out_items: Any
    new_items: Any
    for i, msg in enumerate(messages):
        # 1. call the step
        try:
            result = step(msg, cur)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: B036 - a step may raise anything (P9)
            return _fail(_RULE_OF.get(type(e), "exception"), e, i)
        try:
            if type(result) is not tuple or len(result) != 2:
                return _fail("contract", _shape_error(result), i, "$")
            outs, new_state = result
            # 2. the outputs (empty, None or another falsy atom: nothing is sent)
            out_items = _NO_ITEMS
            if outs:
                got = _check_outputs(outs, i, outputs)
                if type(got) is BatchResult:
                    return got
                out_items = got
                if got:
                    outs_plain = False
            # 3. the new state
            if new_state is cur:
                new_items, same_items = cur_items, True
            elif type(new_state) in atoms:
                new_items, same_items = _NO_ITEMS, False
            elif (type(new_state) is Map and type(cur) is Map and new_state._tok is cur._tok
                  and new_state._d <= DEPTH_MAX and type(new_state._m) is _IMap
                  and type(new_state._subs) is _IMap):
                # The commonest step: a map state with one plain key updated. Its token
                # says it holds the very same substructural entries as before, and a map
                # the public API built is a value within the depth limit: O(1).
                new_items, same_items = cur_items, True
            else:
                got = _check_new_state(cur, cur_items, new_state, i)
                if type(got) is BatchResult:
                    return got
                new_items, same_items = got
            # 4. conservation, unless nothing substructural came in, stayed or went out
            if out_items or not (plain_messages or (
                    type(msg[0]) in atoms and type(msg[1]) in atoms)) or (
                    not same_items and (cur_items or new_items)):
                got = _check_conservation(msg, cur, cur_items, outs, new_state, new_items,
                                          out_items, i)
                if got is not None:
                    return got
        except RecursionError:
            return _fail("value", "a value is nested too deeply", i, "$")
        except Exception as e:  # an object the checks could not even inspect
            return _fail("value", f"the step's result could not be checked: {safe_text(e)}", i, "$")
        cur = new_state
        cur_items = new_items
    tc = type(cur)
    if (tc is int and not _NBIG <= cur < _BIG) or (tc is str and not cur.isascii()):
        # An int or str state is checked once, when the batch ends: only the state a
        # batch commits is ever stored, and a per-step test would cost the counter loop.
        got = _check_atom_state(cur, len(messages) - 1)
        if got is not None:
            return got
    # The size limits of the encoding, once per batch (only what a batch commits is
    # stored): O(1) for a map state, which carries its bounds.
    if tc is Map:
        if not map_fits(cur):
            got = _check_sizes(cur, (), len(messages) - 1)
            if type(got) is BatchResult:
                return got
            cur = got
    elif tc is not int and tc not in _SMALL:
        got = _check_sizes(cur, (), len(messages) - 1)
        if type(got) is BatchResult:
            return got
        cur = got
    if outputs:
        got = _check_sizes(cur, outputs, len(messages) - 1, of_state=False)
        if type(got) is BatchResult:
            return got
    return BatchResult(True, cur, tuple(outputs), None, len(messages),
                       cur_items if type(cur_items) is list else list(cur_items), outs_plain)


_SMALL = frozenset({type(None), bool, float})
#: Room left in a batch's encoding for what the host adds to the messages (addresses,
#: sequence numbers, timestamps): the outputs of one batch, together, fit the rest.
BATCH_SLACK_BYTES = 64 * 1024
BATCH_SLACK_ITEMS = 1024


def _check_sizes(state: Any, outputs: Sequence, i: int, of_state: bool = True) -> Any:
    """Can the encoding store the batch's final state, or its outputs together?

    Returns the state (a map with exact bounds if it had to be measured) or the failure.
    """
    try:
        if of_state:
            return check_size(state, "$.state")
        b = n = 0
        for pair in outputs:
            pb, pi = _weigh(pair)
            b += pb
            n += pi
        if b <= BYTES_MAX - BATCH_SLACK_BYTES and n <= ITEMS_MAX - BATCH_SLACK_ITEMS:
            return state
        b = n = 0
        for j, (_, content) in enumerate(outputs):
            check_size(content, f"$.outputs[{j}].content")
        for pair in outputs:
            pb, pi = exact_size(pair)
            b += pb
            n += pi
        if b > BYTES_MAX - BATCH_SLACK_BYTES or n > ITEMS_MAX - BATCH_SLACK_ITEMS:
            return _fail("value", (
                f"the batch's {len(outputs)} outputs together take {b} bytes and {n} items "
                f"to encode; one batch carries at most {BYTES_MAX - BATCH_SLACK_BYTES} bytes "
                f"and {ITEMS_MAX - BATCH_SLACK_ITEMS} items: send large data over several "
                "batches"), i, "$.outputs")
        return state
    except (ValueLimitError, CodecError) as e:
        return _fail("value", e, i)


def _check_atom_state(state: int | str, i: int) -> BatchResult | None:
    """The final state of a batch, a big int or non-ASCII text: can the encoding store it?"""
    try:
        check_value(state, "$.state")
    except ValueRuleError as e:
        return _fail("value", e, i if i >= 0 else None)
    return None


_NO_ITEMS: tuple = ()

_RULE_OF = {
    SignalError: "signal",
    SubstructuralError: "substructural",
    ValueRuleError: "value",
    ValueLimitError: "value",
    StepContractError: "contract",
}


def _check_outputs(outs: Any, i: int, outputs: list) -> list | BatchResult:
    """Step 2: every output is a (well-formed capability, value) pair.

    Appends the good outputs to ``outputs``; returns the substructural items they carry
    (capabilities of a substructural kind, what fresh capabilities hold, and contents),
    or the failure.
    """
    if type(outs) is not tuple and type(outs) is not list:
        return _fail("contract", (
            "the outputs must be a list or tuple of (capability, content) pairs, "
            f"got a {_type_name(outs)}"), i, "$.outputs")
    items: list = []
    for j, o in enumerate(outs):
        if type(o) is not tuple or len(o) != 2:
            return _fail("contract", (
                f"output {j} must be a (capability, content) pair, got {_short(o)}"), i,
                f"$.outputs[{j}]")
        cap, content = o
        if type(cap) is not Capability:
            return _fail("contract", (
                f"output {j} is sent to a {_type_name(cap)} ({_short(cap)}), which is not a "
                "capability; send only to capabilities you were given or made with Self"), i,
                f"$.outputs[{j}][0]")
        problem = capability_problem(cap)
        if problem is not None:
            return _fail("contract", f"output {j} is sent to a malformed capability: {problem}",
                         i, f"$.outputs[{j}][0]")
        tc = type(content)
        if (tc is int and _NBIG <= content < _BIG) or (tc is str and content.isascii()) or (
                tc in _FREE):
            n = 0
        else:
            try:
                n = _walk(content, None)
            except _Invalid:
                try:  # again, slowly, for the path
                    check_value(content, f"$.outputs[{j}].content")
                except ValueRuleError as e:
                    return _fail("value", e, i)
                return _fail("value", "not a value", i, f"$.outputs[{j}].content")
            except RecursionError:
                return _fail("value", "value nested too deeply", i, f"$.outputs[{j}].content")
            except Exception as e:  # something inside that even the walk cannot inspect
                return _fail("value", f"not a value ({_type_name(e)})", i,
                             f"$.outputs[{j}].content")
        if cap.kind:
            items.append(cap)
        if cap._held:
            try:
                for h in cap._held:
                    _census(h, items)
            except (_Invalid, RecursionError):
                return _fail("value", f"output {j}'s capability holds something that is not "
                             "a value", i, f"$.outputs[{j}][0]")
        if n:
            _census(content, items)
        outputs.append(o)
    return items


def _check_new_state(cur: Any, cur_items: Any, new_state: Any, i: int) -> tuple | BatchResult:
    """Step 3: the new state is a value; returns (its items, whether they are cur's)."""
    if cur_items and _same_substructure(cur, new_state) and new_state._d <= DEPTH_MAX:
        # A Map state whose substructural entries are the very same objects: the
        # common "update one plain key, keep the tokens" step costs O(tokens)
        # identity tests instead of a census. (A map the public API built is within
        # the depth limit; one the core updated without measuring is checked below.)
        return cur_items, True
    try:
        n = check_value(new_state, "$.state")
    except ValueRuleError as e:
        return _fail("value", e, i)
    new_items: list = []
    if n:
        _census(new_state, new_items)
    return new_items, False


def _check_conservation(msg: Message, cur: Any, cur_items: Any, outs: Any, new_state: Any,
                        new_items: Any, out_items: Any, i: int) -> BatchResult | None:
    """Step 4: what came in (state before, message) is what goes out (state, outputs)."""
    ctx, content = msg
    in_items = list(cur_items)
    try:
        _census(ctx, in_items)
    except _Invalid:
        return _fail("value", "the message's context is not a value", i, "$.message.context")
    try:
        _census(content, in_items)
    except _Invalid:
        return _fail("value", "the message's content is not a value", i, "$.message.content")
    if in_items or new_items or out_items:
        try:
            check_conservation(
                [("$.state_before", cur), ("$.message.context", ctx),
                 ("$.message.content", content)],
                [("$.state", new_state), ("$.outputs", tuple(outs) if outs else ())],
                in_items, [*new_items, *out_items])
        except SubstructuralError as e:
            return _fail("substructural", e, i)
    return None


def capability_problem(cap: Any) -> str | None:
    """Why ``cap`` (a Capability object) is malformed, or None.

    The constructor refuses wrong fields, but an object built around it (or by code that
    holds one) reaches the runtime too; one malformed capability must fail its batch, not
    the scheduler that would later compare its priority or hash its address.
    """
    e = _GOOD_CAPS.get(id(cap))
    if e is cap:  # this very object passed before; a Capability cannot change
        return None
    try:
        _check_cap_fields(cap.address, cap.keyver, cap.kind, cap.priority, cap.sealed,
                          cap.commons)
        if type(cap._held) is not tuple:
            return "its held context is not a tuple"
    except CapabilityError as e:
        return safe_text(e)
    except Exception:
        return "its fields cannot be read"
    if type(cap) is Capability:
        if len(_GOOD_CAPS) >= _GOOD_CAPS_MAX:
            _GOOD_CAPS.clear()
        _GOOD_CAPS[id(cap)] = cap
    return None


#: id -> capability of capabilities that passed capability_problem lately (a machine
#: sends through the same few, batch after batch); the entry holds the object, so its
#: id is not reused while it lives. Emptied when full.
_GOOD_CAPS: dict[int, Any] = {}
_GOOD_CAPS_MAX = 256


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
    try:
        r = repr(v)
        if type(r) is not str:
            raise TypeError
    except Exception:
        return f"<{_type_name(v)} (repr() failed)>"
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


_PLAIN_ATOMS = frozenset({str, bytes, int, bool, type(None)})


def same_value(a: Any, b: Any) -> bool:
    """Equal as AVM values: the same types all the way down.

    Authority lives in the context, so a context filter is an authority check, and Python's
    ``==`` is too kind for one (``0 == 0.0 == False`` and ``0.0 == -0.0``): a machine that
    seals ``True`` for its admin and ``1`` for a user must not let the user in. Atoms compare
    by exact type and value, tuples element by element, anything else by its canonical
    encoding (only once ``==`` already holds, so the common miss stays cheap).
    """
    ta = type(a)
    if ta is not type(b):
        return False
    if ta in _PLAIN_ATOMS:
        return bool(a == b)
    if ta is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if ta is tuple:
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b) and encode(a) == encode(b)
    except Exception:  # not a value (a filter that was never one): no match
        return False


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
      batch; unknown weak ones (``~name``) are ignored;
    * ``@b.returned`` (the same as ``@b.signal("~returned")``) takes back the linear and
      relevant values of a batch this machine sent that failed or could not be
      delivered: ``fn(state, info)``, ``info["values"]`` being those messages as
      ``(capability, content)`` pairs, ``info["reason"]`` and ``info["rule"]`` why.

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

    def returned(self, fn: Callable) -> Callable:
        """Take back what a failed or undeliverable batch of this machine carried.

        The runtime never lets a linear or relevant value vanish: when a batch holding
        some fails, is dropped or cannot be delivered, the messages that hold them come
        back to the sender as the weak signal ``("~returned", info)``, where ``info`` is a
        ``Map`` with ``values`` (the messages, ``(capability, content)`` pairs in send
        order), ``reason`` and ``rule`` (no detail of the receiver's). ``fn(state, info)``
        returns ``(outputs, new_state)`` like any handler and must keep the values, send
        them on, or send them to ``null``. Without a handler the weak signal is ignored,
        which would drop them: that batch fails, and the values go to the dead letters of
        the host (``Sim.dead_letters()``).
        """
        self._signals["~returned"] = fn
        return fn

    def __call__(self, msg: Message, state: Any) -> tuple:
        ctx, content = msg
        sc = self.signal_context
        if type(ctx) is type(sc) and same_value(ctx, sc):
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
                if want is ANY or same_value(ctx, want) or (
                        type(ctx) is tuple and ctx and same_value(ctx[0], want)):
                    try:
                        return fn(state, *args, ctx=ctx) if wants else fn(state, *args)
                    except TypeError as e:
                        _misfit(self.name, fn, (state, *args), wants, content, e)
                        raise
        if self._fallback is not None:
            fn, wants = self._fallback
            try:
                return fn(state, content, ctx=ctx) if wants else fn(state, content)
            except TypeError as e:
                _misfit(self.name, fn, (state, content), wants, content, e)
                raise
        if entries is not None:
            # Neither the capability's context nor the contexts the handlers want are
            # quoted: both are the receiver's secrets (contexts are sealed for a reason).
            key = content[0] if t is tuple else content if t is str else t.__name__
            raise StepContractError(
                f"{self.name} does not accept {key!r} through this capability: its "
                f"{len(entries)} handler(s) for {key!r} each require another context")
        known = sorted(self._by_name) + sorted(c.__name__ for c in self._by_type)
        raise StepContractError(
            f"{self.name} has no handler for message {_short(content)}; it handles {known}")

    def _on_signal(self, content: Any, state: Any) -> tuple:
        if type(content) is not tuple or len(content) != 2 or type(content[0]) is not str:
            raise SignalError(f"malformed signal {_short(content)}: expected (name, args)")
        name, args = content
        fn = self._signals.get(name)
        if fn is not None:
            try:
                return fn(state, args)
            except TypeError as e:
                _misfit(self.name, fn, (state, args), False, content, e)
                raise
        if name == "init":
            return [], args
        if name in self.KNOWN_SIGNALS or name.startswith("~"):
            return [], state
        raise SignalError(
            f"{self.name} got the strong signal {name!r}, which it does not handle; add "
            f"@{self.name}.signal({name!r}) or make the sender use a weak signal '~{name}'")



def _misfit(behavior: str, fn: Callable, args: tuple, wants_ctx: bool, content: Any,
            e: TypeError) -> None:
    """Raise StepContractError if ``fn`` could not even be called with ``args``.

    A handler whose parameters do not fit the message raises a bare ``TypeError`` from
    the call itself, which says nothing of which handler or which message; a TypeError
    raised inside the handler's body is its own and goes through unchanged.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args, **({"ctx": None} if wants_ctx else {}))
    except TypeError as why:
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "handler"
        given = len(args) - 1
        raise StepContractError(
            f"{behavior}: handler {name}{sig} cannot take message {_short(content)}: {why}. "
            f"It is called as {getattr(fn, '__name__', 'handler')}(state"
            + "".join(f", {_short(a)}" for a in args[1:])
            + (", ctx=...)" if wants_ctx else ")")
            + f" ({given} argument{'s' if given != 1 else ''} after the state); change its "
            "parameters or what the sender sends") from e
