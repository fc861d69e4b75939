"""Delivery between hosts, and the faults it survives (DESIGN section 9, in the model).

Between two hosts a batch travels as a *transmission* that the fault model may lose,
delay, duplicate, reorder or corrupt; hosts may crash and restart and links may be
partitioned. On top of that runs the protocol real hosts run: per-channel sequence
numbers, a durable outbox retried with back-off until acknowledged, a receiver that
accepts each sequence number once and in order and acknowledges cumulatively. So faults
delay batches but never lose, duplicate or reorder them (promises P1-P3).

Values cross as a host delivers them (:func:`avm.core.conserve.transit`), and linear and
relevant values never vanish (P8): what a batch that will not be applied carries goes
back to its sender as a ``~returned`` weak signal, or into the dead letters of the host
that holds it (:func:`give_back`).

Every function here is pure: network in, network and events out.
"""

from __future__ import annotations

from typing import Any

from .caps import commons_cap
from .conserve import no_drop, transit
from .errors import UnknownName, UsageError
from .inbox import next_timed_scan, note_outbox, note_wire
from .netvalue import (
    Batch,
    Env,
    HostRecord,
    Network,
    accept,
    bump,
    enqueue_local,
    events,
    host_of_dest,
    host_of_sender,
    mint,
    new_batch,
    stamp,
    with_,
)
from .schedule import hlc_recv, rng_float, rng_int
from .values import Map

__all__ = [
    "DUPLICATE",
    "NEXT",
    "EARLY",
    "arrival",
    "acked_range",
    "backoff_ticks",
    "add_peer_host",
    "add_remote",
    "receive_batch",
    "receive_ack",
    "send_batch",
    "transmit",
    "next_timed",
    "maybe_fault",
    "restart_host",
    "retry",
    "deliver",
    "notify",
    "give_back",
    "RETURNED",
    "UNREACHABLE",
    "OPERATOR",
    "redeliver_dead_letter",
    "clear_dead_letters",
]

#: The weak signal that brings linear and relevant values back to their sender (D7):
#: ``(RETURNED, Map({"reason": str, "rule": str, "values": ((capability, content), ...)}))``.
RETURNED = "~returned"
#: Why a batch whose retry budget was spent, and that the receiver then skipped, failed.
UNREACHABLE = "unreachable: retry budget spent; not applied"


# ---------------------------------------------------------------------------------------
# The per-channel rules, shared with the hosts' wire protocol (avm.wire.session)
# ---------------------------------------------------------------------------------------

#: What :func:`arrival` says about a batch: already had, the one expected, or early.
DUPLICATE, NEXT, EARLY = "duplicate", "next", "early"


def arrival(got: int, seq: int, held: bool) -> str:
    """How a receiver that has ``got`` batches of a channel in order treats number ``seq``.

    ``held``: a batch with that number already arrived early and waits. A number at or
    below ``got``, or one already held, is a :data:`DUPLICATE` (it applies nothing); the
    number after ``got`` is :data:`NEXT` (accept it, then the held ones that follow); a
    later one is :data:`EARLY` (hold it, the gap will be filled by retransmission).
    """
    if seq <= got or held:
        return DUPLICATE
    return NEXT if seq == got + 1 else EARLY


def acked_range(acked: int, upto: int) -> range:
    """The numbers a cumulative acknowledgement of ``upto`` settles after ``acked``."""
    return range(acked + 1, upto + 1)


def backoff_ticks(base: int, attempts: int, cap: int) -> int:
    """The wait before retry number ``attempts + 1``: doubling from ``base``, at most ``cap``."""
    return min(base << min(attempts, 16), cap)


