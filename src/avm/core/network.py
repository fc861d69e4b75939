"""The purely functional network: the reference semantics (DESIGN sections 4 and 7).

    "The network is a value too: machines, pending batches per (sender, receiver)
    channel, the clock, and the scheduler's seed. step(network) -> (network, events)
    applies one batch according to section 4."

:class:`Network` is an immutable, encodable value (a registered record of persistent
maps), so it can be kept, compared, forked, and even be the state of a machine (nesting,
see ``avm.core.nest``). :func:`step` is a pure function of the network and an
:class:`Env` that resolves behavior names to step functions and caches keys; the cache
never changes results.

Machines live on named *hosts*; between hosts, batches travel through the delivery
protocol and fault model of :mod:`avm.core.delivery`. The records, events and shared
bookkeeping live in :mod:`avm.core.netvalue` and are re-exported here.

One step does one thing, in this order of preference:

1. deliver the earliest transmission that is due, or fire a due host event or retry;
2. otherwise run the best ready batch (rule 6: earliest timestamp weighted by priority);
3. otherwise advance the clock to the next timed event;
4. otherwise report that the network is quiescent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from . import inbox, spawner, timers
from .caps import (
    SEALING_KEY_BYTES,
    Capability,
    IdentityKey,
    Keyring,
    Self,
    address_of,
    address_text,
    kdf,
    name_address,
    seal_context,
)
from .commons import serve
from .conserve import Tally, needs_transit, opener_for, transit
from .conserve import _needs as _needs_transit
from .delivery import (
    clear_dead_letters,
    deliver,
    give_back,
    maybe_fault,
    notify,
    redeliver_dead_letter,
    restart_host,
    retry,
    send_batch,
)
from .errors import (
    AvmError,
    SubstructuralError,
    UnknownName,
    UnsealError,
    UsageError,
    ValueRuleError,
)
from .keys import check_material, fresh_material, sim_secret, stream_key
from .machine import (
    SIGNAL,
    BatchResult,
    Failure,
    Message,
    capability_problem,
    destination,
    partition,
    run_batch,
    safe_text,
)
from .netvalue import (
    Batch,
    Config,
    Env,
    Faults,
    HostRecord,
    MachineRecord,
    Network,
    batch_hash,
    bump,
    commons_env,
    enqueue_local,
    events,
    host_of_dest,
    host_of_sender,
    mint,
    quiescent,
    who,
    with_,
)
from .schedule import score
from .values import (
    _ATOMS,
    _BIG,
    _FREE,
    NO_COPY,
    NO_DROP,
    Map,
    _find_path,
    _Invalid,
    _walk,
    check_conservation,
    check_value,
    display,
    item_identity,
    record,
    substructural_items,
)

__all__ = [
    "Faults",
    "Config",
    "Batch",
    "MachineRecord",
    "HostRecord",
    "Network",
    "Env",
    "new_network",
    "add_host",
    "spawn",
    "submit",
    "step",
    "outside",
    "set_status",
    "rebind",
    "set_state",
    "peek_batch",
    "state_of",
    "MachineImage",
    "export_machine",
    "import_machine",
    "move",
    "rotate_key",
    "redeliver_dead_letter",
    "clear_dead_letters",
    "mint",
    "events",
    "quiescent",
    "who",
    "batch_hash",
]


def new_network(
    seed: int = 0, config: Config | None = None, hosts: Iterable[str] = ("h0",), *,
    secret: bytes | None = None,
) -> Network:
    """An empty network with ``hosts``.

    ``seed`` drives the scheduler's fault injection. ``secret`` is the key material every
    key of the network derives from (:mod:`avm.core.keys`): a host passes 32 bytes from
    the operating system. Without it the secret is derived from the seed, so a simulated
    run is reproducible; that is a test convenience, and whoever knows the seed knows
    every key of that run.
    """
    secret = sim_secret(seed) if secret is None else check_material(secret, "a network secret")
    net = Network(config=config or Config(), seed=seed, rng=seed & ((1 << 64) - 1),
                  secret=secret)
    for h in hosts:
        net = add_host(net, h)
    return net


def _draw(net: Network, purpose: str, *parts: Any) -> tuple[Network, bytes]:
    """Fresh key material from the network's secret; advances its draw counter."""
    n = net.kdf_n
    return with_(net, kdf_n=n + 1), fresh_material(net.secret, n, purpose, *parts)


def add_host(net: Network, name: str, material: bytes | None = None) -> Network:
    """Add a host; its identity key derives from ``material`` (default: a fresh draw)."""
    if name in net.hosts:
        raise AvmError(f"host {name!r} already exists")
    if material is None:
        net, material = _draw(net, "host", name)
    ident = IdentityKey.from_seed(kdf(check_material(material), "host-identity"))
    addr = address_of(ident.resource((("host", name),)))
    return with_(net, hosts=net.hosts._set_plain(name, HostRecord(name, addr)))


_NO_KEYS = Map()


