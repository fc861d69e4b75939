"""Typed errors of the pure core.

Every error says whose fault it is and, where a value is involved, the *path* to the
offending part (``$.state["orders"][3]``), because a user debugging a failed batch needs
to know where to look, not only what went wrong. The edges (CLI, host, web) turn these
into messages; the core never prints.
"""

from __future__ import annotations


class AvmError(Exception):
    """Base of every error the core raises on purpose."""


class ValueRuleError(AvmError):
    """A value is not an immutable AVM value (DESIGN section 2)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class SubstructuralError(AvmError):
    """A linear, affine or relevant value was copied or dropped (DESIGN section 2)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class CodecError(AvmError):
    """Bytes that do not decode to exactly one canonical value, or a value too large."""


class ValueLimitError(ValueRuleError, CodecError):
    """A value the encoding cannot store: an int over ``INT_BYTES_MAX`` bytes, text with a
    lone surrogate, nesting deeper than ``DEPTH_MAX``, more than
    ``KEY_HASH_COLLISIONS_MAX`` keys of one map sharing one hash.

    A ``ValueRuleError`` (it is not a value: a batch that makes one fails with rule
    ``value``) and a ``CodecError`` (``encode`` refuses it), so that what a step may keep
    and what a host may store are the same set.
    """


class CapabilityError(AvmError):
    """A capability is malformed, forged, tampered with, or sealed for someone else."""


class UnsealError(CapabilityError):
    """A sealed value or capability did not open with the key offered."""


class StepContractError(AvmError):
    """A step function broke its contract: wrong return shape, bad output, bad target."""


class SignalError(AvmError):
    """A machine received a strong life-cycle signal that it does not understand."""


class UsageError(AvmError):
    """Our caller misused the API (a wrong argument, an impossible request).

    The counterpart of the errors above, which blame a value, a step or a peer: this one
    says the calling code must change. h11 calls it ``LocalError``.
    """


class UnknownName(UsageError, KeyError):
    """A name (machine, host, behavior, service) that this network does not know.

    Also a ``KeyError``, so code that looked names up in a mapping keeps working.
    """

    def __str__(self) -> str:  # KeyError would quote the message as a repr
        return str(self.args[0]) if self.args else "unknown name"


class AskError(AvmError):
    """An ask got no answer (``Sim.ask``): the network settled without answering."""


class AskFailed(AskError):
    """The request could not be applied: ``reason`` is what ``feedback`` said."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the request failed: {reason}")


class AskTimeout(AskError):
    """No answer came within the time-out (network time)."""

    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        super().__init__(f"no answer within {timeout_ms} ms of network time")