def send_batch(net: Network, sender: Any, dest: Any, msgs: tuple, src_host: str,
                priority: float, notify: Any = None, count: int | None = None,
                ) -> tuple[Network, list]:
    """Commit a batch from a machine (or the runtime) to ``dest``: local or on the wire.

    The messages cross as a host delivers them (item 11): a capability or sealed value
    loses the plaintext it kept in memory, and a ``Self`` arrives unbound unless ``dest``
    is its own machine. ``count``: the messages' substructural count, if the caller
    checked them (run_batch did, for a machine's outputs); else they are counted here.
    """
    msgs = transit(net.keys, dest, msgs)
    dst_host = host_of_dest(net, dest) if type(dest) is bytes else src_host
    chan = (sender, dest)
    got = net.received.get(chan)
    # Local, unless batches of this channel are still on the wire (a machine moved here, or
    # was exported): a local batch must not overtake them (rule 4).
    settled = got is None or got >= net.next_seq.get(chan, 0)
    if type(dest) is not bytes or settled and (dst_host == src_host or (
            dest not in net.machines and dest not in net.remote)):
        return enqueue_local(net, sender, dest, msgs, src_host, priority, notify, count)
    seq = net.next_seq.get(chan, 0) + 1
    net, ts = stamp(net, src_host)
    b = new_batch(sender, dest, seq, ts, priority, msgs, notify)
    # First time on the wire: the earlier batches (local, before a move) are in the inbox.
    received = net.received if got is not None else net.received._set_plain(chan, seq - 1)
    first = net.config.retry_ticks
    if _is_peer(net.hosts[dst_host]):
        first = net.config.retry_ticks_max * PEER_RETRY_FACTOR  # see retry: a safety net
    net = with_(
        net, next_seq=net.next_seq._set_plain(chan, seq), received=received,
        outbox=_outbox_set(net, (chan, seq), (b, net.now + first, 1)))
    evs: list = [events.Created(chan, seq, dest, len(msgs), ts, priority, net.now, b)]
    net, more = transmit(net, "batch", src_host, dst_host, chan, seq, b)
    return net, evs + more


def transmit(net: Network, kind: str, src: str, dst: str, chan: tuple, seq: int,
              payload: Any) -> tuple[Network, list]:
    """Put a transmission on the wire, through the fault model.

    A transmission to a peer host (:func:`add_peer_host`) is handed to the host's shell
    at once, as the ``lost-host-down`` event its delivery would make: the real wire
    carries it (with its own faults), so the model's wire would only hold it for a step
    that finds the host down. The stats count it as sent and lost to a down host, as
    that delivery would.
    """
    f = net.config.faults
    rng = net.rng
    at = net.now
    evs: list = []
    cut = net.cuts.get(tuple(sorted((src, dst))))
    if cut is not None and cut > at:
        return with_(net, stats=bump(net.stats, "wire.cut")), [
            events.Wire("cut", kind, src, dst, chan, seq, at)]
    h = net.hosts.get(dst)
    if h is not None and _is_peer(h):
        return with_(net, stats=bump(bump(net.stats, "wire.sent"), "wire.to-down-host")), [
            events.Wire("lost-host-down", kind, src, dst, chan, seq, at)]
    if f.loss:
        x, rng = rng_float(rng)
        if x < f.loss:
            return with_(net, rng=rng, stats=bump(net.stats, "wire.lost")), [
                events.Wire("lost", kind, src, dst, chan, seq, at)]
    copies = 1
    if f.duplicate:
        x, rng = rng_float(rng)
        if x < f.duplicate:
            copies = 2
            evs.append(events.Wire("duplicated", kind, src, dst, chan, seq, at))
            net = with_(net, stats=bump(net.stats, "wire.duplicated"))
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
        note_wire((at + delay, n))
        stats = bump(stats, "wire.sent")
    return with_(net, rng=rng, wire=wire, wire_n=n, stats=stats), evs


def _outbox_set(net: Network, key: tuple, entry: tuple) -> Map:
    """The outbox with ``entry`` = (batch, retry_at, attempts) under ``key``, noted for the
    step's index (:mod:`avm.core.inbox`)."""
    note_outbox(key)
    return net.outbox.set(key, entry)


def next_timed(net: Network) -> tuple | None:
    """The earliest timed event, with a total order on ties (``inbox.next_timed_scan``).

    Map iteration order follows key hashes, which Python randomises per process for
    text and bytes; every choice here therefore compares explicit keys, so that a seed
    replays identically in a fresh process (the CLI's reproduction promise). A step
    reads the same answer from its index (``inbox.Index.next_timed``) in O(log n).
    """
    return next_timed_scan(net)


def maybe_fault(net: Network) -> tuple[Network, list]:
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
                net = with_(net, rng=rng, stats=bump(net.stats, "fault.crash"),
                              hosts=net.hosts._set_plain(h.name, with_(h, up=False, down_until=until)))
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
            net = with_(net, rng=rng, cuts=net.cuts._set_plain(pair, until),
                          stats=bump(net.stats, "fault.partition"))
            return net, [events.Cut(pair, until, net.now)]
    return with_(net, rng=rng), []


