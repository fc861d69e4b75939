"""The embedded durable store of a host: SQLite in WAL mode, one writer, group commit.

    "Durable store, embedded by default (SQLite in WAL mode): machine records (state,
    behavior binding, keys), the outbox of undelivered batches, per-channel sequence
    numbers ... One batch = one database transaction holding the new state, the outgoing
    batches and the inbound sequence number; group commit amortizes the sync cost."
    (DESIGN section 8)

What is stored is the host's pure :class:`~avm.core.network.Network`, row by row: the
runtime (:mod:`avm.host.runtime`) steps that value with the core's own ``step`` and tells
the store which rows a step touched (:class:`Dirty`, computed from the step's events by
:func:`dirty_from_events`). The store never interprets a batching rule; it only writes
what the core produced.

Group commit. The runtime keeps stepping while the writer thread commits; the writer
takes *every* piece of work queued since its last commit and writes it as one SQLite
transaction: the union of the touched rows, each written once from the newest network
snapshot. Snapshots are immutable and taken between steps, so every commit is a prefix
of the step sequence: a crash loses only a suffix of steps, and nothing of that suffix
was acknowledged (callers are answered after the commit that holds their effects). One
batch's new state, outgoing batches and applied sequence number are always in the same
commit, because they are rows of the same step.

Durability modes (:data:`DURABILITY_MODES`):

* ``"full"`` (the default): WAL with ``synchronous=FULL``: every commit is fsynced
  before it is acknowledged; survives ``kill -9`` and power loss.
* ``"normal"``: WAL with ``synchronous=NORMAL``: survives ``kill -9`` (the process dies,
  the OS keeps the WAL), may lose the last commits on power loss or an OS crash.
* ``"memory"``: nothing is written; survives nothing. For benchmarks and tests.

Keys live apart from states, in a second SQLite file ``PATH.keys`` created with mode
0600 (its WAL and shared-memory files inherit it). It holds the network secret and every
sealing key. Key rows are committed before the main commit that needs them, so a crash
can leave an unused key, never a machine without its key. A backup copies both files.

A state that cannot be decoded never commits: each state is encoded canonically and
decoded back before its transaction is written; a failure aborts the commit with
:class:`StoreError` and the runtime stops acknowledging work.
"""

from __future__ import annotations

import concurrent.futures
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.codec import DEFAULT_LIMITS, Limits, _count_items, decode, encode
from ..core.conserve import strip
from ..core.errors import AvmError
from ..core.network import Batch, Config, MachineRecord, Network, events
from ..core.values import Map, record_fields, replace_fields

__all__ = [
    "SCHEMA_VERSION",
    "DURABILITY_MODES",
    "HISTORY_ROWS_MAX",
    "LOG_ROWS_MAX",
    "REPLAY_PER_MACHINE_MAX",
    "REPLAY_ROWS_MAX",
    "AUDIT_ROWS_MAX",
    "StoreError",
    "Dirty",
    "dirty_from_events",
    "Store",
    "GroupCommitter",
    "CheckReport",
    "backup",
    "check",
]

SCHEMA_VERSION = 2
DURABILITY_MODES = ("full", "normal", "memory")
#: Rows kept in the batch history (for the debugger); older rows are deleted.
HISTORY_ROWS_MAX = 10_000
#: Rows kept in each of the failure and drop logs (the counters in stats keep counting).
LOG_ROWS_MAX = 100_000
#: Batches kept for a dry run ("peek", avm.host.peek) per machine bound to a word, and
#: in all; each row holds the state before, the batch, and what it committed.
REPLAY_PER_MACHINE_MAX = 32
REPLAY_ROWS_MAX = 10_000
#: Operators' state edits kept in the audit table.
AUDIT_ROWS_MAX = 100_000
#: Machines whose committed state encodings the writer remembers, and their bytes in all
#: (a machine's state above ENCODED_ONE_BYTES_MAX is encoded afresh at every commit).
ENCODED_MAX = 10_000
ENCODED_BYTES_MAX = 16 * 1024 * 1024
ENCODED_ONE_BYTES_MAX = 64 * 1024
KEY_FILE_SUFFIX = ".keys"
DOMAIN_KEY = "domain:"
KEY_FILE_MODE = 0o600


class StoreError(AvmError):
    """The store cannot do what was asked: corrupt, full, failing, or the wrong version."""


# ---------------------------------------------------------------------------------------
# Schema. Version 1 is kept verbatim: migrations start from it and a test opens a
# version-1 file. Version 2 added the batch history and the timers.
# ---------------------------------------------------------------------------------------

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE machines (
    address BLOB PRIMARY KEY, name TEXT NOT NULL UNIQUE, behavior TEXT NOT NULL,
    status TEXT NOT NULL, keyver INTEGER NOT NULL, host TEXT NOT NULL,
    signal BLOB NOT NULL, state BLOB NOT NULL);
CREATE TABLE queue (chan BLOB NOT NULL, seq INTEGER NOT NULL, batch BLOB NOT NULL,
    PRIMARY KEY (chan, seq)) WITHOUT ROWID;
