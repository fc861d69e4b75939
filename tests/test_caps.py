"""Capabilities, Self, identity resources and addresses (DESIGN section 5)."""

from __future__ import annotations

import base64
import hashlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avm.core import codec
from avm.core.caps import (
    Capability,
    IdentityKey,
    Keyring,
    SealingKey,
    Self,
    SivSealer,
    SivUnsealer,
    address_of,
    address_text,
    commons_cap,
    identity_resource,
    parse_address,
    seal_context,
    siv_sealer_pair,
    unseal_context,
    verify_identity,
    verify_signature,
)
from avm.core.errors import (
    CapabilityError,
    CodecError,
    SubstructuralError,
    UnsealError,
    ValueRuleError,
)
from avm.core.values import (
    AFFINE,
    LINEAR,
    RELEVANT,
    UNRESTRICTED,
    Affine,
    Fraction,
    Linear,
    Map,
    Relevant,
    Sealer,
    Unsealer,
    check_conservation,
    check_value,
    substructural_items,
)

# ---------------------------------------------------------------------------------------
# Fixtures: one machine "a" and one machine "b", each with identity and sealing keys
# ---------------------------------------------------------------------------------------


class Machine:
    def __init__(self, name: bytes, alg: str = "ed25519") -> None:
        self.identity = IdentityKey.from_seed(name, alg)
        self.resource = self.identity.resource([("name", name.decode())])
        self.address = address_of(self.resource)
        self.key = SealingKey.from_seed(b"siv-" + name)
        self.keyring = Keyring(self.address, self.key)
        self.self = Self(self.address, self.key.version, self.key)


A = Machine(b"a")
B = Machine(b"b")


def _rebuild(cap: Capability, **changes) -> Capability:
    fields = dict(
        address=cap.address,
        keyver=cap.keyver,
        kind=cap.kind,
        priority=cap.priority,
        sealed=cap.sealed,
    )
    fields.update(changes)
    return Capability(**fields)


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.floats(allow_nan=False),
    st.fractions().map(lambda f: Fraction(f.numerator, f.denominator)),
)
plain_values = st.recursive(
    _leaves,
    lambda ch: st.one_of(
        st.lists(ch, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=4), ch, max_size=4).map(Map),
    ),
    max_leaves=10,
)
contexts = st.recursive(
    _leaves,
    lambda ch: st.one_of(
        st.lists(ch, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=4), ch, max_size=4).map(Map),
        ch.map(Linear),
        ch.map(Affine),
        ch.map(Relevant),
    ),
    max_leaves=10,
)
priorities = st.one_of(
    st.floats(min_value=-1.0, max_value=1.0), st.sampled_from([-1.0, 0.0, -0.0, 1.0, 0.5])
)


# ---------------------------------------------------------------------------------------
# Identity and addresses
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg, key_len", [("ed25519", 32), ("ed448", 57)])
def test_identity_resource_and_address(alg, key_len):
    k = IdentityKey.from_seed(b"seed", alg)
    assert k.alg == alg
    assert len(k.public_bytes) == key_len
    assert IdentityKey.from_seed(b"seed", alg).public_bytes == k.public_bytes
    assert IdentityKey.from_seed(b"other", alg).public_bytes != k.public_bytes
    res = k.resource([("name", "shop"), ("v", 2)])
    assert res == identity_resource(k.public_bytes, alg, [("name", "shop"), ("v", 2)])
    assert set(res) == {"key", "alg", "meta"}
    assert res["key"] == k.public_bytes and res["alg"] == alg
    assert res["meta"] == (("name", "shop"), ("v", 2))
    addr = address_of(res)
    assert addr == hashlib.sha256(b"avm-address-v1\0" + codec.encode(res)).digest()
    assert len(addr) == 32
    assert verify_identity(codec.encode(res), addr) == res
    # metadata is part of the identity
    assert address_of(k.resource([("name", "shop2"), ("v", 2)])) != addr
    sig = k.sign(b"hello")
    assert verify_signature(res, b"hello", sig)
    assert not verify_signature(res, b"hellO", sig)
    assert not verify_signature(res, b"hello", bytes([sig[0] ^ 1]) + sig[1:])