def spawn(
    net: Network, name: str, behavior: str, args: Any = None, *, host: str | None = None,
    signal: Any = SIGNAL, env: Mapping[str, Any] | None = None, env_obj: Env | None = None,
) -> tuple[Network, bytes, list]:
    """Create a machine. Its first batch is ``[init, self, env]`` on its signal context.

    Its identity and first sealing key derive from fresh material drawn from the
    network's secret (:mod:`avm.core.keys`), so a rerun of the same script with the same
    secret (in the simulator: the same seed) gives the same addresses and capabilities,
    and spawning a name again after it was exported gives new keys.
    """
    if not host:
        if not net.hosts:
            raise AvmError("the network has no host; add one first")
        host = min(net.hosts._m)  # the first in sorted order: host names are text
    if host not in net.hosts:
        raise AvmError(f"unknown host {host!r}; add it first")
    if name in net.names:
        raise AvmError(f"a machine named {name!r} already exists")
    n_args = check_value(args, "$.args")
    if check_value(signal, "$.signal"):
        # The runtime mints the signal capability again for every life-cycle message:
        # a linear signal context would be copied each time.
        raise AvmError("a signal context may not hold linear, affine or relevant values")
    net, material = _draw(net, "machine", name)
    ident = IdentityKey.from_seed(kdf(material, "machine-identity"))
    address = name_address(ident, name)
    raw_bytes = kdf(material, "sealing-key", address, 0, n=SEALING_KEY_BYTES)
    rec = MachineRecord(name=name, state=None, behavior=behavior, signal=signal, host=host, keyver=0)
    net = with_(  # the record holds no substructural item: the state is None, the signal checked
        net,
        machines=net.machines._set_counted(address, rec, 0),
        names=net.names.set(name, address),
        keys=net.keys._set_plain(address, _NO_KEYS.set(0, raw_bytes)),
    )
    inbox.note_keys_added(address)
    key = (env_obj or Env()).sealing_key(0, raw_bytes)
    sig = seal_context(address, key, signal)
    envmap = commons_env(net, host)  # shared between machines: a Map is immutable
    n_env = 0
    if env:
        envmap = envmap.update(env)
        n_env = check_value(envmap)
    msgs = ((sig, ("init", args)), (sig, ("self", Self(address, 0, key))), (sig, ("env", envmap)))
    # Checked once: the capability and the Self hold nothing substructural (the signal
    # context was refused above if it did), the arguments and the env were counted.
    sender = _HOST_SENDERS.get(host)
    if sender is None:  # one tuple per host: a host keeps a channel number per machine
        if len(_HOST_SENDERS) >= 1024:
            _HOST_SENDERS.clear()
        sender = _HOST_SENDERS[host] = ("host", host)
    net, evs = enqueue_local(net, sender, address, msgs, host, 1.0, count=n_args + n_env)
    return net, address, [events.Spawned(name, address, host, net.now), *evs]


_HOST_SENDERS: dict[str, tuple] = {}


def rotate_key(net: Network, address: bytes, keep_old: bool = False,
               env: Env | None = None, material: bytes | None = None) -> tuple[Network, list]:
    """Give a machine a new sealing key version: revokes what it issued under the old ones.

    The new key derives from fresh key ``material`` (a host passes ``os.urandom(32)``);
    without it, fresh material is drawn from the network's secret and its draw counter,
    never re-derived from public inputs, so a leaked old key says nothing about the new.

    The machine is handed its new ``Self`` by a ``("self", Self)`` signal, as at spawn;
    a machine that kept its old ``Self`` would otherwise go on minting capabilities under
    the retired key, dead on arrival.
    """
    env = env or Env()
    versions = net.keys[address]
    v = max(versions) + 1
    if material is None:
        net, material = _draw(net, "rotate", address, v)
    raw = kdf(check_material(material), "sealing-key", address, v, n=SEALING_KEY_BYTES)
    new = (versions if keep_old else Map()).set(v, raw)
    m = net.machines[address]
    net = with_(net, keys=net.keys.set(address, new),
                machines=net.machines.set(address, with_(m, keyver=v)))
    new_self = Self(address, v, env.sealing_key(v, raw))
    sig = mint(net, env, address, m.signal)
    return enqueue_local(net, ("host", m.host), address, ((sig, ("self", new_self)),),
                          m.host, 1.0)


def state_of(net: Network, name: str) -> Any:
    """The state of machine ``name`` in ``net`` (for invariants given two networks)."""
    addr = net.names.get(name) if type(name) is str else None
    if addr is None:
        raise UnknownName(f"no machine named {name!r}; spawned: {sorted(net.names)}")
    return net.machines[addr].state


def machine_record(net: Network, address: Any) -> MachineRecord:
    """The record of the machine at ``address``, or :class:`UnknownName`."""
    m = net.machines.get(address) if type(address) is bytes else None
    if m is None:
        raise UnknownName(f"no machine at address {address_text(address)[:10]}... in this network"
                          if type(address) is bytes else f"not a machine address: {type(address).__name__}")
    return m


@record(name="avm.MachineImage")
class MachineImage:
    """Everything that makes a machine, as one value: for moving it between networks."""

    address: bytes
    name: str
    state: Any
    behavior: str
    signal: Any
    keyver: int
    keys: Map  # version -> sealing key bytes: an image is as secret as the machine


def export_machine(net: Network, address: bytes) -> tuple[Network, MachineImage]:
    """Take a machine out of a network (mobility, DESIGN section 7).

    Batches still queued for it stay behind and will be dropped as unknown-address,
    exactly as they would be on a host that no longer serves it; senders that care use
    ``feedback``. Its address and keys travel with it, so every capability to it still
    works wherever it is imported.
    """
    m = machine_record(net, address)
    image = MachineImage(address, m.name, m.state, m.behavior, m.signal, m.keyver,
                         net.keys[address])
    net = with_(net, machines=net.machines.delete(address), names=net.names.delete(m.name),
                keys=net.keys.delete(address))
    return net, image


