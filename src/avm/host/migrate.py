"""Machines that move between live hosts (issue 8, item 5; DESIGN sections 7 and 9).

    "Machines on different hosts must talk as they do in the simulator ... a machine
    that moves publishes a newer record."

``await mover.move("counter", to="c")`` (or ``Host.move``, ``POST /machines/NAME/move``,
``avm machine move NAME --to HOST``) takes a machine with its state, keys, queues and
channel numbers from this host to a peer host, while both run. It is built from what
exists: the core's export and import (:func:`avm.core.network.export_machine`), the
channel numbers of the delivery protocol (:mod:`avm.core.delivery`), and the host-to-host
session (:mod:`avm.host.peering`), so no batch is lost, applied twice or reordered.

The phases, each durable before the next starts (the *move log*, ``STORE.moves``, mode
0600 because an image holds the machine's keys; :data:`PHASES`, :data:`TRANSITIONS`):

1. ``prepare``: the move is written down (machine, destination, the number of the
   image on the move channel). Then the machine is suspended: the batch it runs now
   finishes (a step is atomic), nothing more runs here, and what arrives for it queues.
   From here the host holds back acknowledgements of batches to it (see 4).
2. ``sent``: an *image* is exported from the committed network -- the machine's record
   and keys, its queued and held batches, for every channel to it the highest number
   received and the next to apply, for every channel from it the numbers sent and
   acknowledged and its outbox, and where the machines it knows of live -- and written
   to the move log before it leaves. It is sent as one batch on the *move channel*
   ``(("~", "move", source host), destination host)`` over the existing mutually
   authenticated TLS session (the destination is pinned to its key, and it accepts
   images only from its peers): numbered, retransmitted until acknowledged, refused as
   a duplicate when replayed. The destination installs the image and the move
   channel's number in **one commit** (the network value holds both), and only then
   acknowledges: an ack means "committed there". A definite rejection (an unknown
   behavior, the name taken) aborts the move: the machine runs here again.
3. ``done``: on the ack, the source *switches* in one commit: the machine, its keys and
   the queued batches the image carried leave this host's network; its address is
   routed to the destination; batches that arrived for it after the export are put in
   the outbox to the destination under their own channel numbers. The host is now a
   **forwarder** for it: a batch from a peer to the moved machine is accepted by number
   (duplicates refused, as for any channel) and relayed on under the same number; the
   destination refuses what it already has. Batches from this host's machines to it
   simply go on the wire.
4. **Acks.** While the machine moves, batches to it are not acknowledged; after the
   switch a relayed batch is acknowledged to its sender only once the destination
   acknowledged it. So whatever a sender has seen acknowledged is committed at the
   destination, and a sender may switch to the new host at any moment
   (``Peering.add_remote(address, "c")``): what it still holds it sends there, and
   nothing is missing below it.

A crash at any point leaves the machine live on exactly one host: before ``sent`` the
image never left and the machine (suspended) resumes the move on restart; after
``sent`` the stored image is sent again under the same number, which the destination
either installs or refuses as a duplicate and acknowledges; after the destination's
commit the source, on restart, gets the ack again and switches; after the switch the
move log is brought up to date from the network (``tests/test_host_move.py`` crashes
each phase).

Where the machine's correspondents live travels with the image as host addresses; the
destination routes them through the peers it knows by those addresses (a host it does
not peer with is counted in ``routes_unknown``). Timers the machine set stay with the
source's timer service and fire across the wire.

Not carried: a machine whose image is larger than :data:`IMAGE_BYTES_MAX` (one frame;
refused before anything changes); routing records signed by the machine (a host keeps
machines' sealing keys, not their identity keys, so it cannot sign for them; the move
is published to the hosts themselves through :attr:`Mover.on_moved` and the routing of
the source and destination).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import codec
from ..core.caps import Capability, address_text, commons_cap, parse_address
from ..core.delivery import DUPLICATE, EARLY, arrival, transmit
from ..core.errors import AvmError, UnknownName, UsageError
from ..core.netvalue import Batch as CoreBatch
from ..core.netvalue import MachineRecord, Network, bump, with_
from ..core.network import MachineImage
from ..core.values import DEPTH_MAX, Map
from ..wire import Batch, WireError
from ..wire.frames import FRAME_BYTES_MAX
from .store import Dirty

if TYPE_CHECKING:
    from ..wire import Acked, Rejected
    from ..wire.transport import Link
    from .api import Host
    from .peering import Peering, _Peer

__all__ = [
    "MOVE_SERVICE",
    "IMAGE_BYTES_MAX",
    "MOVE_SECONDS_DEFAULT",
    "RESEND_SECONDS",
    "MOVES_FILE_SUFFIX",
    "PHASES",
    "TRANSITIONS",
    "MoveError",
    "MoveRefused",
    "MoveTimeout",
    "MoveInterrupted",
    "MoveResult",
    "MoveLog",
    "Mover",
    "export_image",
    "import_image",
    "switch_out",
    "relay_batch",
    "is_move_channel",
]

#: The service name of the move channel's sender: ``("~", MOVE_SERVICE, source host)``.
MOVE_SERVICE = "move"
#: The largest image: it travels as one batch frame, with room for the frame's fields.
IMAGE_BYTES_MAX = FRAME_BYTES_MAX - 16 * 1024
#: An image nests the machine's values a few levels below its top.
IMAGE_LIMITS = codec.Limits(bytes_max=IMAGE_BYTES_MAX, depth_max=DEPTH_MAX + 8,
                            items_max=IMAGE_BYTES_MAX)
#: Seconds a move call waits by default before it says the outcome is not known yet.
MOVE_SECONDS_DEFAULT = 60.0
#: Seconds between retransmissions of an image not yet acknowledged.
RESEND_SECONDS = 1.0
#: Correspondents' locations carried in one image at most (the rest route as before).
ROUTES_MAX = 10_000
#: Values looked at while collecting the capabilities a machine holds.
WALK_NODES_MAX = 200_000
MOVES_FILE_SUFFIX = ".moves"
IMAGE_VERSION = 1

#: The phases of a move out of this host, as the move log records them.
PHASES = {
    "prepare": "written down; the machine is suspended here; the image is not exported yet",
    "sent": "the image is exported and stored; sent (again) until the destination acks",
    "done": "the destination committed the image and this host switched to forwarding",
    "aborted": "the destination refused the image definitely: the machine runs here again",
}
#: ``(phase, phase after)``: every step the move log may take (a test checks the code
#: takes no other).
TRANSITIONS = frozenset({("prepare", "sent"), ("prepare", "aborted"), ("sent", "done"),
                         ("sent", "aborted")})


class MoveError(AvmError):
    """A move could not be done as asked; the message says why and what happened."""


class MoveRefused(MoveError):
    """The destination refused the image definitely: the machine stays and runs here."""


class MoveTimeout(MoveError, TimeoutError):
    """The move did not finish in time. Its outcome is *not known yet*: it goes on in
    the background (and after a restart) until the destination answers."""


class MoveInterrupted(MoveError):
    """A test's fault hook stopped the move at a phase, as a crash there would."""


