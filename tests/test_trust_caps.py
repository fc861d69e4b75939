"""Issue 5, capabilities: forged authority (items 1, 2, 8, 12, 13 and the forgery fuzz).

* item 1: the unseal cache is keyed on the exact authenticated bytes, and the Capability
  constructor refuses fields of the wrong exact type or range; a warm and a cold cache
  agree on every mutant;
* item 2: what the cache hands out cannot be changed by a holder who is shown it;
* item 8: weak Ed25519/Ed448 keys are refused; addresses, identity signatures and the
  AES-SIV associated data carry labels and a version;
* item 12 (part): capability URIs and identity resources decode under small limits;
* item 13: the "priority dropped from the cache key" and "no kind check" mutants die;
* the forgery fuzz (bench/fuzz_forgery.py) with 10,000 mutants opens none.
"""

from __future__ import annotations

import fractions
import hashlib
import importlib.util
import math
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

import avm
from avm import Linear, Map, Sim
from avm.core import codec
from avm.core.caps import (
    ADDRESS_LABEL,
    IDENTITY_LIMITS,
    IDENTITY_SIG_LABEL,
    URI_LIMITS,
    Capability,
    IdentityKey,
    Keyring,
    SealingKey,
    SivSealer,
    SivUnsealer,
    address_of,
    associated_data,
    check_public_key,
    commons_cap,
    identity_resource,
    seal_context,
    unseal_context,
    verify_identity,
    verify_signature,
)
from avm.core.errors import AvmError, CapabilityError, UnsealError
from avm.core.netvalue import Env
from avm.core.values import LINEAR, UNRESTRICTED, record

BENCH = Path(__file__).resolve().parent.parent / "bench" / "fuzz_forgery.py"


def _load_fuzz():
    name = "avm_bench_fuzz_forgery"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, BENCH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return mod


fuzz = _load_fuzz()
raw_cap = fuzz.raw_cap

ADDR = hashlib.sha256(b"machine a").digest()
OTHER = hashlib.sha256(b"machine b").digest()
KEY0 = SealingKey.from_seed(b"a", 0)
RING = Keyring(ADDR, KEY0)


def fields(cap: Capability, **changes) -> dict:
    f = fuzz.fields_of(cap)
    f.update(changes)
    return f


def verdict(open_fn) -> object:
    try:
        return ("opened", codec.encode(open_fn()))
    except AvmError as e:
        return ("refused", type(e).__name__)


# -- item 1: exact types in the constructor -----------------------------------------------


GOOD = dict(address=ADDR, keyver=0, kind=UNRESTRICTED, priority=0.0, sealed=bytes(16))

BAD_FIELDS = [
    dict(priority=0),  # int is not float
    dict(priority=False),  # bool is not float
    dict(priority=True),
    dict(priority=-0.0),  # one capability, one encoding
    dict(priority=math.nan),
    dict(priority=math.inf),
    dict(priority=1.0000001),
    dict(priority=-1.5),
    dict(priority="0.5"),
    dict(kind=False),  # bool is not int
    dict(kind=True),
    dict(kind=0.0),
    dict(kind=4),
    dict(kind=-1),
    dict(keyver=0.0),  # float key version
    dict(keyver=False),
    dict(keyver=-1),
    dict(keyver=2**40),
    dict(address=ADDR[:31]),
    dict(address=bytearray(ADDR)),
    dict(address="a" * 32),
    dict(sealed=bytearray(16)),
    dict(sealed=b"short"),
    dict(sealed=memoryview(bytes(16))),
]


@pytest.mark.parametrize("bad", BAD_FIELDS, ids=lambda d: repr(d)[:40])
def test_the_constructor_refuses_wrong_exact_types_and_ranges(bad):
    f = {**GOOD, **bad}
    with pytest.raises(CapabilityError):
        Capability(f["address"], f["keyver"], f["kind"], f["priority"], f["sealed"])


def test_the_constructor_accepts_every_good_field():
    for p in (-1.0, -0.5, 0.0, 0.25, 1.0):
        for kind in (0, 1, 2, 3):
            Capability(ADDR, 7, kind, p, bytes(16))
    Capability(ADDR, commons=("random", ()))


