"""The network as a value: its records, its events, and the bookkeeping every step shares.

    "The network is a value too: machines, pending batches per (sender, receiver)
    channel, the clock, and the scheduler's seed." (DESIGN section 7)

:class:`Network` is an immutable, encodable value (a registered record of persistent
maps), so it can be kept, compared, forked, and even be the state of a machine (nesting,
see ``avm.core.nest``). This module holds what :mod:`avm.core.delivery` (between hosts)
and :mod:`avm.core.network` (the step) both need: the records, the events a step
reports, the :class:`Env` that resolves behavior names, and the small pure functions
that stamp, number and enqueue batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .caps import (
    Capability,
    Keyring,
    SealingKey,
    address_text,
    authenticated_input,
    commons_cap,
    open_sealed,
    seal_context,
)
from .commons import SERVICES
from .errors import AvmError, CapabilityError
from .inbox import Index, accepted
from .machine import Failure
from .schedule import hlc_now
from .values import Map, check_value, record, replace_fields

__all__ = [
    "Faults",
    "Config",
    "Batch",
    "MachineRecord",
    "HostRecord",
    "Network",
    "Env",
    "events",
    "mint",
    "commons_env",
    "quiescent",
    "who",
    "batch_hash",
]


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
    rng: int = 0  # SplitMix64 state: fault-injection decisions only, never keys or `random`
    secret: bytes = b""  # key material every key derives from (avm.core.keys); as secret as keys
    kdf_n: int = 0  # fresh key material drawn from the secret so far
    random_n: Map = field(default_factory=Map)  # requester -> `random` answers it had
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
    # host -> (entry, ...): linear and relevant values nobody could take back (D7); each
    # entry is Map(reason, rule, values, sender, dest, seq, at)
    dead_letters: Map = field(default_factory=Map)
    # The timer service (avm.core.timers): id -> Timer, and the keys (due, id) in order,
    # as sorted chunks of sorted keys.
    timers: Map = field(default_factory=Map)
    timer_order: tuple = ()
    # The spawner service (avm.core.spawner): ("grant", id) -> Map, ("revoke", id) -> id.
    spawners: Map = field(default_factory=Map)
    # Machines of other hosts, for a host that reaches them over the wire: address ->
    # host name (avm.core.delivery.add_remote). Empty in the simulator, where every
    # machine of the network is in ``machines``.
    remote: Map = field(default_factory=Map)


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
        batch: Any = field(default=None, compare=False, repr=False)  # the Batch itself

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
        batch: Any = field(default=None, compare=False, repr=False)  # the Batch processed

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
    class DeadLetter:
        """Linear or relevant values of a batch that nobody could take back (D7) were
        recorded in ``net.dead_letters[host]``."""

        host: str
        sender: Any
        dest: Any
        seq: int
        reason: str
        count: int  # messages recorded
        at: int

    @dataclass(frozen=True)
    class Operator:
        """An operator's act outside any step, recorded for audit (and for the census).

        ``act`` is ``export`` / ``import`` (``subject``: the machine's address, ``values``:
        its ``MachineImage``), ``rotate`` (``detail``: ``"keep_old"`` or ``"revoke"``),
        ``restore`` (``subject`` None, ``detail``: ``"snapshot"`` when the network is one
        this simulation's ``snapshot()`` returned, else ``"edited"``; ``values``: the
        networks ``(before, after)``), ``redeliver`` (``subject``: the host whose dead
        letter it was; ``values``: the entry) or ``clear`` (``subject``: the host;
        ``values``: the entries sent to ``null``).
        """

        act: str
        subject: Any
        at: int
        detail: str = ""
        values: Any = field(default=None, compare=False, repr=False)

    @dataclass(frozen=True)
    class Idle:
        """Nothing can run now and nothing is due: the network waits for the outside.

        ``quiescent`` says whether nothing is left at all; an idle network that is not
        quiescent holds work that cannot run (a suspended machine's queue).
        """

        at: int
        quiescent: bool = True

    @dataclass(frozen=True)
    class Commons:
        service: str
        sender: Any
        error: str | None
        at: int


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
        #: The scheduler's cache of what it proved about head batches (network._authenticate):
        #: (chan, seq) -> (batch, key versions, authentication, score).
        self.auth_cache: dict[tuple, tuple] = {}
        #: The ordered views of the inbox, wire and outbox of the network last stepped
        #: with this Env (avm.core.inbox.Index): a cache, rebuilt for any other network.
        self.index = Index()
        #: Who runs a machine's batch: None runs :func:`avm.core.machine.run_batch` here,
        #: inline. A host sets ``runner(step, record, address, messages, plain) ->
        #: BatchResult`` to run it elsewhere (a worker process, avm.host.isolation); the
        #: runner must come back with what ``run_batch`` would return, or a failure.
        self.batch_runner: Callable[..., Any] | None = None

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
        vm = versions._m
        if len(vm) == 1:  # the usual case: one key version (no sort, no cached order)
            for v, raw in vm.items():
                return Keyring(address, self.sealing_key(v, raw))
        ring = None
        for v in sorted(versions, reverse=True):
            k = self.sealing_key(v, versions[v])
            if ring is None:
                ring = Keyring(address, k)
            else:
                ring._keys[v] = k
        return ring

    def unseal(self, cap: Capability, ring: Keyring) -> Any:
        """``unseal_context(cap, ring)``, remembering unrestricted contexts it opened.

        The cache is keyed on exactly what AES-SIV authenticated: the key object, the
        associated-data bytes (every clear field, in a fixed layout where ``-0.0``,
        ``0.0``, ``0`` and ``False`` differ) and the ciphertext bytes. Never on fields
        compared with ``==``: so a warm cache opens exactly what a cold one would, and
        refuses exactly what it would refuse. The checks that need no decryption
        (machine, retired key version) run on every call, hit or miss. What it hands out
        is an immutable value, so sharing one context between uses is safe.
        """
        sk, ad = authenticated_input(cap, ring)  # refuses other machines, retired versions
        if cap.kind:  # substructural contexts are decoded fresh: identity matters
            return open_sealed(cap, sk, ad)
        key = (sk, ad, cap.sealed)
        ctx = self._unsealed.get(key, _MISSING)
        if ctx is _MISSING:
            ctx = open_sealed(cap, sk, ad)
            if len(self._unsealed) > UNSEAL_CACHE_MAX:
                self._unsealed.clear()
            self._unsealed[key] = ctx
        return ctx


_MISSING = object()
#: Entries in one Env's unseal cache before it is emptied (a bound, not a tuning knob).
UNSEAL_CACHE_MAX = 100_000


_tuple_new: Any = tuple.__new__

#: A copy of a record with some fields changed (the network does a handful per step).
with_ = replace_fields


def new_batch(sender: Any, dest: Any, seq: int, ts: tuple, priority: float, msgs: tuple,
              notify: Any = None) -> Batch:
    """A new Batch, built as one tuple (field order and defaults as declared in Batch;
    a test compares the two constructions). Its messages are not checked here: callers
    check them, and pass their substructural count to :func:`accept`."""
    return _tuple_new(Batch, (sender, dest, seq, ts, priority, msgs, 0, notify, False))  # type: ignore[no-any-return]


def bump(stats: Map, name: str, n: int = 1) -> Map:
    return stats._set_plain(name, stats.get(name, 0) + n)


def commons_env(net: Network, host: str) -> Map:
    """The commons capabilities of ``host``, as every machine it spawns receives them.

    One Map per host address, shared by every spawn (a Map is immutable): building it
    took a third of a spawn.
    """
    origin = net.hosts[host].address
    m = _COMMONS_ENVS.get(origin)
    if m is None:
        if len(_COMMONS_ENVS) >= 1024:
            _COMMONS_ENVS.clear()
        m = _COMMONS_ENVS[origin] = Map({s: commons_cap(origin, s) for s in SERVICES})
    return m


_COMMONS_ENVS: dict[bytes, Map] = {}


def mint(net: Network, env: Env, address: bytes, context: Any, priority: float = 0.0) -> Capability:
    """Make a capability to a machine, as its host may (web page, CLI, tests)."""
    versions = net.keys.get(address)
    if versions is None:
        raise CapabilityError(f"no machine {address_text(address)[:10]}... in this network")
    v = max(versions)
    return seal_context(address, env.sealing_key(v, versions[v]), context, priority)


def host_of_dest(net: Network, dest: Any) -> str:
    if type(dest) is bytes:
        m = net.machines.get(dest)
        if m is not None:
            return m.host
        r = net.remote.get(dest)
        if r is not None:
            return r
    return next(iter(sorted(net.hosts)))


def host_of_sender(net: Network, sender: Any) -> str:
    if type(sender) is bytes:
        m = net.machines.get(sender)
        return m.host if m is not None else next(iter(sorted(net.hosts)))
    if sender[0] == "host":
        return sender[1]
    if sender[0] == "~":
        return sender[2]
    return next(iter(sorted(net.hosts)))


def stamp(net: Network, host: str) -> tuple[Network, tuple]:
    h = net.hosts[host]
    ts = hlc_now(h.clock, net.now)
    return with_(net, hosts=net.hosts._set_plain(host, with_(h, clock=ts))), ts


def enqueue_local(
    net: Network, sender: Any, dest: Any, msgs: tuple, host: str, priority: float,
    notify: Any = None, count: int | None = None,
) -> tuple[Network, list]:
    """A batch whose sender and receiver are on the same host goes straight to the inbox.

    One copy of the network record for the whole act: this runs once per batch.
    """
    chan = (sender, dest)
    seq = net.next_seq.get(chan, 0) + 1
    h = net.hosts[host]
    ts = hlc_now(h.clock, net.now)
    n = check_value(msgs) if count is None else count
    b = new_batch(sender, dest, seq, ts, priority, msgs, notify)
    received = net.received
    if chan in received:  # the channel used the wire before a machine moved: keep count
        received = received._set_plain(chan, seq)
    net = with_(net, hosts=net.hosts._set_plain(host, with_(h, clock=ts)),
                next_seq=net.next_seq._set_plain(chan, seq), received=received,
                **accepted(net, chan, b, n))
    return net, [events.Created(chan, seq, dest, len(msgs), ts, priority, net.now, b)]


def accept(net: Network, chan: tuple, b: Batch, n: int | None = None) -> Network:
    """Put a batch in the receiver's durable inbox (in order, exactly once).

    ``n``: the batch's substructural count if the caller knows it (else it is counted).
    """
    return with_(net, **accepted(net, chan, b, n))


def quiescent(net: Network) -> bool:
    """No batch pending or in flight anywhere, and no timer waiting to fire."""
    return not net.live and not net.wire and not net.outbox and not net.held and not net.timers


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
