"""Wire fuzz: frames and sessions against "decodes or raises WireError" (issue 8, item 1).

    python bench/fuzz_wire.py --count 200000             # the dedicated run (each target)
    python bench/fuzz_wire.py --count 3000 --seed 7      # what CI runs (tests/test_wire_protocol.py)

Two targets, ``--count`` inputs each:

* **frames**: byte strings fed to an open session in a random chunking: random bytes;
  valid frame streams of every kind; and such streams with one to four edits (flip a
  bit, set, insert or delete a byte, cut, duplicate a slice, splice in another frame,
  rewrite the length prefix). Each input goes through ``Connection.receive_data``.
* **session**: random sequences of up to 16 acts on a fresh session (send or receive a
  frame of any kind, end the stream), as the state machine test does.

An input *crashes* if anything but a ``WireError`` escapes, if a refused input changed
the session (its snapshot before and after differ), or if the session took an act its
transition table does not allow. (A valid stream may be refused: a second hello, a pong
for no ping.)
Prints inputs, inputs/s, accepted, refused (by error code) and crashes per target; the
exit status is 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import copy
import random
import struct
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from avm.core import codec  # noqa: E402
from avm.core.caps import IdentityKey, SealingKey, address_of, commons_cap, seal_context  # noqa: E402
from avm.wire import (  # noqa: E402
    TRANSITIONS,
    Ack,
    Batch,
    Close,
    Connection,
    GapRequest,
    Hello,
    LocalProtocolError,
    Ping,
    Pong,
    Reject,
    WireError,
    encode_frame,
)


def _ident(seed: bytes) -> tuple[bytes, bytes]:
    r = IdentityKey.from_seed(seed).resource((("host", seed.decode()),))
    return address_of(r), codec.encode(r)


HA, RA = _ident(b"host-a")
HB, RB = _ident(b"host-b")
M1, _ = _ident(b"m1")
M2, _ = _ident(b"m2")
CAPS = (seal_context(M2, SealingKey.from_seed(b"k" * 32), ("m", 1)),
        seal_context(M2, SealingKey.from_seed(b"k" * 32), "x", priority=1.0),
        commons_cap(HA, "null"))


def _content(rnd: random.Random, depth: int = 0) -> object:
    r = rnd.random()
    if depth > 3 or r < 0.5:
        return rnd.choice([None, True, 0, -1, 2**40, 1.5, -0.0, "", "text", b"\x00\xff"])
    return tuple(_content(rnd, depth + 1) for _ in range(rnd.randint(0, 3)))


_KIND_INDEX = {k: i for i, k in enumerate(
    ["hello", "batch", "ack", "gap", "reject", "ping", "pong", "close"])}


def random_frame(rnd: random.Random, kind: str | None = None):
    k = rnd.randrange(8) if kind is None else _KIND_INDEX[kind]
    chan = (rnd.choice([M1, M2, ("~", "feedback", "h")]), rnd.choice([M1, M2]))
    seq = rnd.choice([1, 2, 3, 7, 2**62])
    if k == 0:
        return Hello((1,), HA, RA, rnd.randint(1, 256))
    if k == 1:
        msgs = tuple((rnd.choice(CAPS), _content(rnd)) for _ in range(rnd.randint(0, 4)))
        notify = (CAPS[0], "tag") if rnd.random() < 0.2 else None
        return Batch(*chan, seq, (rnd.randint(0, 2**41), rnd.randint(0, 9)),
                     rnd.choice([0.0, -1.0, 1.0, 0.25]), msgs, notify, rnd.random() < 0.1)
    if k == 2:
        return Ack(*chan, rnd.choice([0, 1, 5]), tuple(sorted(rnd.sample(range(1, 9), rnd.randint(0, 3)))))
    if k == 3:
        return GapRequest(*chan, 1, rnd.choice([1, 4]))
    if k == 4:
        return Reject(*chan, seq, rnd.random() < 0.5, "reason")
    if k == 5:
        return Ping(rnd.randint(0, 9))
    if k == 6:
        return Pong(rnd.randint(0, 9))
    return Close("ok", "")


def _mutate(rnd: random.Random, data: bytes, other: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not b:
            b += bytes([rnd.randrange(256)])
            continue
        op = rnd.randrange(7)
        i = rnd.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            b[i] = rnd.randrange(256)
        elif op == 2:
            b.insert(i, rnd.randrange(256))
        elif op == 3:
            del b[i]
        elif op == 4:
            del b[i:]
        elif op == 5:
            j = rnd.randrange(i, len(b) + 1)
            b[j:j] = b[i:j]
        else:
            b[i:i] = other
        if rnd.random() < 0.1 and len(b) >= 4:  # rewrite a length prefix
            b[0:4] = struct.pack(">I", rnd.choice([0, 1, len(b) - 4, 2**20, 2**20 + 1, 2**32 - 1]))
    return bytes(b)


def _opened_template() -> Connection:
    peer = Connection(HA, RA)
    conn = Connection(HB, RB, window=16)
    conn.receive_data(peer.hello())
    conn.hello()
    return conn


_TEMPLATE = _opened_template()


def _open_session() -> Connection:
    """A fresh open session, without checking the peer's identity again each time (the
    hello's Ed25519 point check costs more than the rest of an input)."""
    conn = copy.copy(_TEMPLATE)
    conn._buf, conn._recv, conn._send, conn._counts = bytearray(), {}, {}, {}
    return conn