def test_algorithms_give_different_addresses():
    a = address_of(IdentityKey.from_seed(b"s", "ed25519").resource())
    b = address_of(IdentityKey.from_seed(b"s", "ed448").resource())
    assert a != b


def test_verify_identity_rejects_wrong_hash_and_wrong_shape():
    res_bytes = codec.encode(A.resource)
    with pytest.raises(CapabilityError):
        verify_identity(res_bytes, B.address)
    with pytest.raises(CapabilityError):
        verify_identity(res_bytes, bytes([A.address[0] ^ 1]) + A.address[1:])
    with pytest.raises(CapabilityError):
        verify_identity(res_bytes + b"\x00", A.address)
    # B's resource, presented as A's
    with pytest.raises(CapabilityError):
        verify_identity(codec.encode(B.resource), A.address)
    # something that hashes right but is not an identity resource
    pub = A.identity.public_bytes
    for v in [
        Map({"key": pub, "alg": "rsa", "meta": ()}),
        Map({"key": pub}),
        Map({"key": pub, "alg": "ed25519", "meta": (), "extra": 1}),
        Map({"key": 5, "alg": "ed25519", "meta": ()}),
        Map({"key": pub[:31], "alg": "ed25519", "meta": ()}),
        Map({"key": pub, "alg": "ed448", "meta": ()}),  # an ed25519 key is too short
        (1, 2),
    ]:
        b = codec.encode(v)
        with pytest.raises(CapabilityError):
            verify_identity(b, hashlib.sha256(b"avm-address-v1\0" + b).digest())
    # bytes that hash right but do not decode are a bad identity, not a crash
    for garbage in [b"", b"\xff", b"\x9f\x01\xff", codec.encode(A.resource) + b"\x00"]:
        with pytest.raises(CapabilityError):
            verify_identity(garbage, hashlib.sha256(b"avm-address-v1\0" + garbage).digest())


def test_identity_refusals():
    with pytest.raises(CapabilityError):
        IdentityKey.from_seed(b"s", "rsa")
    with pytest.raises(CapabilityError):
        identity_resource(b"k" * 32, "ed999")
    with pytest.raises(CapabilityError):
        identity_resource(b"k" * 32, "ed25519", [(1, "x")])
    assert "ed25519" in repr(IdentityKey.from_seed(b"s"))


@given(st.binary(min_size=32, max_size=32))
def test_address_text_round_trip(addr):
    text = address_text(addr)
    assert text == text.lower() and "=" not in text
    assert parse_address(text) == addr
    assert parse_address(text.upper()) == addr


@pytest.mark.parametrize(
    "text", ["", "!!!", "a" * 10, address_text(b"x" * 31), address_text(b"x" * 33), "0189" * 13]
)
def test_parse_address_refuses(text):
    with pytest.raises(CapabilityError):
        parse_address(text)


# ---------------------------------------------------------------------------------------
# Self and sealing
# ---------------------------------------------------------------------------------------


def test_self_is_deterministic():
    ctx = ("withdraw", Map({"account": 7}))
    c1 = A.self(ctx)
    c2 = A.self(("withdraw", Map({"account": 7})))
    c3 = Self(A.address, 0, SealingKey.from_seed(b"siv-a"))(ctx)
    assert c1 == c2 == c3 and c1.sealed == c2.sealed == c3.sealed
    assert hash(c1) == hash(c2)
    assert A.self(("withdraw", Map({"account": 8}))) != c1
    assert A.self(ctx, 0.5) != c1
    assert B.self(ctx) != c1
    assert c1.address == A.address and c1.keyver == 0 and c1.priority == 0.0
    assert not c1.is_commons


