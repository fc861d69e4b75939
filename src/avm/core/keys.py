"""Key material: one secret per network, many independent keys (DESIGN sections 5 and 8).

    "keys come from the OS random source and never from a seed outside the simulator."
    (DESIGN section 8)

A :class:`~avm.core.netvalue.Network` holds one secret, ``net.secret`` (32 bytes). Every
key the network makes is derived from it with :func:`avm.core.caps.kdf` (SHAKE-256 with a
purpose label), never from a public name or seed alone:

- **fresh material** (:func:`fresh_material`): the secret, a purpose, the purpose's parts and a
  counter the network keeps (``net.kdf_n``), so no two draws are alike, even for the same
  name twice (a machine spawned again after it was exported) or a key rotated twice.
  Spawning a machine, adding a host and rotating a sealing key each draw fresh material,
  unless the caller supplies its own (a host passes ``os.urandom``);
- **``random`` answers** (:func:`stream_key`, :func:`stream_bytes`): one keyed generator per requester,
  ``SHAKE-256(label, key(secret, requester), counter)``, with the counter kept per
  requester in ``net.random_n``. Streams of different machines are independent, and an
  answer reveals nothing about any other answer or the secret (unlike SplitMix64, which
  one 8-byte output inverts; SplitMix64 stays for fault-injection decisions only).

Where the secret comes from is the caller's choice. :func:`sim_secret` derives it from
the simulator's seed, **as a test convenience only**: a simulated run is reproducible from
its seed, so anyone who knows the seed knows every key of that run. A host passes 32 bytes
from the operating system (``new_network(secret=os.urandom(32))``); a nested network asks
its outer machine's ``random`` service (``avm.core.nest``). The core itself never reads the
OS: randomness is an argument (STYLE habit 7).
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import codec
from .caps import kdf
from .errors import UsageError

__all__ = [
    "SECRET_BYTES",
    "MATERIAL_BYTES_MIN",
    "sim_secret",
    "check_material",
    "fresh_material",
    "stream_key",
    "stream_bytes",
]

SECRET_BYTES = 32
MATERIAL_BYTES_MIN = 32
SIM_SECRET_LABEL = b"avm-sim-secret-v1\0"
RANDOM_LABEL = b"avm-random-v1\0"


def sim_secret(seed: int) -> bytes:
    """The simulator's network secret: a function of the public seed (tests only)."""
    if type(seed) is not int:
        raise UsageError(f"a seed is an int, not {type(seed).__name__}")
    return hashlib.shake_256(SIM_SECRET_LABEL + codec._encode_trusted(seed)).digest(SECRET_BYTES)


def check_material(material: Any, what: str = "key material") -> bytes:
    """Refuse key material that is not bytes or shorter than ``MATERIAL_BYTES_MIN``."""
    if type(material) is not bytes or len(material) < MATERIAL_BYTES_MIN:
        raise UsageError(f"{what} must be at least {MATERIAL_BYTES_MIN} bytes (e.g. os.urandom(32))")
    return material


def fresh_material(secret: bytes, counter: int, purpose: str, *parts: Any) -> bytes:
    """Draw number ``counter`` of fresh key material for ``purpose`` from ``secret``.

    The network keeps the counter (``net.kdf_n``) and advances it on every draw, so no
    draw repeats another, even for the same purpose and parts.
    """
    return kdf(check_material(secret, "the network secret"), "draw", counter, purpose, *parts)


def stream_key(secret: bytes, requester: Any) -> bytes:
    """The key of one requester's ``random`` stream (a machine address, a client...)."""
    return kdf(check_material(secret, "the network secret"), "random", requester)


def stream_bytes(stream: tuple[bytes, int], n: int) -> tuple[bytes, tuple[bytes, int]]:
    """The next answer of ``n`` bytes from a keyed stream, and the stream after it.

    ``SHAKE-256(RANDOM_LABEL + key + counter)``: a pseudorandom function of the counter
    under a secret key, so one answer says nothing about the next or about the key.
    """
    key, counter = stream
    data = hashlib.shake_256(RANDOM_LABEL + key + counter.to_bytes(8, "big")).digest(n) if n else b""
    return data, (key, counter + 1)
