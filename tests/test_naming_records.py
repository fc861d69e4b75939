"""Routing records and the validating DHT storage (issue 8, item 4; DESIGN section 9).

A record is self-certifying: it carries the subject's identity resource and is signed by
its key. These tests try what a hostile DHT node can send: garbage, forged signatures,
valid records for another address, expired, oversized, non-canonical and replayed old
records. Every one is refused with its reason, by the record decoder and by the storage,
and a refusal changes nothing.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avm.core import codec
from avm.core.caps import IdentityKey, address_of
from avm.core.errors import UsageError
from avm.core.values import Map
from avm.naming import records
from avm.naming.records import (
    CLOCK_SKEW_MS_MAX,
    RECORD_BYTES_MAX,
    TTL_MS_MAX,
    RecordError,
    check_endpoint,
    decode_record,
    dht_key,
    make_record,
    newest,
    verify_record,
)
from avm.naming.storage import RecordStorage

KEY_A = IdentityKey.from_seed(b"naming-test-a" * 3)
KEY_B = IdentityKey.from_seed(b"naming-test-b" * 3)
KEY_C = IdentityKey.from_seed(b"naming-test-c" * 3, "ed448")
T0 = 1_700_000_000_000
MINUTE = 60_000


def rec(key: IdentityKey = KEY_A, *, seq: int = 1, issued: int = T0, ttl: int = 10 * MINUTE,
        endpoints: tuple[str, ...] = ("127.0.0.1:7400",), **kw):
    return make_record(key, endpoints, seq=seq, issued_ms=issued, ttl_ms=ttl, **kw)


def signed(key: IdentityKey, body: dict, sig: bytes | None = None) -> bytes:
    """Sign an arbitrary body the way make_record does (to build records it refuses)."""
    m = Map(body)
    sig = key.sign(records.ROUTE_SIG_LABEL + codec.encode(m)) if sig is None else sig
    return codec.encode(Map({**body, "sig": sig}))


def body(key: IdentityKey = KEY_A, **over) -> dict:
    b = {"v": 1, "res": codec.encode(key.resource()), "ep": ("127.0.0.1:7400",),
         "host": None, "seq": 1, "iss": T0, "exp": T0 + MINUTE}
    b.update(over)
    return b


def refused(data, reason: str, **kw) -> None:
    with pytest.raises(RecordError) as e:
        verify_record(data, now_ms=kw.pop("now_ms", T0), **kw)
    assert e.value.reason == reason, str(e.value)


# -- records ---------------------------------------------------------------------------


def test_a_record_names_its_address_and_round_trips():
    r = rec()
    assert r.address == address_of(KEY_A.resource())
    assert r.endpoints == ("127.0.0.1:7400",) and r.seq == 1 and r.host is None
    assert (r.issued_ms, r.expires_ms) == (T0, T0 + 10 * MINUTE)
    again = verify_record(r.data, now_ms=T0 + 1, address=r.address, key=dht_key(r.address))
    assert again == r and again.data == r.data
    assert len(r.data) < 300  # an honest record is small


def test_ed448_and_machine_records_with_metadata_and_host():
    host_addr = rec().address
    r = rec(KEY_C, endpoints=(), metadata=(("name", "counter"),), host=host_addr)
    assert r.address == address_of(KEY_C.resource((("name", "counter"),)))
    assert r.host == host_addr and r.endpoints == ()
    assert decode_record(r.data) == r


ENDPOINT = st.one_of(
    st.builds(lambda a, p: f"{a}:{p}", st.ip_addresses(v=4), st.integers(1, 65535)),
    st.builds(lambda a, p: f"[{a}]:{p}", st.ip_addresses(v=6), st.integers(1, 65535)),
)


@given(eps=st.lists(ENDPOINT, min_size=1, max_size=8, unique=True),
       seq=st.integers(0, records.SEQ_MAX), issued=st.integers(0, 2**62),
       ttl=st.integers(1, TTL_MS_MAX), name=st.text(max_size=40),
       with_host=st.booleans())
def test_encode_decode_round_trip(eps, seq, issued, ttl, name, with_host):
    host = rec().address if with_host else None
    r = make_record(KEY_A, eps, seq=seq, issued_ms=issued, ttl_ms=ttl,
                    metadata=(("name", name),), host=host)
    d = decode_record(r.data)
    assert d == r
    assert (d.endpoints, d.seq, d.issued_ms, d.expires_ms - d.issued_ms, d.host) == (
        tuple(eps), seq, issued, ttl, host)
    assert d.address == address_of(KEY_A.resource((("name", name),)))
    # the bytes are canonical: encoding the decoded map again gives them back
    assert codec.encode(codec.decode(r.data)) == r.data


@given(st.binary(max_size=600))
def test_any_bytes_decode_or_raise_record_error(data):
    try:
        r = decode_record(data)
    except RecordError as e:
        assert e.reason in {"size", "decode", "shape", "identity", "signature", "ttl"}
    else:  # pragma: no cover - would need a forged signature
        pytest.fail(f"random bytes decoded as a record: {r}")


def test_every_single_byte_change_is_refused():
    data = rec().data
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            mutated = data[:i] + bytes([data[i] ^ flip]) + data[i + 1:]
            with pytest.raises(RecordError):
                decode_record(mutated)
    for cut in range(len(data)):
        with pytest.raises(RecordError):
            decode_record(data[:cut])


def test_forged_signature_is_refused():
    # the body names A's identity, the signature is B's
    forged = signed(KEY_B, body(KEY_A))
    refused(forged, "signature")
    # a signature copied from another valid record of A does not move over either
    other = rec(seq=2)
    refused(signed(KEY_A, body(KEY_A), sig=other.signature), "signature")
    # nor a signature over the same bytes made for another purpose (no route label)
    plain = KEY_A.sign(codec.encode(Map(body(KEY_A))))
    refused(signed(KEY_A, body(KEY_A), sig=plain), "signature")


def test_wrong_key_for_the_address_is_refused():
    b_rec = rec(KEY_B)  # valid, but B's
    a_addr = rec(KEY_A).address
    refused(b_rec.data, "address", address=a_addr)
    refused(b_rec.data, "address", key=dht_key(a_addr))
    # B signing a record that carries A's resource is a forged signature
    refused(signed(KEY_B, body(KEY_A)), "signature")


def test_expired_future_and_overlong_records_are_refused():
    r = rec(ttl=MINUTE)
    verify_record(r.data, now_ms=T0 + MINUTE - 1)
    refused(r.data, "expired", now_ms=T0 + MINUTE)
    refused(r.data, "future", now_ms=T0 - CLOCK_SKEW_MS_MAX - 1)
    verify_record(r.data, now_ms=T0 - CLOCK_SKEW_MS_MAX)
    refused(signed(KEY_A, body(exp=T0 + TTL_MS_MAX + 1)), "ttl")
    refused(signed(KEY_A, body(exp=T0)), "ttl")
    with pytest.raises(UsageError):
        rec(ttl=TTL_MS_MAX + 1)
    with pytest.raises(UsageError):
        rec(ttl=0)


def test_oversized_and_garbage_are_refused():
    refused(b"\xa0" * (RECORD_BYTES_MAX + 1), "size")
    refused(b"", "decode")
    refused(b"\xff\x00garbage", "decode")
    refused("text", "type")
    refused(bytearray(rec().data), "type")
    refused(codec.encode((1, 2, 3)), "shape")
    refused(signed(KEY_A, {**body(), "extra": 1}), "shape")
    # a valid signature over a resource with a large name is still too large
    big_meta = (("name", "x" * RECORD_BYTES_MAX),)
    refused(signed(KEY_A, body(res=codec.encode(KEY_A.resource(big_meta)))), "size")


@pytest.mark.parametrize("field,value", [
    ("seq", True), ("seq", -1), ("seq", 1.0), ("iss", None), ("v", 2), ("v", True),
    ("ep", "127.0.0.1:1"), ("ep", ()), ("ep", ("127.0.0.1:1", "127.0.0.1:1")),
    ("ep", tuple(f"127.0.0.1:{i}" for i in range(1, 10))), ("host", b"short"),
    ("res", b"\xa0"), ("res", "text"),
])
def test_fields_of_the_wrong_type_or_range_are_refused_even_when_signed(field, value):
    with pytest.raises(RecordError) as e:
        decode_record(signed(KEY_A, body(**{field: value})))
    assert e.value.reason in {"shape", "identity", "decode"}


def test_non_canonical_encoding_is_refused():
    data = rec().data
    m = codec.decode(data)
    import cbor2
    loose = cbor2.dumps({k: m[k] for k in sorted(m, reverse=True)})  # keys out of order
    assert loose != data
    refused(loose, "decode")


@pytest.mark.parametrize("text", [
    "127.0.0.1:7400", "[::1]:7400", "10.1.2.3:1", "[2001:db8::1]:65535"])
def test_good_endpoints(text):
    assert check_endpoint(text) is None


def test_split_endpoint_gives_what_a_dialer_needs():
    assert records.split_endpoint("127.0.0.1:7400") == ("127.0.0.1", 7400)
    assert records.split_endpoint("[::1]:1") == ("::1", 1)
    with pytest.raises(UsageError):
        records.split_endpoint("localhost:7400")


@pytest.mark.parametrize("text", [
    "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:07400", "127.000.0.1:1",
    "::1:7400", "[::01]:1", "[0:0:0:0:0:0:0:1]:1", "localhost:80", "example.org:443",
    ":80", "127.0.0.1:+1", "127.0.0.1:١", "", "1.2.3.4:5" + "0" * 70, 7400, None])
def test_bad_endpoints(text):
    assert check_endpoint(text) is not None


def test_newest_prefers_sequence_then_issue_time():
    a1 = rec(seq=1, issued=T0 + 5000)
    a2 = rec(seq=2, issued=T0)
    a2_later = rec(seq=2, issued=T0 + 1)
    assert newest([a1, a2]) is a2
    assert newest([a2_later, a1, a2]) is a2_later
    assert newest([]) is None
    # a tie in (seq, issued) between two different records is broken by bytes, the same
    # way everywhere
    x = rec(seq=3, endpoints=("127.0.0.1:1",))
    y = rec(seq=3, endpoints=("127.0.0.1:2",))
    assert newest([x, y]) is newest([y, x])


def test_make_record_refuses_bad_fields():
    for bad in [dict(seq=-1), dict(seq=True), dict(endpoints=("nowhere",)),
                dict(endpoints=()), dict(host=b"x")]:
        with pytest.raises(UsageError):
            rec(**bad)


# -- storage ---------------------------------------------------------------------------


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms
        self.mono = 0.0

    def __call__(self) -> int:
        return self.ms


def storage(records_max: int = 100) -> tuple[RecordStorage, Clock]:
    clock = Clock()
    return RecordStorage(clock_ms=clock, monotonic=lambda: clock.mono,
                         records_max=records_max), clock


def test_storage_keeps_valid_records_under_their_key():
    s, _ = storage()
    r = rec()
    k = dht_key(r.address)
    assert s.offer(k, r.data) is None
    assert s.get(k) == r.data and s[k] == r.data and list(s) == [(k, r.data)]
    assert s.statistics().records == 1 and s.statistics().accepted == 1


@pytest.mark.parametrize("case,reason", [
    ("garbage", "decode"), ("text", "type"), ("int", "type"), ("oversized", "size"),
    ("forged", "signature"), ("wrong-key", "address"), ("expired", "expired"),
    ("bad-dht-key", "key"), ("future", "future")])
def test_storage_refuses(case, reason):
    s, clock = storage()
    good = rec()
    k = dht_key(good.address)
    value = {
        "garbage": b"\x00garbage", "text": "a record", "int": 7,
        "oversized": b"\x40" * (RECORD_BYTES_MAX + 1),
        "forged": signed(KEY_B, body(KEY_A)),
        "wrong-key": rec(KEY_B).data,
        "expired": rec(issued=T0 - 2 * MINUTE, ttl=MINUTE).data,
        "bad-dht-key": good.data,
        "future": rec(issued=T0 + CLOCK_SKEW_MS_MAX + 1).data,
    }[case]
    key = [k] if case != "bad-dht-key" else ["short", k + b"x", None]
    for kk in key:
        assert s.offer(kk, value) == reason
        with pytest.raises(RecordError):
            s[kk] = value
    assert len(s) == 0 and s.get(k) is None
    st_ = s.statistics()
    assert st_.accepted == 0 and st_.refused == {reason: 2 * len(key)}


def test_storage_keeps_the_newest_and_refuses_replays():
    s, _ = storage()
    old, new = rec(seq=1), rec(seq=2, endpoints=("127.0.0.1:7500",))
    k = dht_key(old.address)
    assert s.offer(k, old.data) is None
    assert s.offer(k, new.data) is None
    assert s.get(k) == new.data
    assert s.offer(k, old.data) == "stale"  # a replayed old record cannot push it out
    same_seq_later = rec(seq=2, issued=T0 + 1, endpoints=("127.0.0.1:7500",))
    assert s.offer(k, same_seq_later.data) is None
    assert s.offer(k, new.data) == "stale"
    assert s.offer(k, same_seq_later.data) is None  # the same bytes again: a refresh
    assert s.get(k) == same_seq_later.data


def test_storage_forgets_expired_records_and_then_takes_older_ones():
    s, clock = storage()
    r = rec(seq=5, ttl=MINUTE)
    k = dht_key(r.address)
    s[k] = r.data
    clock.ms = T0 + MINUTE
    assert s.get(k) is None and len(s) == 0
    assert list(s) == []
    with pytest.raises(KeyError):
        s[k]
    later = rec(seq=1, issued=T0 + MINUTE, ttl=MINUTE)  # lower seq, but the other expired
    assert s.offer(k, later.data) is None


def test_storage_is_bounded():
    s, clock = storage(records_max=3)
    keys = [IdentityKey.from_seed(bytes([i]) * 32) for i in range(5)]
    short = [rec(k, ttl=MINUTE) for k in keys[:3]]
    for r in short:
        assert s.offer(dht_key(r.address), r.data) is None
    r4 = rec(keys[3], ttl=10 * MINUTE)
    assert s.offer(dht_key(r4.address), r4.data) == "full"
    # an update of a held key still goes in when full
    up = rec(keys[0], seq=2, ttl=MINUTE)
    assert s.offer(dht_key(up.address), up.data) is None
    clock.ms = T0 + MINUTE  # the three expire: room again
    r4 = rec(keys[3], issued=clock.ms, ttl=10 * MINUTE)
    assert s.offer(dht_key(r4.address), r4.data) is None
    assert len(s) == 1


def test_storage_reports_records_older_than_for_republication():
    s, clock = storage()
    a, b = rec(KEY_A), rec(KEY_B)
    s[dht_key(a.address)] = a.data
    clock.mono = 100.0
    s[dht_key(b.address)] = b.data
    clock.mono = 150.0
    assert s.iter_older_than(60) == [(dht_key(a.address), a.data)]
    assert len(s.iter_older_than(10)) == 2


def test_naming_imports_only_the_core_of_avm():
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "src" / "avm" / "naming"
    bad = []
    for path in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level == 2 and not mod.startswith("core"):
                    bad.append(f"{path.name}: from ..{mod}")
                if node.level == 0 and mod.startswith("avm") and not mod.startswith(
                        ("avm.core", "avm.naming")):
                    bad.append(f"{path.name}: from {mod}")
            elif isinstance(node, ast.Import):
                bad += [f"{path.name}: import {a.name}" for a in node.names
                        if a.name.startswith("avm") and not a.name.startswith("avm.core")]
    assert len(list(pkg.glob("*.py"))) >= 6 and bad == []
