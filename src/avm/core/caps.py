"""Capabilities, Self, identity resources and self-certifying addresses (DESIGN section 5).

    "Self is the function context -> capability (with an optional priority). It seals the
    context with the machine's secret sealing key using deterministic authenticated
    encryption (AES-SIV), so Self is a pure function and the context stays private."

A capability is ``(address, local part)``. The local part is either a sealed context or
a commons service name. The clear fields a holder can see (address, key version,
substructural kind, priority) are bound to the ciphertext as AES-SIV *associated data*:
changing any of them, or any ciphertext byte, makes the capability fail to unseal. So a
holder cannot raise a priority, launder a linear capability into an unrestricted one, or
point a capability at another machine.

Keys are arguments, never drawn here: identity keys come from seed bytes the caller
supplies (the simulator derives them from its network secret, a host from the OS), and
:func:`kdf` turns one secret into many independent keys.

Every check here is on exact bytes and exact types (DESIGN section 8): ``0.0 == -0.0 ==
0 == False`` in Python, so a capability's fields are refused unless they have exactly
the one type and range they may have, and what is authenticated (and cached, see
``netvalue.Env.unseal``) is a fixed byte layout of them, :func:`associated_data`.

Domain separation: every hash, signature and associated-data string made here starts
with its own label (``avm-address-v1``, ``avm-identity-sig-v1``, ``avm-cap`` version 1,
``avm-sealed`` version 1, ``avm-kdf-v1``), so bytes made for one purpose are never
accepted for another.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable
from math import copysign
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import codec
from .errors import CapabilityError, CodecError, UnsealError
from .values import (
    HOLDER,
    KIND_NAMES,
    OPAQUE,
    READ_ONLY_CLASS,
    TAG_CAPABILITY,
    TAG_SELF,
    UNRESTRICTED,
    Map,
    Sealed,
    ValueType,
    _field,
    _no_order,
    check_value,
    kind_of,
    order_key,
    register_value_type,
)

__all__ = [
    "ALGORITHMS",
    "IdentityKey",
    "identity_resource",
    "address_of",
    "name_address",
    "verify_identity",
    "SealingKey",
    "Keyring",
    "Capability",
    "Self",
    "commons_cap",
    "seal_context",
    "unseal_context",
    "address_text",
    "parse_address",
    "SivSealer",
    "SivUnsealer",
    "siv_sealer_pair",
    "associated_data",
    "sealing_key_for",
    "authenticated_input",
    "open_sealed",
    "kdf",
    "verify_signature",
    "check_public_key",
    "URI_LIMITS",
    "IDENTITY_LIMITS",
]

ALGORITHMS = ("ed25519", "ed448")
_PUBLIC_KEY_BYTES = {"ed25519": 32, "ed448": 57}
ADDRESS_BYTES = 32
SEALING_KEY_BYTES = 64  # AES-256-SIV
PRIORITY_MIN, PRIORITY_MAX = -1.0, 1.0
KEYVER_MAX = (1 << 32) - 1
SIV_TAG_BYTES = 16
URI_SCHEME = "avm://"

#: Labels that domain-separate every hash, signature and associated data made here.
ADDRESS_LABEL = b"avm-address-v1\0"
IDENTITY_SIG_LABEL = b"avm-identity-sig-v1\0"
CAP_AD_LABEL = b"avm-cap\0"
CAP_AD_VERSION = 1
SEALED_AD_LABEL = b"avm-sealed\0"
SEALED_AD_VERSION = 1
KDF_LABEL = b"avm-kdf-v1\0"

#: Decoding limits for the small things that arrive from outside the network: a
#: capability URI (pasted, scanned from a QR code) and an identity resource (fetched
#: from anywhere). Both are a few dozen bytes when honest.
URI_LIMITS = codec.Limits(bytes_max=8 * 1024, depth_max=8, items_max=256)
IDENTITY_LIMITS = codec.Limits(bytes_max=4 * 1024, depth_max=6, items_max=128)


def kdf(material: bytes, purpose: str, *parts: Any, n: int = 32) -> bytes:
    """Derive ``n`` key bytes for ``purpose`` from secret ``material`` (SHAKE-256).

    The input is ``KDF_LABEL``, the material's length and bytes, then the canonical
    encoding of ``(purpose, *parts)``: unambiguous, so distinct purposes or parts give
    independent keys, and no output reveals the material or another output.
    """
    if type(material) is not bytes or len(material) < 16:
        raise CapabilityError("key material must be at least 16 bytes")
    info = codec._encode_trusted((purpose, *parts))
    return hashlib.shake_256(
        KDF_LABEL + len(material).to_bytes(4, "big") + material + info).digest(n)


# ---------------------------------------------------------------------------------------
# Identity and addresses
# ---------------------------------------------------------------------------------------


class IdentityKey:
    """A machine's (or host's) signing key pair. Ed25519 by default, Ed448 supported."""

    __slots__ = ("alg", "_private")

    def __init__(self, alg: str, private: Any) -> None:
        self.alg = alg
        self._private = private

    @classmethod
    def from_seed(cls, seed: bytes, alg: str = "ed25519") -> IdentityKey:
        """Derive a key pair from seed bytes (any length; hashed to the key size)."""
        if alg == "ed25519":
            return cls(alg, ed25519.Ed25519PrivateKey.from_private_bytes(
                hashlib.sha256(b"avm-ed25519" + seed).digest()))
        if alg == "ed448":
            return cls(alg, ed448.Ed448PrivateKey.from_private_bytes(
                hashlib.shake_256(b"avm-ed448" + seed).digest(57)))
        raise CapabilityError(f"unknown key algorithm {alg!r}; use one of {ALGORITHMS}")

    @property
    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def private_bytes_raw(self) -> bytes:
        """For the host's key store only; never put this in a value."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` as this identity (prefixed with ``IDENTITY_SIG_LABEL``).

        The label keeps identity signatures apart from any other use of the key: a
        signature made here verifies only with :func:`verify_signature`.
        """
        return self._private.sign(IDENTITY_SIG_LABEL + data)

    def resource(self, metadata: Iterable[tuple[str, Any]] = ()) -> Map:
        # The public key of a private key we hold is a valid, full-order point: no check.
        return _resource(self.public_bytes, self.alg, metadata)

    def __repr__(self) -> str:
        return f"<IdentityKey {self.alg} {self.public_bytes[:6].hex()}...>"


# Edwards curve arithmetic, only to refuse weak public keys: a small-order key lets
# one signature verify for many messages (and "keys" that are not canonical encodings
# give one identity two addresses). Signing and verifying stay with `cryptography`.
_P25519 = 2**255 - 19
_D25519 = -121665 * pow(121666, _P25519 - 2, _P25519) % _P25519
_SQRT_M1 = pow(2, (_P25519 - 1) // 4, _P25519)
_P448 = 2**448 - 2**224 - 1
_D448 = -39081 % _P448


def _ed25519_double(x: int, y: int, z: int) -> tuple[int, int, int]:
    # Projective doubling on -x^2 + y^2 = 1 + d x^2 y^2 ("dbl-2008-bbjlp", a = -1).
    p = _P25519
    b = (x + y) * (x + y) % p
    c, d = x * x % p, y * y % p
    e = -c % p
    f = (e + d) % p
    j = (f - 2 * z * z) % p
    return (b - c - d) * j % p, f * (e - d) % p, f * j % p


def check_public_key(alg: str, key: Any) -> str | None:
    """Why ``key`` is not an acceptable public key for ``alg``, or None if it is.

    Refuses wrong lengths, non-canonical encodings (a coordinate not reduced, or the
    sign bit set on x = 0), points not on the curve and points of small order.
    """
    if alg not in ALGORITHMS:
        return f"unknown key algorithm {alg!r}; use one of {ALGORITHMS}"
    if type(key) is not bytes or len(key) != _PUBLIC_KEY_BYTES[alg]:
        return f"an {alg} public key has {_PUBLIC_KEY_BYTES[alg]} bytes"
    if alg == "ed25519":
        p = _P25519
        sign = key[31] >> 7
        y = int.from_bytes(key, "little") & ((1 << 255) - 1)
        if y >= p:
            return "public key is not canonically encoded"
        # RFC 8032 section 5.1.3: x = (u/v)^((p+3)/8) with one exponentiation.
        u, v = (y * y - 1) % p, (_D25519 * y * y + 1) % p
        v3 = v * v * v % p
        x = u * v3 * pow(u * v3 * v3 * v % p, (p - 5) // 8, p) % p
        vxx = v * x * x % p
        if vxx != u:
            if vxx != -u % p:
                return "public key is not a point on the curve"
            x = x * _SQRT_M1 % p
        if x == 0 and sign:
            return "public key is not canonically encoded"
        px, py, pz = x, y, 1  # the sign of x does not change the order
        for _ in range(3):  # the cofactor is 8: small order iff [8]P is the identity
            px, py, pz = _ed25519_double(px, py, pz)
        if px == 0 and py == pz:
            return "public key has small order"
        return None
    p = _P448
    if key[56] & 0x7F:
        return "public key is not canonically encoded"
    sign = key[56] >> 7
    y = int.from_bytes(key[:56], "little")
    if y >= p:
        return "public key is not canonically encoded"
    # RFC 8032 section 5.2.3: x = (u/v)^((p+1)/4) = u^3 v (u^5 v^3)^((p-3)/4).
    u, v = (y * y - 1) % p, (_D448 * y * y - 1) % p
    x = u * u * u * v * pow(u**5 * v**3 % p, (p - 3) // 4, p) % p
    if v * x * x % p != u:
        return "public key is not a point on the curve"
    if x == 0 and sign:
        return "public key is not canonically encoded"
    # The cofactor is 4; the points of order dividing 4 are (0, +-1) and (+-1, 0).
    if y in (0, 1, p - 1):
        return "public key has small order"
    return None


def identity_resource(public_key: bytes, alg: str, metadata: Iterable[tuple[str, Any]] = ()) -> Map:
    """``{key, alg, meta}``: the value whose hash is a machine's address."""
    if alg not in ALGORITHMS:
        raise CapabilityError(f"unknown key algorithm {alg!r}; use one of {ALGORITHMS}")
    why = check_public_key(alg, bytes(public_key))
    if why is not None:
        raise CapabilityError(why)
    return _resource(bytes(public_key), alg, metadata)