@settings(max_examples=100)
@given(contexts, priorities)
def test_unseal_round_trip(ctx, priority):
    cap = A.self(ctx, priority)
    assert cap.priority == priority
    assert codec.encode(unseal_context(cap, A.keyring)) == codec.encode(ctx)
    decoded = codec.decode(codec.encode(cap))
    assert decoded == cap
    assert codec.encode(unseal_context(decoded, A.keyring)) == codec.encode(ctx)


def test_context_is_hidden():
    secret = "the-secret-context-text"
    cap = A.self(secret)
    assert secret.encode() not in codec.encode(cap)
    assert secret not in repr(cap)
    assert secret not in cap.to_uri()


@pytest.mark.parametrize("priority", [-1.0, -0.25, 0.0, 0.75, 1.0, 1, 0])
def test_priority_is_preserved(priority):
    cap = A.self("p", priority)
    assert cap.priority == float(priority) and type(cap.priority) is float
    assert unseal_context(cap, A.keyring) == "p"


@pytest.mark.parametrize("priority", [1.0001, -1.5, 2, math.inf, -math.inf, math.nan])
def test_priority_out_of_range_refused(priority):
    with pytest.raises(CapabilityError):
        A.self("p", priority)


@pytest.mark.parametrize(
    "changes",
    [
        {"priority": 1.0},
        {"priority": 0.5000001},
        {"priority": -1.0},
        {"kind": UNRESTRICTED},
        {"kind": AFFINE},
        {"kind": RELEVANT},
        {"keyver": 1},
    ],
    ids=[
        "raise-priority",
        "nudge-priority",
        "lower-priority",
        "to-unrestricted",
        "to-affine",
        "to-relevant",
        "other-keyver",
    ],
)
def test_public_fields_are_bound_to_the_ciphertext(changes):
    keyring = A.keyring.rotate(SealingKey.from_seed(b"siv-a", 1), keep_old=True)
    cap = A.self(Linear("token"), 0.5)
    assert cap.kind == LINEAR
    assert unseal_context(cap, keyring) == Linear("token")
    with pytest.raises(UnsealError):
        unseal_context(_rebuild(cap, **changes), keyring)


def test_address_is_bound_to_the_ciphertext():
    # A keyring for B that (wrongly) holds A's sealing key still cannot open A's
    # capability relabelled as B's: the address is authenticated.
    cap = A.self("ctx")
    twisted = Keyring(B.address, A.key)
    with pytest.raises(UnsealError):
        unseal_context(_rebuild(cap, address=B.address), twisted)
    # and B's real keyring refuses A's capability outright
    with pytest.raises(UnsealError, match="another machine"):
        unseal_context(cap, B.keyring)
    with pytest.raises(UnsealError):
        unseal_context(_rebuild(cap, address=B.address), B.keyring)


def test_every_flipped_byte_fails_to_unseal():
    cap = A.self(("route", 1, Map({"a": b"x"})))
    sealed = cap.sealed
    assert len(sealed) > 16
    for i in range(len(sealed)):
        for mask in (0x01, 0x80, 0xFF):
            forged = _rebuild(cap, sealed=sealed[:i] + bytes([sealed[i] ^ mask]) + sealed[i + 1 :])
            with pytest.raises(UnsealError):
                unseal_context(forged, A.keyring)


def test_truncated_or_extended_ciphertext_fails():
    cap = A.self("ctx")
    for sealed in [
        b"",
        cap.sealed[:16],
        cap.sealed[:-1],
        cap.sealed + b"\x00",
        cap.sealed[1:],
        b"\x00" + cap.sealed,
    ]:
        # Shorter than an AES-SIV tag: refused by the constructor already.
        with pytest.raises(CapabilityError):
            unseal_context(_rebuild(cap, sealed=sealed), A.keyring)


def test_forged_by_another_key_fails():
    # Someone with their own key claims A's address and key version.
    forged = seal_context(A.address, SealingKey.from_seed(b"mallory"), "admin")
    with pytest.raises(UnsealError):
        unseal_context(forged, A.keyring)
    # B's capability, for B's address, does not open under A's keyring
    with pytest.raises(UnsealError):
        unseal_context(B.self("x"), A.keyring)


