"""An operator's edit of a machine's state: one audited transaction through the value rules.

    "state that can be browsed and edited in a debugger" (DESIGN section 10)

:func:`edit_state` (``Host.set_state``) changes parts of a machine's committed state
(``set=[(path, value), ...]``, paths of :mod:`avm.host.valuepath`) or the whole of it
(``value=``), as **one act** of the runtime: between two steps, every change is applied
to the state as it is then, and the result goes through the core's own rule for an
operator's edit, :func:`avm.core.network.set_state` (the rule the simulator's
``sim.set_state`` uses): it must be a value, and it must conserve the substructural
items of the state it replaces (a linear value may not be copied or dropped, none may
be brought in). Anything refused (a bad path, a value the rules refuse, an ``expect``
that no longer holds) changes nothing.

The edit and its **audit row** (when, who, which machine, what: each path with its part
before and after) are in the same commit of the store (table ``audit``, the newest
:data:`~avm.host.store.AUDIT_ROWS_MAX` rows). ``expect`` makes a change conditional (a
compare-and-set): the part at that path must still equal the value the editor saw, or
:class:`StateConflict` is raised and nothing changes; a running machine may have changed
it meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import network as nw
from ..core.codec import decode
from ..core.errors import AvmError, UsageError
from ..core.machine import safe_text, same_value
from ..core.network import Network
from ..core.values import display
from .store import Dirty
from .valuepath import ABSENT, format_path, get_at, parse_path, set_at

if TYPE_CHECKING:
    from .api import Host

__all__ = ["StateConflict", "Change", "Edit", "edit_state", "read_audit", "NOTHING",
           "CHANGES_MAX", "WHO_CHARS_MAX"]

#: Paths one edit may set.
CHANGES_MAX = 1000
#: The longest ``who`` kept in the audit.
WHO_CHARS_MAX = 200


class StateConflict(AvmError):
    """An ``expect`` of the edit no longer holds: the state changed since it was read."""


class _Nothing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOTHING"


#: ``value=`` not given (``None`` is a state like any other).
NOTHING: Any = _Nothing()


@dataclass(frozen=True)
class Change:
    """One change of an edit: the part at ``path`` before (``ABSENT``: a new key) and
    after."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Edit:
    """What :func:`edit_state` did, as recorded in the audit."""

    machine: str
    who: str
    at: int  # ms since the epoch (the host's clock)
    changes: tuple[Change, ...]


def _detail(changes: Iterable[Change]) -> str:
    parts = [f"{c.path} = {safe_text(display(c.after), 80)}" for c in changes]
    text = "; ".join(parts)
    return text if len(text) <= 500 else text[:497] + "..."


def _audit_part(v: Any) -> Any:
    """A part as the audit row encodes it: ``ABSENT`` (no such key before) as ``()``
    tagged by the ``present`` flag beside it."""
    return (False, None) if v is ABSENT else (True, v)


async def edit_state(host: Host, name: str, *, value: Any = NOTHING,
                     set: Iterable[tuple[str, Any]] = (),  # noqa: A002 - the verb of the API
                     expect: Iterable[tuple[str, Any]] = (), who: str = "embedded") -> Edit:
    """Change ``name``'s state in one audited transaction; see the module docstring.

    ``value``: the whole new state; ``set``: ``(path, value)`` pairs applied in order
    (after ``value`` if both are given); ``expect``: ``(path, value)`` pairs that must
    hold in the current state first. Returns once committed.
    """
    from .api import REPLIES

    if type(who) is not str or not who or len(who) > WHO_CHARS_MAX:
        raise UsageError(f"who is 1 to {WHO_CHARS_MAX} characters: the editor's name")
    sets = [(parse_path(p), v) for p, v in set]
    expects = [(parse_path(p), v) for p, v in expect]
    if len(sets) > CHANGES_MAX or len(expects) > CHANGES_MAX:
        raise UsageError(f"an edit sets at most {CHANGES_MAX} paths")
    if value is NOTHING and not sets:
        raise UsageError("nothing to change: give the whole value, or paths to set")
    if name == REPLIES:
        raise UsageError(f"{REPLIES} is the host's own machine")
    addr = host.address(name)
    rt = host._rt
    rt.resident(addr)  # an evicted machine comes back to be edited
    at = int(rt.clock() * 1000)
    dirty = Dirty(machines={addr})
    done: list[Edit] = []

    def act(net: Network) -> tuple[Network, list]:
        old = nw.machine_record(net, addr).state
        for segs, want in expects:
            got = get_at(old, segs)
            if not same_value(got, want):
                raise StateConflict(f"{format_path(segs)} is {safe_text(display(got), 80)} "
                                    f"now, not {safe_text(display(want), 80)}: the state "
                                    "changed since it was read; read it again")
        changes: list[Change] = []
        new = old
        if value is not NOTHING:
            new = value
            changes.append(Change("$", old, value))
        for segs, v in sets:
            try:
                before = get_at(new, segs)
            except UsageError:
                before = ABSENT  # a new key of a Map (set_at says if it cannot be)
            new = set_at(new, segs, v)
            changes.append(Change(format_path(segs), before, v))
        net, evs = nw.set_state(net, addr, new)  # the core's rule: refused, nothing changed
        edit = Edit(name, who, at, tuple(changes))
        dirty.audit.append((at, who, name, "set_state", _detail(changes),
                            tuple((c.path, _audit_part(c.before)) for c in changes),
                            tuple((c.path, c.after) for c in changes)))
        done.append(edit)
        return net, evs

    rt.apply(act, dirty)  # the state and its audit row: one commit
    await rt.durable()
    return done[0]


def read_audit(path: Path, machine: str | None, limit: int, before: int | None) -> list[dict]:
    """The newest audit rows (of ``machine``, or all), newest first, ids below
    ``before``; values decoded. A read-only connection of its own."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        where: list[str] = []
        args: list[Any] = []
        if machine is not None:
            where.append("machine = ?")
            args.append(machine)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        sql = ("SELECT id, at, who, machine, act, detail, before, after FROM audit"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id DESC LIMIT ?")
        try:
            rows = db.execute(sql, (*args, limit)).fetchall()
        except sqlite3.OperationalError:  # a store from before the audit table
            rows = []
    finally:
        db.close()
    out = []
    for i, at, who, m, act, detail, b, a in rows:
        befores = dict(decode(bytes(b)))
        changes = []
        for p, after in decode(bytes(a)):
            present, old = befores.get(p, (False, None))
            changes.append(Change(p, old if present else ABSENT, after))
        out.append({"id": i, "at": at, "who": who, "machine": m, "act": act,
                    "detail": detail, "changes": changes})
    return out


async def audit(host: Host, machine: str | None = None, limit: int = 100,
                before: int | None = None) -> list[dict]:
    """The audit rows (``Host.audit``); an in-memory host keeps none."""
    path = host.store.path
    if path is None:
        return []
    await host.flush()
    return await asyncio.to_thread(read_audit, path, machine, limit, before)