def _resource(public_key: bytes, alg: str, metadata: Iterable[tuple[str, Any]]) -> Map:
    meta = tuple((k, v) for k, v in metadata)
    for k, _ in meta:
        if type(k) is not str:
            raise CapabilityError("identity metadata keys must be text")
    return Map({"key": bytes(public_key), "alg": alg, "meta": meta})


def _address_hash(resource_bytes: bytes) -> bytes:
    return hashlib.sha256(ADDRESS_LABEL + resource_bytes).digest()


def address_of(resource: Map) -> bytes:
    """The labelled SHA-256 of the resource's canonical encoding: a self-certifying address.

    ``SHA-256(ADDRESS_LABEL + encode(resource))``: the label keeps addresses apart from
    value hashes and every other hash of the same bytes.
    """
    return _address_hash(codec.encode(resource))


def name_address(ident: IdentityKey, name: Any) -> bytes:
    """``address_of(ident.resource((("name", name),)))``, the address of a named machine.

    Spawning computes one per machine: for a short text name, the resource's canonical
    encoding is written directly (a map of three text keys, as ``encode`` writes a
    ``Map``: cbor2 sorts them) instead of building and checking a ``Map`` first; the
    bytes are the same (tests/test_spawn_many.py compares the two on generated names).
    """
    if type(name) is str and len(name) <= 256:
        try:
            data = codec._dumps({"key": ident.public_bytes, "alg": ident.alg,
                                 "meta": (("name", name),)})
        except codec.CodecError:
            pass  # (a lone surrogate, say) the general path raises its own error
        else:
            return _address_hash(data)
    return address_of(ident.resource((("name", name),)))