def test_unseal_refuses_non_capabilities():
    for v in ["x", None, A.self]:
        with pytest.raises(UnsealError):
            unseal_context(v, A.keyring)  # type: ignore[arg-type]
    with pytest.raises(UnsealError):
        unseal_context(commons_cap(A.address, "null"), A.keyring)


# ---------------------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------------------


def test_rotation_revokes_old_capabilities():
    old_cap = A.self("old")
    k1 = SealingKey.from_seed(b"siv-a", 1)
    rotated = A.keyring.rotate(k1)
    assert rotated.versions == (1,) and rotated.current is k1
    assert rotated.address == A.address
    with pytest.raises(UnsealError, match="retired"):
        unseal_context(old_cap, rotated)
    new_self = Self(A.address, 1, k1)
    new_cap = new_self("new")
    assert new_cap.keyver == 1
    assert unseal_context(new_cap, rotated) == "new"
    # the old keyring does not know the new key
    with pytest.raises(UnsealError):
        unseal_context(new_cap, A.keyring)
    # the original keyring is untouched by rotation
    assert unseal_context(old_cap, A.keyring) == "old"


def test_rotation_keep_old_keeps_old_capabilities():
    old_cap = A.self("old")
    k1 = SealingKey.from_seed(b"siv-a", 1)
    kept = A.keyring.rotate(k1, keep_old=True)
    assert kept.versions == (0, 1) and kept.current is k1
    assert unseal_context(old_cap, kept) == "old"
    assert unseal_context(Self(A.address, 1, k1)("new"), kept) == "new"
    # a second rotation without keep_old drops both
    k2 = SealingKey.from_seed(b"siv-a", 2)
    later = kept.rotate(k2)
    assert later.versions == (2,)
    with pytest.raises(UnsealError):
        unseal_context(old_cap, later)


def test_rotation_needs_higher_version():
    with pytest.raises(CapabilityError):
        A.keyring.rotate(SealingKey.from_seed(b"x", 0))
    with pytest.raises(CapabilityError):
        A.keyring.rotate(SealingKey.from_seed(b"x", 1)).rotate(SealingKey.from_seed(b"y", 1))


def test_sealing_key_size_checked():
    with pytest.raises(CapabilityError):
        SealingKey(0, b"short")
    assert SealingKey.from_seed(b"s", 3).version == 3
    assert "v3" in repr(SealingKey.from_seed(b"s", 3))


# ---------------------------------------------------------------------------------------
# Substructural capabilities
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ctx, kind",
    [
        ("plain", UNRESTRICTED),
        (Linear(1), LINEAR),
        (Affine(1), AFFINE),
        (Relevant(1), RELEVANT),
        ((Affine(1), Relevant(2)), LINEAR),
        (Map({"hold": Affine(1)}), AFFINE),
    ],
)
def test_capability_inherits_kind_of_context(ctx, kind):
    cap = A.self(ctx)
    assert cap.kind == kind
    held = substructural_items(ctx)
    items = substructural_items(cap)
    if kind == UNRESTRICTED:
        assert items == []
    else:
        # the capability itself, then every item of the context it holds
        assert items[0] is cap
        assert [id(x) for x in items[1:]] == [id(x) for x in held]
    assert check_value(cap) == len(items)
    assert Map({"c": cap}).substructural_count == len(items)


def test_linear_capability_conservation():
    lin = Linear("coin")
    cap = A.self(("pay", lin))
    # the linear value went into the capability: it is conserved
    check_conservation([("$.msg", lin)], [("$.out[0]", cap)])
    # copying the linear capability copies it (and the value it holds)
    with pytest.raises(SubstructuralError):
        check_conservation([("$.msg", lin)], [("$.out[0]", cap), ("$.state", cap)])
    # dropping it drops the coin
    with pytest.raises(SubstructuralError):
        check_conservation([("$.msg", lin)], [("$.state", Map())])
    # a capability received and dropped is a drop of a linear item
    with pytest.raises(SubstructuralError):
        check_conservation([("$.msg", cap)], [("$.state", None)])