@dataclass(frozen=True)
class MoveResult:
    """A finished move."""

    name: str
    address: bytes
    to: str  # the destination peer's name on this host
    destination: bytes  # its host address
    seq: int  # the image's number on the move channel
    phase: str  # "done"
    forwarded: int  # batches that arrived during the move, relayed after the switch


@dataclass(frozen=True)
class MoveRow:
    id: str
    name: str
    address: bytes
    peer: str
    peer_address: bytes
    seq: int
    phase: str
    status: str  # the machine's status before the move
    image: bytes | None = None
    detail: str = ""


def is_move_channel(chan: Any) -> bool:
    """Whether ``chan`` is a move channel ``(("~", "move", host), host)``."""
    s = chan[0] if type(chan) is tuple and len(chan) == 2 else None
    return type(s) is tuple and len(s) == 3 and s[0] == "~" and s[1] == MOVE_SERVICE


def _core_name(name: str) -> str:
    return name if name.startswith("~") else "~" + name


# ---------------------------------------------------------------------------------------
# The move log: the durable two-phase record on the source
# ---------------------------------------------------------------------------------------

_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS moves (id TEXT PRIMARY KEY, at INTEGER NOT NULL,
    name TEXT NOT NULL, address BLOB NOT NULL, peer TEXT NOT NULL,
    peer_address BLOB NOT NULL, seq INTEGER NOT NULL, phase TEXT NOT NULL,
    status TEXT NOT NULL, image BLOB, detail TEXT NOT NULL,
    UNIQUE (peer_address, seq));