def verify_identity(resource_bytes: bytes, address: bytes) -> Map:
    """Decode an identity resource fetched from anywhere and check it names ``address``.

    The bytes come from anyone, so they are hashed first, then decoded with the small
    ``IDENTITY_LIMITS``, and the key must pass :func:`check_public_key`.
    """
    if type(resource_bytes) is not bytes or type(address) is not bytes:
        raise CapabilityError("an identity resource and an address are bytes")
    if len(resource_bytes) > IDENTITY_LIMITS.bytes_max:
        raise CapabilityError(f"identity resource exceeds {IDENTITY_LIMITS.bytes_max} bytes")
    if _address_hash(resource_bytes) != address:
        raise CapabilityError("identity resource does not hash to the address")
    try:
        res = codec.decode(resource_bytes, IDENTITY_LIMITS)
    except CodecError as e:  # the peer's fault, reported as what it is: a bad identity
        raise CapabilityError(f"identity resource does not decode: {e}") from None
    if (type(res) is not Map or set(res) != {"key", "alg", "meta"}
            or type(res["alg"]) is not str or res["alg"] not in ALGORITHMS
            or type(res["meta"]) is not tuple
            or any(type(m) is not tuple or len(m) != 2 or type(m[0]) is not str
                   for m in res["meta"])):
        raise CapabilityError("not an identity resource")
    why = check_public_key(res["alg"], res["key"])
    if why is not None:
        raise CapabilityError(f"not an identity resource: {why}")
    return res


def verify_signature(resource: Map, data: bytes, signature: bytes) -> bool:
    """Check an identity signature (:meth:`IdentityKey.sign`) by the resource's key.

    False for a bad signature and for a weak or malformed key (small order, not
    canonical): such a key could make one signature verify for many messages.
    """
    try:
        alg, key = resource["alg"], resource["key"]
        if type(alg) is not str or check_public_key(alg, key) is not None:
            return False
        if type(data) is not bytes or type(signature) is not bytes:
            return False
        if alg == "ed25519":
            ed25519.Ed25519PublicKey.from_public_bytes(key).verify(
                signature, IDENTITY_SIG_LABEL + data)
        else:
            ed448.Ed448PublicKey.from_public_bytes(key).verify(
                signature, IDENTITY_SIG_LABEL + data)
    except Exception:
        return False
    return True