def fuzz_frames(rnd: random.Random, count: int, stats: Counter, crashes: list) -> None:
    for _ in range(count):
        kind = rnd.randrange(3)
        if kind == 0:
            data = rnd.randbytes(rnd.randint(0, 64))
        else:
            data = b"".join(encode_frame(random_frame(rnd)) for _ in range(rnd.randint(1, 4)))
            if kind == 2:
                data = _mutate(rnd, data, encode_frame(random_frame(rnd)))
        conn = _open_session()
        cuts = sorted(rnd.sample(range(len(data) + 1), min(len(data) + 1, rnd.randint(0, 3))))
        last = 0
        try:
            for c in [*cuts, len(data)]:
                if c == last:
                    continue  # an empty chunk would mean the end of the stream
                before = conn.snapshot()
                try:
                    conn.receive_data(data[last:c])
                except WireError as e:
                    if conn.snapshot() != before:
                        crashes.append(("frames", data, "a refused input changed the session"))
                    stats[f"refused:{e.code}"] += 1
                    break
                last = c
            else:
                stats["accepted"] += 1
        except Exception:  # noqa: BLE001 - that is what is counted
            crashes.append(("frames", data, traceback.format_exc()))


def _act(conn: Connection, rnd: random.Random, direction: str, kind: str) -> None:
    if direction == "recv":
        data = b"" if kind == "eof" else encode_frame(random_frame_of(rnd, kind))
        conn.receive_data(data)
    elif kind == "hello":
        conn.hello()
    elif kind == "ack":
        conn.ack(M1, M2, rnd.choice([0, 1, 2]))
    elif kind == "reject":
        conn.reject(M1, M2, rnd.choice([1, 2]), rnd.random() < 0.5, "r")
    elif kind != "eof":
        conn.send(random_frame_of(rnd, kind))


def random_frame_of(rnd: random.Random, kind: str):
    return random_frame(rnd, kind)


KINDS = sorted({k for _, _, k in TRANSITIONS})


def fuzz_session(rnd: random.Random, count: int, stats: Counter, crashes: list) -> None:
    for _ in range(count):
        conn = Connection(HB, RB, window=8)
        ops = [(rnd.choice(["send", "recv"]), rnd.choice(KINDS)) for _ in range(rnd.randint(1, 16))]
        ops = [(d, k) for d, k in ops if not (d == "send" and k == "eof")]  # not an act
        try:
            for direction, kind in ops:
                if conn._eof and direction == "recv":
                    continue
                before, state = conn.snapshot(), conn.state
                allowed = (state, direction, kind) in TRANSITIONS
                try:
                    _act(conn, rnd, direction, kind)
                except WireError as e:
                    if conn.snapshot() != before:
                        crashes.append(("session", ops, "a refused act changed the session"))
                    if not allowed and direction == "send" and not isinstance(e, LocalProtocolError):
                        crashes.append(("session", ops, f"a refused send raised {e!r}"))
                    stats[f"refused:{e.code}"] += 1
                    continue
                if not allowed and not (kind == "eof" and state == "closed"):
                    crashes.append(("session", ops, f"{(state, direction, kind)} is not in the table"))
                stats["accepted"] += 1
        except Exception:  # noqa: BLE001
            crashes.append(("session", ops, traceback.format_exc()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20_000, help="inputs per target")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"fuzz_wire: seed {args.seed}, {args.count} inputs per target")
    total_crashes = 0
    for name, fn in (("frames", fuzz_frames), ("session", fuzz_session)):
        rnd = random.Random(f"{args.seed}:{name}")
        stats: Counter = Counter()
        crashes: list = []
        t0 = time.perf_counter()
        fn(rnd, args.count, stats, crashes)
        dt = time.perf_counter() - t0
        refused = sum(v for k, v in stats.items() if k.startswith("refused:"))
        print(f"{name:8s} inputs {args.count}  {args.count / dt:,.0f} inputs/s  "
              f"accepted {stats['accepted']}  refused {refused}  crashes: {len(crashes)}")
        codes = ", ".join(f"{k[8:]} {v}" for k, v in sorted(stats.items()) if k.startswith("refused:"))
        print(f"         refused by code: {codes}")
        for what, inp, why in crashes[:3]:
            print(f"  CRASH {what}: {inp!r:.200}\n{why}")
        total_crashes += len(crashes)
    print(f"crashes: {total_crashes}")
    return 1 if total_crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