def import_machine(net: Network, image: MachineImage, host: str) -> Network:
    """Install a machine image on ``host``; it keeps its address, keys and state."""
    if host not in net.hosts:
        raise UnknownName(f"unknown host {host!r}")
    if image.address in net.machines or image.name in net.names:
        raise AvmError(f"machine {image.name!r} is already in this network")
    rec = MachineRecord(name=image.name, state=image.state, behavior=image.behavior,
                        signal=image.signal, host=host, keyver=image.keyver)
    return with_(net, machines=net.machines.set(image.address, rec),
                 names=net.names.set(image.name, image.address),
                 keys=net.keys.set(image.address, image.keys))


def move(net: Network, address: bytes, host: str) -> Network:
    """Move a machine to another host of the same network; channels follow it."""
    if host not in net.hosts:
        raise UnknownName(f"unknown host {host!r}")
    m = machine_record(net, address)
    return with_(net, machines=net.machines.set(address, with_(m, host=host)))


def set_status(net: Network, address: bytes, status: str) -> Network:
    """Suspend, resume ("running") or stop a machine. A suspended machine queues its input."""
    if status not in ("running", "suspended", "stopped"):
        raise UsageError(f"unknown status {status!r}; use running, suspended or stopped")
    m = machine_record(net, address)
    return with_(net, machines=net.machines.set(address, with_(m, status=status)))


def rebind(net: Network, address: bytes, behavior: str,
           env: Env | None = None) -> tuple[Network, list]:
    """Hot swap: the machine runs ``behavior`` from its next batch on, with its state kept.

    Code and state change independently (a record names its behavior, the ``Env``
    resolves the name), so a swap is one field of the record: a batch that already ran
    ran whole under the old code, and every later one (an interrupted batch's re-run
    too) runs under the new. With ``env``, the name must be one it knows, so a typo is
    refused now rather than failing every later batch as ``undeliverable``. Returns the
    audit event ``Operator("rebind", address, now, "old -> new", (old, new))``.
    """
    if type(behavior) is not str or not behavior:
        raise UsageError(f"a behavior is named by a non-empty str, got {type(behavior).__name__}; "
                         "register a step function first (Sim.behavior) and pass its name")
    if env is not None and behavior not in env.behaviors:
        raise UnknownName(f"no behavior named {behavior!r}; known: {sorted(env.behaviors)}")
    m = machine_record(net, address)
    net = with_(net, machines=net.machines.set(address, with_(m, behavior=behavior)))
    return net, [events.Operator("rebind", address, net.now, f"{m.behavior} -> {behavior}",
                                 (m.behavior, behavior))]


def set_state(net: Network, address: bytes, value: Any) -> tuple[Network, list]:
    """An operator's edit of a machine's state, checked like a step's new state.

    The edit must be a value (``ValueRuleError`` with the path under ``$.state``) and
    must conserve the substructural items of the state it replaces, as if it were a step
    with no message and no outputs (``SubstructuralError``): a linear or relevant value
    of the old state may not be dropped, a linear or affine one not copied. It also may
    not bring in a substructural item the old state did not hold: an operator does not
    mint linear values (send them in a message instead, where the census counts them as
    entering the network); affine values may be dropped, as a step may. A refused edit
    changes nothing. Returns the audit event ``Operator("set_state", address, now,
    detail, (old, new))``.
    """
    m = machine_record(net, address)
    n = check_value(value, "$.state")
    old = m.state
    if n or (type(old) not in _ATOMS and check_value(old)):
        check_conservation([("$.state_before", old)], [("$.state", value)])
        had = {item_identity(it) for it in substructural_items(old)}
        for it in substructural_items(value):
            if item_identity(it) not in had:
                raise SubstructuralError(
                    _find_path([("$.state", value)], it),
                    f"the edit brings in {safe_text(it, 60)}, which the old state did not "
                    "hold; an edit may not create linear, affine or relevant values: send "
                    "them to the machine in a message")
    net = with_(net, machines=net.machines._set_counted(address, with_(m, state=value), n))
    return net, [events.Operator("set_state", address, net.now,
                                 safe_text(display(value), 80), (old, value))]


