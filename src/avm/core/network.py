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

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from .caps import Capability, IdentityKey, Keyring, Self, address_of, seal_context
from .commons import serve
from .delivery import (
    deliver,
    maybe_fault,
    next_timed,
    notify,
    restart_host,
    retry,
    send_batch,
)
from .errors import AvmError, UnsealError
from .machine import SIGNAL, Failure, Message, destination, partition, run_batch
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
    derive,
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
from .values import _ATOMS, NO_COPY, Map, _Invalid, _walk, check_value, record, substructural_items

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
    "set_status",
    "MachineImage",
    "export_machine",
    "import_machine",
    "move",
    "rotate_key",
    "mint",
    "events",
    "quiescent",
    "who",
    "batch_hash",
]


def new_network(seed: int = 0, config: Config | None = None, hosts: Iterable[str] = ("h0",)) -> Network:
    net = Network(config=config or Config(), seed=seed, rng=seed & ((1 << 64) - 1))
    for h in hosts:
        net = add_host(net, h)
    return net


def add_host(net: Network, name: str) -> Network:
    if name in net.hosts:
        raise AvmError(f"host {name!r} already exists")
    ident = IdentityKey.from_seed(derive(net.seed, "host", name))
    addr = address_of(ident.resource((("host", name),)))
    return with_(net, hosts=net.hosts._set_plain(name, HostRecord(name, addr)))


def spawn(
    net: Network, name: str, behavior: str, args: Any = None, *, host: str | None = None,
    signal: Any = SIGNAL, env: Mapping[str, Any] | None = None, env_obj: Env | None = None,
) -> tuple[Network, bytes, list]:
    """Create a machine. Its first batch is ``[init, self, env]`` on its signal context.

    Keys are derived from the network's seed and the machine's name, so a rerun with the
    same seed gives the same addresses and capabilities.
    """
    host = host or next(iter(sorted(net.hosts)))
    if host not in net.hosts:
        raise AvmError(f"unknown host {host!r}; add it first")
    if name in net.names:
        raise AvmError(f"a machine named {name!r} already exists")
    check_value(args, "$.args")
    if check_value(signal, "$.signal"):
        # The runtime mints the signal capability again for every life-cycle message:
        # a linear signal context would be copied each time.
        raise AvmError("a signal context may not hold linear, affine or relevant values")
    ident = IdentityKey.from_seed(derive(net.seed, "machine", name))
    address = address_of(ident.resource((("name", name),)))
    raw_bytes = hashlib.shake_256(b"avm-siv" + derive(net.seed, "seal", name)).digest(64)
    rec = MachineRecord(name=name, state=None, behavior=behavior, signal=signal, host=host, keyver=0)
    net = with_(
        net,
        machines=net.machines.set(address, rec),
        names=net.names.set(name, address),
        keys=net.keys.set(address, Map({0: raw_bytes})),
    )
    key = (env_obj or Env()).sealing_key(0, raw_bytes)
    sig = seal_context(address, key, signal)
    envmap = commons_env(net, host).update(env or {})
    msgs = ((sig, ("init", args)), (sig, ("self", Self(address, 0, key))), (sig, ("env", envmap)))
    net, evs = enqueue_local(net, ("host", host), address, msgs, host, 1.0)
    return net, address, [events.Spawned(name, address, host, net.now), *evs]


def rotate_key(net: Network, address: bytes, keep_old: bool = False,
               env: Env | None = None) -> tuple[Network, list]:
    """Give a machine a new sealing key version: revokes what it issued under the old ones.

    The machine is handed its new ``Self`` by a ``("self", Self)`` signal, as at spawn;
    a machine that kept its old ``Self`` would otherwise go on minting capabilities under
    the retired key, dead on arrival.
    """
    env = env or Env()
    versions = net.keys[address]
    v = max(versions) + 1
    raw = derive(net.seed, "seal", address, v) + derive(net.seed, "seal2", address, v)
    new = (versions if keep_old else Map()).set(v, raw)
    m = net.machines[address]
    net = with_(net, keys=net.keys.set(address, new),
                machines=net.machines.set(address, with_(m, keyver=v)))
    new_self = Self(address, v, env.sealing_key(v, raw))
    sig = mint(net, env, address, m.signal)
    return enqueue_local(net, ("host", m.host), address, ((sig, ("self", new_self)),),
                          m.host, 1.0)


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
    m = net.machines[address]
    image = MachineImage(address, m.name, m.state, m.behavior, m.signal, m.keyver,
                         net.keys[address])
    net = with_(net, machines=net.machines.delete(address), names=net.names.delete(m.name),
                keys=net.keys.delete(address))
    return net, image


