"""Capabilities, Self and crypto helpers, pinned (issue 5, item 13: mutants of ``avm.core.caps``).

Known answers for every derivation (a changed label or layout changes every key or
address silently), the exact type and range checks at their boundaries, the dunder
methods (equality and hashing ignore held plaintext; a capability never equals a bare
tuple), what decoding accepts, and the reasons given for refusals.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from avm import Affine, Linear, Map
from avm.core import codec
from avm.core.caps import (
    _P448,
    _P25519,
    KEYVER_MAX,
    URI_LIMITS,
    Capability,
    IdentityKey,
    Keyring,
    SealingKey,
    Self,
    address_of,
    check_public_key,
    commons_cap,
    identity_resource,
    kdf,
    parse_address,
    seal_context,
    sealing_key_for,
    siv_sealer_pair,
    verify_identity,
    verify_signature,
)
from avm.core.errors import CapabilityError, CodecError, UnsealError, ValueRuleError
from avm.core.values import AFFINE, Sealed, check_value

ADDR = bytes(range(32))
KEY = SealingKey(0, b"s" * 64)


# ---------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------


def test_kdf_known_answers_and_material_bounds():
    assert kdf(bytes(range(16)), "seal", 1, b"x").hex() == (
        "e31d8885c9fc1eaeff4145826976f76fbc9f59bd5eef8c166e93e3668749f36f")
    assert kdf(bytes(range(32)), "p", n=16).hex() == "c7b07004a88bd687da873614eba20db9"
    with pytest.raises(CapabilityError, match="^key material must be at least 16 bytes$"):
        kdf(bytes(15), "p")
    with pytest.raises(CapabilityError, match="^key material must be at least 16 bytes$"):
        kdf(bytearray(32), "p")


def test_identity_keys_from_seed_known_answers():
    k = IdentityKey.from_seed(b"seed")
    assert k.public_bytes.hex() == "6d074a96d30420683963479ba422ee7a6d6071325a321b77c2ef312d6adc1abe"
    assert repr(k) == "<IdentityKey ed25519 6d074a96d304...>"
    k4 = IdentityKey.from_seed(b"seed", "ed448")
    assert k4.public_bytes.hex() == (
        "45c7866b96063fa201c2a95d2315d2dcd842cc1f969afe41dce6ccab047b87c8deeaa3293971e308"
        "7296529250a07870d55b39f41de15c5a80")
    raw = k.private_bytes_raw()
    assert len(raw) == 32
    rebuilt = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    assert IdentityKey("ed25519", rebuilt).public_bytes == k.public_bytes
    with pytest.raises(CapabilityError, match=r"^unknown key algorithm 'rsa'; use one of"):
        IdentityKey.from_seed(b"seed", "rsa")


def test_sealer_names_and_uris_known_answers():
    sealer, _ = siv_sealer_pair(b"k" * 64)
    assert sealer.name == "siv:f0bf282c23271930"
    c = Capability(bytes(32), 1, 3, 0.5, bytes(16))
    assert c.to_uri() == "avm://" + "a" * 52 + "/hAED-TgAUAAAAAAAAAAAAAAAAAAAAAA"  # no padding
    assert Capability.from_uri(c.to_uri()) == c
    c2 = Capability(ADDR, 0, 0, 0.0, bytes(range(17)))
    assert c2.to_uri() == ("avm://aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq/"
                           "hAAA-QAAUQABAgMEBQYHCAkKCwwNDg8Q")


def test_reprs_show_kind_priority_and_a_ciphertext_prefix_only():
    assert repr(Capability(bytes(32), 1, 3, 0.5, bytes(16))) == "<cap aaaaaaaaaa... linear p=0.5 #00000000>"
    assert repr(Capability(ADDR, 0, 0, 0.0, bytes(range(17)))) == "<cap aaaqeayeau... #00010203>"
    assert repr(Capability(ADDR, 0, 2, -0.25, bytes(range(17)))) == (
        "<cap aaaqeayeau... relevant p=-0.25 #00010203>")
    assert repr(commons_cap(bytes(32), "time", (1,))) == "<cap aaaaaaaaaa.../~time>"
    assert repr(Self(ADDR, 3)) == "<Self of aaaqeayeau... key v3>"
    with pytest.raises(CapabilityError, match=r"^this Self belongs to machine aaaqeayeau\.\.\. whose "
                       "sealing keys are not held here; only that machine can make its capabilities$"):
        Self(ADDR, 3)("ctx")


# ---------------------------------------------------------------------------------------
# Equality, hashing, truth, pickling
# ---------------------------------------------------------------------------------------


def test_capability_equality_ignores_held_plaintext_and_never_equals_a_tuple():
    held = seal_context(ADDR, KEY, ("one", Linear(1)))
    bare = Capability(*held[:5])
    assert held._held and not bare._held
    assert held == bare and not (held != bare) and hash(held) == hash(bare)
    other = Capability(ADDR, 0, held.kind, held.priority, bytes(len(held.sealed)))
    assert held != other and not (held == other)
    assert held != tuple(held) and not (held == tuple(held)) and not (held == tuple(held[:6]))
    assert held != tuple(held[:6])
    assert bool(held) and bool(commons_cap(ADDR, "time"))
    for c in (held, bare, commons_cap(ADDR, "time", (1, 2))):
        assert pickle.loads(pickle.dumps(c)) == c and copy.deepcopy(c) == c
    assert pickle.loads(pickle.dumps(held))._held == held._held


def test_self_equality_ignores_the_key_and_never_equals_a_tuple():
    bound, unbound = Self(ADDR, 0, KEY), Self(ADDR, 0)
    assert bound == unbound and not (bound != unbound) and hash(bound) == hash(unbound)
    assert Self(ADDR, 1) != unbound and not (Self(ADDR, 1) == unbound)
    assert unbound != tuple(unbound) and not (unbound == tuple(unbound))
    assert not (unbound == (ADDR, 0)) and unbound != (ADDR, 0)
    assert bool(unbound)
    assert pickle.loads(pickle.dumps(unbound)) == unbound and copy.copy(bound) == bound


# ---------------------------------------------------------------------------------------
# Exact shapes
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [
    ("x" * 32, 0), (ADDR[:31], 0), (ADDR, True), (ADDR, -1), (ADDR, KEYVER_MAX + 1),
    (ADDR, 0, "key"), (ADDR, 0.0),
])
def test_self_refuses_every_wrong_field(fields):
    with pytest.raises(CapabilityError, match=r"^a Self is \(32-byte address, int key version, "
                       r"SealingKey or None\)$"):
        Self(*fields)


def test_self_accepts_the_largest_key_version():
    assert Self(ADDR, KEYVER_MAX).keyver == KEYVER_MAX


def test_forged_shapes_are_not_values():
    bad_held = tuple.__new__(Capability, (ADDR, 0, 0, 0.0, bytes(16), None, "x"))
    with pytest.raises(ValueRuleError, match=r"a Capability is \(address, keyver, kind, priority, "
                       r"sealed, commons, held\)"):
        check_value(bad_held)
    short_self = tuple.__new__(Self, (ADDR, 0))
    with pytest.raises(ValueRuleError, match="a Self is"):
        check_value(short_self)
    bad_prio = tuple.__new__(Capability, (ADDR, 0, 0, 2.0, bytes(16), None, ()))
    with pytest.raises(ValueRuleError, match=r"priority must be a float in \[-1, 1\]"):
        check_value(bad_prio)


def _tagged(tag: int, payload: bytes) -> bytes:
    return b"\xd9" + tag.to_bytes(2, "big") + payload


def test_decoding_accepts_exactly_the_canonical_shapes():
    from avm.core.values import TAG_CAPABILITY, TAG_SELF

    s = Self(ADDR, 5)
    enc = codec.encode(s)
    assert codec.decode(enc) == s
    # a Self with a third item, a text address, a bool or text version: refused
    for items in ((ADDR, 5, 1), ("x", 5), (ADDR, "5"), (ADDR, True), ()):
        raw = _tagged(TAG_SELF, codec.encode(items))
        with pytest.raises(CodecError, match="malformed Self|Self"):
            codec.decode(raw)
    for payload in (codec.encode(()), codec.encode(5), codec.encode(("x" * 32, 0, 0, 0.0, bytes(16)))):
        with pytest.raises(CodecError, match="malformed capability|capability"):
            codec.decode(_tagged(TAG_CAPABILITY, payload))
    with pytest.raises(CodecError, match="^malformed capability$|malformed capability"):
        codec.decode(_tagged(TAG_CAPABILITY, codec.encode((5,))))


# ---------------------------------------------------------------------------------------
# Public keys, identities, signatures
# ---------------------------------------------------------------------------------------


def test_public_keys_that_are_not_reduced_are_refused_as_not_canonical():
    # y = p: reduces to a valid (small-order) point, but is not the canonical encoding
    assert check_public_key("ed25519", _P25519.to_bytes(32, "little")) == (
        "public key is not canonically encoded")
    assert check_public_key("ed448", _P448.to_bytes(57, "little")) == "public key is not canonically encoded"
    # x = 0 with the sign bit set: not canonical (before it would be found small-order)
    one = bytearray((1).to_bytes(32, "little"))
    one[31] |= 0x80
    assert check_public_key("ed25519", bytes(one)) == "public key is not canonically encoded"
    one448 = bytearray((1).to_bytes(57, "little"))
    one448[56] |= 0x80
    assert check_public_key("ed448", bytes(one448)) == "public key is not canonically encoded"
    # x = 0 without the sign bit: small order
    minus_one = (_P25519 - 1).to_bytes(32, "little")
    assert check_public_key("ed25519", minus_one) == "public key has small order"
    assert check_public_key("ed25519", (1).to_bytes(32, "little")) == "public key has small order"
    assert check_public_key("ed448", (1).to_bytes(57, "little")) == "public key has small order"
    # not on the curve
    assert check_public_key("ed25519", (2).to_bytes(32, "little")) == "public key is not a point on the curve"
    assert check_public_key("ed448", (2).to_bytes(57, "little")) == "public key is not a point on the curve"
    # the real keys of both algorithms pass
    for alg in ("ed25519", "ed448"):
        assert check_public_key(alg, IdentityKey.from_seed(b"z", alg).public_bytes) is None


def _signed_resource(meta=()) -> tuple:
    k = IdentityKey.from_seed(b"identity")
    res = k.resource(meta)
    return k, res, codec.encode(res), address_of(res)


def test_verify_identity_refuses_every_malformed_resource():
    k, res, raw, addr = _signed_resource()
    assert verify_identity(raw, addr) == res
    with pytest.raises(CapabilityError, match="^an identity resource and an address are bytes$"):
        verify_identity(bytearray(raw), addr)
    with pytest.raises(CapabilityError, match="^an identity resource and an address are bytes$"):
        verify_identity(raw, bytearray(addr))
    with pytest.raises(CapabilityError, match="^identity resource does not hash to the address$"):
        verify_identity(raw, bytes(32))
    key = k.public_bytes
    for bad in (
        Map({"key": key, "alg": "ed25519", "meta": ""}),          # meta not a tuple (empty)
        Map({"key": key, "alg": "ed25519", "meta": b""}),
        Map({"key": key, "alg": "ed25519", "meta": ((1, "v"),)}),  # a key that is not text
        Map({"key": key, "alg": "ed25519", "meta": ("ab",)}),      # an entry that is not a pair
        Map({"key": key, "alg": "ed25519", "meta": (("a", "b", "c"),)}),
        Map({"key": key, "alg": "rsa", "meta": ()}),
        Map({"key": key, "alg": 1, "meta": ()}),
        Map({"key": key, "alg": "ed25519"}),
    ):
        raw_bad = codec.encode(bad)
        with pytest.raises(CapabilityError, match="^not an identity resource$"):
            verify_identity(raw_bad, address_of(bad))
    with pytest.raises(CapabilityError, match="^identity resource does not decode: "):
        verify_identity(b"\xff", hashlib.sha256(b"avm-address-v1\0\xff").digest())


def test_verify_identity_takes_a_resource_of_exactly_the_size_limit():
    from avm.core.caps import IDENTITY_LIMITS

    k = IdentityKey.from_seed(b"identity")
    base = len(codec.encode(k.resource((("pad", ""),))))
    for n in range(IDENTITY_LIMITS.bytes_max - base - 4, IDENTITY_LIMITS.bytes_max - base + 1):
        res = k.resource((("pad", "x" * n),))
        raw = codec.encode(res)
        if len(raw) == IDENTITY_LIMITS.bytes_max:
            break
    assert len(raw) == IDENTITY_LIMITS.bytes_max
    assert verify_identity(raw, address_of(res)) == res
    res2 = k.resource((("pad", "x" * (n + 1)),))
    with pytest.raises(CapabilityError, match=f"^identity resource exceeds {IDENTITY_LIMITS.bytes_max} bytes$"):
        verify_identity(codec.encode(res2), address_of(res2))


def test_identity_resource_and_signature_checks():
    k, res, _raw, _addr = _signed_resource()
    sig = k.sign(b"data")
    assert verify_signature(res, b"data", sig)
    assert not verify_signature(res, bytearray(b"data"), sig)
    assert not verify_signature(res, "data", sig)
    assert not verify_signature(res, b"data", bytearray(sig))
    with pytest.raises(CapabilityError, match="^identity metadata keys must be text$"):
        identity_resource(k.public_bytes, "ed25519", [(1, "v")])
    with pytest.raises(CapabilityError, match=r"^unknown key algorithm 'rsa'; use one of"):
        identity_resource(k.public_bytes, "rsa")
    with pytest.raises(CapabilityError, match="^public key has small order$"):
        identity_resource((1).to_bytes(32, "little"), "ed25519")


def test_parse_address_reasons():
    with pytest.raises(CapabilityError, match=r"^not an address: '1!'$"):
        parse_address("1!")
    with pytest.raises(CapabilityError, match="^an address has 32 bytes, got 5$"):
        parse_address("aaaaaaaa")


# ---------------------------------------------------------------------------------------
# Sealing and unsealing
# ---------------------------------------------------------------------------------------


def test_plain_contexts_and_values_keep_no_plaintext_in_memory():
    assert seal_context(ADDR, KEY, "plain")._held == ()
    assert seal_context(ADDR, KEY, ("one", Linear(1)))._held == (("one", Linear(1)),)
    sealer, _ = siv_sealer_pair(b"k" * 64)
    assert sealer.seal(5)._held == () and sealer.seal(Linear(5))._held == (Linear(5),)


def test_sealing_key_for_and_keyring_get():
    ring = Keyring(ADDR, KEY)
    cap = seal_context(ADDR, KEY, "ctx")
    assert sealing_key_for(cap, ring) is KEY
    assert ring.get(0) is KEY and ring.get(1) is None
    with pytest.raises(CapabilityError, match="^a rotated key needs a higher version$"):
        ring.rotate(SealingKey(0, b"t" * 64))
    with pytest.raises(CapabilityError, match="^a sealing key has 64 bytes$"):
        SealingKey(0, b"short")


def test_seal_context_reasons():
    with pytest.raises(CapabilityError, match=r"^priority must be a number in \[-1, 1\], not str$"):
        seal_context(ADDR, KEY, "ctx", "high")
    with pytest.raises(CapabilityError, match=r"^priority 2\.0 is outside \[-1, 1\]$"):
        seal_context(ADDR, KEY, "ctx", 2)
    with pytest.raises(ValueRuleError, match=r"\$\.context"):
        seal_context(ADDR, KEY, [1])
    with pytest.raises(ValueRuleError, match=r"\$\.args"):
        commons_cap(ADDR, "time", [1])


def test_unsealing_refuses_wrong_types_and_discretionary_copies():
    sealer, unsealer = siv_sealer_pair(b"k" * 64)
    aff = sealer.seal(Affine("a"))
    assert aff.kind == AFFINE and unsealer.unseal(aff) == Affine("a")
    plain = sealer.seal("text")
    assert unsealer.unseal(plain) == "text"
    reason = f"^not a value sealed by {unsealer.name!r}$"
    forged = [
        tuple.__new__(Sealed, (aff.sealer, aff.payload, True, True, ())),     # kind True, not 1
        tuple.__new__(Sealed, (aff.sealer, bytearray(aff.payload), True, aff.kind, ())),
        tuple.__new__(Sealed, (aff.sealer, aff.payload, 1, aff.kind, ())),    # crypto 1, not True
        Sealed(plain.sealer, plain.payload),  # a discretionary copy of the ciphertext
        SimpleNamespace(sealer=plain.sealer, payload=plain.payload, crypto=True, kind=plain.kind),
        Sealed("siv:other", plain.payload, True, plain.kind),
    ]
    for f in forged:
        with pytest.raises(UnsealError, match=reason):
            unsealer.unseal(f)
    tampered = Sealed(plain.sealer, bytes([plain.payload[0] ^ 1]) + plain.payload[1:], True, plain.kind)
    with pytest.raises(UnsealError, match="^sealed value failed authentication: forged or tampered$"):
        unsealer.unseal(tampered)
    relabelled = Sealed(aff.sealer, aff.payload, True, 0)
    with pytest.raises(UnsealError, match="^sealed value failed authentication: forged or tampered$"):
        unsealer.unseal(relabelled)


def test_uris_of_large_contexts_round_trip_up_to_the_limit():
    big = seal_context(ADDR, KEY, "x" * 6200)
    uri = big.to_uri()
    assert len(uri.rsplit("/", 1)[1]) > URI_LIMITS.bytes_max + 4  # longer in text than the byte limit
    assert Capability.from_uri(uri) == big
    mid = seal_context(ADDR, KEY, "y" * 700)
    assert Capability.from_uri(mid.to_uri()) == mid
    with pytest.raises(CapabilityError, match=f"^capability URI exceeds {URI_LIMITS.bytes_max} bytes$"):
        Capability.from_uri(uri.rsplit("/", 1)[0] + "/" + "A" * (URI_LIMITS.bytes_max * 4 // 3 + 5))
    with pytest.raises(CapabilityError, match="^a capability URI starts with 'avm://'$"):
        Capability.from_uri("http://x/y")
    with pytest.raises(CapabilityError, match="^a capability URI is avm://ADDRESS/LOCAL$"):
        Capability.from_uri("avm://" + "a" * 52 + "/")
    with pytest.raises(CapabilityError, match="^a capability URI is avm://ADDRESS/LOCAL$"):
        Capability.from_uri("avm://" + "a" * 52)
    with pytest.raises(CapabilityError, match="^capability URI is not in canonical form$"):
        Capability.from_uri(big.to_uri() + "==")
    with pytest.raises(CapabilityError, match="^malformed capability URI: "):
        Capability.from_uri("avm://" + "a" * 52 + "/_w")


def test_unseal_refusals_name_their_reason():
    from avm.core import caps
    from avm.core.caps import associated_data, unseal_context

    ring = Keyring(ADDR, KEY)
    good = seal_context(ADDR, KEY, ("one", Linear(1)))

    def refused(cap, reason):
        with pytest.raises(UnsealError, match=reason):
            unseal_context(cap, ring)

    refused("x", "^not a capability: str$")
    refused(commons_cap(ADDR, "time"), "^a commons capability has no sealed context$")
    refused(seal_context(bytes(32), KEY, "c"), "^capability names another machine$")
    refused(tuple.__new__(Capability, (ADDR, 0, 0, 0, bytes(16), None, ())),
            "^capability fields have the wrong types$")
    refused(tuple.__new__(Capability, (ADDR, 0, 300, 0.0, bytes(16), None, ())),
            "^capability fields are out of range$")
    refused(Capability(ADDR, 0, good.kind, good.priority, bytes([good.sealed[0] ^ 1]) + good.sealed[1:]),
            "^capability failed authentication: forged or tampered$")
    ad0 = caps._associated(ADDR, 0, 0, 0.0)
    refused(Capability(ADDR, 0, 0, 0.0, KEY._siv.encrypt(b"\xff", [ad0])),
            "^sealed context does not decode: ")
    lin = codec.encode(("one", Linear(1)))
    refused(Capability(ADDR, 0, 0, 0.0, KEY._siv.encrypt(lin, [ad0])),
            "^capability kind does not match its context$")
    # the associated data is computed only from exact fields of exact sizes
    with pytest.raises(UnsealError, match="^capability fields have the wrong types$"):
        associated_data(tuple.__new__(Capability, (ADDR[:31], 0, 0, 0.0, bytes(16), None, ())))
    with pytest.raises(UnsealError, match="^capability fields have the wrong types$"):
        associated_data(tuple.__new__(Capability, ("x" * 32, 0, 0, 0.0, bytes(16), None, ())))
    with pytest.raises(UnsealError, match="^capability fields are out of range$"):
        associated_data(tuple.__new__(Capability, (ADDR, 0, 300, 0.0, bytes(16), None, ())))


def test_sealed_value_refusals_name_their_reason():
    sealer, unsealer = siv_sealer_pair(b"k" * 64)
    with pytest.raises(CapabilityError, match="^a sealing key has 64 bytes$"):
        siv_sealer_pair(b"short")
    bad = Sealed(sealer.name, sealer._siv.encrypt(b"\xff", [sealer._ad(0)]), True, 0)
    with pytest.raises(UnsealError, match="^sealed value does not decode: "):
        unsealer.unseal(bad)
    lin = codec.encode(Linear(1))
    wrong_kind = Sealed(sealer.name, sealer._siv.encrypt(lin, [sealer._ad(0)]), True, 0)
    with pytest.raises(UnsealError, match="^sealed value kind does not match its contents$"):
        unsealer.unseal(wrong_kind)


def test_an_identity_with_a_weak_key_says_why():
    weak = Map({"key": (1).to_bytes(32, "little"), "alg": "ed25519", "meta": ()})
    with pytest.raises(CapabilityError, match="^not an identity resource: public key has small order$"):
        verify_identity(codec.encode(weak), address_of(weak))


def test_a_uri_ending_in_x_round_trips_and_the_default_priority_is_zero():
    c = Capability(ADDR, 0, 0, 0.0, bytes(15) + bytes([0, 23]))
    uri = c.to_uri()
    assert uri.endswith("/hAAA-QAAUQAAAAAAAAAAAAAAAAAAAAAX")
    assert Capability.from_uri(uri) == c
    assert seal_context(ADDR, KEY, "c").priority == 0.0
    assert seal_context(ADDR, KEY, "c") == seal_context(ADDR, KEY, "c", 0.0)


def test_a_uri_with_a_malformed_local_part_says_so():
    import base64

    def uri(items) -> str:
        local = base64.urlsafe_b64encode(codec.encode(items)).decode().rstrip("=")
        return "avm://" + "a" * 52 + "/" + local

    for items, reason in ((5, "^malformed capability local part$"),
                          ((0, 0, 0.0), "^malformed capability local part$"),
                          (("~", 5, ()), "^commons name must be text$")):
        with pytest.raises(CapabilityError, match=reason):
            Capability.from_uri(uri(items))
    assert Capability.from_uri(uri(("~", "time", ()))) == commons_cap(bytes(32), "time")
