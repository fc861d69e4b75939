"""The wire session: a sans-IO state machine, bytes in and events out (as h11 does HTTP).

    "The wire protocol is a sans-IO state machine (bytes in, events out) with a thin
    asyncio driver, so it is tested without sockets." ... "every batch on a channel has a
    sequence number; the receiver commits the sequence number with the batch,
    acknowledges it, ignores duplicates and asks again for gaps." (DESIGN section 9)

One :class:`Connection` is one side of one stream between two hosts. It carries the
channels ``(sender, receiver)`` of every machine pair between them, both ways.

* :meth:`Connection.receive_data` takes bytes (``b""`` for the end of the stream) and
  returns events. It is all-or-nothing: if any frame in the bytes is malformed or not
  allowed, it raises a :class:`~avm.wire.errors.RemoteProtocolError` and the session is
  exactly as before the call (state, channels, buffer) -- nothing of the refused bytes
  was applied. The caller then closes the stream (:meth:`Connection.fail` gives the
  close frame).
* :meth:`Connection.send` takes a frame and returns its bytes, after checking that the
  session's state allows it and that the in-flight window has room. A refusal is a
  :class:`~avm.wire.errors.LocalProtocolError` and changes nothing.
* Acknowledgement is the application's act, after its commit: a received batch is
  handed out as :class:`BatchReceived`; only :meth:`Connection.ack` (or a definite
  :meth:`Connection.reject`) makes the ack frame, and it refuses a number that was never
  handed out. So an ack on the wire always means "committed".

The session's life cycle is the table :data:`TRANSITIONS`, ``(state, direction, kind) ->
state``: a frame not in it is refused. docs/network.md is generated from it.

Per channel the receiver runs the delivery model's own rules
(:func:`avm.core.delivery.arrival`: duplicate, next, early), starting from the number the
application says it has committed (``committed_seq``, read from its store), so a replayed
frame -- on this connection or a later one -- is a duplicate and applies nothing.
Early batches are held (bounded by the window) and handed out in order when the gap
fills; a :class:`BatchHeld` event carries the gap to ask for again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.caps import verify_identity
from ..core.delivery import DUPLICATE, EARLY, NEXT, acked_range, arrival
from ..core.errors import CapabilityError
from .errors import (
    IdentityMismatch,
    LimitExceeded,
    LocalProtocolError,
    TruncatedFrame,
    UnexpectedFrame,
    VersionMismatch,
    WireError,
)
from .frames import (
    FRAME_BYTES_MAX,
    FRAMES_IN_FLIGHT_MAX,
    LAYOUTS,
    PREFIX_BYTES,
    REASON_CHARS_MAX,
    SKIPPED_MAX,
    Ack,
    Batch,
    Close,
    Frame,
    GapRequest,
    Hello,
    Ping,
    Pong,
    Reject,
    decode_body,
    encode_frame,
    frame_length,
)

__all__ = [
    "PROTOCOL_VERSIONS",
    "PINGS_IN_FLIGHT_MAX",
    "STATES",
    "DATA_KINDS",
    "TRANSITIONS",
    "Connection",
    "Event",
    "HelloReceived",
    "BatchReceived",
    "DuplicateBatch",
    "BatchHeld",
    "Acked",
    "GapRequested",
    "Rejected",
    "PingReceived",
    "PongReceived",
    "CloseReceived",
    "ConnectionClosed",
    "Statistics",
]

#: The protocol versions this implementation speaks; the session uses the highest one
#: both hellos offer.
PROTOCOL_VERSIONS: tuple[int, ...] = (1,)
#: Pings one side may have outstanding (sent, not yet answered).
PINGS_IN_FLIGHT_MAX = 4

# ---------------------------------------------------------------------------------------
# The life cycle, as data
# ---------------------------------------------------------------------------------------

#: The session's states, with what each means (docs/network.md lists them).
STATES: dict[str, str] = {
    "start": "nothing sent or received yet",
    "hello-sent": "our hello is sent; waiting for the peer's",
    "hello-received": "the peer's hello arrived; ours is not sent yet",
    "open": "both hellos exchanged: batches, acks, gaps, rejects and pings flow both ways",
    "close-sent": "we sent close; frames the peer sent before it saw ours still arrive",
    "close-received": "the peer sent close; we may only answer with close",
    "closed": "both closes exchanged, or the stream ended: nothing more",
}
#: The frames that flow while the session is open.
DATA_KINDS = ("batch", "ack", "gap", "reject", "ping", "pong")


def _transitions() -> dict[tuple[str, str, str], str]:
    t: dict[tuple[str, str, str], str] = {
        ("start", "send", "hello"): "hello-sent",
        ("start", "recv", "hello"): "hello-received",
        ("hello-sent", "recv", "hello"): "open",
        ("hello-received", "send", "hello"): "open",
        ("close-sent", "recv", "close"): "closed",
        ("close-received", "send", "close"): "closed",
    }
    for s in ("start", "hello-sent", "hello-received", "open"):
        t[(s, "send", "close")] = "close-sent"
        t[(s, "recv", "close")] = "close-received"
    for k in DATA_KINDS:
        t[("open", "send", k)] = "open"
        t[("open", "recv", k)] = "open"
        # The peer had not seen our close when it sent these: they still count (an ack
        # settles our outbox), but we send nothing new.
        t[("close-sent", "recv", k)] = "close-sent"
    # The end of the stream ("eof"), from wherever the session is.
    for s in STATES:
        if s != "closed":
            t[(s, "recv", "eof")] = "closed"
    return t


#: ``(state, direction, kind) -> next state``; direction is "send" or "recv", kind a frame
#: kind of :data:`avm.wire.frames.LAYOUTS` or "eof". Anything missing is refused:
#: :class:`~avm.wire.errors.UnexpectedFrame` when received,
#: :class:`~avm.wire.errors.LocalProtocolError` when sent.
TRANSITIONS: dict[tuple[str, str, str], str] = _transitions()

#: Identities that checked, by their exact bytes: a host reconnecting (or a fuzzer) does
#: not pay the curve point check again. Bounded; cleared when full.
_VERIFIED: set[tuple[bytes, bytes]] = set()
VERIFIED_CACHE_MAX = 1024


def _check_identity(resource: bytes, address: bytes) -> None:
    if (resource, address) in _VERIFIED:
        return
    try:
        verify_identity(resource, address)
    except CapabilityError as e:
        raise IdentityMismatch(f"the peer's identity does not check: {e}") from None
    if len(_VERIFIED) >= VERIFIED_CACHE_MAX:
        _VERIFIED.clear()
    _VERIFIED.add((resource, address))


# ---------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------


class Event:
    """Base of what :meth:`Connection.receive_data` returns."""


@dataclass(frozen=True)
class HelloReceived(Event):
    """The peer's hello checked out: ``version`` is the one both speak."""

    hello: Hello
    version: int


