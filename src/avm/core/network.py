"""The purely functional network: the reference semantics (DESIGN sections 4 and 7).

    "The network is a value too: machines, pending batches per (sender, receiver)
    channel, the clock, and the scheduler's seed. step(network) -> (network, events)
    applies one batch according to section 4."

:class:`Network` is an immutable, encodable value (a registered record of persistent
maps), so it can be kept, compared, forked, and even be the state of a machine (nesting,
see ``avm.core.nest``). :func:`step` is a pure function of the network and an
:class:`Env` that resolves behavior names to step functions and caches keys; the cache
never changes results.

Machines live on named *hosts*. Between two hosts a batch travels as a *transmission*
that the fault model may lose, delay, duplicate, reorder or corrupt; hosts may crash and
restart and links may be partitioned. On top of that the network runs the delivery
protocol that real hosts run (DESIGN section 9): per-channel sequence numbers, a durable
outbox retried until acknowledged, a receiver that accepts each sequence number once and
in order. So faults delay batches but never lose, duplicate or reorder them (promises
P1-P3), and the test kit's checker verifies exactly that.

One step does one thing, in this order of preference:

1. deliver the earliest transmission that is due, or fire a due host event or retry;
2. otherwise run the best ready batch (rule 6: earliest timestamp weighted by priority);
3. otherwise advance the clock to the next timed event;
4. otherwise report that the network is quiescent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .caps import (
    Capability,
    IdentityKey,
    Keyring,
    SealingKey,
    Self,
    address_of,
    address_text,
    commons_cap,
    seal_context,
    unseal_context,
)
from .commons import SERVICES, serve
from .errors import AvmError, CapabilityError, UnsealError
from .machine import SIGNAL, Failure, Message, partition, run_batch
from .schedule import hlc_now, hlc_recv, rng_float, rng_int, score
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
    "mint",
    "events",
]

# ---------------------------------------------------------------------------------------
# The network value
# ---------------------------------------------------------------------------------------


@record(name="avm.Faults")
class Faults:
    """Seeded faults between hosts. Probabilities are per transmission or per step."""

    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    delay_min: int = 1
    delay_max: int = 1
    crash: float = 0.0  # per step: chance that one running host crashes
    down_min: int = 5
    down_max: int = 50
    partition: float = 0.0  # per step: chance that one link is cut
    partition_min: int = 5
    partition_max: int = 100

    @property
    def any(self) -> bool:
        return bool(self.loss or self.duplicate or self.corrupt or self.crash or self.partition
                    or self.delay_max > self.delay_min)


@record(name="avm.Config")
class Config:
    """Scheduler and delivery parameters. One step unit is charged per message stepped."""

    slice_steps: int = 10_000  # a batch longer than this may be interrupted (rule 8)
    restarts_max: int = 3  # interrupted more often than this: fails as timeout
    hard_steps_max: int = 10_000_000  # a batch longer than this fails as timeout
    retry_ticks: int = 16  # first retransmission delay; doubles up to retry_ticks_max
    retry_ticks_max: int = 256
    retry_max: int = 10_000  # attempts before a batch is dropped as unreachable
    restart_signal: bool = True  # send ("restart", info) to machines after a host restarts
    epoch_ms: int = 1_700_000_000_000  # what "time" answers at tick 0
    tick_ms: int = 1
    boundary: bool = False  # nested networks: batches to unknown addresses leave via exits
    faults: Faults = field(default_factory=Faults)


@record(name="avm.Batch")
class Batch:
    """Messages from one sender to one destination, applied all-or-nothing."""

    sender: Any  # machine address, ("client", name), ("host", name) or ("~", service, host)
    dest: Any  # machine address or ("~", service)
    seq: int
    ts: tuple
    priority: float
    messages: tuple  # ((capability, content), ...)
    restarts: int = 0
    notify: Any = None  # feedback: (status capability, tag)
    abandoned: bool = False  # a tombstone: the sender gave up; the receiver skips the number


@record(name="avm.Machine")
class MachineRecord:
    name: str
    state: Any
    behavior: str  # a name the Env resolves: code and state change independently
    signal: Any
    host: str
    keyver: int
    status: str = "running"  # running | suspended | stopped


@record(name="avm.Host")
class HostRecord:
    name: str
    address: bytes
    up: bool = True
    clock: tuple = (0, 0)
    down_until: int = 0


@record(name="avm.Network")
class Network:
    config: Config
    seed: int
    now: int = 0
    rng: int = 0
    hosts: Map = field(default_factory=Map)  # name -> HostRecord
    machines: Map = field(default_factory=Map)  # address -> MachineRecord
    names: Map = field(default_factory=Map)  # machine name -> address
    keys: Map = field(default_factory=Map)  # address -> Map(version -> key bytes)
    next_seq: Map = field(default_factory=Map)  # channel -> last seq assigned (sender side)
    pending: Map = field(default_factory=Map)  # (channel, seq) -> Batch (receiver inbox)
    head: Map = field(default_factory=Map)  # channel -> next seq to apply
    live: Map = field(default_factory=Map)  # channel -> True while its head is pending
    received: Map = field(default_factory=Map)  # channel -> highest contiguous seq received
    held: Map = field(default_factory=Map)  # (channel, seq) -> Batch that arrived early
    outbox: Map = field(default_factory=Map)  # (channel, seq) -> (Batch, retry_at, attempts)
    acked: Map = field(default_factory=Map)  # channel -> highest seq acknowledged
    wire: Map = field(default_factory=Map)  # (due, n) -> transmission
    wire_n: int = 0
    cuts: Map = field(default_factory=Map)  # (host, host) sorted -> until
    stats: Map = field(default_factory=Map)  # counter name -> int
    exits: tuple = ()  # boundary networks: messages that left, in order


# ---------------------------------------------------------------------------------------
# Events: what a step did. Plain frozen dataclasses, compared for determinism.
# ---------------------------------------------------------------------------------------


class events:  # noqa: N801 - a namespace
    @dataclass(frozen=True)
    class Created:
        """A sender committed a batch (or a client submitted one)."""

        chan: tuple
        seq: int
        dest: Any
        size: int
        ts: tuple
        priority: float
        at: int

    @dataclass(frozen=True)
    class Applied:
        """A receiver processed a batch: committed (ok) or definitely failed."""

        chan: tuple
        seq: int
        dest: Any
        ok: bool
        failure: Failure | None
        steps: int
        at: int
        messages: tuple = ()
        read_only: bool = False  # committed and left the state as it was

    @dataclass(frozen=True)
    class Dropped:
        """A batch will not be applied by this act. ``definite=False`` says the outcome is
        unknown: the sender gave up on acknowledgements, but the receiver may have applied
        it (Jepsen's *indefinite* failure)."""

        chan: tuple
        seq: int
        dest: Any
        reason: str
        at: int
        definite: bool = True

    @dataclass(frozen=True)
    class Interrupted:
        chan: tuple
        seq: int
        dest: Any
        restarts: int
        at: int

    @dataclass(frozen=True)
    class Wire:
        """A transmission between hosts and what happened to it."""

        what: str  # sent | lost | duplicated | corrupted | delivered | refused-duplicate | ...
        kind: str  # batch | ack
        src: str
        dst: str
        chan: tuple
        seq: int
        at: int

    @dataclass(frozen=True)
    class Host:
        host: str
        up: bool
        at: int
        until: int = 0

    @dataclass(frozen=True)
    class Cut:
        hosts: tuple
        until: int
        at: int

    @dataclass(frozen=True)
    class Spawned:
        name: str
        address: bytes
        host: str
        at: int

    @dataclass(frozen=True)
    class Idle:
        at: int

    @dataclass(frozen=True)
    class Commons:
        service: str
        sender: Any
        error: str | None
        at: int


# ---------------------------------------------------------------------------------------
# The environment: behaviors by name, and caches that never change results
# ---------------------------------------------------------------------------------------


class Env:
    """Resolves behavior names and caches key objects and unsealed contexts.

    Not a value: it holds Python functions. Two runs with equal networks and equal
    behavior tables produce equal results whatever is in the caches.
    """

    def __init__(self, behaviors: Mapping[str, Callable] | None = None) -> None:
        self.behaviors: dict[str, Callable] = dict(behaviors or {})
        self._keys: dict[bytes, SealingKey] = {}
        self._unsealed: dict[tuple, Any] = {}
        self._rings: dict[bytes, tuple[Map, Keyring | None]] = {}

    def behavior(self, name: str) -> Callable:
        fn = self.behaviors.get(name)
        if fn is None:
            raise AvmError(f"no behavior named {name!r}; known: {sorted(self.behaviors)}")
        return fn

    def sealing_key(self, version: int, raw: bytes) -> SealingKey:
        k = self._keys.get(raw)
        if k is None or k.version != version:
            k = SealingKey(version, raw)
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[raw] = k
        return k

    def keyring(self, net: Network, address: bytes) -> Keyring | None:
        versions = net.keys.get(address)
        if versions is None:
            return None
        cached = self._rings.get(address)
        if cached is not None and cached[0] is versions:
            return cached[1]
        ring = self._build_ring(address, versions)
        self._rings[address] = (versions, ring)
        return ring

    def _build_ring(self, address: bytes, versions: Map) -> Keyring | None:
        ring = None
        for v in sorted(versions, reverse=True):
            k = self.sealing_key(v, versions[v])
            if ring is None:
                ring = Keyring(address, k)
            else:
                ring._keys[v] = k
        return ring

    def unseal(self, cap: Capability, ring: Keyring) -> Any:
        if cap.kind:  # substructural contexts are decoded fresh: identity matters
            return unseal_context(cap, ring)
        key = (cap.address, cap.keyver, cap.priority, cap.sealed)
        ctx = self._unsealed.get(key, _MISSING)
        if ctx is _MISSING:
            ctx = unseal_context(cap, ring)
            if len(self._unsealed) > 100_000:
                self._unsealed.clear()
            self._unsealed[key] = ctx
        elif ring.get(cap.keyver) is None:  # rotated away since it was cached
            raise UnsealError(f"capability was sealed under key version {cap.keyver}, which is retired")
        return ctx


_MISSING = object()


# ---------------------------------------------------------------------------------------
# Building networks
# ---------------------------------------------------------------------------------------


def _with(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` for our frozen records, without its per-call overhead.

    The network does a handful of these per step, so the stock version (which re-runs
    ``__init__`` and its checks) dominated the simulator's profile.
    """
    new = object.__new__(type(obj))
    d = new.__dict__
    d.update(obj.__dict__)
    d.pop("_avm_n", None)
    d.update(changes)
    return new


def _batch(sender: Any, dest: Any, seq: int, ts: tuple, priority: float, msgs: tuple,
           notify: Any = None, count: int | None = None) -> Batch:
    """A new Batch with its substructural count cached (it is walked once, not per map op)."""
    b = Batch(sender, dest, seq, ts, priority, msgs, 0, notify)
    b.__dict__["_avm_n"] = check_value(msgs) if count is None else count
    return b


def _derive(seed: int, *parts: Any) -> bytes:
    return hashlib.sha256(repr((seed, *parts)).encode()).digest()


def new_network(seed: int = 0, config: Config | None = None, hosts: Iterable[str] = ("h0",)) -> Network:
    net = Network(config=config or Config(), seed=seed, rng=seed & ((1 << 64) - 1))
    for h in hosts:
        net = add_host(net, h)
    return net


def add_host(net: Network, name: str) -> Network:
    if name in net.hosts:
        raise AvmError(f"host {name!r} already exists")
    ident = IdentityKey.from_seed(_derive(net.seed, "host", name))
    addr = address_of(ident.resource((("host", name),)))
    return _with(net, hosts=net.hosts._set_plain(name, HostRecord(name, addr)))


def _bump(stats: Map, name: str, n: int = 1) -> Map:
    return stats._set_plain(name, stats.get(name, 0) + n)


def commons_env(net: Network, host: str) -> Map:
    origin = net.hosts[host].address
    return Map({s: commons_cap(origin, s) for s in SERVICES})


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
    ident = IdentityKey.from_seed(_derive(net.seed, "machine", name))
    address = address_of(ident.resource((("name", name),)))
    raw_bytes = hashlib.shake_256(b"avm-siv" + _derive(net.seed, "seal", name)).digest(64)
    rec = MachineRecord(name=name, state=None, behavior=behavior, signal=signal, host=host, keyver=0)
    net = _with(
        net,
        machines=net.machines.set(address, rec),
        names=net.names.set(name, address),
        keys=net.keys.set(address, Map({0: raw_bytes})),
    )
    key = (env_obj or Env()).sealing_key(0, raw_bytes)
    sig = seal_context(address, key, signal)
    envmap = commons_env(net, host).update(env or {})
    msgs = ((sig, ("init", args)), (sig, ("self", Self(address, 0, key))), (sig, ("env", envmap)))
    net, evs = _enqueue_local(net, ("host", host), address, msgs, host, 1.0)
    return net, address, [events.Spawned(name, address, host, net.now), *evs]


def mint(net: Network, env: Env, address: bytes, context: Any, priority: float = 0.0) -> Capability:
    """Make a capability to a machine, as its host may (web page, CLI, tests)."""
    versions = net.keys.get(address)
    if versions is None:
        raise CapabilityError(f"no machine {address_text(address)[:10]}... in this network")
    v = max(versions)
    return seal_context(address, env.sealing_key(v, versions[v]), context, priority)


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
    raw = _derive(net.seed, "seal", address, v) + _derive(net.seed, "seal2", address, v)
    new = (versions if keep_old else Map()).set(v, raw)
    m = net.machines[address]
    net = _with(net, keys=net.keys.set(address, new),
                machines=net.machines.set(address, _with(m, keyver=v)))
    new_self = Self(address, v, env.sealing_key(v, raw))
    sig = mint(net, env, address, m.signal)
    return _enqueue_local(net, ("host", m.host), address, ((sig, ("self", new_self)),),
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
    net = _with(net, machines=net.machines.delete(address), names=net.names.delete(m.name),
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
    return _with(net, machines=net.machines.set(image.address, rec),
                 names=net.names.set(image.name, image.address),
                 keys=net.keys.set(image.address, image.keys))


def move(net: Network, address: bytes, host: str) -> Network:
    """Move a machine to another host of the same network; channels follow it."""
    if host not in net.hosts:
        raise AvmError(f"unknown host {host!r}")
    m = net.machines[address]
    return _with(net, machines=net.machines.set(address, _with(m, host=host)))


def set_status(net: Network, address: bytes, status: str) -> Network:
    """Suspend, resume ("running") or stop a machine. A suspended machine queues its input."""
    if status not in ("running", "suspended", "stopped"):
        raise AvmError(f"unknown status {status!r}")
    m = net.machines[address]
    return _with(net, machines=net.machines.set(address, _with(m, status=status)))


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
        key = ("~", cap.commons[0]) if cap.commons is not None else cap.address
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
        host = _host_of_dest(net, dest)
        prio = group_prio[dest] if priority is None else priority
        net, evs = _enqueue_local(net, ("client", client), dest, tuple(group), host, prio,
                                  count=group_counts[dest])
        out.extend(evs)
    return net, out


def _host_of_dest(net: Network, dest: Any) -> str:
    if type(dest) is bytes:
        m = net.machines.get(dest)
        if m is not None:
            return m.host
    return next(iter(sorted(net.hosts)))


def _host_of_sender(net: Network, sender: Any) -> str:
    if type(sender) is bytes:
        m = net.machines.get(sender)
        return m.host if m is not None else next(iter(sorted(net.hosts)))
    if sender[0] == "host":
        return sender[1]
    if sender[0] == "~":
        return sender[2]
    return next(iter(sorted(net.hosts)))


# ---------------------------------------------------------------------------------------
# Enqueueing batches: local inbox or cross-host outbox
# ---------------------------------------------------------------------------------------


def _stamp(net: Network, host: str) -> tuple[Network, tuple]:
    h = net.hosts[host]
    ts = hlc_now(h.clock, net.now)
    return _with(net, hosts=net.hosts._set_plain(host, _with(h, clock=ts))), ts


def _enqueue_local(
    net: Network, sender: Any, dest: Any, msgs: tuple, host: str, priority: float,
    notify: Any = None, count: int | None = None,
) -> tuple[Network, list]:
    """A batch whose sender and receiver are on the same host goes straight to the inbox."""
    chan = (sender, dest)
    seq = net.next_seq.get(chan, 0) + 1
    net, ts = _stamp(net, host)
    b = _batch(sender, dest, seq, ts, priority, msgs, notify, count)
    net = _with(net, next_seq=net.next_seq._set_plain(chan, seq))
    if chan in net.received:  # the channel used the wire before a machine moved: keep count
        net = _with(net, received=net.received._set_plain(chan, seq))
    net = _accept(net, chan, b)
    return net, [events.Created(chan, seq, dest, len(msgs), ts, priority, net.now)]


def _accept(net: Network, chan: tuple, b: Batch) -> Network:
    """Put a batch in the receiver's durable inbox (in order, exactly once)."""
    head = net.head.get(chan)
    heads = net.head if head is not None else net.head._set_plain(chan, b.seq)
    live = net.live if chan in net.live else net.live._set_plain(chan, True)
    return _with(net, pending=net.pending.set((chan, b.seq), b), head=heads, live=live)


def _send_batch(net: Network, sender: Any, dest: Any, msgs: tuple, src_host: str,
                priority: float, notify: Any = None) -> tuple[Network, list]:
    dst_host = _host_of_dest(net, dest) if type(dest) is bytes else src_host
    chan = (sender, dest)
    got = net.received.get(chan)
    # Local, unless batches of this channel are still on the wire (a machine moved here, or
    # was exported): a local batch must not overtake them (rule 4).
    settled = got is None or got >= net.next_seq.get(chan, 0)
    if type(dest) is not bytes or settled and (dst_host == src_host or dest not in net.machines):
        return _enqueue_local(net, sender, dest, msgs, src_host, priority, notify)
    seq = net.next_seq.get(chan, 0) + 1
    net, ts = _stamp(net, src_host)
    b = _batch(sender, dest, seq, ts, priority, msgs, notify)
    # First time on the wire: the earlier batches (local, before a move) are in the inbox.
    received = net.received if got is not None else net.received._set_plain(chan, seq - 1)
    net = _with(
        net, next_seq=net.next_seq._set_plain(chan, seq), received=received,
        outbox=net.outbox.set((chan, seq), (b, net.now + net.config.retry_ticks, 1)))
    evs: list = [events.Created(chan, seq, dest, len(msgs), ts, priority, net.now)]
    net, more = _transmit(net, "batch", src_host, dst_host, chan, seq, b)
    return net, evs + more


def _transmit(net: Network, kind: str, src: str, dst: str, chan: tuple, seq: int,
              payload: Any) -> tuple[Network, list]:
    """Put a transmission on the wire, through the fault model."""
    f = net.config.faults
    rng = net.rng
    at = net.now
    evs: list = []
    cut = net.cuts.get(tuple(sorted((src, dst))))
    if cut is not None and cut > at:
        return _with(net, stats=_bump(net.stats, "wire.cut")), [
            events.Wire("cut", kind, src, dst, chan, seq, at)]
    if f.loss:
        x, rng = rng_float(rng)
        if x < f.loss:
            return _with(net, rng=rng, stats=_bump(net.stats, "wire.lost")), [
                events.Wire("lost", kind, src, dst, chan, seq, at)]
    copies = 1
    if f.duplicate:
        x, rng = rng_float(rng)
        if x < f.duplicate:
            copies = 2
            evs.append(events.Wire("duplicated", kind, src, dst, chan, seq, at))
            net = _with(net, stats=_bump(net.stats, "wire.duplicated"))
    wire = net.wire
    n = net.wire_n
    stats = net.stats
    for _ in range(copies):
        delay, rng = rng_int(rng, f.delay_min, max(f.delay_min, f.delay_max))
        corrupt = False
        if f.corrupt:
            x, rng = rng_float(rng)
            corrupt = x < f.corrupt
        n += 1
        wire = wire.set((at + delay, n), (kind, src, dst, chan, seq, payload, corrupt))
        stats = _bump(stats, "wire.sent")
    return _with(net, rng=rng, wire=wire, wire_n=n, stats=stats), evs


# ---------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------


def step(net: Network, env: Env) -> tuple[Network, list]:
    """Apply one action to the network; return the new network and what happened."""
    now = net.now
    # 1. Due timed work: transmissions, host restarts, retries (earliest first).
    due = _next_timed(net)
    if due is not None and due[0] <= now:
        return _do_timed(net, env, due)
    # Random faults that strike between actions.
    f = net.config.faults
    if f.crash or f.partition:
        net2, evs = _maybe_fault(net)
        if evs:
            return net2, evs
        net = net2
    # 2. The best ready batch.
    pick = _pick(net)
    if pick is not None:
        return _run(net, env, pick)
    # 3. Advance the clock to the next timed event.
    if due is not None:
        return _with(net, now=due[0]), []
    # 4. Nothing left.
    return net, [events.Idle(now)]


def _next_timed(net: Network) -> tuple | None:
    """The earliest timed event, with a total order on ties.

    Map iteration order follows key hashes, which Python randomises per process for
    text and bytes; every choice here therefore compares explicit keys, so that a seed
    replays identically in a fresh process (the CLI's reproduction promise).
    """
    best: tuple | None = None
    best_key: tuple | None = None
    for k in net.wire._m:
        key = (k[0], 0, k[1])
        if best_key is None or key < best_key:
            best, best_key = (k[0], k, "wire"), key
    for h in net.hosts._m.values():
        if not h.up:
            key = (h.down_until, 1, h.name)
            if best_key is None or key < best_key:
                best, best_key = (h.down_until, h.name, "restart"), key
    for k, (_b, retry_at, _) in net.outbox._m.items():
        key = (retry_at, 2, repr(k))
        if best_key is None or key < best_key:
            best, best_key = (retry_at, k, "retry"), key
    return best


def _do_timed(net: Network, env: Env, due: tuple) -> tuple[Network, list]:
    what = due[2]
    if what == "wire":
        return _deliver(net, due[1])
    if what == "restart":
        return _restart_host(net, env, due[1])
    return _retry(net, due[1])


def _maybe_fault(net: Network) -> tuple[Network, list]:
    f = net.config.faults
    rng = net.rng
    hosts = sorted(net.hosts)
    if f.crash and len(hosts) > 1:
        x, rng = rng_float(rng)
        if x < f.crash:
            up = [h for h in hosts if net.hosts[h].up]
            if len(up) > 1:  # keep at least one host running so the run can progress
                i, rng = rng_int(rng, 0, len(up) - 1)
                d, rng = rng_int(rng, f.down_min, f.down_max)
                h = net.hosts[up[i]]
                until = net.now + d
                net = _with(net, rng=rng, stats=_bump(net.stats, "fault.crash"),
                              hosts=net.hosts._set_plain(h.name, _with(h, up=False, down_until=until)))
                # A crash loses what was in flight *to* the host: the wire keeps it, and
                # delivery finds the host down and drops it.
                return net, [events.Host(h.name, False, net.now, until)]
    if f.partition and len(hosts) > 1:
        x, rng = rng_float(rng)
        if x < f.partition:
            i, rng = rng_int(rng, 0, len(hosts) - 1)
            j, rng = rng_int(rng, 0, len(hosts) - 2)
            if j >= i:
                j += 1
            d, rng = rng_int(rng, f.partition_min, f.partition_max)
            pair = tuple(sorted((hosts[i], hosts[j])))
            until = net.now + d
            net = _with(net, rng=rng, cuts=net.cuts._set_plain(pair, until),
                          stats=_bump(net.stats, "fault.partition"))
            return net, [events.Cut(pair, until, net.now)]
    return _with(net, rng=rng), []


def _restart_host(net: Network, env: Env, name: str) -> tuple[Network, list]:
    h = net.hosts[name]
    net = _with(net, hosts=net.hosts._set_plain(name, _with(h, up=True)),
                  stats=_bump(net.stats, "host.restart"))
    evs: list = [events.Host(name, True, net.now)]
    if net.config.restart_signal:
        for addr in sorted(a for a, m in net.machines.items() if m.host == name):
            m = net.machines[addr]
            if m.status == "stopped":
                continue
            sig = mint(net, env, addr, m.signal)
            net, more = _enqueue_local(
                net, ("host", name), addr, ((sig, ("restart", Map({"host": name}))),), name, 1.0)
            evs.extend(more)
    return net, evs


def _retry(net: Network, key: tuple) -> tuple[Network, list]:
    b, _, attempts = net.outbox[key]
    chan, seq = key
    src = _host_of_sender(net, b.sender)
    cfg = net.config
    if not net.hosts[src].up:
        # A crashed sender retries after it restarts.
        h = net.hosts[src]
        return _with(net, outbox=net.outbox.set(key, (b, h.down_until + 1, attempts))), []
    if attempts >= cfg.retry_max and not b.abandoned:
        # Give up, but honestly: the receiver may have applied the batch and only the
        # acknowledgements were lost, so the outcome is indefinite. The outbox keeps a
        # tombstone under the same number, retried at the slowest pace until
        # acknowledged: a receiver that never got the batch skips the number instead of
        # waiting for it forever, one that did refuses the tombstone as a duplicate.
        tomb = _batch(b.sender, b.dest, b.seq, b.ts, b.priority, (), None, 0)
        tomb = _with(tomb, abandoned=True)
        tomb.__dict__["_avm_n"] = 0
        net = _with(net, outbox=net.outbox.set(key, (tomb, net.now + cfg.retry_ticks_max, attempts)),
                    stats=_bump(net.stats, "drop.unreachable"))
        why = "unreachable: retry budget spent; it may have been applied"
        # Feedback (rule 10) reports this drop too, from the sender's side: the
        # destination is the one thing that cannot be reached.
        net, more = _notify(net, b, False, why, host=src)
        return net, [events.Dropped(chan, seq, b.dest, why, net.now, definite=False), *more]
    if b.abandoned:
        net = _with(net, outbox=net.outbox.set(key, (b, net.now + cfg.retry_ticks_max, attempts)))
        return _transmit(net, "batch", src, _host_of_dest(net, b.dest), chan, seq, b)
    backoff = min(cfg.retry_ticks << min(attempts, 16), cfg.retry_ticks_max)
    net = _with(net, outbox=net.outbox.set(key, (b, net.now + backoff, attempts + 1)),
                  stats=_bump(net.stats, "wire.retry"))
    dst = _host_of_dest(net, b.dest)
    return _transmit(net, "batch", src, dst, chan, seq, b)


def _deliver(net: Network, key: tuple) -> tuple[Network, list]:
    kind, src, dst, chan, seq, payload, corrupt = net.wire[key]
    net = _with(net, wire=net.wire.delete(key))
    at = net.now
    if not net.hosts[dst].up:
        return _with(net, stats=_bump(net.stats, "wire.to-down-host")), [
            events.Wire("lost-host-down", kind, src, dst, chan, seq, at)]
    if corrupt:
        # Authenticated transport: a corrupted frame fails its check and is discarded.
        return _with(net, stats=_bump(net.stats, "wire.corrupt-refused")), [
            events.Wire("corrupt-refused", kind, src, dst, chan, seq, at)]
    if kind == "ack":
        upto = payload
        acked = net.acked.get(chan, 0)
        outbox = net.outbox
        for s in range(acked + 1, upto + 1):
            if (chan, s) in outbox:
                outbox = outbox.delete((chan, s))
        net = _with(net, outbox=outbox, acked=net.acked._set_plain(chan, max(acked, upto)))
        return net, [events.Wire("acked", kind, src, dst, chan, upto, at)]
    b: Batch = payload
    got = net.received.get(chan, 0)
    evs: list = []
    h = net.hosts[dst]
    net = _with(net, hosts=net.hosts._set_plain(dst, _with(h, clock=hlc_recv(h.clock, b.ts, at))))
    if seq <= got or (chan, seq) in net.held:
        net = _with(net, stats=_bump(net.stats, "wire.duplicate-refused"))
        evs.append(events.Wire("refused-duplicate", kind, src, dst, chan, seq, at))
    elif seq == got + 1:
        net = _accept(net, chan, b)
        got = seq
        held = net.held
        while (chan, got + 1) in held:
            nb = held[(chan, got + 1)]
            held = held.delete((chan, got + 1))
            net = _accept(net, chan, nb)
            got += 1
        net = _with(net, held=held, received=net.received._set_plain(chan, got))
        evs.append(events.Wire("delivered", kind, src, dst, chan, seq, at))
    else:
        net = _with(net, held=net.held.set((chan, seq), b),
                      stats=_bump(net.stats, "wire.early"))
        evs.append(events.Wire("held-early", kind, src, dst, chan, seq, at))
    # Acknowledge cumulatively what is now durable in the inbox.
    net, more = _transmit(net, "ack", dst, src, chan, got, got)
    return net, evs + more


# -- scheduling ----------------------------------------------------------------------


def _runnable(net: Network, b: Batch) -> bool:
    dest = b.dest
    if type(dest) is bytes:
        m = net.machines.get(dest)
        if m is None:
            return True  # runs only to be dropped as unknown
        if m.status == "suspended":
            return False
        return net.hosts[m.host].up
    host = _host_of_sender(net, b.sender)
    return net.hosts[host].up


def _pick(net: Network) -> tuple | None:
    best = None
    best_score = None
    for chan in net.live._m:
        b = net.pending[(chan, net.head[chan])]
        if not _runnable(net, b):
            continue
        s = score(b.ts, b.priority)
        if best is None or s < best_score or (s == best_score and repr(chan) < repr(best[0])):
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


def _pop(net: Network, chan: tuple, seq: int) -> Network:
    pending = net.pending.delete((chan, seq))
    nxt = seq + 1
    if (chan, nxt) in pending:
        return _with(net, pending=pending, head=net.head._set_plain(chan, nxt))
    return _with(net, pending=pending, head=net.head._set_plain(chan, nxt), live=net.live.delete(chan))


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
            nb = _with(b, restarts=b.restarts + 1)
            net = _with(net, pending=net.pending.set((chan, b.seq), nb),
                          stats=_bump(net.stats, "batch.interrupted"))
            evs.append(events.Interrupted(chan, b.seq, b.dest, nb.restarts, net.now))
            chan, b = rival
    net = _pop(net, chan, b.seq)
    if b.abandoned:  # the sender gave up on this number: skip it, keeping the order
        return _with(net, stats=_bump(net.stats, "batch.skipped-abandoned")), evs
    net = _with(net, now=net.now + 1)
    dest = b.dest
    if type(dest) is tuple:
        net, more = _run_commons(net, env, chan, b)
        return net, evs + more
    m = net.machines.get(dest)
    if m is None and net.config.boundary:
        net = _with(net, exits=net.exits + b.messages, stats=_bump(net.stats, "exits"))
        evs.append(events.Applied(chan, b.seq, dest, True, None, 0, net.now))
        return net, evs
    if m is None:
        net = _with(net, stats=_bump(net.stats, "drop.unknown-address"))
        evs.append(events.Dropped(chan, b.seq, dest, "unknown address", net.now))
        net, more = _notify(net, b, False, "unknown address")
        return net, evs + more
    if m.status == "stopped":
        net = _with(net, stats=_bump(net.stats, "drop.stopped"))
        evs.append(events.Dropped(chan, b.seq, dest, "machine stopped", net.now))
        net, more = _notify(net, b, False, "machine stopped")
        return net, evs + more
    # Unseal every capability first: one bad capability fails the whole batch (rule 10).
    ring = env.keyring(net, dest)
    try:
        msgs = _open_messages(env, ring, b.messages)
    except UnsealError as e:
        net = _with(net, stats=_bump(net.stats, "drop.unseal"))
        return _fail_batch(net, chan, b, Failure("unseal", str(e)), evs, counted=False)
    try:
        fn = env.behavior(m.behavior)
    except AvmError as e:
        return _fail_batch(net, chan, b, Failure("undeliverable", str(e)), evs)
    r = run_batch(fn, m.state, msgs, plain_messages=not b.__dict__.get("_avm_n", 1))
    if not r.ok:
        net = _with(net, stats=_bump(net.stats, "batch.failed"))
        evs.append(events.Applied(chan, b.seq, dest, False, r.failure, r.steps, net.now, tuple(msgs)))
        net, more = _notify(net, b, False, str(r.failure))
        return net, evs + more
    # Commit: the new state and the outgoing batches in one act (rule 3).
    net = _with(
        net, machines=net.machines.set(dest, _with(m, state=r.state)),
        stats=_bump(_bump(net.stats, "batch.ok"), "steps", r.steps))
    # Read-only: the step handed back the state it was given (or an equal atom). Hosts
    # use this to run such batches optimistically in parallel; the simulator reports it.
    ro = r.state is m.state or (type(r.state) in _ATOMS and r.state == m.state
                                and type(r.state) is type(m.state))
    evs.append(events.Applied(chan, b.seq, dest, True, None, r.steps, net.now, tuple(msgs), ro))
    net, more = _emit(net, dest, m.host, r.outputs)
    evs.extend(more)
    net, more = _notify(net, b, True, "")
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
    stats = _bump(net.stats, "batch.failed") if counted else net.stats
    if failure.rule == "timeout":
        stats = _bump(stats, "batch.timeout")
    net = _with(net, stats=stats)
    evs = [*evs, events.Applied(chan, b.seq, b.dest, False, failure, 0, net.now)]
    net, more = _notify(net, b, False, str(failure))
    return net, evs + more


def _emit(net: Network, sender: Any, host: str, outputs: tuple) -> tuple[Network, list]:
    """Partition outputs by destination (rule 3) and send each group as one batch."""
    if not outputs:
        return net, []
    evs: list = []
    for dest, group in partition(outputs):
        prio = max(c.priority for c, _ in group)
        net, more = _send_batch(net, sender, dest, group, host, prio)
        evs.extend(more)
    return net, evs


def _notify(net: Network, b: Batch, ok: bool, why: str, host: str | None = None) -> tuple[Network, list]:
    if b.notify is None:
        return net, []
    status_cap, tag = b.notify
    content = ("delivered", tag) if ok else ("failed", tag, why)
    host = host or _host_of_dest(net, b.dest)
    return _send_batch(net, ("~", "feedback", host), status_cap.address, ((status_cap, content),),
                       host, status_cap.priority)


def _run_commons(net: Network, env: Env, chan: tuple, b: Batch) -> tuple[Network, list]:
    service = b.dest[1]
    host = _host_of_sender(net, b.sender)
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
                net = _with(net, stats=_bump(net.stats, "commons.refused"))
                continue
            target, inner, status_cap, tag = content
            dest = ("~", target.commons[0]) if target.commons is not None else target.address
            net, more = _send_batch(net, b.sender, dest, ((target, inner),), host,
                                    target.priority, notify=(status_cap, tag))
            evs.extend(more)
            continue
        now_ms = net.config.epoch_ms + net.now * net.config.tick_ms
        outs, rng, err = serve(service, content, now_ms, rng)
        if err:
            refused = err
            evs.append(events.Commons(service, b.sender, err, net.now))
            net = _with(net, stats=_bump(net.stats, "commons.refused"))
        outputs.extend(outs)
    net = _with(net, rng=rng)
    net, more = _emit(net, ("~", service, host), host, tuple(outputs))
    # Feedback to a commons target (rule 10): delivered, or refused and why.
    net, note = _notify(net, b, refused is None, f"refused by ~{service}: {refused}", host=host)
    return net, evs + more + note


# ---------------------------------------------------------------------------------------
# Small helpers used by the simulator and the test kit
# ---------------------------------------------------------------------------------------


def quiescent(net: Network) -> bool:
    """No batch pending or in flight anywhere."""
    return not net.live and not net.wire and not net.outbox and not net.held


def describe_chan(net: Network, chan: tuple) -> str:
    return f"{who(net, chan[0])} -> {who(net, chan[1])}"


def who(net: Network, x: Any) -> str:
    if type(x) is bytes:
        m = net.machines.get(x)
        return m.name if m is not None else address_text(x)[:10] + "..."
    if type(x) is tuple and x and x[0] == "~":
        return "~" + x[1]
    if type(x) is tuple and len(x) == 2:
        return f"{x[0]}:{x[1]}"
    return repr(x)


def batch_hash(b: Batch) -> bytes:
    return codec.value_hash(b.messages)