def address_text(address: bytes) -> str:
    """Lower-case base32 without padding: case-insensitive and URL-safe."""
    return base64.b32encode(address).decode().rstrip("=").lower()


def parse_address(text: str) -> bytes:
    try:
        pad = "=" * (-len(text) % 8)
        raw = base64.b32decode(text.upper() + pad)
    except Exception:
        raise CapabilityError(f"not an address: {text!r}") from None
    if len(raw) != ADDRESS_BYTES:
        raise CapabilityError(f"an address has {ADDRESS_BYTES} bytes, got {len(raw)}")
    return raw


# ---------------------------------------------------------------------------------------
# Sealing keys
# ---------------------------------------------------------------------------------------


#: AES-SIV objects by key bytes, for the keys in use (see SealingKey._siv).
_SIVS: dict[bytes, AESSIV] = {}
#: How many AES-SIV objects are kept at most: each holds about 2 KB outside Python's heap.
SIV_CACHE_MAX = 4096


class SealingKey:
    """One version of a machine's AES-SIV sealing key.

    It holds the key bytes, not an ``AESSIV`` object: one of those takes about 2 KB of
    native memory and 2.5 us to build, and a network of 100,000 machines holds a
    SealingKey per machine (in every ``Self``). The objects for the keys in use are
    kept in a bounded cache instead.
    """

    __slots__ = ("version", "_raw")

    def __init__(self, version: int, key: bytes) -> None:
        if type(key) is not bytes:
            key = bytes(key)
        if len(key) != SEALING_KEY_BYTES:
            raise CapabilityError(f"a sealing key has {SEALING_KEY_BYTES} bytes")
        self.version = version
        self._raw = key

    @property
    def _siv(self) -> AESSIV:
        siv = _SIVS.get(self._raw)
        if siv is None:
            if len(_SIVS) >= SIV_CACHE_MAX:
                _SIVS.clear()
            siv = _SIVS[self._raw] = AESSIV(self._raw)
        return siv

    @classmethod
    def from_seed(cls, seed: bytes, version: int = 0) -> SealingKey:
        return cls(version, hashlib.shake_256(b"avm-siv" + seed + version.to_bytes(4, "big"))
                   .digest(SEALING_KEY_BYTES))

    def __repr__(self) -> str:
        return f"<SealingKey v{self.version}>"


class Keyring:
    """The sealing keys a runtime holds for one machine. Not a value: keys stay outside state.

    Rotating drops every older version unless asked to keep it, which revokes every
    capability the machine ever issued under those versions.
    """

    __slots__ = ("address", "_keys", "current")

    def __init__(self, address: bytes, key: SealingKey) -> None:
        self.address = address
        self._keys = {key.version: key}
        self.current = key

    def get(self, version: int) -> SealingKey | None:
        return self._keys.get(version)

    def rotate(self, key: SealingKey, keep_old: bool = False) -> Keyring:
        if key.version <= self.current.version:
            raise CapabilityError("a rotated key needs a higher version")
        new = Keyring(self.address, key)
        if keep_old:
            new._keys.update(self._keys)
        return new

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))


# ---------------------------------------------------------------------------------------
# Capabilities
# ---------------------------------------------------------------------------------------


def _check_cap_fields(address: Any, keyver: Any, kind: Any, priority: Any, sealed: Any,
                      commons: Any) -> None:
    """Refuse any capability field that is not exactly of its one type and range.

    Exact types (``bool`` is not ``int``, ``int`` is not ``float``), priority a float in
    [-1, 1] that is not NaN and not ``-0.0`` (one capability, one encoding), and a
    commons capability has the default clear fields. The Capability constructor calls
    this, so no capability with a field Python's ``==`` would confuse exists at all.
    """
    if type(address) is not bytes or len(address) != ADDRESS_BYTES:
        raise CapabilityError(f"a capability's address is {ADDRESS_BYTES} bytes")
    if type(keyver) is not int or not 0 <= keyver <= KEYVER_MAX:
        raise CapabilityError(f"a key version is an int in [0, {KEYVER_MAX}]")
    if type(kind) is not int or kind not in KIND_NAMES:
        raise CapabilityError(f"a substructural kind is an int in {sorted(KIND_NAMES)}")
    if (type(priority) is not float or not PRIORITY_MIN <= priority <= PRIORITY_MAX
            or (priority == 0.0 and copysign(1.0, priority) < 0.0)):
        raise CapabilityError("priority must be a float in [-1, 1] (not NaN, not -0.0)")
    if type(sealed) is not bytes:
        raise CapabilityError("a sealed context is bytes")
    if commons is None:
        if len(sealed) < SIV_TAG_BYTES:
            raise CapabilityError("a sealed context is at least 16 bytes")
        return
    if type(commons) is not tuple or len(commons) != 2 or type(commons[0]) is not str:
        raise CapabilityError("a commons part is (service name, arguments)")
    if keyver != 0 or kind != UNRESTRICTED or priority != 0.0 or sealed != b"":
        raise CapabilityError("a commons capability has no key version, kind, priority "
                              "or sealed context")