def test_decoded_capability_keeps_kind_but_not_the_held_context():
    cap = A.self(Linear(1))
    back = codec.decode(codec.encode(cap))
    assert back == cap and back.kind == LINEAR
    assert substructural_items(back) == [back]
    assert unseal_context(back, A.keyring) == Linear(1)


def test_capability_is_immutable():
    cap = A.self("x")
    with pytest.raises(AttributeError):
        cap.priority = 1.0
    with pytest.raises(AttributeError):
        cap.kind = 0
    with pytest.raises(AttributeError):
        A.self.address = B.address


# ---------------------------------------------------------------------------------------
# Text form
# ---------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(contexts, priorities)
def test_uri_round_trips_exactly(ctx, priority):
    cap = A.self(ctx, priority)
    uri = cap.to_uri()
    assert uri.startswith("avm://" + address_text(A.address) + "/")
    back = Capability.from_uri(uri)
    assert back == cap
    assert back.to_uri() == uri
    assert back.priority == priority and back.kind == cap.kind
    assert unseal_context(back, A.keyring) == unseal_context(cap, A.keyring)


@settings(max_examples=50)
@given(st.text(max_size=12), plain_values)
def test_commons_uri_round_trips(name, args):
    cap = commons_cap(A.address, name, args)
    back = Capability.from_uri(cap.to_uri())
    assert back == cap and back.is_commons and back.commons == (name, args)
    assert back.to_uri() == cap.to_uri()


def _local(items) -> str:
    return base64.urlsafe_b64encode(codec.encode(items)).decode().rstrip("=")


def _malformed_uris() -> list[str]:
    good = A.self("ctx", 0.25).to_uri()
    addr = address_text(A.address)
    sealed = A.self("ctx").sealed
    return [
        "",
        "avm:/" + good[6:],
        "avm:" + good[6:],
        "http" + good[3:],
        "AVM" + good[3:],
        "avm://" + addr,
        "avm://" + addr + "/",
        "avm://" + "/" + good.rsplit("/", 1)[1],
        "avm://" + addr.upper() + "/" + good.rsplit("/", 1)[1],  # not canonical
        "avm://" + addr[:-1] + "/" + good.rsplit("/", 1)[1],  # short address
        "avm://" + address_text(b"x" * 33) + "/" + good.rsplit("/", 1)[1],
        good + "=",
        good + "==",
        good + "A",
        good + "/x",
        good[:-1],
        good.replace("/", "/ ", 3),
        "avm://" + addr + "/" + "!!!!",
        "avm://" + addr + "/" + "é",
        "avm://" + addr + "/" + _local(5),
        "avm://" + addr + "/" + _local(()),
        "avm://" + addr + "/" + _local((0, 0, 0.0)),
        "avm://" + addr + "/" + _local((0, 0, 2.0, sealed)),  # priority out of range
        "avm://" + addr + "/" + _local((0, 0, math.nan, sealed)),
        "avm://" + addr + "/" + _local((0, 0, 0, sealed)),  # priority not a float
        "avm://" + addr + "/" + _local((0, 7, 0.0, sealed)),  # no such kind
        "avm://" + addr + "/" + _local((0, True, 0.0, sealed)),
        "avm://" + addr + "/" + _local((-1, 0, 0.0, sealed)),  # negative key version
        "avm://" + addr + "/" + _local((0.0, 0, 0.0, sealed)),
        "avm://" + addr + "/" + _local((0, 0, 0.0, b"short")),  # no room for a tag
        "avm://" + addr + "/" + _local((0, 0, 0.0, "text")),
        "avm://" + addr + "/" + _local(("~", 5, ())),  # commons name must be text
        "avm://" + addr + "/" + _local((0, 0, 0.0, sealed, 1)),
    ]


@pytest.mark.parametrize("uri", _malformed_uris())
def test_malformed_uris_refused(uri):
    with pytest.raises(CapabilityError):
        Capability.from_uri(uri)


