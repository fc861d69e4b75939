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
supplies (the simulator derives them from its seed, a host from the OS).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import codec
from .errors import CapabilityError, CodecError, UnsealError
from .values import KIND_NAMES, UNRESTRICTED, Map, Sealed, check_value, kind_of, register_value_type

__all__ = [
    "ALGORITHMS",
    "IdentityKey",
    "identity_resource",
    "address_of",
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
]

ALGORITHMS = ("ed25519", "ed448")
_PUBLIC_KEY_BYTES = {"ed25519": 32, "ed448": 57}
ADDRESS_BYTES = 32
SEALING_KEY_BYTES = 64  # AES-256-SIV
PRIORITY_MIN, PRIORITY_MAX = -1.0, 1.0
URI_SCHEME = "avm://"


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
        return self._private.sign(data)

    def resource(self, metadata: Iterable[tuple[str, Any]] = ()) -> Map:
        return identity_resource(self.public_bytes, self.alg, metadata)

    def __repr__(self) -> str:
        return f"<IdentityKey {self.alg} {self.public_bytes[:6].hex()}...>"


def identity_resource(public_key: bytes, alg: str, metadata: Iterable[tuple[str, Any]] = ()) -> Map:
    """``{key, alg, meta}``: the value whose hash is a machine's address."""
    if alg not in ALGORITHMS:
        raise CapabilityError(f"unknown key algorithm {alg!r}; use one of {ALGORITHMS}")
    meta = tuple((k, v) for k, v in metadata)
    for k, _ in meta:
        if type(k) is not str:
            raise CapabilityError("identity metadata keys must be text")
    return Map({"key": bytes(public_key), "alg": alg, "meta": meta})


def address_of(resource: Map) -> bytes:
    """The secure hash of the resource's canonical encoding: a self-certifying address."""
    return codec.value_hash(resource)


def verify_identity(resource_bytes: bytes, address: bytes) -> Map:
    """Decode an identity resource fetched from anywhere and check it names ``address``."""
    if hashlib.sha256(resource_bytes).digest() != address:
        raise CapabilityError("identity resource does not hash to the address")
    try:
        res = codec.decode(resource_bytes)
    except CodecError as e:  # the peer's fault, reported as what it is: a bad identity
        raise CapabilityError(f"identity resource does not decode: {e}") from None
    if (type(res) is not Map or set(res) != {"key", "alg", "meta"}
            or res["alg"] not in ALGORITHMS or type(res["key"]) is not bytes
            or len(res["key"]) != _PUBLIC_KEY_BYTES[res["alg"]]):
        raise CapabilityError("not an identity resource")
    return res


def verify_signature(resource: Map, data: bytes, signature: bytes) -> bool:
    """Check a signature by the key an identity resource names."""
    key = resource["key"]
    try:
        if resource["alg"] == "ed25519":
            ed25519.Ed25519PublicKey.from_public_bytes(key).verify(signature, data)
        else:
            ed448.Ed448PublicKey.from_public_bytes(key).verify(signature, data)
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


class SealingKey:
    """One version of a machine's AES-SIV sealing key."""

    __slots__ = ("version", "_siv")

    def __init__(self, version: int, key: bytes) -> None:
        if len(key) != SEALING_KEY_BYTES:
            raise CapabilityError(f"a sealing key has {SEALING_KEY_BYTES} bytes")
        self.version = version
        self._siv = AESSIV(key)

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


class Capability:
    """An opaque, unforgeable address of a machine plus a sealed context (or commons name).

    Equality and hashing use the public fields and ciphertext only. ``_held`` keeps, in
    memory only, the context a capability was just made from, so the step checker can see
    linear values that went *into* it; it is never encoded.
    """

    __slots__ = ("address", "keyver", "kind", "priority", "sealed", "commons", "_held")
    address: bytes
    keyver: int
    kind: int
    priority: float
    sealed: bytes
    commons: tuple[str, Any] | None
    _held: tuple

    def __init__(
        self, address: bytes, keyver: int = 0, kind: int = UNRESTRICTED, priority: float = 0.0,
        sealed: bytes = b"", commons: tuple[str, Any] | None = None, held: tuple = (),
    ) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "keyver", keyver)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "priority", priority)
        object.__setattr__(self, "sealed", sealed)
        object.__setattr__(self, "commons", commons)
        object.__setattr__(self, "_held", held)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Capability is immutable")

    def _key(self) -> tuple:
        return (self.address, self.keyver, self.kind, self.priority, self.sealed, self.commons)

    def __eq__(self, other: object) -> bool:
        return type(other) is Capability and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def is_commons(self) -> bool:
        return self.commons is not None

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
        try:
            raw = base64.urlsafe_b64decode(local + "=" * (-len(local) % 4))
            items = codec.decode(raw)
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
    if len(items) == 3 and items[0] == "~":
        _, name, args = items
        if type(name) is not str:
            raise CapabilityError("commons name must be text")
        return Capability(address, commons=(name, args))
    if len(items) != 4:
        raise CapabilityError("malformed capability local part")
    keyver, kind, priority, sealed = items
    if type(keyver) is not int or keyver < 0:
        raise CapabilityError("malformed key version")
    if type(kind) is not int or kind not in KIND_NAMES:
        raise CapabilityError("malformed substructural kind")
    if type(priority) is not float or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise CapabilityError("priority must be a float in [-1, 1]")
    if type(sealed) is not bytes or len(sealed) < 16:
        raise CapabilityError("malformed sealed context")
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


