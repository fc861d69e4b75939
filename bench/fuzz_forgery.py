"""Forgery fuzz: no mutant of a real capability opens (issue 5, items 1 and 13).

    python bench/fuzz_forgery.py --count 100000          # the dedicated run
    python bench/fuzz_forgery.py --count 10000 --seed 3  # another stream of mutants

Real capabilities first: linear and unrestricted contexts, priorities -1, -0.5, 0, 0.25
and 1, under key versions 0, 1 and 2 of one machine, all opened once so that the unseal
cache is warm. Then ``count`` mutants, a third each of

* **field** mutants: one or more fields replaced by a value Python's ``==`` confuses with
  the original (``-0.0`` for ``0.0``, ``0`` or ``False`` for ``0.0``, ``False`` for kind 0,
  ``1.0`` for key version 1...), a neighbouring float, another genuine capability's
  field, a flipped, cut or extended ciphertext. Each is built twice: with the
  constructor (which should refuse most) and as a raw object that skips the constructor
  (an attacker's in-process object), which goes on to the unseal;
* **byte** mutants of a capability's canonical encoding (flip, set, insert, delete,
  truncate), decoded with ``codec.decode``;
* **text** mutants of its URI (substitute, change case, insert, delete, swap),
  parsed with ``Capability.from_uri``.

Every mutant that survives construction is opened with the warm ``Env.unseal`` and with
the cache-free ``unseal_context``. *Accepted* counts mutants that opened although their
exact fields (types included) are not those of any genuine capability; *disagree*
counts mutants where the warm and the cold path differ; *crashes* counts exceptions
that are not the core's own errors. Then ``--sim`` more mutants go through the public
path, with the simulator's cache warm: submitted by a client (``Sim.submit``) and sent
as a machine's outputs, each to a machine that records what reaches it.

The CI test (``tests/test_trust_caps.py``) runs the same code with 10,000 mutants.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from avm import Linear, Sim
from avm.core import codec
from avm.core.caps import Capability, unseal_context
from avm.core.errors import AvmError

FIELDS = ("address", "keyver", "kind", "priority", "sealed", "commons", "_held")
PRIORITIES = (-1.0, -0.5, 0.0, 0.25, 1.0)
CONTEXTS = (("acct", "alice"), ("acct", "bob"), "admin", None, Linear(("ticket", 1)),
            Linear(("ticket", 2)))


def raw_cap(**values: Any) -> Any:
    """A Capability object that skips the constructor's checks (an attacker's object)."""
    if issubclass(Capability, tuple):
        return tuple.__new__(Capability, tuple(values.get(f, ()) for f in FIELDS))
    c = object.__new__(Capability)
    for f in FIELDS:
        object.__setattr__(c, f, values.get(f, ()))
    return c


def fields_of(cap: Any) -> dict[str, Any]:
    return {f: getattr(cap, f) for f in FIELDS[:-1]}


def exact(cap: Any) -> tuple:
    """Fields with their exact types and bytes: what authentication must tell apart."""
    out = []
    for f in FIELDS[:-1]:
        v = getattr(cap, f)
        out.append((type(v).__name__, struct.pack(">d", v) if type(v) is float else repr(v)))
    return tuple(out)


def _recorder(msg: Any, state: Any) -> tuple:
    ctx, content = msg
    if type(content) is tuple and content and content[0] == "init":
        return [], ()
    if type(content) is tuple and content and content[0] in ("self", "env"):
        return [], state
    return [], (*(state or ()), (content, ctx))  # keeps a linear context: nothing dropped


@dataclass
class World:
    sim: Sim
    target: bytes
    genuine: list = field(default_factory=list)
    exact_genuine: set = field(default_factory=set)

    @property
    def ring(self) -> Any:
        return self.sim.env.keyring(self.sim.net, self.target)


def make_world(seed: int = 0) -> World:
    """One machine with genuine capabilities under key versions 0, 1 and 2; cache warm."""
    sim = Sim(seed=seed)
    sim.behavior(_recorder, "recorder")
    target = sim.spawn("target", "recorder")
    sim.spawn("other", "recorder")
    sim.run()
    w = World(sim, target)
    for version in range(3):
        if version:
            sim.rotate_key("target", keep_old=True)
            sim.run()
        for ctx in CONTEXTS:
            for p in PRIORITIES:
                w.genuine.append(sim.cap("target", ctx, priority=p))
    w.genuine.append(sim.cap("other", "x"))  # another machine's: for address swaps
    w.exact_genuine = {exact(c) for c in w.genuine}
    ring = w.ring
    for c in w.genuine:
        if c.address == target:
            sim.env.unseal(c, ring)  # warm: every genuine capability opened once
    return w


# -- mutants ----------------------------------------------------------------------------


def _confusable(v: Any, rnd: random.Random) -> list:
    """Values Python's == (or a sloppy check) confuses with ``v``, and near neighbours."""
    out: list = []
    if type(v) is float:
        out += [int(v) if v.is_integer() else v, -v, bool(v) if v in (0.0, 1.0) else v,
                float("nan"), float("inf"), v + 1e-9, v - 2**-52, struct.unpack(
                    ">d", (struct.pack(">d", v)[:7] + bytes([rnd.randrange(256)])))[0],
                2.0, -1.0000001, str(v)]
        if v == 0.0:
            out += [-0.0, 0, False]
    elif type(v) is int:
        out += [float(v), bool(v) if v in (0, 1) else v, v + 1, v - 1, -v, 2**32, 2**64,
                str(v), (v,)]
        if v in (0, 1):
            out.append(v == 1)
    elif type(v) is bytes:
        if v:
            i = rnd.randrange(len(v))
            out += [v[:i] + bytes([v[i] ^ (1 << rnd.randrange(8))]) + v[i + 1:],
                    v[:-1], v + b"\0", v[1:], b"\0" + v, bytearray(v), v[:16]]
    return out