@dataclass(frozen=True)
class BatchReceived(Event):
    """A batch to apply: the next of its channel, in order, never handed out before in
    this session and not below what the application said it committed. Commit it, then
    call :meth:`Connection.ack`."""

    batch: Batch


@dataclass(frozen=True)
class DuplicateBatch(Event):
    """A batch already had (replayed or retransmitted): apply nothing. ``committed`` is
    the channel's committed number, which the application may ack again at once."""

    channel: tuple
    seq: int
    committed: int


@dataclass(frozen=True)
class BatchHeld(Event):
    """A batch arrived early and is held; ``first``..``last`` are missing: ask for them
    again with a :class:`~avm.wire.frames.GapRequest` (or let retransmission fill them)."""

    channel: tuple
    seq: int
    first: int
    last: int


@dataclass(frozen=True)
class Acked(Event):
    """The peer committed our batches of ``channel`` up to ``upto`` (never beyond what
    this session sent); ``skipped`` are tombstones it accepted in place of batches."""

    channel: tuple
    upto: int
    skipped: tuple[int, ...]


@dataclass(frozen=True)
class GapRequested(Event):
    channel: tuple
    first: int
    last: int


@dataclass(frozen=True)
class Rejected(Event):
    """Batch ``seq`` was refused; ``definite``: it did not and will not apply."""

    channel: tuple
    seq: int
    definite: bool
    reason: str


