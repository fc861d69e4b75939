"""Decode fuzz: random and mutated-valid bytes through ``avm.decode`` (issue 5, item 12).

    python bench/fuzz_decode.py --count 200000            # the dedicated run
    python bench/fuzz_decode.py --count 20000 --seed 7    # another stream of inputs

Inputs, in equal shares:

* **random** bytes, 0 to 64 of them;
* **soup**: a concatenation of CBOR fragments (heads of every major type and size, the
  project's tags, bignum and fraction tags, NaN and other floats, breaks, simple values);
* **valid**: the canonical encoding of a random value (atoms at their edges, tuples,
  maps with awkward keys such as ``-0.0``, fractions, bignums near the size limit,
  substructural wrappers, sealed values, records, capabilities);
* **mutated**: such an encoding with one to four byte edits (flip a bit, set, insert or
  delete a byte, cut, duplicate a slice, splice with another encoding);
* **keys**: a map of keys Python's equality and hashing treat specially (NaN alone and
  in a tuple, ``0.0`` and ``-0.0``, ``1``, ``1.0``, ``True`` and ``Fraction(1)``, ints
  that share a hash), usually in canonical order.

Every input goes through ``decode``. An input *crashes* if anything but ``CodecError``
escapes, if the decoder reports an internal error, or if it is accepted and then does
not behave: it must re-encode to exactly the input bytes, and decoding it again must
give the same value (same types, float bits and map iteration order). ``--cross`` then
decodes a sample of the accepted inputs again in a fresh process with another hash seed
and compares fingerprints, so "the same every time" also holds across runs.

Prints inputs tried, accepted, refused, crashes, and the slowest input with its time.
The CI test (``tests/test_trust_codec.py``) runs the same code on 10,000 inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from avm.core import codec
from avm.core.errors import CodecError
from avm.core.values import (
    Affine,
    Fraction,
    Linear,
    Map,
    Relevant,
    Sealed,
    Sealer,
    Unsealer,
    record,
)

try:  # capabilities when the caps module is importable (it registers their tag)
    from avm.core import caps as _caps
except Exception:  # noqa: BLE001 - the fuzz still runs without them
    _caps = None


@record(name="fuzz.decode.Pair")
class Pair:
    left: Any
    right: Any


@record(name="fuzz.decode.Unit")
class Unit:
    pass


# ---------------------------------------------------------------------------------------
# Random values
# ---------------------------------------------------------------------------------------

_INT_EDGES = (0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1,
              2**64, -1, -24, -25, -256, -257, -(2**64), -(2**64) - 1, 2**61 - 1, -2)
_FLOAT_EDGES = (0.0, -0.0, 1.5, -2.0, 65504.0, 65520.0, 1e-310, 5e-324, 1.1, 3.4e38, 1e300,
                math.inf, -math.inf, math.nan, 2.0**-24, 2.0**-25)
_TEXTS = ("", "a", "key", "é", "€", "\U0001f600", "nul\x00", "long" * 20)


def random_int(rnd: random.Random) -> int:
    r = rnd.random()
    if r < 0.4:
        return rnd.choice(_INT_EDGES)
    if r < 0.8:
        return rnd.randint(-1000, 100_000)
    if r < 0.97:
        return rnd.getrandbits(rnd.randint(1, 200)) * rnd.choice((1, -1))
    # near the bignum size limit (8192 bits), on both sides of it
    n = rnd.getrandbits(8 * codec.INT_BYTES_MAX - rnd.randint(0, 3))
    return n * rnd.choice((1, -1))


def random_float(rnd: random.Random) -> float:
    if rnd.random() < 0.5:
        return rnd.choice(_FLOAT_EDGES)
    fmt, size = rnd.choice(((">e", 2), (">f", 4), (">d", 8)))
    return float(struct.unpack(fmt, rnd.getrandbits(8 * size).to_bytes(size, "big"))[0])


def random_key(rnd: random.Random, depth: int = 0) -> Any:
    r = rnd.random()
    if r < 0.3:
        return rnd.choice(_TEXTS) + str(rnd.randint(0, 50))
    if r < 0.55:
        return random_int(rnd) if rnd.random() < 0.5 else rnd.randint(-30, 30)
    if r < 0.65:
        f = random_float(rnd)
        return 0.5 if f != f else f
    if r < 0.72:
        return rnd.randbytes(rnd.randint(0, 6))
    if r < 0.78:
        return rnd.choice((None, True, False))
    if r < 0.84:
        return Fraction(rnd.randint(-50, 50), rnd.randint(1, 9))
    if r < 0.94 and depth < 2:
        return tuple(random_key(rnd, depth + 1) for _ in range(rnd.randint(0, 3)))
    if depth < 2:
        return Pair(random_key(rnd, depth + 1), random_key(rnd, depth + 1))
    return rnd.randint(0, 9)


def random_atom(rnd: random.Random) -> Any:
    r = rnd.random()
    if r < 0.25:
        return random_int(rnd)
    if r < 0.4:
        return random_float(rnd)
    if r < 0.55:
        return rnd.choice(_TEXTS)
    if r < 0.65:
        return rnd.randbytes(rnd.randint(0, 40))
    if r < 0.72:
        return rnd.choice((None, True, False))
    if r < 0.8:
        return Fraction(random_int(rnd) % 10**30 - 5 * 10**29, rnd.randint(1, 10**12))
    if r < 0.85:
        return rnd.choice((Sealer, Unsealer))(rnd.choice(_TEXTS))
    if r < 0.9:
        return Unit()
    if r < 0.95 and _caps is not None:
        return _caps.commons_cap(b"\x07" * 32, rnd.choice(("random", "time", "null")))
    return Sealed("siv:x", rnd.randbytes(rnd.randint(1, 30)), crypto=True,
                  kind=rnd.randint(0, 3))


def random_value(rnd: random.Random, depth: int = 0) -> Any:
    if depth >= 4 or rnd.random() < 0.35:
        return random_atom(rnd)
    r = rnd.random()
    n = rnd.randint(0, 5)
    if r < 0.3:
        return tuple(random_value(rnd, depth + 1) for _ in range(n))
    if r < 0.6:
        try:
            return Map([(random_key(rnd), random_value(rnd, depth + 1)) for _ in range(n)])
        except Exception:  # noqa: BLE001 - a key the map refuses: use an empty one
            return Map()
    if r < 0.75:
        return rnd.choice((Linear, Affine, Relevant))(random_value(rnd, depth + 1))
    if r < 0.85:
        return Sealer(rnd.choice(_TEXTS)).seal(random_value(rnd, depth + 1))
    return Pair(random_value(rnd, depth + 1), random_value(rnd, depth + 1))


def valid_encoding(rnd: random.Random) -> bytes:
    while True:
        try:
            return codec.encode(random_value(rnd))
        except CodecError:  # over a limit (a deep or huge value): draw again
            continue


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


_TAGS = (2, 3, 30, 0, 1, 24, 55799, codec.TAG_LINEAR, codec.TAG_AFFINE, codec.TAG_RELEVANT,
         codec.TAG_SEALED, codec.TAG_SEALER, codec.TAG_UNSEALER, codec.TAG_RECORD,
         codec.TAG_CAPABILITY, codec.TAG_SELF, codec.TAG_RESERVED_MAX)
_FIXED = (b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xff", b"\xf9\x7e\x00", b"\xf9\x80\x00",
          b"\xf9\x00\x00", b"\xfa\x7f\xc0\x00\x00", b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00",
          b"\xf8\x20", b"\x9f", b"\xbf", b"\x5f", b"\x7f", b"\x1c", b"\x61a", b"\x63key",
          b"\x42\x00\x01", b"\xa0", b"\x80", b"\x60", b"\x40",
          b"\x6efuzz.decode.Pair", b"\x6efuzz.decode.Unit", b"\x65siv:x")


def soup(rnd: random.Random) -> bytes:
    parts = []
    for _ in range(rnd.randint(1, 14)):
        r = rnd.random()
        if r < 0.35:
            parts.append(_head(rnd.randint(0, 5), rnd.choice((0, 1, 2, 3, 5, 23, 24, 255,
                                                              256, 2**16, 2**32, 2**63))))
        elif r < 0.6:
            parts.append(_head(6, rnd.choice(_TAGS)))
        elif r < 0.9:
            parts.append(rnd.choice(_FIXED))
        else:
            parts.append(bytes([rnd.getrandbits(8)]))
    return b"".join(parts)


# Encoded map keys that Python's equality and hashing treat specially: NaN (alone and
# inside a tuple), both zeros, 1 / 1.0 / True / Fraction(1), ints that share a hash.
_KEYS = (b"\xf9\x7e\x00", b"\x81\xf9\x7e\x00", b"\xf9\x80\x00", b"\xf9\x00\x00", b"\x00",
         b"\x01", b"\xf5", b"\xf4", b"\xf6", b"\xf9\x3c\x00", b"\x20", b"\x21",
         b"\xd8\x1e\x82\x01\x01", b"\xd8\x1e\x82\x01\x02", b"\xf9\x38\x00", b"\x61a",
         b"\x1b\x20\x00\x00\x00\x00\x00\x00\x00", b"\x1b\x1f\xff\xff\xff\xff\xff\xff\xff",
         b"\x1b\x3f\xff\xff\xff\xff\xff\xff\xfe", b"\x3b\x1f\xff\xff\xff\xff\xff\xff\xff")


def key_soup(rnd: random.Random) -> bytes:
    """A map (maybe inside a tuple) of awkward keys, in canonical order or not."""
    keys = rnd.sample(_KEYS, rnd.randint(1, 4)) + ([rnd.choice(_KEYS)] if rnd.random() < 0.3 else [])
    if rnd.random() < 0.8:
        keys.sort(key=lambda k: (len(k), k))
    body = _head(5, len(keys)) + b"".join(k + _head(0, i) for i, k in enumerate(keys))
    return b"\x81" + body if rnd.random() < 0.3 else body


def mutate(rnd: random.Random, data: bytes, other: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(7)
        i = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[i % len(b)] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:
            b[i % len(b)] = rnd.getrandbits(8)
        elif op == 2:
            b.insert(i, rnd.getrandbits(8))
        elif op == 3 and b:
            del b[i % len(b)]
        elif op == 4:
            del b[i:]
        elif op == 5 and b:
            j = rnd.randrange(len(b) + 1)
            b[i:i] = b[min(i, j):max(i, j)]
        else:
            b[i:] = other[rnd.randrange(len(other) + 1):]
    return bytes(b)


def inputs(count: int, seed: int = 0):
    """``count`` fuzz inputs as (kind, bytes), reproducible from ``seed``."""
    rnd = random.Random(seed)
    corpus = [valid_encoding(rnd) for _ in range(64)]
    for i in range(count):
        kind = ("random", "soup", "valid", "mutated", "keys")[i % 5]
        if kind == "keys":
            yield kind, key_soup(rnd)
        elif kind == "random":
            yield kind, rnd.randbytes(rnd.randint(0, 64))
        elif kind == "soup":
            yield kind, soup(rnd)
        elif kind == "valid":
            data = valid_encoding(rnd)
            corpus[rnd.randrange(len(corpus))] = data
            yield kind, data
        else:
            yield kind, mutate(rnd, rnd.choice(corpus), rnd.choice(corpus))


# ---------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------


def fingerprint(v: Any) -> Any:
    """Everything about a value that decoding must reproduce: exact types, float bits,
    the iteration order of maps, and the same for every part."""
    t = type(v)
    if t is float:
        return ("float", struct.pack(">d", v) if v == v else "nan")
    if t in (int, str, bytes, bool, type(None)):
        return (t.__name__, v)
    if t is Map:
        return ("Map", tuple((fingerprint(k), fingerprint(x)) for k, x in v.items()))
    if t is tuple or isinstance(v, tuple):
        return (t.__qualname__, tuple(fingerprint(x) for x in v))
    return (t.__qualname__, repr(v))


@dataclass
class Tally:
    tried: int = 0
    accepted: int = 0
    refused: int = 0
    crashes: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [tried, accepted]
    slowest: float = 0.0
    slowest_input: bytes = b""
    crash_examples: list[tuple[str, str]] = field(default_factory=list)
    accepted_inputs: list[bytes] = field(default_factory=list)

    def crash(self, data: bytes, why: str) -> None:
        self.crashes += 1
        if len(self.crash_examples) < 10:
            self.crash_examples.append((data[:80].hex(), why))


def judge(t: Tally, kind: str, data: bytes, keep: int = 0) -> None:
    t.tried += 1
    k = t.by_kind.setdefault(kind, [0, 0])
    k[0] += 1
    t0 = time.perf_counter()
    try:
        v = codec.decode(data)
    except CodecError as e:
        dt = time.perf_counter() - t0
        t.refused += 1
        if "internal error" in str(e):
            t.crash(data, f"decoder internal error: {e}")
    except BaseException as e:  # noqa: BLE001 - this is what the fuzz looks for
        if isinstance(e, KeyboardInterrupt):
            raise
        dt = time.perf_counter() - t0
        t.crash(data, f"{type(e).__name__} escaped: {e}"[:200])
    else:
        dt = time.perf_counter() - t0
        t.accepted += 1
        k[1] += 1
        try:
            again = codec.encode(v)
            second = codec.decode(data)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            t.crash(data, f"accepted, then {type(e).__name__}: {e}"[:200])
        else:
            if again != data:
                t.crash(data, f"accepted but re-encodes to {again[:40].hex()}")
            elif fingerprint(v) != fingerprint(second):
                t.crash(data, "accepted but decodes differently the second time")
            elif len(t.accepted_inputs) < keep:
                t.accepted_inputs.append(data)
    if dt > t.slowest and dt > 0.0005:
        dt = min(dt, _retime(data))  # a garbage collection pause is not the input's doing
    if dt > t.slowest:
        t.slowest, t.slowest_input = dt, data


def _retime(data: bytes) -> float:
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        try:
            codec.decode(data)
        except Exception:  # noqa: BLE001, S110 - timing only; judged above
            pass
        best = min(best, time.perf_counter() - t0)
    return best


def digest_of(datas: list[bytes]) -> str:
    h = hashlib.sha256()
    for d in datas:
        try:
            h.update(repr(fingerprint(codec.decode(d))).encode())
        except CodecError as e:  # accepted once, refused now: not the same decoding
            h.update(f"refused: {e}".encode())
    return h.hexdigest()


def cross_process(datas: list[bytes], hash_seed: str = "12345") -> bool:
    """Decode ``datas`` in a fresh process with another hash seed: same fingerprints?"""
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import fuzz_decode as f; "
            "print(f.digest_of([bytes.fromhex(x) for x in sys.stdin.read().split()]))")
    r = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__))],
        input="\n".join(d.hex() for d in datas), capture_output=True, text=True, env=env,
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return r.stdout.strip() == digest_of(datas)


def run(count: int, seed: int = 0, keep: int = 0) -> Tally:
    t = Tally()
    for kind, data in inputs(count, seed):
        judge(t, kind, data, keep)
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cross", type=int, default=2000,
                    help="accepted inputs to decode again in another process (0: none)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    t = run(args.count, args.seed, keep=args.cross)
    elapsed = time.perf_counter() - t0
    print(f"decode fuzz: seed {args.seed}, {elapsed:.1f} s")
    print(f"  inputs tried   {t.tried:>9,}")
    print(f"  accepted       {t.accepted:>9,}")
    print(f"  refused        {t.refused:>9,}  (CodecError)")
    print(f"  crashes        {t.crashes:>9,}")
    for kind, (n, a) in t.by_kind.items():
        print(f"    {kind:<9} {n:>9,} tried {a:>9,} accepted")
    print(f"  slowest input  {t.slowest * 1000:9.2f} ms  ({len(t.slowest_input)} bytes: "
          f"{t.slowest_input[:24].hex()}{'...' if len(t.slowest_input) > 24 else ''})")
    same = True
    if args.cross and t.accepted_inputs:
        same = cross_process(t.accepted_inputs)
        print(f"  cross-process  {len(t.accepted_inputs):>9,} accepted inputs decoded again with "
              f"another hash seed: {'same' if same else 'DIFFERENT'}")
    for hexdata, why in t.crash_examples:
        print(f"  CRASH {why}\n        input {hexdata}")
    return 1 if t.crashes or not same else 0


if __name__ == "__main__":
    sys.exit(main())