def restart_host(net: Network, env: Env, name: str) -> tuple[Network, list]:
    h = net.hosts[name]
    net = with_(net, hosts=net.hosts._set_plain(name, with_(h, up=True)),
                  stats=bump(net.stats, "host.restart"))
    evs: list = [events.Host(name, True, net.now)]
    if net.config.restart_signal:
        for addr in sorted(a for a, m in net.machines.items() if m.host == name):
            m = net.machines[addr]
            if m.status == "stopped":
                continue
            sig = mint(net, env, addr, m.signal)
            net, more = enqueue_local(
                net, ("host", name), addr, ((sig, ("restart", Map({"host": name}))),), name, 1.0)
            evs.extend(more)
    return net, evs


def retry(net: Network, key: tuple) -> tuple[Network, list]:
    b, _, attempts = net.outbox[key]
    chan, seq = key
    src = host_of_sender(net, b.sender)
    cfg = net.config
    if not net.hosts[src].up:
        # A crashed sender retries after it restarts.
        h = net.hosts[src]
        return with_(net, outbox=_outbox_set(net, key, (b, h.down_until + 1, attempts))), []
    if attempts >= cfg.retry_max and not b.abandoned:
        # Give up, but honestly: the receiver may have applied the batch and only the
        # acknowledgements were lost, so the outcome is indefinite. The outbox turns the
        # batch into a tombstone under the same number, retried at the slowest pace until
        # acknowledged: a receiver that never got the batch skips the number instead of
        # waiting for it forever, one that did refuses the tombstone as a duplicate.
        # The tombstone on the wire is empty, but the sender keeps the batch's contents
        # and its feedback request until the outcome is known (see _settle): if the
        # receiver skips the number, the values go back and feedback says "failed"; if
        # it had the batch, the batch itself reports. Nothing is copied, nothing lost.
        tomb = with_(b, abandoned=True)
        net = with_(net, outbox=_outbox_set(net, key, (tomb, net.now + cfg.retry_ticks_max, attempts)),
                    stats=bump(net.stats, "drop.unreachable"))
        why = "unreachable: retry budget spent; it may have been applied"
        return net, [events.Dropped(chan, seq, b.dest, why, net.now, definite=False)]
    if b.abandoned:
        net = with_(net, outbox=_outbox_set(net, key, (b, net.now + cfg.retry_ticks_max, attempts)))
        return transmit(net, "batch", src, host_of_dest(net, b.dest), chan, seq, _wire_tomb(b))
    dst = host_of_dest(net, b.dest)
    if _is_peer(net.hosts[dst]):
        # A peer host is reached over TCP, which delivers in order or breaks the link;
        # the host's shell retransmits on the next link and on a gap request, and a
        # closed link wakes it. The timer is only a safety net that wakes the shell,
        # PEER_RETRY_FACTOR times the longest delay, so a batch queued or acked within
        # it never rewrites its outbox entry; it counts as that many attempts, so the
        # budget of retry_max attempts lasts as long as for a lossy link.
        backoff = cfg.retry_ticks_max * PEER_RETRY_FACTOR
        spent = PEER_RETRY_FACTOR
    else:
        backoff = backoff_ticks(cfg.retry_ticks, attempts, cfg.retry_ticks_max)
        spent = 1
    net = with_(net, outbox=_outbox_set(net, key, (b, net.now + backoff, attempts + spent)),
                  stats=bump(net.stats, "wire.retry"))
    return transmit(net, "batch", src, dst, chan, seq, b)


def deliver(net: Network, key: tuple) -> tuple[Network, list]:
    kind, src, dst, chan, seq, payload, corrupt = net.wire[key]
    net = with_(net, wire=net.wire.delete(key))
    at = net.now
    if not net.hosts[dst].up:
        return with_(net, stats=bump(net.stats, "wire.to-down-host")), [
            events.Wire("lost-host-down", kind, src, dst, chan, seq, at)]
    if corrupt:
        # Authenticated transport: a corrupted frame fails its check and is discarded.
        return with_(net, stats=bump(net.stats, "wire.corrupt-refused")), [
            events.Wire("corrupt-refused", kind, src, dst, chan, seq, at)]
    if kind == "ack":
        net = receive_ack(net, chan, payload)
        return net, [events.Wire("acked", kind, src, dst, chan, payload, at)]
    net, evs, got = receive_batch(net, src, dst, chan, seq, payload)
    # Acknowledge cumulatively what is now durable in the inbox.
    net, more = transmit(net, "ack", dst, src, chan, got, got)
    return net, evs + more