class Capability(tuple):
    """An opaque, unforgeable address of a machine plus a sealed context (or commons name).

    Immutable for real, like every value (see ``avm.core.values``): a tuple
    ``(address, keyver, kind, priority, sealed, commons, _held)`` read through C getters,
    no ``__dict__``, a read-only ``__class__``. The constructor refuses any field of the
    wrong exact type or range (:func:`_check_cap_fields`). Equality and hashing use the
    public fields and ciphertext only. ``_held`` keeps, in memory only, the context a
    capability was just made from, so the step checker can see linear values that went
    *into* it; it is never encoded. Within one step a substructural capability is counted
    by its ciphertext (``values.item_identity``), so rebuilding it is copying it.
    """

    __slots__ = ()
    address: bytes = _field(0, "Address of the machine it reaches (32 bytes).")
    keyver: int = _field(1, "Version of the sealing key.")
    kind: int = _field(2, "Substructural kind of the sealed context.")
    priority: float = _field(3, "Scheduling priority in [-1, 1] (authenticated).")
    sealed: bytes = _field(4, "AES-SIV ciphertext of the context.")
    commons: tuple[str, Any] | None = _field(5, "(service, args) for a commons capability.")
    _held: tuple = _field(6, "In memory only: the context it was just made from.")
    __class__ = READ_ONLY_CLASS  # type: ignore[assignment]

    def __new__(
        cls, address: bytes, keyver: int = 0, kind: int = UNRESTRICTED, priority: float = 0.0,
        sealed: bytes = b"", commons: tuple[str, Any] | None = None, held: tuple = (),
    ) -> Capability:
        _check_cap_fields(address, keyver, kind, priority, sealed, commons)
        if type(held) is not tuple:
            raise CapabilityError("held is a tuple")
        return tuple.__new__(cls, (address, keyver, kind, priority, sealed, commons, held))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Capability is immutable")

    __delattr__ = __setattr__  # type: ignore[assignment]
    __lt__ = __le__ = __gt__ = __ge__ = _no_order  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return type(other) is Capability and other[:6] == self[:6]  # type: ignore[index]

    def __ne__(self, other: object) -> bool:
        return not (type(other) is Capability and other[:6] == self[:6])  # type: ignore[index]

    def __hash__(self) -> int:
        return hash(self[:6])

    def __bool__(self) -> bool:
        return True

    def __reduce__(self) -> tuple:
        return (Capability, tuple(self))

    @property
    def is_commons(self) -> bool:
        return self[5] is not None

    def __repr__(self) -> str:
        who = address_text(self.address)[:10]
        if self.commons is not None:
            return f"<cap {who}.../~{self.commons[0]}>"
        extra = "" if self.kind == UNRESTRICTED else f" {KIND_NAMES[self.kind]}"
        if self.priority:
            extra += f" p={self.priority:g}"
        return f"<cap {who}...{extra} #{self.sealed[:4].hex()}>"

    # -- text form --------------------------------------------------------------------
    def to_uri(self) -> str:
        """``avm://ADDRESS/LOCAL``: a bearer secret for people and tools outside."""
        return f"{URI_SCHEME}{address_text(self.address)}/{_b64(codec.encode(_local_items(self)))}"

    @classmethod
    def from_uri(cls, text: str) -> Capability:
        if not text.startswith(URI_SCHEME):
            raise CapabilityError(f"a capability URI starts with {URI_SCHEME!r}")
        rest = text[len(URI_SCHEME):]
        addr, sep, local = rest.partition("/")
        if not sep or not local:
            raise CapabilityError("a capability URI is avm://ADDRESS/LOCAL")
        address = parse_address(addr)
        if len(local) > URI_LIMITS.bytes_max * 4 // 3 + 4:
            raise CapabilityError(f"capability URI exceeds {URI_LIMITS.bytes_max} bytes")
        try:
            raw = base64.urlsafe_b64decode(local + "=" * (-len(local) % 4))
            items = codec.decode(raw, URI_LIMITS)
        except (CodecError, ValueError) as e:
            raise CapabilityError(f"malformed capability URI: {e}") from None
        cap = _cap_from_local(address, items)
        if cap.to_uri() != text:
            raise CapabilityError("capability URI is not in canonical form")
        return cap


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _local_items(cap: Capability) -> tuple:
    if cap.commons is not None:
        return ("~", cap.commons[0], cap.commons[1])
    return (cap.keyver, cap.kind, cap.priority, cap.sealed)


