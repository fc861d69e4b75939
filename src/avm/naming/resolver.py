"""Publishing and resolving routing records, with or without a DHT (DESIGN section 9).

    "Resolvers verify both and take the newest record; a machine that moves publishes
    a newer record ... A single host needs no DHT."

:class:`Naming` is one identity's view of the naming layer:

* it **publishes** its own record (signed with its key) into a local table and, when a
  :class:`~avm.naming.dht.DhtNode` is configured, into the DHT; ``start()`` runs a task
  that publishes again every ``republish_seconds``, well before the record's
  ``ttl_seconds`` run out, so the DHT never serves a record that is about to expire;
* it **resolves** an address by taking every candidate it can get (its local table and
  the DHT's closest nodes), verifying each (signature, identity hashes to the address,
  live), and keeping the newest: highest sequence, then latest issue time;
* it **learns** records handed to it some other way (a configuration file, a peer's
  hello), verified the same way; with no DHT the local table is all there is, and a host
  alone, or a few hosts told of each other, still resolve.

Sequence numbers start at the wall-clock millisecond when the ``Naming`` is made (unless
given), so a host that restarts without remembering its last sequence still publishes
above it; changing endpoints raises the sequence, and republication keeps it and only
renews the issue and expiry times.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..core.caps import IdentityKey, address_of
from ..core.errors import UsageError
from .dht import DhtNode
from .records import (
    SEQ_MAX,
    TTL_MS_MAX,
    RecordError,
    RouteRecord,
    make_record,
    record_order,
    verify_record,
)
from .storage import wall_ms

__all__ = ["Naming", "NamingStatistics", "LOCAL_RECORDS_MAX", "HOST_HOPS_MAX"]

log = logging.getLogger(__name__)

#: Records the local table keeps (least recently learned dropped first).
LOCAL_RECORDS_MAX = 10_000
#: How many ``host`` indirections :meth:`Naming.resolve_endpoints` follows.
HOST_HOPS_MAX = 2


@dataclass(frozen=True)
class NamingStatistics:
    """Counters of one :class:`Naming`: what was published, resolved and refused."""

    published: int
    republish_failures: int
    resolved: int
    unresolved: int
    local_records: int
    refused: dict[str, int]


class Naming:
    """Publish ``key``'s routing record and resolve others', through a DHT or alone."""

    def __init__(
        self,
        key: IdentityKey,
        endpoints: Iterable[str] = (),
        *,
        dht: DhtNode | None = None,
        clock_ms: Callable[[], int] = wall_ms,
        ttl_seconds: float = 3600.0,
        republish_seconds: float | None = None,
        metadata: Iterable[tuple[str, Any]] = (),
        host: bytes | None = None,
        seq: int | None = None,
        local_max: int = LOCAL_RECORDS_MAX,
    ) -> None:
        self.key = key
        self.endpoints = tuple(endpoints)
        self.dht = dht
        self.clock_ms = clock_ms
        self.ttl_ms = int(ttl_seconds * 1000)
        if not (0 < self.ttl_ms <= TTL_MS_MAX):
            raise UsageError(f"ttl_seconds is in (0, {TTL_MS_MAX // 1000}]")
        self.republish_seconds = (ttl_seconds / 3 if republish_seconds is None
                                  else republish_seconds)
        if not (0 < self.republish_seconds < ttl_seconds):
            raise UsageError("republish_seconds must be positive and below ttl_seconds, "
                             "or records expire before they are renewed")
        self.metadata = tuple(metadata)
        self.host = host
        self.seq = clock_ms() if seq is None else seq
        self.local: OrderedDict[bytes, RouteRecord] = OrderedDict()
        self.local_max = local_max
        self.current: RouteRecord | None = None
        #: How many DHT nodes took the last published record (None: no DHT).
        self.last_stored: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._published = self._republish_failures = self._resolved = self._unresolved = 0
        self.refused: Counter[str] = Counter()
        self.address = address_of(key.resource(self.metadata))
        if self.endpoints or self.host is not None:
            self.record()  # refuse bad endpoints now, not in the republication task

    # -- own record -----------------------------------------------------------------

    def record(self) -> RouteRecord:
        """A fresh record of this identity: current endpoints and sequence, issued now."""
        return make_record(self.key, self.endpoints, seq=self.seq, issued_ms=self.clock_ms(),
                           ttl_ms=self.ttl_ms, metadata=self.metadata, host=self.host)

    def set_endpoints(self, endpoints: Iterable[str], host: bytes | None = None) -> None:
        """New endpoints (or a new host): the next record has a higher sequence."""
        self.endpoints = tuple(endpoints)
        self.host = host
        self.seq = min(SEQ_MAX, max(self.seq + 1, self.clock_ms()))
        self.record()  # refuse bad endpoints now, not in the republication task

    async def publish(self) -> RouteRecord:
        """Sign a fresh record, keep it locally and store it in the DHT (if any)."""
        rec = self.record()
        self.current = rec
        self._keep(rec)
        if self.dht is not None:
            self.last_stored = await self.dht.put(rec)
        self._published += 1
        return rec

    def start(self) -> None:
        """Run the republication task (publishes at once, then every period)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._republish_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _republish_loop(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception:  # the network's or a bug's fault: counted, retried next period
                self._republish_failures += 1
                log.exception("republishing the routing record failed")
            await asyncio.sleep(self.republish_seconds)

    # -- other records --------------------------------------------------------------

    def learn(self, data: bytes, address: bytes | None = None) -> RouteRecord:
        """Verify a record handed over outside the DHT and keep it if it is the newest.

        Raises :class:`~avm.naming.records.RecordError` (and keeps nothing) if invalid.
        """
        try:
            rec = verify_record(data, now_ms=self.clock_ms(), address=address)
        except RecordError as e:
            self.refused[e.reason] += 1
            raise
        self._keep(rec)
        return rec

    def _keep(self, rec: RouteRecord) -> None:
        held = self.local.get(rec.address)
        if held is not None and not held.expired(self.clock_ms()) \
                and record_order(held) >= record_order(rec):
            return
        self.local.pop(rec.address, None)
        self.local[rec.address] = rec
        while len(self.local) > self.local_max:
            self.local.popitem(last=False)

    def _local(self, address: bytes) -> RouteRecord | None:
        rec = self.local.get(address)
        if rec is not None and rec.expired(self.clock_ms()):
            del self.local[address]
            return None
        return rec

    async def resolve(self, address: bytes) -> RouteRecord | None:
        """The newest valid, live record for ``address``, or None if there is none.

        Candidates come from the local table and, if configured, the DHT (which checks
        every value it is handed); the newest is kept locally, so a later lookup without
        the DHT still finds it until it expires.
        """
        candidates = [r for r in (self._local(address),) if r is not None]
        if self.dht is not None:
            found = await self.dht.get(address)
            if found.record is not None:
                candidates.append(found.record)
            if found.invalid:
                self.refused["dht"] += found.invalid
        best = max(candidates, key=record_order, default=None)
        if best is None:
            self._unresolved += 1
            return None
        self._keep(best)
        self._resolved += 1
        return best

    async def resolve_endpoints(self, address: bytes) -> tuple[str, ...]:
        """The endpoints that reach ``address``, following ``host`` records (bounded)."""
        seen: set[bytes] = set()
        for _ in range(HOST_HOPS_MAX + 1):
            if address in seen:
                break
            seen.add(address)
            rec = await self.resolve(address)
            if rec is None:
                return ()
            if rec.endpoints or rec.host is None:
                return rec.endpoints
            address = rec.host
        return ()

    def statistics(self) -> NamingStatistics:
        return NamingStatistics(self._published, self._republish_failures, self._resolved,
                                self._unresolved, len(self.local), dict(self.refused))