"""
_COLS = "id, name, address, peer, peer_address, seq, phase, status, image, detail"


class MoveLog:
    """The moves out of one host, in a SQLite file of their own beside the store.

    A file of its own (``STORE.moves``, created 0600: a stored image holds the
    machine's keys) with its own connection, so that writing a phase never waits for,
    or interleaves with, the store's group commit. Every phase is fsynced before the
    move goes on; an in-memory host keeps its log in memory.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        try:
            if path is None:
                self._db = sqlite3.connect(":memory:", check_same_thread=False)
            else:
                if not path.exists():
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                os.chmod(path, 0o600)
                self._db = sqlite3.connect(path, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_LOG_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise MoveError(f"cannot open the move log at {path}: {e}") from e

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def next_seq(self, peer_address: bytes) -> int:
        row = self._db.execute("SELECT max(seq) FROM moves WHERE peer_address = ?",
                               (peer_address,)).fetchone()
        return (row[0] or 0) + 1

    def add(self, row: MoveRow) -> None:
        with self._db:
            self._db.execute(f"INSERT INTO moves (at, {_COLS}) VALUES "  # noqa: S608
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (int(time.time() * 1000), row.id, row.name, row.address,
                              row.peer, row.peer_address, row.seq, row.phase, row.status,
                              row.image, row.detail))

    def advance(self, row: MoveRow, phase: str, **changes: Any) -> MoveRow:
        """The row in its next ``phase`` (one of :data:`TRANSITIONS`), written."""
        if (row.phase, phase) not in TRANSITIONS:
            raise MoveError(f"a move cannot go from {row.phase!r} to {phase!r}")
        new = replace(row, phase=phase, **changes)
        with self._db:
            self._db.execute("UPDATE moves SET phase = ?, image = ?, detail = ? WHERE id = ?",
                             (new.phase, new.image if phase == "sent" else None,
                              new.detail, new.id))
        return new

    def rows(self, active: bool = False) -> list[MoveRow]:
        where = " WHERE phase IN ('prepare', 'sent')" if active else ""
        return [MoveRow(*r) for r in self._db.execute(
            f"SELECT {_COLS} FROM moves{where} ORDER BY at")]  # noqa: S608


# ---------------------------------------------------------------------------------------
# The pure parts: export, import, switch, relay (network in, network out)
# ---------------------------------------------------------------------------------------


def _top(net: Network, chan: tuple) -> int:
    """The highest number this network holds of channel ``chan`` to one of its machines:
    received from the wire, or (a local sender) enqueued."""
    return max(net.received.get(chan, 0), net.next_seq.get(chan, 0))


def _channels(net: Network, address: bytes) -> tuple[list, list]:
    """The channels to and from ``address`` this network keeps numbers of."""
    inbound: set = set()
    outbound: set = set()
    for m in (net.head, net.received, net.next_seq, net.acked):
        for c in m._m:
            if c[1] == address:
                inbound.add(c)
            if c[0] == address:
                outbound.add(c)
    return sorted(inbound, key=repr), sorted(outbound, key=repr)


def _capabilities(values: Iterable[Any], out: set) -> None:
    """Collect the addresses of the capabilities in ``values`` (bounded walk)."""
    todo = list(values)
    n = 0
    while todo and n < WALK_NODES_MAX:
        v = todo.pop()
        n += 1
        t = type(v)
        if t is Capability:
            if v.commons is None:
                out.add(v.address)
        elif t is tuple or t is list:
            todo.extend(v)
        elif t is Map:
            for k, x in v.items():
                todo.append(k)
                todo.append(x)


def prepare_out(net: Network, address: bytes) -> Network:
    """The source's first change: the machine stops running here (unless stopped), and
    channels from it to this host's machines count as received up to their last
    number, so that the destination's continuation of them on the wire is the next
    one expected, not an early one."""
    m = net.machines[address]
    if m.status == "running":
        net = with_(net, machines=net.machines.set(address, with_(m, status="suspended")))
    received = net.received
    for c, n in net.next_seq.items():
        if c[0] == address and c[1] != address and type(c[1]) is bytes \
                and c[1] in net.machines._m and received.get(c, 0) < n:
            received = received._set_plain(c, n)
    return with_(net, received=received)


def export_image(net: Network, address: bytes, source: bytes, status: str,
                 domain: str = "", local: Callable[[bytes], bool] | None = None) -> Map:
    """The image of machine ``address`` as ``net`` holds it (see the module doc).

    ``source``: this host's address (where its local machines live, for the routes);
    ``local``: whether an address not in memory is a machine of this host (evicted).
    Pure: the network is not changed; :func:`switch_out` removes the machine later.
    """
    m = net.machines.get(address)
    if m is None:
        raise UnknownName("the machine is not in this host's network")
    inbound, outbound = _channels(net, address)
    ins = []
    pending = []
    for c in inbound:
        head = net.head.get(c, 0)
        ins.append((c, _top(net, c), head))
        s = head
        while s and (c, s) in net.pending:
            pending.append((c, s, net.pending[(c, s)]))
            s += 1
    held = [(c, s, b) for (c, s), b in net.held.items() if c[1] == address]
    outs = [(c, net.next_seq.get(c, 0), net.acked.get(c, 0)) for c in outbound]
    outbox = [(c, s, b, at, n) for (c, s), (b, at, n) in net.outbox.items() if c[0] == address]
    known: set = set()
    for c in (*inbound, *outbound):
        known.update(x for x in c if type(x) is bytes)
    _capabilities([m.state, *(b.messages for _, _, b in pending),
                   *(b.messages for _, _, b, _, _ in outbox)], known)
    known.discard(address)
    routes = []
    for a in sorted(known):
        if a in net.machines._m or (a not in net.remote and local is not None and local(a)):
            routes.append((a, source))
        else:
            h = net.remote.get(a)
            if h is not None and h in net.hosts:
                routes.append((a, net.hosts[h].address))
        if len(routes) >= ROUTES_MAX:
            break
    image = MachineImage(address, m.name, m.state, m.behavior, m.signal, m.keyver,
                         net.keys[address])
    return Map({"v": IMAGE_VERSION, "machine": image, "status": status, "domain": domain,
                "source": source, "inbound": tuple(ins), "pending": tuple(pending),
                "held": tuple(held), "outbound": tuple(outs), "outbox": tuple(outbox),
                "routes": tuple(routes)})


def encode_image(image: Map) -> bytes:
    """The image's canonical bytes, or :class:`MoveError` if it is too large to send."""
    try:
        blob = codec.encode(image, IMAGE_LIMITS)
    except AvmError as e:
        raise MoveError(f"the machine's image cannot be sent: {e}") from e
    return blob


_IMAGE_KEYS = frozenset({"v", "machine", "status", "domain", "source", "inbound", "pending",
                         "held", "outbound", "outbox", "routes"})


def decode_image(blob: Any) -> Map:
    """An image from a peer: decoded with bounds, its shape checked; else MoveError."""
    if type(blob) is not bytes:
        raise MoveError("the image is not a byte string")
    try:
        image = codec.decode(blob, IMAGE_LIMITS)
    except AvmError as e:
        raise MoveError(f"the image does not decode: {e}") from e
    if type(image) is not Map or set(image) != _IMAGE_KEYS or image["v"] != IMAGE_VERSION:
        raise MoveError("not a machine image of this version")
    mi = image["machine"]
    if type(mi) is not MachineImage or type(mi.address) is not bytes or len(mi.address) != 32 \
            or type(mi.name) is not str or type(mi.keys) is not Map or not mi.keys:
        raise MoveError("the image's machine record is malformed")
    if image["status"] not in ("running", "suspended", "stopped") \
            or type(image["domain"]) is not str:
        raise MoveError("the image's status or domain is malformed")
    for part, n in (("inbound", 3), ("pending", 3), ("held", 3), ("outbound", 3),
                    ("outbox", 5), ("routes", 2)):
        rows = image[part]
        if type(rows) is not tuple or any(type(r) is not tuple or len(r) != n for r in rows):
            raise MoveError(f"the image's {part} is malformed")
    for rows in (image["pending"], image["held"], image["outbox"]):
        for r in rows:
            if type(r[2]) is not CoreBatch or type(r[1]) is not int or type(r[0]) is not tuple:
                raise MoveError("a batch of the image is malformed")
    for a, h in image["routes"]:
        if type(a) is not bytes or type(h) is not bytes:
            raise MoveError("a route of the image is malformed")
    return image


def import_image(net: Network, image: Map, host: str, behaviors: Any,
                 peers: dict[bytes, str], me: bytes, chan: tuple, seq: int,
                 ) -> tuple[Network, Dirty, dict[str, int]]:
    """Install ``image`` on ``host`` and note move-channel number ``seq`` as received,
    as one change (committed together). Raises :class:`MoveRefused` (nothing changed)
    when the image cannot live here.

    ``peers``: host address -> this network's peer host name, for the routes; ``me``:
    this host's address. Returns the network, the rows to write and counts.
    """
    from ..core.conserve import strip

    mi: MachineImage = image["machine"]
    a = mi.address
    if a in net.machines._m or mi.name in net.names:
        raise MoveRefused(f"a machine named {mi.name!r} or with its address is already here")
    if mi.behavior not in behaviors:
        raise MoveRefused(f"this host does not know the behavior {mi.behavior!r}")
    keymap = Map({a: mi.keys})
    rec = MachineRecord(name=mi.name, state=strip(mi.state, a, keymap), behavior=mi.behavior,
                        signal=mi.signal, host=host, keyver=mi.keyver, status=image["status"])
    d = Dirty(machines={a}, keys={a})
    pending, head, live = net.pending, net.head, net.live
    received, held, outbox = net.received, net.held, net.outbox
    queued = list(image["pending"])
    tops = {}
    for c, top, h in image["inbound"]:
        tops[c] = top
        head = head._set_plain(c, h if h else top + 1)
        d.heads.add(c)
    # Batches to the machine this host had in its outbox (its own machines', or relayed
    # while the machine lived at the source) come home: those past what the source had
    # join the queue, the rest are had. The source holds back its acks of them while the
    # machine moves, so they continue its numbers without a gap.
    home = []
    for k in [k for k in outbox._m if k[0][1] == a]:
        b = outbox[k][0]
        outbox = outbox.delete(k)
        if not b.abandoned:
            home.append((k[0], k[1], b))
    home.sort(key=lambda x: (repr(x[0]), x[1]))
    for c, s, b in home:
        if c not in tops:  # the source had none of this channel: it starts here
            tops[c] = s - 1
            head = head._set_plain(c, s)
            d.heads.add(c)
        if s > tops[c]:
            queued.append((c, s, b))
    for c, s, b in queued:
        if (c, s) in pending:
            continue
        b = with_(b, messages=strip(b.messages, a, keymap))
        pending = pending.set((c, s), b)
        d.pending.add((c, s))
        if head.get(c) == s:
            live = live._set_plain(c, True)
    next_seq = net.next_seq
    for c, top in tops.items():
        while (c, top + 1) in pending:  # only a run without a gap counts as received
            top += 1
        received = received._set_plain(c, top)
        if type(c[0]) is not bytes and next_seq.get(c, 0) < top:
            # A sender named relative to its host (("host", name), a client, a service):
            # the same name here continues the channel's numbers after the image's.
            next_seq = next_seq._set_plain(c, top)
            d.sent.add(c)
    for c, s, b in image["held"]:
        held = held.set((c, s), b)
    acked = net.acked
    for c, n, k in image["outbound"]:
        next_seq = next_seq._set_plain(c, max(n, next_seq.get(c, 0)))
        acked = acked._set_plain(c, max(k, acked.get(c, 0)))
        d.sent.add(c)
    for c, s, b, at, n in image["outbox"]:
        if s > acked.get(c, 0):
            outbox = outbox.set((c, s), (b, at, n))
    remote = net.remote.delete(a) if a in net.remote else net.remote
    counts = {"routes": 0, "routes_unknown": 0}
    for x, h in image["routes"]:
        if x in net.machines._m or x in net.names or h == me:
            continue
        name = peers.get(h)
        if name is None or name not in net.hosts:
            counts["routes_unknown"] += 1
            continue
        remote = remote._set_plain(x, name)
        counts["routes"] += 1
    net = with_(net, machines=net.machines.set(a, rec), names=net.names.set(mi.name, a),
                keys=net.keys.set(a, mi.keys), pending=pending, head=head, live=live,
                received=received._set_plain(chan, seq), held=held, next_seq=next_seq,
                acked=acked, outbox=outbox, remote=remote,
                stats=bump(net.stats, "move.imported"))
    if image["domain"]:
        d.domains[a] = image["domain"]
    return net, d, counts


def refuse_image(net: Network, chan: tuple, seq: int) -> Network:
    """The move channel's number ``seq`` is consumed by a definite refusal."""
    return with_(net, received=net.received._set_plain(chan, seq),
                 stats=bump(net.stats, "move.refused"))


def switch_out(net: Network, image: Map, me: str, peer: str,
               ) -> tuple[Network, list, Dirty, int]:
    """After the destination committed ``image``: the machine leaves ``net`` and this
    host forwards to ``peer`` (see the module doc). Returns the network, the rows to
    write, and how many batches that came after the export were put on the wire."""
    mi: MachineImage = image["machine"]
    a = mi.address
    d = Dirty(machines={a}, keys={a})
    tops = {c: top for c, top, _ in image["inbound"]}
    pending, live, received, held = net.pending, net.live, net.received, net.held
    acked, outbox = net.acked, net.outbox
    later: list[tuple[tuple, int, CoreBatch]] = []
    inbound, outbound = _channels(net, a)
    for c in inbound:
        s = net.head.get(c, 0)
        while s and (c, s) in pending:
            b = pending[(c, s)]
            pending = pending.delete((c, s))
            d.pending.add((c, s))
            if s > tops.get(c, 0):
                later.append((c, s, b))
            s += 1
        if c in live._m:
            live = live.delete(c)
        top = max(_top(net, c), tops.get(c, 0))
        received = received._set_plain(c, top)
        # What the destination has: relayed acks are held to this floor until it acks more.
        acked = acked._set_plain(c, max(acked.get(c, 0), tops.get(c, 0)))
    for (c, s), b in list(held.items()):
        if c[1] == a:
            held = held.delete((c, s))
            if s > tops.get(c, 0):
                later.append((c, s, b))
    for c in outbound:
        if c[1] in net.machines._m and c[1] != a:
            # a machine of this host: the destination continues the channel on the wire
            received = received._set_plain(c, max(received.get(c, 0), net.next_seq.get(c, 0)))
    for k in [k for k in outbox._m if k[0][0] == a]:
        outbox = outbox.delete(k)  # the destination carries them now
    at = net.now + net.config.retry_ticks
    for c, s, b in later:
        outbox = outbox.set((c, s), (b, at, 1))
    net = with_(net, machines=net.machines.delete(a), names=net.names.delete(mi.name),
                keys=net.keys.delete(a), pending=pending, live=live, received=received,
                held=held, acked=acked, outbox=outbox,
                remote=net.remote._set_plain(a, peer), stats=bump(net.stats, "move.out"))
    evs: list = []
    for c, s, b in sorted(later, key=lambda x: (repr(x[0]), x[1])):
        net, more = transmit(net, "batch", me, peer, c, s, b)
        evs.extend(more)
    return net, evs, d, len(later)


def relay_batch(net: Network, me: str, b: CoreBatch) -> tuple[Network, list]:
    """A batch from a peer for a machine that moved away: accepted by number, as any
    channel's (a duplicate is refused, an early one held) and put in the outbox to the
    machine's host under the same number. Pure."""
    chan = (b.sender, b.dest)
    peer = net.remote[b.dest]
    got = net.received.get(chan, 0)
    how = arrival(got, b.seq, (chan, b.seq) in net.held)
    if how == DUPLICATE:
        return with_(net, stats=bump(net.stats, "move.relay-duplicate")), []
    if how == EARLY:
        return with_(net, held=net.held.set((chan, b.seq), b)), []
    evs: list = []
    at = net.now + net.config.retry_ticks
    nxt: CoreBatch | None = b
    while nxt is not None:
        net = with_(net, outbox=net.outbox.set((chan, nxt.seq), (nxt, at, 1)),
                    stats=bump(net.stats, "move.relayed"))
        net, more = transmit(net, "batch", me, peer, chan, nxt.seq, nxt)
        evs.extend(more)
        got = nxt.seq
        nxt = net.held.get((chan, got + 1))
        if nxt is not None:
            net = with_(net, held=net.held.delete((chan, got + 1)))
    return with_(net, received=net.received._set_plain(chan, got)), evs


# ---------------------------------------------------------------------------------------
# The mover: one per host, both directions
# ---------------------------------------------------------------------------------------


@dataclass
class MoveStatistics:
    """Counters of one :class:`Mover`."""

    moved_out: int = 0
    moved_in: int = 0
    refused_in: int = 0
    aborted: int = 0
    images_sent: int = 0
    forwarded: int = 0
    routes_unknown: int = 0
    moving: int = 0
    detail: dict = field(default_factory=dict)


class Mover:
    """Moves machines out of ``host`` and takes them in, over ``peering``'s sessions.

    Made once per host after its :class:`~avm.host.peering.Peering`; it resumes the
    moves its log says are unfinished (a restart in the middle of one). ``fault``: for
    tests, called with the name of each point of a move (``"prepared"``, ``"exported"``,
    ``"acked"``, ``"switched"`` on the source, ``"imported"`` on the destination); if it
    returns True the move stops there as a crash at that point would leave it.
    """

    def __init__(self, host: Host, peering: Peering, *,
                 resend_seconds: float = RESEND_SECONDS) -> None:
        self.host = host
        self.rt = host._rt
        self.peering = peering
        path = self.rt.store.path
        self.log = MoveLog(None if path is None else Path(str(path) + MOVES_FILE_SUFFIX))
        self.resend_seconds = resend_seconds
        #: machines being moved out (address -> log row): acks to them are held back,
        #: and the host's control calls refuse them
        self.away: dict[bytes, MoveRow] = {}
        #: (move channel, seq) -> future of the destination's answer
        self._answers: dict[tuple, asyncio.Future] = {}
        self._tasks: dict[bytes, asyncio.Task] = {}
        self.fault: Callable[[str], bool] | None = None
        #: called with (address, peer name, peer host address) after each switch: the
        #: place to tell senders or a naming service where the machine is now
        self.on_moved: list[Callable[[bytes, str, bytes], None]] = []
        #: host address -> the peer's name, adding the peer if it is new (HostNet's:
        #: a destination named by its full address is reached through naming)
        self.peer_for: Callable[[bytes], str | None] | None = None
        self.stats = MoveStatistics()
        peering.mover = self
        host.mover = self
        for row in self.log.rows(active=True):
            self._hold(row)
            self._tasks[row.address] = asyncio.ensure_future(self._run(row))

    # -- the source's side ------------------------------------------------------------
    async def move(self, name: str, to: str, *,
                   timeout: float | None = MOVE_SECONDS_DEFAULT) -> MoveResult:
        """Move machine ``name`` to peer host ``to``; returns once the source switched.

        Raises UnknownName (no such machine), UsageError (not a peer, already moving,
        the host's own machine), MoveError (too large: nothing changed), MoveRefused
        (the destination refused: the machine runs here again), MoveTimeout (not known
        yet: the move goes on).
        """
        from .api import REPLIES

        rt = self.rt
        rt.check_ok()
        addr = self.host.address(name)
        if name == REPLIES:
            raise UsageError(f"{REPLIES} is the host's own machine")
        if addr in self.away:
            raise UsageError(f"machine {name!r} is already moving")
        peer = self._peer_named(to)
        p = self.peering.peers[peer]
        if not rt.resident(addr):
            raise UnknownName(f"no machine named {name!r}")
        m = rt.net.machines[addr]
        row = MoveRow(os.urandom(8).hex(), name, addr, peer, p.address,
                      self.log.next_seq(p.address), "prepare", m.status)
        self.log.add(row)  # durable before anything changes
        self._hold(row)
        task = self._tasks[addr] = asyncio.ensure_future(self._run(row))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError as e:
            raise MoveTimeout(f"the move of {name!r} to {to!r} did not finish in {timeout} s; "
                              "its outcome is not known yet: it goes on until the "
                              "destination answers (see the move log)") from e

    def _peer_named(self, to: Any) -> str:
        """The core name of peer ``to``: its name on this host, or (8 characters or
        more of) its address text."""
        peers = self.peering.peers
        if type(to) is str and to:
            if _core_name(to) in peers:
                return _core_name(to)
            if len(to) >= 8:
                hits = [n for n, p in peers.items()
                        if address_text(p.address).startswith(to.lower())]
                if len(hits) == 1:
                    return hits[0]
            if self.peer_for is not None:
                try:
                    addr = parse_address(to)
                except AvmError:
                    addr = None
                name = self.peer_for(addr) if addr is not None else None
                if name is not None and name in peers:
                    return name
        raise UsageError(f"{to!r} is not a peer of this host; peers: "
                         f"{sorted(n[1:] for n in peers)}")

    def _hold(self, row: MoveRow) -> None:
        self.away[row.address] = row
        self.host._moving.add(row.address)
        self.rt.keep.add(row.address)  # never evicted while it moves
        self.stats.moving = len(self.away)

    def _release(self, row: MoveRow) -> None:
        self.away.pop(row.address, None)
        self.host._moving.discard(row.address)
        self.rt.keep.discard(row.address)
        self._tasks.pop(row.address, None)
        self.stats.moving = len(self.away)

    def _stop_at(self, point: str) -> None:
        if self.fault is not None and self.fault(point):
            raise MoveInterrupted(f"stopped at {point!r} (fault hook)")

    def _switched(self, row: MoveRow) -> bool:
        net = self.rt.committed
        return row.address not in net.machines._m and row.name not in net.names \
            and net.remote.get(row.address) == row.peer

    async def _run(self, row: MoveRow) -> MoveResult:
        rt = self.rt
        forwarded = 0
        if row.phase == "prepare":
            self._stop_at("prepared")
            a = row.address
            if rt.resident(a):
                # Stop at the source: the batch it runs now finishes (a step is atomic);
                # from the next step on it runs nothing, and what arrives queues.
                rt.apply(lambda net: (prepare_out(net, a), []), Dirty(machines={a}))
            net = await rt.durable()
            if a not in net.machines._m:
                await self._abort(row, "the machine is no longer on this host")
                raise MoveError(f"machine {row.name!r} is no longer on this host")
            store = rt.store

            def local(x: bytes) -> bool:
                return rt.evicted_any and store.read_machine(x) is not None

            image = export_image(net, a, self.peering.identity.address, row.status,
                                 rt.domains.get(a, ""), local)
            try:
                blob = encode_image(image)
                if len(blob) > IMAGE_BYTES_MAX:
                    raise MoveError(f"the machine's image is {len(blob)} bytes; one move "
                                    f"carries at most {IMAGE_BYTES_MAX}")
            except MoveError as e:
                await self._abort(row, str(e))
                raise
            row = self.log.advance(row, "sent", image=blob)
            self.away[a] = row
            self._stop_at("exported")
        if row.phase == "sent":
            if not self._switched(row):
                answer = await self._transfer(row)
                if answer != "acked":
                    await self._abort(row, answer)
                    raise MoveRefused(f"{row.peer[1:]!r} refused machine {row.name!r}: "
                                      f"{answer}; it runs here again")
                self._stop_at("acked")
                forwarded = await self._switch(row)
                self._stop_at("switched")
            row = self.log.advance(row, "done")
            self.stats.moved_out += 1
            self._release(row)
            for fn in self.on_moved:
                fn(row.address, row.peer, row.peer_address)
        return MoveResult(row.name, row.address, row.peer[1:], row.peer_address, row.seq,
                          row.phase, forwarded)

    async def _abort(self, row: MoveRow, why: str) -> None:
        """The machine runs here again as it did before the move."""
        from ..core import network as nw

        a = row.address
        if row.status == "running" and self.rt.resident(a):
            self.rt.apply(lambda net: (nw.set_status(net, a, "running"), []),
                          Dirty(machines={a}))
        await self.rt.durable()
        self.log.advance(row, "aborted", detail=why[:500])
        self.stats.aborted += 1
        self._release(row)
        await self._ack_inbound(a)  # acks held back for it go out now

    def _channel(self, row: MoveRow) -> tuple:
        return (("~", MOVE_SERVICE, self.peering.identity.address), row.peer_address)

    async def _link(self, p: _Peer) -> Link:
        if p.dialer is not None:
            return await p.dialer.link()
        while True:
            links = self.peering.transport.links.get(p.address)
            if links:
                return next(iter(links))
            await asyncio.sleep(0.05)

    async def _transfer(self, row: MoveRow) -> str:
        """Send the stored image until the destination answers: "acked", or the reason
        of a definite refusal."""
        chan = self._channel(row)
        assert row.image is not None
        frame = Batch(chan[0], chan[1], row.seq, (int(time.time() * 1000), 0), 0.0,
                      ((commons_cap(row.peer_address, MOVE_SERVICE), ("image", row.image)),),
                      None, False)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._answers[(chan, row.seq)] = fut
        try:
            while not fut.done():
                p = self.peering.peers.get(row.peer)
                if p is not None:
                    try:
                        await asyncio.wait_for(self._send(p, chan, frame),
                                               4 * self.resend_seconds)
                        self.stats.images_sent += 1
                    except (WireError, TimeoutError, OSError):
                        pass  # the link broke or is not up: the next round tries again
                await asyncio.wait([fut], timeout=self.resend_seconds)
            return fut.result()
        finally:
            self._answers.pop((chan, row.seq), None)

    async def _send(self, p: _Peer, chan: tuple, frame: Batch) -> None:
        link = await self._link(p)
        if frame.seq > link.conn.sent(chan):
            await link.wait_for_room()
        await link.send(frame)

    async def _switch(self, row: MoveRow) -> int:
        rt = self.rt
        assert row.image is not None
        image = decode_image(row.image)
        rt.check_ok()
        net, evs, d, n = switch_out(rt.net, image, rt.host, row.peer)
        rt.apply(lambda _: (net, evs), d)  # no await in between: rt.net is the one used
        rt.env._rings.pop(row.address, None)
        await rt.durable()
        self.stats.forwarded += n
        self._wake_peers()
        await self._ack_inbound(row.address)
        return n

    async def _ack_inbound(self, address: bytes) -> None:
        """Acknowledge on every link what may be acknowledged now of the channels to
        ``address`` (acks held back while it moved)."""
        net = self.rt.committed
        chans = [c for m in (net.received, net.head) for c in m._m if c[1] == address]
        self.peering.ack_channels(set(chans))

    def _wake_peers(self) -> None:
        for p in self.peering.peers.values():
            p.wake.set()

    # -- hooks the peering calls --------------------------------------------------------
    def on_answer(self, e: Acked | Rejected) -> None:
        """An ack or a rejection on a move channel, from the destination."""
        from ..wire import Acked, Rejected

        for (chan, seq), fut in list(self._answers.items()):
            if chan != e.channel or fut.done():
                continue
            if type(e) is Acked:
                if e.upto >= seq:
                    fut.set_result("acked")
            elif type(e) is Rejected and e.seq == seq and e.definite:
                fut.set_result(e.reason or "refused")

    def ack_floor(self, net: Network, chan: tuple, upto: int) -> int:
        """How far batches of ``chan`` may be acknowledged: not at all while its
        machine moves; a relayed one only as far as the destination acknowledged."""
        dest = chan[1]
        if dest in self.away:
            return -1
        if dest in net.remote._m:
            return min(upto, net.acked.get(chan, 0))
        return upto

    async def on_image(self, link: Link, peer: str, f: Batch) -> None:
        """An image arrived on the move channel from peer ``peer``: install it and
        acknowledge once committed, or refuse it definitely."""
        rt = self.rt
        chan = f.channel
        if rt.net.received.get(chan, 0) >= f.seq:  # installed before (a retransmission)
            await rt.durable()
            await link.ack(chan[0], chan[1], f.seq)
            return
        why = ""
        a = b""
        counts: dict[str, int] = {}
        try:
            if chan[0][2] != link.peer or len(f.messages) != 1:
                raise MoveRefused("an image comes from its own source host, alone")
            content = f.messages[0][1]
            if type(content) is not tuple or len(content) != 2 or content[0] != "image":
                raise MoveRefused("not an image")
            image = decode_image(content[1])
            peers = {p.address: n for n, p in self.peering.peers.items()}
            me = self.peering.identity.address

            def act(net: Network) -> tuple[Network, list]:
                net, d, c = import_image(net, image, rt.host, rt.env.behaviors, peers, me,
                                         chan, f.seq)
                rt.dirty.merge(d)
                counts.update(c)
                return net, []

            rt.apply(act, Dirty(heads={chan}))
            a = image["machine"].address
            if image["domain"]:
                rt.domains[a] = image["domain"]
            pool = self.host._pool
            if pool is not None:
                b = image["machine"].behavior
                pool.add(b, rt.env.behaviors[b])
            if rt.evicting:
                rt._lru[a] = time.monotonic()
        except AvmError as e:  # MoveError, or a value the image holds that is refused
            why = str(e) or type(e).__name__
            rt.apply(lambda net: (refuse_image(net, chan, f.seq), []), Dirty(heads={chan}))
        await rt.durable()  # the ack says "committed"
        if why:
            self.stats.refused_in += 1
            await link.reject(chan[0], chan[1], f.seq, True, why)
            return
        self.stats.moved_in += 1
        self.stats.routes_unknown += counts.get("routes_unknown", 0)
        if self.fault is not None and self.fault("imported"):
            return  # as a crash between the commit and the ack
        await link.ack(chan[0], chan[1], f.seq)
        # its outbox goes out from here now
        net = rt.committed
        for k, (b, _, _) in net.outbox.items():
            p = self.peering.peers.get(net.remote.get(b.dest, "")) if k[0][0] == a else None
            if p is not None:
                p.due.add(k)
        self._wake_peers()
        await self._ack_inbound(a)  # batches that came home are committed here
        await self._renew_stale(a)

    async def _renew_stale(self, address: bytes) -> None:
        """Close the links whose sessions took a channel to ``address`` less far than
        this host has it now (it lived here before, and the rest came in the image): such
        a session would hold what follows as early forever. A new link starts from the
        store's numbers, and its sender sends its outbox again."""
        net = self.rt.committed
        chans = [c for c in net.received._m if c[1] == address]
        for links in list(self.peering.transport.links.values()):
            for link in list(links):
                if any(link.conn.handed_out(c) < net.received[c] for c in chans):
                    self.peering.counts["stale_links"] += 1
                    with contextlib.suppress(WireError, OSError):
                        await link.close("ok", "a channel's numbers moved on another link")

    def statistics(self) -> MoveStatistics:
        return replace(self.stats, detail={})

    async def close(self) -> None:
        for t in list(self._tasks.values()):
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        self.log.close()