@dataclass(frozen=True)
class PingReceived(Event):
    """Answer with ``send(Pong(nonce))``."""

    nonce: int


@dataclass(frozen=True)
class PongReceived(Event):
    nonce: int


@dataclass(frozen=True)
class CloseReceived(Event):
    code: str
    reason: str


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The stream ended. ``clean``: after both closes; otherwise it was cut."""

    clean: bool


# ---------------------------------------------------------------------------------------
# Per-channel bookkeeping
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recv:
    """Receiving side of one channel. ``got``: handed out in order; ``committed``: acked
    by the application; ``held``: early batches by number (at most the window)."""

    got: int
    committed: int
    held: tuple[tuple[int, Batch], ...] = ()

    def held_seqs(self) -> frozenset[int]:
        return frozenset(s for s, _ in self.held)


@dataclass(frozen=True)
class _Send:
    """Sending side of one channel in this session: ``base`` is one below the first
    number sent, ``sent`` the highest sent, ``acked`` the highest acked (or definitely
    rejected)."""

    base: int
    sent: int
    acked: int

    @property
    def in_flight(self) -> int:
        return self.sent - max(self.acked, self.base)


@dataclass(frozen=True)
class Statistics:
    """An immutable snapshot of a session's counters (STYLE 14)."""

    state: str
    version: int | None
    in_flight: int
    unacked_received: int
    held: int
    channels_in: int
    channels_out: int
    frames_in: int
    frames_out: int
    batches_in: int
    batches_out: int
    duplicates_refused: int
    acks_clamped: int
    acks_ignored: int
    pings_outstanding: int


