"""The ``spawner`` service: machines that create machines, through a capability.

    "There is no ambient authority and no spawn primitive. ... Creating machines is a
    capability the host may hand out (a "spawner" adapter)." (DESIGN section 3)

A spawner capability lets its holder create machines from behavior names, so that
attenuation can be made as the application runs (a membrane per new subscriber) instead
of only when the network is built. Nobody has one by default: the operator grants one
(:func:`grant`, ``Sim.spawner``) and hands it to a machine through its ``env`` (or in a
message), like any other capability.

Protocol (commons style, request content ``(reply, argument)``):

- ``(reply, ("spawn", behavior, init_args))``, or ``("spawn", behavior, init_args,
  context)``: create a machine running the behavior named ``behavior`` on the host that
  answers (the requester's), with ``init_args`` as its ``init`` argument; answer
  ``("spawned", cap)`` to ``reply``, ``cap`` being a capability to the new machine with
  ``context`` (default ``None``). It gets the commons services of its host as ``env``,
  and nothing else: whoever made it sends it what it should have.
- ``(reply, ("attenuate", behaviors))``: a new spawner that may create only the named
  behaviors (a subset of what this one may); answer ``("spawner", spawner_cap,
  revoke_cap)``.
- ``"revoke"`` sent to a revoke capability disables that spawner and every spawner
  attenuated from it, at once and for good. Machines already made stay.

Design decisions:

- **Unforgeable.** A spawner capability is a commons capability whose clear argument
  is ``("grant", id)``, a revoke capability ``("revoke", id)``; each id is 32 bytes of
  fresh key material from the network's secret, so neither can be guessed, and holding
  a spawner does not let one revoke it (nor the reverse).
- **State in the network value.** Grants live in ``net.spawners`` (``("grant", id) ->
  Map(allowed, parent, host)`` and ``("revoke", id) -> grant id``), so a run is
  deterministic and a snapshot or fork has its own. A grant is valid while neither it
  nor any spawner it was attenuated from is revoked (a chain of at most
  :data:`DEPTH_MAX`).
- **Init arguments may not hold linear, affine or relevant values**: they would enter
  the new machine's creation batch, which the runtime (not the requester) sends; send
  them to the new machine in a message instead. Such a request is refused and its values
  go back to the requester, as for any refused commons request.
- **Names.** The new machine is named ``"<behavior>~<n>"`` (``n`` counts the machines
  this network's spawners made), so the simulator can show it; capabilities, not names,
  are how machines reach it.
"""

from __future__ import annotations

from typing import Any

from .caps import Capability, commons_cap
from .keys import fresh_material
from .machine import capability_problem
from .netvalue import Env, Network, bump, mint, with_
from .values import Map, check_value

__all__ = ["SERVICE", "DEPTH_MAX", "BEHAVIORS_MAX", "grant", "handle", "allowed", "valid"]

SERVICE = "spawner"
#: Attenuations one spawner may be made from (the length of its chain of parents).
DEPTH_MAX = 16
#: Behavior names one attenuated spawner may list.
BEHAVIORS_MAX = 256
ID_BYTES = 32


def _draw(net: Network, purpose: str, host: str) -> tuple[Network, bytes]:
    n = net.kdf_n
    return with_(net, kdf_n=n + 1), fresh_material(net.secret, n, purpose, host)[:ID_BYTES]


def _new_grant(net: Network, host: str, names: tuple | None, parent: bytes | None,
               ) -> tuple[Network, Capability, Capability]:
    net, gid = _draw(net, "spawner", host)
    net, rid = _draw(net, "spawner-revoke", host)
    entry = Map(allowed=names, parent=parent, host=host, revoked=False, depth=0 if parent is None
                else net.spawners[("grant", parent)]["depth"] + 1)
    net = with_(net, spawners=net.spawners.set(("grant", gid), entry).set(("revoke", rid), gid))
    origin = net.hosts[host].address
    return (net, commons_cap(origin, SERVICE, ("grant", gid)),
            commons_cap(origin, SERVICE, ("revoke", rid)))


def _names(behaviors: Any) -> tuple | None | str:
    """The sorted tuple of behavior names, None for "any", or a reason why not."""
    if behaviors is None:
        return None
    if type(behaviors) is str:
        behaviors = (behaviors,)
    if type(behaviors) is not tuple or not all(type(b) is str for b in behaviors):
        return "spawner: behaviors are a tuple of names"
    if len(behaviors) > BEHAVIORS_MAX:
        return f"spawner: at most {BEHAVIORS_MAX} behavior names"
    return tuple(sorted(set(behaviors)))


def grant(net: Network, host: str, behaviors: Any = None) -> tuple[Network, Capability, Capability]:
    """The operator grants a spawner on ``host``: returns ``(net, spawner, revoke)``.

    ``behaviors`` (a tuple of names, or None for any registered behavior) limits what it
    may create.
    """
    from .errors import UnknownName, UsageError

    if host not in net.hosts:
        raise UnknownName(f"no host named {host!r}; hosts: {sorted(net.hosts)}")
    names = _names(behaviors)
    if type(names) is str:
        raise UsageError(names)
    return _new_grant(net, host, names if type(names) is tuple else None, None)


