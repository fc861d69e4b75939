"""Time and peak memory of ``avm.decode`` on hostile inputs (issue 5, item 12).

    python bench/codec_limits.py            # every case, each in a fresh process
    python bench/codec_limits.py --case empty_maps

Each case builds one input, decodes it once in a child process and prints the input
size, the outcome (accepted, or the start of the CodecError), the decode time and the
peak resident memory the decode added. A decoder bounded in its input should show time
and memory roughly linear in the size, whatever the bytes say.
"""

from __future__ import annotations

import argparse
import resource
import struct
import subprocess
import sys
import time

P = 2**61 - 1  # the modulus of Python's numeric hash


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 256:
        return bytes([major << 5 | 24, n])
    if n < 65536:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    if n < 2**32:
        return bytes([major << 5 | 26]) + struct.pack(">I", n)
    return bytes([major << 5 | 27]) + struct.pack(">Q", n)


def _int(v: int) -> bytes:
    if 0 <= v < 2**64:
        return _head(0, v)
    if -(2**64) <= v < 0:
        return _head(1, -1 - v)
    tag, mag = (2, v) if v > 0 else (3, -1 - v)
    raw = mag.to_bytes((mag.bit_length() + 7) // 8, "big")
    return _head(6, tag) + _head(2, len(raw)) + raw


def _map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    # Canonical order: length-first, then bytewise (the order the codec expects).
    pairs = sorted(pairs, key=lambda kv: (len(kv[0]), kv[0]))
    return _head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


def nan_keys(n: int) -> bytes:
    return _map([(b"\xf9\x7e\x00", _int(i)) for i in range(2)])


def int_hash_collisions(n: int) -> bytes:
    # n distinct ints with one Python hash: k * (2**61 - 1) + 1.
    return _map([(_int(k * P + 1), b"\x00") for k in range(n)])


def hamt_collisions(n: int) -> bytes:
    # n ints below 2**61 (so hash(x) == x) whose 64-to-32-bit fold, the hash the
    # persistent map uses, is the same: x = a << 32 | a ^ 0x5A5A5A5A.
    return _map([(_int(a << 32 | (a ^ 0x5A5A5A5A)), b"\x00") for a in range(1, n + 1)])


def fraction_collisions(n: int) -> bytes:
    # n distinct fractions a / 3 with a == 1 (mod 3 * P): one Python hash.
    out = []
    for k in range(n):
        a = 1 + 3 * P * k
        out.append((_head(6, 30) + _head(4, 2) + _int(a) + _int(3), b"\x00"))
    return _map(out)


def collisions_at_limit(n: int) -> bytes:
    # n int keys in groups of 16 that share one Python hash: the most the rules allow.
    return _map([(_int((k % 16) * P + k // 16), b"\x00") for k in range(n)])


def bignum(n: int) -> bytes:
    return _int(2 ** (8 * n - 1))


def fraction_gcd(n: int) -> bytes:
    # Two random n-byte numbers: the gcd that normalises the fraction is quadratic.
    import random

    rng = random.Random(n)
    a = rng.getrandbits(8 * n) | 1 << (8 * n - 1)
    b = rng.getrandbits(8 * n) | 1 << (8 * n - 1) | 1
    return _head(6, 30) + _head(4, 2) + _int(a) + _int(b)


def fractions_at_limit(n: int) -> bytes:
    # n fractions of two random 1024-byte integers: the largest gcds the rules allow.
    import math
    import random

    rng = random.Random(n)
    out = []
    while len(out) < n:
        a = rng.getrandbits(8192) | 1 << 8191
        b = rng.getrandbits(8192) | 1 << 8191
        if math.gcd(a, b) == 1:
            out.append(_head(6, 30) + _head(4, 2) + _int(a) + _int(b))
    return _head(4, n) + b"".join(out)


def one_entry_maps(n: int) -> bytes:
    return _head(4, n) + b"\xa1\x00\x00" * n


def str_map(n: int) -> bytes:
    return _map([(_head(3, len(f"key{i}")) + f"key{i}".encode(), _int(i)) for i in range(n)])


def sealed_chain(n: int) -> bytes:
    # 30 discretionary seals, one inside the other, around a tuple of n ints: each seal
    # checks what it holds, so this is the deepest re-walk the depth limit allows.
    body = _head(4, n) + b"\x01" * n
    for _ in range(30):
        body = _head(6, 44804) + b"\x84\x61s" + body + b"\xf4\x00"
    return body


def empty_maps(n: int) -> bytes:
    return _head(4, n) + b"\xa0" * n


def empty_arrays_nested(n: int) -> bytes:
    return _head(4, n // 2) + b"\x81\x80" * (n // 2)


CASES = {
    # name: (builder, sizes)
    "nan_keys": (nan_keys, [2]),
    "int_hash_collisions": (int_hash_collisions, [2_000, 4_000, 8_000]),
    "hamt_collisions": (hamt_collisions, [2_000, 4_000, 8_000]),
    "fraction_collisions": (fraction_collisions, [2_000, 4_000, 8_000]),
    "collisions_at_limit": (collisions_at_limit, [10_000, 20_000, 40_000]),
    "bignum": (bignum, [100_000, 1_000_000, 8_000_000]),
    "fraction_gcd": (fraction_gcd, [20_000, 40_000, 80_000]),
    "fractions_at_limit": (fractions_at_limit, [500, 1_000, 2_000]),
    "one_entry_maps": (one_entry_maps, [100_000, 200_000, 333_333]),
    "str_map": (str_map, [25_000, 50_000, 100_000]),
    "sealed_chain": (sealed_chain, [100_000, 200_000, 400_000]),
    "empty_maps": (empty_maps, [250_000, 500_000, 999_990]),
    "nested_arrays": (empty_arrays_nested, [999_990]),
}


def child(case: str, size: int) -> None:
    import avm
    from avm.core.errors import CodecError

    data = CASES[case][0](size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    try:
        v = avm.decode(data)
        outcome = f"accepted ({type(v).__name__}, {len(v) if hasattr(v, '__len__') else '-'})"
    except CodecError as e:
        outcome = f"CodecError: {str(e)[:70]}"
    except Exception as e:  # noqa: BLE001 - the point is to show what escapes
        outcome = f"ESCAPED {type(e).__name__}: {str(e)[:60]}"
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{case:20} {size:>10,} {len(data):>11,} B {dt:9.3f} s {(peak - base) / 1024:8.1f} MiB  {outcome}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES), action="append")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    print(f"{'case':20} {'n':>10} {'input':>13} {'decode':>11} {'peak+':>12}  outcome")
    for case in args.case or list(CASES):
        for size in CASES[case][1]:
            try:
                r = subprocess.run(
                    [sys.executable, __file__, "--child", case, str(size)],
                    capture_output=True, text=True, timeout=args.timeout,
                )
                sys.stdout.write(r.stdout or f"{case:20} {size:>10,} child failed: {r.stderr[-300:]}\n")
            except subprocess.TimeoutExpired:
                print(f"{case:20} {size:>10,} {'':>13} > {args.timeout:.0f} s (killed)")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
