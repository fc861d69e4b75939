"""Signed routing records: which network endpoints reach an address (DESIGN section 9).

    "a routing record (which host serves the machine, that host's key and endpoints,
    a sequence number, an expiry) signed by the machine's key. Resolvers verify both and
    take the newest record ... Records are self-verifying, so a hostile DHT node can
    withhold them but never forge them."

A record is **self-certifying**: it carries the subject's identity resource (the exact
bytes whose labelled hash is the subject's address, see :func:`avm.core.caps.address_of`)
and is signed by the key inside that resource. Whoever looks up address ``A`` and gets a
record checks that the resource hashes to ``A`` and that the signature verifies under
the resource's key; no certificate authority, no DNS, and no trust in the node that
handed the record over.

The record is one canonical CBOR map (:mod:`avm.core.codec`; never pickle)::

    {"v": 1, "res": <identity resource bytes>, "ep": ("127.0.0.1:7400", ...),
     "host": None | <address of the host serving the subject>,
     "seq": int, "iss": int (ms since the epoch), "exp": int (ms), "sig": <signature>}

``sig`` signs ``ROUTE_SIG_LABEL + encode(the same map without "sig")`` with
:meth:`avm.core.caps.IdentityKey.sign`, so a routing signature is never valid for any
other use of the key. Decoding is canonical (the codec refuses any other encoding of the
same value), so the signed bytes are exactly the bytes that arrived.

``host`` is for a machine whose routing goes through the host that runs it: the record
names that host's address, and the resolver looks the host up in turn (a machine that
moves publishes a newer record naming the new host). A host's own record has ``host``
None and its endpoints.

Everything here is pure: times are arguments (``now_ms``), keys are arguments.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core import codec
from ..core.caps import (
    ADDRESS_BYTES,
    ADDRESS_LABEL,
    IdentityKey,
    address_text,
    verify_identity,
    verify_signature,
)
from ..core.errors import CapabilityError, UsageError
from ..core.values import Map

__all__ = [
    "RECORD_BYTES_MAX",
    "RECORD_LIMITS",
    "ENDPOINTS_MAX",
    "ENDPOINT_CHARS_MAX",
    "TTL_MS_MAX",
    "CLOCK_SKEW_MS_MAX",
    "SEQ_MAX",
    "DHT_KEY_BYTES",
    "RecordError",
    "RouteRecord",
    "make_record",
    "decode_record",
    "verify_record",
    "dht_key",
    "check_endpoint",
    "split_endpoint",
    "newest",
    "record_order",
]

#: The largest record accepted anywhere (DHT storage, resolution, the local table).
#: An honest record is about 200 bytes; the cap keeps a store RPC well inside rpcudp's
#: 8 KiB datagram limit.
RECORD_BYTES_MAX = 2048
#: Decoding limits for a record: one map of eight entries, a tuple of endpoints.
RECORD_LIMITS = codec.Limits(bytes_max=RECORD_BYTES_MAX, depth_max=4, items_max=64)
#: Endpoints per record, and characters per endpoint (``[v6 address]:port`` fits).
ENDPOINTS_MAX = 8
ENDPOINT_CHARS_MAX = 64
#: The longest life a record may claim (one day): a record stolen from a host that
#: changed its endpoints stops being served by that time at the latest.
TTL_MS_MAX = 24 * 3600 * 1000
#: How far in the future a record's issue time may lie, for clocks that disagree.
CLOCK_SKEW_MS_MAX = 5 * 60 * 1000
SEQ_MAX = (1 << 63) - 1
TIME_MS_MAX = (1 << 63) - 1
#: Kademlia's ids are 160 bits.
DHT_KEY_BYTES = 20

ROUTE_SIG_LABEL = b"avm-route-v1\0"
DHT_KEY_LABEL = b"avm-dht-key-v1\0"
RECORD_VERSION = 1
_FIELDS = frozenset({"v", "res", "ep", "host", "seq", "iss", "exp", "sig"})


class RecordError(CapabilityError):
    """A routing record that is malformed, forged, expired, or for another address.

    ``reason`` is a short code for counters (``size``, ``decode``, ``shape``,
    ``identity``, ``signature``, ``address``, ``expired``, ``future``, ``ttl``);
    the message says what exactly is wrong. The sender's fault, never the caller's.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"routing record refused ({reason}): {detail}")


@dataclass(frozen=True, slots=True)
class RouteRecord:
    """A decoded, signature-checked routing record. ``data`` is its exact bytes."""

    address: bytes
    resource: bytes
    endpoints: tuple[str, ...]
    host: bytes | None
    seq: int
    issued_ms: int
    expires_ms: int
    signature: bytes
    data: bytes

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ms

    def __repr__(self) -> str:
        via = "" if self.host is None else f" via {address_text(self.host)[:12]}..."
        return (f"<RouteRecord {address_text(self.address)[:12]}... seq={self.seq} "
                f"{list(self.endpoints)}{via} iss={self.issued_ms} exp={self.expires_ms}>")