@settings(max_examples=200)
@given(st.data())
def test_mutated_uris_refused_or_exact(data):
    uri = A.self(("m", 1), 0.5).to_uri()
    i = data.draw(st.integers(0, len(uri) - 1))
    c = data.draw(st.characters())
    mutated = uri[:i] + c + uri[i + 1 :]
    try:
        cap = Capability.from_uri(mutated)
    except CapabilityError:
        return
    # only an exact, canonical URI is accepted
    assert cap.to_uri() == mutated


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_arbitrary_text_refused_or_exact(text):
    for t in (text, "avm://" + text, "avm://" + address_text(A.address) + "/" + text):
        try:
            cap = Capability.from_uri(t)
        except CapabilityError:
            continue
        assert cap.to_uri() == t


# ---------------------------------------------------------------------------------------
# Self as a value, and codec round trips
# ---------------------------------------------------------------------------------------


def test_self_encoding_and_display_never_show_the_key():
    key_bytes = bytes(range(64))
    s = Self(A.address, 4, SealingKey(4, key_bytes))
    enc = codec.encode(s)
    assert key_bytes not in enc and key_bytes[:16] not in enc
    assert key_bytes.hex()[:16] not in repr(s)
    assert "v4" in repr(s)


def test_unbound_self_refuses_with_clear_message():
    back = codec.decode(codec.encode(A.self))
    assert back == A.self and type(back) is Self
    assert back.address == A.address and back.keyver == A.key.version
    with pytest.raises(CapabilityError) as ei:
        back("ctx")
    msg = str(ei.value)
    assert "sealing keys are not held" in msg
    assert address_text(A.address)[:10] in msg
    with pytest.raises(CapabilityError):
        Self(B.address, 0)("ctx")


def test_self_is_a_value():
    assert check_value(A.self) == 0
    state = Map({"self": A.self, "peers": (B.self,)})
    assert codec.decode(codec.encode(state)) == state
    with pytest.raises(AttributeError):
        A.self.keyver = 9  # type: ignore[misc]
    assert A.self == Self(A.address, 0) and hash(A.self) == hash(Self(A.address, 0))
    assert A.self != B.self and A.self != Self(A.address, 1)


def test_codec_round_trips_capabilities():
    caps = [
        A.self("x"),
        A.self(Linear(1), -0.5),
        A.self((Affine(1), Relevant(2)), 1.0),
        commons_cap(A.address, "null"),
        commons_cap(A.address, "random", (1, "x", Map({"n": 3}))),
    ]
    state = Map({"caps": tuple(caps)})
    back = codec.decode(codec.encode(state))
    assert back == state
    for c, d in zip(caps, back["caps"], strict=True):
        assert type(d) is Capability
        assert (d.address, d.keyver, d.kind, d.priority, d.sealed, d.commons) == (
            c.address,
            c.keyver,
            c.kind,
            c.priority,
            c.sealed,
            c.commons,
        )
        assert codec.encode(d) == codec.encode(c)


def _cap_tag(items) -> bytes:
    return bytes([0xD9]) + codec.TAG_CAPABILITY.to_bytes(2, "big") + codec.encode(items)


def test_malformed_capability_encodings_refused():
    sealed = A.self("x").sealed
    good = (A.address, 0, 0, 0.0, sealed)
    assert codec.decode(_cap_tag(good)) == A.self("x")
    for bad in [
        (),
        (A.address,),
        (A.address[:31], 0, 0, 0.0, sealed),
        ("addr", 0, 0, 0.0, sealed),
        (A.address, 0, 9, 0.0, sealed),
        (A.address, 0, 0, 3.0, sealed),
        (A.address, -1, 0, 0.0, sealed),
        (A.address, 0, 0, 0.0, b"x"),
        (A.address, "~", 5, ()),
        5,
    ]:
        with pytest.raises(CodecError):
            codec.decode(_cap_tag(bad))
    self_tag = bytes([0xD9]) + codec.TAG_SELF.to_bytes(2, "big")
    assert codec.decode(self_tag + codec.encode((A.address, 0))) == A.self
    for bad in [(A.address,), (A.address, "0"), ("a", 0), (A.address, 0, 1), 7]:
        with pytest.raises(CodecError):
            codec.decode(self_tag + codec.encode(bad))


