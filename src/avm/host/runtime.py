"""The host runtime: the core's network stepped on an asyncio loop, committed to a store.

    "A host is one OS process that runs many machines on an asyncio event loop."
    (DESIGN section 8)

The runtime holds one :class:`~avm.core.network.Network` value (one host, named
``h0`` unless told otherwise) and applies the core's own :func:`~avm.core.network.step`
to it, so every rule of DESIGN section 4 (atomic batches, order, partitioning, per-pair
order, fairness and aging by the core's scores, priorities, interrupts, drops,
conservation) is the core's, never a second copy. What the runtime adds is real time
and durability:

* **Real time.** The network's clock counts milliseconds since the Unix epoch
  (``Config(epoch_ms=0, tick_ms=1)``): before each run of steps it is moved up to the
  wall clock, so batch timestamps (hybrid logical clocks), aging and the ``time``
  commons follow real time. The core also advances the clock by one tick per batch it
  applies, so under a load above 1,000 batches per second the clock runs ahead of the
  wall clock (it never goes back); ``time`` then answers the logical time.
* **Durability.** The rows every step touches (:func:`~avm.host.store.dirty_from_events`)
  accumulate until the next commit; the :class:`~avm.host.store.GroupCommitter` writes
  them from the newest snapshot, many batches in one SQLite transaction. An outside
  caller is answered only after the commit holding its effects (:meth:`Runtime.durable`),
  and reads are served from the last *committed* snapshot, never from steps not yet
  durable.
* **Commons for real.** ``random`` answers come from the network's keyed streams, whose
  secret is 32 bytes from ``os.urandom`` drawn when the store was created (the same
  streams as in the simulator, but with a secret nobody can derive); ``time`` is the
  clock above; ``null``, ``hash``, ``reflect`` and ``feedback`` are the core's.
  ``timer`` (:mod:`avm.core.timers`) keeps its timers in the network value, so they are
  committed with everything else and survive restarts; where the simulator would jump
  its clock to the next due timer, the runtime sleeps until the wall clock gets there.

A commit that fails (disk full, I/O error, a state that does not round-trip) stops the
runtime: it refuses new work with :class:`~avm.host.store.StoreError`, and what was
committed stays what a restart loads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..core import inbox
from ..core import network as nw
from ..core.conserve import needs_transit, strip
from ..core.network import Env, Network, events
from ..core.sim import paced_gc
from ..core.values import replace_fields
from .metrics import GROUP_BUCKETS, LATENCY_BUCKETS, Histogram, event
from .store import Dirty, GroupCommitter, Store, StoreError, dirty_from_events

__all__ = ["Runtime", "CHUNK_STEPS", "host_config", "RESIDENT_MAX_DEFAULT"]

#: Machines a durable host keeps in memory before it evicts the least recently used
#: ones (``open(..., resident_max=)``; None keeps every machine).
RESIDENT_MAX_DEFAULT = 100_000
#: An eviction round brings the resident machines down to this share of the limit, so
#: that rounds (each rebuilds the scheduler's index once) stay rare under load.
EVICT_TO = 0.9
#: Commits an eviction round waits for before it gives up until the next round (each
#: try waits for everything handed to the writer; other tasks may hand over more).
EVICT_TRIES = 5

#: Steps run before the loop yields to other tasks and hands the rows to the writer.
CHUNK_STEPS = 2_000
#: ... or this much time, whichever comes first.
CHUNK_SECONDS = 0.005
#: The loop hands its rows to the writer by itself at most this often (and whenever it
#: runs out of work): a commit costs the writer a fixed share (the header, the batches
#: still queued, a dozen statements, the GIL hand-backs) whatever it carries, so fewer,
#: larger commits cost less per batch. Nobody waits for these: whoever needs a commit
#: (an ``ask``, a ``submit``, the wire, the live events) calls ``durable``, which hands
#: everything over at once.
COMMIT_EVERY_SECONDS = 0.02
#: While a commit younger than this is being written, the loop keeps stepping and the
#: rows wait for the next commit; past it, the loop waits for the writer (back-pressure).
COMMIT_LAG_SECONDS = 0.02


def host_config() -> nw.Config:
    """The core's configuration for a host: the clock counts Unix milliseconds."""
    return nw.Config(epoch_ms=0, tick_ms=1)