def dht_key(address: bytes) -> bytes:
    """The 160-bit Kademlia key under which ``address``'s record is stored.

    A labelled SHA-256 of the address, cut to 20 bytes: the DHT's key space is 160 bits,
    and the label keeps these keys apart from any other hash of an address.
    """
    if type(address) is not bytes or len(address) != ADDRESS_BYTES:
        raise UsageError(f"an address has {ADDRESS_BYTES} bytes")
    return hashlib.sha256(DHT_KEY_LABEL + address).digest()[:DHT_KEY_BYTES]


def check_endpoint(text: Any) -> str | None:
    """Why ``text`` is not an endpoint, or None: ``IPv4:port`` or ``[IPv6]:port``.

    Only IP literals (there is no DNS in the naming layer), written in their one
    canonical form, so one endpoint has one spelling and records compare by bytes.
    """
    if type(text) is not str or not (0 < len(text) <= ENDPOINT_CHARS_MAX):
        return f"an endpoint is text of 1 to {ENDPOINT_CHARS_MAX} characters"
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not port.isascii() or str(int(port)) != port:
        return f"endpoint {text!r} is not HOST:PORT"
    if not (0 < int(port) < 65536):
        return f"endpoint {text!r} has a port outside 1-65535"
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return f"endpoint {text!r} does not start with an IP address"
    want = f"[{ip}]" if ip.version == 6 else str(ip)
    if host != want:
        return f"endpoint {text!r} is not in canonical form (write {want}:{port})"
    return None


def split_endpoint(text: str) -> tuple[str, int]:
    """``"127.0.0.1:7400"`` -> ``("127.0.0.1", 7400)``; ``"[::1]:7400"`` -> ``("::1", 7400)``.

    What a dialer needs (``asyncio.open_connection(host, port)``). Raises ``UsageError``
    for text that :func:`check_endpoint` refuses.
    """
    why = check_endpoint(text)
    if why is not None:
        raise UsageError(why)
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _body(resource: bytes, endpoints: tuple[str, ...], host: bytes | None, seq: int,
          issued_ms: int, expires_ms: int) -> Map:
    return Map({"v": RECORD_VERSION, "res": resource, "ep": endpoints, "host": host,
                "seq": seq, "iss": issued_ms, "exp": expires_ms})


def _signed_bytes(body: Map) -> bytes:
    return ROUTE_SIG_LABEL + codec.encode(body, RECORD_LIMITS)


def _check_fields(endpoints: Any, host: Any, seq: Any, issued_ms: Any,
                  expires_ms: Any) -> tuple[str, str] | None:
    """(reason, detail) for fields no record may hold, or None."""
    if type(endpoints) is not tuple or len(endpoints) > ENDPOINTS_MAX:
        return "shape", f"endpoints are a tuple of at most {ENDPOINTS_MAX}"
    for ep in endpoints:
        why = check_endpoint(ep)
        if why is not None:
            return "shape", why
    if len(set(endpoints)) != len(endpoints):
        return "shape", "an endpoint is listed twice"
    if host is not None and (type(host) is not bytes or len(host) != ADDRESS_BYTES):
        return "shape", f"host is None or an address of {ADDRESS_BYTES} bytes"
    if not endpoints and host is None:
        return "shape", "a record names endpoints, a host, or both"
    for name, v, top in (("seq", seq, SEQ_MAX), ("iss", issued_ms, TIME_MS_MAX),
                         ("exp", expires_ms, TIME_MS_MAX)):
        if type(v) is not int or not (0 <= v <= top):  # bool is not int here
            return "shape", f"{name} is an int in 0..{top}"
    if expires_ms <= issued_ms:
        return "ttl", "a record expires after it is issued"
    if expires_ms - issued_ms > TTL_MS_MAX:
        return "ttl", f"a record lives at most {TTL_MS_MAX} ms"
    return None


def make_record(
    key: IdentityKey,
    endpoints: Iterable[str],
    *,
    seq: int,
    issued_ms: int,
    ttl_ms: int,
    metadata: Iterable[tuple[str, Any]] = (),
    host: bytes | None = None,
) -> RouteRecord:
    """Sign a routing record for ``key.resource(metadata)``'s address.

    ``metadata`` must be the metadata of the subject's identity resource (a machine's
    name, say), since the address is the hash of the resource with it.
    """
    eps = tuple(endpoints)
    if type(ttl_ms) is not int or type(issued_ms) is not int:
        raise UsageError("issued_ms and ttl_ms are ints (milliseconds)")
    why = _check_fields(eps, host, seq, issued_ms, issued_ms + ttl_ms)
    if why is not None:
        raise UsageError(f"cannot make a routing record: {why[1]}")
    resource = codec.encode(key.resource(metadata))
    body = _body(resource, eps, host, seq, issued_ms, issued_ms + ttl_ms)
    sig = key.sign(_signed_bytes(body))
    data = codec.encode(Map({**body, "sig": sig}), RECORD_LIMITS)
    return decode_record(data)  # the one path that builds a RouteRecord