@pytest.mark.parametrize("bad", [dict(keyver=1), dict(kind=LINEAR), dict(priority=0.5),
                                 dict(sealed=bytes(16)), dict(commons=("x",)),
                                 dict(commons=(1, ()))])
def test_a_commons_capability_has_only_default_clear_fields(bad):
    f = dict(address=ADDR, keyver=0, kind=0, priority=0.0, sealed=b"", commons=("random", ()))
    f.update(bad)
    with pytest.raises(CapabilityError):
        Capability(**f)


def test_seal_context_normalises_priority_and_refuses_non_numbers():
    assert math.copysign(1.0, seal_context(ADDR, KEY0, "x", -0.0).priority) == 1.0
    assert seal_context(ADDR, KEY0, "x", 1).priority == 1.0
    for bad in ("0.5", True, None, math.nan, 1.5):
        with pytest.raises(CapabilityError):
            seal_context(ADDR, KEY0, "x", bad)


def test_decoding_refuses_wrong_field_types():
    cap = seal_context(ADDR, KEY0, "ctx")
    good = codec.encode(cap)
    assert codec.decode(good) == cap
    for change in (dict(priority=-0.0), dict(priority=0), dict(kind=False), dict(keyver=0.0)):
        forged = codec._encode_trusted(raw_cap(**fields(cap, **change)))
        with pytest.raises(AvmError):
            codec.decode(forged)


# -- item 1 and 13: the cache is keyed on exact authenticated bytes --------------------------


CONFUSABLE = [
    dict(priority=-0.0),
    dict(priority=0),
    dict(priority=False),
    dict(kind=False),
    dict(keyver=0.0),
    dict(keyver=False),
    dict(priority=0.25),  # a valid, different priority: only the tag can tell
    dict(priority=-1.0),
    dict(kind=LINEAR),
]


@pytest.mark.parametrize("change", CONFUSABLE, ids=lambda d: repr(d))
def test_warm_and_cold_caches_agree_on_every_mutant(change):
    genuine = seal_context(ADDR, KEY0, ("acct", "alice"), 0.0)
    mutant = raw_cap(**fields(genuine, **change))
    warm = Env()
    assert warm.unseal(genuine, RING) == ("acct", "alice")  # now cached
    cold = verdict(lambda: Env().unseal(mutant, RING))
    assert cold[0] == "refused"
    assert verdict(lambda: warm.unseal(mutant, RING)) == cold
    assert verdict(lambda: unseal_context(mutant, RING)) == cold


def test_a_cached_capability_at_another_priority_does_not_open():
    # Kills the mutant that drops priority from the cache key: same ciphertext, same
    # machine, same kind and version, a valid but different priority.
    env = Env()
    genuine = seal_context(ADDR, KEY0, "admin", 0.5)
    assert env.unseal(genuine, RING) == "admin"
    for p in (0.25, 1.0, -0.5, 0.0):
        with pytest.raises(UnsealError):
            env.unseal(raw_cap(**fields(genuine, priority=p)), RING)


def test_cache_key_is_the_authenticated_bytes():
    cap = seal_context(ADDR, KEY0, "x", 0.25)
    ad = associated_data(cap)
    assert ad.startswith(b"avm-cap\0\x01") and ADDR in ad
    # -0.0 and 0.0, 0 and 0.0: different bytes or refused outright, never the same key.
    zero = seal_context(ADDR, KEY0, "x", 0.0)
    assert associated_data(zero) != associated_data(raw_cap(**fields(zero, priority=-0.0)))
    for odd in (dict(priority=0), dict(kind=False), dict(keyver=0.0)):
        with pytest.raises(UnsealError):
            associated_data(raw_cap(**fields(zero, **odd)))