def import_machine(net: Network, image: MachineImage, host: str) -> Network:
    """Install a machine image on ``host``; it keeps its address, keys and state."""
    if host not in net.hosts:
        raise AvmError(f"unknown host {host!r}")
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
        raise AvmError(f"unknown host {host!r}")
    m = net.machines[address]
    return with_(net, machines=net.machines.set(address, with_(m, host=host)))


def set_status(net: Network, address: bytes, status: str) -> Network:
    """Suspend, resume ("running") or stop a machine. A suspended machine queues its input."""
    if status not in ("running", "suspended", "stopped"):
        raise AvmError(f"unknown status {status!r}")
    m = net.machines[address]
    return with_(net, machines=net.machines.set(address, with_(m, status=status)))


def submit(
    net: Network, messages: Iterable[tuple[Capability, Any]], client: str = "client",
    priority: float | None = None,
) -> tuple[Network, list]:
    """An outside client sends a batch (grouped per destination, rule 3).

    Everything is checked before anything is queued: a bad message refuses the whole
    submission, with the index of the culprit.
    """
    msgs = tuple(messages)
    items: list = []
    groups: dict[Any, list] = {}
    group_counts: dict[Any, int] = {}
    group_prio: dict[Any, float] = {}
    cap_type = Capability
    atoms = _ATOMS
    for j, o in enumerate(msgs):
        if type(o) is not tuple or len(o) != 2 or type(o[0]) is not cap_type:
            raise AvmError(f"message {j} must be a (capability, content) pair")
        cap, content = o
        n = 1 if cap.kind or cap._held else 0
        if type(content) not in atoms:
            try:
                n += _walk(content, None)
            except _Invalid:
                check_value(content, f"$[{j}].content")  # raises with the path
        key = destination(cap)
        g = groups.get(key)
        if g is None:
            groups[key] = [o]
            group_counts[key] = n
            group_prio[key] = cap.priority
        else:
            g.append(o)
            if n:
                group_counts[key] += n
            if cap.priority > group_prio[key]:
                group_prio[key] = cap.priority
        if n:
            items.extend(substructural_items(o))
    seen: set[int] = set()
    for it in items:
        if it.kind & NO_COPY and id(it) in seen:
            raise AvmError(f"the submission copies a {it!r}")
        seen.add(id(it))
    out: list = []
    for dest, group in groups.items():
        host = host_of_dest(net, dest)
        prio = group_prio[dest] if priority is None else priority
        net, evs = enqueue_local(net, ("client", client), dest, tuple(group), host, prio,
                                  count=group_counts[dest])
        out.extend(evs)
    return net, out


def step(net: Network, env: Env) -> tuple[Network, list]:
    """Apply one action to the network; return the new network and what happened."""
    now = net.now
    # 1. Due timed work: transmissions, host restarts, retries (earliest first).
    due = next_timed(net)
    if due is not None and due[0] <= now:
        return _do_timed(net, env, due)
    # Random faults that strike between actions.
    f = net.config.faults
    if f.crash or f.partition:
        net2, evs = maybe_fault(net)
        if evs:
            return net2, evs
        net = net2
    # 2. The best ready batch.
    pick = _pick(net)
    if pick is not None:
        return _run(net, env, pick)
    # 3. Advance the clock to the next timed event.
    if due is not None:
        return with_(net, now=due[0]), []
    # 4. Nothing left.
    return net, [events.Idle(now)]


def _do_timed(net: Network, env: Env, due: tuple) -> tuple[Network, list]:
    what = due[2]
    if what == "wire":
        return deliver(net, due[1])
    if what == "restart":
        return restart_host(net, env, due[1])
    return retry(net, due[1])


def _runnable(net: Network, b: Batch) -> bool:
    dest = b.dest
    if type(dest) is bytes:
        m = net.machines.get(dest)
        if m is None:
            return True  # runs only to be dropped as unknown
        if m.status == "suspended":
            return False
        return net.hosts[m.host].up
    host = host_of_sender(net, b.sender)
    return net.hosts[host].up


def _pick(net: Network) -> tuple | None:
    best = None
    best_score = None
    for chan in net.live._m:
        b = net.pending[(chan, net.head[chan])]
        if not _runnable(net, b):
            continue
        s = score(b.ts, b.priority)
        if best is None or best_score is None or s < best_score or (
                s == best_score and repr(chan) < repr(best[0])):
            best, best_score = (chan, b), s
    return best


