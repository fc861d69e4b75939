"""Isolated steps: one worker process per trust domain, with time and memory budgets.

    "a Python step can walk its interpreter (frames, gc, globals), so no step runs in a
    process that holds another trust domain's keys or states." (DESIGN section 8)

A machine belongs to one *trust domain* (its owner), named when it is spawned
(``Host.spawn(..., domain="alice")``; ``"default"`` otherwise) and kept in the store.
With ``avm.host.open(..., isolation="workers")`` the host sets the core's hook
``Env.batch_runner`` to :meth:`Pool.run`: the core picks, authenticates and commits
every batch as always, and only the fold of the step over the messages
(:func:`avm.core.machine.run_batch`, the same function) happens in the domain's worker.

What a worker gets, per batch: the behavior's name, the machine's address, the
machine's key versions (it needs them: a ``Self`` in the state seals with them), the
encoded state and the encoded opened messages. Nothing else crosses: the worker is
started with ``spawn`` (a fresh interpreter, never a fork of the host, which would copy
every key and state), imports the host's behaviors by reference, and holds only what
its own domain's batches brought.

What comes back is *not trusted*: it is canonical bytes (never a pickle), decoded with
the bounded decoder (so it is made of values), every ``Self`` of the machine is bound
again to its keys in the host, and the host checks again that the batch as a whole
conserved its substructural items (:func:`recheck`): capabilities and sealed values by
their ciphertext, wrappers (``Linear``, ``Affine``, ``Relevant``) through the worker's
*provenance* report, which says which output occurrences are which input occurrences
and which are new; the host checks that report against the values it decoded. A
result that fails the recheck fails the batch (rule ``substructural`` or ``value``).

Budgets. Each batch has ``seconds`` of wall time; the host waits for the worker with
that deadline (the event loop is blocked at most that long), then kills the worker,
starts a new one for the next batch, and fails the batch as ``timeout``: the hard
deadline of rule 8, so it is not retried. The worker runs under ``RLIMIT_AS`` of
``memory_bytes``; a step that runs out fails its batch as ``timeout`` too (the detail
says memory), and its worker is replaced. Other domains' workers are not touched.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import multiprocessing.connection
import pickle
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..core.caps import Capability, Keyring, SealingKey, unseal_context
from ..core.codec import decode, encode
from ..core.conserve import strip
from ..core.errors import AvmError, SubstructuralError, UsageError
from ..core.machine import (
    PUBLIC_REASONS,
    BatchResult,
    Failure,
    Message,
    _check_sizes,
    capability_problem,
    run_batch,
    safe_text,
)
from ..core.values import (
    NO_COPY,
    NO_DROP,
    Affine,
    Linear,
    Relevant,
    check_conservation,
    item_identity,
    substructural_items,
)
from .dictionary import DictionaryError, Recipe

__all__ = ["Pool", "recheck", "DEFAULT_DOMAIN", "SECONDS_DEFAULT", "MEMORY_BYTES_DEFAULT"]

DEFAULT_DOMAIN = "default"
#: Wall time one batch may take in a worker (the hard deadline of rule 8).
SECONDS_DEFAULT = 10.0
#: Address space of one worker (RLIMIT_AS): the interpreter and avm take ~150 MB of it.
MEMORY_BYTES_DEFAULT = 1 << 30
#: How long a new worker may take to start (import avm and the behaviors).
START_SECONDS = 60.0

_WRAPPERS = (Linear, Affine, Relevant)


# ---------------------------------------------------------------------------------------
# The worker process
# ---------------------------------------------------------------------------------------


def _provenance(ins: list, outs: list) -> tuple:
    """Which output wrapper occurrences are which input ones, grouped by their encoding.

    Returns ``((encoding, counts, fresh), ...)``: for each group of equal wrappers, how
    many times each input occurrence appears among the outputs (sorted: equal wrappers
    are interchangeable), and how many outputs are new. Object identity is what the
    core's check counts by; it does not survive encoding, so it is reported this way.
    """
    groups: dict[bytes, tuple[list, list]] = {}
    for x in ins:
        if type(x) in _WRAPPERS:
            groups.setdefault(encode(x), ([], []))[0].append(x)
    for x in outs:
        if type(x) in _WRAPPERS:
            groups.setdefault(encode(x), ([], []))[1].append(x)
    out = []
    for e, (gi, go) in sorted(groups.items()):
        ids: dict[int, int] = {}
        for x in gi:
            ids.setdefault(id(x), 0)
        fresh = 0
        for y in go:
            if id(y) in ids:
                ids[id(y)] += 1
            else:
                fresh += 1
        counts = tuple(sorted(ids[id(x)] for x in gi))
        out.append((e, counts, fresh))
    return tuple(out)


def _output_items(state: Any, outputs: tuple) -> list:
    """The substructural occurrences of a batch's outputs, as run_batch counts them."""
    items = substructural_items(state)
    for cap, content in outputs:
        if cap.kind:
            items.append(cap)
        for h in cap._held:
            items.extend(substructural_items(h))
        items.extend(substructural_items(content))
    return items