def receive_ack(net: Network, chan: tuple, upto: int) -> Network:
    """The receiver acknowledged ``chan`` up to ``upto``: those batches leave the outbox."""
    acked = net.acked.get(chan, 0)
    outbox = net.outbox
    for s in acked_range(acked, upto):
        if (chan, s) in outbox:
            outbox = outbox.delete((chan, s))
    return with_(net, outbox=outbox, acked=net.acked._set_plain(chan, max(acked, upto)))


def receive_batch(net: Network, src: str, dst: str, chan: tuple, seq: int,
                  b: Batch) -> tuple[Network, list, int]:
    """Host ``dst`` receives batch ``seq`` of ``chan`` from host ``src``: accepted once and
    in order (:func:`arrival`), held if early, refused if had. Returns the network, the
    events and the highest number now received in order (what to acknowledge, once
    committed). The simulator's :func:`deliver` and a real host's wire both call it."""
    at = net.now
    kind = "batch"
    got = net.received.get(chan, 0)
    evs: list = []
    h = net.hosts[dst]
    net = with_(net, hosts=net.hosts._set_plain(dst, with_(h, clock=hlc_recv(h.clock, b.ts, at))))
    how = arrival(got, seq, (chan, seq) in net.held)
    if how == DUPLICATE:
        net = with_(net, stats=bump(net.stats, "wire.duplicate-refused"))
        evs.append(events.Wire("refused-duplicate", kind, src, dst, chan, seq, at))
    elif how == NEXT:
        net = accept(net, chan, b)
        if b.abandoned:
            net = _settle(net, chan, seq, evs)
        got = seq
        while (chan, got + 1) in net.held:
            nb = net.held[(chan, got + 1)]
            net = with_(net, held=net.held.delete((chan, got + 1)))
            net = accept(net, chan, nb)
            got += 1
            if nb.abandoned:
                net = _settle(net, chan, got, evs)
        net = with_(net, received=net.received._set_plain(chan, got))
        evs.insert(0, events.Wire("delivered", kind, src, dst, chan, seq, at))
    else:
        net = with_(net, held=net.held.set((chan, seq), b),
                      stats=bump(net.stats, "wire.early"))
        evs.append(events.Wire("held-early", kind, src, dst, chan, seq, at))
    return net, evs, got


#: A peer host's ``down_until``: it is never up in this network (:func:`add_peer_host`).
PEER_DOWN_UNTIL = 1 << 62
#: A batch to a peer host is retried every ``retry_ticks_max * PEER_RETRY_FACTOR`` ticks
#: (4 s on a host), each retry counting as this many attempts (see retry).
PEER_RETRY_FACTOR = 16


def _is_peer(h: HostRecord) -> bool:
    """Whether ``h`` is a host reached over a real wire (never one the simulator crashed,
    whose ``down_until`` is a time)."""
    return not h.up and h.down_until >= PEER_DOWN_UNTIL


def add_peer_host(net: Network, name: str, address: bytes) -> Network:
    """Name another host this network reaches over a real wire (a host's peer).

    The peer is recorded as a host that is never up *in this network*: what the core
    transmits to it is dropped at delivery time ("lost-host-down") and stays in the
    outbox, retried with back-off, until an acknowledgement comes in through
    :func:`receive_ack`. The host's shell (``avm.host.peering``) carries each such
    transmission over its link instead.
    """
    if type(name) is not str or not name.startswith("~") or len(name) < 2 or name in net.hosts:
        # "~" sorts after every letter and digit: the core's fallbacks (the first host by
        # name, for a client or an unknown address) stay this network's own host.
        raise UsageError(f"a peer host needs a new name starting with '~', not {name!r}")
    if type(address) is not bytes or len(address) != 32:
        raise UsageError("a peer host's address is 32 bytes")
    far = HostRecord(name, address, up=False, down_until=PEER_DOWN_UNTIL)
    return with_(net, hosts=net.hosts._set_plain(name, far))


def add_remote(net: Network, address: bytes, host: str) -> Network:
    """Say that machine ``address`` lives on peer ``host``: batches to it go on the wire."""
    if host not in net.hosts or net.hosts[host].up:
        raise UsageError(f"{host!r} is not a peer host of this network")
    if type(address) is not bytes or len(address) != 32 or address in net.machines:
        raise UsageError("a remote machine is a 32-byte address of no local machine")
    return with_(net, remote=net.remote._set_plain(address, host))