def _waiting_higher(net: Network, dest: Any, priority: float, skip: tuple) -> tuple | None:
    """The best ready batch for the same machine with a higher priority (for rule 8)."""
    best = None
    best_key = None
    for chan in net.live._m:
        if chan == skip or chan[1] != dest:
            continue
        b = net.pending[(chan, net.head[chan])]
        if b.priority > priority:
            key = (score(b.ts, b.priority), repr(chan))
            if best_key is None or key < best_key:
                best, best_key = (chan, b), key
    return best


def _popped(net: Network, chan: tuple, seq: int) -> dict[str, Map]:
    """The inbox maps after taking batch ``seq`` off the head of ``chan``."""
    pending = net.pending.delete((chan, seq))
    nxt = seq + 1
    live = net.live if (chan, nxt) in pending else net.live.delete(chan)
    return {"pending": pending, "head": net.head._set_plain(chan, nxt), "live": live}


def _pop(net: Network, chan: tuple, seq: int) -> Network:
    return with_(net, **_popped(net, chan, seq))


def _run(net: Network, env: Env, pick: tuple) -> tuple[Network, list]:
    chan, b = pick
    cfg = net.config
    n = len(b.messages)
    evs: list = []
    # Rule 8: interrupts and time-outs, charged one unit per message.
    if n > cfg.hard_steps_max:
        return _fail_batch(net, chan, b, Failure("timeout", f"{n} messages exceed the hard limit of {cfg.hard_steps_max} steps"), evs)
    if n > cfg.slice_steps:
        rival = _waiting_higher(net, b.dest, b.priority, chan)
        if rival is not None:
            if b.restarts >= cfg.restarts_max:
                return _fail_batch(net, chan, b, Failure("timeout", f"interrupted {b.restarts} times by higher-priority batches"), evs)
            nb = with_(b, restarts=b.restarts + 1)
            net = with_(net, pending=net.pending.set((chan, b.seq), nb),
                          stats=bump(net.stats, "batch.interrupted"))
            evs.append(events.Interrupted(chan, b.seq, b.dest, nb.restarts, net.now))
            chan, b = rival
    if b.abandoned:  # the sender gave up on this number: skip it, keeping the order
        return with_(net, stats=bump(net.stats, "batch.skipped-abandoned"),
                     **_popped(net, chan, b.seq)), evs
    net = with_(net, now=net.now + 1, **_popped(net, chan, b.seq))
    dest = b.dest
    if type(dest) is tuple:
        net, more = _run_commons(net, env, chan, b)
        return net, evs + more
    m = net.machines.get(dest)
    if m is None and net.config.boundary:
        net = with_(net, exits=net.exits + b.messages, stats=bump(net.stats, "exits"))
        evs.append(events.Applied(chan, b.seq, dest, True, None, 0, net.now))
        return net, evs
    if m is None:
        net = with_(net, stats=bump(net.stats, "drop.unknown-address"))
        evs.append(events.Dropped(chan, b.seq, dest, "unknown address", net.now))
        net, more = notify(net, b, False, "unknown address")
        return net, evs + more
    if m.status == "stopped":
        net = with_(net, stats=bump(net.stats, "drop.stopped"))
        evs.append(events.Dropped(chan, b.seq, dest, "machine stopped", net.now))
        net, more = notify(net, b, False, "machine stopped")
        return net, evs + more
    # Unseal every capability first: one bad capability fails the whole batch (rule 10).
    ring = env.keyring(net, dest)
    try:
        msgs = _open_messages(env, ring, b.messages)
    except UnsealError as e:
        net = with_(net, stats=bump(net.stats, "drop.unseal"))
        return _fail_batch(net, chan, b, Failure("unseal", str(e)), evs, counted=False)
    try:
        fn = env.behavior(m.behavior)
    except AvmError as e:
        return _fail_batch(net, chan, b, Failure("undeliverable", str(e)), evs)
    r = run_batch(fn, m.state, msgs, plain_messages=not b.__dict__.get("_avm_n", 1))
    if not r.ok:
        net = with_(net, stats=bump(net.stats, "batch.failed"))
        evs.append(events.Applied(chan, b.seq, dest, False, r.failure, r.steps, net.now, tuple(msgs)))
        net, more = notify(net, b, False, str(r.failure))
        return net, evs + more
    # Commit: the new state and the outgoing batches in one act (rule 3).
    rec = with_(m, state=r.state)
    n = len(r.state_items) if r.state_items is not None else check_value(r.state)
    rec.__dict__["_avm_n"] = n  # the record's other fields hold no substructural items
    net = with_(
        net, machines=net.machines._set_counted(dest, rec, n),
        stats=bump(bump(net.stats, "batch.ok"), "steps", r.steps))
    # Read-only: the step handed back the state it was given (or an equal atom). Hosts
    # use this to run such batches optimistically in parallel; the simulator reports it.
    ro = r.state is m.state or (type(r.state) in _ATOMS and r.state == m.state
                                and type(r.state) is type(m.state))
    evs.append(events.Applied(chan, b.seq, dest, True, None, r.steps, net.now, tuple(msgs), ro))
    net, more = _emit(net, dest, m.host, r.outputs)
    evs.extend(more)
    net, more = notify(net, b, True, "")
    return net, evs + more


