"""Typed errors of the wire protocol: whose fault, and a short code to count and log.

    "Errors say whose fault (h11, trio). ``LocalError``: our caller misused the API.
    ``RemoteError``: the peer broke the protocol." (STYLE.md, habit 3)

Every error has a ``code`` (a short, stable word) that a ``close`` frame carries and that
the transport counts per reason; the message says what was wrong, never anything of the
batch's contents. Any bytes given to :meth:`avm.wire.Connection.receive_data` either
decode or raise a :class:`RemoteProtocolError`; anything else escaping is a bug.
"""

from __future__ import annotations

from ..core.errors import AvmError

__all__ = [
    "WireError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "FrameTooLarge",
    "MalformedFrame",
    "TruncatedFrame",
    "UnexpectedFrame",
    "LimitExceeded",
    "VersionMismatch",
    "IdentityMismatch",
    "ERROR_CODES",
]


class WireError(AvmError):
    """Base of every error of the wire protocol (and of the transport built on it)."""

    code = "wire"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{self.code}: {detail}")


class LocalProtocolError(WireError):
    """Our own caller misused the session (sent a frame its state does not allow, acked
    a number it was never given, overfilled the window). Nothing was sent or changed."""

    code = "local"


class RemoteProtocolError(WireError):
    """The peer broke the protocol. The frames of the refused input changed nothing;
    the caller should close the connection with this error's ``code``."""

    code = "protocol"


class FrameTooLarge(RemoteProtocolError):
    """A length prefix announced more than ``FRAME_BYTES_MAX``: refused from the prefix
    alone, before the body is read or any room for it is made."""

    code = "frame-too-large"


class MalformedFrame(RemoteProtocolError):
    """A frame body that does not decode (bounded canonical codec) or has the wrong
    shape: unknown kind, wrong field count, a field of the wrong type or range."""

    code = "malformed"


class TruncatedFrame(RemoteProtocolError):
    """The connection ended in the middle of a frame."""

    code = "truncated"


class UnexpectedFrame(RemoteProtocolError):
    """A well-formed frame the session's state does not allow (a batch before hello, a
    pong for no ping, a second hello); see the transition table in docs/network.md."""

    code = "unexpected"


class LimitExceeded(RemoteProtocolError):
    """The peer went past a limit it was told about: the in-flight window, messages per
    batch, held batches, pings outstanding."""

    code = "limit"


class VersionMismatch(RemoteProtocolError):
    """The peer's hello offers no protocol version this side speaks."""

    code = "version"


class IdentityMismatch(RemoteProtocolError):
    """The peer's hello names an identity that does not check: its resource does not
    hash to its address, or the address is not the one this side meant to reach."""

    code = "identity"


#: Every error class by its code (the close frame's code, the transport's counters).
ERROR_CODES: dict[str, type[WireError]] = {
    c.code: c for c in (WireError, LocalProtocolError, RemoteProtocolError, FrameTooLarge,
                        MalformedFrame, TruncatedFrame, UnexpectedFrame, LimitExceeded,
                        VersionMismatch, IdentityMismatch)
}