def _wire_tomb(b: Batch) -> Batch:
    """What a tombstone carries on the wire: its number, nothing of the batch."""
    if not b.messages and b.notify is None:
        return b
    return with_(b, messages=(), notify=None)


def _settle(net: Network, chan: tuple, seq: int, evs: list) -> Network:
    """The receiver accepted the tombstone for ``seq``: the batch is definitely not applied.

    The sender kept the batch's contents in its outbox entry (:func:`retry`); now that the
    outcome is known they go back (:func:`give_back`) and its feedback says so. In the pure
    network this happens as the receiver decides; a host carries the decision back to the
    sender in the acknowledgement.
    """
    entry = net.outbox.get((chan, seq))
    if entry is None:
        return net
    kept, retry_at, attempts = entry
    if not kept.abandoned or (not kept.messages and kept.notify is None):
        return net
    net = with_(net, outbox=_outbox_set(net, (chan, seq), (_wire_tomb(kept), retry_at, attempts)))
    src = host_of_sender(net, kept.sender)
    evs.append(events.Dropped(chan, seq, kept.dest, UNREACHABLE, net.now))
    net, more = notify(net, kept, False, UNREACHABLE, host=src)
    evs.extend(more)
    net, more = give_back(net, kept, "undeliverable", UNREACHABLE, src)
    evs.extend(more)
    return net


def give_back(net: Network, b: Batch, rule: str, reason: str, host: str,
              env: Env | None = None, msgs: tuple | None = None) -> tuple[Network, list]:
    """Return what batch ``b`` carried that may not be dropped: it will not be applied.

    The messages (``msgs``, default all of ``b``) that hold a linear or relevant item,
    whole and in order, go back to the sending machine as the weak signal
    ``(RETURNED, Map({"reason", "rule", "values"}))`` on its signal context, from
    ``host``, where the values are now (D7). ``reason`` and ``rule`` must name the rule
    and message index only, never anything of the receiver's (D6).

    Where the sender cannot take them -- a client, the runtime, a commons service, a
    stopped or unknown machine -- and when ``b`` is itself a ``~returned`` batch (which
    never bounces again), they go into ``net.dead_letters[host]`` instead.
    """
    msgs = b.messages if msgs is None else msgs
    keep = tuple(m for m in msgs if no_drop(m))
    if not keep:
        return net, []
    sender = b.sender
    if type(sender) is tuple and sender[:2] == ("~", "returned"):
        return _dead_letter(net, host, b, keep, rule, reason)
    m = net.machines.get(sender) if type(sender) is bytes else None
    if m is None or m.status == "stopped" or sender not in net.keys:
        return _dead_letter(net, host, b, keep, rule, reason)
    sig = mint(net, env or Env(), sender, m.signal)
    info = Map({"reason": reason, "rule": rule, "values": keep})
    net = with_(net, stats=bump(bump(net.stats, "returned.batches"), "returned.messages", len(keep)))
    return send_batch(net, ("~", "returned", host), sender, ((sig, (RETURNED, info)),), host, 1.0)


def _dead_letter(net: Network, host: str, b: Batch, keep: tuple, rule: str,
                 reason: str) -> tuple[Network, list]:
    sender, dest = b.sender, b.dest
    if type(sender) is tuple and sender[:2] == ("~", "returned"):
        # The values of a ~returned batch the sender could not take: record them as the
        # sender's, with both reasons.
        values: list = []
        first = ""
        for _cap, content in keep:
            info = content[1] if type(content) is tuple and len(content) == 2 else None
            if type(info) is Map and type(info.get("values")) is tuple:
                values.extend(info["values"])
                first = first or str(info.get("reason", ""))
            else:
                values.append((_cap, content))
        keep = tuple(values)
        reason = f"{first}; not taken back: {reason}" if first else reason
        sender, dest = b.dest, None
    entry = Map({"reason": reason, "rule": rule, "values": keep, "sender": sender,
                 "dest": dest, "seq": b.seq, "at": net.now})
    letters = net.dead_letters
    net = with_(net, dead_letters=letters.set(host, (*letters.get(host, ()), entry)),
                stats=bump(bump(net.stats, "dead-letters"), "dead-letters.messages", len(keep)))
    return net, [events.DeadLetter(host, sender, dest, b.seq, reason, len(keep), net.now)]


