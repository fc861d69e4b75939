"""The ``timer`` service: "send this message to this capability at time T / after D".

    "clock and timers ('wake me at T', 'every N s')" (DESIGN section 11)

A deadline used to mean busy-polling the ``time`` service (about 3.6M steps for one
hour). The timer service holds the message instead, and the network's virtual clock
jumps to the next due timer when nothing else can run, so a one-hour deadline costs a
handful of steps.

It is offered like a commons service (the ``timer`` capability of a machine's ``env``)
and speaks the commons protocol, but unlike the stateless services it keeps state: the
pending timers are part of the pure network value (``net.timers``, ``net.timer_order``),
so a run stays deterministic, replayable and forkable, and a nested network has timers
of its own. A host implements the same service durably.

Protocol (request content ``(reply, argument)`` as for every commons service):

- ``(reply, ("after", ms, target, content))``: send ``content`` to ``target`` in ``ms``
  milliseconds of network time (rounded up to whole ticks);
- ``(reply, ("at", t_ms, target, content))``: at UTC ``t_ms`` as the ``time`` service
  tells it (a time already past fires at once);
- the answer is ``("timer", cancel)`` to ``reply``: ``cancel`` is a capability; sending
  ``"cancel"`` to it cancels the timer if it has not fired (sending
  ``("cancel", reply2)`` also answers ``("cancelled", True/False)`` to ``reply2``).

Design decisions:

- **Unguessable ids.** A cancel capability is a commons capability whose clear argument
  is ``("cancel", id)``; the id is 32 bytes of fresh key material drawn from the
  network's secret (:func:`avm.core.keys.fresh_material`), so nobody can cancel a timer
  they were not given the capability for. It is a bearer secret like any capability.
- **Ordered.** ``net.timer_order`` holds the keys ``(due, id)`` sorted, in chunks of at
  most :data:`CHUNK_MAX` (a two-level persistent sorted list): the next due timer is
  the first key, and setting, firing or cancelling one copies one chunk and the outer
  tuple of chunk references, never walks every timer.
- **Fired timers are ordinary batches.** Every timer due on one host fires in one act of
  that host's timer service: the messages, in (due, id) order, are grouped per
  destination by :func:`avm.core.machine.partition` and each group is sent with
  :func:`avm.core.delivery.send_batch` from ``("~", "timer", host)``: the batching
  rules, the wire and the fault model apply as to any batch. A timer whose host is down
  fires when it is up again (timers are durable).
- **Linear values are conserved.** A timer may hold linear or relevant values (in its
  target capability or its content). While it waits they are in the network value (the
  census place ``timers``); when it fires they travel in the fired batch; when it is
  cancelled they go back to whoever set the timer, as the ``~returned`` signal of a
  batch that was not applied (rule ``cancelled``), or into the dead letters when that
  sender cannot take them (a client, a stopped machine). A fired batch that fails at its
  target is given back like any batch: to its sender, the timer service, which cannot
  take values, so they go to the dead letters of the timer's host.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from .caps import Capability, commons_cap
from .delivery import give_back, send_batch
from .keys import fresh_material
from .machine import capability_problem, partition
from .netvalue import Env, Network, bump, new_batch, with_
from .values import Map, record

__all__ = [
    "SERVICE",
    "Timer",
    "TIMERS_MAX",
    "TIMER_MS_MAX",
    "FIRE_MAX",
    "CHUNK_MAX",
    "ID_BYTES",
    "handle",
    "next_due",
    "fire",
    "pending",
    "due_tick",
]

SERVICE = "timer"
#: Pending timers one network holds; a request past it is refused (the sender gets its
#: linear values back), never queued.
TIMERS_MAX = 1_000_000
#: The longest delay (and the latest absolute time past the epoch): 100 years of ms.
TIMER_MS_MAX = 100 * 365 * 24 * 3600 * 1000
#: Timers one fire act sends at most; the rest fire at the next step, in order.
FIRE_MAX = 4096
#: Keys per chunk of ``net.timer_order``.
CHUNK_MAX = 64
#: Bytes of a timer id (an unguessable bearer secret).
ID_BYTES = 32


@record(name="avm.Timer")
class Timer:
    """One pending timer: send ``content`` to ``target`` at tick ``due``."""

    due: int  # network tick
    id: bytes
    host: str  # the host whose timer service holds it and sends it
    owner: Any  # who set it (a batch sender): where its values go back on cancel
    target: Capability
    content: Any


# -- the ordered index ----------------------------------------------------------------


def _insert(order: tuple, key: tuple) -> tuple:
    """``order`` (sorted chunks of sorted keys) with ``key`` added."""
    if not order:
        return ((key,),)
    i = bisect_left(order, key, key=lambda c: c[-1])
    if i == len(order):
        i -= 1
    chunk = order[i]
    j = bisect_left(chunk, key)
    chunk = (*chunk[:j], key, *chunk[j:])
    if len(chunk) > CHUNK_MAX:
        half = len(chunk) // 2
        return (*order[:i], chunk[:half], chunk[half:], *order[i + 1:])
    return (*order[:i], chunk, *order[i + 1:])


def _remove(order: tuple, key: tuple) -> tuple:
    """``order`` without ``key`` (which it holds)."""
    i = bisect_left(order, key, key=lambda c: c[-1])
    chunk = order[i] if i < len(order) else ()
    j = bisect_left(chunk, key)
    if j >= len(chunk) or chunk[j] != key:  # cannot happen: the map and the order agree
        raise AssertionError("timer index out of step with the timers")
    chunk = chunk[:j] + chunk[j + 1:]
    if not chunk:
        return order[:i] + order[i + 1:]
    return (*order[:i], chunk, *order[i + 1:])


def _due_prefix(order: tuple, now: int, limit: int) -> list:
    """The keys due at ``now`` or before, in order, at most ``limit``."""
    out: list = []
    for chunk in order:
        if chunk[0][0] > now:
            break
        j = bisect_right(chunk, (now, b"\xff" * (ID_BYTES + 1)))
        out.extend(chunk[:j])
        if len(out) >= limit:
            return out[:limit]
        if j < len(chunk):
            break
    return out


# -- the service ----------------------------------------------------------------------


def pending(net: Network) -> int:
    """How many timers wait in ``net``."""
    return len(net.timers)


def next_due(net: Network) -> int | None:
    """The tick of the earliest pending timer, or None."""
    order = net.timer_order
    return order[0][0][0] if order else None


def due_tick(net: Network, how: str, ms: int) -> int:
    """The tick at which a timer set now with ``(how, ms)`` is due."""
    cfg = net.config
    tick = cfg.tick_ms if cfg.tick_ms > 0 else 1
    if how == "after":
        return net.now + -(-ms // tick)
    return max(net.now, -(-(ms - cfg.epoch_ms) // tick))


def _problem(net: Network, arg: Any) -> str | None:
    if type(arg) is not tuple or len(arg) != 4 or type(arg[0]) is not str \
            or arg[0] not in ("after", "at"):
        return ('timer takes (reply, ("after", ms, target, content)) '
                'or (reply, ("at", t_ms, target, content))')
    how, ms, target = arg[0], arg[1], arg[2]
    if type(ms) is not int:
        return f"timer: {how} takes an int of milliseconds, not {type(ms).__name__}"
    if how == "after" and not 0 <= ms <= TIMER_MS_MAX:
        return f"timer: after takes milliseconds in [0, {TIMER_MS_MAX}]"
    if how == "at" and not 0 <= ms <= net.config.epoch_ms + TIMER_MS_MAX:
        return "timer: at takes a UTC time in milliseconds, at most 100 years past the epoch"
    if type(target) is not Capability or capability_problem(target) is not None:
        return "timer: the target must be a well-formed capability"
    return None


def handle(net: Network, env: Env | None, b: Any, msg: tuple, host: str,
           ) -> tuple[Network, list, list, str | None]:
    """One message of a batch to the timer service of ``host``.

    Returns ``(net, outputs, events, refusal)``: outputs are answers to send from the
    service, and a refusal (a reason) means the message was not taken: the caller gives
    its linear values back, as for any refused commons request.
    """
    cap, content = msg
    args = cap.commons[1] if cap.commons is not None else ()
    if type(args) is tuple and len(args) == 2 and args[0] == "cancel" and type(args[0]) is str:
        return _cancel(net, env, args[1], content, host)
    if args != () or type(args) is not tuple:
        return net, [], [], "timer: unknown timer capability"
    if type(content) is not tuple or len(content) != 2 or type(content[0]) is not Capability \
            or capability_problem(content[0]) is not None:
        return net, [], [], "timer request must be (reply_capability, argument)"
    reply, arg = content
    why = _problem(net, arg)
    if why is not None:
        return net, [], [], why
    if len(net.timers) >= TIMERS_MAX:
        return net, [], [], f"timer: {TIMERS_MAX} timers pending; refused"
    how, ms, target, inner = arg
    n = net.kdf_n
    tid = fresh_material(net.secret, n, "timer", host)[:ID_BYTES]
    due = due_tick(net, how, ms)
    t = Timer(due, tid, host, b.sender, target, inner)
    net = with_(net, kdf_n=n + 1, timers=net.timers.set(tid, t),
                timer_order=_insert(net.timer_order, (due, tid)),
                stats=bump(net.stats, "timer.set"))
    cancel = commons_cap(net.hosts[host].address, SERVICE, ("cancel", tid))
    return net, [(reply, ("timer", cancel))], [], None


def _cancel(net: Network, env: Env | None, tid: Any, content: Any, host: str,
            ) -> tuple[Network, list, list, str | None]:
    reply = None
    if type(content) is tuple and len(content) == 2 and content[0] == "cancel" \
            and type(content[0]) is str and type(content[1]) is Capability \
            and capability_problem(content[1]) is None:
        reply = content[1]
    elif not (type(content) is str and content == "cancel"):
        return net, [], [], 'a timer\'s cancel capability takes "cancel" or ("cancel", reply)'
    t = net.timers.get(tid) if type(tid) is bytes else None
    outs = []
    evs: list = []
    if t is None:  # fired or cancelled already: nothing to do, and nothing to tell apart
        net = with_(net, stats=bump(net.stats, "timer.cancel-late"))
    else:
        net = with_(net, timers=net.timers.delete(tid),
                    timer_order=_remove(net.timer_order, (t.due, tid)),
                    stats=bump(net.stats, "timer.cancelled"))
        # What the timer held goes back to whoever set it (D7), as a batch that will
        # not be applied; give_back keeps only the messages that hold linear or
        # relevant values, and dead-letters them when the owner cannot take them.
        held = new_batch(t.owner, ("~", SERVICE), 0, (0, 0), 0.0, ((t.target, t.content),))
        net, evs = give_back(net, held, "cancelled", "timer cancelled", t.host, env)
    if reply is not None:
        outs.append((reply, ("cancelled", t is not None)))
    return net, outs, evs, None


def fire(net: Network, env: Env | None = None) -> tuple[Network, list]:
    """Fire the timers due now (those of one host: one act of its timer service).

    Virtual time: the caller (``network.step``) jumps the clock to :func:`next_due` when
    nothing else can run, then calls this.
    """
    keys = _due_prefix(net.timer_order, net.now, FIRE_MAX)
    if not keys:
        return net, []
    first = net.timers[keys[0][1]]
    host = first.host
    h = net.hosts.get(host)
    if h is not None and not h.up:
        # A down host's timers fire when it restarts: move them to its restart tick.
        return _postpone(net, [k for k in keys if net.timers[k[1]].host == host],
                         max(h.down_until, net.now + 1)), []
    timers = net.timers
    order = net.timer_order
    outputs = []
    for k in keys:
        t = timers[k[1]]
        if t.host != host:
            continue
        timers = timers.delete(k[1])
        order = _remove(order, k)
        outputs.append((t.target, t.content))
    net = with_(net, timers=timers, timer_order=order,
                stats=bump(net.stats, "timer.fired", len(outputs)))
    evs: list = []
    sender = ("~", SERVICE, host)
    for dest, group in partition(outputs):
        prio = max(c.priority for c, _ in group)
        net, more = send_batch(net, sender, dest, group, host, prio)
        evs.extend(more)
    return net, evs


def _postpone(net: Network, keys: list, until: int) -> Network:
    timers = net.timers
    order = net.timer_order
    for k in keys:
        t = timers[k[1]]
        order = _insert(_remove(order, k), (until, k[1]))
        timers = timers.set(k[1], with_(t, due=until))
    return with_(net, timers=timers, timer_order=order)


def held_values(net: Network) -> Map:
    """The timers as ``id -> (target, content)``: what the census counts in them."""
    return Map({tid: (t.target, t.content) for tid, t in net.timers.items()})