def submit(
    net: Network, messages: Iterable[tuple[Capability, Any]], client: str = "client",
    priority: float | None = None,
) -> tuple[Network, list]:
    """An outside client sends a batch (grouped per destination, rule 3).

    Everything is checked before anything is queued: a bad message refuses the whole
    submission with a typed error that names the culprit (``UsageError`` for a call that
    is wrong in shape, ``ValueRuleError`` with the path ``$[i]...`` for a message that is
    not a value or goes to a malformed capability, ``SubstructuralError`` for a copy).

    ``priority`` (in [-1, 1]) may only lower what the capabilities prove: the scheduler
    uses the lower of the two (DESIGN section 4, rule 7).
    """
    if priority is not None:
        if type(priority) not in (int, float) or not -1.0 <= priority <= 1.0:
            raise UsageError(f"a priority is a number in [-1, 1], got {priority!r}")
        priority = float(priority)
    if type(client) is not str:
        raise UsageError("a client is named by a str")
    try:
        msgs = tuple(messages)
    except Exception as e:
        raise UsageError("messages must be an iterable of (capability, content) pairs: "
                         f"{safe_text(e)}") from None
    items: list = []
    groups: dict[Any, list] = {}
    group_counts: dict[Any, int] = {}
    group_prio: dict[Any, float] = {}
    checked: set[int] = set()  # capabilities (by identity, alive for this call) found well-formed
    # Destinations whose messages hold something a host would not deliver as it is (item
    # 11): plaintext kept in memory, or a Self (unbound on arrival, bound again at home).
    strip: set = set()
    last_cap = None
    cap_strips = False
    cap_type = Capability
    atoms = _ATOMS
    free, lo, hi = _FREE, -_BIG, _BIG
    needs = _needs_transit  # conserve.needs_transit for a value known not to be an atom
    for j, o in enumerate(msgs):
        if type(o) is not tuple or len(o) != 2 or type(o[0]) is not cap_type:
            raise UsageError(f"message {j} must be a (capability, content) pair")
        cap, content = o
        if cap is not last_cap:  # batches mostly repeat one capability
            if id(cap) not in checked:
                problem = capability_problem(cap)
                if problem is not None:
                    raise ValueRuleError(f"$[{j}][0]", f"a malformed capability: {problem}")
                checked.add(id(cap))
            last_cap = cap
            cap_strips = bool(cap._held) or cap.commons is not None and needs_transit(cap.commons[1])
            # The group of this capability's destination, found once per run of
            # messages with the same capability (as is its priority's share).
            key = destination(cap)
            found = groups.get(key)
            if found is None:
                g = groups[key] = []
                group_counts[key] = 0
                group_prio[key] = cap.priority
            else:
                g = found
                if cap.priority > group_prio[key]:
                    group_prio[key] = cap.priority
        n = 1 if cap.kind or cap._held else 0
        strips = cap_strips
        tc = type(content)
        if tc is int:  # an atom passes the atom test of values._walk, and is valid as it is
            walk = not lo <= content < hi
        elif tc is tuple:
            # The usual ("name", atoms...): one pass of the same atom test, which _walk
            # makes inline, and no walk at all if every element passes it: such a tuple
            # is valid, holds no substructural item and needs no stripping.
            walk = False
            for x in content:
                tx = type(x)
                if not (tx in free or (tx is int and lo <= x < hi)
                        or (tx is str and x.isascii())):
                    walk = True
                    break
        elif tc is str:
            walk = not content.isascii()
        else:
            walk = tc not in free
        if walk:
            try:
                n += _walk(content, None)
            except _Invalid:
                check_value(content, f"$[{j}].content")  # raises with the path
                raise ValueRuleError(f"$[{j}].content", "not a value") from None
            except RecursionError:
                raise ValueRuleError(f"$[{j}].content", "value nested too deeply") from None
            except Exception as e:  # something inside that even the walk cannot inspect
                raise ValueRuleError(f"$[{j}].content",
                                     f"not a value ({type(e).__name__})") from None
            if not (n or strips):  # a Self or held plaintext inside? (item 11)
                if tc is tuple:
                    for x in content:
                        if type(x) not in atoms and needs(x):
                            strips = True
                            break
                else:
                    strips = needs(content)
        g.append(o)
        if n:
            group_counts[key] += n
        if n or strips:
            strip.add(key)
        if n:
            try:
                items.extend((j, it) for it in substructural_items(o))
            except Exception as e:
                raise ValueRuleError(f"$[{j}]", f"not a value: {safe_text(e)}") from None
    seen: set = set()
    for j, it in items:
        ident = item_identity(it)  # a capability or sealed value by its ciphertext (D5)
        if it.kind & NO_COPY and ident in seen:
            raise SubstructuralError(f"$[{j}]", f"the submission copies a {safe_text(it, 60)}")
        seen.add(ident)
    out: list = []
    for dest, group in groups.items():
        host = host_of_dest(net, dest)
        prio = group_prio[dest] if priority is None else min(priority, group_prio[dest])
        batch: tuple = tuple(group)
        count: int | None = group_counts[dest]
        if dest in strip:  # delivered as a host decodes it (conserve.transit)
            batch = transit(net.keys, dest, batch)
            if count:
                count = None  # stripping rebuilt items: count them again
        if dest in net.remote:  # a machine of a peer host: numbered, on the wire
            net, evs = send_batch(net, ("client", client), dest, batch,
                                  host_of_sender(net, ("client", client)), prio, count=count)
        else:
            net, evs = enqueue_local(net, ("client", client), dest, batch, host, prio,
                                      count=count)
        out.extend(evs)
    return net, out


def outside(net: Network, env: Env, act: Callable[[Network], tuple[Network, list]],
            ) -> tuple[Network, list]:
    """Apply ``act(net) -> (net, events)``, an act from outside the steps, keeping the
    scheduler's index in ``env`` current instead of rebuilt at the next step (which
    costs O(live channels): a host that submits, spawns or moves its clock between
    steps would otherwise pay that for every act).

    Only for acts that change the inbox through :mod:`avm.core.inbox` (``submit``,
    ``enqueue_local``, ``accept``: journaled), keys only by adding machines that had
    none (``spawn``, or :func:`avm.core.inbox.note_keys_added`), and nothing else the
    index orders by (a machine's status, an existing machine's keys): anything else
    leaves the index to be rebuilt, as before. The clock is not part of the order.
    """
    idx = env.index
    if idx.net is not net:
        return act(net)
    journal, token = inbox.step_journal()
    try:
        out, evs = act(net)
    finally:
        inbox.end_journal(token)
    if out is not net:
        idx.advance(net, out, env, _authenticate, journal)
    return out, evs