def valid(net: Network, gid: Any) -> Map | None:
    """The grant ``gid`` if it and every spawner it came from are not revoked."""
    if type(gid) is not bytes:
        return None
    entry = net.spawners.get(("grant", gid))
    g = entry
    for _ in range(DEPTH_MAX + 2):
        if g is None or g["revoked"]:
            return None
        parent = g["parent"]
        if parent is None:
            return entry
        g = net.spawners.get(("grant", parent))
    return None


def allowed(grant_entry: Map, behavior: str) -> bool:
    names = grant_entry["allowed"]
    return names is None or behavior in names


def handle(net: Network, env: Env | None, b: Any, msg: tuple, host: str,
           ) -> tuple[Network, list, list, str | None]:
    """One message to the spawner service: ``(net, outputs, events, refusal)``."""
    cap, content = msg
    args = cap.commons[1] if cap.commons is not None else ()
    if type(args) is not tuple or len(args) != 2 or type(args[0]) is not str:
        return net, [], [], "spawner: not a spawner capability"
    kind, ident = args
    if kind == "revoke":
        return _revoke(net, ident, content)
    if kind != "grant":
        return net, [], [], "spawner: not a spawner capability"
    entry = valid(net, ident)
    if entry is None:
        return net, [], [], "spawner: this spawner is unknown or revoked"
    if type(content) is not tuple or len(content) != 2 or type(content[0]) is not Capability \
            or capability_problem(content[0]) is not None:
        return net, [], [], "spawner request must be (reply_capability, argument)"
    reply, arg = content
    if type(arg) is tuple and len(arg) == 2 and arg[0] == "attenuate" and type(arg[0]) is str:
        return _attenuate(net, entry, ident, reply, arg[1], host)
    if type(arg) is tuple and len(arg) in (3, 4) and arg[0] == "spawn" and type(arg[0]) is str:
        return _spawn(net, env, entry, reply, arg, host)
    return net, [], [], ('spawner takes (reply, ("spawn", behavior, init_args[, context])) '
                         'or (reply, ("attenuate", behaviors))')


def _revoke(net: Network, rid: Any, content: Any) -> tuple[Network, list, list, str | None]:
    if not (type(content) is str and content == "revoke"):
        return net, [], [], 'a revoke capability takes "revoke"'
    gid = net.spawners.get(("revoke", rid)) if type(rid) is bytes else None
    if gid is None:
        return net, [], [], "spawner: unknown revoke capability"
    entry = net.spawners[("grant", gid)]
    if entry["revoked"]:
        return net, [], [], None
    net = with_(net, spawners=net.spawners.set(("grant", gid), entry.set("revoked", True)),
                stats=bump(net.stats, "spawner.revoked"))
    return net, [], [], None


def _attenuate(net: Network, entry: Map, gid: bytes, reply: Capability, behaviors: Any,
               host: str) -> tuple[Network, list, list, str | None]:
    names = _names(behaviors)
    if type(names) is str:
        return net, [], [], names
    if names is None:
        return net, [], [], "spawner: attenuate takes the tuple of behavior names to allow"
    if entry["allowed"] is not None and not set(names) <= set(entry["allowed"]):
        return net, [], [], "spawner: an attenuated spawner may only allow what its parent allows"
    if entry["depth"] >= DEPTH_MAX:
        return net, [], [], f"spawner: at most {DEPTH_MAX} attenuations deep"
    assert type(names) is tuple
    net, sp, rv = _new_grant(net, entry["host"], names, gid)
    net = with_(net, stats=bump(net.stats, "spawner.attenuated"))
    return net, [(reply, ("spawner", sp, rv))], [], None


def _spawn(net: Network, env: Env | None, entry: Map, reply: Capability, arg: tuple,
           host: str) -> tuple[Network, list, list, str | None]:
    from . import network as nw  # the one way a machine is made (its keys, its first batch)

    behavior, init_args = arg[1], arg[2]
    context = arg[3] if len(arg) == 4 else None
    if type(behavior) is not str:
        return net, [], [], "spawner: a behavior is named by a str"
    if not allowed(entry, behavior):
        return net, [], [], f"spawner: this spawner may not create {behavior!r}"
    if env is not None and behavior not in env.behaviors:
        return net, [], [], f"spawner: no behavior named {behavior!r}"
    if check_value(init_args) or check_value(context):
        return net, [], [], ("spawner: init arguments and the context may not hold linear, "
                             "affine or relevant values; send those to the new machine")
    k = net.stats.get("spawner.spawned", 0) + 1
    name = f"{behavior}~{k}"
    while name in net.names:
        k += 1
        name = f"{behavior}~{k}"
    net, address, evs = nw.spawn(net, name, behavior, init_args, host=host, env_obj=env)
    net = with_(net, stats=bump(net.stats, "spawner.spawned"))
    cap = mint(net, env or Env(), address, context)
    return net, [(reply, ("spawned", cap))], evs, None