def _serve(conn: Any, behaviors: dict[str, Any], memory_bytes: int) -> None:
    """The worker's loop: one request, one answer, until the pipe closes.

    A request is a batch (a pickle) or ``b"L"`` + a pickled ``(name, Recipe)``: a
    dictionary word to load here (its code runs in the worker, never in the host).
    """
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on this platform
        pass
    if type(behaviors) is tuple:  # _boot: app files to load before the table unpickles
        _, files, blob = behaviors
        for name, path in files:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is not None and spec.loader is not None:
                mod = importlib.util.module_from_spec(spec)
                sys.modules[name] = mod
                spec.loader.exec_module(mod)
        behaviors = pickle.loads(blob)  # noqa: S301 - from the host
    table = {n: _loaded(b) for n, b in behaviors.items()}
    conn.send_bytes(b"ready")
    while True:
        try:
            req = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if req[:1] == b"L":
            name, recipe = pickle.loads(req[1:])  # noqa: S301 - from the host
            try:
                table[name] = recipe.load()
            except BaseException as e:  # noqa: B036 - the answer must always go back
                conn.send_bytes(b"E" + f"{e}"[:2000].encode("utf-8", "replace"))
                continue
            conn.send_bytes(b"ok")
            continue
        conn.send_bytes(_answer(req, table))


def _loaded(b: Any) -> Callable:
    """A behavior of the table: a step, or a dictionary Recipe loaded now. One that
    fails to load (it loaded in another worker, so its code must depend on where it
    runs) fails its batches instead of the worker."""
    if not isinstance(b, Recipe):
        return b
    try:
        return b.load()
    except BaseException as e:  # noqa: B036 - a word's code may raise anything
        text = f"{b.word} failed to load in its worker: {e}"[:500]

        def unloadable(msg: Any, state: Any) -> Any:
            raise AvmError(text)
        return unloadable


def _answer(req: bytes, behaviors: dict[str, Callable]) -> bytes:
    name, addr, versions, state_blob, msgs_blob, plain = pickle.loads(req)  # noqa: S301 - from the host
    keys = {addr: versions}
    try:
        state = strip(decode(state_blob), addr, keys)
        msgs = [Message(c, x) for c, x in strip(decode(msgs_blob), addr, keys)]
        r = run_batch(behaviors[name], state, msgs, plain_messages=plain)
        if r.ok:
            ins = substructural_items(state)
            for m in msgs:
                ins.extend(substructural_items(m.context))
                ins.extend(substructural_items(m.content))
            prov = _provenance(ins, _output_items(r.state, r.outputs))
            return encode(("ok", r.state, r.outputs, r.steps, prov))
        f = r.failure or Failure("internal", "failed")
        rule = "timeout" if f.error_type == "MemoryError" else f.rule
        detail = ("the step ran out of the worker's memory budget" if rule != f.rule
                  else f.detail)
        return encode(("fail", rule, detail, f.index, f.error_type, f.path))
    except MemoryError:
        return encode(("fail", "timeout", "the worker ran out of its memory budget", None,
                       "MemoryError", ""))
    except BaseException as e:  # noqa: B036 - the answer must always go back
        return encode(("fail", "internal", f"the worker could not run the batch: {e!r}"[:500],
                       None, type(e).__name__, ""))


# ---------------------------------------------------------------------------------------
# The host side
# ---------------------------------------------------------------------------------------


def _boot(behaviors: dict[str, Any]) -> tuple:
    """What a new worker is given: the behavior table pickled, after the app modules
    that ``avm host run --app FILE.py`` loaded from files (``avm_app_*``, not importable
    by name in a fresh interpreter), so steps defined there can run in workers."""
    files = sorted((n, m.__file__) for n, m in list(sys.modules.items())
                   if n.startswith("avm_app_") and getattr(m, "__file__", None))
    return ("boot", files, pickle.dumps(behaviors))