def test_the_warm_cache_still_refuses_retired_and_foreign():
    env = Env()
    cap = seal_context(ADDR, KEY0, "x")
    assert env.unseal(cap, RING) == "x"
    rotated = RING.rotate(SealingKey.from_seed(b"a", 1))
    with pytest.raises(UnsealError, match="retired"):
        env.unseal(cap, rotated)
    with pytest.raises(UnsealError, match="another machine"):
        env.unseal(cap, Keyring(OTHER, KEY0))


def _sealed_with_wrong_kind(key: SealingKey, context, claimed_kind: int) -> Capability:
    """What only a key holder can make: a linear context sealed as another kind."""
    plain = codec.encode(context)
    ad = associated_data(Capability(ADDR, key.version, claimed_kind, 0.0, bytes(16)))
    return Capability(ADDR, key.version, claimed_kind, 0.0, key._siv.encrypt(plain, [ad]))


def test_the_unseal_kind_check_refuses_a_context_of_another_kind():
    # Kills the mutant that removes the kind check: a linear context sealed under the
    # machine's key with the clear kind "unrestricted" would be copied freely.
    forged = _sealed_with_wrong_kind(KEY0, Linear("ticket"), UNRESTRICTED)
    with pytest.raises(UnsealError, match="kind"):
        unseal_context(forged, RING)
    with pytest.raises(UnsealError, match="kind"):
        Env().unseal(forged, RING)
    backwards = _sealed_with_wrong_kind(KEY0, "plain", LINEAR)
    with pytest.raises(UnsealError, match="kind"):
        Env().unseal(backwards, RING)


def test_siv_sealer_refuses_a_payload_under_another_kind_or_old_label():
    key = bytes(range(64))
    sealer, unsealer = SivSealer(key), SivUnsealer(key)
    s = sealer.seal(Linear("gold"))
    assert type(unsealer.unseal(s)) is Linear
    # The same payload relabelled as unrestricted fails authentication (kind is in the AD).
    relabelled = avm.core.values.Sealed(s.sealer, s.payload, crypto=True, kind=UNRESTRICTED)
    with pytest.raises(UnsealError):
        unsealer.unseal(relabelled)
    # A payload made with the old, unlabelled associated data does not open.
    old = AESSIV(key).encrypt(codec.encode("gold"), [sealer.name.encode()])
    with pytest.raises(UnsealError):
        unsealer.unseal(avm.core.values.Sealed(s.sealer, old, crypto=True, kind=UNRESTRICTED))


# -- item 2: a holder cannot change what the cache hands out ---------------------------------


@record(name="test.trust.Owner")
class Owner:
    name: str
    share: object


@record(name="test.trust.Account")
class Account:
    owner: Owner
    limit: object


FRACTION = getattr(avm, "Fraction", None) or getattr(
    avm.core.values, "Fraction", fractions.Fraction)


def _tamper(obj) -> None:
    """Everything a step can try on an object it was shown, ignoring what is refused."""
    attacks = [
        lambda: object.__setattr__(obj, "name", "mallory"),
        lambda: object.__setattr__(obj, "owner", "mallory"),
        lambda: object.__setattr__(obj, "limit", 10**9),
        lambda: object.__setattr__(obj, "_numerator", 10**9),
        lambda: object.__setattr__(obj, "_denominator", 1),
        lambda: object.__setattr__(obj, "__class__", Owner),
        lambda: obj.__dict__.__setitem__("name", "mallory"),
        lambda: obj.__dict__.__setitem__("owner", "mallory"),
        lambda: obj.__dict__.__setitem__("limit", 10**9),
        lambda: obj.__dict__.update(extra="state that survives"),
    ]
    for attack in attacks:
        try:
            attack()
        except Exception:
            pass


def _walk(v):
    yield v
    for name in ("owner", "share", "limit", "name"):
        try:
            child = getattr(v, name)
        except Exception:
            continue
        if child is not v:
            yield from _walk(child)


