"""avm: networks of Abstract Virtual Machines.

A machine is a pure step function ``step(message, state) -> (outputs, new_state)`` plus
its state; machines talk only by sending message batches to capabilities. Start with
:class:`Behavior` to write one and :class:`Sim` to run a network of them.

``__all__`` is the public API, pinned by ``tests/test_trust_api.py``: every name the docs
use is importable from here. Library patterns (revocation, attenuation, one-shot rights)
are in :mod:`avm.patterns`; the test kit is :mod:`avm.testing`.
"""

from .core import patterns
from .core.ask import REPLY, ask, asking, pending_asks
from .core.caps import (
    Capability,
    IdentityKey,
    Self,
    address_of,
    address_text,
    verify_identity,
    verify_signature,
)
from .core.codec import Limits, decode, encode, value_hash
from .core.errors import (
    AskError,
    AskFailed,
    AskTimeout,
    AvmError,
    CapabilityError,
    CodecError,
    SignalError,
    StepContractError,
    SubstructuralError,
    UnknownName,
    UnsealError,
    UsageError,
    ValueLimitError,
    ValueRuleError,
)
from .core.machine import ANY, SIGNAL, BatchResult, Behavior, Failure, Message, run_batch
from .core.nest import inner_state, nest
from .core.network import Config, Faults, Network, events
from .core.sim import InvariantViolation, RunReport, Sim, format_event, parse_faults
from .core.values import (
    AFFINE,
    LINEAR,
    RELEVANT,
    UNRESTRICTED,
    Affine,
    Fraction,
    Linear,
    Map,
    Relevant,
    Sealed,
    Sealer,
    Unsealer,
    check_size,
    check_value,
    record,
    replace_fields,
    sealer_pair,
)

__version__ = "0.1.0"

__all__ = [
    "AFFINE",
    "ANY",
    "LINEAR",
    "RELEVANT",
    "UNRESTRICTED",
    "Affine",
    "AskError",
    "AskFailed",
    "AskTimeout",
    "AvmError",
    "BatchResult",
    "Behavior",
    "Capability",
    "CapabilityError",
    "CodecError",
    "Config",
    "Failure",
    "Faults",
    "Fraction",
    "IdentityKey",
    "InvariantViolation",
    "Limits",
    "Linear",
    "Map",
    "Message",
    "Network",
    "REPLY",
    "Relevant",
    "RunReport",
    "SIGNAL",
    "Sealed",
    "Sealer",
    "Self",
    "SignalError",
    "Sim",
    "StepContractError",
    "SubstructuralError",
    "UnknownName",
    "UnsealError",
    "Unsealer",
    "UsageError",
    "ValueLimitError",
    "ValueRuleError",
    "address_of",
    "address_text",
    "ask",
    "asking",
    "check_size",
    "check_value",
    "decode",
    "encode",
    "events",
    "format_event",
    "inner_state",
    "nest",
    "parse_faults",
    "patterns",
    "pending_asks",
    "record",
    "replace_fields",
    "run_batch",
    "sealer_pair",
    "value_hash",
    "verify_identity",
    "verify_signature",
]