CREATE TABLE applied (chan BLOB PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE sent (chan BLOB PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE random_n (requester BLOB PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE failures (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, chan BLOB NOT NULL,
    seq INTEGER NOT NULL, dest BLOB NOT NULL, rule TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE drops (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, chan BLOB NOT NULL,
    seq INTEGER NOT NULL, dest BLOB NOT NULL, reason TEXT NOT NULL);
"""

_MIGRATIONS: dict[int, str] = {
    # 1 -> 2: a bounded history of applied batches, and durable timers.
    2: """
CREATE TABLE history (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, chan BLOB NOT NULL,
    seq INTEGER NOT NULL, dest BLOB NOT NULL, ok INTEGER NOT NULL, steps INTEGER NOT NULL,
    read_only INTEGER NOT NULL);
CREATE TABLE timers (id INTEGER PRIMARY KEY, due_ms INTEGER NOT NULL, owner BLOB NOT NULL,
    payload BLOB NOT NULL);
CREATE INDEX timers_due ON timers (due_ms);
""",
}

#: Tables added without a schema version (created if missing; an older avm ignores them):
#: the replay log of bound machines' batches, and the audit log of operators' edits.
_AUX_SCHEMA = """
CREATE TABLE IF NOT EXISTS replay (id INTEGER PRIMARY KEY, at INTEGER NOT NULL,
    dest BLOB NOT NULL, chan BLOB NOT NULL, seq INTEGER NOT NULL, behavior TEXT NOT NULL,
    ok INTEGER NOT NULL, failure TEXT NOT NULL, before BLOB NOT NULL, batch BLOB NOT NULL,
    after BLOB, outputs BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS replay_dest ON replay (dest, id);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at INTEGER NOT NULL,
    who TEXT NOT NULL, machine TEXT NOT NULL, act TEXT NOT NULL, detail TEXT NOT NULL,
    before BLOB NOT NULL, after BLOB NOT NULL);
"""

_KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS secret (id INTEGER PRIMARY KEY CHECK (id = 0), value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys (address BLOB NOT NULL, version INTEGER NOT NULL,
    key BLOB NOT NULL, PRIMARY KEY (address, version)) WITHOUT ROWID;
"""

#: Network fields stored as rows of their own; the rest form the header blob.
_ROW_FIELDS = ("machines", "names", "keys", "pending", "head", "live", "next_seq", "random_n")


# ---------------------------------------------------------------------------------------
# What a step touched
# ---------------------------------------------------------------------------------------


@dataclass
class Dirty:
    """The rows to write from the next snapshot, and the log rows to append.

    Row sets name keys of the network's maps; each is written from the snapshot (or
    deleted when the snapshot no longer has it), so a key touched by many steps is
    written once. ``everything`` rewrites every row (a new store, an operator's restore).
    """

    machines: set = field(default_factory=set)
    keys: set = field(default_factory=set)
    pending: set = field(default_factory=set)
    heads: set = field(default_factory=set)
    sent: set = field(default_factory=set)
    random: set = field(default_factory=set)
    chans: set = field(default_factory=set)  # channels whose whole queue is rewritten
    failures: list = field(default_factory=list)
    drops: list = field(default_factory=list)
    history: list = field(default_factory=list)
    #: address -> trust domain (avm.host.isolation), kept in the meta table
    domains: dict = field(default_factory=dict)
    #: batches of machines bound to words, for peek: (at, chan, seq, dest, behavior, ok,
    #: failure, state before, batch, state after or None, ((dest, messages), ...))
    replay: list = field(default_factory=list)
    #: operators' edits: (at ms, who, machine name, act, detail, value before, value after)
    audit: list = field(default_factory=list)
    #: machine made by a spawner -> the machine that asked for it (its trust domain
    #: follows; see Runtime._adopt). Nothing to write by itself.
    parents: dict = field(default_factory=dict)
    #: (chan, seq) of the batches created since this Dirty began. None of them has a row
    #: yet (a Dirty is written once, whole): one that is gone again from the snapshot
    #: being written has nothing to delete, so a batch made and run between two commits
    #: costs the queue table nothing.
    born: set = field(default_factory=set)
    everything: bool = False

    def merge(self, other: Dirty) -> None:
        self.machines |= other.machines
        self.keys |= other.keys
        self.pending |= other.pending
        self.heads |= other.heads
        self.sent |= other.sent
        self.random |= other.random
        self.chans |= other.chans
        self.failures += other.failures
        self.drops += other.drops
        self.history += other.history
        self.domains.update(other.domains)
        self.replay += other.replay
        self.audit += other.audit
        self.parents.update(other.parents)
        self.born |= other.born
        self.everything = self.everything or other.everything

    def __bool__(self) -> bool:
        return bool(self.everything or self.machines or self.keys or self.pending
                    or self.heads or self.sent or self.random or self.chans or self.failures
                    or self.drops or self.history or self.domains or self.replay
                    or self.audit)


def dirty_from_events(evs: Iterable[Any], dirty: Dirty) -> None:
    """Add the rows the events of one step touched to ``dirty``.

    The events are the core's account of the step: a batch created (queued; its
    channel's sequence number advanced), applied or dropped (taken off its queue; its
    channel's applied number advanced; on success the receiver's record changed),
    interrupted (its restart count changed), a machine spawned, a batch accepted from
    the wire (its channel's queue is rewritten whole). ``random`` answers move
    the requester's stream counter. Everything else lives in the header, written whole.
    A machine made by the ``spawner`` service is noted with the machine that asked.
    """
    asker = None
    for e in evs:
        t = type(e)
        if t is events.Applied:
            chan = e.chan
            dirty.pending.add((chan, e.seq))
            dirty.heads.add(chan)
            dest = e.dest
            if type(dest) is bytes:
                if e.ok:
                    dirty.machines.add(dest)
                else:
                    f = e.failure
                    dirty.failures.append((e.at, chan, e.seq, dest, f.rule if f else "",
                                           str(f) if f else ""))
            elif type(dest) is tuple and len(dest) > 1:
                if dest[1] == "random":
                    dirty.random.add(chan[0])
                elif dest[1] == "spawner":
                    asker = chan[0]
            dirty.history.append((e.at, chan, e.seq, dest, e.ok, e.steps, e.read_only))
        elif t is events.Created:
            chan = e.chan
            k = (chan, e.seq)
            dirty.pending.add(k)
            dirty.born.add(k)
            dirty.sent.add(chan)
            dirty.heads.add(chan)
        elif t is events.Dropped:
            dirty.pending.add((e.chan, e.seq))
            dirty.heads.add(e.chan)
            dirty.drops.append((e.at, e.chan, e.seq, e.dest, e.reason))
        elif t is events.Interrupted:
            dirty.pending.add((e.chan, e.seq))
        elif t is events.Spawned:
            dirty.machines.add(e.address)
            dirty.keys.add(e.address)
            if type(asker) is bytes:
                dirty.parents[e.address] = asker
        elif t is events.Wire and e.kind == "batch":
            # A batch accepted from the wire (perhaps releasing held ones after it).
            dirty.chans.add(e.chan)
            dirty.heads.add(e.chan)


# ---------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------


def _blob(v: Any) -> bytes:
    return encode(v)


def _tag_prefix(blob: bytes) -> bytes:
    """The CBOR tag head that starts ``blob`` (a record's tag)."""
    size = {24: 1, 25: 2, 26: 4, 27: 8}.get(blob[0] & 0x1F, 0)
    return blob[:1 + size]


_DEFAULT_NET = Network(config=Config(), seed=0)
_NET_PREFIX = _tag_prefix(encode(_DEFAULT_NET))


def _upgrade_header(blob: bytes) -> bytes:
    """A header written before ``Network`` gained trailing fields, with their defaults.

    New fields of the network record are only ever appended (the timers came this way),
    so an older header is the same record with fewer items: its tag, a shorter array
    header, the same item encodings. Appending the canonical encodings of the missing
    fields' defaults gives exactly the header the current avm would have written. The
    store is our own data (trusted); anything else is left to ``decode`` to refuse.
    """
    names = record_fields(Network)
    want = len(names) + 1  # the record's name, then its fields
    prefix = _NET_PREFIX
    if not blob.startswith(prefix) or len(blob) < len(prefix) + 2 or blob[len(prefix)] != 0x98:
        return blob
    have = blob[len(prefix) + 1]
    if not 1 < have < want:
        return blob
    tail = b"".join(encode(getattr(_DEFAULT_NET, f)) for f in names[have - 1:])
    return prefix + bytes((0x98, want)) + blob[len(prefix) + 2:] + tail


def _header(net: Network) -> bytes:
    empty = Map()
    return encode(replace_fields(net, secret=b"", **{f: empty for f in _ROW_FIELDS}))


class _HeaderCache:
    """The header of each commit, built from its fields' encodings, each field encoded
    again only when it is another object than at the last commit.

    Why: the header is written at every commit, and most of its fields (the
    configuration, the wire, the timers, the spawners) do not change between commits;
    encoding it whole took a third of a millisecond, a share of every ``ask``'s commit.
    A record's canonical encoding is its tag, an array head, and its items' own
    canonical encodings one after another (what _upgrade_header relies on too), so the
    parts can be joined. Each field is encoded with two levels less room for nesting
    (the record's tag and array), the whole is held to the size and item limits, so
    what this gives is what ``encode`` would give, or the same refusal
    (tests/test_host_store.py loads every commit back byte for byte).
    """

    _LIMITS = Limits(depth_max=DEFAULT_LIMITS.depth_max - 2)

    def __init__(self) -> None:
        self.names = record_fields(Network)
        self.parts: dict[str, tuple[Any, bytes]] = {}
        self.entries: dict[str, dict[Any, tuple[Any, Any, bytes, bytes]]] = {}
        self.ok = False  # (set below; the default network's maps are small anyway)
        d = _DEFAULT_NET
        whole = encode(d)
        fields = [self._part(f, self._value(d, f)) for f in self.names]
        head = _NET_PREFIX + bytes((0x98, len(self.names) + 1))
        tail = b"".join(fields)
        name = whole[len(head):len(whole) - len(tail)]
        self.head = head + name
        #: the joined encoding is the canonical one (else every header is encoded whole)
        self.ok = (len(self.names) + 1 < 256 and whole.startswith(head)
                   and whole.endswith(tail) and self.head + tail == whole)

    @staticmethod
    def _value(net: Network, f: str) -> Any:
        if f == "secret":
            return b""
        if f in _ROW_FIELDS:
            return _EMPTY_MAP
        return getattr(net, f)

    def _part(self, f: str, v: Any) -> bytes:
        got = self.parts.get(f)
        if got is not None and got[0] is v:
            return got[1]
        if type(v) is Map and len(v) >= _MAP_ENTRIES_MIN and self.ok:
            b = self._map(f, v)
        else:
            b = encode(v, self._LIMITS)
        self.parts[f] = (v, b)
        return b

    _ENTRY_LIMITS = Limits(depth_max=DEFAULT_LIMITS.depth_max - 3)

    def _map(self, f: str, m: Map) -> bytes:
        """A large map field (the outbox, the channels' numbers) from its entries'
        encodings, each entry encoded again only when its key or value is another object
        than at the last commit: the outbox of a busy sender holds hundreds of batches,
        and encoding all of them at every commit was most of a commit's cost.

        A canonical map is its head and its pairs sorted by their keys' encodings
        (length first, then bytewise), each pair the key's encoding then the value's;
        the entries are held to two levels less room than the field (the record's, the
        map's), so the result is what ``encode`` gives (tests/test_store_header_maps.py).
        """
        old = self.entries.get(f, {})
        new: dict[Any, tuple[Any, Any, bytes, bytes]] = {}
        lim = self._ENTRY_LIMITS
        for k, v in m._m.items():
            got = old.get(k)
            if got is None or got[0] is not k or got[1] is not v:
                got = (k, v, encode(k, lim), encode(v, lim))
            new[k] = got
        self.entries[f] = new
        pairs = sorted(((e[2], e[3]) for e in new.values()), key=lambda p: (len(p[0]), p[0]))
        n = len(pairs)
        head = (bytes((0xA0 | n,)) if n < 24 else bytes((0xB8, n)) if n < 256
                else b"\xb9" + n.to_bytes(2, "big") if n < 65536 else b"\xba" + n.to_bytes(4, "big"))
        return head + b"".join([kb + vb for kb, vb in pairs])

    def __call__(self, net: Network) -> bytes:
        if not self.ok:
            return _header(net)
        blob = self.head + b"".join([self._part(f, self._value(net, f)) for f in self.names])
        if len(blob) > DEFAULT_LIMITS.bytes_max or (
                len(blob) > DEFAULT_LIMITS.items_max
                and _count_items(blob) > DEFAULT_LIMITS.items_max):
            return _header(net)  # raises what encode raises
        return blob


_EMPTY_MAP = Map()
#: A header map field with this many entries is encoded entry by entry (_HeaderCache._map).
_MAP_ENTRIES_MIN = 32


class Store:
    """One host's store: a main SQLite file and its key file (or nothing, in memory).

    Not thread-safe by itself: one thread writes (:class:`GroupCommitter`), and reads
    for ``load``/``check`` happen before the writer starts or on their own connection.
    """

    def __init__(self, path: str | os.PathLike | None, durability: str = "full") -> None:
        if durability not in DURABILITY_MODES:
            raise StoreError(f"unknown durability {durability!r}; use one of {DURABILITY_MODES}")
        if (path is None) != (durability == "memory"):
            raise StoreError("an in-memory store has no path, and a path needs "
                             "durability 'full' or 'normal'")
        self.durability = durability
        self.path = None if path is None else Path(path)
        self.commits = 0
        #: Fault injection for tests (as FoundationDB's "buggify"): called with the name
        #: of each point of a commit (``"keys"``: key file committed, ``"rows"``: rows
        #: written, transaction not yet committed, ``"commit"``: main file committed);
        #: whatever it raises there is what the storage did. ``None`` in production.
        self.fault: Callable[[str], None] | None = None
        self._db: sqlite3.Connection | None = None
        self._keys: sqlite3.Connection | None = None
        self._rdb: sqlite3.Connection | None = None  # readers for machines loaded on demand
        self._rkeys: sqlite3.Connection | None = None
        #: address -> (state, signal, encoded state, encoded signal) as last committed
        #: (the writer thread's; see _remember)
        self._encoded: dict[bytes, tuple] = {}
        self._encoded_bytes = 0
        self._header = _HeaderCache()
        if self.path is not None:
            self._open()

    @property
    def durable(self) -> bool:
        return self.durability != "memory"

    @property
    def key_path(self) -> Path | None:
        return None if self.path is None else Path(str(self.path) + KEY_FILE_SUFFIX)

    # -- opening ------------------------------------------------------------------------
    def _open(self) -> None:
        assert self.path is not None and self.key_path is not None
        sync = "FULL" if self.durability == "full" else "NORMAL"
        try:
            self._db = _connect(self.path, sync)
            # The key file is created 0600 before SQLite opens it; its -wal and -shm
            # files take the permissions of the database file.
            if not self.key_path.exists():
                os.close(os.open(self.key_path, os.O_CREAT | os.O_WRONLY, KEY_FILE_MODE))
            os.chmod(self.key_path, KEY_FILE_MODE)
            self._keys = _connect(self.key_path, "FULL")
            self._keys.executescript(_KEYS_SCHEMA)
            self._migrate()
            self._db.executescript(_AUX_SCHEMA)
        except sqlite3.Error as e:
            self.close()
            raise StoreError(f"cannot open the store at {self.path}: {e}") from e

    def _migrate(self) -> None:
        db = self._db
        assert db is not None
        has_meta = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            with db:
                db.executescript("BEGIN;" + _SCHEMA_V1 + "".join(
                    _MIGRATIONS[v] for v in range(2, SCHEMA_VERSION + 1))
                    + f"INSERT INTO meta VALUES ('schema_version', {SCHEMA_VERSION}); COMMIT;")
            return
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = row[0] if row else None
        if type(version) is not int or version < 1:
            raise StoreError(f"{self.path} has no valid schema version: not an avm store")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}, newer than this "
                             f"avm ({SCHEMA_VERSION}); upgrade avm to open it")
        for v in range(version + 1, SCHEMA_VERSION + 1):
            # One transaction per migration: a crash leaves a whole version behind.
            db.executescript("BEGIN;" + _MIGRATIONS[v]
                             + f"UPDATE meta SET value={v} WHERE key='schema_version'; COMMIT;")

    def schema_version(self) -> int:
        if self._db is None:
            return SCHEMA_VERSION
        return int(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    def close(self) -> None:
        for c in (self._rdb, self._rkeys, self._db, self._keys):
            if c is not None:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
        self._db = self._keys = self._rdb = self._rkeys = None

    # -- reading ------------------------------------------------------------------------
    def load(self, resident_max: int | None = None, keep: Iterable[str] = ()) -> Network | None:
        """The network as last committed, or None for an empty store.

        Every state is decoded and every ``Self`` of its own machine is bound again to
        the machine's keys (a stored ``Self`` names the key version, never the key).

        ``resident_max``: when the store holds more machines than that, only the ones
        with queued batches (to or from them) and those named in ``keep`` are loaded;
        the others stay in the store (their names and channel numbers are loaded) and
        the runtime loads them on demand (:meth:`read_machine`).
        """
        db, kdb = self._db, self._keys
        if db is None or kdb is None:
            return None
        row = db.execute("SELECT value FROM meta WHERE key='header'").fetchone()
        if row is None:
            return None
        lazy = resident_max is not None and self.count_machines() > resident_max
        try:
            net = decode(_upgrade_header(bytes(row[0])))
            srow = kdb.execute("SELECT value FROM secret WHERE id=0").fetchone()
            if type(net) is not Network or srow is None:
                raise StoreError("the header or the network secret is missing")
            queued = []
            for chan, seq, blob in db.execute("SELECT chan, seq, batch FROM queue"):
                b = decode(blob)
                if type(b) is not Batch:
                    raise StoreError("a queued row is not a batch")
                queued.append((decode(chan), seq, b))
            machines: dict[bytes, MachineRecord] = {}
            names: dict[str, bytes] = {}
            keys: dict[bytes, Map] = {}
            if lazy:
                for addr, name in db.execute("SELECT address, name FROM machines"):
                    names[name] = addr
                want = {names[n] for n in keep if n in names}
                for c, _, b in queued:
                    want.update(x for x in (c[0], b.dest) if type(x) is bytes)
                for addr in want:
                    got = self.read_machine(addr)
                    if got is not None:
                        machines[addr], keys[addr] = got
                keymap = Map(keys)
            else:
                raw: dict[bytes, dict[int, bytes]] = {}
                for addr, ver, key in kdb.execute("SELECT address, version, key FROM keys"):
                    raw.setdefault(addr, {})[ver] = key
                keymap = Map({a: Map(vs) for a, vs in raw.items()})
                for addr, name, behavior, status, keyver, host, signal, state in db.execute(
                        "SELECT address, name, behavior, status, keyver, host, signal, state "
                        "FROM machines"):
                    if addr not in raw:
                        raise StoreError(f"machine {name!r} has no keys in {self.key_path}")
                    st = strip(decode(state), addr, keymap)  # rebind its own Self
                    machines[addr] = MachineRecord(name, st, behavior, decode(signal), host,
                                                   keyver, status)
                    names[name] = addr
            pending = {}
            for c, seq, b in queued:
                pending[(c, seq)] = replace_fields(b, messages=strip(b.messages, b.dest, keymap))
            head = {decode(c): s + 1 for c, s in db.execute("SELECT chan, seq FROM applied")}
            next_seq = {decode(c): s for c, s in db.execute("SELECT chan, seq FROM sent")}
            random_n = {decode(r): n for r, n in db.execute("SELECT requester, n FROM random_n")}
        except StoreError:
            raise
        except (AvmError, sqlite3.Error, ValueError, TypeError) as e:
            raise StoreError(f"the store at {self.path} cannot be loaded: {e}") from e
        live = {c: True for c, h in head.items() if (c, h) in pending}
        return replace_fields(
            net, secret=srow[0], machines=Map(machines), names=Map(names), keys=keymap,
            pending=Map(pending), head=Map(head), live=Map(live), next_seq=Map(next_seq),
            random_n=Map(random_n))

    # -- reading one machine (eviction: avm.host.runtime loads cold machines on demand) --
    def _readers(self) -> tuple[sqlite3.Connection, sqlite3.Connection] | None:
        """Read-only connections of their own (WAL: they see committed rows only, and
        never wait for the writer thread, which owns the main connections)."""
        if self._db is None or self.path is None or self.key_path is None:
            return None
        if self._rdb is None or self._rkeys is None:
            self._rdb = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                        check_same_thread=False)
            self._rkeys = sqlite3.connect(f"file:{self.key_path}?mode=ro", uri=True,
                                          check_same_thread=False)
        return self._rdb, self._rkeys

    def read_machine(self, address: bytes) -> tuple[MachineRecord, Map] | None:
        """The committed record of one machine and its key versions, or None.

        As :meth:`load` does for every machine: the state is decoded and every ``Self``
        of the machine in it is bound again to its keys.
        """
        r = self._readers()
        if r is None:
            return None
        db, kdb = r
        try:
            row = db.execute("SELECT name, behavior, status, keyver, host, signal, state "
                             "FROM machines WHERE address = ?", (address,)).fetchone()
            if row is None:
                return None
            vs = {v: k for v, k in kdb.execute(
                "SELECT version, key FROM keys WHERE address = ?", (address,))}
            if not vs:
                raise StoreError(f"machine {row[0]!r} has no keys in {self.key_path}")
            versions = Map(vs)
            name, behavior, status, keyver, host, signal, state = row
            st = strip(decode(state), address, Map({address: versions}))
            return MachineRecord(name, st, behavior, decode(signal), host, keyver,
                                 status), versions
        except StoreError:
            raise
        except (AvmError, sqlite3.Error, ValueError, TypeError) as e:
            raise StoreError(f"machine {address.hex()[:16]}... cannot be loaded: {e}") from e

    def machine_rows(self, prefix: str = "", limit: int | None = None) -> list[tuple]:
        """(name, address, behavior, status, keyver) of the committed machines whose
        names start with ``prefix``, by name (at most ``limit``)."""
        r = self._readers()
        if r is None:
            return []
        hi = prefix + "\U0010ffff"  # a range on the name index, exact and case-sensitive
        return r[0].execute("SELECT name, address, behavior, status, keyver FROM machines "
                            "WHERE name >= ? AND name < ? ORDER BY name LIMIT ?",
                            (prefix, hi, -1 if limit is None else limit)).fetchall()

    def statuses(self) -> dict[str, int]:
        """Committed machines by status."""
        r = self._readers()
        if r is None:
            return {}
        return dict(r[0].execute("SELECT status, count(*) FROM machines GROUP BY status"))

    def count_machines(self) -> int:
        if self._db is None:
            return 0
        return int(self._db.execute("SELECT count(*) FROM machines").fetchone()[0])

    def behaviors(self) -> set[str]:
        """The behavior names the store's machines use."""
        if self._db is None:
            return set()
        return {b for (b,) in self._db.execute("SELECT DISTINCT behavior FROM machines")}

    def domains(self) -> dict[bytes, str]:
        """The trust domain of each machine spawned with one (avm.host.isolation).

        Kept as ``domain:<address hex>`` rows of the meta table: no schema change, so a
        version-1 store opens as before (its machines have no domain: the default).
        """
        if self._db is None:
            return {}
        n = len(DOMAIN_KEY)
        return {bytes.fromhex(k[n:]): str(v) for k, v in self._db.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'domain:%'")}

    def failures(self, limit: int = 100) -> list[tuple]:
        """The newest failed batches: (at, chan, seq, dest, rule, detail)."""
        if self._db is None:
            return []
        rows = self._db.execute("SELECT at, chan, seq, dest, rule, detail FROM failures "
                                "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [(a, decode(c), s, decode(d), r, t) for a, c, s, d, r, t in rows]

    def history(self, limit: int = 100) -> list[tuple]:
        """The newest applied batches: (at, chan, seq, dest, ok, steps, read_only)."""
        if self._db is None:
            return []
        rows = self._db.execute("SELECT at, chan, seq, dest, ok, steps, read_only FROM history "
                                "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [(a, decode(c), s, decode(d), bool(o), n, bool(r)) for a, c, s, d, o, n, r in rows]

    # -- writing ------------------------------------------------------------------------
    def write(self, net: Network, dirty: Dirty) -> None:
        """Write the rows ``dirty`` names from ``net`` as one transaction, and commit.

        Raises :class:`StoreError` (and commits nothing) if a state does not round-trip
        through the canonical encoding, or SQLite fails (disk full, I/O error).
        """
        if self._db is None or self._keys is None:
            self.commits += 1
            return
        try:
            # encode (and check) everything before writing
            rows = _Rows(net, dirty, {} if dirty.everything else self._encoded,
                         self._header)
        except AvmError as e:
            raise StoreError(f"refusing to commit: {e}") from e
        db, kdb = self._db, self._keys
        try:
            if rows.keys or rows.secret is not None:
                with kdb:  # before the main commit: a crash leaves a spare key, never a gap
                    if rows.secret is not None:
                        kdb.execute("INSERT OR REPLACE INTO secret VALUES (0, ?)", (rows.secret,))
                    _many(kdb, "INSERT OR REPLACE INTO keys VALUES", rows.keys)
                if self.fault is not None:
                    self.fault("keys")
            with db:
                if dirty.everything:
                    for table in ("machines", "queue", "applied", "sent", "random_n"):
                        db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
                db.execute("INSERT OR REPLACE INTO meta VALUES ('header', ?)", (rows.header,))
                _many(db, "INSERT OR REPLACE INTO meta VALUES",
                      [(DOMAIN_KEY + a.hex(), d) for a, d in dirty.domains.items()])
                _many(db, "INSERT OR REPLACE INTO machines VALUES", rows.machines)
                _many(db, "DELETE FROM machines WHERE address IN (VALUES", rows.machines_gone, ")")
                _many(db, "INSERT OR REPLACE INTO queue VALUES", rows.queue)
                _many(db, "DELETE FROM queue WHERE (chan, seq) IN (VALUES", rows.queue_gone, ")")
                _many(db, "DELETE FROM queue WHERE chan IN (VALUES", rows.chans_gone, ")")
                _many(db, "INSERT OR REPLACE INTO queue VALUES", rows.chan_rows)
                _many(db, "INSERT OR REPLACE INTO applied VALUES", rows.applied)
                _many(db, "INSERT OR REPLACE INTO sent VALUES", rows.sent)
                _many(db, "INSERT OR REPLACE INTO random_n VALUES", rows.random)
                _append_log(db, "failures", "(at, chan, seq, dest, rule, detail)", rows.failures,
                            LOG_ROWS_MAX)
                _append_log(db, "drops", "(at, chan, seq, dest, reason)", rows.drops, LOG_ROWS_MAX)
                _append_log(db, "history", "(at, chan, seq, dest, ok, steps, read_only)",
                            rows.history, HISTORY_ROWS_MAX)
                _write_aux(db, rows)
                if self.fault is not None:
                    self.fault("rows")
            if self.fault is not None:
                self.fault("commit")
            if rows.keys_gone:  # after the main commit: the machine is gone first
                with kdb:
                    _many(kdb, "DELETE FROM keys WHERE address IN (VALUES", rows.keys_gone, ")")
        except sqlite3.Error as e:
            raise StoreError(f"commit failed: {e}") from e
        self.commits += 1
        self._remember(rows)

    def _remember(self, rows: _Rows) -> None:
        """Keep the committed encodings of the machines just written (ENCODED_MAX of
        them, ENCODED_BYTES_MAX in all): a machine whose next batch leaves its state
        object as it was (a read-only batch) is written again without encoding it."""
        enc = self._encoded
        for (a,) in rows.machines_gone:
            enc.pop(a, None)
        if len(enc) + len(rows.encoded) > ENCODED_MAX or self._encoded_bytes > ENCODED_BYTES_MAX:
            enc.clear()
            self._encoded_bytes = 0
        for a, e in rows.encoded.items():
            if len(e[2]) <= ENCODED_ONE_BYTES_MAX:
                old = enc.get(a)
                if old is not None:
                    self._encoded_bytes -= len(old[2])
                enc[a] = e
                self._encoded_bytes += len(e[2])


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # Python's default transaction handling: a write opens a transaction, and leaving a
    # ``with db:`` block commits it (or rolls it back on an exception).
    db = sqlite3.connect(path, check_same_thread=False)
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        db.close()
        raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


#: Rows per statement of :func:`_many`, largest first: a commit's rows go in statements
#: of these sizes, so a few statements (each compiled once and cached) carry any count.
_MANY_ROWS = (256, 32, 4, 1)


def _many(db: sqlite3.Connection, head: str, rows: list, tail: str = "") -> None:
    """``executemany`` of ``head (?, ...) tail`` over ``rows``, many rows per statement.

    Why not ``executemany``: SQLite's module releases the GIL around every row it steps,
    and the writer thread must then win the GIL back from the event loop, which steps
    batches without pause: each row waited up to the interpreter's switch interval (5
    ms), and commits of thousands of rows fell seconds behind. One multi-row statement
    (``VALUES (...), (...)``) is one step: the same rows, in the same order, one wait.
    """
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    i = 0
    n = len(rows)
    for size in _MANY_ROWS:
        if n - i < size:
            continue
        sql = f"{head} {', '.join([one] * size)}{tail}"
        while n - i >= size:
            db.execute(sql, [x for r in rows[i:i + size] for x in r])
            i += size


def _append_log(db: sqlite3.Connection, table: str, cols: str, rows: list, keep: int) -> None:
    if not rows:
        return
    _many(db, f"INSERT INTO {table} {cols} VALUES", rows)
    last = db.execute(f"SELECT max(id) FROM {table}").fetchone()[0]  # noqa: S608
    if last is not None and last > keep:
        db.execute(f"DELETE FROM {table} WHERE id <= ?", (last - keep,))  # noqa: S608


def _aux_rows(dirty: Dirty) -> tuple[list, list]:
    """The replay and audit rows of a commit, encoded. Only the newest
    REPLAY_PER_MACHINE_MAX batches of each machine are kept, so a busy machine costs at
    most that many encodings of its state per commit."""
    replay: list = []
    if dirty.replay:
        seen: dict[bytes, int] = {}
        keep = []
        for r in reversed(dirty.replay):
            n = seen.get(r[3], 0)
            if n < REPLAY_PER_MACHINE_MAX:
                seen[r[3]] = n + 1
                keep.append(r)
        for at, chan, seq, dest, behavior, ok, failure, before, batch, after, outs in reversed(keep):
            replay.append((at, dest, _blob(chan), seq, behavior, int(ok), failure,
                           encode(before), encode(batch),
                           None if after is None else encode(after), encode(outs)))
    audit = [(at, who, name, act, detail, encode(b), encode(a))
             for at, who, name, act, detail, b, a in dirty.audit]
    return replay, audit


def _write_aux(db: sqlite3.Connection, rows: _Rows) -> None:
    """Append the replay rows (bounded per machine and in all) and the audit rows; a
    destroyed machine's replay rows go with it."""
    if rows.replay:
        _append_log(db, "replay", "(at, dest, chan, seq, behavior, ok, failure, before, "
                    "batch, after, outputs)", rows.replay, REPLAY_ROWS_MAX)
        for dest in {r[1] for r in rows.replay}:
            db.execute("DELETE FROM replay WHERE dest = ? AND id <= (SELECT id FROM replay "
                       "WHERE dest = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                       (dest, dest, REPLAY_PER_MACHINE_MAX))
    if rows.machines_gone:
        _many(db, "DELETE FROM replay WHERE dest IN (VALUES", rows.machines_gone, ")")
    if rows.audit:
        _append_log(db, "audit", "(at, who, machine, act, detail, before, after)", rows.audit,
                    AUDIT_ROWS_MAX)


class _Blobs:
    """The encodings of one commit's channels and addresses, each encoded once.

    A commit names the same few channels and machines in many rows (the history has a
    row per batch). Only keys made of exact ``bytes`` and ``str`` (an address, or tuples
    of them: every channel the core makes) are remembered: for those, equal means the
    same encoding; anything else (a number, where ``1 == 1.0 == True``) is encoded each
    time.
    """

    __slots__ = ("memo",)

    def __init__(self) -> None:
        self.memo: dict = {}

    def __call__(self, v: Any) -> bytes:
        if not _textual(v):
            return encode(v)
        got = self.memo.get(v)
        if got is None:
            got = self.memo[v] = encode(v)
        return got


def _textual(v: Any) -> bool:
    t = type(v)
    if t is bytes or t is str:
        return True
    if t is tuple:
        for x in v:
            tx = type(x)
            if tx is bytes or tx is str:
                continue
            if tx is not tuple or not _textual(x):
                return False
        return True
    return False


#: States cheap to encode and check afresh (and small ints are shared objects): never
#: taken from the memo.
_FLAT_STATES = frozenset({int, float, str, bytes, bool, type(None)})


class _Rows:
    """The encoded rows of one commit, built (and checked) before any is written."""

    def __init__(self, net: Network, dirty: Dirty, memo: dict | None = None,
                 header: Callable[[Network], bytes] = _header) -> None:
        if memo is None:
            memo = {}
        self.header = header(net)
        self.secret = net.secret if dirty.everything else None
        mach = net.machines
        keys = net.keys
        pend = net.pending
        head = net.head
        sent = net.next_seq
        rnd = net.random_n
        addrs = list(mach) if dirty.everything else dirty.machines
        self.machines: list = []
        self.machines_gone: list = []
        #: address -> (state, signal, their encodings) of the rows built here, for the
        #: store's memo once this commit is durable
        self.encoded: dict = {}
        for a in addrs:
            m = mach.get(a)
            if m is None:
                self.machines_gone.append((a,))
                continue
            st, sig = m.state, m.signal
            e = memo.get(a)
            if e is not None and e[0] is st and type(st) not in _FLAT_STATES:
                # The very state object committed before (values are immutable): the
                # encoding it had, already proven to decode.
                state = e[2]
            else:
                state = encode(st)
                decode(state)  # a state that cannot be decoded never commits
            sblob = e[3] if e is not None and e[1] is sig else _blob(sig)
            self.encoded[a] = (st, sig, state, sblob)
            self.machines.append((a, m.name, m.behavior, m.status, m.keyver, m.host,
                                  sblob, state))
        self.keys: list = []
        self.keys_gone: list = []
        for a in (list(keys) if dirty.everything else dirty.keys):
            vs = keys.get(a)
            if vs is None:
                self.keys_gone.append((a,))  # a destroyed machine's keys go with it
            else:
                self.keys.extend((a, v, k) for v, k in vs.items())
        self.queue: list = []
        self.queue_gone: list = []
        born = dirty.born
        blob = _Blobs()
        for k in (list(pend) if dirty.everything else dirty.pending):
            b = pend.get(k)
            if b is None:
                if k not in born:  # a batch made since the last commit has no row
                    self.queue_gone.append((blob(k[0]), k[1]))
            else:
                self.queue.append((blob(k[0]), k[1], _blob(b)))
        self.chans_gone: list = []
        self.chan_rows: list = []
        for c in () if dirty.everything else dirty.chans:
            cb = blob(c)
            self.chans_gone.append((cb,))
            q = head.get(c)
            while q is not None and (c, q) in pend:
                self.chan_rows.append((cb, q, _blob(pend[(c, q)])))
                q += 1
        self.applied = [(blob(c), head[c] - 1)
                        for c in (list(head) if dirty.everything else dirty.heads) if c in head]
        self.sent = [(blob(c), sent[c])
                     for c in (list(sent) if dirty.everything else dirty.sent) if c in sent]
        self.random = [(blob(r), rnd[r])
                       for r in (list(rnd) if dirty.everything else dirty.random) if r in rnd]
        self.failures = [(a, blob(c), s, blob(d), r, t) for a, c, s, d, r, t in dirty.failures]
        self.drops = [(a, blob(c), s, blob(d), r) for a, c, s, d, r in dirty.drops]
        # Only the newest HISTORY_ROWS_MAX survive the commit's trim: the older ones of a
        # large group are never written.
        hist = dirty.history[-HISTORY_ROWS_MAX:]
        self.history = [(a, blob(c), s, blob(d), int(o), n, int(r))
                        for a, c, s, d, o, n, r in hist]
        self.replay, self.audit = _aux_rows(dirty)


# ---------------------------------------------------------------------------------------
# Group commit
# ---------------------------------------------------------------------------------------


class GroupCommitter:
    """One writer thread; every commit request queued meanwhile joins the next commit.

    :meth:`submit` hands over a network snapshot and the rows it touched since the last
    request, and returns a future resolved once a commit holding them is durable (or
    failed with :class:`StoreError`). After a failure every later request fails too:
    the writer never commits a newer snapshot over a gap (a *failed* store stays failed
    until reopened; the runtime then reloads from what was committed).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cond = threading.Condition()
        self._queue: list[tuple[Network, Dirty, concurrent.futures.Future]] = []
        self._stop = False
        self.failed: StoreError | None = None
        self.group_sizes: list[int] = []  # requests per commit (the last GROUP_LOG_MAX)
        #: called in the writer thread with the number of requests of each commit
        self.on_commit: Callable[[int], None] | None = None
        self._thread = threading.Thread(target=self._run, name="avm-store-writer", daemon=True)
        self._thread.start()

    GROUP_LOG_MAX = 1000

    def submit(self, net: Network, dirty: Dirty) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        # Running from the start, so it cannot be cancelled: a waiter that is cancelled
        # (asyncio.wrap_future passes its cancellation on) must neither cancel the commit
        # for the other waiters nor make set_result raise in the writer thread.
        fut.set_running_or_notify_cancel()
        with self._cond:
            if self.failed is not None:
                fut.set_exception(self.failed)
                return fut
            if self._stop:
                fut.set_exception(StoreError("the store is closed"))
                return fut
            self._queue.append((net, dirty, fut))
            self._cond.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue and self._stop:
                    return
                work, self._queue = self._queue, []
            merged = Dirty()
            for _, d, _ in work:
                merged.merge(d)
            err: StoreError | None = None
            if self.failed is None:
                try:
                    self.store.write(work[-1][0], merged)
                except StoreError as e:
                    err = e
                except Exception as e:  # a bug: fail loudly, commit nothing more
                    err = StoreError(f"commit failed: {type(e).__name__}: {e}")
            else:
                err = self.failed
            if err is not None:
                with self._cond:
                    self.failed = err
            if len(self.group_sizes) >= self.GROUP_LOG_MAX:
                del self.group_sizes[: self.GROUP_LOG_MAX // 2]
            self.group_sizes.append(len(work))
            if self.on_commit is not None:
                self.on_commit(len(work))
            for _, _, fut in work:
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(err)

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()


# ---------------------------------------------------------------------------------------
# Operations: backup and check
# ---------------------------------------------------------------------------------------


def backup(path: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a store (and its key file) with SQLite's online backup: safe while it runs."""
    src, dst = Path(path), Path(dest)
    if not src.exists():
        raise StoreError(f"no store at {src}")
    if dst.exists():
        raise StoreError(f"{dst} exists; refusing to overwrite it")
    for a, b in ((src, dst), (Path(str(src) + KEY_FILE_SUFFIX), Path(str(dst) + KEY_FILE_SUFFIX))):
        if b.name.endswith(KEY_FILE_SUFFIX):
            os.close(os.open(b, os.O_CREAT | os.O_WRONLY, KEY_FILE_MODE))
        s = sqlite3.connect(f"file:{a}?mode=ro", uri=True)
        d = sqlite3.connect(b)
        try:
            s.backup(d)
        except sqlite3.Error as e:
            raise StoreError(f"backup of {a} failed: {e}") from e
        finally:
            d.close()
            s.close()


@dataclass(frozen=True)
class CheckReport:
    """What ``avm store check`` found."""

    path: str
    schema_version: int
    integrity: str  # "ok" or SQLite's first complaint
    machines: int
    queued: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and not self.problems


def check(path: str | os.PathLike) -> CheckReport:
    """SQLite's integrity check on both files, then decode every state and batch."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"no store at {p}")
    problems: list[str] = []
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        integrity = str(db.execute("PRAGMA integrity_check").fetchone()[0])
        kp = Path(str(p) + KEY_FILE_SUFFIX)
        if kp.exists():
            kdb = sqlite3.connect(f"file:{kp}?mode=ro", uri=True)
            try:
                ki = str(kdb.execute("PRAGMA integrity_check").fetchone()[0])
            finally:
                kdb.close()
            if ki != "ok":
                problems.append(f"key file: {ki}")
            if os.stat(kp).st_mode & 0o077:
                problems.append(f"key file {kp} is readable by others (chmod 600 it)")
        else:
            problems.append(f"key file {kp} is missing")
        version = int(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        machines = 0
        for name, state, signal in db.execute("SELECT name, state, signal FROM machines"):
            machines += 1
            for what, blob in (("state", state), ("signal", signal)):
                try:
                    decode(blob)
                except AvmError as e:
                    problems.append(f"machine {name!r}: its {what} does not decode: {e}")
        queued = 0
        for seq, blob in db.execute("SELECT seq, batch FROM queue"):
            queued += 1
            try:
                if type(decode(blob)) is not Batch:
                    problems.append(f"queued batch #{seq} is not a batch")
            except AvmError as e:
                problems.append(f"queued batch #{seq} does not decode: {e}")
        row = db.execute("SELECT value FROM meta WHERE key='header'").fetchone()
        if row is not None:
            try:
                decode(_upgrade_header(bytes(row[0])))
            except AvmError as e:
                problems.append(f"the header does not decode: {e}")
    except sqlite3.Error as e:
        raise StoreError(f"cannot check {p}: {e}") from e
    finally:
        db.close()
    return CheckReport(str(p), version, integrity, machines, queued, tuple(problems))