def test_a_holder_cannot_rewrite_a_cached_context():
    """A bank echoes the context of the capability it was reached through; the holder
    tries to rewrite it in place; the next use still opens to the original."""
    ctx = Account(Owner("alice", FRACTION(1, 3)), FRACTION(7, 2))
    original = codec.encode(ctx)

    def bank(msg, state):
        c, content = msg
        if type(content) is tuple and content and content[0] == "whoami":
            return [(content[1], ("you-are", c))], state
        return [], state

    def mallory(msg, state):
        c, content = msg
        if type(content) is tuple and content and content[0] == "you-are":
            for part in _walk(content[1]):
                _tamper(part)
            return [], (*(state or ()), codec.encode(content[1]))
        if type(content) is tuple and content and content[0] == "init":
            return [], ()
        return [], state

    sim = Sim(seed=0)
    sim.spawn("bank", sim.behavior(bank, "bank"))
    sim.spawn("mallory", sim.behavior(mallory, "mallory"))
    sim.run()
    acct = sim.cap("bank", ctx)
    reply = sim.cap("mallory", "inbox")
    for _ in range(3):
        sim.send(acct, ("whoami", reply))
        sim.run()
    seen = sim.state("mallory")
    assert len(seen) == 3
    assert all(s == original for s in seen), "a holder rewrote the shared context"
    # And the cache itself still holds the original.
    ring = sim.env.keyring(sim.net, sim.address("bank"))
    assert codec.encode(sim.env.unseal(acct, ring)) == original


def test_a_context_handed_out_by_env_unseal_cannot_be_changed():
    env = Env()
    ctx = Account(Owner("alice", FRACTION(1, 3)), FRACTION(7, 2))
    cap = seal_context(ADDR, KEY0, ctx)
    got = env.unseal(cap, RING)
    for part in _walk(got):
        _tamper(part)
    assert codec.encode(env.unseal(cap, RING)) == codec.encode(ctx)
    assert env.unseal(cap, RING) == ctx


# -- item 8: weak keys and domain separation -------------------------------------------------

SMALL_ORDER_ED25519 = [bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
)]
NON_CANONICAL_ED25519 = [bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000080",  # x = 0, sign 1
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1
)]
P448 = 2**448 - 2**224 - 1
SMALL_ORDER_ED448 = [y.to_bytes(56, "little") + bytes([s])
                     for y, s in ((1, 0), (P448 - 1, 0), (0, 0), (0, 0x80))]


def _resource_bytes(key: bytes, alg: str = "ed25519") -> bytes:
    return codec.encode(Map({"key": key, "alg": alg, "meta": (("name", "x"),)}))


@pytest.mark.parametrize("key", SMALL_ORDER_ED25519 + NON_CANONICAL_ED25519,
                         ids=lambda k: k.hex()[:12])
def test_weak_ed25519_keys_are_refused_everywhere(key):
    assert check_public_key("ed25519", key) is not None
    with pytest.raises(CapabilityError):
        identity_resource(key, "ed25519")
    data = _resource_bytes(key)
    with pytest.raises(CapabilityError):
        verify_identity(data, hashlib.sha256(ADDRESS_LABEL + data).digest())
    res = Map({"key": key, "alg": "ed25519", "meta": ()})
    # The classic small-order forgery: R = identity, S = 0 "signs" every message.
    sig = SMALL_ORDER_ED25519[0] + bytes(32)
    assert not verify_signature(res, b"anything", sig)


@pytest.mark.parametrize("key", SMALL_ORDER_ED448, ids=lambda k: k.hex()[:12])
def test_weak_ed448_keys_are_refused(key):
    assert check_public_key("ed448", key) is not None
    with pytest.raises(CapabilityError):
        identity_resource(key, "ed448")


def test_real_keys_pass_the_key_checks():
    for i in range(20):
        for alg in ("ed25519", "ed448"):
            k = IdentityKey.from_seed(bytes([i]) * 8, alg)
            assert check_public_key(alg, k.public_bytes) is None
            res = identity_resource(k.public_bytes, alg, [("n", i)])
            assert verify_identity(codec.encode(res), address_of(res)) == res


