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
* these membranes filter by message name; they do not wrap the capabilities that travel
  inside messages (a reply capability passes through as it is). That is what attenuation
  by name needs, and it is what keeps them one small pure step.

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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .caps import Capability, Keyring, Self, unseal_context
from .conserve import strip
from .errors import AvmError, CapabilityError
from .machine import Behavior
from .values import LINEAR, NO_DROP, Linear, Map, record, record_name, substructural_items

if TYPE_CHECKING:  # the simulator is only needed by the helpers for tests and scripts
    from .sim import Sim

__all__ = [
    "USE",
    "ADMIN",
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
    "revoke_all",
]

#: Context of a forwarder's use capability: messages through it are passed on.
USE = "use"
#: Context of a forwarder's admin capability: it takes ``"revoke"``.
ADMIN = "admin"
#: First element of a grant context: ``(GRANT, number, inner_context)``.
GRANT = "grant"
#: First element of a one-shot context: ``Linear((ONE_SHOT, number, inner_context))``.
ONE_SHOT = "one-shot"


class Revoked(CapabilityError):
    """A message came through a capability that has been revoked.

    Raising it fails the whole batch (rule 1): nothing the batch carried takes effect.
    """


class Refused(CapabilityError):
    """A membrane was asked to pass a message its allow-list does not name."""


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
        if kind == "membrane":
            if allow is None:
                raise AvmError("a membrane needs an allow-list; a caretaker forwards everything")
            allow = _names(allow)
        return [], Map(target=args.target, allow=allow, revoked=False, reply=args.reply)

    @b.signal("self")
    def _self(state: Map, me: Self) -> tuple:
        reply = state.get("reply")
        if reply is None:
            return [], state
        # Handed over once: keeping the reply capability would only widen what leaks if
        # the state is ever shown to someone.
        return [(reply, (kind, me(USE), me(ADMIN)))], state.set("reply", None)

    @b.otherwise
    def _route(state: Map, content: Any, *, ctx: Any) -> tuple:
        # Authority lives in the context (which capability the message came through), not
        # in the content, so this dispatches on the context only: a message named "revoke"
        # sent through the use capability is forwarded like any other.
        if ctx == USE:
            if state["revoked"]:
                raise Revoked(f"this {kind} has been revoked")
            allow = state["allow"]
            if allow is not None and message_name(content) not in allow:
                raise Refused(
                    f"this {kind} lets through only {list(allow)}, not {message_name(content)!r}")
            return [(state["target"], content)], state
        if ctx == ADMIN:
            if content == "revoke":
                # Forget the target as well: revocation is final and the capability is
                # gone from the state that a debugger or the web page may show.
                return [], state.update(revoked=True, target=None)
            raise AvmError(f"a {kind}'s admin capability takes 'revoke', got {content!r}")
        raise CapabilityError(f"unknown {kind} context {ctx!r}")

    return b


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