class _Worker:
    def __init__(self, ctx: Any, domain: str, behaviors: dict[str, Callable],
                 memory_bytes: int, target: Callable = _serve) -> None:
        self.domain = domain
        ours, theirs = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=target, args=(theirs, _boot(behaviors), memory_bytes),
                                name=f"avm-worker-{domain}", daemon=True)
        self.proc.start()
        theirs.close()
        self.conn = ours
        if not ours.poll(START_SECONDS) or ours.recv_bytes() != b"ready":
            self.kill()
            raise AvmError(f"the worker for domain {domain!r} did not start")

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class Pool:
    """One worker per trust domain; see the module docstring.

    ``behaviors``: the host's behavior table (name -> step), sent to each worker by
    reference (pickled: module-level functions and ``avm.Behavior`` objects of importable
    modules). ``domains``: address -> domain, as the store keeps it. ``inline``: addresses
    of the host's own machines, whose steps are the host's code and run in the host.
    """

    def __init__(self, behaviors: Mapping[str, Callable], domains: dict[bytes, str] | None = None,
                 *, seconds: float = SECONDS_DEFAULT, memory_bytes: int = MEMORY_BYTES_DEFAULT,
                 inline: set[bytes] | None = None) -> None:
        if not seconds > 0 or memory_bytes < (64 << 20):
            raise UsageError("a worker needs seconds > 0 and memory_bytes >= 64 MiB")
        self.behaviors: dict[str, Any] = dict(behaviors)
        try:
            pickle.dumps(self.behaviors)
        except Exception as e:
            raise UsageError(
                f"isolated workers import the behaviors by reference, and one cannot be: "
                f"{e}; define step functions at module level of an importable module") from e
        self.domains: dict[bytes, str] = dict(domains or {})
        self.inline: set[bytes] = set(inline or ())
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self._ctx = multiprocessing.get_context("spawn")
        self.workers: dict[str, _Worker] = {}
        #: the worker's main function (tests replace it with a lying one)
        self.target: Callable = _serve
        #: per domain: workers started, killed for a budget, batches run
        self.counters: dict[str, int] = {"started": 0, "killed": 0, "batches": 0,
                                         "rejected": 0}

    def add(self, name: str, fn: Callable) -> None:
        """A behavior registered after the workers started: they start again with it."""
        known = self.behaviors.get(name)
        if known is fn or isinstance(known, Recipe):  # a word, loaded by ``load``
            return
        try:
            pickle.dumps(fn)
        except Exception as e:
            raise UsageError(f"behavior {name!r} cannot be sent to a worker: {e}") from e
        self.behaviors[name] = fn
        self.close()

    def load(self, name: str, recipe: Recipe, domain: str = DEFAULT_DOMAIN) -> None:
        """Load a dictionary word as behavior ``name`` in the workers, checking first in
        ``domain``'s (the machine's that will run it): its code runs there, never in the
        host. Raises DictionaryError with the word's own error if it does not load;
        then nothing is registered. Running workers keep running (no restart)."""
        if self.behaviors.get(name) == recipe:
            return
        first = self.worker(domain)
        for w in [first, *(w for w in self.workers.values() if w is not first)]:
            err = self._load_in(w, name, recipe)
            if err is not None:
                if w is first:
                    raise DictionaryError(err)
                self._drop(w.domain)  # it starts again with the table, and fails that batch
        self.behaviors[name] = recipe

    def _load_in(self, w: _Worker, name: str, recipe: Recipe) -> str | None:
        try:
            w.conn.send_bytes(b"L" + pickle.dumps((name, recipe)))
            if not w.conn.poll(self.seconds):
                self._drop(w.domain)
                return f"{recipe.word} did not load within {self.seconds} s"
            got = w.conn.recv_bytes()
        except (EOFError, OSError):
            self._drop(w.domain)
            return f"{recipe.word}: the worker stopped while loading it"
        return None if got == b"ok" else got[1:].decode("utf-8", "replace")

    def domain_of(self, address: bytes) -> str:
        return self.domains.get(address, DEFAULT_DOMAIN)

    def worker(self, domain: str) -> _Worker:
        w = self.workers.get(domain)
        if w is None or not w.proc.is_alive():
            if w is not None:
                w.kill()
            w = self.workers[domain] = _Worker(self._ctx, domain, self.behaviors,
                                               self.memory_bytes, self.target)
            self.counters["started"] += 1
        return w

    def _drop(self, domain: str) -> None:
        w = self.workers.pop(domain, None)
        if w is not None:
            w.kill()
            self.counters["killed"] += 1

    def close(self) -> None:
        for d in list(self.workers):
            w = self.workers.pop(d)
            w.kill()

    # -- Env.batch_runner ---------------------------------------------------------------
    def run(self, net: Any, address: bytes, record: Any, step: Callable, msgs: list,
            plain: bool) -> BatchResult:
        """Run one batch in the machine's domain's worker; what ``run_batch`` returns."""
        if address in self.inline:
            return run_batch(step, record.state, msgs, plain_messages=plain)
        domain = self.domain_of(address)
        versions = net.keys.get(address)
        vmap = {} if versions is None else dict(versions.items())
        try:
            req = pickle.dumps((record.behavior, address, vmap, encode(record.state),
                                encode(tuple((m[0], m[1]) for m in msgs)), plain))
        except AvmError as e:
            return _failed("value", f"the batch cannot be sent to a worker: {e}")
        self.counters["batches"] += 1
        try:
            w = self.worker(domain)
        except AvmError as e:
            return _failed("internal", str(e))
        t0 = time.monotonic()
        try:
            w.conn.send_bytes(req)
            ready = w.conn.poll(self.seconds)
            blob = w.conn.recv_bytes() if ready else None
        except (EOFError, OSError):
            blob = None
            ready = True
        if blob is None:
            self._drop(domain)
            if not ready:
                return _failed("timeout", f"the step ran past its budget of {self.seconds} s "
                               "(its worker was replaced)")
            return _failed("timeout", "the worker died while running the batch (out of "
                           f"its memory budget?) after {time.monotonic() - t0:.3f} s; replaced")
        r = recheck(net, address, record.state, msgs, blob)
        if r.failure is not None and r.failure.rule == "timeout":
            self._drop(domain)  # a worker that ran out of memory is not reused
        elif r.failure is not None and r.failure.error_type == "recheck":
            self.counters["rejected"] += 1
        return r


