"""The receiver's inbox: the one owner of ``pending``, ``head`` and ``live``, and the
ordered indexes that make a step O(log n) in queued work.

    "Among ready batches the scheduler prefers the earliest timestamp, weighted by
    priority, and no ready batch waits forever (aging). The order is deterministic given
    the same seed and inputs." (DESIGN section 4, rule 6)

The invariant every function here keeps: a channel is in ``live`` exactly when the batch
numbered ``head[chan]`` is in ``pending``; that batch is the channel's *head*, the only
one of the channel the scheduler may run (rule 4: in order). Batches get in through
:func:`accepted` (local enqueue, delivery from the wire) and out through :func:`popped`;
:func:`replaced` swaps the head for a changed copy (an interrupted batch).

The network is a value, so the indexes cannot live in it without becoming part of what
is compared and encoded. They live in an :class:`Index` beside it (in the ``Env``), tied
to one network object by identity: a step given exactly the network the previous step
returned updates the index from a *journal* of what that step touched (channels whose
head may have changed, transmissions put on the wire, outbox entries set); given any
other network (one edited between steps, a restored snapshot, a fork) it rebuilds from
scratch. Either way the choice is exactly what a scan of every live channel picks:
:func:`pick_scan` and :func:`next_timed_scan` are those scans, kept as the reference
(tests/test_inbox.py compares them on generated runs).

Entries are checked when they reach the top of a heap and dropped if the network no
longer holds them (lazy deletion), so the heaps never need searching. Their sort keys
cannot go stale inside a step: a key depends on the batch, its receiver's keys and
whether the receiver exists or is stopped, and those change only outside a step (an
operator's act), or in a step that says so (:func:`note_rebuild`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Any

from .schedule import score
from .values import Map, check_value, replace_fields

if TYPE_CHECKING:
    from .netvalue import Batch, Env, Network

__all__ = [
    "accepted",
    "popped",
    "replaced",
    "pick_scan",
    "next_timed_scan",
    "runnable",
    "Index",
    "Journal",
    "note_wire",
    "note_outbox",
    "note_rebuild",
    "note_keys_added",
]

with_ = replace_fields


class Journal:
    """What one step touched, for the index: filled while the step runs."""

    __slots__ = ("chans", "wire", "outbox", "rebuild", "keys_added")

    def __init__(self) -> None:
        self.chans: list = []  # channels whose head may have changed
        self.wire: list = []  # wire keys added
        self.outbox: list = []  # outbox keys set
        self.rebuild = False  # something a key depends on changed: rebuild the index
        self.keys_added: list = []  # machines whose keys came in (none had any before)


#: The journal of the step running in this context (None outside a step). A ContextVar,
#: so that threads stepping different networks never write into each other's journals.
_JOURNAL: ContextVar[Journal | None] = ContextVar("avm_inbox_journal", default=None)


def note_wire(key: tuple) -> None:
    """A transmission was put on the wire under ``key`` (delivery.transmit)."""
    j = _JOURNAL.get()
    if j is not None:
        j.wire.append(key)


def note_outbox(key: tuple) -> None:
    """The outbox entry ``key`` was set (a new batch, or a new retry time)."""
    j = _JOURNAL.get()
    if j is not None:
        j.outbox.append(key)


def note_keys_added(address: bytes) -> None:
    """Keys for a machine that had none came into the network (spawn; a host loading a
    machine it had evicted). No entry of the index depends on them unless the act also
    journals its channel, so the index need not be rebuilt for them."""
    j = _JOURNAL.get()
    if j is not None:
        j.keys_added.append(address)


def note_rebuild() -> None:
    """Something the sort keys depend on (a receiver's keys or status) changed in a step."""
    j = _JOURNAL.get()
    if j is not None:
        j.rebuild = True


# ---------------------------------------------------------------------------------------
# The inbox maps: in and out
# ---------------------------------------------------------------------------------------


def accepted(net: Network, chan: tuple, b: Batch, n: int | None = None) -> dict[str, Map]:
    """The inbox maps with ``b`` (the next batch of ``chan`` in order) put in.

    ``n``: the batch's substructural count if the caller knows it (else it is counted);
    the pending map keeps it in its substructural index.
    """
    head = net.head
    live = net.live
    if chan not in head:
        head = head._set_plain(chan, b.seq)
    if chan not in live._m:
        live = live._set_plain(chan, True)
        j = _JOURNAL.get()
        if j is not None:
            j.chans.append(chan)
    if n is None:
        n = check_value(b)
    return {"pending": net.pending._set_counted((chan, b.seq), b, n), "head": head, "live": live}


def popped(net: Network, chan: tuple, seq: int) -> dict[str, Map]:
    """The inbox maps after taking batch ``seq`` off the head of ``chan``."""
    pending = net.pending.delete((chan, seq))
    nxt = seq + 1
    live = net.live if (chan, nxt) in pending else net.live.delete(chan)
    j = _JOURNAL.get()
    if j is not None:
        j.chans.append(chan)
    return {"pending": pending, "head": net.head._set_plain(chan, nxt), "live": live}


def replaced(net: Network, chan: tuple, b: Batch) -> Map:
    """The pending map with the head batch of ``chan`` replaced by ``b`` (same number)."""
    j = _JOURNAL.get()
    if j is not None:
        j.chans.append(chan)
    return net.pending.set((chan, b.seq), b)


# ---------------------------------------------------------------------------------------
# Which batch runs next, and which timed event is due: the reference scans
# ---------------------------------------------------------------------------------------

#: ``authenticate(net, env, chan, batch) -> auth``, where ``auth.priority`` is the
#: authenticated priority and ``auth.error`` is not None for a batch that does not unseal
#: (network._authenticate).
Authenticate = Callable[["Network", "Env", tuple, "Batch"], Any]


def runnable(net: Network, b: Batch) -> bool:
    """Can the receiver of ``b`` run now (not suspended, its host up)?"""
    dest = b.dest
    if type(dest) is bytes:
        m = net.machines._m.get(dest)
        if m is None:
            return True  # runs only to be dropped as unknown
        if m.status == "suspended":
            return False
        return bool(net.hosts._m[m.host].up)
    sender = b.sender
    if type(sender) is bytes:
        sm = net.machines._m.get(sender)
        host = sm.host if sm is not None else next(iter(sorted(net.hosts)))
    elif sender[0] == "host":
        host = sender[1]
    elif sender[0] == "~":
        host = sender[2]
    else:
        host = next(iter(sorted(net.hosts)))
    return bool(net.hosts._m[host].up)


def pick_scan(net: Network, env: Env, authenticate: Authenticate) -> tuple | None:
    """The batch to run next, ``(chan, batch, auth)``, by scanning every live channel.

    Rule 6 scores each ready head batch by its timestamp and its *authenticated*
    priority; a head batch whose capabilities do not unseal is picked before anything
    else (the lowest channel first, for determinism), to be failed as ``unseal`` at once:
    it claims nothing, so it neither waits its turn nor is ranked by the priority it
    claims. Ties are broken by ``repr(chan)``, which is the same in every process (map
    iteration order is not: hashes of text are randomised).

    The reference for :meth:`Index.pick`; O(live channels).
    """
    best = None
    best_key = None
    bad = None
    bad_key = None
    pending = net.pending._m
    head = net.head._m
    for chan in net.live._m:
        b = pending[(chan, head[chan])]
        if not runnable(net, b):
            continue
        auth = authenticate(net, env, chan, b)
        if auth.error is not None:
            k = repr(chan)
            if bad_key is None or k < bad_key:
                bad, bad_key = (chan, b, auth), k
            continue
        key = (score(b.ts, auth.priority), repr(chan))
        if best_key is None or key < best_key:
            best, best_key = (chan, b, auth), key
    return bad if bad is not None else best


def next_timed_scan(net: Network) -> tuple | None:
    """The earliest timed event, with a total order on ties: ``(time, key, what)``.

    ``what`` is ``"wire"`` (deliver the transmission at wire ``key``), ``"restart"``
    (host ``key`` comes back up) or ``"retry"`` (retransmit outbox entry ``key``). At one
    time, transmissions come before restarts before retries; among transmissions the
    earlier sent, among restarts and retries the smaller name or ``repr`` of the key.
    The reference for :meth:`Index.next_timed`; O(wire + outbox).
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


# ---------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------

_NO_SCORE = (0.0, 0, 0)


class Index:
    """Ordered views of one network's inbox, wire and outbox (a cache: never a result).

    ``ready`` is a heap of ``(rank, score, repr(chan), n, chan, seq, batch, auth)`` with
    rank 0 for a head batch that does not unseal (picked first, by channel) and 1 for the
    others (by score, then channel); ``wire`` a heap of ``(due, n, key)``; ``outbox`` one
    of ``(retry_at, repr(key), key)``. An entry is current while the network holds it as
    it was when pushed; the others are dropped when they surface.
    """

    __slots__ = ("net", "ready", "wire", "outbox", "_n")

    def __init__(self) -> None:
        self.net: Any = None  # the network the heaps describe (by identity)
        self.ready: list = []
        self.wire: list = []
        self.outbox: list = []
        self._n = 0

    # -- keeping up with the network --------------------------------------------------
    def sync(self, net: Network, env: Env, authenticate: Authenticate) -> None:
        """Make the index describe ``net``: nothing to do if it already does."""
        if self.net is not net:
            self.rebuild(net, env, authenticate)

    def rebuild(self, net: Network, env: Env, authenticate: Authenticate) -> None:
        self.net = None
        self._n = 0
        pending = net.pending._m
        head = net.head._m
        ready = []
        for chan in net.live._m:
            seq = head[chan]
            ready.append(self._entry(net, env, authenticate, chan, seq, pending[(chan, seq)]))
        heapify(ready)
        self.ready = ready
        self.wire = [(k[0], k[1], k) for k in net.wire._m]
        heapify(self.wire)
        self.outbox = [(e[1], repr(k), k) for k, e in net.outbox._m.items()]
        heapify(self.outbox)
        self.net = net

    def _entry(self, net: Network, env: Env, authenticate: Authenticate, chan: tuple,
               seq: int, b: Batch) -> tuple:
        auth = authenticate(net, env, chan, b)
        self._n += 1
        if auth.error is not None:
            return (0, _NO_SCORE, repr(chan), self._n, chan, seq, b, auth)
        return (1, score(b.ts, auth.priority), repr(chan), self._n, chan, seq, b, auth)

    def advance(self, before: Network, after: Network, env: Env, authenticate: Authenticate,
                journal: Journal) -> None:
        """``after`` is what a step made of ``before`` (which the index described)."""
        if (self.net is not before or journal.rebuild
                or after.keys is not before.keys and not _only_added(before, after, journal)
                or len(self.ready) > 2 * len(after.live) + 1024
                or len(self.outbox) > 2 * len(after.outbox) + 1024):
            self.rebuild(after, env, authenticate)
            return
        live = after.live._m
        head = after.head._m
        pending = after.pending._m
        seen: set = set()
        for chan in journal.chans:
            if chan in seen or chan not in live:
                continue
            seen.add(chan)
            seq = head[chan]
            heappush(self.ready, self._entry(after, env, authenticate, chan, seq,
                                             pending[(chan, seq)]))
        for k in journal.wire:
            heappush(self.wire, (k[0], k[1], k))
        outbox = after.outbox._m
        for k in journal.outbox:
            e = outbox.get(k)
            if e is not None:
                heappush(self.outbox, (e[1], repr(k), k))
        self.net = after

    # -- reading ----------------------------------------------------------------------
    def pick(self, net: Network) -> tuple | None:
        """What :func:`pick_scan` returns for the network the index describes."""
        heap = self.ready
        live = net.live._m
        head = net.head._m
        pending = net.pending._m
        skipped = []
        found = None
        try:
            while heap:
                e = heap[0]
                chan, seq, b = e[4], e[5], e[6]
                if chan not in live or head[chan] != seq or pending.get((chan, seq)) is not b:
                    heappop(heap)  # taken off, or replaced: no longer current
                    continue
                if not runnable(net, e[6]):
                    skipped.append(heappop(heap))  # its receiver cannot run now: keep it
                    continue
                found = (chan, b, e[7])
                break
        finally:
            for e in skipped:
                heappush(heap, e)
        return found

    def next_timed(self, net: Network) -> tuple | None:
        """What :func:`next_timed_scan` returns for the network the index describes."""
        best: tuple | None = None
        best_key: tuple | None = None
        wire = self.wire
        wm = net.wire._m
        while wire and wire[0][2] not in wm:
            heappop(wire)
        if wire:
            due, n, k = wire[0]
            best, best_key = (due, k, "wire"), (due, 0, n)
        for h in net.hosts._m.values():
            if not h.up:
                key = (h.down_until, 1, h.name)
                if best_key is None or key < best_key:
                    best, best_key = (h.down_until, h.name, "restart"), key
        outbox = self.outbox
        om = net.outbox._m
        while outbox:
            retry_at, r, k = outbox[0]
            e = om.get(k)
            if e is None or e[1] != retry_at:
                heappop(outbox)
                continue
            key = (retry_at, 2, r)
            if best_key is None or key < best_key:
                best = (retry_at, k, "retry")
            break
        return best


def _only_added(before: Network, after: Network, journal: Journal) -> bool:
    """Did the keys change only by the additions the journal names?"""
    added = set(journal.keys_added)
    if not added:
        return False
    bk, ak = before.keys._m, after.keys._m
    if len(ak) != len(bk) + len(added):
        return False
    return all(a in ak and a not in bk for a in added)


def step_journal() -> tuple[Journal, Any]:
    """Start the journal of a step: ``(journal, token)``; end it with :func:`end_journal`."""
    j = Journal()
    return j, _JOURNAL.set(j)


def end_journal(token: Any) -> None:
    _JOURNAL.reset(token)