@dataclass
class _Work:
    """What one call changes, applied to the session only if the whole call succeeds."""

    state: str
    recv: dict = field(default_factory=dict)
    send: dict = field(default_factory=dict)
    pings: frozenset = frozenset()
    peer: Hello | None = None
    version: int | None = None
    counts: dict = field(default_factory=dict)
    unacked: int = 0

    def bump(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


# ---------------------------------------------------------------------------------------
# The connection
# ---------------------------------------------------------------------------------------


class Connection:
    """One side of a wire session; see the module docstring.

    ``address`` and ``resource``: this host's address and the canonical encoding of its
    identity resource (:func:`avm.core.caps.address_of` of it). ``peer_address``: the
    address this side meant to reach (or, for an accepted stream, the one the transport
    authenticated); the peer's hello must name it. ``committed_seq(channel)``: the
    highest number of a channel the application has committed (from its store), asked
    once per channel per session. ``window``: batch frames this side accepts before
    acknowledging them.
    """

    def __init__(self, address: bytes, resource: bytes, *, peer_address: bytes | None = None,
                 committed_seq: Callable[[tuple], int] = lambda channel: 0,
                 window: int = FRAMES_IN_FLIGHT_MAX,
                 versions: tuple[int, ...] = PROTOCOL_VERSIONS,
                 frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        if type(window) is not int or not 1 <= window <= FRAMES_IN_FLIGHT_MAX:
            raise LocalProtocolError(f"window must be in [1, {FRAMES_IN_FLIGHT_MAX}]")
        if not 1 <= frame_bytes_max <= FRAME_BYTES_MAX:
            raise LocalProtocolError(f"frame_bytes_max must be in [1, {FRAME_BYTES_MAX}]")
        self.address = address
        self.resource = resource
        self.peer_address = peer_address
        self.committed_seq = committed_seq
        self.window = window
        self.versions = versions
        self.frame_bytes_max = frame_bytes_max
        self.state = "start"
        self.peer: Hello | None = None
        self.version: int | None = None
        self._recv: dict[tuple, _Recv] = {}
        self._send: dict[tuple, _Send] = {}
        self._pings: frozenset[int] = frozenset()
        self._buf = bytearray()
        self._counts: dict[str, int] = {}
        self._eof = False
        self._unacked = 0  # batches handed out and not acked, plus held ones

    # -- sending ----------------------------------------------------------------------
    def hello(self) -> bytes:
        """Our hello frame (send it first)."""
        return self.send(Hello(self.versions, self.address, self.resource, self.window))

    def send(self, frame: Frame) -> bytes:
        """The bytes of ``frame``, if the session allows it now; else LocalProtocolError."""
        if not isinstance(frame, Frame):
            raise LocalProtocolError(f"not a frame: {type(frame).__name__}")
        nxt = TRANSITIONS.get((self.state, "send", frame.KIND))
        if nxt is None:
            raise LocalProtocolError(f"cannot send {frame.KIND} in state {self.state}")
        send_chan: _Send | None = None
        if type(frame) is Batch:
            send_chan = self._check_batch_send(frame)
        elif type(frame) is Ack:
            raise LocalProtocolError("acks are made by ack(), after the commit")
        elif type(frame) is Reject:
            raise LocalProtocolError("rejects are made by reject()")
        elif type(frame) is Ping:
            if frame.nonce in self._pings:
                raise LocalProtocolError(f"ping {frame.nonce} is already outstanding")
            if len(self._pings) >= PINGS_IN_FLIGHT_MAX:
                raise LocalProtocolError(f"{PINGS_IN_FLIGHT_MAX} pings are outstanding")
        data = encode_frame(frame)  # may refuse: nothing has changed yet
        # Committed from here on: nothing below raises.
        self.state = nxt
        if type(frame) is Batch:
            assert send_chan is not None
            self._send[frame.channel] = send_chan
            self._bump("batches_out")
        elif type(frame) is Ping:
            self._pings = self._pings | {frame.nonce}
        self._bump("frames_out")
        return data

    def _check_batch_send(self, b: Batch) -> _Send:
        chan = b.channel
        s = self._send.get(chan)
        if s is None:
            s = _Send(base=b.seq - 1, sent=b.seq - 1, acked=0)
        if b.seq > s.sent:
            # A new number must keep the window. A retransmission (a number at or below
            # the highest sent, as a gap request or a retry timer asks) is always allowed:
            # refusing it could leave a receiver waiting for the hole it holds batches
            # behind, while the acks that would open the window wait for that hole.
            grown = replace(s, sent=b.seq)
            extra = grown.in_flight - s.in_flight
            if self.in_flight + extra > self.send_window:
                raise LocalProtocolError(
                    f"the window of {self.send_window} batch frames in flight is full; "
                    "wait for acks (back-pressure)")
            return grown
        return s

    @property
    def send_window(self) -> int:
        """Batch frames we may have in flight: the smaller of our window and the peer's."""
        peer = self.peer.window if self.peer is not None else FRAMES_IN_FLIGHT_MAX
        return min(self.window, peer)

    @property
    def in_flight(self) -> int:
        """Batch frames sent in this session and not yet acked."""
        return sum(s.in_flight for s in self._send.values())

    def can_send(self, n: int = 1) -> bool:
        """Whether ``n`` more new batches fit in the window now."""
        return self.state == "open" and self.in_flight + n <= self.send_window

    def ack(self, sender: Any, receiver: bytes, upto: int, skipped: tuple[int, ...] = ()) -> bytes:
        """The ack frame for channel ``(sender, receiver)`` up to ``upto``: call it after
        the application committed those batches. ``upto`` may not pass what was handed
        out (:class:`BatchReceived`) nor go back; acking the committed number again (after
        a :class:`DuplicateBatch`) is allowed."""
        chan = (sender, receiver)
        nxt = TRANSITIONS.get((self.state, "send", "ack"))
        if nxt is None:
            raise LocalProtocolError(f"cannot send ack in state {self.state}")
        r = self._recv_chan(chan, self._recv)
        if type(upto) is not int or not r.committed <= upto <= r.got:
            raise LocalProtocolError(
                f"ack of {upto!r} on a channel handed out up to {r.got}, committed {r.committed}")
        if len(skipped) > SKIPPED_MAX or any(
                type(s) is not int or not r.committed < s <= upto for s in skipped):
            raise LocalProtocolError("skipped numbers must be newly committed by this ack")
        data = encode_frame(Ack(sender, receiver, upto, tuple(skipped)))
        self._recv[chan] = replace(r, committed=upto)
        self._unacked -= upto - r.committed
        self.state = nxt
        self._bump("frames_out")
        return data

    def reject(self, sender: Any, receiver: bytes, seq: int, definite: bool, reason: str) -> bytes:
        """The reject frame for batch ``seq`` of a channel, which was handed out.

        ``definite``: the application committed that the number is consumed and the batch
        will never apply (it must be the next after the committed one; it then counts as
        committed). Otherwise the outcome is unknown: the channel goes back to its
        committed number, so that the retransmission is handed out again (the
        application's store decides then whether it had applied it).
        """
        chan = (sender, receiver)
        nxt = TRANSITIONS.get((self.state, "send", "reject"))
        if nxt is None:
            raise LocalProtocolError(f"cannot send reject in state {self.state}")
        r = self._recv_chan(chan, self._recv)
        if definite and not (type(seq) is int and seq == r.committed + 1 <= r.got):
            raise LocalProtocolError("a definite reject is for the next uncommitted batch")
        if not definite and not (type(seq) is int and r.committed < seq <= r.got):
            raise LocalProtocolError("an indefinite reject is for a batch handed out, uncommitted")
        data = encode_frame(Reject(sender, receiver, seq, bool(definite), reason[:REASON_CHARS_MAX]))
        self._recv[chan] = replace(r, committed=seq) if definite else replace(r, got=r.committed)
        self._unacked -= 1 if definite else r.got - r.committed
        self.state = nxt
        self._bump("frames_out")
        return data

    def close(self, code: str = "ok", reason: str = "") -> bytes:
        return self.send(Close(code, reason[:REASON_CHARS_MAX]))

    def fail(self, error: WireError) -> bytes:
        """The close frame for a protocol error (or b"" if close may not be sent now)."""
        if (self.state, "send", "close") not in TRANSITIONS:
            return b""
        return self.close(error.code, error.detail)

    # -- receiving --------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        """Events from ``data`` (``b""``: the stream ended). All or nothing: a
        :class:`~avm.wire.errors.RemoteProtocolError` leaves the session as it was."""
        if type(data) not in (bytes, bytearray, memoryview):
            raise LocalProtocolError(f"receive_data takes bytes, not {type(data).__name__}")
        if self._eof:
            raise LocalProtocolError("the stream already ended")
        w = _Work(self.state, pings=self._pings, peer=self.peer, version=self.version,
                  unacked=self._unacked)
        events: list[Event] = []
        keep = len(self._buf)
        self._buf += data
        pos = 0
        try:
            buf = self._buf
            while True:
                if len(buf) - pos < PREFIX_BYTES:
                    break
                n = frame_length(bytes(buf[pos:pos + PREFIX_BYTES]), self.frame_bytes_max)
                if len(buf) - pos - PREFIX_BYTES < n:
                    break
                frame = decode_body(bytes(buf[pos + PREFIX_BYTES:pos + PREFIX_BYTES + n]))
                self._apply(w, frame, events)
                w.bump("frames_in")
                pos += PREFIX_BYTES + n
            if not data:
                if len(buf) - pos:
                    raise TruncatedFrame(
                        f"the stream ended inside a frame ({len(buf) - pos} bytes left)")
                nxt = TRANSITIONS[(w.state, "recv", "eof")] if w.state != "closed" else "closed"
                events.append(ConnectionClosed(clean=w.state == "closed"))
                w.state = nxt
        except WireError:
            del self._buf[keep:]  # the refused bytes were never taken
            raise
        # The call succeeded: commit everything at once.
        del self._buf[:pos]
        self.state = w.state
        self.peer, self.version, self._pings = w.peer, w.version, w.pings
        self._unacked = w.unacked
        self._recv.update(w.recv)
        self._send.update(w.send)
        for k, v in w.counts.items():
            self._bump(k, v)
        if not data:
            self._eof = True
        return events

    def _apply(self, w: _Work, frame: Frame, events: list[Event]) -> None:
        kind = frame.KIND
        nxt = TRANSITIONS.get((w.state, "recv", kind))
        if nxt is None:
            raise UnexpectedFrame(f"a {kind} frame in state {w.state}")
        if type(frame) is Hello:
            common = set(frame.versions) & set(self.versions)
            if not common:
                raise VersionMismatch(f"the peer speaks {frame.versions}, we {self.versions}")
            if self.peer_address is not None and frame.address != self.peer_address:
                raise IdentityMismatch("the peer's hello names another address than expected")
            _check_identity(frame.resource, frame.address)
            w.peer, w.version = frame, max(common)
            events.append(HelloReceived(frame, max(common)))
        elif type(frame) is Batch:
            self._receive_batch(w, frame, events)
        elif type(frame) is Ack:
            self._receive_settle(w, frame.channel, frame.upto, events,
                                 Acked(frame.channel, frame.upto, frame.skipped))
        elif type(frame) is Reject:
            ev = Rejected(frame.channel, frame.seq, frame.definite, frame.reason)
            if frame.definite:
                self._receive_settle(w, frame.channel, frame.seq, events, ev, exact=True)
            else:
                events.append(ev)
        elif type(frame) is GapRequest:
            events.append(GapRequested(frame.channel, frame.first, frame.last))
        elif type(frame) is Ping:
            events.append(PingReceived(frame.nonce))
        elif type(frame) is Pong:
            if frame.nonce not in w.pings:
                raise UnexpectedFrame(f"a pong for no outstanding ping ({frame.nonce})")
            w.pings = w.pings - {frame.nonce}
            events.append(PongReceived(frame.nonce))
        elif type(frame) is Close:
            events.append(CloseReceived(frame.code, frame.reason))
        w.state = nxt

    def _recv_chan(self, chan: tuple, over: dict) -> _Recv:
        r = over.get(chan) or self._recv.get(chan)
        if r is None:
            c = self.committed_seq(chan)
            if type(c) is not int or c < 0:
                raise LocalProtocolError(f"committed_seq gave {c!r} for a channel")
            r = _Recv(got=c, committed=c)
        return r

    def _receive_batch(self, w: _Work, b: Batch, events: list[Event]) -> None:
        chan = b.channel
        r = self._recv_chan(chan, w.recv)
        how = arrival(r.got, b.seq, b.seq in r.held_seqs())
        if how == DUPLICATE:
            w.recv[chan] = r
            w.bump("duplicates_refused")
            events.append(DuplicateBatch(chan, b.seq, r.committed))
            return
        # Twice the window: the sender keeps its new numbers to the window, and may add
        # retransmissions that fill a gap below the batches held here.
        if w.unacked + 1 > 2 * self.window:
            raise LimitExceeded(f"more than twice the window of {self.window} batch frames "
                                "unacknowledged")
        w.unacked += 1
        w.bump("batches_in")
        if how == EARLY:
            held = tuple(sorted((*r.held, (b.seq, b)), key=lambda x: x[0]))
            w.recv[chan] = replace(r, held=held)
            # got + 1 is never held (it would have been handed out): the gap runs from
            # it to just before the lowest number held.
            events.append(BatchHeld(chan, b.seq, r.got + 1, held[0][0] - 1))
            return
        assert how == NEXT
        got = b.seq
        events.append(BatchReceived(b))
        waiting = dict(r.held)
        while got + 1 in waiting:  # the delivery model's drain: held ones now in order
            got += 1
            events.append(BatchReceived(waiting.pop(got)))
        w.recv[chan] = replace(r, got=got, held=tuple(sorted(waiting.items(), key=lambda x: x[0])))

    def _receive_settle(self, w: _Work, chan: tuple, upto: int, events: list[Event],
                        event: Acked | Rejected, exact: bool = False) -> None:
        s = w.send.get(chan) or self._send.get(chan)
        if s is None:
            # Nothing sent on this channel in this session: an ack of an earlier session's
            # batch. Ignored: the sender retransmits what its outbox holds, and the
            # receiver acks again as a duplicate, within this session.
            w.bump("acks_ignored")
            return
        if upto > s.sent:
            # Never settle what this session did not send (an outbox entry not yet sent
            # must not be dropped on a peer's word).
            w.bump("acks_clamped")
            if exact:
                w.bump("acks_ignored")
                return
            upto = s.sent
            event = Acked(event.channel, upto, tuple(x for x in event.skipped if x <= upto)) \
                if type(event) is Acked else event
        if exact and upto != s.acked + 1:
            events.append(event)  # reported, but only an in-order one advances the count
            return
        if len(acked_range(s.acked, upto)):
            w.send[chan] = replace(s, acked=upto)
        events.append(event)

    # -- inspection -------------------------------------------------------------------
    def _bump(self, key: str, n: int = 1) -> None:
        self._counts[key] = self._counts.get(key, 0) + n

    def committed(self, channel: tuple) -> int:
        """The number the application acked last on ``channel`` (receiving side)."""
        r = self._recv.get(channel)
        return r.committed if r is not None else self.committed_seq(channel)

    def sent(self, channel: tuple) -> int:
        """The highest number of ``channel`` sent in this session (0 if none)."""
        s = self._send.get(channel)
        return s.sent if s is not None else 0

    def handed_out(self, channel: tuple) -> int:
        """The highest number of ``channel`` handed out in order (receiving side)."""
        r = self._recv.get(channel)
        return r.got if r is not None else self.committed_seq(channel)

    def statistics(self) -> Statistics:
        c = self._counts
        return Statistics(
            state=self.state, version=self.version, in_flight=self.in_flight,
            unacked_received=self._unacked,
            held=sum(len(r.held) for r in self._recv.values()),
            channels_in=len(self._recv), channels_out=len(self._send),
            frames_in=c.get("frames_in", 0), frames_out=c.get("frames_out", 0),
            batches_in=c.get("batches_in", 0), batches_out=c.get("batches_out", 0),
            duplicates_refused=c.get("duplicates_refused", 0),
            acks_clamped=c.get("acks_clamped", 0), acks_ignored=c.get("acks_ignored", 0),
            pings_outstanding=len(self._pings))

    def snapshot(self) -> tuple:
        """Everything the session holds, as one comparable value (tests compare it before
        and after a refused input)."""
        return (self.state, self.peer, self.version, tuple(sorted(self._recv.items(), key=repr)),
                tuple(sorted(self._send.items(), key=repr)), self._pings, bytes(self._buf),
                tuple(sorted(self._counts.items())), self._eof)


assert all(k in LAYOUTS or k == "eof" for _, _, k in TRANSITIONS)
