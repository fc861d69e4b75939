"""The ``avm`` command: run networks in the deterministic simulator.

This is the I/O shell around the pure core: it reads a user's module, builds a
:class:`~avm.Sim`, steps it, and prints what happened. Everything it prints is a function
of the target, the seed and the options, so the same command line prints the same text;
that is what makes the "reproduce with" line of a failure trustworthy.

Exit codes: 0 the run finished (quiescent or out of steps), 1 an invariant failed,
2 the command or the user's code is wrong (bad option, missing file, no build function,
an exception while building). Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import __version__
from .core.codec import encode
from .core.errors import AvmError
from .core.network import Faults, events, quiescent
from .core.sim import InvariantViolation, Sim, format_event, parse_faults
from .core.values import SUBSTRUCTURAL_TYPES, Map, _record_fields

__all__ = ["main"]

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_USAGE = 2

STEPS_DEFAULT = 10_000
STATE_CHARS_MAX = 300  # final states longer than this are cut in the trace
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class UserError(Exception):
    """Something the user can fix: a message for them, and whether a traceback helps."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

_MAIN_EPILOG = """\
examples:
  avm sim examples/bank.py --seed 1              run the bank example, print a trace
  avm sim examples.bank --seed 7 --quiet         same, by module name, summary only
  avm sim examples/bank.py --faults all --seed 3 with loss, duplication, delay, crashes
  avm sim --help                                 everything about the simulator
  avm demo                                       a durable host with the examples running
  avm host run --store app.avm --app examples/counter.py
  avm store check app.avm                        integrity check, decode every state
  avm version

The network between hosts and the web page are not built yet.
"""

_SIM_DESCRIPTION = """\
Run a network of machines in the deterministic simulator.

TARGET is a Python file (examples/bank.py) or a dotted module name (examples.bank,
mypkg.app). The module defines a build function, by default `build`, that the simulator
calls as build(sim) with a fresh avm.Sim. It spawns machines, sends the first messages
and may register invariants with sim.invariant(fn); pick another function with
TARGET:NAME.

Hosts: the simulated network starts with the hosts named in the module's HOSTS
(a tuple of names, default ("h0",)) or in --hosts. Faults act only *between* hosts, so a
one-host network is never faulted; build can spread machines with
sim.spawn(..., host=name) over sorted(sim.net.hosts).

The run stops when the network is quiescent or after --steps steps. Invariants are
checked after every step; the first failure stops the run, prints the command that
reproduces it exactly, and exits with status 1.
"""

_SIM_EPILOG = """\
faults (--faults SPEC, comma-separated; probabilities in [0, 1], ranges in ticks):
  loss=P       lose a transmission between hosts
  dup=P        deliver a transmission twice
  corrupt=P    corrupt a transmission (refused by the receiver's check)
  delay=A-B    delay each transmission A..B ticks (so transmissions reorder)
  crash=P      per step: crash one host, down for down=A-B ticks
  partition=P  per step: cut one link, for cut=A-B ticks
  all          loss=0.05,dup=0.05,corrupt=0.02,delay=1-20,crash=0.002,partition=0.002
  none         no faults (the default)
The delivery protocol (sequence numbers, acks, retries) hides these faults from
machines: they delay batches but never lose, duplicate or reorder them.

examples:
  avm sim examples/bank.py --seed 1
  avm sim examples/counter.py:build --seed 1 --steps 200
  avm sim examples.chat --seed 42 --hosts h0,h1,h2 --faults loss=0.1,delay=1-20 --quiet
  avm sim myapp/net.py --faults all --seed 9 --debug

exit status: 0 finished, 1 an invariant failed, 2 bad command line or error in user code.
"""


def _faults_arg(spec: str) -> str:
    """Check a --faults spec early, so a typo is a usage error, not a crash mid-run."""
    try:
        parse_faults(spec)
    except AvmError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec


def _hosts_arg(text: str) -> tuple[str, ...]:
    names = tuple(h.strip() for h in text.split(","))
    if not names or any(not h for h in names):
        raise argparse.ArgumentTypeError("use comma-separated host names, as in h0,h1,h2")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"host names repeat in {text!r}")
    return names


