"""Frames of the wire protocol: their layout as data, encoding, and bounded decoding.

    "Limits: frame and batch size, decode depth, per-peer rate and in-flight windows
    (back-pressure) ... Bad input gets a clear rejection and a counted reason; it never
    crashes the host or touches state." (DESIGN section 9)

A frame on the stream is a 4-byte big-endian length ``N`` followed by ``N`` bytes: the
canonical encoding (:mod:`avm.core.codec`) of the tuple ``(kind, field, ...)``. The
layout of every kind is the table :data:`LAYOUTS` (kind -> fields, each with a
:class:`FieldType` that checks it); docs/network.md is generated from it
(``tools/wire_doc.py``), so the document cannot drift from the code.

Decoding is validation (STYLE 8), in an order that never allocates what a limit forbids:

1. the prefix alone decides whether the body may be read (``N <= FRAME_BYTES_MAX``);
2. the body is decoded by the core's own bounded decoder with :data:`FRAME_LIMITS`
   (bytes, depth and item count), which also refuses any non-canonical encoding, so one
   frame has exactly one byte form (a replayed frame is the same bytes);
3. the kind and arity are checked, then each field by its type;
4. a batch's messages travel as one nested byte string (the canonical encoding of
   ``(messages, notify)``): its array heads are read first, so a batch that claims more
   than ``MESSAGES_PER_BATCH_MAX`` messages is refused before any is decoded, then it is
   decoded with :data:`BODY_LIMITS` (the value depth limit is ``DECODE_DEPTH_MAX``).

Every failure is a :class:`~avm.wire.errors.MalformedFrame` (or
:class:`~avm.wire.errors.FrameTooLarge`); nothing else escapes (tests/test_wire_protocol.py
fuzzes that).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core import codec
from ..core.caps import ADDRESS_BYTES, IDENTITY_LIMITS, Capability
from ..core.errors import CodecError
from .errors import FrameTooLarge, LimitExceeded, LocalProtocolError, MalformedFrame

__all__ = [
    "PREFIX_BYTES",
    "FRAME_BYTES_MAX",
    "MESSAGES_PER_BATCH_MAX",
    "DECODE_DEPTH_MAX",
    "FRAMES_IN_FLIGHT_MAX",
    "REASON_CHARS_MAX",
    "SKIPPED_MAX",
    "VERSIONS_MAX",
    "FRAME_LIMITS",
    "BODY_LIMITS",
    "FieldType",
    "FIELD_TYPES",
    "LAYOUTS",
    "Frame",
    "Hello",
    "Batch",
    "Ack",
    "GapRequest",
    "Reject",
    "Ping",
    "Pong",
    "Close",
    "FRAME_CLASSES",
    "encode_frame",
    "decode_body",
    "frame_length",
]

#: The length prefix: 4 bytes, big-endian, the body's length in bytes.
PREFIX_BYTES = 4
#: The largest frame body accepted or sent (a batch of many messages fits; a larger
#: batch is refused by its sender before it is framed).
FRAME_BYTES_MAX = 1 << 20
#: The most messages one batch frame may carry.
MESSAGES_PER_BATCH_MAX = 4096
#: How deeply a message's value (and a feedback tag) may nest.
DECODE_DEPTH_MAX = 32
#: Batch frames a side accepts before it has acknowledged them (its hello may ask for
#: fewer); the sender keeps to the smaller of the two.
FRAMES_IN_FLIGHT_MAX = 256
#: Characters of a reject's or close's reason text.
REASON_CHARS_MAX = 200
#: Sequence numbers one ack may report as skipped (tombstones the receiver accepted).
SKIPPED_MAX = 256
#: Protocol versions one hello may offer.
VERSIONS_MAX = 8
#: Items of an endpoint that is not a machine address (a service such as
#: ``("~", "feedback", host)``), and the size of each.
ENDPOINT_ITEMS_MAX = 4
ENDPOINT_TEXT_CHARS_MAX = 128
#: Largest sequence number, counter or nonce (fits a signed 64-bit column).
U64_MAX = (1 << 63) - 1

#: The frame itself: a few dozen items at most, nested a few levels (messages are inside
#: one byte string). The skipped list of an ack is the longest part.
FRAME_LIMITS = codec.Limits(bytes_max=FRAME_BYTES_MAX, depth_max=4,
                            items_max=64 + SKIPPED_MAX + VERSIONS_MAX)
#: A batch's nested body ``(messages, notify)``.
BODY_LIMITS = codec.Limits(bytes_max=FRAME_BYTES_MAX, depth_max=DECODE_DEPTH_MAX + 2,
                           items_max=FRAME_BYTES_MAX)

_PREFIX = struct.Struct(">I")


# ---------------------------------------------------------------------------------------
# Field types (as data: the docs list them, decoding and encoding both check them)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldType:
    """One kind of field: its name in the docs, what it is, and its check (why not, or None)."""

    name: str
    doc: str
    check: Callable[[Any], str | None]


def _u64(v: Any) -> str | None:
    if type(v) is not int or not 0 <= v <= U64_MAX:
        return "an int in [0, 2**63 - 1]"
    return None


def _seq(v: Any) -> str | None:
    if type(v) is not int or not 1 <= v <= U64_MAX:
        return "a sequence number, an int in [1, 2**63 - 1]"
    return None


def _address(v: Any) -> str | None:
    if type(v) is not bytes or len(v) != ADDRESS_BYTES:
        return f"an address, {ADDRESS_BYTES} bytes"
    return None


def _endpoint(v: Any) -> str | None:
    if type(v) is bytes:
        return _address(v)
    if (type(v) is not tuple or not 1 <= len(v) <= ENDPOINT_ITEMS_MAX
            or any(not ((type(x) is str and len(x) <= ENDPOINT_TEXT_CHARS_MAX)
                        or (type(x) is bytes and len(x) <= ADDRESS_BYTES)) for x in v)):
        return (f"an address or a tuple of 1 to {ENDPOINT_ITEMS_MAX} texts (at most "
                f"{ENDPOINT_TEXT_CHARS_MAX} characters) or byte strings (at most {ADDRESS_BYTES})")
    return None


def _hlc(v: Any) -> str | None:
    if type(v) is not tuple or len(v) != 2 or _u64(v[0]) or _u64(v[1]):
        return "a hybrid logical clock (physical, logical), two ints in [0, 2**63 - 1]"
    return None


def _priority(v: Any) -> str | None:
    if type(v) is not float or math.isnan(v) or not -1.0 <= v <= 1.0:
        return "a float in [-1, 1]"
    return None


def _bool(v: Any) -> str | None:
    return None if type(v) is bool else "a bool"


def _text(v: Any) -> str | None:
    if type(v) is not str or len(v) > REASON_CHARS_MAX:
        return f"a text of at most {REASON_CHARS_MAX} characters"
    return None


def _code(v: Any) -> str | None:
    if type(v) is not str or not 1 <= len(v) <= 32 or not v.isascii():
        return "an ASCII word of 1 to 32 characters"
    return None


def _versions(v: Any) -> str | None:
    if (type(v) is not tuple or not 1 <= len(v) <= VERSIONS_MAX
            or any(type(x) is not int or not 1 <= x <= 0xFFFF for x in v)
            or list(v) != sorted(set(v))):
        return f"1 to {VERSIONS_MAX} versions, increasing ints in [1, 65535]"
    return None


def _resource(v: Any) -> str | None:
    if type(v) is not bytes or not 1 <= len(v) <= IDENTITY_LIMITS.bytes_max:
        return f"an identity resource, 1 to {IDENTITY_LIMITS.bytes_max} bytes"
    return None


def _window(v: Any) -> str | None:
    if type(v) is not int or not 1 <= v <= FRAMES_IN_FLIGHT_MAX:
        return f"an int in [1, {FRAMES_IN_FLIGHT_MAX}]"
    return None


def _seqs(v: Any) -> str | None:
    if (type(v) is not tuple or len(v) > SKIPPED_MAX or any(_seq(x) for x in v)
            or list(v) != sorted(set(v))):
        return f"at most {SKIPPED_MAX} increasing sequence numbers"
    return None


def _body(v: Any) -> str | None:
    if type(v) is not bytes:
        return "bytes: the canonical encoding of (messages, notify)"
    return None


FIELD_TYPES: dict[str, FieldType] = {f.name: f for f in (
    FieldType("u64", "an int in [0, 2**63 - 1]", _u64),
    FieldType("seq", "a channel sequence number, an int in [1, 2**63 - 1]", _seq),
    FieldType("address", f"a machine or host address: {ADDRESS_BYTES} bytes (a labelled "
              "SHA-256 of an identity resource)", _address),
    FieldType("endpoint", "the sender of a batch: an address, or a service tuple such as "
              f"`(\"~\", \"feedback\", host)` of at most {ENDPOINT_ITEMS_MAX} short texts or "
              "byte strings", _endpoint),
    FieldType("hlc", "a hybrid logical clock `(physical, logical)`", _hlc),
    FieldType("priority", "a float in [-1, 1]; the batch's priority, the highest of its "
              "messages' sealed priorities", _priority),
    FieldType("bool", "`true` or `false`", _bool),
    FieldType("text", f"text of at most {REASON_CHARS_MAX} characters", _text),
    FieldType("code", "an ASCII word of 1 to 32 characters (the error codes below)", _code),
    FieldType("versions", f"1 to {VERSIONS_MAX} increasing protocol versions", _versions),
    FieldType("resource", "the canonical encoding of the host's identity resource "
              f"(at most {IDENTITY_LIMITS.bytes_max} bytes)", _resource),
    FieldType("window", f"batch frames accepted before acknowledgement, 1 to "
              f"{FRAMES_IN_FLIGHT_MAX}", _window),
    FieldType("seqs", f"at most {SKIPPED_MAX} increasing sequence numbers", _seqs),
    FieldType("body", "bytes: the canonical encoding of `(messages, notify)`, each message a "
              f"`(capability, content)` pair, at most {MESSAGES_PER_BATCH_MAX} of them, "
              f"values nested at most {DECODE_DEPTH_MAX} deep; `notify` is `null` or "
              "`(status capability, tag)`", _body),
)}

#: kind -> ((field name, field type name), ...): the wire layout of every frame, after
#: the kind. This table is the protocol; the classes below follow it.
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "hello": (("versions", "versions"), ("address", "address"), ("resource", "resource"),
              ("window", "window")),
    "batch": (("sender", "endpoint"), ("receiver", "address"), ("seq", "seq"), ("ts", "hlc"),
              ("priority", "priority"), ("tomb", "bool"), ("body", "body")),
    "ack": (("sender", "endpoint"), ("receiver", "address"), ("upto", "u64"),
            ("skipped", "seqs")),
    "gap": (("sender", "endpoint"), ("receiver", "address"), ("first", "seq"),
            ("last", "seq")),
    "reject": (("sender", "endpoint"), ("receiver", "address"), ("seq", "seq"),
               ("definite", "bool"), ("reason", "text")),
    "ping": (("nonce", "u64"),),
    "pong": (("nonce", "u64"),),
    "close": (("code", "code"), ("reason", "text")),
}

#: What each kind is for (docs/network.md).
PURPOSES: dict[str, str] = {
    "hello": "first frame each way: the versions this side speaks, its host address and "
             "identity resource, and its receive window",
    "batch": "one batch of a channel `(sender, receiver)`, number `seq`; `tomb` marks a "
             "tombstone (the sender gave up: the receiver skips the number)",
    "ack": "the receiver committed the channel's batches up to `upto` (cumulative); sent "
           "only after its commit; `skipped` lists tombstones it accepted in their place",
    "gap": "the receiver holds later batches and asks again for `first`..`last`",
    "reject": "batch `seq` was refused: `definite` means it did not and will not apply "
              "(the number is consumed); otherwise it may have applied and the sender "
              "retries it",
    "ping": "liveness probe; the peer answers with a pong of the same nonce",
    "pong": "answer to a ping",
    "close": "the side is closing, with an error code (`ok` when nothing went wrong)",
}


# ---------------------------------------------------------------------------------------
# Frame classes
# ---------------------------------------------------------------------------------------


class Frame:
    """Base of the frame classes; ``KIND`` names the row of :data:`LAYOUTS`."""

    KIND = ""

    def fields(self) -> tuple:
        """The frame's wire fields, in layout order."""
        return tuple(getattr(self, name) for name, _ in LAYOUTS[self.KIND])


