"""The test kit: the simulator, a clock you can move, and one checker for the promises.

    "A single invariant checker (public, in avm.testing) reads what the senders committed
    and what the receivers applied, and reports per pair: committed, applied, lost,
    duplicated, order violations, phantoms, hash mismatches, replay mismatches, and
    duplicates refused. The simulator and the real-process tests both use it."
    (TESTING.md, "One checker, used everywhere")

Users of avm test their own machines with what our own tests use (STYLE 12):

* :func:`make_sim` builds a seeded network of simulated hosts in one line, with the
  fault model of :data:`ALL_FAULTS` or any spec; :func:`heal` turns the faults off;
  :func:`run_until_quiescent` runs it dry or fails saying why; :class:`SimClock` reads
  and moves the simulated clock (the only clock machines ever see, through ``time``).
* :class:`Checker` is the one checker. It takes records in a *neutral* form
  (:meth:`Checker.committed`, :meth:`Checker.applied`, :meth:`Checker.dropped`,
  :meth:`Checker.refused_duplicate`, :meth:`Checker.stored`), so that the simulator's
  trace (:meth:`Checker.from_trace`) and, later, the records that real hosts keep in their
  stores feed it the same way. :meth:`Checker.report` gives a frozen :class:`Report`.
* :func:`watch` attaches a checker to a :class:`~avm.Sim` as an invariant checked after
  every step; a violation raises :class:`~avm.InvariantViolation` carrying the seed and
  the step, and the same seed fails at the same step again.
* :func:`run_seed` does the whole simulation tier for one seed: faults, invariants after
  every step, a healed phase that must reach quiescence, and the report.

What the checker proves, in the words of TESTING.md (P5, atomic batches, is covered by
replay: a failed batch must leave the replayed state unchanged, and so the stored one):

- **P1 no loss**: once the network is quiescent, every committed batch has an outcome:
  applied, failed definitely, or dropped with a reason (a definite failure, not a loss).
- **P2 no duplicate**: no batch has two outcomes.
- **P3 order**: per (sender, destination), outcomes come in sequence order.
- **P4 no phantom**: no outcome for a batch nobody committed.
- **P6 replay equivalence**: folding the machine's step over the batches it applied,
  starting from its initial state, gives the state the runtime stored.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .core import network as nw
from .core.caps import Keyring, address_text
from .core.conserve import OPAQUE, Tally
from .core.errors import AvmError, UsageError
from .core.machine import Message, StepFn, run_batch
from .core.network import Config, Faults, events
from .core.sim import InvariantViolation, RunReport, Sim
from .core.values import Map, replace_fields

__all__ = [
    "ALL_FAULTS",
    "BatchDigest",
    "Census",
    "CensusReport",
    "CensusWatch",
    "Checker",
    "InvariantViolation",
    "PairReport",
    "Report",
    "SeedRun",
    "SimClock",
    "census",
    "check_census",
    "check_sim",
    "fault_counts",
    "heal",
    "make_sim",
    "run_seed",
    "run_until_quiescent",
    "watch",
    "watch_census",
]

#: Every fault kind of the model at once, at rates that make each fire within a few
#: hundred steps on three or more hosts (the simulation tier's default).
ALL_FAULTS = "loss=0.1,dup=0.1,delay=1-20,crash=0.01,partition=0.01,corrupt=0.05"

#: How many problem descriptions a report keeps (the counts are always complete).
PROBLEMS_KEPT_MAX = 20

_MISSING = object()
_MAYBE = "dropped (indefinite)"


# ---------------------------------------------------------------------------------------
# Building and driving a simulated network
# ---------------------------------------------------------------------------------------


def make_sim(
    seed: int = 0, hosts: int | Iterable[str] = 1, faults: Faults | str | None = None,
    config: Config | None = None,
) -> Sim:
    """A seeded :class:`~avm.Sim`; ``hosts`` is a count (``h0``, ``h1``...) or names.

    ``faults`` is a :class:`~avm.Faults`, a spec such as ``"loss=0.1,dup=0.05"``, ``"all"``,
    or :data:`ALL_FAULTS`. Faults act only between hosts, so give it two or more.
    """
    names = tuple(f"h{i}" for i in range(hosts)) if isinstance(hosts, int) else tuple(hosts)
    return Sim(seed, hosts=names, faults=faults, config=config)


def heal(sim: Sim) -> None:
    """Turn every fault off from now on. Cuts and crashes already under way run out."""
    cfg = sim.net.config
    sim.net = replace_fields(sim.net, config=replace_fields(cfg, faults=Faults()))


def run_until_quiescent(sim: Sim, max_steps: int = 100_000) -> RunReport:
    """Step until nothing is pending or in flight; fail if ``max_steps`` is not enough."""
    report = sim.run(max_steps)
    if not report.quiescent:
        raise AssertionError(
            f"seed {sim.seed}: not quiescent after {report.steps} steps (t={report.now}); "
            f"{len(sim.net.live)} channels pending, {len(sim.net.wire)} transmissions in "
            f"flight, {len(sim.net.outbox)} batches unacknowledged")
    return report


class SimClock:
    """The simulated clock: the fake clock of the test kit.

    Machines have no clock of their own; they ask the ``time`` commons service, which
    answers ``epoch_ms + ticks * tick_ms`` (see :class:`~avm.Config`). Moving this clock
    forward is how a test says "an hour later". It never goes back.
    """

    def __init__(self, sim: Sim) -> None:
        self._sim = sim

    @property
    def ticks(self) -> int:
        return self._sim.net.now

    @property
    def ms(self) -> int:
        """What the ``time`` service answers now, in milliseconds since the Unix epoch."""
        cfg = self._sim.net.config
        return cfg.epoch_ms + self._sim.net.now * cfg.tick_ms

    def advance(self, ticks: int) -> None:
        """Move the clock forward; timed work that falls due runs at the next steps."""
        if ticks < 0:
            raise ValueError("the simulated clock never goes back")
        self._sim.net = replace_fields(self._sim.net, now=self._sim.net.now + ticks)


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------

_VIOLATIONS = ("lost", "duplicated", "order", "phantoms", "hash_mismatches")


@dataclass(frozen=True)
class PairReport:
    """The figures for one (sender, destination) channel.

    ``committed``: batches the sender committed. ``applied``: batches the receiver
    committed (``ok``). ``failed``: batches the receiver processed and definitely failed.
    ``dropped``: batches dropped with a reason (unknown address, stopped machine, retry
    budget spent). ``in_flight``: committed, no outcome yet (only a loss once quiescent).
    Violations: ``lost``, ``duplicated`` (a second outcome for one batch), ``order`` (an
    outcome for a lower sequence number after a higher one), ``phantoms`` (an outcome for
    a batch never committed), ``hash_mismatches`` (the receiver processed other contents
    than the sender committed). ``refused``: duplicate transmissions the receiver refused.
    """

    chan: tuple
    label: str
    committed: int = 0
    applied: int = 0
    failed: int = 0
    dropped: int = 0
    in_flight: int = 0
    lost: int = 0
    duplicated: int = 0
    order: int = 0
    phantoms: int = 0
    hash_mismatches: int = 0
    refused: int = 0

    @property
    def violations(self) -> int:
        return sum(getattr(self, k) for k in _VIOLATIONS)


@dataclass(frozen=True)
class Report:
    """What the checker found: per pair, per machine (replay), and in total.

    ``quiescent`` says whether losses were counted: before quiescence a batch without an
    outcome is in flight, not lost. ``replay_mismatches`` names the machines whose stored
    state is not what replaying their batches gives. ``problems`` describes the first
    :data:`PROBLEMS_KEPT_MAX` violations in the order they were found.
    """

    pairs: tuple[PairReport, ...]
    quiescent: bool
    replay_mismatches: tuple[str, ...] = ()
    replayed: int = 0  # machines whose state was compared with a replay
    problems: tuple[str, ...] = ()
    faults: Mapping[str, int] = field(default_factory=dict)
    events: int = 0
    census: CensusReport | None = None  # with watch_census: conservation (P8)

    def total(self, figure: str) -> int:
        """The sum of one :class:`PairReport` figure over all pairs (``"committed"``...)."""
        return sum(getattr(p, figure) for p in self.pairs)

    @property
    def totals(self) -> dict[str, int]:
        names = ("committed", "applied", "failed", "dropped", "in_flight", *_VIOLATIONS, "refused")
        out = {n: self.total(n) for n in names}
        out["replay_mismatches"] = len(self.replay_mismatches)
        return out

    @property
    def violations(self) -> int:
        return (sum(p.violations for p in self.pairs) + len(self.replay_mismatches)
                + (self.census.violations if self.census is not None else 0))

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def assert_ok(self, *, refused_min: int = 0) -> Report:
        """Raise AssertionError with this report unless it is clean.

        ``refused_min=1`` also demands that the de-duplication path ran (TESTING.md: "which
        must be above zero in fault runs").
        """
        if not self.ok:
            raise AssertionError(f"promises violated\n{self}")
        if self.total("refused") < refused_min:
            raise AssertionError(
                f"expected at least {refused_min} refused duplicates, got "
                f"{self.total('refused')}: the de-duplication path did not run\n{self}")
        return self

    def __str__(self) -> str:
        t = self.totals
        head = "OK" if self.ok else f"{self.violations} VIOLATIONS"
        lines = [
            f"promises: {head} ({len(self.pairs)} pairs, "
            f"{'quiescent' if self.quiescent else 'not quiescent: losses not counted'})",
            f"  committed {t['committed']}, applied {t['applied']}, failed {t['failed']}, "
            f"dropped {t['dropped']}, in flight {t['in_flight']}",
            f"  lost {t['lost']}, duplicated {t['duplicated']}, order {t['order']}, "
            f"phantoms {t['phantoms']}, hash mismatches {t['hash_mismatches']}, "
            f"replay mismatches {t['replay_mismatches']} (of {self.replayed} machines)",
            f"  duplicates refused {t['refused']}",
        ]
        if self.faults:
            lines.append("  faults: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())))
        cols = ("committed", "applied", "failed", "dropped", "in_flight", *_VIOLATIONS, "refused")
        short = ("commit", "apply", "fail", "drop", "flight", "lost", "dup", "order", "phantom",
                 "hash", "refused")
        rows = sorted(self.pairs, key=lambda p: (-p.violations, p.label))[:40]
        if rows:
            lines.append(f"  {'pair':<34}" + "".join(f"{s:>8}" for s in short))
            for p in rows:
                lines.append(f"  {p.label[:34]:<34}" + "".join(f"{getattr(p, c):>8}" for c in cols))
            if len(self.pairs) > len(rows):
                lines.append(f"  ... and {len(self.pairs) - len(rows)} more pairs")
        for m in self.replay_mismatches:
            lines.append(f"  replay mismatch: {m}")
        if self.census is not None:
            lines.extend("  " + line for line in str(self.census).splitlines())
        for pr in self.problems:
            lines.append(f"  - {pr}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------


class _Pair:
    __slots__ = ("committed", "applied", "failed", "dropped", "duplicated", "order",
                 "hash_mismatches", "refused", "top")

    def __init__(self) -> None:
        self.committed = self.applied = self.failed = self.dropped = 0
        self.duplicated = self.order = self.hash_mismatches = self.refused = 0
        self.top = 0  # highest sequence number with an Applied outcome


class Checker:
    """One checker for the delivery promises, fed with neutral records.

    A *channel* is ``(sender, destination)``; a batch is ``(channel, seq)``. A *digest* is
    anything comparable that stands for a batch's contents (a hash, or at least its size);
    ``None`` means unknown and is never compared.

    Feed it what senders committed and what receivers did, in any order between the two
    sides (a real test collects both from the hosts' stores); within the receiver side,
    feed outcomes in the order they were committed. Then ask for :meth:`report`.

    Replay (P6) needs the step functions: ``step_for(destination)`` returns the step
    function of a machine, or ``None`` for destinations that are not replayed (commons
    services, unknown addresses). The checker folds :func:`~avm.run_batch` over the
    messages of each outcome as it arrives (incremental, so checking after every step
    stays cheap), starting from ``initial.get(destination)`` (``None`` by default: a
    machine's state before its ``init`` batch). :meth:`stored` hands it the state the
    runtime holds, to compare.
    """

    def __init__(
        self, step_for: Callable[[Any], StepFn | None] | None = None,
        initial: Mapping[Any, Any] | None = None, label: Callable[[Any], str] | None = None,
    ) -> None:
        self._step_for = step_for
        self._initial = dict(initial or {})
        self._label = label or _plain_label
        self._pairs: dict[tuple, _Pair] = {}
        self._committed: dict[tuple, Any] = {}  # (chan, seq) -> digest
        self._outcome: dict[tuple, str] = {}  # (chan, seq) -> "applied" | "failed" | "dropped"
        self._unmatched: dict[tuple, Any] = {}  # outcomes not (yet) committed -> digest
        self._replayed: dict[Any, Any] = {}  # destination -> state by replay
        self._replay_broken: dict[Any, str] = {}  # destination -> why replay diverged
        self._stored: dict[Any, Any] = {}  # destination -> state the runtime holds
        self._bound: dict[Any, str] = {}  # destination -> behavior name after a rebind
        self._bad: set = set()  # destinations counted as replay mismatches
        self._faults: dict[str, int] = {}
        self._problems: list[str] = []
        self._violations = 0
        self.events = 0

    # -- the neutral input form --------------------------------------------------------
    def committed(self, chan: tuple, seq: int, digest: Any = None) -> None:
        """The sender committed batch ``seq`` on ``chan`` (its outbox now holds it)."""
        key = (chan, seq)
        p = self._pair(chan)
        if key in self._committed:
            self._violation(f"{self._name(chan)} #{seq}: committed twice by the sender")
            p.duplicated += 1
            return
        self._committed[key] = digest
        p.committed += 1
        early = self._unmatched.pop(key, _MISSING)
        if early is not _MISSING:  # the outcome was fed first: no longer a phantom
            self._violations -= 1
            self._compare(chan, seq, digest, early)

    def applied(self, chan: tuple, seq: int, digest: Any = None, ok: bool = True,
                messages: tuple[Message, ...] | None = None) -> None:
        """The receiver processed batch ``seq`` of ``chan``: committed it (``ok``) or failed it.

        ``messages`` are the messages the step received (contexts unsealed); with them and
        a ``step_for``, the checker replays the batch.
        """
        p = self._pair(chan)
        if self._outcome_of(chan, seq, "applied" if ok else "failed", digest):
            if seq < p.top:
                p.order += 1
                self._violation(f"{self._name(chan)} #{seq}: applied after #{p.top} (order)")
            if (chan, seq) in self._committed:  # a phantom says nothing about the order
                p.top = max(p.top, seq)
        if ok:
            p.applied += 1
        else:
            p.failed += 1
        if messages:
            self._replay(chan[1], ok, messages, chan, seq)

    def dropped(self, chan: tuple, seq: int, reason: str = "", definite: bool = True) -> None:
        """Batch ``seq`` of ``chan`` was dropped with a reason: a definite failure, not a loss.

        An *indefinite* drop (the sender gave up without knowing) resolves the batch too,
        and may come before or after the receiver applied it without being a duplicate.
        """
        self._pair(chan).dropped += 1
        self._outcome_of(chan, seq, "dropped" if definite else _MAYBE, None)

    def refused_duplicate(self, chan: tuple, seq: int | None = None, n: int = 1) -> None:
        """The receiver refused ``n`` duplicate transmissions of a batch it already had."""
        self._pair(chan).refused += n

    def fault(self, kind: str, n: int = 1) -> None:
        """Count an injected fault (for the report only; faults are not violations)."""
        self._faults[kind] = self._faults.get(kind, 0) + n

    def stored(self, dest: Any, state: Any) -> bool:
        """The runtime holds ``state`` for machine ``dest``. Returns whether replay agrees.

        Only destinations with a ``step_for`` are compared; the last state given counts.
        """
        if self._step_for is None or self._step_for(dest) is None:
            return True
        self._stored[dest] = state
        return not self._recheck(dest)

    def operator(self, act: str, dest: Any, values: Any) -> None:
        """An operator's act on machine ``dest``: replay follows edits and hot swaps.

        ``set_state`` (``values``: the states ``(old, new)``) makes ``new`` the state
        replay continues from; ``rebind`` (``values``: the behavior names ``(old,
        new)``) makes later batches replay with the new behavior (the checker of
        :meth:`for_sim` looks it up by that name). Other acts change nothing here; a
        replay that already diverged stays diverged.
        """
        if act == "set_state" and type(values) is tuple and len(values) == 2:
            self._replayed[dest] = values[1]
        elif act == "rebind" and type(values) is tuple and len(values) == 2:
            self._bound[dest] = values[1]

    # -- the adapter for the simulator's trace ------------------------------------------
    def feed(self, evs: Iterable[Any]) -> None:
        """Feed events of the pure network (``sim.trace``, or what ``step`` returned)."""
        for ev in evs:
            self.events += 1
            t = type(ev)
            if t is events.Applied:
                self.applied(ev.chan, ev.seq, _digest(ev), ev.ok, ev.messages or None)
            elif t is events.Created:
                self.committed(ev.chan, ev.seq, _digest(ev))
            elif t is events.Wire:
                if ev.what == "refused-duplicate":
                    self.refused_duplicate(ev.chan, ev.seq)
                elif ev.what in _WIRE_FAULTS:
                    self.fault(_WIRE_FAULTS[ev.what])
            elif t is events.Dropped:
                self.dropped(ev.chan, ev.seq, ev.reason, ev.definite)
            elif t is events.Host:
                self.fault("crash" if not ev.up else "restart")
            elif t is events.Cut:
                self.fault("partition")
            elif t is events.Operator:
                self.operator(ev.act, ev.subject, ev.values)

    @classmethod
    def from_trace(cls, trace: Iterable[Any], sim: Sim | None = None) -> Checker:
        """A checker fed with a trace; with ``sim``, it replays and names machines too."""
        trace = list(trace)
        c = cls.for_sim(sim) if sim is not None else cls()
        for ev in trace:  # before its first hot swap, a machine ran its first behavior
            if type(ev) is events.Operator and ev.act == "rebind" and ev.subject not in c._bound:
                c._bound[ev.subject] = ev.values[0]
        c.feed(trace)
        if sim is not None:
            for addr, m in sim.net.machines.items():
                c.stored(addr, m.state)
        return c

    @classmethod
    def for_sim(cls, sim: Sim, initial: Mapping[Any, Any] | None = None) -> Checker:
        """An empty checker that replays with ``sim``'s behaviors and names its machines."""

        def step_for(dest: Any) -> StepFn | None:
            m = sim.net.machines.get(dest) if type(dest) is bytes else None
            if m is None:
                return None
            return sim.env.behavior(checker._bound.get(dest, m.behavior))

        checker = cls(step_for, initial, lambda x: nw.who(sim.net, x))
        return checker

    # -- results ------------------------------------------------------------------------
    @property
    def violations(self) -> int:
        """Violations found so far (outcomes not yet matched by a commit count as phantoms)."""
        return self._violations

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(self._problems)

    def report(self, quiescent: bool = True) -> Report:
        """Freeze the figures. Say ``quiescent=False`` while batches may still be in flight."""
        waiting: dict[tuple, int] = {}
        for key in self._committed:
            if key not in self._outcome:
                waiting[key[0]] = waiting.get(key[0], 0) + 1
        phantoms: dict[tuple, int] = {}
        for chan, _ in self._unmatched:
            phantoms[chan] = phantoms.get(chan, 0) + 1
        problems = list(self._problems)
        if quiescent:
            for key in self._committed:
                if key not in self._outcome and len(problems) < PROBLEMS_KEPT_MAX:
                    problems.append(f"{self._name(key[0])} #{key[1]}: lost (committed, no outcome)")
        pairs = []
        for chan, p in self._pairs.items():
            w = waiting.get(chan, 0)
            pairs.append(PairReport(
                chan, self._name(chan), p.committed, p.applied, p.failed, p.dropped,
                0 if quiescent else w, w if quiescent else 0, p.duplicated, p.order,
                phantoms.get(chan, 0), p.hash_mismatches, p.refused))
        pairs.sort(key=lambda r: r.label)
        bad = tuple(sorted(self._label(d) + (f": {self._replay_broken[d]}" if d in self._replay_broken else "")
                           for d in {**self._stored, **self._replay_broken} if self._mismatch(d)))
        return Report(tuple(pairs), quiescent, bad, len(self._stored), tuple(problems),
                      dict(self._faults), self.events)

    # -- internals ------------------------------------------------------------------------
    def _pair(self, chan: tuple) -> _Pair:
        p = self._pairs.get(chan)
        if p is None:
            p = self._pairs[chan] = _Pair()
        return p

    def _name(self, chan: tuple) -> str:
        return f"{self._label(chan[0])} -> {self._label(chan[1])}"

    def _problem(self, text: str) -> None:
        if len(self._problems) < PROBLEMS_KEPT_MAX:
            self._problems.append(text)

    def _violation(self, text: str) -> None:
        self._violations += 1
        self._problem(text)

    def _outcome_of(self, chan: tuple, seq: int, kind: str, digest: Any) -> bool:
        """Record an outcome; False if it is a second one (a duplicate)."""
        key = (chan, seq)
        first = self._outcome.get(key)
        if first is not None and _MAYBE in (first, kind) and first != kind:
            # An indefinite drop and the receiver's real outcome: both are true.
            if kind != _MAYBE:
                self._outcome[key] = kind
            return True
        if first is not None:
            self._pair(chan).duplicated += 1
            self._violation(f"{self._name(chan)} #{seq}: {kind} after already {first} (duplicate)")
            return False
        self._outcome[key] = kind
        committed = self._committed.get(key, _MISSING)
        if committed is _MISSING:
            self._unmatched[key] = digest
            self._violation(f"{self._name(chan)} #{seq}: {kind} but never committed (phantom)")
        else:
            self._compare(chan, seq, committed, digest)
        return True

    def _compare(self, chan: tuple, seq: int, sent: Any, got: Any) -> None:
        if sent is not None and got is not None and sent != got:
            self._pair(chan).hash_mismatches += 1
            self._violation(f"{self._name(chan)} #{seq}: committed {_short(sent)}, "
                            f"processed {_short(got)} (hash mismatch)")

    def _replay(self, dest: Any, ok: bool, messages: tuple, chan: tuple, seq: int) -> None:
        if self._step_for is None or dest in self._replay_broken:
            return
        fn = self._step_for(dest)
        if fn is None:
            return
        before = self._replayed.get(dest, self._initial.get(dest))
        r = run_batch(fn, before, messages)
        if r.ok and ok:
            self._replayed[dest] = r.state
        elif r.ok != ok:
            # The same step over the same messages from the same state decided otherwise:
            # either the state differs already or the step is not pure.
            self._replay_broken[dest] = (
                f"batch #{seq} from {self._label(chan[0])} {'committed' if ok else 'failed'} "
                f"but {'commits' if r.ok else 'fails'} on replay"
                + (f" ({r.failure})" if r.failure else ""))
            self._recheck(dest)

    def _recheck(self, dest: Any) -> bool:
        """Compare replay and stored state for ``dest``; keep the violation count in step."""
        bad = self._mismatch(dest)
        if bad and dest not in self._bad:
            self._bad.add(dest)
            why = self._replay_broken.get(dest, "differs from its stored state")
            self._violation(f"replay of {self._label(dest)}: {why}")
        elif not bad and dest in self._bad:
            self._bad.discard(dest)
            self._violations -= 1
        return bad

    def _mismatch(self, dest: Any) -> bool:
        if dest in self._replay_broken:
            return True
        stored = self._stored.get(dest, _MISSING)
        if stored is _MISSING:
            return False
        return self._replayed.get(dest, self._initial.get(dest)) != stored


_WIRE_FAULTS = {
    "lost": "loss", "duplicated": "duplicate", "corrupt-refused": "corrupt",
    "held-early": "reorder", "lost-host-down": "lost-host-down", "cut": "lost-partition",
}


class BatchDigest:
    """The digest the simulator feeds the checker: the batch's ``batch_hash``.

    Computed only when two digests are compared and the batches are not the very same
    messages object (equal objects have equal hashes), so checking stays cheap.
    """

    __slots__ = ("batch", "_hash")

    def __init__(self, batch: Any) -> None:
        self.batch = batch
        self._hash: bytes | None = None

    @property
    def hash(self) -> bytes:
        """:func:`~avm.core.network.batch_hash` of the batch."""
        if self._hash is None:
            try:
                self._hash = nw.batch_hash(self.batch)
            except AvmError as e:  # not encodable: a host could not have sent it at all
                self._hash = f"unencodable: {type(e).__name__}".encode()
        return self._hash

    def __eq__(self, other: object) -> bool:
        if type(other) is not BatchDigest:
            return NotImplemented
        return self.batch.messages is other.batch.messages or self.hash == other.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return f"batch {self.hash[:6].hex()}"


def _digest(ev: Any) -> BatchDigest | None:
    b = getattr(ev, "batch", None)
    return None if b is None else BatchDigest(b)


def _plain_label(x: Any) -> str:
    if type(x) is bytes:
        return address_text(x)[:10] + "..."
    if type(x) is tuple and x and x[0] == "~":
        return "~" + str(x[1])
    if type(x) is tuple and len(x) == 2:
        return f"{x[0]}:{x[1]}"
    return repr(x)


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def fault_counts(trace: Iterable[Any]) -> dict[str, int]:
    """How many faults of each kind a trace shows (loss, duplicate, corrupt, reorder, ...)."""
    c = Checker()
    for ev in trace:
        t = type(ev)
        if t is events.Wire or t is events.Host or t is events.Cut:
            c.feed((ev,))
    return dict(c._faults)


# ---------------------------------------------------------------------------------------
# The checker on a running simulation
# ---------------------------------------------------------------------------------------


def watch(sim: Sim, name: str = "avm.testing promises", replay: bool = True) -> Checker:
    """Check the promises after every step of ``sim``; return the checker.

    Safety (P2-P4, hash and replay) is checked at every step: the first violation makes
    that step raise :class:`~avm.InvariantViolation` with the seed and step. Loss (P1)
    can only be judged at quiescence: call ``checker.report()`` (or :func:`check_sim`)
    then. Events already in ``sim.trace`` are fed first.
    """
    if not sim.record:
        raise ValueError("watch needs the trace: make the Sim with record=True")
    checker = Checker.for_sim(sim) if replay else Checker(label=lambda x: nw.who(sim.net, x))
    seen = 0

    def promises(s: Sim) -> None:
        nonlocal seen
        new = s.trace[seen:]
        seen = len(s.trace)
        checker.feed(new)
        if replay:
            machines = s.net.machines
            for ev in new:
                if type(ev) is events.Applied and ev.dest in machines:
                    checker.stored(ev.dest, machines[ev.dest].state)
        if checker.violations:
            raise AssertionError("; ".join(checker.problems[:3]) or "promise violated")

    sim.invariant(promises, name)
    return checker


def check_sim(sim: Sim, checker: Checker | None = None) -> Report:
    """The report for a simulation: the whole trace, every machine's state replayed.

    With the ``checker`` that :func:`watch` returned, only events it has not seen yet are
    fed. Losses count only if the network is quiescent.
    """
    if checker is None:
        checker = Checker.from_trace(sim.trace, sim)
    else:
        checker.feed(sim.trace[checker.events:])
        for addr, m in sim.net.machines.items():
            checker.stored(addr, m.state)
    report = checker.report(quiescent=nw.quiescent(sim.net))
    if sim in _CENSUS:
        report = replace(report, census=check_census(sim))
    return report


@dataclass(frozen=True)
class SeedRun:
    """One seed of the simulation tier: the sim at the end, and what the checker found."""

    seed: int
    sim: Sim
    report: Report
    fault_steps: int  # steps taken with faults on
    steps: int  # all steps

    @property
    def now(self) -> int:
        return self.sim.net.now


def run_seed(
    build: Callable[[Sim], Any], seed: int, *, hosts: int | Iterable[str] = 3,
    faults: Faults | str | None = ALL_FAULTS, fault_steps: int = 2_000,
    max_steps: int = 200_000, config: Config | None = None, replay: bool = True,
    census: bool = False,
) -> SeedRun:
    """Build, run ``fault_steps`` steps with faults, heal, run to quiescence, check.

    The promises are checked after every step (:func:`watch`), so a violation raises
    :class:`~avm.InvariantViolation` naming the seed and the step; the returned report
    includes losses, judged at quiescence. ``census=True`` also checks conservation of
    linear and relevant values after every step (:func:`watch_census`, P8).
    """
    sim = make_sim(seed, hosts, faults, config)
    checker = watch(sim, replay=replay)
    if census:
        watch_census(sim)
    build(sim)
    faulty = sim.run(fault_steps).steps
    heal(sim)
    run_until_quiescent(sim, max_steps)
    return SeedRun(seed, sim, check_sim(sim, checker), faulty, sim.steps)


# ---------------------------------------------------------------------------------------
# Conservation: the network-wide census of linear and relevant values (P8)
# ---------------------------------------------------------------------------------------

#: Where the census finds values, in the order reports list them.
PLACES = ("states", "inbox", "in transit", "returned", "dead letters", "exits", "timers")


@dataclass(frozen=True)
class Census:
    """The linear and relevant values of a whole network at one moment (P8).

    ``linear`` counts linear items, ``relevant`` distinct relevant values; ``places``
    gives the linear items per place of :data:`PLACES`: machine ``states``, batches in
    an ``inbox`` (pending), batches ``in transit`` between hosts (the sender's outbox,
    early batches held by the receiver and the wire, each channel and number counted
    once, never per transmission), ``returned`` batches (``~returned`` signals, wherever
    they are), ``dead letters``, ``exits`` (nested networks) and ``timers`` (the
    target and content of each pending timer, :mod:`avm.core.timers`). ``items`` and
    ``relevant_items`` are the multisets themselves.

    The unit (:class:`avm.core.conserve.Tally`): a ``Linear`` or ``Relevant`` wrapper is
    one item; a capability whose context is linear or relevant counts as the items of
    its context (the simulator holds every machine's keys), or as one item when nothing
    here can open it; a cryptographically sealed value counts as one item.
    """

    linear: int
    relevant: int
    places: Mapping[str, int]
    items: Mapping[Any, int] = field(repr=False, default_factory=dict)
    relevant_items: frozenset = field(repr=False, default_factory=frozenset)


@dataclass(frozen=True)
class CensusReport:
    """What :class:`CensusWatch` found over a run.

    ``injected``: linear items that entered from outside (client submissions, ``init``
    arguments); ``created``: net linear items made by committed steps (a step may mint
    new ``Linear`` values; sealing several into one sealed value counts as fewer);
    ``nulled``: consumed by ``null``, the one way to destroy one (clearing dead letters
    goes through it too). The operator's acts outside any step: ``exported`` (states of
    machines taken out by ``export_machine``), ``imported`` (states brought in by
    ``import_machine``), ``restored`` (the net change when ``Sim.restore`` put back one
    of the simulation's own snapshots) and ``rebased`` (the net change accepted by
    :meth:`CensusWatch.rebase` after a deliberate edit). So the census now is the census
    at the start plus ``injected + created - nulled + imported - exported + restored +
    rebased``, at every step, or it is a violation. ``returned`` and ``dead_letters``
    count messages given back to senders and recorded as dead letters (from the
    network's stats).
    """

    steps: int
    census: Census
    start: int = 0
    injected: int = 0
    created: int = 0
    nulled: int = 0
    returned: int = 0
    dead_letters: int = 0
    violations: int = 0
    problems: tuple[str, ...] = ()
    exported: int = 0
    imported: int = 0
    restored: int = 0
    rebased: int = 0

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def assert_ok(self) -> CensusReport:
        if not self.ok:
            raise AssertionError(f"conservation violated\n{self}")
        return self

    def __str__(self) -> str:
        c = self.census
        head = "OK" if self.ok else f"{self.violations} VIOLATIONS"
        lines = [
            f"census: {head} over {self.steps} steps: {c.linear} linear items now "
            f"({self.start} at the start, +{self.injected} injected, {self.created:+} by "
            f"steps, -{self.nulled} nulled"
            + (f", -{self.exported} exported" if self.exported else "")
            + (f", +{self.imported} imported" if self.imported else "")
            + (f", {self.restored:+} restored" if self.restored else "")
            + (f", {self.rebased:+} rebased" if self.rebased else "")
            + f"), {c.relevant} distinct relevant values",
            "  where: " + ", ".join(f"{p} {c.places.get(p, 0)}" for p in PLACES),
            f"  messages returned to senders {self.returned}, dead letters {self.dead_letters}",
        ]
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


class _Counting:
    """Tallies of the places of a network, cached by object identity across steps.

    It opens capabilities with every sealing key the network has held since the watch
    began (a test-kit privilege: the simulator holds every key), not only the keys it
    holds now. So a capability counts the same before and after ``rotate_key`` retired
    its key or ``export_machine`` took its machine's keys away: revoking or exporting
    changes what can be *redeemed*, not what *exists*.
    """

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self._tallies: dict[int, tuple[Any, Tally]] = {}
        self._contexts: dict[tuple, Any] = {}
        self._keys: dict[bytes, dict[int, bytes]] = {}  # address -> version -> key bytes
        self._rings: dict[bytes, Keyring] = {}
        self._seen_keys: Any = None  # the last net.keys learned from
        self._missing: set[bytes] = set()  # addresses a capability had no known key for
        self.stale = False  # a key was learned for a missing address: tallies are stale

    def learn(self, keys: Any) -> None:
        """Remember the keys of ``keys`` (address -> version -> key bytes)."""
        if keys is self._seen_keys:
            return
        for addr, versions in (keys._m if type(keys) is Map else keys).items():
            known = self._keys.setdefault(addr, {})
            for v, raw in versions._m.items():
                if v not in known:
                    known[v] = raw
                    self._rings.pop(addr, None)
                    if addr in self._missing:
                        self.stale = True
        self._seen_keys = keys

    def opener(self, cap: Any) -> Any:
        versions = self._keys.get(cap.address)
        if versions is None or versions.get(cap.keyver) is None:
            self._missing.add(cap.address)
            return OPAQUE
        key = (cap.address, cap.keyver, cap.kind, repr(cap.priority), cap.sealed)
        ctx = self._contexts.get(key, _MISS)
        if ctx is not _MISS:
            return ctx
        env = self.sim.env
        ring = self._rings.get(cap.address)
        if ring is None:
            top = max(versions)
            ring = Keyring(cap.address, env.sealing_key(top, versions[top]))
            for v, raw in versions.items():
                if v != top:
                    ring._keys[v] = env.sealing_key(v, raw)
            self._rings[cap.address] = ring
        try:
            ctx = env.unseal(cap, ring)
        except AvmError:
            ctx = OPAQUE
        if len(self._contexts) > 100_000:
            self._contexts.clear()
        self._contexts[key] = ctx
        return ctx

    def tally(self, *values: Any) -> Tally:
        t = Tally(self.opener)
        for v in values:
            t.add(v)
        return t

    def messages(self, msgs: Iterable[Any]) -> Tally:
        """Items of messages as a step received them (``Message``: context, content)."""
        t = Tally(self.opener)
        for m in msgs:
            t.add(m[0])
            t.add(m[1])
        return t

    def batch(self, b: Any) -> Tally:
        return self.tally(b.messages, b.notify)

    def _timer(self, t: Any) -> Tally:
        return self.tally(t.target, t.content)

    def _cached(self, obj: Any, fresh: dict, make: Callable[[Any], Tally]) -> Tally:
        hit = self._tallies.get(id(obj))
        if hit is None or hit[0] is not obj:
            hit = (obj, make(obj))
        fresh[id(obj)] = hit
        return hit[1]

    def snapshot(self, net: Any = None, keep: bool = True) -> dict[tuple, tuple[str, Tally]]:
        """``location -> (place, tally)`` for every location holding linear or relevant
        items of ``net`` (default: the simulation's network now). ``keep=False`` counts
        another network (a restored one) without dropping the cache of the current one."""
        net = self.sim.net if net is None else net
        self.learn(net.keys)
        fresh: dict[int, tuple[Any, Tally]] = {} if keep else self._tallies
        out: dict[tuple, tuple[str, Tally]] = {}

        def put(loc: tuple, place: str, t: Tally) -> None:
            if t:
                out[loc] = (place, t)

        def batch_place(b: Any, default: str) -> str:
            s = b.sender
            return "returned" if type(s) is tuple and s[:2] == ("~", "returned") else default

        # Unordered iteration (the maps' own entries): a census does not depend on order.
        for addr, m in net.machines._m.items():
            put(("state", addr), "states", self._cached(m.state, fresh, self.tally))
        for key, b in net.pending._m.items():
            put(("batch", *key), batch_place(b, "inbox"), self._cached(b, fresh, self.batch))
        received = net.received
        transit: dict[tuple, Any] = {}
        for key, entry in net.outbox._m.items():
            if key[1] > received.get(key[0], 0):
                transit[key] = entry[0]
        for key, b in net.held._m.items():
            if key[1] > received.get(key[0], 0):
                transit.setdefault(key, b)
        for w in net.wire._m.values():
            if w[0] == "batch" and w[4] > received.get(w[3], 0):
                transit.setdefault((w[3], w[4]), w[5])
        for key, b in transit.items():
            put(("batch", *key), batch_place(b, "in transit"), self._cached(b, fresh, self.batch))
        for host, letters in net.dead_letters._m.items():
            put(("dead", host), "dead letters",
                self._cached(letters, fresh, lambda ls: self.tally(*(e["values"] for e in ls))))
        if net.exits:
            put(("exits",), "exits", self._cached(net.exits, fresh, self.tally))
        for tid, t in net.timers._m.items():
            put(("timer", tid), "timers", self._cached(t, fresh, self._timer))
        self._tallies = fresh
        return out

    def fresh(self) -> None:
        """Forget every cached tally (after learning keys that change what they count)."""
        self._tallies = {}
        self.stale = False


_MISS = object()


def _total(snap: Mapping[tuple, tuple[str, Tally]]) -> Tally:
    t = Tally()
    for _place, x in snap.values():
        t.merge(x)
    return t


def _moved(before: Mapping[tuple, tuple[str, Tally]],
           after: Mapping[tuple, tuple[str, Tally]]) -> Tally:
    """How the items changed from ``before`` to ``after`` (a signed multiset). Places
    whose tally is the same object in both (unchanged) cost a lookup."""
    t = Tally()
    for loc, (_p, was) in before.items():
        now = after.get(loc)
        if now is None or now[1] is not was:
            t.merge(was, -1)
    for loc, (_p, got) in after.items():
        old = before.get(loc)
        if old is None or old[1] is not got:
            t.merge(got)
    return t


_NONE = Tally()


def _census_of(snap: Mapping[tuple, tuple[str, Tally]]) -> Census:
    places = dict.fromkeys(PLACES, 0)
    for place, t in snap.values():
        places[place] += t.n_linear
    total = _total(snap)
    return Census(total.n_linear, len(total.relevant), places, dict(total.linear),
                  frozenset(total.relevant))


def census(sim: Sim) -> Census:
    """Count the linear and relevant values of ``sim``'s whole network now."""
    return _census_of(_Counting(sim).snapshot())


class CensusWatch:
    """Checks after every step of a simulation that linear and relevant values are conserved.

    Attach it with :func:`watch_census` before the run. After every step it takes the
    census (:class:`Census`) and compares it with the previous one: the linear items
    (as a multiset, so a value that vanished and another that was copied do not cancel)
    must be exactly the previous ones, plus what entered from outside (client batches,
    ``init`` arguments), plus what the one committed step of this network step made
    (its new state and outputs, less its old state and the messages it received),
    minus what ``null`` consumed. No relevant value may disappear, except into the one
    committed step's inputs or ``null``. A violation raises, naming the items and where
    they were.

    The operator's acts outside any step are followed by themselves, from the trace
    (``events.Operator``): ``export_machine`` takes its machine's state out of the
    network (counted as ``exported``), ``import_machine`` brings one in (``imported``),
    ``restore`` of one of the simulation's own snapshots (``Sim.snapshot()``) is
    accepted as it is (``restored``: the net change), redelivering and clearing dead
    letters move values like any batch (clearing sends them to ``null``). A capability
    counts the same whatever keys the network holds now: the census opens it with every
    key the network has held since the watch began, so ``rotate_key`` without
    ``keep_old`` changes no count (the revoked capabilities are still there, as items
    nothing can redeem, until their batch fails and they come back, or they are sent to
    ``null``), and neither does exporting the machine a capability is for.

    What it does not accept by itself is a deliberate edit: ``Sim.restore`` of a network
    value the test changed (``replace_fields(sim.net, ...)``). A change of linear items
    that way is a violation at the next step, unless :meth:`rebase` accepts it first.
    """

    def __init__(self, sim: Sim) -> None:
        if not sim.record:
            raise UsageError("the census watch needs the trace: make the Sim with record=True")
        self.sim = sim
        self._counting = _Counting(sim)
        self.steps = 0
        self.injected = self.created = self.nulled = 0
        self.exported = self.imported = self.restored = self.rebased = 0
        self.violations = 0
        self._problems: list[str] = []
        self.start = 0
        self.rebase()
        self.start, self.rebased = self._now_total.n_linear, 0

    def rebase(self) -> None:
        """Take the network as it is now as the reference: accept a deliberate edit.

        Only for changes the test made behind the network's back (``Sim.restore`` of an
        edited network value); the operator's acts (export, import, key rotation, a
        snapshot restored, dead letters redelivered or cleared) are followed by
        themselves. What the edit changed is reported as ``rebased``.
        """
        self._seen = len(self.sim.trace)
        self._net = self.sim.net
        self._counting.fresh()
        self._snap = self._counting.snapshot()
        self._now_total = _total(self._snap)
        self.rebased += self._now_total.n_linear - self._accounted()

    def _accounted(self) -> int:
        """The linear items the counters say there are now."""
        return (self.start + self.injected + self.created - self.nulled + self.imported
                - self.exported + self.restored + self.rebased)

    @property
    def census(self) -> Census:
        return _census_of(self._snap)

    def check(self, sim: Sim | None = None) -> None:
        """Compare the network now with the last census; raise AssertionError on a violation."""
        sim = sim or self.sim
        new = sim.trace[self._seen:]
        self._seen = len(sim.trace)
        counting = self._counting
        prev, total = self._snap, self._now_total
        acts = [ev for ev in new if type(ev) is events.Operator]
        for ev in acts:  # keys that come or go with a machine's image are known keys
            if ev.act == "import" or ev.act == "export":
                counting.learn({ev.subject: ev.values.keys})
        snap = counting.snapshot()
        if counting.stale:  # keys learned for capabilities counted unopened: count again
            counting.fresh()
            prev = counting.snapshot(self._net, keep=False)
            total = _total(prev)
            snap = counting.snapshot()
        self._net = sim.net
        if acts:
            prev = dict(prev)  # the operator's acts change the reference, not the census
        expect = Tally()  # what may change: in from outside, made by a step, into null
        exempt: set = set()
        edited = False
        problems: list[str] = []
        outputs: dict[Any, list] = {}
        for ev in new:
            if type(ev) is events.Created and type(ev.chan[0]) is bytes and ev.batch is not None:
                outputs.setdefault(ev.chan[0], []).append(ev.batch)
        for ev in new:  # in order: acts come before the step that ends the interval
            t = type(ev)
            if t is events.Created:
                origin = ev.chan[0]
                if type(origin) is tuple and origin[0] in ("client", "host") and ev.batch is not None:
                    came = counting.batch(ev.batch)
                    expect.merge(came)
                    self.injected += came.n_linear
            elif t is events.Applied and ev.ok:
                dest = ev.dest
                if type(dest) is bytes and (dest in sim.net.machines or ("state", dest) in prev):
                    before = prev.get(("state", dest), ("", _NONE))[1]
                    after = snap.get(("state", dest), ("", _NONE))[1]
                    made = Tally().merge(after).merge(before, -1)
                    for b in outputs.get(dest, ()):
                        made.merge(counting.batch(b))
                    received = counting.messages(ev.messages)
                    made.merge(received, -1)
                    expect.merge(made)
                    self.created += made.n_linear
                    exempt.update(before.relevant)
                    exempt.update(received.relevant)
                elif dest == ("~", "null") and ev.batch is not None:
                    gone = counting.tally(ev.batch.messages)
                    expect.merge(gone, -1)
                    self.nulled += gone.n_linear
                    exempt.update(gone.relevant)
            elif t is events.Operator:
                if ev.act == "restore" and ev.detail != "snapshot":
                    edited = True
                else:
                    prev, total, expect = self._operator(ev, prev, total, expect, problems)
        moved = _moved(prev, snap)  # what changed where, as a signed multiset
        self.steps += 1
        total.merge(moved)
        self._snap, self._now_total = snap, total
        diff = _as_tally(moved.linear).merge(_as_tally(expect.linear), -1)
        for item, n in sorted(diff.linear.items(), key=lambda kv: repr(kv[0])):
            was = _where(prev, item)
            now = _where(snap, item)
            what = "copied" if n > 0 else "vanished"
            problems.append(f"{_short(item)} {what} ({n:+}): was in {was or 'nowhere'}, "
                            f"now in {now or 'nowhere'}")
        for item, n in moved.relevant.items():
            if n < 0 and item not in total.relevant and item not in exempt:
                problems.append(f"relevant {_short(item)} vanished: was in "
                                f"{_where(prev, item, relevant=True)}")
        if problems:
            if edited:
                problems.append("the network was replaced by Sim.restore with a value this "
                                "simulation did not snapshot; after a deliberate edit, call "
                                "rebase() on the census watch")
            self.violations += len(problems)
            for p in problems:
                if len(self._problems) < PROBLEMS_KEPT_MAX:
                    self._problems.append(f"step {sim.steps}: {p}")
            raise AssertionError("linear or relevant values not conserved: " + "; ".join(problems[:3]))

    def _operator(self, ev: Any, prev: dict, total: Tally, expect: Tally,
                  problems: list[str]) -> tuple[dict, Tally, Tally]:
        """Follow one operator act: it changes the reference the next step is judged
        against (``prev``, its ``total``), and the counters; never the census itself."""
        act = ev.act
        counting = self._counting
        if act == "export":
            left = prev.pop(("state", ev.subject), ("", _NONE))[1]
            total.merge(left, -1)
            self.exported += left.n_linear
            took = counting.tally(ev.values.state)
            if took.linear != left.linear or took.relevant != left.relevant:
                problems.append(f"export of {_plain_label(ev.subject)} took other values than "
                                "its state held")
        elif act == "import":
            came = counting.tally(ev.values.state)
            if came:
                prev[("state", ev.subject)] = ("states", came)
            total.merge(came)
            self.imported += came.n_linear
        elif act == "restore":  # one of the simulation's own snapshots
            before, after = ev.values
            was = _total(counting.snapshot(before, keep=False))
            prev = counting.snapshot(after, keep=False)
            total = _total(prev)
            self.restored += total.n_linear - was.n_linear
            expect = Tally()  # what came before the restore happened to another network
        # rotate: no count changes (every key is remembered); redeliver and clear move
        # values in batches, which the census follows like any other.
        return prev, total, expect

    def report(self) -> CensusReport:
        stats = self.sim.net.stats
        return CensusReport(self.steps, self.census, self.start, self.injected, self.created,
                            self.nulled, stats.get("returned.messages", 0),
                            stats.get("dead-letters.messages", 0), self.violations,
                            tuple(self._problems), self.exported, self.imported,
                            self.restored, self.rebased)


def _as_tally(d: Mapping[Any, int]) -> Tally:
    t = Tally()
    t.linear.update(d)
    return t


def _where(snap: Mapping[tuple, tuple[str, Tally]], item: Any, relevant: bool = False) -> str:
    found = []
    for loc, (place, t) in snap.items():
        n = (t.relevant if relevant else t.linear).get(item)
        if n:
            found.append(f"{place} {_loc_name(loc)}" + (f" x{n}" if n > 1 else ""))
    return ", ".join(found[:4])


def _loc_name(loc: tuple) -> str:
    if loc[0] == "state":
        return _plain_label(loc[1])
    if loc[0] == "batch":
        (src, dst), seq = loc[1], loc[2]
        return f"{_plain_label(src)}->{_plain_label(dst)} #{seq}"
    return str(loc[-1])


_CENSUS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def watch_census(sim: Sim, name: str = "avm.testing census") -> CensusWatch:
    """Check conservation (P8) after every step of ``sim``; return the watch.

    A violation raises :class:`~avm.InvariantViolation` with the seed and the step. Attach
    it before the run (after building is fine: the census then starts from there).
    """
    w = _CENSUS.get(sim)
    if w is not None:
        return w
    w = CensusWatch(sim)
    _CENSUS[sim] = w
    sim.invariant(w.check, name)
    return w


def check_census(sim: Sim) -> CensusReport:
    """The conservation report of a run watched by :func:`watch_census`."""
    w = _CENSUS.get(sim)
    if w is None:
        raise UsageError("check_census needs watch_census(sim) attached before the run")
    if len(sim.trace) > w._seen:
        w.check(sim)
    return w.report()