def _cap_from_local(address: bytes, items: Any) -> Capability:
    if type(items) is not tuple:
        raise CapabilityError("malformed capability local part")
    if len(items) == 3 and type(items[0]) is str and items[0] == "~":
        _, name, args = items
        if type(name) is not str:
            raise CapabilityError("commons name must be text")
        return Capability(address, commons=(name, args))
    if len(items) != 4:
        raise CapabilityError("malformed capability local part")
    keyver, kind, priority, sealed = items
    # The constructor checks every field's exact type and range.
    return Capability(address, keyver, kind, priority, sealed)


def _cap_to_items(cap: Capability) -> tuple:
    return (cap.address, *_local_items(cap))


def _cap_from_items(items: tuple) -> Capability:
    if type(items) is not tuple or not items or type(items[0]) is not bytes or len(items[0]) != ADDRESS_BYTES:
        raise CodecError("malformed capability")
    try:
        return _cap_from_local(items[0], items[1:])
    except CapabilityError as e:
        raise CodecError(str(e)) from None


_AD_PREFIX = CAP_AD_LABEL + bytes([CAP_AD_VERSION])
# One struct for the whole layout. "32s" would pad or cut an address of another length:
# every caller checks the length (or equality with a 32-byte address) first.
_AD_PACK = struct.Struct(f">{len(_AD_PREFIX)}s{ADDRESS_BYTES}sQBd").pack


def _associated(address: bytes, keyver: int, kind: int, priority: float) -> bytes:
    # Exact types again: struct would pack 0, 0.0 and False alike.
    if (type(address) is not bytes or len(address) != ADDRESS_BYTES or type(keyver) is not int
            or type(kind) is not int or type(priority) is not float):
        raise UnsealError("capability fields have the wrong types")
    try:
        return _AD_PACK(_AD_PREFIX, address, keyver, kind, priority)
    except struct.error:
        raise UnsealError("capability fields are out of range") from None


def associated_data(cap: Capability) -> bytes:
    """The exact bytes AES-SIV authenticates beside a capability's ciphertext.

    ``b"avm-cap\\0"``, the layout version (1), the 32-byte address, the key version
    (u64), the kind (u8) and the priority (IEEE double), all big-endian: a purpose label,
    a version and every clear field, in a fixed layout in which ``-0.0`` and ``0.0``
    differ. Caches and comparisons of capabilities use these bytes and the ciphertext.
    """
    return _associated(cap.address, cap.keyver, cap.kind, cap.priority)


def seal_context(address: bytes, key: SealingKey, context: Any, priority: float = 0.0) -> Capability:
    """Seal ``context`` into a capability for the machine at ``address``.

    ``priority`` is an int or float in [-1, 1]; it is stored as a float, ``-0.0`` as 0.0.
    """
    if type(priority) is not float and type(priority) is not int:
        raise CapabilityError(f"priority must be a number in [-1, 1], not {type(priority).__name__}")
    priority = float(priority) + 0.0  # + 0.0 turns -0.0 into 0.0
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise CapabilityError(f"priority {priority} is outside [-1, 1]")
    n = check_value(context, "$.context")
    kind = kind_of(context) if n else UNRESTRICTED
    plain = codec._encode_trusted(context)
    sealed = key._siv.encrypt(plain, [_associated(address, key.version, kind, priority)])
    return Capability(address, key.version, kind, priority, sealed, held=(context,) if n else ())


def sealing_key_for(cap: Capability, keyring: Keyring) -> SealingKey:
    """The key that may open ``cap``, after every check that needs no decryption.

    Raises UnsealError for a non-capability, a commons capability, another machine's
    capability, a retired key version and fields of the wrong exact type.
    """
    return authenticated_input(cap, keyring)[0]


def authenticated_input(cap: Capability, keyring: Keyring) -> tuple[SealingKey, bytes]:
    """``(key, associated data)`` for opening ``cap`` with ``keyring``, or UnsealError.

    Every check that needs no decryption, in one pass (this runs once per distinct
    capability of every batch): a capability of exactly this type, not a commons one,
    for this keyring's machine, under a version it still holds, with fields of their
    exact types (an object built around the constructor may hold anything).
    """
    if type(cap) is not Capability:
        raise UnsealError(f"not a capability: {type(cap).__name__}")
    address, keyver, kind, priority = cap.address, cap.keyver, cap.kind, cap.priority
    if cap.commons is not None:
        raise UnsealError("a commons capability has no sealed context")
    if type(address) is not bytes or address != keyring.address:  # so 32 bytes too
        raise UnsealError("capability names another machine")
    key = keyring._keys.get(keyver) if type(keyver) is int else None
    if key is None:
        raise UnsealError(f"capability was sealed under key version {keyver!r}, which is retired")
    if type(cap.sealed) is not bytes or type(kind) is not int or type(priority) is not float:
        raise UnsealError("capability fields have the wrong types")
    try:
        return key, _AD_PACK(_AD_PREFIX, address, keyver, kind, priority)
    except struct.error:
        raise UnsealError("capability fields are out of range") from None


