"""Peek: replay a machine's recent batches against a new version of its word, committing
nothing (DESIGN section 10; issue 9 item 2).

    "A dry run ("peek") replays a machine's recent batches against a new version without
    committing and shows how states and outputs would differ."

**What is recorded.** For every batch applied to a machine bound to a dictionary word
(its behavior is ``dict:BRANCH/WORD@VERSION``), the runtime's recorder keeps the state
before, the batch as it was queued (capabilities sealed: never an opened context), and
what it committed: the new state and the outputs as sent, or the failure. The rows go
into the store's ``replay`` table in the same commit as the batch, bounded: the newest
:data:`~avm.host.store.REPLAY_PER_MACHINE_MAX` per machine and
:data:`~avm.host.store.REPLAY_ROWS_MAX` in all (a busy machine's state is encoded at most
that many times per commit). A destroyed machine's rows go with it.

**What a peek does.** It loads the new code (a dictionary version, or source text that
is compiled and run like a version but never stored; a compile error is refused with the
compiler's message), then, oldest first, opens each recorded batch with the machine's
keys and folds the new step over it with the core's :func:`~avm.core.network.peek_batch`
(the core's ``run_batch``: the same rules as every batch, no second copy). The new
version's state carries from one batch to the next, as if it had run them; where the
committed state before a batch is not what the previous batch committed (an operator's
edit, or rows trimmed), the replay starts again from the committed state (``from``
says which). Per batch it reports whether the new state and outputs equal what was
committed, with a compact diff. Nothing is written: no state, no history, no queue.

**Isolation.** Loading a word and running it is running its code, so a peek runs it
where the host runs the machine's batches. On an inline host (the default) that is the
host's process. On a host opened with ``isolation="workers"`` the new code is loaded in
the worker of the machine's trust domain (never in the host: source is only compiled
there, to refuse what does not compile) and every replayed batch is folded there, with
the same budgets and the host's recheck of the result, through ``Pool.run``.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import network as nw
from ..core.codec import decode, encode
from ..core.conserve import strip
from ..core.errors import AvmError, UsageError
from ..core.network import Network, events
from ..core.values import replace_fields
from .literal import to_json
from .live import PREFIX, behavior_name, in_worker, parse_name
from .store import REPLAY_PER_MACHINE_MAX
from .valuepath import change_json, diff

if TYPE_CHECKING:
    from .api import Host

__all__ = ["PeekRefused", "PeekBatch", "PeekReport", "peek", "recorder", "LAST_DEFAULT"]

#: Batches replayed when the caller does not say.
LAST_DEFAULT = 10


class PeekRefused(AvmError):
    """This peek cannot run here (an in-memory store, a machine bound to no word)."""


@dataclass(frozen=True)
class PeekBatch:
    """One replayed batch: what was committed, and what the new version would do."""

    seq: int
    chan: tuple
    at: int
    behavior: str  # the behavior that ran it
    committed_ok: bool
    committed_failure: str
    peek_ok: bool
    peek_failure: str
    #: "committed": the replay started from the committed state before this batch;
    #: "peek": from the state the new version left after the previous batch
    start: str
    state_equal: bool
    outputs_equal: bool
    state_changes: list = field(default_factory=list)  # [(path, committed, peek)]
    outputs_changes: list = field(default_factory=list)
    changes_cut: bool = False
    committed_outputs: tuple = ()  # ((capability, content), ...), as sent
    peek_outputs: tuple = ()

    @property
    def equal(self) -> bool:
        return (self.state_equal and self.outputs_equal and self.peek_ok == self.committed_ok)

    def to_json(self, names: Any) -> dict[str, Any]:
        lab = ("committed", "peek")

        def outs(groups: tuple) -> list:
            return [{"to": to_json(c, names), "content": to_json(x, names)} for c, x in groups]

        return {
            "seq": self.seq, "sender": _party(self.chan[0], names), "at": self.at,
            "behavior": self.behavior,
            "committed": {"ok": self.committed_ok, "failure": self.committed_failure or None},
            "peek": {"ok": self.peek_ok, "failure": self.peek_failure or None},
            "from": self.start, "equal": self.equal,
            "state": "equal" if self.state_equal else "differs",
            "outputs": "equal" if self.outputs_equal else "differs",
            "changes": {"state": [change_json(c, names, lab) for c in self.state_changes],
                        "outputs": [change_json(c, names, lab) for c in self.outputs_changes],
                        "cut": self.changes_cut},
            "committed_outputs": outs(self.committed_outputs),
            "peek_outputs": outs(self.peek_outputs),
        }


@dataclass(frozen=True)
class PeekReport:
    """What ``host.live.peek`` found: one :class:`PeekBatch` per replayed batch, oldest
    first. ``code`` says what ran (``"version 7"`` or ``"source of WORD"``)."""

    machine: str
    code: str
    batches: list[PeekBatch]
    note: str = ""

    @property
    def differ(self) -> int:
        return sum(not b.equal for b in self.batches)

    def to_json(self, names: Any) -> dict[str, Any]:
        return {"name": self.machine, "code": self.code, "replayed": len(self.batches),
                "differ": self.differ, "note": self.note or None,
                "batches": [b.to_json(names) for b in self.batches]}


def _party(v: Any, names: Any) -> Any:
    if type(v) is bytes:
        return names(v) or v.hex()
    if type(v) is tuple:
        return [_party(x, names) for x in v]
    return v


# ---------------------------------------------------------------------------------------
# Recording (the runtime's recorder: called after every step of its loop)
# ---------------------------------------------------------------------------------------


def recorder(rt: Any) -> Any:
    """The runtime's step recorder: batches applied to machines bound to words go into
    ``rt.dirty.replay`` (committed with the step). Costs one pass over the step's events."""
    applied, created = events.Applied, events.Created

    def record(before: Network, after: Network, evs: list) -> None:
        for e in evs:
            if type(e) is not applied or type(e.dest) is not bytes or e.batch is None:
                continue
            dest = e.dest
            m = before.machines.get(dest)
            if m is None or not m.behavior.startswith(PREFIX):
                continue
            outs: tuple = ()
            new_state = None
            if e.ok:
                outs = tuple((c.dest, c.batch.messages) for c in evs
                             if type(c) is created and c.chan[0] == dest and c.batch is not None)
                a = after.machines.get(dest)
                new_state = a.state if a is not None else m.state
            rt.dirty.replay.append((e.at, e.chan, e.seq, dest, m.behavior, e.ok,
                                    str(e.failure) if e.failure is not None else "",
                                    m.state, e.batch, new_state, outs))

    return record