#: Records already decoded and verified, by their exact bytes (a DHT hands the same
#: record around many times; the signature check is most of the cost of a lookup).
#: Keyed by the whole byte string, so a hit is the very bytes that were verified.
VERIFIED_CACHE_MAX = 4096
_VERIFIED: OrderedDict[bytes, RouteRecord] = OrderedDict()


def decode_record(data: Any) -> RouteRecord:
    """Decode and check a record from anywhere: size, shape, identity, signature.

    Times are not checked here (see :func:`verify_record`). Raises :class:`RecordError`.
    """
    if type(data) is not bytes:
        raise RecordError("type", f"a record is bytes, not {type(data).__name__}")
    if len(data) > RECORD_BYTES_MAX:
        raise RecordError("size", f"{len(data)} bytes exceeds {RECORD_BYTES_MAX}")
    hit = _VERIFIED.get(data)
    if hit is not None:
        _VERIFIED.move_to_end(data)
        return hit
    rec = _decode_record(data)
    _VERIFIED[data] = rec
    if len(_VERIFIED) > VERIFIED_CACHE_MAX:
        _VERIFIED.popitem(last=False)
    return rec


def _decode_record(data: bytes) -> RouteRecord:
    try:
        m = codec.decode(data, RECORD_LIMITS)
    except codec.CodecError as e:
        raise RecordError("decode", str(e)) from None
    if type(m) is not Map or set(m) != _FIELDS:
        raise RecordError("shape", f"a record is a map with keys {sorted(_FIELDS)}")
    if type(m["v"]) is not int or m["v"] != RECORD_VERSION:
        raise RecordError("shape", f"unknown record version {m['v']!r}")
    res, sig = m["res"], m["sig"]
    if type(res) is not bytes or type(sig) is not bytes:
        raise RecordError("shape", "res and sig are bytes")
    why = _check_fields(m["ep"], m["host"], m["seq"], m["iss"], m["exp"])
    if why is not None:
        raise RecordError(*why)
    address = codec.labelled_hash(ADDRESS_LABEL, res)
    try:
        resource = verify_identity(res, address)
    except CapabilityError as e:
        raise RecordError("identity", str(e)) from None
    body = Map({k: v for k, v in m.items() if k != "sig"})
    if not verify_signature(resource, _signed_bytes(body), sig):
        raise RecordError("signature", "the signature does not verify under the record's key")
    return RouteRecord(address=address, resource=res, endpoints=m["ep"], host=m["host"],
                       seq=m["seq"], issued_ms=m["iss"], expires_ms=m["exp"],
                       signature=sig, data=data)


def verify_record(data: Any, *, now_ms: int, address: bytes | None = None,
                  key: bytes | None = None) -> RouteRecord:
    """:func:`decode_record`, then: for ``address`` (or stored under DHT ``key``), and live.

    Live means not expired at ``now_ms`` and issued no later than
    ``now_ms + CLOCK_SKEW_MS_MAX``.
    """
    rec = decode_record(data)
    if address is not None and rec.address != address:
        raise RecordError("address", "the record's identity does not hash to the address asked for")
    if key is not None and dht_key(rec.address) != key:
        raise RecordError("address", "the record is stored under a key that is not its address's")
    if rec.expired(now_ms):
        raise RecordError("expired", f"expired at {rec.expires_ms}, now {now_ms}")
    if rec.issued_ms > now_ms + CLOCK_SKEW_MS_MAX:
        raise RecordError("future", f"issued at {rec.issued_ms}, more than "
                          f"{CLOCK_SKEW_MS_MAX} ms after now ({now_ms})")
    return rec


def record_order(rec: RouteRecord) -> tuple[int, int, bytes]:
    """The sort key of "newest": highest sequence, then latest issue, then bytes.

    The last part only breaks a tie between two different records with the same sequence
    and issue time (which only the key's holder can make), so every resolver picks the
    same one.
    """
    return (rec.seq, rec.issued_ms, rec.data)


def newest(records: Iterable[RouteRecord]) -> RouteRecord | None:
    """The newest of ``records`` (all for one address), or None if there are none."""
    return max(records, key=record_order, default=None)
