"""Naming: identity and signed routing records over a Kademlia DHT (DESIGN section 9).

A shell package: it may import :mod:`avm.core`, never the reverse.

* :mod:`avm.naming.records`: the signed, self-certifying routing record (pure);
* :mod:`avm.naming.storage`: the DHT storage that keeps only valid records;
* :mod:`avm.naming.dht`: a Kademlia node (the ``kademlia`` package) over that storage;
* :mod:`avm.naming.resolver`: :class:`Naming`, publish, republish, resolve (DHT or alone);

See docs/naming.md for the records, the checks and the threat model.
"""

from .dht import DhtNode, Lookup
from .records import (
    RecordError,
    RouteRecord,
    decode_record,
    dht_key,
    make_record,
    newest,
    verify_record,
)
from .resolver import Naming
from .storage import RecordStorage

__all__ = [
    "DhtNode",
    "Lookup",
    "Naming",
    "RecordError",
    "RouteRecord",
    "RecordStorage",
    "decode_record",
    "dht_key",
    "make_record",
    "newest",
    "verify_record",
]