@dataclass(frozen=True)
class Hello(Frame):
    KIND = "hello"
    versions: tuple[int, ...]
    address: bytes
    resource: bytes
    window: int = FRAMES_IN_FLIGHT_MAX


@dataclass(frozen=True)
class Batch(Frame):
    """A batch of channel ``(sender, receiver)``. ``messages`` are ``(capability,
    content)`` pairs; ``notify`` is the sender's feedback request or None."""

    KIND = "batch"
    sender: Any
    receiver: bytes
    seq: int
    ts: tuple[int, int]
    priority: float
    messages: tuple
    notify: Any = None
    tomb: bool = False

    @property
    def channel(self) -> tuple:
        return (self.sender, self.receiver)

    @property
    def body(self) -> bytes:
        return codec.encode((self.messages, self.notify), BODY_LIMITS)

    def fields(self) -> tuple:
        return (self.sender, self.receiver, self.seq, self.ts, self.priority, self.tomb,
                self.body)


@dataclass(frozen=True)
class Ack(Frame):
    KIND = "ack"
    sender: Any
    receiver: bytes
    upto: int
    skipped: tuple[int, ...] = ()

    @property
    def channel(self) -> tuple:
        return (self.sender, self.receiver)


@dataclass(frozen=True)
class GapRequest(Frame):
    KIND = "gap"
    sender: Any
    receiver: bytes
    first: int
    last: int

    @property
    def channel(self) -> tuple:
        return (self.sender, self.receiver)


