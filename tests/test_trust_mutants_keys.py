"""Known answers for key derivation (issue 5, item 13: mutants of ``avm.core.keys``).

Every key of a network is derived from its secret with a purpose label, a counter and the
requester's encoding. A changed label, a dropped part or another counter layout silently
changes every key while every other test still passes (they only compare keys with each
other), so these tests pin the exact derived bytes for fixed inputs, and check the same
bytes against the documented construction written out with ``hashlib``.
"""

from __future__ import annotations

import hashlib

import pytest

from avm.core import codec
from avm.core.caps import KDF_LABEL
from avm.core.errors import UsageError
from avm.core.keys import (
    RANDOM_LABEL,
    SIM_SECRET_LABEL,
    check_material,
    fresh_material,
    sim_secret,
    stream_bytes,
    stream_key,
)

SECRET = bytes(range(32))
MACHINE = b"\2" * 32


def _kdf(material: bytes, *info) -> bytes:
    """caps.kdf written out: label, material length and bytes, canonical (purpose, *parts)."""
    return hashlib.shake_256(KDF_LABEL + len(material).to_bytes(4, "big") + material
                             + codec._encode_trusted(info)).digest(32)


def test_the_labels_are_the_documented_ones():
    assert SIM_SECRET_LABEL == b"avm-sim-secret-v1\0"
    assert RANDOM_LABEL == b"avm-random-v1\0"
    assert KDF_LABEL == b"avm-kdf-v1\0"


def test_sim_secret_known_answers():
    assert sim_secret(0).hex() == "4a83263e6f7ef917596b1bd391bff160aa5ce13bf8f82bb4c48b285baad7639d"
    assert sim_secret(7).hex() == "bfb973be3fe9bb62e4835ac1b218cbb4ad578dde346d591788ba6ffb3da9e124"
    assert sim_secret(7) == hashlib.shake_256(
        b"avm-sim-secret-v1\0" + codec._encode_trusted(7)).digest(32)


def test_fresh_material_known_answers():
    got = fresh_material(SECRET, 0, "seal", b"\1" * 32)
    assert got.hex() == "63514efb1fd797f655bf16dbf2262ba1c6e5632f8fb92d62e768973911085664"
    assert got == _kdf(SECRET, "draw", 0, "seal", b"\1" * 32)
    got = fresh_material(SECRET, 5, "seal")
    assert got.hex() == "c8a62316c2901f14adc0cd74f86c30b74b4b85e8a64652d4c5f2e9fb8ef8b076"
    assert got == _kdf(SECRET, "draw", 5, "seal")
    # every input matters: counter, purpose, each part
    assert fresh_material(SECRET, 1, "seal") != fresh_material(SECRET, 5, "seal")
    assert fresh_material(SECRET, 5, "host") != fresh_material(SECRET, 5, "seal")
    assert fresh_material(SECRET, 5, "seal", "a") != fresh_material(SECRET, 5, "seal", "b")


def test_stream_key_known_answers():
    got = stream_key(SECRET, MACHINE)
    assert got.hex() == "56644f17790bd91a9240752b28b997cfb567abc85c007430955bb17377d79624"
    assert got == _kdf(SECRET, "random", MACHINE)
    client = stream_key(SECRET, ("client", "c"))
    assert client.hex() == "0e96c213465fd8d787ed589e2228b2b980f1e54c2a662e23e53925d3fe259dfd"
    assert client == _kdf(SECRET, "random", ("client", "c"))
    # a stream key is not fresh material for the same parts
    assert got != fresh_material(SECRET, 0, "random", MACHINE)


def test_stream_bytes_known_answers():
    key = stream_key(SECRET, MACHINE)
    data, nxt = stream_bytes((key, 0), 8)
    assert data.hex() == "82ca5f2f7e2e9e99" and nxt == (key, 1)
    data, nxt = stream_bytes((key, 3), 16)
    assert data.hex() == "899fda5696f95a3eab3153a47ce9cece" and nxt == (key, 4)
    assert data == hashlib.shake_256(b"avm-random-v1\0" + key + (3).to_bytes(8, "big")).digest(16)
    # the counter is eight big-endian bytes: a high counter still fits and differs
    big = stream_bytes((key, 1 << 56), 8)[0]
    assert big == hashlib.shake_256(RANDOM_LABEL + key + (1 << 56).to_bytes(8, "big")).digest(8)


def test_an_empty_answer_is_empty_and_still_advances_the_stream():
    key = stream_key(SECRET, MACHINE)
    assert stream_bytes((key, 9), 0) == (b"", (key, 10))


def test_material_checks_name_what_was_wrong():
    with pytest.raises(UsageError, match=r"^key material must be at least 32 bytes"):
        check_material(b"x" * 31)
    with pytest.raises(UsageError, match=r"^key material must be at least 32 bytes"):
        check_material(bytearray(32))
    assert check_material(b"x" * 32) == b"x" * 32
    with pytest.raises(UsageError, match=r"^the network secret must be at least 32 bytes"):
        fresh_material(b"short", 0, "seal")
    with pytest.raises(UsageError, match=r"^the network secret must be at least 32 bytes"):
        stream_key(b"short", MACHINE)
    with pytest.raises(UsageError, match=r"^a seed is an int, not str$"):
        sim_secret("7")
    with pytest.raises(UsageError, match=r"not bool$"):
        sim_secret(True)