def _open_messages(env: Env, ring: Keyring | None, messages: tuple) -> list[Message]:
    """Unseal every capability of a batch into the messages a step receives.

    Batches usually reuse a few capabilities many times, so each distinct unrestricted
    capability is opened once; substructural ones are opened every time (their decoded
    contexts must be distinct objects for the conservation check).
    """
    if ring is None:
        raise UnsealError("no keys for this machine")
    opened: dict[int, Any] = {}
    subs = False
    for cap, _ in messages:
        if cap.kind:
            subs = True
        elif id(cap) not in opened:
            opened[id(cap)] = env.unseal(cap, ring)
    new = tuple.__new__  # Message(...) through its generated __new__ costs twice as much
    if len(opened) == 1 and not subs:
        ctx = next(iter(opened.values()))
        return [new(Message, (ctx, content)) for _, content in messages]
    if not subs:
        return [new(Message, (opened[id(cap)], content)) for cap, content in messages]
    return [new(Message, (env.unseal(cap, ring) if cap.kind else opened[id(cap)], content))
            for cap, content in messages]


def _fail_batch(net: Network, chan: tuple, b: Batch, failure: Failure, evs: list,
                counted: bool = True) -> tuple[Network, list]:
    if net.pending.get((chan, b.seq)) is not None:
        net = _pop(net, chan, b.seq)
    stats = bump(net.stats, "batch.failed") if counted else net.stats
    if failure.rule == "timeout":
        stats = bump(stats, "batch.timeout")
    net = with_(net, stats=stats)
    evs = [*evs, events.Applied(chan, b.seq, b.dest, False, failure, 0, net.now)]
    net, more = notify(net, b, False, str(failure))
    return net, evs + more


def _emit(net: Network, sender: Any, host: str, outputs: tuple) -> tuple[Network, list]:
    """Partition outputs by destination (rule 3) and send each group as one batch."""
    if not outputs:
        return net, []
    evs: list = []
    for dest, group in partition(outputs):
        prio = max(c.priority for c, _ in group)
        net, more = send_batch(net, sender, dest, group, host, prio)
        evs.extend(more)
    return net, evs


def _run_commons(net: Network, env: Env, chan: tuple, b: Batch) -> tuple[Network, list]:
    service = b.dest[1]
    host = host_of_sender(net, b.sender)
    evs: list = [events.Applied(chan, b.seq, b.dest, True, None, len(b.messages), net.now)]
    outputs: list = []
    rng = net.rng
    refused = None
    for _cap, content in b.messages:
        if service == "feedback":
            ok = (type(content) is tuple and len(content) == 4 and type(content[0]) is Capability
                  and type(content[2]) is Capability)
            if not ok:
                evs.append(events.Commons(service, b.sender, "feedback takes (target, content, status_cap, tag)", net.now))
                net = with_(net, stats=bump(net.stats, "commons.refused"))
                continue
            target, inner, status_cap, tag = content
            dest = destination(target)
            net, more = send_batch(net, b.sender, dest, ((target, inner),), host,
                                    target.priority, notify=(status_cap, tag))
            evs.extend(more)
            continue
        now_ms = net.config.epoch_ms + net.now * net.config.tick_ms
        outs, rng, err = serve(service, content, now_ms, rng)
        if err:
            refused = err
            evs.append(events.Commons(service, b.sender, err, net.now))
            net = with_(net, stats=bump(net.stats, "commons.refused"))
        outputs.extend(outs)
    net = with_(net, rng=rng)
    net, more = _emit(net, ("~", service, host), host, tuple(outputs))
    # Feedback to a commons target (rule 10): delivered, or refused and why.
    net, note = notify(net, b, refused is None, f"refused by ~{service}: {refused}", host=host)
    return net, evs + more + note