@dataclass(frozen=True)
class Reject(Frame):
    KIND = "reject"
    sender: Any
    receiver: bytes
    seq: int
    definite: bool
    reason: str

    @property
    def channel(self) -> tuple:
        return (self.sender, self.receiver)


@dataclass(frozen=True)
class Ping(Frame):
    KIND = "ping"
    nonce: int


@dataclass(frozen=True)
class Pong(Frame):
    KIND = "pong"
    nonce: int


@dataclass(frozen=True)
class Close(Frame):
    KIND = "close"
    code: str = "ok"
    reason: str = ""


FRAME_CLASSES: dict[str, type[Frame]] = {
    c.KIND: c for c in (Hello, Batch, Ack, GapRequest, Reject, Ping, Pong, Close)}


# ---------------------------------------------------------------------------------------
# Encoding and decoding
# ---------------------------------------------------------------------------------------


def _check_fields(kind: str, values: tuple, fail: Callable[[str], Exception]) -> None:
    for (name, tname), v in zip(LAYOUTS[kind], values, strict=True):
        why = FIELD_TYPES[tname].check(v)
        if why is not None:
            raise fail(f"{kind}.{name} must be {why}")
    if kind == "gap" and values[2] > values[3]:
        raise fail("gap.first must not be after gap.last")