def read_rows(path: Path, dest: bytes, last: int) -> list[tuple]:
    """The newest ``last`` replay rows of ``dest``, oldest first (own read-only
    connection: the writer thread keeps the store's)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT at, chan, seq, behavior, ok, failure, before, batch, after, "
                          "outputs FROM replay WHERE dest = ? ORDER BY id DESC LIMIT ?",
                          (dest, last)).fetchall()
    except sqlite3.OperationalError:  # a store from before the replay table
        rows = []
    finally:
        db.close()
    return rows[::-1]


# ---------------------------------------------------------------------------------------
# The dry run
# ---------------------------------------------------------------------------------------


def _flat(groups: tuple) -> tuple:
    return tuple(o for _, msgs in groups for o in msgs)


async def peek(host: Host, machine: str, new: str | int, *, last: int = LAST_DEFAULT,
               word: str | None = None, branch: str | None = None) -> PeekReport:
    """Replay ``machine``'s newest ``last`` recorded batches with ``new`` (a version id of
    the dictionary, or source text of ``word``), commit nothing, and report the
    differences. See the module docstring; ``host.live.peek`` calls this."""
    if type(last) is not int or not 1 <= last <= REPLAY_PER_MACHINE_MAX:
        raise UsageError(f"last is 1 to {REPLAY_PER_MACHINE_MAX} (batches kept per machine)")
    path = host.store.path
    if path is None:
        raise PeekRefused("an in-memory host keeps no batch history to replay: open the "
                          "host on a store file")
    addr = host.address(machine)
    d = host.live.dictionary
    bound = host.live.bindings().get(machine)
    current = host.record(machine).behavior  # evicted machines too (from the store)
    parsed = parse_name(bound[3]) if bound is not None else parse_name(current)
    if type(new) is int and type(new) is not bool:
        v = d.version(new)
        use_branch = branch or (parsed[0] if parsed else v.branch)
        recipe = d.recipe(use_branch, v.word, version=v.id)
        name = behavior_name(use_branch, v.word, v.id)
        code = f"version {v.id} of {v.word}"
    elif type(new) is str:
        w = word or (parsed[1] if parsed else None)
        if w is None:
            raise PeekRefused(f"{machine} is not bound to a word: name the word the source "
                              "is a version of (word=...), or give a version id")
        use_branch = branch or (parsed[0] if parsed else "main")
        recipe = d.recipe_source(use_branch, w, new)  # CompileError: the compiler's message
        name = f"peek:{use_branch}/{w}#{hashlib.sha256(new.encode()).hexdigest()[:16]}"
        code = f"source of {w} (not stored)"
    else:
        raise UsageError("peek takes a version id (int) or the source text (str)")
    pool = host._pool
    if pool is None:  # inline: the host's batches run here, and so does the peek
        return await _replay(host, machine, addr, path, last, code, recipe.load(), None)
    # Isolated workers: the code loads and runs in the machine's domain's worker only.
    temporary = name not in pool.behaviors
    pool.load(name, recipe, pool.domain_of(addr))  # DictionaryError if it does not load
    try:
        def runner(net: Network, a: bytes, rec: Any, fn: Any, msgs: list, plain: bool) -> Any:
            return pool.run(net, a, replace_fields(rec, behavior=name), fn, msgs, plain)

        return await _replay(host, machine, addr, path, last, code, in_worker(name), runner)
    finally:
        if temporary:  # later workers do not load it; running ones keep it until replaced
            pool.behaviors.pop(name, None)


async def _replay(host: Host, machine: str, addr: bytes, path: Path, last: int, code: str,
                  fn: Any, runner: Any) -> PeekReport:
    await host.flush()
    rows = await asyncio.to_thread(read_rows, path, addr, last)
    note = ""
    if not rows:
        note = (f"no batches of {machine} are recorded: only batches that ran while it was "
                "bound to a word are kept for peek")
    net = host.network
    env = host._rt.env
    keys = net.keys
    out: list[PeekBatch] = []
    carry: Any = None  # the new version's state after the previous batch
    prev_after: bytes | None = None
    for at, chan_b, seq, behavior, ok, failure, before_b, batch_b, after_b, outs_b in rows:
        before_b = bytes(before_b)
        after_blob = bytes(after_b) if after_b is not None else before_b
        before = strip(decode(before_b), addr, keys)
        committed = strip(decode(after_blob), addr, keys)
        b = decode(bytes(batch_b))
        b = replace_fields(b, messages=strip(b.messages, b.dest, keys))
        chained = carry is not None and prev_after == before_b
        start_state = carry if chained else before
        r, groups = nw.peek_batch(net, env, addr, fn, start_state, b, runner)
        peek_state = r.state if r.ok else start_state
        committed_outs = _flat(decode(bytes(outs_b)))
        peek_outs = _flat(groups)
        state_changes, cut1 = diff(committed, peek_state)
        outs_changes, cut2 = diff(committed_outs, peek_outs)
        state_eq = not state_changes and not cut1
        outs_eq = encode(committed_outs) == encode(peek_outs)
        out.append(PeekBatch(
            seq=seq, chan=decode(bytes(chan_b)), at=at, behavior=behavior,
            committed_ok=bool(ok), committed_failure=failure, peek_ok=r.ok,
            peek_failure=str(r.failure) if r.failure is not None else "",
            start="peek" if chained else "committed", state_equal=state_eq,
            outputs_equal=outs_eq, state_changes=state_changes,
            outputs_changes=outs_changes if not outs_eq else [], changes_cut=cut1 or cut2,
            committed_outputs=committed_outs, peek_outputs=peek_outs))
        carry, prev_after = peek_state, after_blob
    return PeekReport(machine, code, out, note)
