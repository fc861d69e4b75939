"""Between hosts: the sans-IO wire protocol, its TLS transport, and a fault proxy.

    "The wire protocol is a sans-IO state machine (bytes in, events out) with a thin
    asyncio driver, so it is tested without sockets." (DESIGN section 9)

* :mod:`avm.wire.frames`: the frame layouts (as data), encoding and bounded decoding;
* :mod:`avm.wire.session`: :class:`Connection`, one side of a session, whose life
  cycle is the table :data:`TRANSITIONS`;
* :mod:`avm.wire.errors`: :class:`WireError` and its subclasses, each with a code;
* :mod:`avm.wire.transport`: the asyncio driver, TLS 1.3 with pinned identities;
* :mod:`avm.wire.faults`: the fault-injecting proxy used by tests.

This package is part of the shell: it imports :mod:`avm.core` (the codec, identities,
the delivery model's per-channel rules), never the reverse. docs/network.md describes
the protocol; its tables are generated from this package by ``tools/wire_doc.py``.
"""

from __future__ import annotations

from .errors import (
    ERROR_CODES,
    FrameTooLarge,
    IdentityMismatch,
    LimitExceeded,
    LocalProtocolError,
    MalformedFrame,
    RemoteProtocolError,
    TruncatedFrame,
    UnexpectedFrame,
    VersionMismatch,
    WireError,
)
from .frames import (
    FRAME_BYTES_MAX,
    FRAMES_IN_FLIGHT_MAX,
    LAYOUTS,
    MESSAGES_PER_BATCH_MAX,
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
)
from .session import (
    PROTOCOL_VERSIONS,
    TRANSITIONS,
    Acked,
    BatchHeld,
    BatchReceived,
    CloseReceived,
    Connection,
    ConnectionClosed,
    DuplicateBatch,
    Event,
    GapRequested,
    HelloReceived,
    PingReceived,
    PongReceived,
    Rejected,
    Statistics,
)

__all__ = [
    "ERROR_CODES", "FrameTooLarge", "IdentityMismatch", "LimitExceeded", "LocalProtocolError",
    "MalformedFrame", "RemoteProtocolError", "TruncatedFrame", "UnexpectedFrame",
    "VersionMismatch", "WireError",
    "FRAME_BYTES_MAX", "FRAMES_IN_FLIGHT_MAX", "LAYOUTS", "MESSAGES_PER_BATCH_MAX",
    "Ack", "Batch", "Close", "Frame", "GapRequest", "Hello", "Ping", "Pong", "Reject",
    "decode_body", "encode_frame",
    "PROTOCOL_VERSIONS", "TRANSITIONS", "Acked", "BatchHeld", "BatchReceived",
    "CloseReceived", "Connection", "ConnectionClosed", "DuplicateBatch", "Event",
    "GapRequested", "HelloReceived", "PingReceived", "PongReceived", "Rejected", "Statistics",
]