def step(net: Network, env: Env) -> tuple[Network, list]:
    """Apply one action to the network; return the new network and what happened.

    No batch can halt the network (P9): whatever a batch's run raises that the checks
    did not already turn into a failure fails that batch as ``internal``, from the
    network as it was before the run, and the next step goes on.
    """
    idx = env.index
    idx.sync(net, env, _authenticate)
    journal, token = inbox.step_journal()
    try:
        out, evs = _step(net, env, idx)
    except BaseException:
        idx.net = None  # the step did not finish: what it changed in the heaps is unknown
        raise
    finally:
        inbox.end_journal(token)
    idx.advance(net, out, env, _authenticate, journal)
    return out, evs


def _step(net: Network, env: Env, idx: inbox.Index) -> tuple[Network, list]:
    now = net.now
    # 1. Due timed work: transmissions, host restarts, retries (earliest first).
    due = idx.next_timed(net)
    if due is not None and due[0] <= now:
        return _do_timed(net, env, due)
    # 1b. Due timers (avm.core.timers): one act of one host's timer service.
    wake = timers.next_due(net)
    if wake is not None and wake <= now:
        return timers.fire(net, env)
    # Random faults that strike between actions.
    f = net.config.faults
    if f.crash or f.partition:
        net2, evs = maybe_fault(net)
        if evs:
            return net2, evs
        net = net2
    # 2. The best ready batch.
    pick = idx.pick(net)
    if pick is not None:
        try:
            return _run(net, env, pick)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # the last line of containment: fail this batch only
            return _contain(net, env, pick, e)
    # 3. Advance the clock to the next timed event or timer (virtual time jumps).
    if due is not None:
        return with_(net, now=due[0] if wake is None else min(due[0], wake)), []
    if wake is not None:
        return with_(net, now=wake), []
    # 4. Nothing left.
    return net, [events.Idle(now, quiescent(net))]


def _do_timed(net: Network, env: Env, due: tuple) -> tuple[Network, list]:
    what = due[2]
    if what == "wire":
        return deliver(net, due[1])
    if what == "restart":
        return restart_host(net, env, due[1])
    return retry(net, due[1])


def _pick(net: Network, env: Env) -> tuple | None:
    """The batch to run next, ``(chan, batch, auth)``, by the reference scan (rule 6).

    :func:`step` picks through the Env's index (:class:`avm.core.inbox.Index`), which
    returns exactly this; the scan is kept as the reference the tests compare it with.
    """
    return inbox.pick_scan(net, env, _authenticate)


def _waiting_higher(net: Network, env: Env, dest: Any, priority: float,
                    skip: tuple) -> tuple | None:
    """The best ready batch for the same machine with a higher priority (for rule 8).

    Both priorities are authenticated ones; a batch that does not unseal never
    interrupts anything.
    """
    best = None
    best_key = None
    for chan in net.live._m:
        if chan == skip or chan[1] != dest:
            continue
        b = net.pending[(chan, net.head[chan])]
        auth = _authenticate(net, env, chan, b)
        if auth.error is None and auth.priority > priority:
            key = (score(b.ts, auth.priority), repr(chan))
            if best_key is None or key < best_key:
                best, best_key = (chan, b, auth), key
    return best


def _pop(net: Network, chan: tuple, seq: int) -> Network:
    return with_(net, **inbox.popped(net, chan, seq))


