"""Seeded simulation: a friendly handle on the pure network (DESIGN section 7).

    "Simulation with faults: seeded loss, delay, duplication and reordering between
    hosts, host crashes and restarts, partitions; user-supplied invariants checked after
    every step; a failing seed reproduces the failure exactly."

:class:`Sim` holds the current :class:`~avm.core.network.Network` value and replaces it
at each step; everything it does is a pure function of the seed and the calls made on
it, so the same script with the same seed prints the same trace. It keeps the events in
``sim.trace`` for the test kit's checker (``avm.testing``).
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from . import network as nw
from .caps import Capability
from .errors import AvmError, UnknownName, UsageError
from .machine import SIGNAL
from .network import Config, Env, Faults, Network, events
from .values import replace_fields as replace

__all__ = ["Sim", "InvariantViolation", "parse_faults", "format_event", "RunReport"]


class InvariantViolation(AvmError):
    """A user invariant failed. Carries the seed and step that reproduce it."""

    def __init__(self, name: str, seed: int, step: int, detail: str) -> None:
        self.name = name
        self.seed = seed
        self.step = step
        self.detail = detail
        super().__init__(
            f"invariant {name!r} failed at step {step} (seed {seed}): {detail}. "
            f"Run again with seed {seed} to reproduce it exactly.")


class RunReport:
    """What :meth:`Sim.run` did, and how it ended.

    Three ends, never confused: ``quiescent`` (nothing pending, in flight or waiting on
    a timer: the run is over), *idle* (``idle`` true, ``quiescent`` false: nothing can
    run, yet work is queued that cannot run, such as a suspended machine's inbox) and
    *still busy* (neither: ``max_steps`` ran out while there was work to do).
    """

    __slots__ = ("steps", "events", "quiescent", "now", "idle")

    def __init__(self, steps: int, events: int, quiescent: bool, now: int,
                 idle: bool | None = None) -> None:
        self.steps, self.events, self.quiescent, self.now = steps, events, quiescent, now
        self.idle = quiescent if idle is None else idle or quiescent

    @property
    def end(self) -> str:
        """``"quiescent"``, ``"idle"`` or ``"still busy"``."""
        return "quiescent" if self.quiescent else "idle" if self.idle else "still busy"

    def __repr__(self) -> str:
        return f"<RunReport {self.steps} steps, {self.events} events, t={self.now}, {self.end}>"


_FAULT_KEYS = {
    "loss": "loss", "drop": "loss", "dup": "duplicate", "duplicate": "duplicate",
    "corrupt": "corrupt", "crash": "crash", "partition": "partition",
}


def parse_faults(spec: str) -> Faults:
    """``"loss=0.1,dup=0.05,delay=1-20,crash=0.01,partition=0.01,corrupt=0.01"``.

    ``delay=A-B`` draws each transmission's delay from A..B ticks (reordering follows);
    ``down=A-B`` and ``cut=A-B`` set how long crashes and partitions last.
    """
    f = Faults()
    if not spec or spec == "none":
        return f
    if spec == "all":
        spec = "loss=0.05,dup=0.05,corrupt=0.02,delay=1-20,crash=0.002,partition=0.002"
    kw: dict[str, Any] = {}
    for part in spec.split(","):
        k, sep, v = part.strip().partition("=")
        if not sep:
            raise UsageError(f"fault {part!r} needs a value, as in loss=0.1")
        try:
            if k in ("delay", "down", "cut"):
                lo, _, hi = v.partition("-")
                a, b = int(lo), int(hi or lo)
                if a < 0 or b < a:
                    raise ValueError
                names = {"delay": ("delay_min", "delay_max"), "down": ("down_min", "down_max"),
                         "cut": ("partition_min", "partition_max")}[k]
                kw[names[0]], kw[names[1]] = a, b
            elif k in _FAULT_KEYS:
                p = float(v)
                if not 0.0 <= p <= 1.0:
                    raise ValueError
                kw[_FAULT_KEYS[k]] = p
            else:
                raise UsageError(
                    f"unknown fault {k!r}; use loss, dup, corrupt, delay, crash, partition, down, cut")
        except ValueError:
            raise UsageError(f"bad value in fault {part!r}: probabilities are in [0, 1], "
                           "ranges are A-B ticks") from None
    return replace(f, **kw)


#: How many of its latest snapshots a :class:`Sim` remembers (see :meth:`Sim.snapshot`).
SNAPSHOTS_KEPT = 64


#: The cyclic collector's first threshold while the simulator loops (Python's default is
#: 700). See :func:`paced_gc`.
GC_GEN0_THRESHOLD = 50_000


@contextmanager
def paced_gc() -> Iterator[None]:
    """Run the cyclic garbage collector less often while the simulator loops.

    A network is a persistent value: every machine, batch and index entry is a container
    the collector tracks, and Python's full collection (all generations) runs each time
    the objects that survived grow by a quarter. With the default thresholds a network of
    100,000 machines spent more than half of its build and run in full collections that
    free nothing (bench/core.py, docs/performance.md). So the simulator raises the first
    threshold while it loops (collections are rarer, not off: cycles that step functions
    make are still collected) and puts back the caller's thresholds afterwards. A caller who disabled the collector, or set
    a higher threshold, is left alone.
    """
    old = gc.get_threshold()
    if not gc.isenabled() or old[0] == 0 or old[0] >= GC_GEN0_THRESHOLD:
        yield
        return
    gc.set_threshold(GC_GEN0_THRESHOLD, *old[1:])
    try:
        yield
    finally:
        if gc.get_threshold()[0] == GC_GEN0_THRESHOLD:  # nobody changed it meanwhile
            gc.set_threshold(*old)


class Sim:
    """A deterministic network of machines on simulated hosts."""

    def __init__(
        self, seed: int = 0, hosts: Iterable[str] = ("h0",), faults: Faults | str | None = None,
        config: Config | None = None, record: bool = True,
    ) -> None:
        cfg = config or Config()
        if faults is not None:
            cfg = replace(cfg, faults=parse_faults(faults) if isinstance(faults, str) else faults)
        self.seed = seed
        self.env = Env()
        self.net: Network = nw.new_network(seed, cfg, hosts)
        self.record = record
        self.trace: list = []
        self.steps = 0
        self._invariants: list[tuple[str, Callable[..., Any]]] = []
        self._two: set[int] = set()  # invariants called as fn(prev, net)
        self._probe_fn_registered = False
        self._snapshots: dict[int, Network] = {}  # id -> network handed out by snapshot()

    # -- building ---------------------------------------------------------------------
    def behavior(self, fn: Callable, name: str | None = None) -> str:
        """Register a step function under a name (the dictionary word it stands for).

        Without ``name=``, the behavior's own name is used; if another behavior already
        has it (two objects from one factory, say), ``-2``, ``-3``... is appended, in
        registration order, so runs stay reproducible. An explicit ``name=`` that is taken
        is an error.
        """
        for word, known in self.env.behaviors.items():
            if known is fn and (name is None or name == word):
                return word
        if name is not None:
            if name in self.env.behaviors:
                raise UsageError(f"another behavior is already registered as {name!r}")
            self.env.behaviors[name] = fn
            return name
        base = getattr(fn, "name", None) or getattr(fn, "__name__", None) or "behavior"
        if not isinstance(base, str):
            raise UsageError("a behavior needs a name: pass name=")
        word, n = base, 1
        while word in self.env.behaviors:
            n += 1
            word = f"{base}-{n}"
        self.env.behaviors[word] = fn
        return word

    @property
    def hosts(self) -> tuple[str, ...]:
        """The names of the simulated hosts, sorted."""
        return tuple(sorted(self.net.hosts))

    def add_host(self, name: str, exist_ok: bool = False) -> None:
        """Add a simulated host (``exist_ok`` makes adding an existing one a no-op)."""
        if exist_ok and name in self.net.hosts:
            return
        self.net = nw.add_host(self.net, name)

    def spawn(
        self, name: str, behavior: Callable | str, args: Any = None, *, host: str | None = None,
        env: dict[str, Any] | None = None, signal: Any = SIGNAL,
    ) -> bytes:
        """Create a machine and queue its creation batch; returns its address."""
        if type(name) is not str or not name:
            raise UsageError(f"a machine is named by a non-empty str, got {name!r}; "
                             "as in sim.spawn('counter', behavior, args)")
        bname = self._behavior_name(behavior)
        self._host(host)
        self.net, addr, evs = nw.spawn(self.net, name, bname, args, host=host, signal=signal,
                                       env=env, env_obj=self.env)
        self._log(evs)
        return addr

    def spawn_many(
        self, behavior: Callable | str, args: Iterable[tuple[str, Any]], *,
        host: str | None = None, env: dict[str, Any] | None = None, signal: Any = SIGNAL,
    ) -> list[bytes]:
        """Create one machine per ``(name, init argument)`` pair, all of one behavior.

        The same as calling :meth:`spawn` for each pair, in order (the same addresses,
        batches and trace), with the collector paced as in :meth:`run`
        (:func:`paced_gc`): building a network of many thousands of machines otherwise
        spends most of its time in full collections. A pair that cannot be spawned
        raises as :meth:`spawn` does; the machines before it stay spawned.
        """
        bname = behavior if isinstance(behavior, str) else self.behavior(behavior)
        self._host(host)
        if bname not in self.env.behaviors:
            raise UnknownName(f"no behavior named {bname!r}; known: {sorted(self.env.behaviors)}")
        out: list[bytes] = []
        with paced_gc():
            for pair in args:
                if type(pair) is not tuple or len(pair) != 2:
                    raise UsageError(f"spawn_many takes (name, init argument) pairs, got {pair!r:.60}")
                self.net, addr, evs = nw.spawn(self.net, pair[0], bname, pair[1], host=host,
                                               signal=signal, env=env, env_obj=self.env)
                self._log(evs)
                out.append(addr)
        return out

    def _behavior_name(self, behavior: Any) -> str:
        """A registered behavior's name, registering a step function; refuses anything else."""
        if isinstance(behavior, str):
            if behavior not in self.env.behaviors:
                raise UnknownName(
                    f"no behavior named {behavior!r}; known: {sorted(self.env.behaviors)}")
            return behavior
        if not callable(behavior):
            raise UsageError(
                f"a behavior is a step function, an avm.Behavior or a registered name, got "
                f"{type(behavior).__name__} {_short(behavior)}; the call is "
                "sim.spawn(name, behavior, args)")
        return self.behavior(behavior)

    def address(self, name: str) -> bytes:
        """The address of machine ``name``; :class:`UnknownName` if there is none."""
        addr = self.net.names.get(name) if type(name) is str else None
        if addr is None:
            raise UnknownName(f"no machine named {name!r}; spawned: {sorted(self.net.names)}")
        return addr

    def _host(self, host: str | None) -> str | None:
        if host is not None and host not in self.net.hosts:
            raise UnknownName(f"no host named {host!r}; hosts: {sorted(self.net.hosts)}")
        return host

    def cap(self, name: str, context: Any = None, priority: float = 0.0) -> Capability:
        """A capability to machine ``name`` with ``context``, minted as its host may."""
        return nw.mint(self.net, self.env, self.address(name), context, priority)

    def probe(self, name: str, host: str | None = None) -> Capability:
        """A machine that records every message content it receives; returns a cap to it."""
        if not self._probe_fn_registered:
            self.behavior(_probe, "avm.probe")
            self._probe_fn_registered = True
        self.spawn(name, "avm.probe", (), host=host)
        return self.cap(name, "probe")

    def received(self, name: str) -> tuple:
        """What a probe has received, in order."""
        return self.state(name)

    # -- driving ----------------------------------------------------------------------
    def send(self, cap: Capability, content: Any, client: str = "client") -> None:
        """Send one message from an outside client, through a capability."""
        if type(cap) is not Capability:
            self._not_a_cap(cap, "send")
        self.submit([(cap, content)], client)

    def _not_a_cap(self, cap: Any, call: str) -> None:
        if type(cap) is str and cap in self.net.names:
            use = (f"sim.send(sim.cap({cap!r}), content)" if call == "send"
                   else f"sim.submit([(sim.cap({cap!r}), content), ...])")
            raise UsageError(f"sim.{call} takes capabilities, not machine names: use {use}")
        hint = (f"; spawned machines: {sorted(self.net.names)}, reach one with sim.cap(name)"
                if type(cap) is str else "; make one with sim.cap(name)")
        raise UsageError(f"sim.{call} takes a capability, got {type(cap).__name__} "
                         f"{_short(cap)}{hint}")

    def submit(self, messages: Iterable[tuple[Capability, Any]], client: str = "client") -> None:
        """Send one batch per destination from an outside client (rule 3)."""
        if type(messages) is not list and type(messages) is not tuple:
            try:
                messages = tuple(messages)
            except Exception:
                pass  # nw.submit says what is wrong with it
        if type(messages) is list or type(messages) is tuple:
            for o in messages:
                if type(o) is tuple and len(o) == 2 and type(o[0]) is str:
                    self._not_a_cap(o[0], "submit")
        self.net, evs = nw.submit(self.net, messages, client)
        self._log(evs)

    def spawner(self, behaviors: Iterable[str] | str | None = None,
                host: str | None = None) -> tuple[Capability, Capability]:
        """Grant a spawner on ``host`` (default the first): ``(spawner, revoke)``.

        Hand ``spawner`` to a machine (``sim.spawn(..., env={"spawner": spawner})`` or in
        a message); it creates machines of the named ``behaviors`` (default any
        registered one) on request. Sending ``"revoke"`` to ``revoke`` disables it and
        every spawner attenuated from it. See ``avm.core.spawner``.
        """
        from .spawner import grant

        names = None if behaviors is None else (
            (behaviors,) if isinstance(behaviors, str) else tuple(behaviors))
        h = self._host(host) or next(iter(sorted(self.net.hosts)))
        self.net, cap, revoke = grant(self.net, h, names)
        return cap, revoke

    def ask(self, cap: Capability, request: Any, *, timeout_ms: int | None = None,
            max_steps: int = 1_000_000, host: str | None = None) -> Any:
        """Send ``request`` to ``cap`` and step until it is answered; return the answer.

        ``request`` holds ``avm.REPLY`` where the reply capability goes (``("balance",
        avm.REPLY)``), or is a function of the reply capability. It travels through
        ``feedback`` from a machine named ``"avm.asker"`` (spawned on first use, on
        ``host``), which keeps the first outcome of each ask. Raises
        :class:`~avm.AskFailed` (with feedback's ``reason``) when the request batch
        failed or could not be delivered, :class:`~avm.AskTimeout` when ``timeout_ms`` of
        network time passed first, and :class:`~avm.AskError` when the network went idle
        (or ``max_steps`` passed) without an answer. Other work stays queued: call
        :meth:`run` to finish it.
        """
        from .ask import sim_ask
        return sim_ask(self, cap, request, timeout_ms=timeout_ms, max_steps=max_steps,
                       host=host)

    def invariant(self, fn: Callable[..., Any], name: str | None = None) -> Callable:
        """Check ``fn`` after every step; it fails by raising or returning False.

        ``fn(sim)`` sees the simulation after the step. A function of two parameters,
        ``fn(prev, net)``, is given the network value before the step and the one after,
        for invariants about change ("a balance never goes down", "at most one batch
        commits per step"); ``avm.core.network.state_of(net, name)`` reads a machine's
        state in either. Returns ``fn``, so it works as a decorator.
        """
        if not callable(fn):
            raise UsageError(f"an invariant is a function of the Sim, got {type(fn).__name__}")
        two = _positional_arity(fn) == 2
        self._invariants.append((name or str(getattr(fn, "__name__", "invariant")), fn))
        if two:
            self._two.add(id(fn))
        return fn

    def step(self) -> list:
        before = self.net
        self.net, evs = nw.step(self.net, self.env)
        self.steps += 1
        self._log(evs)
        two = self._two
        for name, fn in self._invariants:
            try:
                ok = fn(before, self.net) if two and id(fn) in two else fn(self)
            except InvariantViolation:
                raise
            except Exception as e:
                raise InvariantViolation(name, self.seed, self.steps, f"{type(e).__name__}: {e}") from e
            if ok is False:
                raise InvariantViolation(name, self.seed, self.steps, "returned False")
        return evs

    def run(self, max_steps: int = 1_000_000, on_event: Callable[[Any], None] | None = None) -> RunReport:
        """Step until the network is quiescent (or ``max_steps``)."""
        with paced_gc():
            return self._run(max_steps, on_event)

    def _run(self, max_steps: int, on_event: Callable[[Any], None] | None) -> RunReport:
        n = 0
        count = 0
        while n < max_steps:
            evs = self.step()
            n += 1
            count += len(evs)
            if on_event is not None:
                for e in evs:
                    on_event(e)
            if len(evs) == 1 and type(evs[0]) is events.Idle:
                # Idle means nothing can run; quiescent means nothing is left at all
                # (a suspended machine's queue keeps the network idle, not quiescent).
                return RunReport(n, count, nw.quiescent(self.net), self.net.now, True)
        return RunReport(n, count, nw.quiescent(self.net), self.net.now, False)

    # -- inspecting -------------------------------------------------------------------
    def state(self, name: str) -> Any:
        return self.net.machines[self.address(name)].state

    def machine(self, name: str) -> nw.MachineRecord:
        return self.net.machines[self.address(name)]

    def failures(self, name: str | None = None) -> list:
        """Failed batches (``Failure`` values) recorded in the trace, optionally for one machine."""
        addr = None if name is None else self.address(name)
        return [e.failure for e in self.trace
                if type(e) is events.Applied and not e.ok and (addr is None or e.dest == addr)]

    def stats(self) -> dict[str, int]:
        return dict(self.net.stats)

    def dead_letters(self, host: str | None = None) -> tuple:
        """Linear and relevant values that nobody could take back, oldest first.

        A batch that fails or cannot be delivered sends its linear and relevant values
        back to its sender (the ``~returned`` signal); when the sender cannot take them (a
        client, a stopped machine, or its step fails on them) they are recorded here, per
        host (``net.dead_letters``). Each entry is a ``Map`` with ``reason``, ``rule``,
        ``values`` (the ``(capability, content)`` messages), ``sender``, ``dest``, ``seq``,
        ``at``, and the ``host`` and ``index`` that name it for
        :meth:`redeliver_dead_letter` and :meth:`clear_dead_letters`.
        """
        letters = self.net.dead_letters
        hosts = sorted(letters) if host is None else [self._host(host)]
        return tuple(e.set("host", h).set("index", i)
                     for h in hosts for i, e in enumerate(letters.get(h, ())))

    def redeliver_dead_letter(self, host: str, index: int, to: str) -> None:
        """Send dead letter ``index`` of ``host`` to machine ``to``, as returned values.

        An operator's act, recorded in the trace (``events.Operator("redeliver", ...)``)
        and the ``dead-letters.redelivered`` counters. The entry leaves the dead letters and
        its messages arrive as the weak signal ``("~returned", info)``, exactly as values a
        failed batch gives back (``@b.returned`` takes them), the reason prefixed by
        ``"redelivered by the operator: "``. It is an ordinary batch from then on: if
        ``to`` does not take them back, they return to the dead letters. ``to`` must not
        be stopped. ``host`` and ``index`` are as :meth:`dead_letters` lists them.
        """
        self._host(host)
        dest = self.address(to)
        self.net, entry, evs = nw.redeliver_dead_letter(self.net, self.env, host, index, dest)
        self._log([events.Operator("redeliver", host, self.net.now, f"#{index} to {to}", entry),
                   *evs])

    def clear_dead_letters(self, host: str | None = None, index: int | None = None) -> int:
        """Destroy dead letters: every one, those of ``host``, or entry ``index`` of ``host``.

        ``null`` is the one way to destroy a linear value, so clearing sends the entries'
        messages to the ``null`` service of their host (from ``("~", "operator", host)``),
        which consumes them at its next step. An operator's act, recorded in the trace
        (``events.Operator("clear", ...)``) and the ``dead-letters.cleared`` counters.
        Returns the number of entries cleared.
        """
        if index is not None and host is None:
            raise UsageError("clearing one dead letter needs its host")
        hosts = sorted(self.net.dead_letters) if host is None else [self._host(host) or ""]
        done = 0
        for h in hosts:
            self.net, taken, evs = nw.clear_dead_letters(self.net, h, index)
            if taken:
                done += len(taken)
                detail = "all" if index is None else f"#{index}"
                self._log([events.Operator("clear", h, self.net.now, detail, taken), *evs])
        return done

    def suspend(self, name: str) -> None:
        self.net = nw.set_status(self.net, self.address(name), "suspended")

    def resume(self, name: str) -> None:
        self.net = nw.set_status(self.net, self.address(name), "running")

    def stop(self, name: str) -> None:
        self.net = nw.set_status(self.net, self.address(name), "stopped")

    def rebind(self, name: str, behavior: Callable | str) -> str:
        """Hot swap: machine ``name`` runs ``behavior`` from its next batch, state kept.

        ``behavior`` is a registered name or a step function (registered as
        :meth:`behavior` does). The machine's state, queue, keys and capabilities stay as
        they are; the new code must understand the old state (migrate it with
        :meth:`set_state` if it does not). Recorded in the trace as
        ``events.Operator("rebind", address, ...)``, detail ``"old -> new"``. Goes
        through :func:`avm.core.network.rebind`, which a host's dictionary calls too.
        Returns the behavior's name.
        """
        bname = self._behavior_name(behavior)
        self.net, evs = nw.rebind(self.net, self.address(name), bname, self.env)
        self._log(evs)
        return bname

    def set_state(self, name: str, value: Any) -> None:
        """Replace machine ``name``'s state by ``value``: an operator's audited edit.

        Checked as a step's new state would be (:func:`avm.core.network.set_state`): a
        value, conserving the linear and relevant values of the old state, copying none
        and bringing in none; otherwise ``ValueRuleError`` or ``SubstructuralError`` and
        nothing changes. Recorded in the trace as ``events.Operator("set_state",
        address, ...)`` with ``values`` the states ``(old, new)``, which the test kit's
        replay and census follow.
        """
        self.net, evs = nw.set_state(self.net, self.address(name), value)
        self._log(evs)

    def rotate_key(self, name: str, keep_old: bool = False) -> None:
        """Revoke every capability the machine issued (unless ``keep_old``).

        The machine receives its new ``Self`` as a ``("self", Self)`` signal. Recorded in
        the trace as ``events.Operator("rotate", address, ...)``.
        """
        addr = self.address(name)
        self.net, evs = nw.rotate_key(self.net, addr, keep_old, self.env)
        self._log([events.Operator("rotate", addr, self.net.now,
                                   "keep_old" if keep_old else "revoke"), *evs])

    def move(self, name: str, host: str) -> None:
        """Move a machine to another host; capabilities to it keep working."""
        self.net = nw.move(self.net, self.address(name), self._host(host) or "")

    def export_machine(self, name: str) -> nw.MachineImage:
        """Remove a machine and return it as a value, to import into another network.

        Recorded in the trace as ``events.Operator("export", address, ...)`` with the
        image: its state leaves the network (the census counts it as exported).
        """
        addr = self.address(name)
        self.net, image = nw.export_machine(self.net, addr)
        self._log([events.Operator("export", addr, self.net.now, name, image)])
        return image

    def import_machine(self, image: nw.MachineImage, host: str | None = None) -> None:
        """Install a machine exported from another network (its behavior must be known here).

        Recorded in the trace as ``events.Operator("import", address, ...)`` with the
        image: its state enters the network (the census counts it as imported).
        """
        if image.behavior not in self.env.behaviors:
            raise UnknownName(f"no behavior named {image.behavior!r}; register it first")
        self.net = nw.import_machine(self.net, image,
                                     self._host(host) or next(iter(sorted(self.net.hosts))))
        self._log([events.Operator("import", image.address, self.net.now, image.name, image)])

    def snapshot(self) -> Network:
        """The whole network as an immutable value; :meth:`restore` puts it back.

        The simulation remembers the last :data:`SNAPSHOTS_KEPT` snapshots it handed out
        (by identity), so that a restore can tell one of them from an edited network.
        """
        net = self.net
        snaps = self._snapshots
        snaps.pop(id(net), None)
        snaps[id(net)] = net
        while len(snaps) > SNAPSHOTS_KEPT:
            del snaps[next(iter(snaps))]
        return net

    def restore(self, net: Network) -> None:
        """Replace the whole network by ``net`` (a snapshot, or an edited network value).

        Recorded in the trace as ``events.Operator("restore", None, ...)``, with detail
        ``"snapshot"`` when ``net`` is one of this simulation's snapshots and ``"edited"``
        otherwise: ``avm.testing``'s census follows a snapshot by itself, and treats an
        edited network as a deliberate edit (``CensusWatch.rebase()`` accepts it).
        """
        before = self.net
        self.net = net
        if self.record:
            own = net is before or self._snapshots.get(id(net)) is net
            how = "snapshot" if own else "edited"
            self._log([events.Operator("restore", None, net.now, how, (before, net))])

    def format(self, ev: Any) -> str:
        return format_event(self.net, ev)

    def _log(self, evs: list) -> None:
        if self.record and evs:
            self.trace.extend(evs)


def _positional_arity(fn: Callable) -> int:
    """How many positional parameters ``fn`` requires (1 if it cannot be told)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    pos = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in pos and p.default is inspect.Parameter.empty)


def _short(v: Any) -> str:
    try:
        r = repr(v)
    except Exception:
        return f"<{type(v).__name__}>"
    return r if len(r) <= 60 else r[:57] + "..."


def _probe(msg: Any, state: Any) -> tuple:
    ctx, content = msg
    if ctx == SIGNAL:
        name = content[0] if type(content) is tuple and content else None
        return [], (() if name == "init" else state)
    return [], (*state, content)



def format_event(net: Network, ev: Any) -> str:
    """One readable line per event, for traces."""
    t = type(ev)
    who = nw.who
    if t is events.Applied:
        src = who(net, ev.chan[0])
        dst = who(net, ev.dest)
        if ev.ok:
            return f"t={ev.at:<6} {dst} <- {src} #{ev.seq}: {ev.steps} msg ok"
        return f"t={ev.at:<6} {dst} <- {src} #{ev.seq}: FAILED {ev.failure}"
    if t is events.Created:
        return (f"t={ev.at:<6} {who(net, ev.chan[0])} -> {who(net, ev.dest)} #{ev.seq}: "
                f"{ev.size} msg queued" + (f" (priority {ev.priority:g})" if ev.priority else ""))
    if t is events.Dropped:
        return f"t={ev.at:<6} DROP {who(net, ev.chan[0])} -> {who(net, ev.dest)} #{ev.seq}: {ev.reason}"
    if t is events.Interrupted:
        return f"t={ev.at:<6} {who(net, ev.dest)}: batch #{ev.seq} interrupted ({ev.restarts})"
    if t is events.Wire:
        return (f"t={ev.at:<6} wire {ev.src}->{ev.dst} {ev.kind} "
                f"{who(net, ev.chan[0])}->{who(net, ev.chan[1])} #{ev.seq}: {ev.what}")
    if t is events.Host:
        return f"t={ev.at:<6} host {ev.host} " + ("up" if ev.up else f"CRASHED until t={ev.until}")
    if t is events.Cut:
        return f"t={ev.at:<6} link {ev.hosts[0]}<->{ev.hosts[1]} cut until t={ev.until}"
    if t is events.Spawned:
        return f"t={ev.at:<6} spawn {ev.name} on {ev.host}"
    if t is events.Idle:
        if ev.quiescent:
            return f"t={ev.at:<6} quiescent"
        return f"t={ev.at:<6} idle: nothing can run, work is waiting (a suspended machine?)"
    if t is events.DeadLetter:
        return (f"t={ev.at:<6} DEAD LETTER on {ev.host}: {ev.count} msg of "
                f"{who(net, ev.sender)} #{ev.seq}: {ev.reason}")
    if t is events.Commons:
        return f"t={ev.at:<6} ~{ev.service} refused a request: {ev.error}"
    if t is events.Operator:
        subject = "" if ev.subject is None else " " + (
            ev.subject if type(ev.subject) is str else who(net, ev.subject))
        return f"t={ev.at:<6} OPERATOR {ev.act}{subject}" + (f": {ev.detail}" if ev.detail else "")
    return repr(ev)