def _associated(address: bytes, keyver: int, kind: int, priority: float) -> bytes:
    return codec._encode_trusted((address, keyver, kind, priority))


def seal_context(address: bytes, key: SealingKey, context: Any, priority: float = 0.0) -> Capability:
    """Seal ``context`` into a capability for the machine at ``address``."""
    priority = float(priority)
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise CapabilityError(f"priority {priority} is outside [-1, 1]")
    n = check_value(context, "$.context")
    kind = kind_of(context) if n else UNRESTRICTED
    plain = codec._encode_trusted(context)
    sealed = key._siv.encrypt(plain, [_associated(address, key.version, kind, priority)])
    return Capability(address, key.version, kind, priority, sealed, held=(context,) if n else ())


def unseal_context(cap: Capability, keyring: Keyring) -> Any:
    """Open a capability's context, or raise UnsealError (forged, tampered, foreign, retired)."""
    if type(cap) is not Capability:
        raise UnsealError(f"not a capability: {type(cap).__name__}")
    if cap.commons is not None:
        raise UnsealError("a commons capability has no sealed context")
    if cap.address != keyring.address:
        raise UnsealError("capability names another machine")
    key = keyring.get(cap.keyver)
    if key is None:
        raise UnsealError(f"capability was sealed under key version {cap.keyver}, which is retired")
    try:
        plain = key._siv.decrypt(
            cap.sealed, [_associated(cap.address, cap.keyver, cap.kind, cap.priority)])
    except InvalidTag:
        raise UnsealError("capability failed authentication: forged or tampered") from None
    try:
        context = codec.decode(plain)
    except CodecError as e:  # only a key holder can produce this: still refuse cleanly
        raise UnsealError(f"sealed context does not decode: {e}") from None
    if kind_of(context) != cap.kind:
        raise UnsealError("capability kind does not match its context")
    return context


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

    def seal(self, value: Any) -> Sealed:
        n = check_value(value)
        plain = codec._encode_trusted(value)
        data = self._siv.encrypt(plain, [self.name.encode()])
        return Sealed(self.name, data, crypto=True, kind=kind_of(value) if n else UNRESTRICTED,
                      held=(value,) if n else ())

    def __repr__(self) -> str:
        return f"SivSealer({self.name!r})"


class SivUnsealer:
    """Opens what the :class:`SivSealer` with the same key sealed; refuses anything else."""

    __slots__ = ("name", "_siv")

    def __init__(self, key: bytes) -> None:
        sealer = SivSealer(key)
        self.name = sealer.name
        self._siv = sealer._siv

    def unseal(self, sealed: Any) -> Any:
        if type(sealed) is not Sealed or not sealed.crypto or sealed.sealer != self.name:
            raise UnsealError(f"not a value sealed by {self.name!r}")
        try:
            plain = self._siv.decrypt(sealed.payload, [self.name.encode()])
        except InvalidTag:
            raise UnsealError("sealed value failed authentication: forged or tampered") from None
        value = codec.decode(plain)
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


class Self:
    """A machine's sealing function ``context -> capability``; pure, deterministic.

    Its display and encoding name the machine and key version, never the key. A ``Self``
    decoded where the machine's keys are not held is *unbound*: calling it says so.
    """

    __slots__ = ("address", "keyver", "_key")
    address: bytes
    keyver: int
    _key: SealingKey | None

    def __init__(self, address: bytes, keyver: int, key: SealingKey | None = None) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "keyver", keyver)
        object.__setattr__(self, "_key", key)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Self is immutable")

    def __call__(self, context: Any, priority: float = 0.0) -> Capability:
        if self._key is None:
            raise CapabilityError(
                f"this Self belongs to machine {address_text(self.address)[:10]}... whose "
                "sealing keys are not held here; only that machine can make its capabilities")
        return seal_context(self.address, self._key, context, priority)

    def __eq__(self, other: object) -> bool:
        return type(other) is Self and (other.address, other.keyver) == (self.address, self.keyver)

    def __hash__(self) -> int:
        return hash(("Self", self.address, self.keyver))

    def __repr__(self) -> str:
        return f"<Self of {address_text(self.address)[:10]}... key v{self.keyver}>"


def _self_from_items(items: tuple) -> Self:
    if type(items) is not tuple or len(items) != 2 or type(items[0]) is not bytes or type(items[1]) is not int:
        raise CodecError("malformed Self")
    return Self(items[0], items[1])


codec.register_extension(Capability, codec.TAG_CAPABILITY, _cap_to_items, _cap_from_items)
codec.register_extension(Self, codec.TAG_SELF, lambda s: (s.address, s.keyver), _self_from_items)
# A commons capability's arguments are plain values in the clear: any linear, affine or
# relevant items in them are counted like items anywhere else (copying the capability
# copies them), or they could be laundered through a commons capability.
register_value_type(
    Capability, lambda c: (c.kind, c._held if c.commons is None else (c.commons[1],))
)
register_value_type(Self, lambda s: (UNRESTRICTED, ()))