def _run(net: Network, env: Env, pick: tuple) -> tuple[Network, list]:
    chan, b, auth = pick
    cfg = net.config
    n = len(b.messages)
    evs: list = []
    # Rule 8: interrupts and time-outs, charged one unit per message. A batch that does
    # not unseal is not timed: it fails as unseal below, whatever its length.
    if auth.error is None and n > cfg.hard_steps_max:
        return _fail_batch(net, chan, b, Failure("timeout", f"{n} messages exceed the hard limit of {cfg.hard_steps_max} steps"), evs, env=env)
    if auth.error is None and n > cfg.slice_steps:
        rival = _waiting_higher(net, env, b.dest, auth.priority, chan)
        if rival is not None:
            if b.restarts >= cfg.restarts_max:
                return _fail_batch(net, chan, b, Failure("timeout", f"interrupted {b.restarts} times by higher-priority batches"), evs, env=env)
            nb = with_(b, restarts=b.restarts + 1)
            net = with_(net, pending=inbox.replaced(net, chan, nb),
                          stats=bump(net.stats, "batch.interrupted"))
            evs.append(events.Interrupted(chan, b.seq, b.dest, nb.restarts, net.now))
            chan, b, auth = rival
    _forget(env, chan, b.seq)
    if b.abandoned:  # the sender gave up on this number: skip it, keeping the order
        return with_(net, stats=bump(net.stats, "batch.skipped-abandoned"),
                     **inbox.popped(net, chan, b.seq)), evs
    # The inbox map's substructural index knows whether the batch holds any such items.
    pk = (chan, b.seq)
    plain = pk not in net.pending._subs if pk in net.pending else not check_value(b.messages)
    net = with_(net, now=net.now + 1, **inbox.popped(net, chan, b.seq))
    dest = b.dest
    if type(dest) is tuple:
        net, more = _run_commons(net, env, chan, b)
        return net, evs + more
    m = net.machines.get(dest)
    if m is None and net.config.boundary:
        net = with_(net, exits=net.exits + b.messages, stats=bump(net.stats, "exits"))
        evs.append(events.Applied(chan, b.seq, dest, True, None, 0, net.now, batch=b))
        return net, evs
    if m is None or m.status == "stopped":
        why = "unknown address" if m is None else "machine stopped"
        net = with_(net, stats=bump(net.stats, "drop.unknown-address" if m is None else "drop.stopped"))
        evs.append(events.Dropped(chan, b.seq, dest, why, net.now))
        return _undelivered(net, env, b, "undeliverable", why, evs)
    # Every capability was unsealed when the batch was considered (_authenticate): one
    # bad capability fails the whole batch (rule 10).
    if auth.messages is None and auth.error is None:  # not opened yet (cannot happen today)
        auth = _open_batch(net, env, dest, b)
    if auth.error is not None or auth.messages is None:
        net = with_(net, stats=bump(net.stats, "drop.unseal"))
        return _fail_batch(net, chan, b, Failure("unseal", auth.error or "not opened"), evs,
                           counted=False, env=env)
    msgs = auth.messages
    try:
        fn = env.behavior(m.behavior)
    except AvmError as e:
        return _fail_batch(net, chan, b, Failure("undeliverable", str(e)), evs)
    runner = env.batch_runner
    if runner is None:
        # The machines map counts each record's substructural items (its index holds
        # only records with some): a record outside it gives its state's census, empty,
        # without walking the state again at every batch.
        items: list | None = [] if dest not in net.machines._subs else None
        r = run_batch(fn, m.state, msgs, items, plain_messages=plain)
    else:  # a host runs it elsewhere (avm.host.isolation), by this same function
        r = runner(net, dest, m, fn, msgs, plain)
    if not r.ok:
        net = with_(net, stats=bump(net.stats, "batch.failed"))
        evs.append(events.Applied(chan, b.seq, dest, False, r.failure, r.steps, net.now,
                                  tuple(msgs), batch=b))
        failure = r.failure or Failure("internal", "failed")
        return _undelivered(net, env, b, failure.rule, failure.public, evs)
    # Commit: the new state and the outgoing batches in one act (rule 3).
    rec = with_(m, state=r.state)
    n = len(r.state_items) if r.state_items is not None else check_value(r.state)
    net = with_(  # the record's other fields hold no substructural items: its count is n
        net, machines=net.machines._set_counted(dest, rec, n),
        stats=bump(bump(net.stats, "batch.ok"), "steps", r.steps))
    # Read-only: the step handed back the state it was given (or an equal atom). Hosts
    # use this to run such batches optimistically in parallel; the simulator reports it.
    ro = r.state is m.state or (type(r.state) in _ATOMS and r.state == m.state
                                and type(r.state) is type(m.state))
    evs.append(events.Applied(chan, b.seq, dest, True, None, r.steps, net.now, tuple(msgs), ro, b))
    net, more = _emit(net, dest, m.host, r.outputs, r.plain_outputs)
    evs.extend(more)
    net, more = notify(net, b, True, "")
    return net, evs + more


def _open_messages(env: Env, ring: Keyring | None, messages: tuple) -> tuple[list[Message], float]:
    """Unseal every capability of a batch into the messages a step receives.

    Returns the messages and the highest priority among the capabilities (each one
    authenticated by its unsealing: priority is part of the associated data). Raises
    UnsealError if any capability does not open.

    Batches usually reuse a few capabilities many times, so each distinct unrestricted
    capability is opened once; substructural ones are opened every time (their decoded
    contexts must be distinct objects for the conservation check).
    """
    if ring is None:
        raise UnsealError("no keys for this machine")
    opened: dict[int, Any] = {}
    top = -1.0
    subs = False
    for cap, _ in messages:
        if cap.kind:
            subs = True
        elif id(cap) not in opened:
            opened[id(cap)] = env.unseal(cap, ring)
            if cap.priority > top:
                top = cap.priority
    new = tuple.__new__  # Message(...) through its generated __new__ costs twice as much
    if len(opened) == 1 and not subs:
        ctx = next(iter(opened.values()))
        return [new(Message, (ctx, content)) for _, content in messages], top
    if not subs:
        return [new(Message, (opened[id(cap)], content)) for cap, content in messages], top
    out = []
    for cap, content in messages:
        if cap.kind:
            ctx = env.unseal(cap, ring)
            if cap.priority > top:
                top = cap.priority
        else:
            ctx = opened[id(cap)]
        out.append(new(Message, (ctx, content)))
    return out, top


class _Auth(NamedTuple):
    """What the receiver proved about a batch before scheduling it (rules 6-8, 10)."""

    priority: float  # the priority the scheduler may use: authenticated, in [-1, 1]
    messages: list | None  # the opened messages, when the batch was opened
    error: str | None  # why the batch does not unseal (it fails as unseal at once)


#: Batches to commons services, unknown or stopped machines: nothing to authenticate
#: against, so no priority either.
_UNCHECKED = _Auth(0.0, None, None)
#: ``Env.auth_cache`` maps (chan, seq) -> (batch, key versions, _Auth, score). The batch
#: and the key-version map are compared by identity, so a hit is the same batch opened
#: with the same keys: the cache never changes a result (tests/test_trust_schedule_cache.py).
#: Entries go when their batch runs; the cache is emptied past _AUTH_CACHE_MAX entries.
_AUTH_CACHE_MAX = 1 << 16
_new = tuple.__new__


def _clamp(p: Any) -> float:
    """A priority in [-1, 1]; anything that is not a number (or NaN) counts as 0."""
    if type(p) is float or type(p) is int:
        if p >= 1.0:
            return 1.0
        if p <= -1.0:
            return -1.0
        if p == p:
            return float(p)
    return 0.0