def field_mutant(w: World, rnd: random.Random) -> dict[str, Any]:
    base = fields_of(rnd.choice(w.genuine))
    other = fields_of(rnd.choice(w.genuine))
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        f = rnd.choice(FIELDS[:-2])
        roll = rnd.random()
        if roll < 0.25:
            base[f] = other[f]  # a genuine field from another capability
        elif roll < 0.3 and f == "sealed":
            base["commons"] = ("random", ())
        else:
            choices = [x for x in _confusable(base[f], rnd)
                       if not (type(x) is type(base[f]) and x == base[f]
                               and repr(x) == repr(base[f]))]
            if choices:
                base[f] = rnd.choice(choices)
    return base


def byte_mutant(w: World, rnd: random.Random) -> bytes:
    data = bytearray(codec.encode(rnd.choice(w.genuine)))
    for _ in range(rnd.choice((1, 1, 2, 3))):
        if not data:
            break
        op = rnd.randrange(5)
        i = rnd.randrange(len(data))
        if op == 0:
            data[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            data[i] = rnd.randrange(256)
        elif op == 2:
            data.insert(i, rnd.randrange(256))
        elif op == 3 and len(data) > 1:
            del data[i]
        else:
            del data[i:]
    return bytes(data)


_URI_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=/:.~%"


def text_mutant(w: World, rnd: random.Random) -> str:
    text = list(rnd.choice(w.genuine).to_uri())
    for _ in range(rnd.choice((1, 1, 2))):
        if not text:
            break
        op = rnd.randrange(5)
        i = rnd.randrange(len(text))
        if op == 0:
            text[i] = rnd.choice(_URI_ALPHABET)
        elif op == 1:
            text[i] = text[i].swapcase()
        elif op == 2:
            text.insert(i, rnd.choice(_URI_ALPHABET))
        elif op == 3 and len(text) > 1:
            del text[i]
        else:
            j = rnd.randrange(len(text))
            text[i], text[j] = text[j], text[i]
    return "".join(text)


# -- trying them -------------------------------------------------------------------------


@dataclass
class Tally:
    tried: int = 0
    refused_early: int = 0  # by the constructor, the decoder or the URI parser
    refused: int = 0  # by the unseal
    accepted: int = 0
    disagree: int = 0
    crashes: int = 0
    same_as_genuine: int = 0  # mutations that gave back a genuine capability exactly
    examples: list = field(default_factory=list)

    def line(self) -> str:
        return (f"tried={self.tried} accepted={self.accepted} crashes={self.crashes} "
                f"disagree={self.disagree} refused_early={self.refused_early} "
                f"refused_at_unseal={self.refused} same_as_genuine={self.same_as_genuine}")


def _open(w: World, cap: Any, ring: Any) -> tuple[bool, str]:
    try:
        w.sim.env.unseal(cap, ring)
        warm = True
    except AvmError:
        warm = False
    try:
        unseal_context(cap, ring)
        cold = True
    except AvmError:
        cold = False
    return warm, "" if warm == cold else "warm and cold disagree"


def _judge(w: World, t: Tally, cap: Any, ring: Any, what: str) -> None:
    try:
        key = exact(cap)
    except Exception:
        key = None
    if key in w.exact_genuine:
        t.same_as_genuine += 1
        return
    opened, problem = _open(w, cap, ring)
    if problem:
        t.disagree += 1
        t.examples.append((problem, what))
    if opened:
        t.accepted += 1
        t.examples.append(("accepted", what))
    else:
        t.refused += 1


def try_mutant(w: World, rnd: random.Random, t: Tally, ring: Any) -> None:
    kind = rnd.randrange(3)
    t.tried += 1
    # Mutants are made outside the try: a crash below is the core's, never the fuzzer's.
    if kind == 0:
        fields = field_mutant(w, rnd)
    elif kind == 1:
        data = byte_mutant(w, rnd)
    else:
        text = text_mutant(w, rnd)
    try:
        if kind == 0:
            try:
                Capability(*(fields[f] for f in FIELDS[:-1]))
                made = True
            except AvmError:
                made = False
            raw = raw_cap(**fields)
            if not made:
                t.refused_early += 1
                # The raw object must be refused at the unseal too, never crash it.
                sub = Tally()
                _judge(w, sub, raw, ring, f"raw {fields!r}")
                t.accepted += sub.accepted
                t.disagree += sub.disagree
                t.examples += sub.examples
                return
            _judge(w, t, raw, ring, f"fields {fields!r}")
        elif kind == 1:
            try:
                cap = codec.decode(data)
            except AvmError:
                t.refused_early += 1
                return
            if type(cap) is not Capability:
                t.refused_early += 1
                return
            _judge(w, t, cap, ring, f"bytes {data.hex()}")
        else:
            try:
                cap = Capability.from_uri(text)
            except AvmError:
                t.refused_early += 1
                return
            _judge(w, t, cap, ring, f"uri {text}")
    except Exception as e:  # not the core's own error: a crash
        t.crashes += 1
        t.examples.append(("crash", f"{type(e).__name__}: {e}"))


def fuzz_direct(count: int, seed: int = 0, w: World | None = None) -> Tally:
    """``count`` mutants opened through Env.unseal (warm) and unseal_context (cold)."""
    w = w or make_world(seed)
    rnd = random.Random(seed)
    ring = w.ring
    t = Tally()
    for _ in range(count):
        try_mutant(w, rnd, t, ring)
    return t


def fuzz_public(count: int, seed: int = 0, w: World | None = None) -> Tally:
    """``count`` mutants through the simulator: half submitted, half as machine outputs."""
    w = w or make_world(seed)
    sim = w.sim
    rnd = random.Random(seed + 1)
    # The simulator's own cache warm through the public path too.
    for j, c in enumerate(w.genuine):
        if c.address == w.target and not c.kind:
            sim.send(c, ("genuine", j))
    sim.run()
    mutants: list = []
    while len(mutants) < count:
        f = field_mutant(w, rnd)
        try:
            key = exact(raw_cap(**f))
        except Exception:
            key = None
        if key in w.exact_genuine:
            continue
        mutants.append(raw_cap(**f))

    def forger(msg: Any, state: Any) -> tuple:
        ctx, content = msg
        if type(content) is tuple and content and content[0] == "go":
            i = content[1]
            return [(mutants[i], ("output", i))], state
        return [], state

    sim.behavior(forger, "forger")
    sim.spawn("forger", "forger")
    sim.run()
    go = sim.cap("forger", "go")
    t = Tally()
    for i, cap in enumerate(mutants):
        t.tried += 1
        before = sim.net
        try:
            if i % 2:
                sim.send(go, ("go", i))
            else:
                sim.submit([(cap, ("submitted", i))])
        except AvmError:
            t.refused_early += 1
            continue
        except Exception as e:
            t.crashes += 1
            t.examples.append(("crash", f"{type(e).__name__}: {e}"))
            continue
        try:
            sim.run()
        except Exception as e:  # a poison message: count it, and go on without it
            t.crashes += 1
            t.examples.append(("crash in run", f"{type(e).__name__}: {e}"))
            sim.restore(before)
    got = [content for content, _ctx in sim.state("target")
           if type(content) is tuple and content and content[0] in ("submitted", "output")]
    t.accepted = len(got)
    t.examples += [("accepted", repr(g)) for g in got]
    t.refused = t.tried - t.refused_early - t.accepted - t.crashes
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=100_000, help="direct mutants (default 100000)")
    p.add_argument("--sim", type=int, default=2_000, help="mutants through the simulator")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    w = make_world(a.seed)
    direct = fuzz_direct(a.count, a.seed, w)
    t1 = time.perf_counter()
    public = fuzz_public(a.sim, a.seed, w)
    t2 = time.perf_counter()
    print(f"genuine capabilities: {len(w.genuine)} (3 key versions, linear and unrestricted, "
          f"priorities {', '.join(f'{x:g}' for x in PRIORITIES)})")
    print(f"direct (Env.unseal warm + unseal_context cold): {direct.line()}  [{t1 - t0:.1f} s]")
    print(f"public (Sim.submit + machine outputs):          {public.line()}  [{t2 - t1:.1f} s]")
    tried = direct.tried + public.tried
    accepted = direct.accepted + public.accepted
    crashes = direct.crashes + public.crashes
    print(f"total: tried={tried} accepted={accepted} crashes={crashes} "
          f"disagree={direct.disagree}")
    for what, detail in (direct.examples + public.examples)[:10]:
        print(f"  {what}: {detail[:300]}")
    return 0 if accepted == 0 and crashes == 0 and direct.disagree == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