def open_sealed(cap: Capability, key: SealingKey, ad: bytes) -> Any:
    """Decrypt and decode ``cap``'s context under ``key`` with associated data ``ad``."""
    try:
        plain = key._siv.decrypt(cap.sealed, [ad])
    except InvalidTag:
        raise UnsealError("capability failed authentication: forged or tampered") from None
    try:
        context = codec.decode(plain)
    except CodecError as e:  # only a key holder can produce this: still refuse cleanly
        raise UnsealError(f"sealed context does not decode: {e}") from None
    # Only a key holder can seal a context whose kind differs from the clear one, but a
    # capability that claims "unrestricted" for a linear context would let its holder
    # copy the linear value: refuse it.
    if kind_of(context) != cap.kind:
        raise UnsealError("capability kind does not match its context")
    return context


def unseal_context(cap: Capability, keyring: Keyring) -> Any:
    """Open a capability's context, or raise UnsealError (forged, tampered, foreign, retired)."""
    key, ad = authenticated_input(cap, keyring)
    return open_sealed(cap, key, ad)


def commons_cap(origin: bytes, name: str, args: Any = ()) -> Capability:
    """A capability for a stateless commons service (``random``, ``time``, ``null``...)."""
    check_value(args, "$.args")
    return Capability(origin, commons=(name, args))


# ---------------------------------------------------------------------------------------
# Cryptographic sealers: the same interface as the discretionary ones in values.py
# ---------------------------------------------------------------------------------------


class SivSealer:
    """Seals values with AES-SIV: deterministic, authenticated, secret.

    The same ``seal``/``unseal`` interface as :class:`~avm.core.values.Sealer`, but the
    payload is ciphertext, so only the holder of the key can open it, wherever the
    sealed value travels. Sealer objects hold key bytes and are therefore *not* values:
    keep them in the runtime (as the host keeps sealing keys), not in a machine's state.
    """

    __slots__ = ("name", "_siv")

    def __init__(self, key: bytes) -> None:
        if len(key) != SEALING_KEY_BYTES:
            raise CapabilityError(f"a sealing key has {SEALING_KEY_BYTES} bytes")
        self.name = "siv:" + hashlib.sha256(b"avm-sealer-id" + key).hexdigest()[:16]
        self._siv = AESSIV(key)

    def _ad(self, kind: int) -> bytes:
        # Purpose label, layout version, sealer name and the clear kind: a payload moved
        # to a Sealed with another kind fails authentication.
        return SEALED_AD_LABEL + bytes([SEALED_AD_VERSION, kind]) + self.name.encode()

    def seal(self, value: Any) -> Sealed:
        n = check_value(value)
        plain = codec._encode_trusted(value)
        kind = kind_of(value) if n else UNRESTRICTED
        data = self._siv.encrypt(plain, [self._ad(kind)])
        return Sealed(self.name, data, crypto=True, kind=kind, held=(value,) if n else ())

    def __repr__(self) -> str:
        return f"SivSealer({self.name!r})"


class SivUnsealer:
    """Opens what the :class:`SivSealer` with the same key sealed; refuses anything else."""

    __slots__ = ("name", "_sealer")

    def __init__(self, key: bytes) -> None:
        self._sealer = SivSealer(key)
        self.name = self._sealer.name

    def unseal(self, sealed: Any) -> Any:
        if (type(sealed) is not Sealed or sealed.crypto is not True
                or type(sealed.sealer) is not str or sealed.sealer != self.name
                or type(sealed.payload) is not bytes
                or type(sealed.kind) is not int or sealed.kind not in KIND_NAMES):
            raise UnsealError(f"not a value sealed by {self.name!r}")
        try:
            plain = self._sealer._siv.decrypt(sealed.payload, [self._sealer._ad(sealed.kind)])
        except InvalidTag:
            raise UnsealError("sealed value failed authentication: forged or tampered") from None
        try:
            value = codec.decode(plain)
        except CodecError as e:  # only a key holder can produce this: still refuse cleanly
            raise UnsealError(f"sealed value does not decode: {e}") from None
        if kind_of(value) != sealed.kind:
            raise UnsealError("sealed value kind does not match its contents")
        return value

    def __repr__(self) -> str:
        return f"SivUnsealer({self.name!r})"


def siv_sealer_pair(key: bytes) -> tuple[SivSealer, SivUnsealer]:
    """A cryptographic sealer and its unsealer from 64 key bytes (AES-256-SIV)."""
    return SivSealer(key), SivUnsealer(key)


