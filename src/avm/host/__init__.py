"""The durable host: machines that run for real (DESIGN section 8).

The I/O shell around the pure core: :mod:`avm.host.store` keeps a host's network in
SQLite, :mod:`avm.host.runtime` steps it with the core's own rules on an asyncio loop,
and :mod:`avm.host.api` is the embedded API (``async with avm.host.open(path) as h``).
"""

from .api import REPLIES, AskFailed, Host, MachineInfo, close, open
from .store import DURABILITY_MODES, StoreError

__all__ = ["open", "close", "Host", "AskFailed", "MachineInfo", "REPLIES", "StoreError",
           "DURABILITY_MODES"]
