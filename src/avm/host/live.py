"""Live programming on a host: machines bound to dictionary words (DESIGN section 10).

A machine bound to a word runs the behavior registered as ``dict:BRANCH/WORD@VERSION``:
the version is part of the behavior's name, so the machine record in the store says
exactly which code it runs, and a reopened host loads that version from the store's
dictionary by itself (no ``behaviors=`` needed for it). Rebinding is the core's own
hot swap (:func:`avm.core.network.rebind`): it takes effect at the machine's next batch,
with its state unchanged, and a batch that already ran ran whole under the old code.

A binding either *follows* its word (every new version on the branch, made through
:meth:`Live.edit`, rebinds it) or is *pinned* to a version. Each binding remembers the
behavior it replaced, so :meth:`Live.rollback` undoes the last rebind in one action.
A version that does not compile, or does not load (its code raises, or defines no
``behavior``), is refused before any machine is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core import network as nw
from ..core.errors import UsageError
from .dictionary import MAIN, Dictionary, DictionaryError, Recipe, Version

if TYPE_CHECKING:
    from .api import Host
    from .peek import PeekReport

__all__ = ["Live", "PREFIX", "behavior_name", "parse_name", "load_named", "recipe_named",
           "in_worker"]

PREFIX = "dict:"


def behavior_name(branch: str, word: str, version: int) -> str:
    return f"{PREFIX}{branch}/{word}@{version}"


def parse_name(name: str) -> tuple[str, str, int] | None:
    """``(branch, word, version)`` of a dictionary behavior name, else None."""
    if not name.startswith(PREFIX) or "@" not in name or "/" not in name:
        return None
    rest, _, ver = name[len(PREFIX):].rpartition("@")
    branch, _, word = rest.partition("/")
    return (branch, word, int(ver)) if ver.isdigit() and branch and word else None


def _named(name: str) -> tuple[str, str, int]:
    parsed = parse_name(name)
    if parsed is None:
        raise UsageError(f"{name!r} is not a dictionary behavior name")
    return parsed


def load_named(dictionary: Dictionary, name: str) -> Any:
    branch, word, version = _named(name)
    return dictionary.load(branch, word, version=version)


def recipe_named(dictionary: Dictionary, name: str) -> Recipe:
    """The Recipe of a dictionary behavior name (for an isolated worker to load)."""
    branch, word, version = _named(name)
    return dictionary.recipe(branch, word, version=version)


def in_worker(name: str) -> Callable:
    """What the host's behavior table holds for code that runs only in workers: the
    core never calls it (the pool runs the batch), and if anything did, it fails."""
    def step(msg: Any, state: Any) -> Any:
        raise UsageError(f"{name} runs in an isolated worker, not in the host")
    step.__name__ = name
    return step


class Live:
    """``host.live``: the host's dictionary and the bindings of its machines."""

    def __init__(self, host: Host, dictionary: Dictionary) -> None:
        self.host = host
        self.dictionary = dictionary

    async def bind(self, machine: str, word: str, branch: str = MAIN, *,
                   version: int | None = None) -> str:
        """Run ``word`` (its head, followed from now on; or ``version``, pinned) on
        ``machine`` from its next batch on. Returns the behavior name."""
        follow = version is None
        v = self.dictionary.head(branch, word) if version is None else self.dictionary.version(version)
        if v.word != word:
            raise UsageError(f"version {v.id} is of word {v.word!r}, not {word!r}")
        return await self._rebind(machine, branch, word, follow, v)

    async def _rebind(self, machine: str, branch: str, word: str, follow: bool,
                      v: Version) -> str:
        name = behavior_name(branch, word, v.id)
        env = self.host._rt.env
        addr = self.host.address(machine)
        self.host._rt.resident(addr)  # an evicted machine comes back to be rebound
        self._ensure(name, addr)
        previous = self.host._rt.net.machines[addr].behavior
        await self.host._control(machine, lambda net, a: nw.rebind(net, a, name, env))
        self.dictionary.set_binding(machine, branch, word, follow, name,
                                    previous if previous != name else None)
        return name

    async def edit(self, branch: str, word: str, source: str, *, author: str = "unknown",
                   message: str = "", expect: int | None | bool = False) -> Version:
        """A new version of ``word``; every machine following it on ``branch`` runs it
        from its next batch on. A version that does not load changes nothing bound
        (the version is kept, as history; no machine runs it)."""
        v = self.dictionary.edit(branch, word, source, author=author, message=message,
                                 expect=expect)
        followers = [m for m, (b, w, f, _, _) in self.dictionary.bindings().items()
                     if f and b == branch and w == word]
        if followers:  # loads (or raises) before any rebind
            self._ensure(behavior_name(branch, word, v.id), self.host.address(followers[0]))
            for m in followers:
                await self._rebind(m, branch, word, True, v)
        return v

    async def rollback(self, machine: str) -> str:
        """Undo the machine's last rebind: it runs the behavior it ran before, pinned."""
        b = self.dictionary.bindings().get(machine)
        previous = b[4] if b is not None else None
        if b is None or previous is None:
            raise DictionaryError(f"{machine} has no earlier behavior to roll back to")
        branch, word, _, current, _ = b
        env = self.host._rt.env
        self._ensure(previous, self.host.address(machine))
        await self.host._control(machine, lambda net, a: nw.rebind(net, a, previous, env))
        self.dictionary.set_binding(machine, branch, word, False, previous, current)
        return previous

    async def peek(self, machine: str, new: str | int, *, last: int = 10,
                   word: str | None = None, branch: str | None = None) -> PeekReport:
        """A dry run: replay ``machine``'s newest ``last`` batches with ``new`` (a version
        id, or source text of its word, compiled but not stored) and report, per batch,
        how the state and outputs differ from what was committed. Commits nothing;
        with isolated workers it runs in the machine's worker (docs/dictionary.md, "Peek")."""
        from .peek import peek

        return await peek(self.host, machine, new, last=last, word=word, branch=branch)

    def bindings(self) -> dict[str, tuple[str, str, bool, str, str | None]]:
        return self.dictionary.bindings()

    def _ensure(self, name: str, address: bytes) -> None:
        """Make behavior ``name`` (a dictionary version) known to the host: loaded here
        when steps run inline; with isolated workers, loaded in the worker of the
        machine's domain (checked there, so a word that raises is refused before any
        rebind) and never run in the host's process."""
        env = self.host._rt.env
        if name in env.behaviors:
            return
        pool = self.host._pool
        if pool is None:
            env.behaviors[name] = load_named(self.dictionary, name)
            return
        pool.load(name, recipe_named(self.dictionary, name), pool.domain_of(address))
        env.behaviors[name] = in_worker(name)
