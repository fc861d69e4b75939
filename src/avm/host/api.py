"""The embedded API: machines in a file, like ``sqlite3`` for machines.

::

    async with avm.host.open("app.avm", behaviors=[counter]) as h:
        cap = await h.spawn("counter", counter, 0)
        await h.send(cap, ("add", 1))
        print(await h.ask(cap, "get"))       # ('count', 1)
        print(await h.state("counter"))      # 1

Every call that changes something returns once that change is committed (in the
durability mode the store was opened with); reads answer from committed states only.
The process-control calls (:meth:`Host.suspend`, :meth:`Host.resume`, :meth:`Host.stop`,
:meth:`Host.restart`, :meth:`Host.destroy`) act on one machine by name.

Behaviors are code, not data: the store keeps each machine's behavior *name*, and the
host must be opened with every behavior its machines use (``behaviors=``), or
:func:`open` refuses with :class:`~avm.UsageError` rather than fail their batches.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import network as nw
from ..core.ask import outside_request
from ..core.caps import Capability
from ..core.errors import AvmError, UnknownName, UsageError
from ..core.machine import Failure, Message
from ..core.netvalue import MachineRecord, enqueue_local, events, mint
from ..core.network import Env, Network
from ..core.sim import paced_gc
from .dictionary import Dictionary
from .isolation import MEMORY_BYTES_DEFAULT, SECONDS_DEFAULT, Pool
from .live import Live, in_worker, load_named, parse_name, recipe_named
from .metrics import event
from .runtime import RESIDENT_MAX_DEFAULT, Runtime, host_config
from .store import Dirty, Store, StoreError

__all__ = ["open", "close", "Host", "AskFailed", "MachineInfo", "REPLIES", "StoreError"]

_NOTHING: Any = object()  # Host.set_state without a whole value

#: The name of the host's own machine that receives the answers to :meth:`Host.ask`.
REPLIES = "avm.host.replies"
ASK_SECONDS_DEFAULT = 30.0
#: Machines :meth:`Host.spawn_many` creates per act and commit.
SPAWN_CHUNK = 5_000


class AskFailed(AvmError):
    """The request of an ``ask`` failed or was dropped; ``failure`` says why."""

    def __init__(self, message: str, failure: Failure | None = None) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True)
class MachineInfo:
    """One machine as ``Host.machines()`` lists it."""

    name: str
    address: bytes
    behavior: str
    status: str  # running | suspended | stopped
    keyver: int


def _replies(msg: Message, state: Any) -> tuple:
    """The replies machine: keeps nothing; the host reads what it applies."""
    return [], state


def _behavior_table(behaviors: Iterable[Any] | Mapping[str, Callable] | None) -> dict[str, Callable]:
    table: dict[str, Callable] = {REPLIES: _replies}
    if behaviors is None:
        return table
    if isinstance(behaviors, Mapping):
        items = list(behaviors.items())
    else:
        items = []
        for b in behaviors:
            name = getattr(b, "name", None) or getattr(b, "__name__", None)
            if not isinstance(name, str):
                raise UsageError(f"behavior {b!r} has no name: pass a mapping name -> step")
            items.append((name, b))
    for name, fn in items:
        if not callable(fn) or type(name) is not str:
            raise UsageError(f"behavior {name!r} must be a callable step function")
        if name in table and table[name] is not fn:
            raise UsageError(f"two behaviors are named {name!r}")
        table[name] = fn
    return table


class Host:
    """A running host over one store. Make one with :func:`open`."""

    def __init__(self, runtime: Runtime, pool: Pool | None = None) -> None:
        self._rt = runtime
        self._pool = pool
        self._asks: dict[Any, asyncio.Future] = {}
        replies = runtime.net.names.get(REPLIES)
        self._replies_addr: bytes = replies
        runtime.listeners[replies] = self._on_reply
        self._live: Live | None = None
        #: the avm.host.migrate.Mover of this host, once one is made over its peering
        self.mover: Any = None
        #: machines being moved to another host: control calls refuse them meanwhile
        self._moving: set[bytes] = set()

    @property
    def live(self) -> Live:
        """Live programming: the store's dictionary and machines bound to its words
        (docs/dictionary.md). A host in memory keeps its dictionary in memory too."""
        if self._live is None:
            path = self._rt.store.path
            self._live = Live(self, Dictionary(path if path is not None else ":memory:"))
        return self._live

    # -- reading --------------------------------------------------------------------
    @property
    def network(self) -> Network:
        """The last committed network (an immutable value)."""
        return self._rt.committed

    @property
    def store(self) -> Store:
        return self._rt.store

    def address(self, name: str) -> bytes:
        addr = self._rt.net.names.get(name) if type(name) is str else None
        if addr is None:
            raise UnknownName(f"no machine named {name!r}")
        return addr

    def cap(self, name: str, context: Any = None, priority: float = 0.0) -> Capability:
        """A capability to machine ``name`` with ``context``, minted as its host may."""
        addr = self.address(name)
        self._rt.resident(addr)  # an evicted machine's keys are in the store
        return mint(self._rt.net, self._rt.env, addr, context, priority)

    async def state(self, name: str) -> Any:
        """The committed state of machine ``name``.

        Batches still queued for it may not have run yet: :meth:`ask` it, or wait for
        :meth:`idle`, to read a state after some work.
        """
        net = await self._rt.durable()
        addr = net.names.get(name) or self._rt.net.names.get(name)
        if addr is None:
            raise UnknownName(f"no machine named {name!r}")
        return self._committed_record(net, addr, name).state

    async def state_at(self, name: str, path: str) -> Any:
        """The part of ``name``'s committed state at ``path`` (avm.host.valuepath)."""
        from .valuepath import get_at

        return get_at(await self.state(name), path)

    async def set_state(self, name: str, value: Any = _NOTHING, *,
                        set: Iterable[tuple[str, Any]] = (),  # noqa: A002 - the API's verb
                        expect: Iterable[tuple[str, Any]] = (), who: str = "embedded") -> Any:
        """An operator's edit of ``name``'s state (the whole ``value``, or ``set`` paths),
        through the core's value rules as one transaction, with its audit row in the same
        commit; ``expect`` paths must still hold. Returns the ``Edit`` once committed
        (:mod:`avm.host.stateedit`)."""
        from .stateedit import NOTHING, edit_state

        return await edit_state(self, name, value=NOTHING if value is _NOTHING else value,
                                set=set, expect=expect, who=who)

    async def audit(self, machine: str | None = None, limit: int = 100,
                    before: int | None = None) -> list[dict]:
        """The audit of state edits, newest first (of ``machine``, or every machine)."""
        from .stateedit import audit

        return await audit(self, machine, limit, before)

    def _committed_record(self, net: Network, addr: bytes, name: str) -> MachineRecord:
        """The committed record: from ``net``, else (an evicted machine) from the store,
        which holds its last committed rows."""
        m = net.machines.get(addr)
        if m is None:
            got = self._rt.store.read_machine(addr) if self._rt.evicted_any else None
            if got is None:
                raise UnknownName(f"no machine named {name!r}")
            m = got[0]
        return m

    def record(self, name: str) -> MachineRecord:
        """The committed record of machine ``name`` (name, state, behavior, status...)."""
        return self._committed_record(self._rt.committed, self.address(name), name)

    def machines(self, prefix: str = "", limit: int | None = None) -> list[MachineInfo]:
        """The machines whose names start with ``prefix``, by name (the first ``limit``);
        evicted ones too (their committed rows)."""
        net = self._rt.committed
        out = {m.name: MachineInfo(m.name, a, m.behavior, m.status, m.keyver)
               for a, m in net.machines._m.items()  # raw: sorted below (by name)
               if m.name != REPLIES and m.name.startswith(prefix)}
        if self._rt.evicted_any:
            # The first `limit` of the union are among the first `limit` of each side.
            for name, a, b, st, kv in self._rt.store.machine_rows(
                    prefix, None if limit is None else limit + 1):
                if name not in out and name != REPLIES:
                    out[name] = MachineInfo(name, a, b, st, kv)
        rows = sorted(out.values(), key=lambda i: i.name)
        return rows if limit is None else rows[:limit]

    def statuses(self) -> dict[str, int]:
        """Committed machines by status (running, suspended, stopped)."""
        rt = self._rt
        if not rt.evicted_any:
            out: dict[str, int] = {}
            for m in self.machines():
                out[m.status] = out.get(m.status, 0) + 1
            return out
        out = rt.store.statuses()
        replies = rt.committed.machines.get(self._replies_addr)
        if replies is not None and out.get(replies.status):
            out[replies.status] -= 1
        return {k: v for k, v in out.items() if v}

    def machine_stats(self) -> dict[str, tuple[int, int]]:
        """name -> (batches applied, batches failed) since this host was opened."""
        net = self._rt.net
        out = {}
        for addr, (n, failed) in self._rt.per_machine.items():
            m = net.machines.get(addr)
            if m is not None:
                out[m.name] = (n, failed)
        return out

    def stats(self) -> dict[str, int]:
        """The core's counters (committed) and the runtime's."""
        out = dict(self._rt.committed.stats.items())
        out.update({f"host.{k}": v for k, v in self._rt.counters.items()})
        if self._rt.committer is not None:
            sizes = self._rt.committer.group_sizes
            out["host.commits"] = self._rt.store.commits
            out["host.group_commit_last"] = sizes[-1] if sizes else 0
        return out

    # -- acting ---------------------------------------------------------------------
    def behavior(self, fn: Callable, name: str | None = None) -> str:
        """Register a step function under ``name`` (default: its own name)."""
        name = name or getattr(fn, "name", None) or getattr(fn, "__name__", None)
        if not isinstance(name, str):
            raise UsageError("a behavior needs a name: pass name=")
        known = self._rt.env.behaviors.get(name)
        if known is not None and known is not fn:
            raise UsageError(f"another behavior is already registered as {name!r}")
        self._rt.env.behaviors[name] = fn
        return name

    async def spawn(self, name: str, behavior: Callable | str, args: Any = None, *,
                    context: Any = None, env: Mapping[str, Any] | None = None,
                    domain: str | None = None) -> Capability:
        """Create a machine; returns a capability to it with ``context``, once committed.

        ``domain``: its trust domain (owner), kept in the store. With
        ``open(..., isolation="workers")`` its steps run in that domain's worker
        process (:mod:`avm.host.isolation`); default ``"default"``.
        """
        if domain is not None and (type(domain) is not str or not domain):
            raise UsageError("a domain is a non-empty str, e.g. the owner's name")
        bname = behavior if isinstance(behavior, str) else self.behavior(behavior)
        if bname not in self._rt.env.behaviors:
            raise UnknownName(f"no behavior named {bname!r}")
        rt = self._rt
        pool = self._pool
        if pool is not None:
            pool.add(bname, rt.env.behaviors[bname])
        made: list = []

        def act(net: Network) -> tuple[Network, list]:
            net, addr, evs = nw.spawn(net, name, bname, args, host=rt.host, env=env,
                                      env_obj=rt.env)
            made.append(addr)
            if domain is not None:
                rt.domains[addr] = domain
            return net, evs

        rt.apply(act, journaled=True)
        if domain is not None:
            rt.dirty.domains[made[0]] = domain  # committed with the machine
        cap = self.cap(name, context)
        await rt.durable()
        return cap

    async def spawn_many(self, behavior: Callable | str, pairs: Iterable[tuple[str, Any]], *,
                         env: Mapping[str, Any] | None = None, chunk: int = SPAWN_CHUNK,
                         resident: bool = False) -> int:
        """Create one machine per ``(name, init argument)`` pair, all of one behavior;
        returns how many, once all are committed and initialized.

        The bulk path: each chunk of ``chunk`` machines is spawned by the core's own
        ``spawn`` in one act, their init batches run by the core's ``step``, and the chunk
        is written as one group commit; then (unless ``resident``, or in memory) the new
        machines are evicted at once, so creating a million keeps only their names and
        channel numbers in memory. A pair that cannot be spawned (a taken name, a bad
        argument) raises as :meth:`spawn` does; the chunks before it stay created.
        """
        bname = behavior if isinstance(behavior, str) else self.behavior(behavior)
        if bname not in self._rt.env.behaviors:
            raise UnknownName(f"no behavior named {bname!r}")
        if type(chunk) is not int or chunk < 1:
            raise UsageError(f"chunk is a positive int, not {chunk!r}")
        rt = self._rt
        if self._pool is not None:
            self._pool.add(bname, rt.env.behaviors[bname])
        it = iter(pairs)
        total = 0
        error: list[AvmError] = []
        with paced_gc():
            while True:
                part = list(itertools.islice(it, chunk))
                if not part:
                    break
                made: list[bytes] = []
                inits: list[tuple] = []

                def act(net: Network, part: list = part, made: list = made,
                        inits: list = inits, error: list = error) -> tuple[Network, list]:
                    out: list = []
                    try:
                        for pair in part:
                            if type(pair) is not tuple or len(pair) != 2:
                                raise UsageError("spawn_many takes (name, init argument) "
                                                 f"pairs, got {pair!r:.60}")
                            net, addr, evs = nw.spawn(net, pair[0], bname, pair[1],
                                                      host=rt.host, env=env, env_obj=rt.env)
                            made.append(addr)
                            out.extend(evs)
                    except AvmError as e:
                        if not made:
                            raise
                        error.append(e)  # the ones before it stay spawned; raised below
                    inits.extend((e.chan, e.seq) for e in out if type(e) is events.Created)
                    return net, out

                hold = rt.hold_commits()
                hold.__enter__()  # until the chunk's init batches ran: see hold_commits
                try:
                    rt.apply(act, journaled=True)
                except BaseException:
                    hold.__exit__(None, None, None)
                    raise
                done = asyncio.get_running_loop().create_future()
                if inits:
                    last = inits[-1]  # same priority, later timestamp: the chunk's last init

                    def fin(e: Any, done: asyncio.Future = done) -> None:
                        if not done.done():
                            done.set_result(None)

                    rt.watches[last] = fin
                else:
                    done.set_result(None)
                # The chunk's init batches run before anything waits for a commit: a
                # batch made and run between two commits has no queue row to write or
                # delete (the writer once encoded every init batch, env and all, to
                # delete it at the next commit: more than half of creation's cost).
                try:
                    await done
                finally:
                    hold.__exit__(None, None, None)
                total += len(made)
                if not resident:
                    await rt.evict(only=made)  # commits the chunk first
                if error:
                    break
            await rt.durable()
        if error:
            raise error[0]
        return total

    async def submit(self, messages: Iterable[tuple[Capability, Any]], *, client: str = "client",
                     priority: float | None = None) -> list[tuple]:
        """Send one batch per destination (rule 3); returns their ``(channel, seq)`` once
        committed. A bad message refuses the whole call and queues nothing."""
        evs = self._rt.apply(lambda net: nw.submit(net, messages, client, priority),
                             journaled=True)
        await self._rt.durable()
        return [(e.chan, e.seq) for e in evs if type(e) is events.Created]

    async def send(self, cap: Capability, content: Any, *, client: str = "client") -> None:
        """Send one message; returns once it is committed (queued durably)."""
        await self.submit([(cap, content)], client=client)

    async def ask(self, cap: Capability, content: Any, *, timeout: float = ASK_SECONDS_DEFAULT,
                  client: str = "client") -> Any:
        """Send a request and return the first answer sent to its reply capability.

        ``content`` is what ``Sim.ask`` takes (a tuple with ``avm.REPLY`` where the
        reply capability goes, or a function of the reply capability that builds the
        content), or a tuple or str without the mark, to which the reply is appended
        (``("get",)`` and ``"get"`` send ``("get", reply)``); see
        :func:`avm.core.ask.outside_request`. Raises
        :class:`AskFailed` if the request's batch fails or is dropped, ``TimeoutError``
        past ``timeout`` seconds.
        """
        token = ("ask", os.urandom(12))  # unique across restarts: a stale answer matches nothing
        reply = mint(self._rt.net, self._rt.env, self._replies_addr, token)
        msg = outside_request(content, reply)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._asks[token] = fut
        try:
            evs = self._rt.apply(lambda net: nw.submit(net, [(cap, msg)], client),
                                 journaled=True)
            def done(ev: Any) -> None:
                _request_done(ev, fut)

            for e in evs:
                if type(e) is events.Created:
                    self._rt.watches[(e.chan, e.seq)] = done
            await self._rt.durable()
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._asks.pop(token, None)

    def _on_reply(self, e: Any) -> None:
        for ctx, content in e.messages:
            fut = self._asks.get(ctx) if type(ctx) is tuple else None
            if fut is not None and not fut.done():
                fut.set_result(content)

    async def _control(self, name: str, act: Callable[[Network, bytes], tuple[Network, list]],
                       keys: bool = False) -> None:
        addr = self.address(name)
        if addr == self._replies_addr:
            raise UsageError(f"{REPLIES} is the host's own machine")
        if addr in self._moving:
            raise UsageError(f"machine {name!r} is moving to another host; wait for the move")
        self._rt.resident(addr)  # an evicted machine comes back to be acted on
        d = Dirty(machines={addr}, keys={addr} if keys else set())
        self._rt.apply(lambda net: act(net, addr), d)
        await self._rt.durable()

    async def suspend(self, name: str) -> None:
        """Stop running ``name``'s batches; what arrives is queued (not dropped)."""
        await self._control(name, lambda net, a: (nw.set_status(net, a, "suspended"), []))

    async def resume(self, name: str) -> None:
        """Run ``name`` again, its queue first."""
        await self._control(name, lambda net, a: (nw.set_status(net, a, "running"), []))

    async def step(self, name: str, timeout: float = ASK_SECONDS_DEFAULT) -> Any:
        """Run exactly one batch of the suspended machine ``name``, then leave it suspended;
        returns the batch's ``Applied`` event (ok or failed) once committed.

        A debugger's single step, built from resume and suspend: the machine is resumed,
        the runtime's own loop picks and runs its next batch by the batching rules (the
        listener of its address is called with that batch's ``Applied`` event, between
        two steps of the loop), and the listener suspends it at once, before the loop's
        next step, so no second batch of it can run. Refused (nothing changes) when it
        is not suspended or has no batch queued. Past ``timeout`` seconds without its
        batch (a very busy host) it is suspended again and ``TimeoutError`` is raised.
        """
        rt = self._rt
        addr = self.address(name)
        if addr == self._replies_addr:
            raise UsageError(f"{REPLIES} is the host's own machine")
        rt.resident(addr)
        m = rt.net.machines.get(addr)
        if m is None or m.status != "suspended":
            raise UsageError(f"{name} is {getattr(m, 'status', 'gone')}: step runs one batch of "
                             f"a suspended machine (suspend it first)")
        if not any(chan[1] == addr for chan in rt.net.live):
            raise UsageError(f"{name} has no batch queued: nothing to step")
        if addr in rt.listeners:
            raise UsageError(f"{name} is being stepped already")
        d = Dirty(machines={addr})
        fut: asyncio.Future = asyncio.get_running_loop().create_future()

        def suspend_again() -> None:
            rt.listeners.pop(addr, None)
            if addr in rt.net.machines:
                rt.apply(lambda net: (nw.set_status(net, addr, "suspended"), []),
                         Dirty(machines={addr}))

        def ran(e: Any) -> None:  # called by the loop, between two of its steps
            suspend_again()
            if not fut.done():
                fut.set_result(e)

        rt.listeners[addr] = ran
        try:
            rt.apply(lambda net: (nw.set_status(net, addr, "running"), []), d)
            e = await asyncio.wait_for(fut, timeout)
        except BaseException:
            if rt.listeners.get(addr) is ran:
                suspend_again()
            raise
        await rt.durable()
        return e

    async def stop(self, name: str) -> None:
        """Stop ``name``: batches to it are dropped (counted, and returned to senders)."""
        await self._control(name, lambda net, a: (nw.set_status(net, a, "stopped"), []))

    async def restart(self, name: str, info: Any = None) -> None:
        """Run ``name`` again and send it the life-cycle signal ``("restart", info)``."""
        rt = self._rt

        def act(net: Network, a: bytes) -> tuple[Network, list]:
            net = nw.set_status(net, a, "running")
            m = net.machines[a]
            sig = mint(net, rt.env, a, m.signal)
            return enqueue_local(net, ("host", rt.host), a, ((sig, ("restart", info)),),
                                 rt.host, 1.0)

        await self._control(name, act)

    async def destroy(self, name: str) -> None:
        """Remove ``name``, its state and its keys. Batches to it are dropped from now on.

        Its state goes with it: linear values it held leave the census (an operator's
        act, like ``export_machine`` in the simulator).
        """
        await self._control(name, lambda net, a: (nw.export_machine(net, a)[0], []), keys=True)

    async def move(self, name: str, *, to: str, timeout: float | None = 60.0) -> Any:
        """Move machine ``name`` with its state, keys and queues to peer host ``to``;
        returns the :class:`avm.host.migrate.MoveResult` once this host forwards to it.

        Needs a :class:`avm.host.migrate.Mover` over this host's peering (``avm host run
        --listen/--join`` makes one). See :mod:`avm.host.migrate` for what is promised.
        """
        if self.mover is None:
            raise UsageError("this host has no peers to move machines to: make an "
                             "avm.host.migrate.Mover(host, peering) first")
        return await self.mover.move(name, to, timeout=timeout)

    async def spawner(self, behaviors: Iterable[str] | str | None = None) -> tuple[Capability, Capability]:
        """Grant a spawner (:mod:`avm.core.spawner`): ``(spawner, revoke)``, committed.

        Hand ``spawner`` to a machine (``env={"spawner": spawner}`` at spawn, or in a
        message): it creates machines of the named ``behaviors`` (default: any this host
        knows) on request. Machines it makes are stored like any other.
        """
        from ..core.spawner import grant

        names = None if behaviors is None else (
            (behaviors,) if isinstance(behaviors, str) else tuple(behaviors))
        got: list = []

        def act(net: Network) -> tuple[Network, list]:
            net, cap, revoke = grant(net, self._rt.host, names)
            got.extend((cap, revoke))
            return net, []

        self._rt.apply(act)
        await self._rt.durable()
        return got[0], got[1]

    async def flush(self) -> None:
        """Wait until everything done so far is committed."""
        await self._rt.durable()

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until no batch can run (everything queued has run or is suspended),
        that is committed, and no eviction round is due. For tests and scripts."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._rt.check_ok()
            await self._rt.durable()
            if (not self._rt._wake.is_set() and not _runnable(self._rt.net)
                    and not self._rt._evict_due()):
                return
            if loop.time() > deadline:
                raise TimeoutError("the host did not become idle")
            await asyncio.sleep(0.001)


