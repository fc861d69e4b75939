"""An in-process TCP proxy that injects network faults between two endpoints.

    "Kernel ``netem`` does **not** exist here: delay, reordering, duplication and
    truncation must come from an in-process fault proxy." (TESTING.md)

:class:`FaultProxy` listens on 127.0.0.1, and for every connection it accepts opens one
to the target and pumps bytes both ways, each direction through its own seeded fault
injector (:class:`FaultSpec`):

* **delay** every unit by a uniform time in ``delay_seconds``;
* **drop** a unit, **duplicate** it, **reorder** it (hold it back behind the next unit),
  **corrupt** one bit of it;
* **truncate**: write part of a unit, then cut the connection both ways;
* **partition**: :meth:`FaultProxy.partition` cuts every connection and refuses new ones
  until :meth:`FaultProxy.heal` (or for a time); ``partition`` in the spec starts one at
  random, for ``partition_seconds``.

A *unit* is what one read returned (``frames=False``: raw TCP, as under TLS, where any
fault to the bytes shows as a TLS error and a cut connection), or one whole wire frame
(``frames=True``: the 4-byte length prefix is parsed, so drops, duplicates and reorders
hit frames, which is what the session's sequence numbers and retransmission recover
from on a plaintext test stream).

Every decision comes from one ``random.Random`` per direction of each connection,
seeded from ``FaultSpec.seed`` and the connection's number, so a run is reproducible
given the same order of connections. ``FaultProxy.counts`` says how often each fault
fired (tests check that every kind they asked for did).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections import Counter
from dataclasses import dataclass

from .frames import FRAME_BYTES_MAX, PREFIX_BYTES

__all__ = ["FaultSpec", "FaultProxy", "FAULT_KINDS", "parse_spec"]

#: The kinds of fault, as counted in ``FaultProxy.counts``.
FAULT_KINDS = ("delay", "drop", "duplicate", "reorder", "truncate", "corrupt", "partition")
#: Bytes asked for by one read of a raw (``frames=False``) pump.
READ_BYTES = 65536
#: How long a unit held back for reordering waits for the next one before it goes alone.
REORDER_HOLD_SECONDS = 0.02


@dataclass(frozen=True)
class FaultSpec:
    """Probabilities per unit (0 to 1), delays in seconds, and the seed."""

    seed: int = 0
    delay_seconds: tuple[float, float] = (0.0, 0.0)
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    truncate: float = 0.0
    corrupt: float = 0.0
    partition: float = 0.0
    partition_seconds: float = 0.2
    frames: bool = False
    #: "both", "up" (client to target) or "down" (target to client)
    directions: str = "both"

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "truncate", "corrupt", "partition"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability, not {p!r}")
        lo, hi = self.delay_seconds
        if not 0.0 <= lo <= hi:
            raise ValueError("delay_seconds is (low, high) with 0 <= low <= high")
        if self.directions not in ("both", "up", "down"):
            raise ValueError("directions is 'both', 'up' or 'down'")


def parse_spec(text: str) -> FaultSpec:
    """A spec from text such as ``"drop=0.05,delay=0.001-0.01,seed=3,frames"``
    (the form ``avm host run --chaos SPEC`` is meant to take)."""
    kw: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name == "frames":
            kw["frames"] = value in ("", "1", "true", "yes")
        elif name == "delay":
            lo, _, hi = value.partition("-")
            kw["delay_seconds"] = (float(lo), float(hi or lo))
        elif name == "seed":
            kw["seed"] = int(value)
        elif name == "directions":
            kw["directions"] = value
        elif name in ("drop", "duplicate", "reorder", "truncate", "corrupt", "partition",
                      "partition_seconds"):
            kw[name] = float(value)
        else:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_KINDS)}")
    return FaultSpec(**kw)


class _Cut(Exception):
    """The pump cut its connection (truncate)."""


class FaultProxy:
    """Proxy 127.0.0.1:``port`` to ``target``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int, spec: FaultSpec = FaultSpec(),
                 listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.spec = spec
        self.listen_host = listen_host
        self.port = 0
        self.counts: Counter = Counter()
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task] = set()
        self._n = 0
        self._cut_until: float | None = None  # loop time; inf while partitioned until heal
        self._rng = random.Random(f"{spec.seed}:proxy")

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._cut_all()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- partitions ---------------------------------------------------------------------
    @property
    def partitioned(self) -> bool:
        if self._cut_until is None:
            return False
        if asyncio.get_running_loop().time() >= self._cut_until:
            self._cut_until = None
            return False
        return True

    def partition(self, seconds: float | None = None) -> None:
        """Cut every connection and refuse new ones, until :meth:`heal` or ``seconds``."""
        now = asyncio.get_running_loop().time()
        self._cut_until = float("inf") if seconds is None else now + seconds
        self.counts["partition"] += 1
        self._cut_all()

    def heal(self) -> None:
        self._cut_until = None

    def _cut_all(self) -> None:
        for client, upstream in list(self._conns):
            for w in (client, upstream):
                if w is not None:
                    w.transport.abort()
        self._conns.clear()

    # -- pumping ------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.partitioned:
            self.counts["refused"] += 1
            writer.transport.abort()
            return
        self._n += 1
        n = self._n
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.counts["target-unreachable"] += 1
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        self.counts["connections"] += 1
        spec = self.spec
        faulty_up = spec.directions in ("both", "up")
        faulty_down = spec.directions in ("both", "down")
        t1 = asyncio.ensure_future(self._pump(reader, up_writer, pair, n, "up", faulty_up))
        t2 = asyncio.ensure_future(self._pump(up_reader, writer, pair, n, "down", faulty_down))
        for t in (t1, t2):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _units(self, reader: asyncio.StreamReader):
        """Yield units: raw reads, or whole frames (a bad prefix passes the rest raw)."""
        if not self.spec.frames:
            while True:
                data = await reader.read(READ_BYTES)
                if not data:
                    return
                yield data
        while True:
            try:
                prefix = await reader.readexactly(PREFIX_BYTES)
            except asyncio.IncompleteReadError as e:
                if e.partial:
                    yield e.partial
                return
            (n,) = struct.unpack(">I", prefix)
            if not 0 < n <= FRAME_BYTES_MAX:
                yield prefix  # not a frame the endpoint would take: let it refuse it
                while data := await reader.read(READ_BYTES):
                    yield data
                return
            try:
                body = await reader.readexactly(n)
            except asyncio.IncompleteReadError as e:
                yield prefix + e.partial
                return
            yield prefix + body

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple, n: int, direction: str, faulty: bool) -> None:
        rng = random.Random(f"{self.spec.seed}:{n}:{direction}")
        spec = self.spec
        held: bytes | None = None
        units = self._units(reader).__aiter__()
        try:
            while True:
                if held is not None:
                    try:
                        unit = await asyncio.wait_for(units.__anext__(), REORDER_HOLD_SECONDS)
                    except TimeoutError:
                        await self._write(writer, held)
                        held = None
                        continue
                else:
                    unit = await units.__anext__()
                self.counts["units"] += 1
                self.counts["bytes"] += len(unit)
                if not faulty:
                    await self._write(writer, unit)
                    continue
                if spec.partition and rng.random() < spec.partition:
                    self.partition(spec.partition_seconds)
                    return
                lo, hi = spec.delay_seconds
                if hi > 0:
                    self.counts["delay"] += 1
                    await asyncio.sleep(rng.uniform(lo, hi))
                if spec.drop and rng.random() < spec.drop:
                    self.counts["drop"] += 1
                    continue
                if spec.corrupt and rng.random() < spec.corrupt:
                    self.counts["corrupt"] += 1
                    b = bytearray(unit)
                    b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                    unit = bytes(b)
                if spec.truncate and rng.random() < spec.truncate:
                    self.counts["truncate"] += 1
                    await self._write(writer, unit[:rng.randrange(len(unit))])
                    raise _Cut
                copies = 1
                if spec.duplicate and rng.random() < spec.duplicate:
                    self.counts["duplicate"] += 1
                    copies = 2
                if held is None and spec.reorder and rng.random() < spec.reorder:
                    self.counts["reorder"] += 1
                    held = unit * copies
                    continue
                await self._write(writer, unit * copies)
                if held is not None:
                    await self._write(writer, held)
                    held = None
        except (StopAsyncIteration, ConnectionError, asyncio.IncompleteReadError):
            cut = False
        except _Cut:
            cut = True
        else:  # pragma: no cover - the loop only ends by an exception
            cut = False
        if held is not None and not cut:
            with contextlib.suppress(Exception):
                await self._write(writer, held)
        # One direction ended: end the other as well (a truncation cuts hard, so both
        # endpoints see a reset rather than a clean end).
        self._conns.discard(pair)
        for w in pair:
            with contextlib.suppress(Exception):
                if cut:
                    w.transport.abort()
                else:
                    w.close()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if data:
            writer.write(data)
            await writer.drain()
