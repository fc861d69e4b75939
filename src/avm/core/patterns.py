"""Revocation and attenuation: patterns built from ordinary machines (DESIGN section 5).

    "Revocation and attenuation are patterns, not primitives: a caretaker context that
    the machine can disable, a membrane machine that forwards a subset of messages,
    rotating a machine's sealing key to revoke every capability it ever issued. Ship them
    as small, tested library behaviors."

A capability is a bearer secret that cannot be recalled once handed out: whoever holds the
bytes holds the authority. So revocation and attenuation are done by *indirection*: hand
out a capability to something you control, which decides, on every message, whether to
pass it on. This module offers the three forms, from finest to coarsest:

:class:`Grants` (a caretaker *context*)
    Inside one machine: every capability it issues carries a grant number in its sealed
    context, and the machine keeps the set of live grants in its state. Revoking is
    deleting a number. No extra machine and no extra hop; the right tool when the machine
    that issues the authority is also the one that decides to withdraw it (the chat
    room in ``examples/chat.py`` does this for its members).

:func:`caretaker` and :func:`membrane` (forwarding machines)
    A separate machine that stands in front of a capability someone else issued. The
    caretaker forwards everything until its admin capability says ``"revoke"``; the
    membrane forwards only an allowed set of message names (attenuation) and can be
    revoked the same way. Use them to pass on *part* of a capability you hold, or to lend
    it for a while, without asking its issuer (``examples/blog.py`` gives the public a
    read-only membrane in front of the blog).

:func:`revoke_all` (key rotation)
    The big hammer: rotate the machine's sealing key, and every capability it ever issued
    fails to unseal, which fails the batch that carries it (rule ``"unseal"``). Use it
    after a leak, when you cannot tell which capabilities escaped.

What forwarding keeps, and what it does not:

* a batch of ``n`` messages sent through a forwarder leaves it as one batch of the
  forwarded messages (rule 3), in the same order, so per-pair order and atomicity hold
  end to end *per forwarder*. Two messages sent through two different forwarders are two
  batches, and may commit separately.
* a forwarder is not transparent: the target sees the forwarder as the sender, messages
  take one more hop, and a revoked or refused message fails the batch *at the forwarder*.
  The original sender learns of it only if it asked for delivery status (the
  ``feedback`` commons service), exactly as with any other failed batch.
* a caretaker passes contents on as they are; a **membrane wraps** every capability that
  crosses it, in either direction. A reply capability carried in becomes the membrane's
  ``(OUTWARD, reply)`` capability, so the answer comes back out through the membrane;
  a capability of the target's side carried out in an answer becomes
  ``(INWARD, cap)``, and messages through it go in under the same allow-list. A wrapper
  going back to its own side is unwrapped, so a capability passed in and out again is
  the holder's own. Revoking the membrane therefore cuts everything that ever passed
  through it, not only its use capability (the classic E / Spritely membrane).
* linear capabilities get linear wrappers (the context holds them), so they are never
  copied; a capability *inside* a ``Linear``/``Affine``/``Relevant`` value cannot be
  wrapped without rebuilding that value, so the membrane refuses such a message
  (:class:`Refused`), and the runtime gives the linear value back to its sender. When a
  forwarded batch carrying linear values fails further on, they come back to the
  membrane, which does not take them (it cannot tell whose they were): that batch
  fails and they land in the host's dead letters, counted by the census.
* what a cryptographic ``Sealed`` holds cannot be seen, so capabilities inside one pass
  unwrapped: seal a capability only for a party you trust not to leak it.

One more pattern is about *spending*, not withdrawing:

:class:`OneShots` (a spent check for one-shot rights)
    A linear capability cannot be copied by a step, but linearity is checked per step:
    code that is not honest can keep the capability's *bytes* (``encode(cap)``, or a URI
    a client saw) and rebuild an equal capability in a later step or another run. Only
    the issuer can tell the second redemption from the first, so it keeps, in its state,
    the numbers of the rights it issued and has not seen spent; :meth:`OneShots.redeem`
    takes a number out and refuses it ever after with :class:`Spent`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .caps import Capability, Keyring, Self, unseal_context
from .conserve import strip
from .errors import AvmError, CapabilityError
from .machine import Behavior
from .values import (
    _ATOMS,
    LINEAR,
    NO_DROP,
    Affine,
    Linear,
    Map,
    Relevant,
    Sealed,
    _record_fields,
    record,
    record_name,
    replace_fields,
    substructural_items,
)

if TYPE_CHECKING:  # the simulator is only needed by the helpers for tests and scripts
    from .sim import Sim

__all__ = [
    "USE",
    "ADMIN",
    "INWARD",
    "OUTWARD",
    "GRANT",
    "ONE_SHOT",
    "Revoked",
    "Refused",
    "Spent",
    "Forward",
    "Grants",
    "is_grant",
    "OneShots",
    "is_one_shot",
    "caretaker",
    "membrane",
    "caretaker_args",
    "membrane_args",
    "forwarder_caps",
    "message_name",
    "map_capabilities",
    "revoke_all",
]

_SUBS = (Linear, Affine, Relevant)

#: Context of a forwarder's use capability: messages through it are passed on.
USE = "use"
#: Context of a forwarder's admin capability: it takes ``"revoke"``.
ADMIN = "admin"
#: First element of a membrane wrapper's context ``(INWARD, capability)``: a capability of
#: the target's side, handed out through the membrane; messages through it go in.
INWARD = "in"
#: First element of ``(OUTWARD, capability)``: a capability of the holders' side that a
#: message carried in; messages through it (answers, callbacks) go back out.
OUTWARD = "out"
#: First element of a grant context: ``(GRANT, number, inner_context)``.
GRANT = "grant"
#: First element of a one-shot context: ``Linear((ONE_SHOT, number, inner_context))``.
ONE_SHOT = "one-shot"


class Revoked(CapabilityError):
    """A message came through a capability that has been revoked.

    Raising it fails the whole batch (rule 1): nothing the batch carried takes effect.
    """


class Refused(CapabilityError):
    """A membrane was asked to pass a message its allow-list does not name, or one
    holding a capability it cannot wrap (inside a substructural value)."""


class Spent(CapabilityError):
    """A one-shot right (:class:`OneShots`) was redeemed before, or was cancelled.

    Raising it fails the whole batch: the second redemption takes no effect.
    """


# ---------------------------------------------------------------------------------------
# Message names, shared by the membrane and its users
# ---------------------------------------------------------------------------------------


def message_name(content: Any) -> str | None:
    """The name a :class:`~avm.Behavior` would dispatch ``content`` on, or None.

    ``"name"`` and ``("name", *args)`` are named ``"name"``; a record is named by its
    *registered* name (``record_name``), never by its bare class name, so two records
    called ``Deposit`` in different modules cannot be confused by a membrane.
    """
    t = type(content)
    if t is str:
        return content
    if t is tuple:
        return content[0] if content and type(content[0]) is str else None
    try:
        return record_name(t)
    except KeyError:
        return None


def _names(allow: Iterable[str | type]) -> tuple[str, ...]:
    out = []
    for a in allow:
        if isinstance(a, str):
            out.append(a)
        elif isinstance(a, type):
            try:
                out.append(record_name(a))
            except KeyError:
                raise AvmError(f"{a.__name__} is not a record; decorate it with @avm.record") from None
        else:
            raise AvmError(f"allow names messages by text or record class, got {a!r}")
    return tuple(sorted(set(out)))


# ---------------------------------------------------------------------------------------
# Forwarders: caretaker and membrane
# ---------------------------------------------------------------------------------------


@record(name="avm.patterns.Forward")
class Forward:
    """Init argument of :func:`caretaker` and :func:`membrane`.

    ``target``: the capability messages are forwarded to. ``allow``: message names that
    pass (``None``: all; a membrane needs a list). ``reply``: if set, the forwarder sends
    ``(kind, use_cap, admin_cap)`` there once it knows its own ``Self``, so a *machine*
    that asked a spawner for a forwarder gets its capabilities by message.
    """

    target: Capability
    allow: tuple | None = None
    reply: Capability | None = None


def caretaker_args(target: Capability, reply: Capability | None = None) -> Forward:
    """Init argument for :func:`caretaker`: forward everything to ``target``."""
    return Forward(target, None, reply)


def membrane_args(
    target: Capability, allow: Iterable[str | type], reply: Capability | None = None,
) -> Forward:
    """Init argument for :func:`membrane`: forward only messages named in ``allow``.

    ``allow`` holds message names and record classes (stored by registered name).
    """
    return Forward(target, _names(allow), reply)


def _forwarder(kind: str, name: str) -> Behavior:
    b = Behavior(name)
    wraps = kind == "membrane"

    @b.init
    def _init(state: Any, args: Any) -> tuple:
        if type(args) is Capability:
            args = Forward(args)
        if type(args) is not Forward:
            raise AvmError(
                f"a {kind}'s init argument is its target capability or a "
                f"{kind}_args(...) value, got {args!r}")
        if type(args.target) is not Capability:
            raise AvmError(f"a {kind} forwards to a capability, got {args.target!r}")
        if args.target.kind:
            # Every forwarded message is an output holding the target, and the state keeps
            # it too: a linear target would be copied on the first message.
            raise AvmError(
                f"a {kind} forwards many messages to its target, so the target must be an "
                "unrestricted capability; use a linear capability directly, once")
        allow = args.allow
        if wraps:
            if allow is None:
                raise AvmError("a membrane needs an allow-list; a caretaker forwards everything")
            allow = _names(allow)
        return [], Map(target=args.target, allow=allow, revoked=False, reply=args.reply)

    @b.signal("self")
    def _self(state: Map, me: Self) -> tuple:
        if wraps:
            # The membrane wraps with its own Self; a rotated key hands it the new one.
            state = state.set("me", me)
        reply = state.get("reply")
        if reply is None:
            return [], state
        # Handed over once: keeping the reply capability would only widen what leaks if
        # the state is ever shown to someone.
        return [(reply, (kind, me(USE), me(ADMIN)))], state.set("reply", None)

    def _check_in(state: Map, content: Any) -> None:
        if state["revoked"]:
            raise Revoked(f"this {kind} has been revoked")
        allow = state["allow"]
        if allow is not None and message_name(content) not in allow:
            raise Refused(
                f"this {kind} lets through only {list(allow)}, not {message_name(content)!r}")

    @b.otherwise
    def _route(state: Map, content: Any, *, ctx: Any) -> tuple:
        # Authority lives in the context (which capability the message came through), not
        # in the content, so this dispatches on the context only: a message named "revoke"
        # sent through the use capability is forwarded like any other.
        if type(ctx) is str:
            if ctx == USE:
                _check_in(state, content)
                target = state["target"]
                if wraps:
                    content = map_capabilities(content, _Crossing(state, INWARD))
                return [(target, content)], state
            if ctx == ADMIN:
                if content == "revoke":
                    # Forget the target as well: revocation is final and the capability
                    # is gone from the state that a debugger or the web page may show.
                    return [], state.update(revoked=True, target=None)
                raise AvmError(f"a {kind}'s admin capability takes 'revoke', got {content!r}")
        elif wraps and _is_wrapper(ctx):
            way, dest = ctx
            if way == INWARD:
                # Something of the inside, handed out through this membrane: the same
                # allow-list holds, so an answer's capability is no way around it.
                _check_in(state, content)
            elif state["revoked"]:
                raise Revoked(f"this {kind} has been revoked")
            return [(dest, map_capabilities(content, _Crossing(state, way)))], state
        raise CapabilityError(f"unknown {kind} context {ctx!r}")

    return b


def _is_wrapper(ctx: Any) -> bool:
    return (type(ctx) is tuple and len(ctx) == 2 and type(ctx[1]) is Capability
            and type(ctx[0]) is str and ctx[0] in (INWARD, OUTWARD))


class _Crossing:
    """What one membrane does to each capability a message carries across it.

    ``way`` is where the message goes: :data:`INWARD` (to the target's side) or
    :data:`OUTWARD` (back to the holders' side). A capability of the other side is
    wrapped, so that using it comes back through this membrane and stops working when
    the membrane is revoked; a wrapper of this membrane that is going home is unwrapped,
    so passing a capability in and back out gives the holder its own capability again
    (and the target its own: ``USE`` going in is the target). Commons capabilities are
    stateless services that carry no one's authority: they pass, with their arguments
    mapped. Substructural wrappers are wrapped again rather than unwrapped: unwrapping
    would destroy one linear value and create another, which only ``null`` may do.
    """

    __slots__ = ("me", "way", "back", "target", "ring")

    def __init__(self, state: Map, way: str) -> None:
        me = state.get("me")
        if type(me) is not Self or me._key is None:
            raise CapabilityError("this membrane has not been handed its Self yet")
        self.me = me
        self.way = way
        self.back = OUTWARD if way == INWARD else INWARD  # the wrapper context we make
        self.target = state["target"]
        self.ring: Keyring | None = None

    def __call__(self, cap: Capability) -> Capability:
        if cap.commons is not None:
            name, args = cap.commons
            new = map_capabilities(args, self)
            return cap if new is args else Capability(cap.address, commons=(name, new))
        me = self.me
        if cap.address == me.address and not cap.kind:
            if self.ring is None:
                self.ring = Keyring(me.address, me._key)  # type: ignore[arg-type]
            try:
                ctx = unseal_context(cap, self.ring)
            except AvmError:  # an older key version: not ours any more, wrap it
                ctx = None
            if ctx is not None:
                if _is_wrapper(ctx) and ctx[0] == self.way:
                    return ctx[1]  # a wrapper going home
                if type(ctx) is str and ctx == USE and self.way == INWARD:
                    return self.target
                # Another capability of this membrane (admin, or a wrapper that already
                # faces the side it is going to): its holder may have it as it is.
                return cap
        return me((self.back, cap), cap.priority)


def map_capabilities(value: Any, fn: Callable[[Capability], Capability]) -> Any:
    """``value`` with every capability ``c`` in it replaced by ``fn(c)``.

    Walks tuples, maps (keys and values), records and discretionary seals; the result
    is ``value`` itself (the same object) when ``fn`` changed nothing, and every part
    that holds no changed capability is shared. ``fn`` is not applied inside a
    capability (a commons capability's arguments are ``fn``'s business).

    Substructural values keep their identity: the runtime counts a ``Linear``,
    ``Affine`` or ``Relevant`` wrapper as *that object*, so rebuilding one around a
    changed value would drop the old one and create a new one, which no step may do.
    So a capability inside such a wrapper (or inside a discretionary ``Sealed`` that
    holds one) raises :class:`Refused` when ``fn`` would change it: put capabilities
    beside linear values, not inside them, when they must cross a membrane. What a
    cryptographic ``Sealed`` holds cannot be seen and is passed as it is.
    """
    t = type(value)
    if t in _ATOMS:
        return value
    if t is Capability:
        new = fn(value)
        if type(new) is not Capability:
            raise AvmError(f"map_capabilities: fn gave {type(new).__name__}, not a Capability")
        return new
    if t is tuple:
        out: list | None = None
        for i, x in enumerate(value):
            if type(x) in _ATOMS:
                continue
            y = map_capabilities(x, fn)
            if y is not x:
                if out is None:
                    out = list(value)
                out[i] = y
        return value if out is None else tuple(out)
    if t is Map:
        pairs = []
        changed = False
        for k, x in value.items():
            k2 = map_capabilities(k, fn)
            x2 = map_capabilities(x, fn)
            changed = changed or k2 is not k or x2 is not x
            pairs.append((k2, x2))
        if not changed:
            return value
        new_map = Map(pairs)
        if len(new_map) != len(value):
            raise Refused("two keys of a map became one capability when crossing")
        return new_map
    if t in _SUBS:
        inner = map_capabilities(value.value, fn)
        if inner is not value.value:
            raise Refused(
                f"a capability inside a {t.__name__} value cannot be wrapped without "
                "copying or dropping it; send capabilities beside substructural values")
        return value
    if t is Sealed:
        if value.crypto:
            return value
        p = map_capabilities(value.payload, fn)
        if p is value.payload:
            return value
        if value.kind:
            raise Refused("a capability inside a sealed substructural value cannot be wrapped")
        return Sealed(value.sealer, p)
    fields = _record_fields(t)
    if fields is not None:
        changes = {}
        for f in fields:
            x = getattr(value, f)
            if type(x) in _ATOMS:
                continue
            y = map_capabilities(x, fn)
            if y is not x:
                changes[f] = y
        return replace_fields(value, **changes) if changes else value
    return value  # Self, Sealer, Unsealer: no capability inside


@functools.cache
def caretaker(name: str = "caretaker") -> Behavior:
    """A machine that forwards every message to a target until it is revoked.

    Init argument: the target capability, or :func:`caretaker_args`. Its capabilities
    have the contexts :data:`USE` (forward) and :data:`ADMIN` (send ``"revoke"``). Give the
    use capability away and keep the admin one: revoking makes every later message
    through the use capability fail its batch with :class:`Revoked`.

    The same name gives the same behavior object, so spawning many caretakers in one
    simulator needs no extra names.
    """
    return _forwarder("caretaker", name)


@functools.cache
def membrane(name: str = "membrane") -> Behavior:
    """A machine that forwards only messages whose name is allowed: attenuation.

    Init argument: :func:`membrane_args` (target and allow-list). A message whose name
    (:func:`message_name`) is not allowed fails its batch with :class:`Refused`, so a
    batch that mixes allowed and forbidden messages is refused as a whole: attenuation
    never splits a transaction. Revocable like a :func:`caretaker`.

    Unlike a caretaker it wraps every capability a message carries across it (see the
    module text): capabilities carried in (reply capabilities) come back to the membrane
    as ``(OUTWARD, cap)`` capabilities, capabilities carried out (in answers) as
    ``(INWARD, cap)`` ones, which obey the same allow-list. Revoking it refuses all of
    them, so nothing that passed through keeps working.
    """
    return _forwarder("membrane", name)


def forwarder_caps(sim: Sim, name: str, priority: float = 0.0) -> tuple[Capability, Capability]:
    """``(use, admin)`` capabilities of the forwarder spawned as ``name`` in ``sim``.

    A simulator (or a host's admin) may mint any machine's capabilities; a *machine* gets
    them by passing ``reply`` in the init argument instead.
    """
    return sim.cap(name, USE, priority), sim.cap(name, ADMIN, priority)


# ---------------------------------------------------------------------------------------
# Grants: caretaker contexts inside one machine
# ---------------------------------------------------------------------------------------


@record(name="avm.patterns.Grants")
class Grants:
    """The live grants of one machine, kept in its state: revocable capabilities.

    ``issue`` mints a capability whose sealed context is ``(GRANT, number, inner)`` and
    records the number as live, with a label saying whom it was for; ``open`` turns a
    received context back into ``inner``, raising :class:`Revoked` unless its number is
    still live; ``revoke`` withdraws one. Numbers are never reused, so a revoked
    capability stays dead even if the same holder is granted again.

    Because the context is sealed, a holder can neither read nor change its grant number;
    so the machine's state alone decides, at the next message, whether it still works.
    """

    next: int = 0
    live: Map = Map()  # grant number -> label

    def issue(self, me: Self, inner: Any, label: Any = None, priority: float = 0.0,
              ) -> tuple[Grants, Capability, int]:
        """A new capability for ``inner`` and the grants that make it live."""
        n = self.next
        cap = me((GRANT, n, inner), priority)
        return Grants(n + 1, self.live.set(n, label)), cap, n

    def open(self, ctx: Any) -> Any:
        """The inner context of a live grant; :class:`Revoked` if it was withdrawn."""
        if not is_grant(ctx):
            raise CapabilityError(f"not a grant context: {ctx!r}")
        if ctx[1] not in self.live:
            raise Revoked(f"grant {ctx[1]} has been revoked")
        return ctx[2]

    def number(self, ctx: Any) -> int:
        """The grant number of a grant context (live or not)."""
        if not is_grant(ctx):
            raise CapabilityError(f"not a grant context: {ctx!r}")
        return ctx[1]

    def revoke(self, number: int) -> Grants:
        """Withdraw a grant; revoking one that is already gone changes nothing."""
        return Grants(self.next, self.live.discard(number))

    def revoke_label(self, label: Any) -> Grants:
        """Withdraw every live grant issued with ``label``."""
        live = self.live
        for n, lab in self.live.items():
            if lab == label:
                live = live.delete(n)
        return Grants(self.next, live)

    def is_live(self, number: object) -> bool:
        """Whether grant ``number`` is live (issued and not revoked)."""
        return number in self.live


def is_grant(ctx: Any) -> bool:
    """Whether ``ctx`` has the shape of a grant context."""
    return type(ctx) is tuple and len(ctx) == 3 and ctx[0] == GRANT and type(ctx[1]) is int


# ---------------------------------------------------------------------------------------
# One-shot rights: linear capabilities with a spent check
# ---------------------------------------------------------------------------------------


@record(name="avm.patterns.OneShots")
class OneShots:
    """One-shot rights of one machine, kept in its state: redeemed at most once, ever.

    ``issue`` mints a *linear* capability whose sealed context is
    ``Linear((ONE_SHOT, number, inner))``, with a fresh number from a counter, and records
    the number as outstanding; ``redeem`` takes a received context, checks that its number
    is still outstanding, removes it, and gives back ``inner`` with the output that
    destroys the linear context (it goes to the ``null`` commons capability). A second
    redemption of the same right, however the capability was rebuilt (``Capability(*fields)``,
    ``decode(encode(cap))``, its URI, bytes replayed from an earlier run), raises
    :class:`Spent` and fails its batch.

    Why the state must remember: the runtime counts a linear capability by its ciphertext
    within one step, so no step can send or keep two of them. But a capability's bytes are
    an ordinary value; a machine that is not honest can store them, send the capability,
    and rebuild an equal one in a later step, and a client outside the network can submit
    the same bytes twice. Only the issuer sees every redemption, so only the issuer can
    refuse the second.

    The state it keeps is the set of rights *outstanding* (issued, not yet redeemed), not
    of the ones spent: numbers come from a counter and are never reused, so "not
    outstanding" means "spent, cancelled or never issued", and the set stays as small as
    the number of rights in circulation. ``cancel`` withdraws a right that was never used.
    Because the number is sealed, a holder cannot read it or pick another one.

    A failed batch rolls the state back, so a redemption whose batch fails did not
    happen, and the right can be redeemed again (conservation returns the linear
    capability to its sender).

    A right whose *issuing* batch fails comes back to the issuer unused, in a
    ``~returned`` signal: :meth:`returned` cancels it and destroys it (or hands its
    ``inner`` back, to issue again), so the issuer keeps conservation in one call.
    """

    next: int = 0
    outstanding: Map = Map()  # number -> label, issued and not yet redeemed

    def issue(self, me: Self, inner: Any, label: Any = None, priority: float = 0.0,
              ) -> tuple[OneShots, Capability, int]:
        """A new linear one-shot capability for ``inner``, and the state that expects it.

        Returns ``(one_shots, capability, number)``: store ``one_shots`` in the state,
        send the capability on (it is linear: send it exactly once).
        """
        n = self.next
        cap = me(Linear((ONE_SHOT, n, inner)), priority)
        return OneShots(n + 1, self.outstanding.set(n, label)), cap, n

    def redeem(self, ctx: Any, null: Capability) -> tuple[OneShots, Any, list]:
        """Spend the right ``ctx``: ``(one_shots, inner, outputs)``, or raise :class:`Spent`.

        ``null`` is the ``null`` commons capability (from the ``"env"`` signal); the
        returned ``outputs`` send the linear context to it, the one way to destroy a
        linear value, so add them to the step's outputs.
        """
        n = self.number(ctx)
        if n not in self.outstanding:
            raise Spent(f"one-shot right {n} was already used")
        if type(null) is not Capability or null.commons is None or null.commons[0] != "null":
            raise AvmError("redeem needs the null commons capability, to destroy the context")
        return OneShots(self.next, self.outstanding.delete(n)), ctx.value[2], [(null, ctx)]

    def number(self, ctx: Any) -> int:
        """The number of a one-shot context (outstanding or not)."""
        if not is_one_shot(ctx):
            raise CapabilityError("not a one-shot context")
        return ctx.value[1]

    def cancel(self, number: int) -> OneShots:
        """Withdraw a right that was not used; cancelling a spent one changes nothing."""
        return OneShots(self.next, self.outstanding.discard(number))

    def is_outstanding(self, number: object) -> bool:
        """Whether right ``number`` was issued and is not yet redeemed or cancelled."""
        return number in self.outstanding

    def returned(self, me: Self, info: Any, null: Capability,
                 ) -> tuple[OneShots, list, tuple, tuple]:
        """Take back rights that came back unused, in a ``~returned`` signal.

        A right travels as a linear capability. When the batch that carried it fails or
        cannot be delivered (the holder is stopped or gone, or its step failed), the
        runtime gives it back to that batch's sender -- the issuer, for a right it just
        issued -- in ``info["values"]`` of the ``("~returned", info)`` signal
        (``@b.returned``), and the issuer must keep it, send it on or destroy it like any
        linear value. This is the usual choice, done for it: every returned message whose
        linear and relevant items are all rights this machine issued and still has
        outstanding goes to ``null`` (which destroys them: conservation holds), and
        those rights are cancelled (bytes of them that a holder kept are refused with
        :class:`Spent` ever after).

        ``me`` is the machine's bound ``Self`` (it opens the capabilities), ``null`` the
        ``null`` commons capability. Returns ``(one_shots, outputs, rest, rights)``:
        store ``one_shots``; add ``outputs`` to the step's outputs; ``rest`` holds the
        returned messages left alone (they carry other linear or relevant values, or
        rights this machine cannot open), which the handler still has to keep, send on
        or send to ``null``; ``rights`` lists ``(number, label, inner)`` of each right
        cancelled, to issue again (``issue(me, inner, label)``, a new number) if the
        issuer wants the holder to have one after all::

            @shop.returned
            def took_back(state, info):
                shots, outs, rest, _ = state["shots"].returned(state["me"], info, state["null"])
                return outs + [(state["null"], m) for m in rest], state.set("shots", shots)
        """
        if type(null) is not Capability or null.commons is None or null.commons[0] != "null":
            raise AvmError("returned needs the null commons capability, to destroy the rights")
        if type(me) is not Self or me._key is None:
            raise CapabilityError("returned needs this machine's bound Self, to open the rights")
        ring = Keyring(me.address, me._key)
        shots = self
        outputs: list = []
        rest: list = []
        rights: list = []
        for msg in info["values"]:
            found = shots._rights_in(msg, ring)
            if found is None:
                rest.append(msg)
                continue
            for n, inner in found:
                rights.append((n, shots.outstanding.get(n), inner))
                shots = shots.cancel(n)
            outputs.append((null, msg))
        return shots, outputs, tuple(rest), tuple(rights)

    def _rights_in(self, msg: Any, ring: Keyring) -> list | None:
        """``[(number, inner), ...]`` if every linear or relevant item of ``msg`` is an
        outstanding right opened by ``ring``; else None."""
        found: list = []
        for it in substructural_items(strip(msg)):
            if not it.kind & NO_DROP:
                continue  # affine: may be dropped with the message
            if type(it) is not Capability or it.kind != LINEAR or it.address != ring.address:
                return None
            try:
                ctx = unseal_context(it, ring)
            except AvmError:
                return None
            if not is_one_shot(ctx) or ctx.value[1] not in self.outstanding:
                return None
            found.append((ctx.value[1], ctx.value[2]))
        return found or None


def is_one_shot(ctx: Any) -> bool:
    """Whether ``ctx`` has the shape of a one-shot context."""
    if type(ctx) is not Linear:
        return False
    v = ctx.value
    return type(v) is tuple and len(v) == 3 and v[0] == ONE_SHOT and type(v[1]) is int


# ---------------------------------------------------------------------------------------
# Key rotation: revoke everything a machine ever issued
# ---------------------------------------------------------------------------------------


def revoke_all(sim: Sim, name: str, reissue: Iterable[Any] = ()) -> tuple[Capability, ...]:
    """Rotate machine ``name``'s sealing key, then mint fresh capabilities for ``reissue``.

    Every capability the machine issued before, to anyone, stops working: a batch that
    carries one fails with rule ``"unseal"`` and nothing in it applies. This includes
    capabilities held by the machine itself (callbacks it gave out, capabilities in its
    own state) and the ones the test or CLI minted, so ``reissue`` lists the contexts
    whose holders should keep access; hand the returned capabilities to them again. The
    machine is handed its new ``Self``, so what it mints afterwards works.

    On a host the same act is the admin's "rotate key" control; here it is
    :meth:`Sim.rotate_key` and a re-mint.
    """
    sim.rotate_key(name)
    return tuple(sim.cap(name, ctx) for ctx in reissue)