def encode_frame(frame: Frame) -> bytes:
    """The frame's bytes on the stream (prefix and body).

    Our own frames are checked as strictly as the peer's, so what we send always decodes
    on the other side; a frame that breaks the layout or a limit is our caller's mistake:
    :class:`~avm.wire.errors.LocalProtocolError`, and nothing is sent.
    """
    kind = frame.KIND
    if type(frame) is not FRAME_CLASSES.get(kind):
        raise LocalProtocolError(f"not a frame: {type(frame).__name__}")
    if type(frame) is Batch:
        _check_messages(frame.messages, frame.notify, LocalProtocolError)
    try:
        values = frame.fields()
    except CodecError as e:
        raise LocalProtocolError(f"batch body does not encode: {e}") from None
    _check_fields(kind, values, LocalProtocolError)
    try:
        body = codec.encode((kind, *values), FRAME_LIMITS)
    except CodecError as e:
        raise LocalProtocolError(f"{kind} frame does not encode: {e}") from None
    if len(body) > FRAME_BYTES_MAX:
        raise LocalProtocolError(f"{kind} frame of {len(body)} bytes exceeds {FRAME_BYTES_MAX}")
    return _PREFIX.pack(len(body)) + body


def frame_length(prefix: bytes, frame_bytes_max: int = FRAME_BYTES_MAX) -> int:
    """The body length a prefix announces, refused from the prefix alone if too large."""
    (n,) = _PREFIX.unpack(prefix)
    if n > frame_bytes_max:
        raise FrameTooLarge(f"a frame of {n} bytes announced; the limit is {frame_bytes_max}")
    if n == 0:
        raise MalformedFrame("an empty frame")
    return n