def _failed(rule: str, detail: str, index: int | None = None, etype: str = "",
            path: str = "") -> BatchResult:
    return BatchResult(False, None, (), Failure(rule, detail, index, etype, path), index or 0,
                       None)


def _lie(rule: str, detail: str) -> BatchResult:
    return _failed(rule, f"the worker's result failed the host's recheck: {detail}", None,
                   "recheck")


def recheck(net: Any, address: bytes, state: Any, msgs: list, blob: bytes) -> BatchResult:
    """Decode a worker's answer and check it again in the host; see the module docstring.

    ``state`` and ``msgs`` are the host's own inputs of the batch; ``blob`` is untrusted.
    """
    keys = net.keys
    try:
        ans = strip(decode(blob), address, keys)  # values only; binds this machine's Self
    except AvmError as e:
        return _lie("value", f"it is not a value: {e}")
    if type(ans) is not tuple or not ans or ans[0] not in ("ok", "fail"):
        return _lie("contract", "it has the wrong shape")
    if ans[0] == "fail":
        if len(ans) != 6 or type(ans[1]) is not str or type(ans[2]) is not str:
            return _lie("contract", "its failure has the wrong shape")
        _, rule, detail, index, etype, path = ans
        # Only names the host knows reach its stats and logs; text is bounded.
        rule = rule if rule in PUBLIC_REASONS else "internal"
        index = index if type(index) is int and 0 <= index < len(msgs) else None
        return _failed(rule, safe_text(detail, 1000), index,
                       safe_text(etype, 100) if type(etype) is str else "",
                       safe_text(path, 200) if type(path) is str else "")
    if len(ans) != 5 or type(ans[2]) is not tuple or type(ans[3]) is not int:
        return _lie("contract", "its result has the wrong shape")
    _, new_state, outputs, _steps, prov = ans
    steps = len(msgs)  # what run_batch reports for a batch that ran: not the worker's word
    for o in outputs:
        if type(o) is not tuple or len(o) != 2 or type(o[0]) is not Capability:
            return _lie("contract", "an output is not a (capability, content) pair")
        problem = capability_problem(o[0])
        if problem is not None:
            return _lie("contract", f"an output goes to a malformed capability: {problem}")
    # The encoding's limits for what one batch commits and sends (as run_batch checks).
    last = len(msgs) - 1
    got_sizes = _check_sizes(new_state, (), last)
    if type(got_sizes) is BatchResult:
        return _lie("value", str(got_sizes.failure))
    new_state = got_sizes
    if outputs:
        got_sizes = _check_sizes(new_state, outputs, last, of_state=False)
        if type(got_sizes) is BatchResult:
            return _lie("value", str(got_sizes.failure))
    # The census of what came in (the host's own objects) and of what goes out.
    ins = substructural_items(state)
    for m in msgs:
        ins.extend(substructural_items(m[0]))
        ins.extend(substructural_items(m[1]))
    in_bytes = {id(x): x for x in ins if type(x) not in _WRAPPERS}
    in_ids = {_ident(x) for x in in_bytes.values()}
    state_items = substructural_items(new_state)
    outs = list(state_items)
    ring = None
    for cap, content in outputs:
        if cap.kind:
            outs.append(cap)
            # A capability the step made (Self) carries its context inside: the worker
            # counted what it held; the host opens it with the machine's key to see.
            if cap.address == address and cap.commons is None and _ident(cap) not in in_ids:
                if ring is None:
                    ring = _keyring(net, address)
                try:
                    if ring is not None:
                        outs.extend(substructural_items(unseal_context(cap, ring)))
                except AvmError:
                    pass  # not ours after all: an opaque item, counted by its bytes
        outs.extend(substructural_items(content))
    # Capabilities and sealed values: by ciphertext, exactly the core's rule.
    try:
        check_conservation([("$.state_before", state), ("$.messages", tuple(msgs))],
                           [("$.state", new_state), ("$.outputs", outputs)],
                           [x for x in ins if type(x) not in _WRAPPERS],
                           [x for x in outs if type(x) not in _WRAPPERS])
    except SubstructuralError as e:
        return _lie("substructural", str(e))
    # Wrappers: by the worker's provenance, checked against the values.
    got = _groups(ins, outs)
    if type(prov) is not tuple:
        return _lie("contract", "its provenance report has the wrong shape")
    seen = set()
    for g in prov:
        if (type(g) is not tuple or len(g) != 3 or type(g[0]) is not bytes
                or type(g[1]) is not tuple or type(g[2]) is not int or g[2] < 0
                or any(type(c) is not int or c < 0 for c in g[1])):
            return _lie("contract", "its provenance report has the wrong shape")
        enc, counts, fresh = g
        have = got.get(enc)
        if have is None or enc in seen:
            return _lie("substructural", "its provenance report names a value not in the batch")
        seen.add(enc)
        n_in, n_out, kind, sample = have
        if len(counts) != n_in or sum(counts) + fresh != n_out:
            return _lie("substructural", f"its provenance report does not match the values "
                        f"for {sample!r}")
        if kind & NO_COPY and any(c > 1 for c in counts):
            return _lie("substructural", f"{sample!r} was copied")
        if kind & NO_DROP and any(c == 0 for c in counts):
            return _lie("substructural", f"{sample!r} was dropped")
    if seen != set(got):
        return _lie("substructural", "its provenance report leaves out a value of the batch")
    plain = len(outs) == len(state_items)  # nothing substructural in any output
    return BatchResult(True, new_state, outputs, None, steps, state_items, plain)


_ident = item_identity


def _keyring(net: Any, address: bytes) -> Keyring | None:
    versions = net.keys.get(address)
    ring = None
    for v in sorted(versions or (), reverse=True):
        k = SealingKey(v, versions[v])
        if ring is None:
            ring = Keyring(address, k)
        else:
            ring._keys[v] = k
    return ring


def _groups(ins: list, outs: list) -> dict[bytes, tuple[int, int, int, Any]]:
    """encoding -> (input occurrences, output occurrences, kind, one of them)."""
    g: dict[bytes, list] = {}
    for x in ins:
        if type(x) in _WRAPPERS:
            r = g.setdefault(encode(x), [0, 0, x.kind, x])
            r[0] += 1
    for x in outs:
        if type(x) in _WRAPPERS:
            r = g.setdefault(encode(x), [0, 0, x.kind, x])
            r[1] += 1
    return {e: (a, b, k, s) for e, (a, b, k, s) in g.items()}


def pid_of(pool: Pool, domain: str) -> int | None:
    """The worker process of ``domain`` (tests and operators)."""
    w = pool.workers.get(domain)
    return None if w is None else w.proc.pid

