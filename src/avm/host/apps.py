"""Applications on a host: the examples' ``build(sim)`` functions, run for real.

An application module written for the simulator defines ``build(sim)``; it spawns
machines, mints capabilities and sends the first messages. :class:`BuildOnHost` offers
the part of :class:`~avm.Sim`'s interface a build function uses (``spawn``, ``cap``,
``probe``, ``send``, ``submit``, ``state``, ``add_host``, ``invariant``) on a running
host, so the same module runs in the simulator and on a host. Machine names are given a
prefix (``"bank."``), so several applications share one host.

A module may also define ``async def host_main(host, prefix)`` to keep sending work
once the host runs (the demo's clients do).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..core import network as nw
from ..core.caps import Capability
from ..core.errors import UsageError
from ..core.machine import SIGNAL, Behavior
from ..core.sim import _probe
from .api import Host

__all__ = ["load_module", "behaviors_of", "BuildOnHost", "PROBE"]

PROBE = "avm.probe"


def load_module(target: str) -> ModuleType:
    """A module by file path (``examples/bank.py``) or dotted name (``examples.bank``)."""
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.exists():
            raise UsageError(f"no file {target}")
        name = f"avm_app_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot load {target}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    return importlib.import_module(target)


def behaviors_of(modules: Iterable[ModuleType]) -> dict[str, Callable]:
    """Every ``avm.Behavior`` defined at the top of the modules (and the probe)."""
    table: dict[str, Callable] = {PROBE: _probe}
    for mod in modules:
        for v in vars(mod).values():
            if isinstance(v, Behavior):
                table.setdefault(v.name, v)
        for name, fn in getattr(mod, "BEHAVIORS", {}).items() if isinstance(
                getattr(mod, "BEHAVIORS", None), dict) else ():
            table.setdefault(name, fn)
    return table


class BuildOnHost:
    """``Sim``'s building interface over a running host (synchronous, like the Sim's).

    Acts are applied to the host at once and committed by the next :meth:`Host.flush`.
    Invariants are recorded (``self.invariants``), not checked after every step: a host
    is not a simulation.
    """

    def __init__(self, host: Host, prefix: str = "") -> None:
        self.host = host
        self.prefix = prefix
        self.invariants: list[tuple[str, Callable]] = []

    def _name(self, name: str) -> str:
        return self.prefix + name

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(sorted(self.host._rt.net.hosts))

    def add_host(self, name: str, exist_ok: bool = False) -> None:
        # One real host runs every machine; host names of the build are kept as labels
        # of the one host (its machines' batches stay local).
        return None

    def behavior(self, fn: Callable, name: str | None = None) -> str:
        return self.host.behavior(fn, name)

    def spawn(self, name: str, behavior: Callable | str, args: Any = None, *,
              host: str | None = None, env: dict[str, Any] | None = None,
              signal: Any = SIGNAL) -> bytes:
        bname = behavior if isinstance(behavior, str) else self.host.behavior(behavior)
        rt = self.host._rt
        full = self._name(name)

        def act(net: nw.Network) -> tuple[nw.Network, list]:
            net, _, evs = nw.spawn(net, full, bname, args, host=rt.host, env=env,
                                   signal=signal, env_obj=rt.env)
            return net, evs

        rt.apply(act)
        return self.host.address(full)

    def address(self, name: str) -> bytes:
        return self.host.address(self._name(name))

    def cap(self, name: str, context: Any = None, priority: float = 0.0) -> Capability:
        return self.host.cap(self._name(name), context, priority)

    def probe(self, name: str, host: str | None = None) -> Capability:
        self.spawn(name, PROBE, ())
        return self.cap(name, "probe")

    def send(self, cap: Capability, content: Any, client: str = "client") -> None:
        self.submit([(cap, content)], client)

    def submit(self, messages: Iterable[tuple[Capability, Any]], client: str = "client") -> None:
        msgs = list(messages)
        self.host._rt.apply(lambda net: nw.submit(net, msgs, client))

    def state(self, name: str) -> Any:
        net = self.host._rt.net
        return net.machines[self.address(name)].state

    def invariant(self, fn: Callable, name: str | None = None) -> Callable:
        self.invariants.append((str(name or getattr(fn, "__name__", "invariant")), fn))
        return fn