def _nonnegative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative")
    return n


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="avm", formatter_class=fmt, epilog=_MAIN_EPILOG,
        description=(
            "avm: networks of Abstract Virtual Machines. A machine is a pure step function\n"
            "step(message, state) -> (outputs, new_state) plus its state; machines talk\n"
            "only through capability-addressed, transactional message batches."),
    )
    parser.add_argument("--version", action="version", version=f"avm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sim = sub.add_parser(
        "sim", help="run a network in the deterministic simulator", formatter_class=fmt,
        description=_SIM_DESCRIPTION, epilog=_SIM_EPILOG)
    sim.add_argument("target", metavar="TARGET[:NAME]",
                     help="file.py or dotted.module, optionally :build_function (default build)")
    sim.add_argument("--seed", type=_nonnegative, default=0,
                     help="seed of the run; same seed, same trace (default 0)")
    sim.add_argument("--steps", type=_nonnegative, default=STEPS_DEFAULT,
                     help=f"stop after this many steps (default {STEPS_DEFAULT})")
    sim.add_argument("--faults", type=_faults_arg, default=None, metavar="SPEC",
                     help="faults between hosts, e.g. loss=0.1,dup=0.05,delay=1-20 or all")
    sim.add_argument("--hosts", type=_hosts_arg, default=None, metavar="H0,H1,...",
                     help="simulated hosts (default: the module's HOSTS, else h0)")
    sim.add_argument("--quiet", "-q", action="store_true",
                     help="print only a summary, not the trace and final states")
    sim.add_argument("--debug", action="store_true",
                     help="show full Python tracebacks for errors in user code")

    from .host import cli as host_cli  # the host's commands: store, host, demo

    host_cli.add_parsers(sub)
    sub.add_parser("version", help="print the avm version",
                   description="Print the installed avm version.",
                   epilog="example:\n  avm version", formatter_class=fmt)
    return parser