def decode_body(body: bytes) -> Frame:
    """One frame from its body bytes (without the prefix), or :class:`MalformedFrame`."""
    try:
        value = codec.decode(body, FRAME_LIMITS)
    except CodecError as e:
        raise MalformedFrame(f"frame does not decode: {e}") from None
    if type(value) is not tuple or not value or type(value[0]) is not str:
        raise MalformedFrame("a frame is a tuple (kind, field, ...)")
    kind = value[0]
    layout = LAYOUTS.get(kind)
    if layout is None:
        raise MalformedFrame(f"unknown frame kind {kind[:32]!r}")
    fields = value[1:]
    if len(fields) != len(layout):
        raise MalformedFrame(f"a {kind} frame has {len(layout)} fields, not {len(fields)}")
    _check_fields(kind, fields, MalformedFrame)
    if kind == "batch":
        sender, receiver, seq, ts, priority, tomb, raw = fields
        messages, notify = _decode_batch_body(raw)
        return Batch(sender, receiver, seq, ts, priority, messages, notify, tomb)
    return FRAME_CLASSES[kind](*fields)  # type: ignore[call-arg]


def _array_head(data: bytes, pos: int) -> tuple[int, int]:
    """The item count of the CBOR array whose head starts at ``pos``, and the position
    after the head (only the definite-length forms the canonical codec writes)."""
    if pos >= len(data) or data[pos] >> 5 != 4:
        raise MalformedFrame("batch body: expected an array")
    info = data[pos] & 31
    if info < 24:
        return info, pos + 1
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or pos + 1 + width > len(data):
        raise MalformedFrame("batch body: bad array head")
    return int.from_bytes(data[pos + 1:pos + 1 + width], "big"), pos + 1 + width


def _decode_batch_body(raw: bytes) -> tuple[tuple, Any]:
    # The heads first: the body is a pair, its first item the messages; their count is
    # refused before a single message is decoded (nothing is allocated for them).
    n, pos = _array_head(raw, 0)
    if n != 2:
        raise MalformedFrame("batch body: a pair (messages, notify)")
    count, _ = _array_head(raw, pos)
    if count > MESSAGES_PER_BATCH_MAX:
        raise LimitExceeded(f"a batch of {count} messages; the limit is {MESSAGES_PER_BATCH_MAX}")
    try:
        value = codec.decode(raw, BODY_LIMITS)
    except CodecError as e:
        raise MalformedFrame(f"batch body does not decode: {e}") from None
    messages, notify = value
    _check_messages(messages, notify, MalformedFrame)
    return messages, notify


def _check_messages(messages: Any, notify: Any, fail: Callable[[str], Exception]) -> None:
    if type(messages) is not tuple:
        raise fail("batch messages must be a tuple")
    if len(messages) > MESSAGES_PER_BATCH_MAX:
        raise (LimitExceeded if fail is MalformedFrame else fail)(
            f"a batch of {len(messages)} messages; the limit is {MESSAGES_PER_BATCH_MAX}")
    for i, m in enumerate(messages):
        if type(m) is not tuple or len(m) != 2 or type(m[0]) is not Capability:
            raise fail(f"batch message {i} must be a (capability, content) pair")
    if notify is not None and (type(notify) is not tuple or len(notify) != 2
                               or type(notify[0]) is not Capability):
        raise fail("batch notify must be null or (status capability, tag)")