def _authenticate(net: Network, env: Env, chan: tuple, b: Batch) -> _Auth:
    """Open a head batch's capabilities with the receiver's keys, once (cached).

    DESIGN section 4, rules 7 and 8: only an authenticated priority may schedule or
    interrupt. The priority of a batch is the highest of its capabilities' (each proven by
    unsealing), capped by the priority the batch was queued with (a client may ask for
    less); batches from the host itself (life-cycle signals) keep the runtime's priority.
    """
    dest = b.dest
    if type(dest) is not bytes:
        return _UNCHECKED
    m = net.machines.get(dest)
    if m is None or m.status == "stopped":
        return _UNCHECKED  # dropped with its own reason when it runs
    versions = net.keys.get(dest)
    cache = env.auth_cache
    key = (chan, b.seq)
    hit = cache.get(key)
    if hit is not None and hit[0] is b and hit[1] is versions:
        return hit[2]
    auth = _open_batch(net, env, dest, b)
    if len(cache) >= _AUTH_CACHE_MAX:
        cache.clear()
    cache[key] = (b, versions, auth, score(b.ts, auth.priority))
    return auth


def _open_batch(net: Network, env: Env, dest: bytes, b: Batch) -> _Auth:
    try:
        msgs, proven = _open_messages(env, env.keyring(net, dest), b.messages)
    except UnsealError as e:
        return _new(_Auth, (-1.0, None, safe_text(e)))
    except Exception as e:  # a capability whose fields cannot even be checked
        return _new(_Auth, (-1.0, None, f"malformed capability ({type(e).__name__})"))
    claimed = b.priority
    if type(claimed) is not float or not -1.0 <= claimed <= 1.0:
        claimed = _clamp(claimed)
    sender = b.sender
    if type(sender) is tuple and sender and sender[0] == "host":
        return _new(_Auth, (claimed, msgs, None))
    if not msgs:  # nothing proven
        proven = 0.0
    return _new(_Auth, (claimed if claimed < proven else proven, msgs, None))


def _forget(env: Env, chan: tuple, seq: int) -> None:
    env.auth_cache.pop((chan, seq), None)


def _contain(net: Network, env: Env, pick: tuple, e: Exception) -> tuple[Network, list]:
    """Fail the picked batch as ``internal`` from the network before its run (P9).

    Reached only when something slipped past every check: the failure names the error
    type (and the operator's detail its text), and the network goes on without it.
    """
    chan, b = pick[0], pick[1]
    failure = Failure("internal", f"{type(e).__name__}: {safe_text(e)}", None, type(e).__name__)
    net = with_(net, now=net.now + 1, stats=bump(net.stats, "batch.internal-error"))
    try:
        return _fail_batch(net, chan, b, failure, [], env=env)
    except Exception:  # even failing it failed: drop it, counted and visible
        if net.pending.get((chan, b.seq)) is not None:
            net = _pop(net, chan, b.seq)
        return net, [events.Applied(chan, b.seq, b.dest, False, failure, 0, net.now)]


def _fail_batch(net: Network, chan: tuple, b: Batch, failure: Failure, evs: list,
                counted: bool = True, env: Env | None = None) -> tuple[Network, list]:
    if net.pending.get((chan, b.seq)) is not None:
        net = _pop(net, chan, b.seq)
    stats = bump(net.stats, "batch.failed") if counted else net.stats
    if failure.rule == "timeout":
        stats = bump(stats, "batch.timeout")
    net = with_(net, stats=stats)
    evs = [*evs, events.Applied(chan, b.seq, b.dest, False, failure, 0, net.now, batch=b)]
    return _undelivered(net, env, b, failure.rule, failure.public, evs)


def _undelivered(net: Network, env: Env | None, b: Batch, rule: str, why: str,
                 evs: list) -> tuple[Network, list]:
    """Batch ``b`` will not be applied: tell its feedback, and give back what it carried.

    ``why`` goes to the sender, so it names the rule and message index only (D6). The
    linear and relevant values of the batch go back to the sending machine, or into the
    dead letters of the host where the batch was (D7, :func:`give_back`).
    """
    dest = b.dest
    m = net.machines.get(dest) if type(dest) is bytes else None
    host = m.host if m is not None else host_of_sender(net, b.sender)
    net, more = notify(net, b, False, why, host=host)
    evs = evs + more
    net, more = give_back(net, b, rule, why, host, env)
    return net, evs + more


def _emit(net: Network, sender: Any, host: str, outputs: tuple,
          plain: bool = False) -> tuple[Network, list]:
    """Partition outputs by destination (rule 3) and send each group as one batch.

    ``plain``: run_batch checked the outputs and found no substructural item in any, so
    the inbox takes their count (0) instead of walking them again. Stripping them for
    transit only takes plaintext and bindings away, never adds an item.
    """
    if not outputs:
        return net, []
    evs: list = []
    count = 0 if plain else None
    for dest, group in partition(outputs):
        prio = max(c.priority for c, _ in group)
        net, more = send_batch(net, sender, dest, group, host, prio, count=count)
        evs.extend(more)
    return net, evs