def _host_commands() -> tuple[str, ...]:
    from .host import cli as host_cli

    return host_cli.COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``avm`` command; returns the exit status instead of exiting."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        if args.command == "sim":
            return _cmd_sim(args)
        if args.command in _host_commands():
            from .host import cli as host_cli

            return host_cli.run(args)
        if args.command == "version":
            print(f"avm {__version__} (Python {sys.version.split()[0]})")
            return EXIT_OK
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("avm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `avm sim ... | head`: the reader left; stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


# ---------------------------------------------------------------------------------------
# Loading the user's module
# ---------------------------------------------------------------------------------------


def split_target(target: str) -> tuple[str, str]:
    """``"examples/bank.py:build"`` -> ``("examples/bank.py", "build")``."""
    where, sep, name = target.rpartition(":")
    if sep and name.isidentifier() and where:
        return where, name
    return target, "build"


def _looks_like_file(where: str) -> bool:
    return where.endswith(".py") or os.sep in where or "/" in where or os.path.isfile(where)


def load_module(where: str) -> ModuleType:
    """Import a file path or a dotted module name, with clear errors for the user."""
    if _looks_like_file(where):
        return _load_file(where)
    if not all(part.isidentifier() for part in where.split(".")):
        raise UserError(
            f"{where!r} is neither a Python file nor a module name; give a path such as "
            "examples/bank.py or a module such as examples.bank")
    # Like `python -m`, look in the current directory first.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and (where == e.name or where.startswith(e.name + ".")):
            raise UserError(
                f"no module named {where!r} (looked in {os.getcwd()} and the installed "
                "packages); check the name, or give the file path instead") from None
        raise UserError(f"importing {where} failed: {_describe(e)}", e) from None
    except Exception as e:
        raise UserError(f"importing {where} failed: {_describe(e)}", e) from None


def _load_file(where: str) -> ModuleType:
    path = Path(where)
    if not path.exists():
        raise UserError(f"no such file: {where} (current directory: {os.getcwd()})")
    if not path.is_file():
        raise UserError(f"{where} is not a file; give a .py file or a dotted module name")
    path = path.resolve()
    # Like `python file.py`, the file's own folder is importable (for helper modules).
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem if path.stem.isidentifier() else "avm_target"
    old = sys.modules.get(name)
    if old is not None and getattr(old, "__file__", None) != str(path):
        name = f"avm_target_{abs(hash(str(path)))}"  # never shadow a real module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load {where} as Python source")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and records look their module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise UserError(f"syntax error in {where}, line {e.lineno}: {e.msg}", e) from None
    except Exception as e:
        del sys.modules[name]
        raise UserError(f"running {where} failed: {_describe(e)}", e) from None
    return module


def find_build(module: ModuleType, where: str, name: str) -> Callable[[Sim], Any]:
    fn = getattr(module, name, None)
    if fn is None:
        funcs = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        hint = f" It defines: {', '.join(funcs)}." if funcs else ""
        raise UserError(
            f"{where} has no function {name!r}. Define `def {name}(sim): ...` that spawns "
            f"the machines, or name another function as {where}:FUNCTION.{hint}")
    if not callable(fn):
        raise UserError(f"{where}:{name} is a {type(fn).__name__}, not a function build(sim)")
    return fn


def module_hosts(module: ModuleType, where: str) -> tuple[str, ...]:
    hosts = getattr(module, "HOSTS", ("h0",))
    if isinstance(hosts, str) or not isinstance(hosts, (tuple, list)) or not hosts or not all(
            isinstance(h, str) and h for h in hosts):
        raise UserError(f"{where}: HOSTS must be a non-empty tuple of host names, "
                        f"like ('h0', 'h1'); got {hosts!r}")
    return tuple(hosts)


def _describe(e: BaseException) -> str:
    """``ZeroDivisionError: division by zero (at bank.py:12 in build)``: no traceback."""
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    tb = traceback.extract_tb(e.__traceback__)
    user = [f for f in tb if not f.filename.startswith(_PACKAGE_DIR)
            and "importlib" not in f.filename]
    if user:
        f = user[-1]
        text += f" (at {_short_path(f.filename)}:{f.lineno} in {f.name})"
    return text


def _short_path(p: str) -> str:
    try:
        return os.path.relpath(p)
    except ValueError:
        return p


# ---------------------------------------------------------------------------------------
# avm sim
# ---------------------------------------------------------------------------------------


def _reproduce(args: argparse.Namespace, steps: int) -> str:
    cmd = ["avm", "sim", args.target, "--seed", str(args.seed), "--steps", str(steps)]
    if args.hosts:
        cmd += ["--hosts", ",".join(args.hosts)]
    if args.faults:
        cmd += ["--faults", args.faults]
    return " ".join(shlex.quote(c) for c in cmd)


def _fail(args: argparse.Namespace, err: UserError) -> int:
    print(f"avm: error: {err}", file=sys.stderr)
    if args.debug and err.cause is not None:
        traceback.print_exception(err.cause, file=sys.stderr)
    elif err.cause is not None:
        print("avm: run with --debug for the full traceback", file=sys.stderr)
    return EXIT_USAGE


def _cmd_sim(args: argparse.Namespace) -> int:
    where, name = split_target(args.target)
    try:
        module = load_module(where)
        build = find_build(module, where, name)
        hosts = args.hosts or module_hosts(module, where)
    except UserError as e:
        return _fail(args, e)

    faults: Faults = parse_faults(args.faults or "none")
    sim = Sim(seed=args.seed, hosts=hosts, faults=faults)
    out = sys.stdout
    tally = _Tally()
    try:
        try:
            build(sim)
        except InvariantViolation:
            raise
        except Exception as e:
            raise UserError(f"{where}:{name}(sim) failed: {_describe(e)}", e) from None
        if faults.any and len(sim.net.hosts) < 2:
            print("avm: note: faults act between hosts and this network has one host, so "
                  "none will be injected; define HOSTS in the module or pass --hosts h0,h1",
                  file=sys.stderr)
        if not args.quiet:
            print(f"# {_reproduce(args, args.steps)}", file=out)
            print(f"# hosts: {', '.join(sorted(sim.net.hosts))}; "
                  f"faults: {args.faults or 'none'}", file=out)
        for ev in sim.trace:
            tally.add(ev)
            if not args.quiet:
                print(format_event(sim.net, ev), file=out)
        done = False
        while not done and sim.steps < args.steps:
            mark = len(sim.trace)
            try:
                evs = sim.step()
            except InvariantViolation:
                # The failing step's events were logged before its invariants ran.
                for ev in sim.trace[mark:]:
                    tally.add(ev)
                    print(format_event(sim.net, ev), file=out)
                raise
            except Exception as e:
                raise UserError(f"the simulation failed at step {sim.steps + 1}: "
                                f"{_describe(e)}", e) from None
            for ev in evs:
                tally.add(ev)
                if not args.quiet:
                    print(format_event(sim.net, ev), file=out)
            done = len(evs) == 1 and type(evs[0]) is events.Idle
    except InvariantViolation as e:
        out.flush()
        print(f"avm: invariant {e.name!r} failed at step {sim.steps} (seed {sim.seed}): "
              f"{e.detail}", file=sys.stderr)
        print(f"reproduce with:\n  {_reproduce(args, sim.steps)}", file=sys.stderr)
        if args.debug:
            traceback.print_exception(e, file=sys.stderr)
        return EXIT_VIOLATION
    except UserError as e:
        return _fail(args, e)

    if not args.quiet:
        _print_states(sim, out)
    _print_summary(sim, tally, done, out)
    return EXIT_OK


class _Tally:
    """Counts the faults the run injected, from its events (the stats lack duplicates)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, ev: Any) -> None:
        t = type(ev)
        if t is events.Wire:
            key = {"lost": "lost", "duplicated": "duplicated",
                   "corrupt-refused": "corrupted"}.get(ev.what)
        elif t is events.Host:
            key = None if ev.up else "crashes"
        elif t is events.Cut:
            key = "partitions"
        else:
            key = None
        if key:
            self.counts[key] = self.counts.get(key, 0) + 1


def show(v: Any) -> str:
    """``repr`` with every Map in canonical key order, so the text is the same in every process.

    ``Map.__repr__`` follows the map's hash order, and Python randomises string hashes
    per process (PYTHONHASHSEED); printing that would break "same seed, same output".
    """
    t = type(v)
    if t is tuple:
        inner = ", ".join(show(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if t is Map:
        keys = sorted(v, key=_canonical_key)
        return "Map({" + ", ".join(f"{show(k)}: {show(v[k])}" for k in keys) + "})"
    if t in SUBSTRUCTURAL_TYPES:
        return f"{t.__name__}({show(v.value)})"
    names = _record_fields(t)
    if names is not None:
        return f"{t.__qualname__}({', '.join(f'{f}={show(getattr(v, f))}' for f in names)})"
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        fields = ", ".join(f"{f.name}={show(getattr(v, f.name))}"
                           for f in dataclasses.fields(v) if f.repr)
        return f"{t.__qualname__}({fields})"
    return repr(v)


def _canonical_key(k: Any) -> tuple[int, bytes]:
    """The order of keys in the canonical encoding: length first, then bytewise."""
    try:
        b = encode(k)
    except AvmError:
        b = repr(k).encode()
    return (len(b), b)


def _print_states(sim: Sim, out: Any) -> None:
    print("final states:", file=out)
    for name in sorted(sim.net.names):
        m = sim.machine(name)
        text = show(m.state)
        if len(text) > STATE_CHARS_MAX:
            text = text[: STATE_CHARS_MAX - 3] + "..."
        status = "" if m.status == "running" else f", {m.status}"
        print(f"  {name} ({m.host}{status}): {text}", file=out)


def _print_summary(sim: Sim, tally: _Tally, done: bool, out: Any) -> None:
    st = sim.stats()
    drops = sum(v for k, v in st.items() if k.startswith("drop."))
    faults = ", ".join(f"{tally.counts.get(k, 0)} {k}" for k in
                       ("lost", "duplicated", "corrupted", "crashes", "partitions"))
    if done or quiescent(sim.net):
        end = "quiescent"
    else:
        end = f"still busy after {sim.steps} steps (raise --steps to go on)"
    print(f"seed {sim.seed}: {sim.steps} steps, simulated time t={sim.net.now}, {end}", file=out)
    print(f"batches: {st.get('batch.ok', 0)} ok, {st.get('batch.failed', 0)} failed, "
          f"{st.get('batch.timeout', 0)} timed out; messages stepped: {st.get('steps', 0)}",
          file=out)
    print(f"drops: {drops}" + (" (" + ", ".join(
        f"{k[5:]} {v}" for k, v in sorted(st.items()) if k.startswith("drop.")) + ")"
        if drops else ""), file=out)
    print(f"faults injected: {faults}", file=out)
    print(f"delivery: {st.get('wire.sent', 0)} transmissions, {st.get('wire.retry', 0)} "
          f"retries, {st.get('wire.duplicate-refused', 0)} duplicates refused", file=out)
    n = len(sim._invariants)
    print(f"invariants: {n} checked after every step, none failed", file=out)