Listener = Callable[[Any], None]


class Runtime:
    """Steps one network with the core's rules and commits it; see the module docstring.

    Everything runs on one event loop thread except the store's writer thread, which
    only ever reads immutable snapshots.
    """

    def __init__(self, store: Store, net: Network, env: Env, host: str,
                 clock: Callable[[], float] = time.time,
                 domains: dict[bytes, str] | None = None) -> None:
        self.store = store
        #: address -> trust domain, for machines outside the default one (the store's
        #: table; shared with the isolation pool, which runs each domain apart)
        self.domains: dict[bytes, str] = {} if domains is None else domains
        self.net = net
        self.env = env
        self.host = host
        self.clock = clock
        self.committed = net  # the newest snapshot known to be durable
        self._committed_gen = 0
        self._gen = 0
        self.dirty = Dirty()
        self.committer = GroupCommitter(store) if store.durable else None
        self._last: tuple[int, Network, concurrent.futures.Future] | None = None
        self._last_at = 0.0  # when the newest commit was handed to the writer
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self.failed: BaseException | None = None
        #: destination address -> callback for each events.Applied to it
        self.listeners: dict[bytes, Listener] = {}
        #: (chan, seq) -> callback for the events.Applied or events.Dropped of that batch
        self.watches: dict[tuple, Listener] = {}
        #: called with every step's events (tests feed avm.testing.Checker with it)
        self.tap: Callable[[list], None] | None = None
        #: called with (network before, network after, events) of every step the loop
        #: takes; avm.host.peek records there the batches of machines bound to words
        self.recorder: Callable[[Network, Network, list], None] | None = None
        #: called with every list of events (a step's, or an act's with the Dirty it
        #: named, else None); the HTTP API's live events (avm.host.http_events) subscribe
        #: while a browser listens. Subscribers must be quick and never raise.
        self.subscribers: list[Callable[[list, Dirty | None], None]] = []
        self.counters = {"steps": 0, "batches": 0, "failures": 0, "drops": 0,
                         "interrupts": 0, "commits_requested": 0}
        #: destination address -> [batches applied, batches failed] since the host started
        self.per_machine: dict[bytes, list[int]] = {}
        #: seconds from handing a commit to the writer until it is durable
        self.commit_latency = Histogram(LATENCY_BUCKETS)
        #: commit requests per store transaction
        self.group_size = Histogram(GROUP_BUCKETS)
        if self.committer is not None:
            self.committer.on_commit = self.group_size.observe
        # -- eviction (see evict_config) --
        self.resident_max: int | None = None
        self.idle_seconds: float | None = None
        self.keep: set[bytes] = set()  # addresses never evicted (the host's own machine)
        #: resident machines, least recently used first -> when last used (monotonic s)
        self._lru: OrderedDict[bytes, float] = OrderedDict()
        self.evicting = False
        self.evicted_any = False  # some machine is in the store only
        self.loads = 0
        self.evictions = 0
        self._evict_timer: asyncio.TimerHandle | None = None
        self._count_check = 0  # the resident count at which a full host tries again
        self._gc: Any = None  # the collector's pacing while the loop runs
        #: while above 0, the loop hands no rows to the writer by itself (see hold_commits)
        self._held = 0

    # -- eviction -----------------------------------------------------------------------
    def evict_config(self, resident_max: int | None, idle_seconds: float | None,
                     keep: Iterable[bytes] = (), lazy: bool = False) -> None:
        """Evict cold machines: keep at most ``resident_max`` in memory (least recently
        used out first) and evict any idle for ``idle_seconds``; None for no limit.

        Only a durable store can evict (the evicted state is read back from it).
        ``lazy``: the network was loaded without every machine (Store.load).
        """
        self.resident_max = resident_max
        self.idle_seconds = idle_seconds
        self.keep = set(keep)
        self.evicting = self.store.durable and (resident_max is not None
                                                or idle_seconds is not None)
        self.evicted_any = self.evicted_any or lazy
        now = time.monotonic()
        self._lru = OrderedDict((a, now) for a in self.net.machines._m)

    def resident(self, address: bytes) -> bool:
        """Make sure machine ``address`` is in memory (loading it from the store);
        False if the store has no such machine either."""
        if address in self.net.machines._m:
            return True
        if not self.evicted_any:
            return False
        return self._load(address)

    def _load(self, address: bytes, created: Iterable[Any] = (), exact: bool = True) -> bool:
        """Put an evicted machine back into the network from its committed rows.

        Its state is decoded and its ``Self`` rebound (Store.read_machine). Batches to
        it that were queued while it was out (``created``: their Created events) crossed
        without its keys, so a ``Self`` of its own in them arrived unbound: they are
        stripped again with its keys, as Store.load does for queued batches.
        ``exact=False``: batches to it came in some other way (the wire), so the core's
        index is rebuilt at the next step rather than kept.
        """
        got = self.store.read_machine(address)
        if got is None:
            return False
        rec, versions = got

        def act(net: Network) -> tuple[Network, list]:
            keys = net.keys.set(address, versions)
            inbox.note_keys_added(address)
            net = replace_fields(net, machines=net.machines.set(address, rec), keys=keys)
            for e in created:
                b = net.pending.get((e.chan, e.seq))
                if b is None:
                    continue
                # A new batch object: the index's entry for the old one (made while the
                # machine was out, without its keys) is no longer current.
                msgs = strip(b.messages, address, keys) if needs_transit(b.messages) \
                    else b.messages
                net = replace_fields(net, pending=inbox.replaced(
                    net, e.chan, replace_fields(b, messages=msgs)))  # always a new object
            return net, []

        if exact:
            self.net, _ = nw.outside(self.net, self.env, act)
        else:
            self.net, _ = act(self.net)
        self.loads += 1
        self._lru[address] = time.monotonic()
        return True

    def _track(self, evs: list) -> None:
        """After a step or an act: note which machines were used (LRU), and load the
        receivers of new batches that are in the store only, before the next step."""
        lru = self._lru
        machines = self.net.machines._m
        now = -1.0
        missing: dict[bytes, list | None] | None = None
        for e in evs:
            t = type(e)
            if t is events.Applied:
                a = e.dest
            elif t is events.Created:
                a = e.dest
                if type(a) is bytes and a not in machines:
                    if missing is None:
                        missing = {}
                    got = missing.setdefault(a, [])
                    if got is not None:
                        got.append(e)
                    continue
            elif t is events.Spawned:
                a = e.address
            elif t is events.Wire and e.kind == "batch":
                a = e.chan[1]
                if type(a) is bytes and a not in machines:
                    if missing is None:
                        missing = {}
                    missing[a] = None  # not a batch we can name: rebuild the index
                    continue
            else:
                continue
            if type(a) is bytes:
                if now < 0:
                    now = time.monotonic()
                lru[a] = now
                lru.move_to_end(a)
        if missing is not None and self.evicted_any:
            for a, created in missing.items():
                self._load(a, created or (), exact=created is not None)

    def _busy(self) -> set:
        """Addresses with batches queued to or from them, or in flight between hosts."""
        busy: set = set()
        net = self.net
        for chans in (net.live._m, net.held._m, net.outbox._m):
            for k in chans:
                chan = k[0] if type(k[0]) is tuple and len(k) == 2 and type(k[1]) is int else k
                for x in chan:
                    if type(x) is bytes:
                        busy.add(x)
        return busy

    def _evict_due(self) -> bool:
        if not self.evicting or self.failed is not None or self._closing:
            return False
        n = len(self.net.machines._m)
        limit = self.resident_max
        if limit is not None and n > limit and n >= self._count_check:
            return True
        idle = self.idle_seconds
        if idle is not None and self._lru:
            oldest = next(iter(self._lru.values()))
            return time.monotonic() - oldest >= idle
        return False

    async def evict(self, only: Iterable[bytes] | None = None) -> int:
        """One eviction round now (the loop runs them by itself); returns how many.

        ``only``: evict these machines (those that may go), whatever the limits.

        Pending commits are finished first, and a machine is evicted only if its last
        change is committed (nothing of it waits in the rows of the next commit) and it
        has nothing queued or in flight, so the store holds exactly what is dropped from
        memory and nothing can be lost or reordered.
        """
        if not self.evicting:
            return 0
        for _ in range(EVICT_TRIES):
            await self.durable()
            last = self._last
            if last is None or last[2].done():
                break
            # another task handed over a commit meanwhile: wait for that one too
        else:
            return 0
        if self._closing or self.failed is not None:
            return 0
        net = self.net
        machines = net.machines
        n = len(machines._m)
        limit = self.resident_max
        target = n if limit is None or n <= limit else int(limit * EVICT_TO)
        idle = self.idle_seconds
        cutoff = time.monotonic() - idle if idle is not None else -1.0
        busy = self._busy()
        dirty = self.dirty
        keep = self.keep
        lru = self._lru
        victims: list[bytes] = []
        skipped = []
        if only is not None:
            victims = [a for a in only if a in machines._m and a not in keep
                       and a not in busy and a not in dirty.machines and a not in dirty.keys]
            victims = list(dict.fromkeys(victims))
        for a, t in () if only is not None else lru.items():
            if n - len(victims) <= target and t > cutoff:
                break
            if a in keep or a not in machines._m:
                skipped.append((a, False))
            elif a in busy or a in dirty.machines or a in dirty.keys:
                skipped.append((a, True))
            else:
                victims.append(a)
        now = time.monotonic()
        for a, stays in skipped:  # busy ones count as used now; the others leave the LRU
            if stays:
                lru[a] = now
                lru.move_to_end(a)
            else:
                del lru[a]
        if limit is not None and n - len(victims) > limit:
            # Everything else is busy: try again only once the host grew by a tenth.
            self._count_check = n - len(victims) + max(1, limit // 10)
        if not victims:
            return 0
        keys = net.keys
        env = self.env
        rings = env._rings
        per = self.per_machine
        for a in victims:
            machines = machines.delete(a)
            keys = keys.delete(a)
            rings.pop(a, None)
            lru.pop(a, None)
            per.pop(a, None)  # its statistics count again from its next load
        # The Env's caches are bounded, but their bounds are large (10,000 key objects
        # of about 2 KB of native memory each, 100,000 opened contexts that keep their
        # keys alive): emptied here, they refill with the resident machines' only. A
        # cache never changes a result.
        env._keys.clear()
        env._unsealed.clear()
        env.auth_cache.clear()
        self.net = replace_fields(net, machines=machines, keys=keys)
        self.evictions += len(victims)
        self.evicted_any = True
        return len(victims)

    def _schedule_idle_eviction(self) -> None:
        if self.idle_seconds is None or not self.evicting or self._closing:
            return
        if self._evict_timer is not None:
            self._evict_timer.cancel()
        delay = self.idle_seconds
        if self._lru:
            delay = max(0.0, next(iter(self._lru.values())) + self.idle_seconds
                        - time.monotonic())
        self._evict_timer = asyncio.get_running_loop().call_later(delay + 0.001,
                                                                  self._wake.set)

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            # The collector is paced while the host runs, as in Sim.run: a host's network
            # is a persistent value of many small containers, and with Python's default
            # thresholds full collections (which walk every object, so their cost grows
            # with what is queued and stored) run often and free nothing.
            self._gc = paced_gc()
            self._gc.__enter__()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="avm-host")
            self._wake.set()

    async def close(self) -> None:
        """Commit what ran, stop stepping, stop the writer."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._evict_timer is not None:
            self._evict_timer.cancel()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self.failed is None:
            try:
                await self.durable()
            except StoreError:
                pass
        if self.committer is not None:
            await asyncio.to_thread(self.committer.close)
        if self._gc is not None:
            self._gc.__exit__(None, None, None)
            self._gc = None

    def check_ok(self) -> None:
        """Refuse work once a commit failed or the host is closing."""
        if self.failed is None and self.committer is not None:
            self.failed = self.committer.failed
        if self.failed is not None:
            raise StoreError(
                f"this host stopped after a failed commit ({self.failed}); nothing that "
                "was not committed is served. Fix the storage (free space, the device, "
                "permissions) and reopen the store: it goes on from the last commit, and "
                "work that was never acknowledged may need sending again")
        if self._closing:
            raise StoreError("this host is closed")

    # -- acting on the network ----------------------------------------------------------
    def apply(self, act: Callable[[Network], tuple[Network, list]], dirty: Dirty | None = None,
              journaled: bool = False) -> list:
        """Apply an act of the core (submit, spawn, set_status...) to the network now.

        ``dirty`` names rows the act touches that its events do not tell (a status
        change, a machine destroyed). ``journaled``: the act is one the core's index
        follows (submit, spawn: :func:`avm.core.network.outside`), so the next step
        does not rebuild it. Raises what the act raises, and then changed nothing.
        """
        self.check_ok()
        if journaled:
            net, evs = nw.outside(self.net, self.env, act)
        else:
            net, evs = act(self.net)
        self.net = net
        dirty_from_events(evs, self.dirty)
        if self.tap is not None:
            self.tap(evs)
        if dirty is not None:
            self.dirty.merge(dirty)
        if self.evicting:
            self._track(evs)
        self._observe(evs)
        for fn in self.subscribers:
            fn(evs, dirty)
        self._wake.set()
        return evs

    def _flush(self) -> tuple[int, Network, concurrent.futures.Future] | None:
        """Hand the rows touched since the last flush to the writer (group commit)."""
        if not self.dirty and self._last is not None:
            return self._last
        self._gen += 1
        d, self.dirty = self.dirty, Dirty()
        snap = self.net
        fut: concurrent.futures.Future
        if self.committer is None:
            self.store.write(snap, d)
            fut = concurrent.futures.Future()
            fut.set_result(None)
        else:
            t0 = time.perf_counter()
            fut = self.committer.submit(snap, d)
            observe = self.commit_latency.observe
            fut.add_done_callback(lambda f: observe(time.perf_counter() - t0))
        self.counters["commits_requested"] += 1
        self._last = (self._gen, snap, fut)
        self._last_at = time.perf_counter()
        return self._last

    @contextlib.contextmanager
    def hold_commits(self) -> Iterator[None]:
        """While the block runs, the loop does not hand rows to the writer by itself;
        :meth:`durable` still commits everything at once for whoever asks.

        For bulk work whose own batches follow at once (``spawn_many``: a chunk of
        machines, then their init batches): committed after those batches ran, a batch
        made and run in between has no queue row to write and delete (the store's
        ``Dirty.born``). Nothing is acknowledged from uncommitted rows meanwhile:
        callers are answered after :meth:`durable`, which never waits for this.
        """
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self._wake.set()

    async def durable(self) -> Network:
        """Wait until everything done so far is committed; returns that snapshot."""
        if self.failed is not None or (self.committer is not None
                                       and self.committer.failed is not None):
            self.check_ok()
        last = self._flush()
        if last is None:
            return self.committed
        gen, snap, fut = last
        if not fut.done():
            # shielded: a waiter that is cancelled (a peer link closing) must not cancel
            # the commit's future, which other waiters share and the writer completes
            await asyncio.shield(asyncio.wrap_future(fut))
        else:
            fut.result()  # raises the StoreError of a failed commit
        if gen > self._committed_gen:
            self._committed_gen, self.committed = gen, snap
        return self.committed

    # -- the loop -----------------------------------------------------------------------
    def _tick_clock(self) -> None:
        ms = int(self.clock() * 1000)
        if ms > self.net.now:
            # The clock is not part of the scheduler's order: the index stays current.
            self.net, _ = nw.outside(self.net, self.env,
                                     lambda net: (replace_fields(net, now=ms), []))

    async def _loop(self) -> None:
        step = nw.step
        idle_type = events.Idle
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while not self._closing:
                self._tick_clock()
                t_end = time.perf_counter() + CHUNK_SECONDS
                n = 0
                idle = False
                env = self.env
                dirty = self.dirty
                evicting = self.evicting
                while n < CHUNK_STEPS:
                    before = self.net
                    net, evs = step(before, env)
                    if not evs and net.now > before.now:
                        # Nothing can run now; the simulator would jump its clock to
                        # the next timer. A host waits for real time to get there.
                        self._wake_at(net.now)
                        idle = True
                        break
                    self.net = net
                    if len(evs) == 1 and type(evs[0]) is idle_type:
                        idle = True
                        break
                    dirty_from_events(evs, dirty)
                    if dirty.parents:
                        self._adopt(dirty)
                    if evicting:
                        self._track(evs)
                    if self.tap is not None:
                        self.tap(evs)
                    if self.recorder is not None:
                        self.recorder(before, net, evs)
                    if self.listeners or self.watches:
                        self._observe(evs)
                    if self.subscribers:
                        for fn in self.subscribers:
                            fn(evs, None)
                    n += 1
                    if not n & 63 and time.perf_counter() > t_end:
                        break
                self.counters["steps"] += n
                if (n or idle) and self.dirty and not self._held and (
                        idle or time.perf_counter() - self._last_at >= COMMIT_EVERY_SECONDS):
                    try:
                        if not self._writer_busy():
                            await self._one_commit_in_flight()
                        self._flush()
                    except StoreError as e:
                        self._fail(e)
                        return
                if self.committer is not None and self.committer.failed is not None:
                    self._fail(self.committer.failed)
                    return
                if idle:
                    self._count_check = 0  # what was busy may have finished: try again
                if self._evict_due():
                    try:
                        await self.evict()
                    except StoreError as e:
                        self._fail(e)
                        return
                if idle:
                    self._schedule_idle_eviction()
                    break
                await asyncio.sleep(0)

    def _adopt(self, dirty: Dirty) -> None:
        """A machine made through a spawner joins the trust domain of the machine that
        asked for it: the asker chose its code and its first message, so it is that
        owner's machine (and a spawner handed to another owner's machine makes machines
        in that owner's domain, never in the grantor's). Done before the new machine's
        first batch runs, and committed with it."""
        domains = self.domains
        for child, asker in dirty.parents.items():
            d = domains.get(asker)
            if d is not None:
                domains[child] = d
                dirty.domains[child] = d
        dirty.parents.clear()

    def _fail(self, e: BaseException) -> None:
        self.failed = e
        event("commit.failed", logging.ERROR, error=str(e), host=self.host)

    def _writer_busy(self) -> bool:
        """A commit is being written and is younger than COMMIT_LAG_SECONDS: hand the
        next rows over at once (the writer merges what queued meanwhile into one
        commit); once it is older, wait for it first."""
        last = self._last
        return (last is not None and not last[2].done()
                and time.perf_counter() - self._last_at < COMMIT_LAG_SECONDS)

    async def _one_commit_in_flight(self) -> None:
        """Wait for the commit in flight before handing over the next one (back-pressure).

        The writer thread needs the GIL for every row it binds; a loop that steps
        without pause starves it (each hand-over waits for the interpreter's switch
        interval), so commits fell minutes behind and callers waiting in ``durable``
        never returned. Waiting here idles the loop, which frees the GIL for the
        writer: at most one commit is being written while the next steps accumulate
        (for up to COMMIT_LAG_SECONDS, then the loop waits for it).
        """
        last = self._last
        if last is not None and not last[2].done():
            await asyncio.shield(asyncio.wrap_future(last[2]))  # as in durable()

    def _wake_at(self, ms: int) -> None:
        """Run again when the wall clock reaches ``ms`` (the next timer's due time)."""
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, ms / 1000 - self.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake.set)

    def _observe(self, evs: list) -> None:
        listeners, watches = self.listeners, self.watches
        for e in evs:
            t = type(e)
            if t is events.Applied:
                self.counters["batches"] += 1
                pm = self.per_machine.get(e.dest)
                if pm is None:
                    pm = self.per_machine[e.dest] = [0, 0]
                pm[0] += 1
                if not e.ok:
                    self.counters["failures"] += 1
                    pm[1] += 1
                    f = e.failure
                    m = self.net.machines.get(e.dest)
                    event("batch.failed", logging.INFO, machine=getattr(m, "name", None),
                          seq=e.seq, rule=getattr(f, "rule", ""), detail=str(f))
                fn = listeners.get(e.dest) if type(e.dest) is bytes else None
                if fn is not None:
                    fn(e)
                w = watches.pop((e.chan, e.seq), None) if watches else None
                if w is not None:
                    w(e)
            elif t is events.Dropped:
                self.counters["drops"] += 1
                w = watches.pop((e.chan, e.seq), None) if watches else None
                if w is not None:
                    w(e)
            elif t is events.Interrupted:
                self.counters["interrupts"] += 1