def _runnable(net: Network) -> bool:
    for chan in net.live:
        dest = chan[1]
        m = net.machines.get(dest) if type(dest) is bytes else None
        if m is None or m.status != "suspended":
            return True
    return False


def _request_done(e: Any, fut: asyncio.Future) -> None:
    if fut.done():
        return
    if type(e) is events.Dropped:
        fut.set_exception(AskFailed(f"the request was dropped: {e.reason}"))
    elif not e.ok:
        fut.set_exception(AskFailed(f"the request failed: {e.failure}", e.failure))


class _Opened:
    """``open(...)``: an async context manager, or awaitable for a host to close yourself."""

    def __init__(self, path: str | os.PathLike | None, behaviors: Any, durability: str | None,
                 host: str, clock: Callable[[], float], isolation: str = "inline",
                 budgets: tuple[float, int] = (SECONDS_DEFAULT, MEMORY_BYTES_DEFAULT),
                 resident: tuple[int | None, float | None] = (RESIDENT_MAX_DEFAULT, None),
                 ) -> None:
        if isolation not in ("inline", "workers"):
            raise UsageError(f"isolation is 'inline' or 'workers', not {isolation!r}")
        rmax, idle = resident
        if rmax is not None and (type(rmax) is not int or rmax < 1):
            raise UsageError(f"resident_max is a positive int or None, not {rmax!r}")
        if idle is not None and (not isinstance(idle, int | float) or not idle >= 0):
            raise UsageError(f"idle_seconds is a number >= 0 or None, not {idle!r}")
        self._resident = resident
        self._args = (path, behaviors, durability, host)
        self._clock = clock
        self._isolation = isolation
        self._budgets = budgets
        self._host: Host | None = None

    def __await__(self) -> Any:
        return self._open().__await__()

    async def _open(self) -> Host:
        path, behaviors, durability, hostname = self._args
        mode = durability or ("memory" if path is None else "full")
        table = _behavior_table(behaviors)
        store = await asyncio.to_thread(Store, None if path is None else Path(path), mode)
        try:
            rmax, idle = self._resident
            if not store.durable:
                rmax = idle = None  # nothing to load an evicted machine from
            net = await asyncio.to_thread(store.load, rmax, (REPLIES,))
            env = Env(table)
            fresh = net is None
            lazy = net is not None and len(net.machines) < len(net.names)
            if net is None:
                net = nw.new_network(0, host_config(), (hostname,), secret=os.urandom(32))
                net, _, _ = nw.spawn(net, REPLIES, REPLIES, None, host=hostname, env_obj=env)
            used = store.behaviors() if lazy else {m.behavior for m in net.machines.values()}
            missing = sorted(used - set(table))
            recipes: dict[str, Any] = {}
            if missing and path is not None and any(parse_name(n) for n in missing):
                # machines bound to dictionary words: their versions are in the store.
                # With workers, the code loads in the workers only (Recipe), never here.
                d = await asyncio.to_thread(Dictionary, Path(path))
                try:
                    for n in [n for n in missing if parse_name(n)]:
                        if self._isolation == "workers":
                            recipes[n] = recipe_named(d, n)
                            table[n] = env.behaviors[n] = in_worker(n)
                        else:
                            table[n] = env.behaviors[n] = load_named(d, n)
                finally:
                    d.close()
                missing = [n for n in missing if n not in table]
            if missing:
                raise UsageError(f"the store's machines use behaviors this host was not "
                                 f"given: {missing}; pass them in behaviors=")
            if hostname not in net.hosts:
                hostname = next(iter(sorted(net.hosts)))
            pool = None
            domains = await asyncio.to_thread(store.domains)
            if self._isolation == "workers":
                seconds, memory = self._budgets
                pool = Pool({**table, **recipes}, seconds=seconds, memory_bytes=memory,
                            inline={net.names[REPLIES]})
                pool.domains = domains  # the runtime's table: spawned machines join it
                env.batch_runner = pool.run
            rt = Runtime(store, net, env, hostname, self._clock, domains)
            rt.evict_config(rmax, idle, keep=(net.names[REPLIES],), lazy=lazy)
            if store.durable:  # batches of machines bound to words, for peek
                from .peek import recorder

                rt.recorder = recorder(rt)
            if fresh:
                rt.dirty = Dirty(everything=True)
                await rt.durable()
            rt.start()
            event("host.start", store=str(path) if path is not None else None,
                  durability=mode, machines=len(net.machines) - 1, host=hostname)
        except BaseException:
            store.close()
            raise
        return Host(rt, pool)

    async def __aenter__(self) -> Host:
        self._host = await self._open()
        return self._host

    async def __aexit__(self, *exc: Any) -> None:
        if self._host is not None:
            await close(self._host)