def test_commons_caps():
    n = commons_cap(A.address, "null")
    assert n.is_commons and n.commons == ("null", ())
    assert n == commons_cap(A.address, "null")
    assert n != commons_cap(A.address, "time") and n != commons_cap(B.address, "null")
    assert "null" in repr(n)
    with pytest.raises(ValueRuleError):
        commons_cap(A.address, "x", [1])
    assert check_value(n) == 0


def test_commons_args_are_counted_for_conservation():
    lin = Linear("coin")
    cap = commons_cap(A.address, "escrow", ("hold", lin))
    assert [id(x) for x in substructural_items(cap)] == [id(lin)]
    check_conservation([("$.msg", lin)], [("$.out[0]", cap)])
    with pytest.raises(SubstructuralError):
        check_conservation([("$.msg", cap)], [("$.state", (cap, cap))])
    with pytest.raises(SubstructuralError) as ei:
        check_conservation([("$.msg", cap)], [("$.state", None)])
    assert ei.value.path.startswith("$.msg")
    # and after a round trip through the codec the item is still visible
    back = codec.decode(codec.encode(cap))
    assert back == cap
    assert [type(x) for x in substructural_items(back)] == [Linear]


# -- cryptographic sealers: the same interface as the discretionary ones ------------------

SIV_KEY = bytes(range(64))


@pytest.mark.parametrize("pair", [
    lambda: (Sealer("money"), Unsealer("money")),
    lambda: siv_sealer_pair(SIV_KEY),
])
def test_discretionary_and_crypto_sealers_share_one_interface(pair):
    sealer, unsealer = pair()
    v = Map({"amount": 5, "memo": ("a", b"b")})
    s = sealer.seal(v)
    assert unsealer.unseal(s) == v
    assert repr(s).startswith("<sealed by")
    with pytest.raises(UnsealError):
        unsealer.unseal(Sealer("other").seal(v))


def test_crypto_sealed_payload_is_secret_and_deterministic():
    sealer, _ = siv_sealer_pair(SIV_KEY)
    s1, s2 = sealer.seal("the plan"), sealer.seal("the plan")
    assert s1 == s2 and s1.crypto
    assert b"the plan" not in s1.payload
    assert b"the plan" not in codec.encode(s1)


def test_crypto_sealed_value_survives_the_codec_and_only_its_key_opens_it():
    sealer, unsealer = siv_sealer_pair(SIV_KEY)
    s = codec.decode(codec.encode(sealer.seal((1, "x"))))
    assert unsealer.unseal(s) == (1, "x")
    other = SivUnsealer(bytes(64))
    with pytest.raises(UnsealError):
        other.unseal(s)


def test_every_flipped_byte_of_a_crypto_sealed_value_is_refused():
    sealer, unsealer = siv_sealer_pair(SIV_KEY)
    s = sealer.seal(("secret", 42))
    for i in range(len(s.payload)):
        bad = bytearray(s.payload)
        bad[i] ^= 0x01
        forged = type(s)(s.sealer, bytes(bad), crypto=True, kind=s.kind)
        with pytest.raises(UnsealError):
            unsealer.unseal(forged)


def test_crypto_sealing_a_linear_value_keeps_it_counted():
    sealer, unsealer = siv_sealer_pair(SIV_KEY)
    tok = Linear("coin")
    s = sealer.seal(tok)
    assert s.kind == 3
    # Sealing moved the token into the sealed value: conserved, not dropped.
    check_conservation([("$.in", tok)], [("$.out", s)])
    with pytest.raises(SubstructuralError):
        check_conservation([("$.in", tok)], [("$.out", (s, s))])
    assert unsealer.unseal(s) == tok


def test_siv_sealer_needs_a_full_key():
    with pytest.raises(CapabilityError):
        SivSealer(b"short")