def _run_commons(net: Network, env: Env, chan: tuple, b: Batch) -> tuple[Network, list]:
    service = b.dest[1]
    host = host_of_sender(net, b.sender)
    evs: list = [events.Applied(chan, b.seq, b.dest, True, None, len(b.messages), net.now,
                                batch=b)]
    outputs: list = []
    back: list = []  # refused requests: what they carry goes back to the sender (D7)
    # `random` answers come from the requester's own keyed stream (avm.core.keys).
    rng = (stream_key(net.secret, b.sender), net.random_n.get(b.sender, 0)) \
        if service == "random" else None
    refused = None
    for msg in b.messages:
        content = msg[1]
        handler = _NETWORK_SERVICES.get(service)
        if handler is not None:  # services that keep state in the network value
            net, outs, more, err = handler(net, env, b, msg, host)
            evs.extend(more)
            if err:
                refused = err
                evs.append(events.Commons(service, b.sender, err, net.now))
                net = with_(net, stats=bump(net.stats, "commons.refused"))
                back.append(msg)
            else:
                outputs.extend(outs)
            continue
        if service == "feedback":
            ok = (type(content) is tuple and len(content) == 4 and type(content[0]) is Capability
                  and type(content[2]) is Capability and capability_problem(content[0]) is None
                  and capability_problem(content[2]) is None)
            if not ok:
                evs.append(events.Commons(service, b.sender, "feedback takes (target, content, status_cap, tag)", net.now))
                net = with_(net, stats=bump(net.stats, "commons.refused"))
                back.append(msg)
                continue
            target, inner, status_cap, tag = content
            dest = destination(target)
            net, more = send_batch(net, b.sender, dest, ((target, inner),), host,
                                    target.priority, notify=(status_cap, tag))
            evs.extend(more)
            continue
        now_ms = net.config.epoch_ms + net.now * net.config.tick_ms
        outs, rng, err = serve(service, content, now_ms, rng)
        if not err and service != "null" and _drops(content, outs):
            # A service keeps what it is given (reflect and hash echo it) or consumes it
            # (null); one that would lose a linear or relevant value refuses the request.
            err = f"{service} would drop a linear or relevant value; send those to null to destroy them"
            outs = []
        if err:
            refused = err
            evs.append(events.Commons(service, b.sender, err, net.now))
            net = with_(net, stats=bump(net.stats, "commons.refused"))
            back.append(msg)
            continue
        outputs.extend(outs)
    if service == "null":
        net = _count_nulled(net, env, b)
    if rng is not None and rng[1] != net.random_n.get(b.sender, 0):
        net = with_(net, random_n=net.random_n._set_plain(b.sender, rng[1]))
    net, more = _emit(net, ("~", service, host), host, tuple(outputs))
    # Feedback to a commons target (rule 10): delivered, or refused and why.
    net, note = notify(net, b, refused is None, f"refused by ~{service}: {refused}", host=host)
    evs = evs + more + note
    if back:
        net, more = give_back(net, b, "refused", f"refused by ~{service}", host, env, tuple(back))
        evs.extend(more)
    return net, evs


#: Commons-style services whose state is part of the network value (their own modules).
_NETWORK_SERVICES = {timers.SERVICE: timers.handle, spawner.SERVICE: spawner.handle}


def _drops(content: Any, outs: list) -> bool:
    """Would answering with ``outs`` lose a linear or relevant item of ``content``?"""
    if type(content) in _ATOMS:
        return False
    items = [it for it in substructural_items(content) if it.kind & NO_DROP]
    if not items:
        return False
    kept = {id(it) for it in substructural_items(tuple(outs))}
    return any(id(it) not in kept for it in items)


def _count_nulled(net: Network, env: Env, b: Batch) -> Network:
    """``null`` is the one way to destroy a linear value: count what it consumed."""
    t = Tally(opener_for(net, env))
    for msg in b.messages:
        t.add(msg)
    if not t:
        return net
    stats = bump(net.stats, "null.linear", t.n_linear) if t.linear else net.stats
    if t.relevant:
        stats = bump(stats, "null.relevant", t.n_relevant)
    return with_(net, stats=stats)


def peek_batch(net: Network, env: Env, address: bytes, fn: Any, state: Any,
               batch: Batch, runner: Any = None) -> tuple[Any, tuple]:
    """A dry run: what ``batch`` would do to ``state`` under step function ``fn``.

        "A debugger's 'peek' runs a step and throws the result away." (STYLE, habit 9)

    The batch's capabilities are opened with ``address``'s keys in ``net``, as when it
    ran, and the step is folded over its messages by :func:`run_batch`, the very
    function every batch runs by, so a peek follows the batching rules exactly. Nothing
    is applied: ``net`` is only read. Returns ``(result, groups)``: the
    :class:`~avm.core.machine.BatchResult` and, when it succeeded, its outputs as they
    would be sent, ``((destination, messages), ...)`` grouped by destination (rule 3) and
    stripped for transit as :func:`_emit` sends them. A batch that does not open fails
    as ``unseal``. ``runner``: where the fold runs, with the signature of
    ``Env.batch_runner`` (a host's isolated worker, given the machine's record with
    ``state``); by default here.
    """
    auth = _open_batch(net, env, address, batch)
    if auth.error is not None or auth.messages is None:
        failure = Failure("unseal", auth.error or "not opened")
        return BatchResult(False, None, (), failure, 0, None), ()
    if runner is None:
        r = run_batch(fn, state, auth.messages)
    else:
        rec = with_(machine_record(net, address), state=state)
        r = runner(net, address, rec, fn, auth.messages, False)
    if not r.ok:
        return r, ()
    return r, tuple((d, transit(net.keys, d, group)) for d, group in partition(r.outputs))