# ---------------------------------------------------------------------------------------
# The operator's side of the dead letters: send them somewhere, or to null
# ---------------------------------------------------------------------------------------

#: The sender of the batches an operator's act sends (clearing dead letters into ``null``).
OPERATOR = "operator"


def _take_letters(net: Network, host: str, index: int | None) -> tuple[Network, tuple]:
    """Remove dead letter ``index`` of ``host`` (all of them when None); return them."""
    if type(host) is not str or host not in net.hosts:
        raise UnknownName(f"no host named {host!r}")
    letters = net.dead_letters.get(host, ())
    if index is None:
        taken, rest = letters, ()
    else:
        if type(index) is not int or not 0 <= index < len(letters):
            raise UsageError(f"host {host!r} has {len(letters)} dead letters; no index {index!r}")
        taken, rest = (letters[index],), letters[:index] + letters[index + 1:]
    if taken:
        dead = net.dead_letters.set(host, rest) if rest else net.dead_letters.delete(host)
        net = with_(net, dead_letters=dead)
    return net, taken


def redeliver_dead_letter(net: Network, env: Env, host: str, index: int,
                          dest: bytes) -> tuple[Network, Map, list]:
    """Send dead letter ``index`` of ``host`` to the machine ``dest``: an operator's act.

    The values travel as any returned values do: one ``~returned`` weak signal on
    ``dest``'s signal context, ``Map({"reason", "rule", "values"})`` with the entry's
    rule, its reason prefixed by ``"redelivered by the operator: "`` and its messages,
    sent from the host that held them (so across the wire if ``dest`` lives elsewhere).
    They are a batch like any other from then on: checked as values, and if ``dest``'s
    step does not take them (it fails, or ignores the signal), they come back into the
    dead letters. ``dest`` must be a machine of this network that is not stopped.
    Returns the network, the entry taken and the events.
    """
    if type(index) is not int:
        raise UsageError(f"a dead letter is named by its host and an int index, not {index!r}")
    m = net.machines.get(dest) if type(dest) is bytes else None
    if m is None:
        raise UnknownName("redelivery needs a machine of this network")
    if m.status == "stopped":
        raise UsageError(f"machine {m.name!r} is stopped: it cannot take dead letters back")
    net, (entry,) = _take_letters(net, host, index)
    values = entry["values"]
    info = Map({"reason": f"redelivered by the operator: {entry['reason']}",
                "rule": entry["rule"], "values": values})
    net = with_(net, stats=bump(bump(net.stats, "dead-letters.redelivered"),
                                "dead-letters.redelivered.messages", len(values)))
    sig = mint(net, env, dest, m.signal)
    net, evs = send_batch(net, ("~", "returned", host), dest, ((sig, (RETURNED, info)),), host, 1.0)
    return net, entry, evs


def clear_dead_letters(net: Network, host: str, index: int | None = None,
                       ) -> tuple[Network, tuple, list]:
    """Send dead letter ``index`` of ``host`` (every one when None) to ``null``.

    ``null`` is the one way to destroy a linear value, and clearing is no exception: the
    entries' messages go, one message per entry, in one batch from ``("~", "operator",
    host)`` to the ``null`` commons service of ``host``, which consumes them at its next
    step (and counts what it destroyed in ``null.linear`` / ``null.relevant``). Returns
    the network, the entries taken and the events.
    """
    net, taken = _take_letters(net, host, index)
    if not taken:
        return net, taken, []
    null = commons_cap(net.hosts[host].address, "null")
    msgs = tuple((null, e["values"]) for e in taken)
    n = sum(len(e["values"]) for e in taken)
    net = with_(net, stats=bump(bump(net.stats, "dead-letters.cleared"),
                                "dead-letters.cleared.messages", n))
    net, evs = enqueue_local(net, ("~", OPERATOR, host), ("~", "null"), msgs, host, 1.0)
    return net, taken, evs


def notify(net: Network, b: Batch, ok: bool, why: str, host: str | None = None) -> tuple[Network, list]:
    if b.notify is None:
        return net, []
    status_cap, tag = b.notify
    content = ("delivered", tag) if ok else ("failed", tag, why)
    host = host or host_of_dest(net, b.dest)
    return send_batch(net, ("~", "feedback", host), status_cap.address, ((status_cap, content),),
                       host, status_cap.priority)
