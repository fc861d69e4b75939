"""Naming: identity and signed routing records over a Kademlia DHT (DESIGN section 9).

A shell package: it may import :mod:`avm.core`, never the reverse.

* :mod:`avm.naming.records`: the signed, self-certifying routing record (pure);
* :mod:`avm.naming.storage`: the DHT storage that keeps only valid records;

See docs/naming.md for the records, the checks and the threat model.
"""

from .records import (
    RecordError,
    RouteRecord,
    decode_record,
    dht_key,
    make_record,
    newest,
    verify_record,
)
from .storage import RecordStorage

__all__ = [
    "RecordError",
    "RouteRecord",
    "RecordStorage",
    "decode_record",
    "dht_key",
    "make_record",
    "newest",
    "verify_record",
]
