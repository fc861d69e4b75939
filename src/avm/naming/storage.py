"""A Kademlia storage that holds only valid routing records (DESIGN section 9).

    "Build on an existing Kademlia implementation (the asyncio kademlia package, with a
    storage layer that validates what it stores)"

The ``kademlia`` package stores whatever a peer sends in a STORE RPC. Every DHT node of
ours uses :class:`RecordStorage` instead, which refuses, before keeping anything:

* a value that is not ``bytes`` or is over ``RECORD_BYTES_MAX`` (a peer may send any
  msgpack value);
* bytes that do not decode as a record, or whose signature does not verify under the key
  inside the record (:func:`~avm.naming.records.decode_record`);
* a record stored under a DHT key that is not ``dht_key(record address)``, so nobody can
  park a valid record under someone else's key;
* a record that has expired, or is issued implausibly far in the future;
* a record older than (or as old as, but different from) the one already held for that
  key: a replayed old record cannot push out a newer one;
* a new key when ``records_max`` keys are held (after dropping expired ones): the table
  is bounded, and a flood of fresh identities is refused rather than evicting others.

Values are bytes in and bytes out; nothing is ever unpickled. Refusals are counted by
reason (:meth:`RecordStorage.statistics`).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kademlia.storage import IStorage

from .records import DHT_KEY_BYTES, RecordError, RouteRecord, record_order, verify_record

__all__ = ["RecordStorage", "StorageStatistics", "RECORDS_MAX"]

#: Keys one node holds at most.
RECORDS_MAX = 100_000


@dataclass(frozen=True)
class StorageStatistics:
    """A snapshot of a storage's counters: records held, stores accepted, refusals."""

    records: int
    accepted: int
    refused: dict[str, int]


def wall_ms() -> int:
    return int(time.time() * 1000)


class RecordStorage(IStorage):
    """``kademlia.storage.IStorage`` over verified :class:`RouteRecord` values.

    ``clock_ms`` gives the wall-clock time in milliseconds (records expire by it);
    ``monotonic`` the time used for the package's "older than" republication.
    """

    def __init__(self, *, clock_ms: Callable[[], int] = wall_ms,
                 monotonic: Callable[[], float] = time.monotonic,
                 records_max: int = RECORDS_MAX) -> None:
        self.clock_ms = clock_ms
        self.monotonic = monotonic
        self.records_max = records_max
        # key -> (monotonic time stored, record); oldest store first
        self.data: OrderedDict[bytes, tuple[float, RouteRecord]] = OrderedDict()
        self.accepted = 0
        self.refused: Counter[str] = Counter()

    # -- the check ------------------------------------------------------------------

    def offer(self, key: Any, value: Any) -> str | None:
        """Store ``value`` under ``key`` if it passes every check; the refusal, or None."""
        why = self._check(key, value)
        if why is None:
            self.accepted += 1
        else:
            self.refused[why] += 1
        return why

    def _check(self, key: Any, value: Any) -> str | None:
        if type(key) is not bytes or len(key) != DHT_KEY_BYTES:
            return "key"
        now = self.clock_ms()
        try:
            rec = verify_record(value, now_ms=now, key=key)
        except RecordError as e:
            return e.reason
        held = self.data.get(key)
        if held is not None and not held[1].expired(now):
            if held[1].data == rec.data:
                self.data.move_to_end(key)  # the same record again: a refresh
                self.data[key] = (self.monotonic(), rec)
                return None
            if record_order(held[1]) >= record_order(rec):
                return "stale"
        elif len(self.data) >= self.records_max:
            self.cull()
            if len(self.data) >= self.records_max:
                return "full"
        self.data.pop(key, None)
        self.data[key] = (self.monotonic(), rec)
        return None

    def record(self, key: bytes) -> RouteRecord | None:
        """The live record held under ``key``, or None (an expired one is dropped)."""
        held = self.data.get(key)
        if held is None:
            return None
        if held[1].expired(self.clock_ms()):
            del self.data[key]
            return None
        return held[1]

    def cull(self) -> None:
        """Drop every expired record."""
        now = self.clock_ms()
        for k in [k for k, (_, r) in self.data.items() if r.expired(now)]:
            del self.data[k]

    def statistics(self) -> StorageStatistics:
        return StorageStatistics(len(self.data), self.accepted, dict(self.refused))

    # -- IStorage ---------------------------------------------------------------------

    def __setitem__(self, key: bytes, value: bytes) -> None:
        why = self.offer(key, value)
        if why is not None:
            raise RecordError(why, "refused by the DHT storage")

    def __getitem__(self, key: bytes) -> bytes:
        rec = self.record(key)
        if rec is None:
            raise KeyError(key)
        return rec.data

    def get(self, key: bytes, default: Any = None) -> Any:
        rec = self.record(key) if type(key) is bytes else None
        return default if rec is None else rec.data

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        self.cull()
        born_before = self.monotonic() - seconds_old
        return [(k, r.data) for k, (t, r) in self.data.items() if t <= born_before]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        self.cull()
        return iter([(k, r.data) for k, (_, r) in self.data.items()])

    def __len__(self) -> int:
        return len(self.data)