async def close(host: Host) -> None:
    """Commit what ran and close the store."""
    rt = host._rt
    await rt.close()
    rt.store.close()
    if host._pool is not None:
        host._pool.close()
    if host._live is not None:
        host._live.dictionary.close()
    event("host.stop", store=str(rt.store.path) if rt.store.path is not None else None,
          commits=rt.store.commits, batches=rt.counters["batches"])


def open(path: str | os.PathLike | None, *, behaviors: Any = None,  # noqa: A001 - like sqlite3
         durability: str | None = None, host: str = "h0",
         clock: Callable[[], float] = time.time, isolation: str = "inline",
         step_seconds: float = SECONDS_DEFAULT,
         step_memory_bytes: int = MEMORY_BYTES_DEFAULT,
         resident_max: int | None = RESIDENT_MAX_DEFAULT,
         idle_seconds: float | None = None) -> _Opened:
    """Open (or create) the host whose store is ``path``; ``None`` for one in memory.

    ``behaviors``: the step functions its machines use, as a list of named behaviors
    (``avm.Behavior`` objects or functions) or a mapping name -> step.
    ``durability``: ``"full"`` (default for a path), ``"normal"`` or ``"memory"`` (the
    only mode without a path); see :mod:`avm.host.store`. Use as
    ``async with open(...) as h:``, or ``h = await open(...)`` and later
    ``await avm.host.close(h)``. ``clock``: seconds since the epoch (tests pass a fake).
    ``isolation``: ``"inline"`` (default: steps run in this process, the fast path for
    one owner's code) or ``"workers"`` (one worker process per trust domain, with
    ``step_seconds`` and ``step_memory_bytes`` budgets per batch; see
    :mod:`avm.host.isolation`).
    ``resident_max``, ``idle_seconds``: cold machines are evicted from memory (a durable
    store only): at most ``resident_max`` machines stay in memory, least recently used
    out first, and any machine idle for ``idle_seconds`` goes; a message to an evicted
    machine loads it from the store before its batch runs. None: no limit.
    """
    return _Opened(path, behaviors, durability, host, clock, isolation,
                   (step_seconds, step_memory_bytes), (resident_max, idle_seconds))