def test_addresses_and_identity_signatures_are_domain_separated():
    k = IdentityKey.from_seed(b"shop")
    res = k.resource([("name", "shop")])
    data = codec.encode(res)
    assert address_of(res) == hashlib.sha256(ADDRESS_LABEL + data).digest()
    assert address_of(res) != hashlib.sha256(data).digest()
    assert address_of(res) != codec.value_hash(res)
    with pytest.raises(CapabilityError):  # the unlabelled hash names no identity
        verify_identity(data, hashlib.sha256(data).digest())
    # An identity signature covers the label: it is not a raw signature over the data,
    # and a raw signature over the data (made for another purpose) is not accepted.
    sig = k.sign(b"route record")
    assert verify_signature(res, b"route record", sig)
    pub = ed25519.Ed25519PublicKey.from_public_bytes(k.public_bytes)
    pub.verify(sig, IDENTITY_SIG_LABEL + b"route record")
    raw = k._private.sign(b"route record")
    assert not verify_signature(res, b"route record", raw)


def test_capabilities_sealed_with_the_old_associated_data_do_not_open():
    old_ad = codec.encode((ADDR, 0, UNRESTRICTED, 0.0))
    sealed = KEY0._siv.encrypt(codec.encode("admin"), [old_ad])
    cap = Capability(ADDR, 0, UNRESTRICTED, 0.0, sealed)
    with pytest.raises(UnsealError):
        unseal_context(cap, RING)


# -- item 12 (part): small decoding limits at the edges ----------------------------------------


def test_capability_uris_decode_under_small_limits():
    ok = commons_cap(ADDR, "hash", ("x" * 100,))
    assert Capability.from_uri(ok.to_uri()) == ok
    big = commons_cap(ADDR, "hash", (b"\0" * (URI_LIMITS.bytes_max + 100),))
    with pytest.raises(CapabilityError):
        Capability.from_uri(big.to_uri())
    deep: object = 1
    for _ in range(URI_LIMITS.depth_max + 4):
        deep = (deep,)
    with pytest.raises(CapabilityError):
        Capability.from_uri(commons_cap(ADDR, "hash", deep).to_uri())


def test_identity_resources_decode_under_small_limits():
    k = IdentityKey.from_seed(b"big")
    big = identity_resource(k.public_bytes, "ed25519", [("blob", b"\0" * IDENTITY_LIMITS.bytes_max)])
    data = codec.encode(big)
    with pytest.raises(CapabilityError):
        verify_identity(data, hashlib.sha256(ADDRESS_LABEL + data).digest())
    deep: object = 1
    for _ in range(IDENTITY_LIMITS.depth_max + 2):
        deep = (deep,)
    res = identity_resource(k.public_bytes, "ed25519", [("deep", deep)])
    data = codec.encode(res)
    with pytest.raises(CapabilityError):
        verify_identity(data, hashlib.sha256(ADDRESS_LABEL + data).digest())


# -- the forgery fuzz --------------------------------------------------------------------------


def test_forgery_fuzz_opens_none_of_10k_mutants():
    w = fuzz.make_world(0)
    t = fuzz.fuzz_direct(10_000, seed=0, w=w)
    assert t.tried == 10_000
    assert (t.accepted, t.crashes, t.disagree) == (0, 0, 0), t.examples[:5]
    # The mutants did reach the unseal: most field mutants and every surviving byte and
    # text mutant were refused there, not only at construction.
    assert t.refused > 1_000, t.line()
    p = fuzz.fuzz_public(300, seed=0, w=w)
    assert (p.accepted, p.crashes) == (0, 0), p.examples[:5]
    # The public path works: every genuine unrestricted capability got through it.
    genuine = [c for c, _ in w.sim.state("target") if type(c) is tuple and c[0] == "genuine"]
    assert len(genuine) == sum(1 for c in w.genuine if c.address == w.target and not c.kind)


def test_the_fuzz_can_see_an_acceptance():
    # The judge is not vacuous: a capability that opens and is not genuine is counted.
    w = fuzz.make_world(1)
    t = fuzz.Tally()
    ring = w.ring
    cap = next(c for c in w.genuine if c.address == w.target and not c.kind)
    w.exact_genuine = set()  # pretend it is not genuine
    fuzz._judge(w, t, cap, ring, "genuine")
    assert t.accepted == 1