# ---------------------------------------------------------------------------------------
# Self
# ---------------------------------------------------------------------------------------


class Self(tuple):
    """A machine's sealing function ``context -> capability``; pure, deterministic.

    Its display and encoding name the machine and key version, never the key. A ``Self``
    decoded where the machine's keys are not held is *unbound*: calling it says so.
    Immutable like every value: a tuple ``(address, keyver, _key)``.
    """

    __slots__ = ()
    address: bytes = _field(0, "Address of the machine.")
    keyver: int = _field(1, "Version of the sealing key it seals with.")
    _key: SealingKey | None = _field(2, "The sealing key, where it is held.")
    __class__ = READ_ONLY_CLASS  # type: ignore[assignment]

    def __new__(cls, address: bytes, keyver: int, key: SealingKey | None = None) -> Self:
        why = _self_shape_error((address, keyver, key))
        if why is not None:
            raise CapabilityError(why)
        return tuple.__new__(cls, (address, keyver, key))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Self is immutable")

    __delattr__ = __setattr__  # type: ignore[assignment]
    __lt__ = __le__ = __gt__ = __ge__ = _no_order  # type: ignore[assignment]

    def __call__(self, context: Any, priority: float = 0.0) -> Capability:
        if self._key is None:
            raise CapabilityError(
                f"this Self belongs to machine {address_text(self.address)[:10]}... whose "
                "sealing keys are not held here; only that machine can make its capabilities")
        return seal_context(self.address, self._key, context, priority)

    def __eq__(self, other: object) -> bool:
        return type(other) is Self and other[:2] == self[:2]  # type: ignore[index]

    def __ne__(self, other: object) -> bool:
        return not (type(other) is Self and other[:2] == self[:2])  # type: ignore[index]

    def __hash__(self) -> int:
        return hash(("Self", self[0], self[1]))

    def __bool__(self) -> bool:
        return True

    def __reduce__(self) -> tuple:
        return (Self, tuple(self))

    def __repr__(self) -> str:
        return f"<Self of {address_text(self.address)[:10]}... key v{self.keyver}>"


def _self_shape_error(v: tuple) -> str | None:
    if (len(v) != 3 or type(v[0]) is not bytes or len(v[0]) != ADDRESS_BYTES
            or type(v[1]) is not int or not 0 <= v[1] <= KEYVER_MAX
            or (v[2] is not None and type(v[2]) is not SealingKey)):
        return "a Self is (32-byte address, int key version, SealingKey or None)"
    return None


def _cap_shape_error(v: tuple) -> str | None:
    """Why a Capability (possibly built with tuple.__new__) is malformed, or None (O(1))."""
    if len(v) != 7 or type(v[6]) is not tuple:
        return "a Capability is (address, keyver, kind, priority, sealed, commons, held)"
    try:
        _check_cap_fields(*v[:6])
    except CapabilityError as e:
        return str(e)
    return None


def _self_from_items(items: tuple) -> Self:
    if type(items) is not tuple or len(items) != 2 or type(items[0]) is not bytes or type(items[1]) is not int:
        raise CodecError("malformed Self")
    return Self(items[0], items[1])


# The codec reads tags and payloads from the table of value types (values.VALUE_TYPES).
# A commons capability's arguments are plain values in the clear: any linear, affine or
# relevant items in them are counted like items anywhere else (copying the capability
# copies them), or they could be laundered through a commons capability.
register_value_type(ValueType(
    Capability, "capability", shape=HOLDER, tag=TAG_CAPABILITY, check=_cap_shape_error,
    children=lambda c: (tuple(("<context>", h) for h in c[6]) if c[5] is None
                        else (("<commons>", c[5][1]),)),
    item_kind=lambda c: c[2], by_bytes=lambda c: c[4] if c[5] is None else None,
    to_items=_cap_to_items, from_items=_cap_from_items,
    order=lambda c: (c[0], c[1], c[2], c[3], c[4], () if c[5] is None else (c[5][0], order_key(c[5][1]))),
    describe=lambda c: {"commons": c[5] is not None},
    example=lambda: Capability(bytes(32), 1, 3, 0.5, bytes(16)),
    # [address, key version, kind, priority, sealed]: atoms _cap_shape_error bounds, so
    # two levels (values item 10); a commons capability's arguments are walked instead.
    depth=lambda c: 2 if c[5] is None else None,
))
register_value_type(ValueType(
    Self, "self", shape=OPAQUE, tag=TAG_SELF, check=_self_shape_error,
    to_items=lambda s: (s[0], s[1]), from_items=_self_from_items,
    order=lambda s: (s[0], s[1]), example=lambda: Self(bytes(32), 0),
    depth=lambda s: 2,  # [address, key version], bounded by _self_shape_error
))
