"""The ``avm`` command: run networks in the deterministic simulator.

This is the I/O shell around the pure core: it reads a user's module, builds a
:class:`~avm.Sim`, steps it, and prints what happened. Everything it prints is a function
of the target, the seed and the options, so the same command line prints the same text;
that is what makes the "reproduce with" line of a failure trustworthy.

Exit codes: 0 the run ended as ``--until`` asked (quiescent by default), 1 an invariant
failed, 2 the command or the user's code is wrong (bad option, missing file, no build
function, an exception while building), 3 the run stopped while still busy (``--steps``
ran out first, or the network went idle with work waiting when quiescence was asked).
With ``--seeds``, the worst of the runs' codes (1 before 3). Tracebacks only with
``--debug``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import __version__
from .core.codec import encode
from .core.errors import AvmError
from .core.jsonvalue import to_json
from .core.network import Faults, events, quiescent
from .core.sim import InvariantViolation, Sim, format_event, parse_faults
from .core.values import SUBSTRUCTURAL_TYPES, Map, _record_fields

__all__ = ["main"]

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_USAGE = 2
EXIT_BUSY = 3

STEPS_DEFAULT = 10_000
STATE_CHARS_MAX = 300  # final states longer than this are cut in the trace
PROGRESS_SECONDS = 2.0  # a long run prints a progress line on stderr this often
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
  avm name serve --listen 127.0.0.1:7300         a naming DHT node (docs/naming.md)
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

exit status: 0 finished, 1 an invariant failed, 2 bad command line or error in user code,
3 stopped by --steps while still busy (see --until).
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


def _until_arg(text: str) -> str | int:
    if text in ("quiescent", "idle"):
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use quiescent, idle or a number of steps") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} steps is negative")
    return n


SEEDS_MAX = 1_000_000


def _seeds_arg(text: str) -> list[int]:
    """``0-999``, ``1,5,9``, ``0-9,100``: the seeds in the order given, each once."""
    seeds: dict[int, None] = {}
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} in --seeds: use A-B ranges or single seeds, as in 0-999 or 1,5,9"
            ) from None
        if a < 0 or b < a:
            raise argparse.ArgumentTypeError(f"{part!r} in --seeds: a range A-B needs 0 <= A <= B")
        if len(seeds) + b - a + 1 > SEEDS_MAX:
            raise argparse.ArgumentTypeError(f"--seeds {text}: more than {SEEDS_MAX:,} seeds")
        seeds.update(dict.fromkeys(range(a, b + 1)))
    return list(seeds)


def _seconds_arg(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"{text} seconds is negative")
    return x


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
    sim.add_argument("--until", type=_until_arg, default="quiescent",
                     metavar="quiescent|idle|STEPS",
                     help="when the run is over: quiescent (nothing left, the default), idle "
                          "(nothing can run) or after STEPS steps; stopping before that "
                          f"exits with status {EXIT_BUSY}")
    sim.add_argument("--seeds", type=_seeds_arg, default=None, metavar="A-B[,C...]",
                     help="run every seed listed (0-999, 1,5,9) and print a summary table; "
                          "a progress bar goes to stderr")
    sim.add_argument("--state", action="append", default=None, metavar="NAME",
                     help="print the whole final state of machine NAME (repeatable), "
                          "instead of every state cut short")
    sim.add_argument("--json", action="store_true",
                     help="print one JSON document: summary, whole states (see "
                          "docs/simulation.md for how values are rendered), the trace")
    sim.add_argument("--progress", type=_seconds_arg, default=PROGRESS_SECONDS,
                     metavar="SECONDS",
                     help=f"a progress line on stderr every SECONDS of a long run "
                          f"(default {PROGRESS_SECONDS:g}; 0: never)")
    sim.add_argument("--quiet", "-q", action="store_true",
                     help="print only a summary, not the trace and final states")
    sim.add_argument("--debug", action="store_true",
                     help="show full Python tracebacks for errors in user code")

    from .host import cli as host_cli  # the host's commands: store, host, demo

    host_cli.add_parsers(sub)
    from .naming import cli as naming_cli  # avm name: DHT node, publish, resolve

    naming_cli.add_parser(sub)
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
        if args.command == "name":
            from .naming import cli as naming_cli

            return naming_cli.run(args)
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


def _reproduce(args: argparse.Namespace, steps: int, seed: int | None = None) -> str:
    cmd = ["avm", "sim", args.target, "--seed", str(args.seed if seed is None else seed),
           "--steps", str(steps)]
    if args.until != "quiescent" and type(args.until) is not int:
        cmd += ["--until", str(args.until)]
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
    if args.seeds is not None:
        return _sweep(args, build, where, name, hosts)

    out = sys.stdout
    lines: list[str] | None = None
    if args.json:
        lines = [] if not args.quiet else None
        emit = None if lines is None else lines.append
    elif args.quiet:
        emit = None
    else:
        def emit(line: str) -> None:
            print(line, file=out)
    try:
        if emit is not None:
            emit(f"# {_reproduce(args, _limit(args))}")
            emit(f"# hosts: {', '.join(sorted(hosts))}; faults: {args.faults or 'none'}")
        res = _run(args, build, where, name, hosts, args.seed, emit, progress=True,
                   fail_emit=None if args.json else lambda line: print(line, file=out))
        states = _chosen_states(res.sim, args.state)
    except UserError as e:
        return _fail(args, e)
    code = _exit_code(res)
    if args.json:
        doc = _json_doc(args, res, states)
        if lines is not None:
            doc["trace"] = lines
        json.dump(doc, out, indent=1, sort_keys=False)
        out.write("\n")
        if res.violation is not None:
            _print_violation(args, res, sys.stderr)
        return code
    if res.violation is not None:
        out.flush()
        _print_violation(args, res, sys.stderr)
        return EXIT_VIOLATION
    if args.state:
        _print_chosen(res.sim, states, out)
    elif not args.quiet:
        _print_states(res.sim, out)
    _print_summary(res, args, out)
    if code == EXIT_BUSY:
        print(f"avm: {_end_text(res, args)}; exit status {EXIT_BUSY}", file=sys.stderr)
    return code


@dataclasses.dataclass
class _Result:
    """One run: the sim at the end, how it ended, and the invariant that failed if any."""

    sim: Sim
    end: str  # "quiescent" | "idle" | "busy" (out of --steps) | "steps" (--until N reached)
    tally: _Tally
    until: str | int = "quiescent"
    violation: InvariantViolation | None = None


def _limit(args: argparse.Namespace) -> int:
    return args.until if type(args.until) is int else args.steps


def _run(args: argparse.Namespace, build: Callable[[Sim], Any], where: str, name: str,
         hosts: tuple[str, ...], seed: int, emit: Callable[[str], None] | None,
         progress: bool = False, fail_emit: Callable[[str], None] | None = None) -> _Result:
    """Build and step one network as the options say; raises UserError for user bugs."""
    faults: Faults = parse_faults(args.faults or "none")
    sim = Sim(seed=seed, hosts=hosts, faults=faults)
    tally = _Tally()
    res = _Result(sim, "busy", tally, args.until)
    limit = _limit(args)
    meter = _Progress(args.progress) if progress and args.progress > 0 else None
    try:
        try:
            build(sim)
        except InvariantViolation:
            raise
        except Exception as e:
            raise UserError(f"{where}:{name}(sim) failed: {_describe(e)}", e) from None
        if progress and faults.any and len(sim.net.hosts) < 2:
            print("avm: note: faults act between hosts and this network has one host, so "
                  "none will be injected; define HOSTS in the module or pass --hosts h0,h1",
                  file=sys.stderr)
        for ev in sim.trace:
            tally.add(ev)
            if emit is not None:
                emit(format_event(sim.net, ev))
        while sim.steps < limit:
            mark = len(sim.trace)
            try:
                evs = sim.step()
            except InvariantViolation:
                # The failing step's events were logged before its invariants ran; they
                # are shown even with --quiet.
                show_failing = emit or fail_emit
                for ev in sim.trace[mark:]:
                    tally.add(ev)
                    if show_failing is not None:
                        show_failing(format_event(sim.net, ev))
                raise
            except Exception as e:
                raise UserError(f"the simulation failed at step {sim.steps + 1}: "
                                f"{_describe(e)}", e) from None
            for ev in evs:
                tally.add(ev)
                if emit is not None:
                    emit(format_event(sim.net, ev))
            if meter is not None:
                meter.tick(sim)
            if len(evs) == 1 and type(evs[0]) is events.Idle:
                res.end = "quiescent" if evs[0].quiescent else "idle"
                break
        else:
            if quiescent(sim.net):
                res.end = "quiescent"
            elif type(args.until) is int:
                res.end = "steps"
    except InvariantViolation as e:
        res.violation = e
    finally:
        if meter is not None:
            meter.done()
    return res


def _exit_code(res: _Result) -> int:
    if res.violation is not None:
        return EXIT_VIOLATION
    if res.end == "busy":
        return EXIT_BUSY
    if res.end == "idle" and res.until == "quiescent":
        return EXIT_BUSY
    return EXIT_OK


class _Progress:
    """A progress line on stderr for long runs: rewritten in place on a terminal, else
    one line per period; only after the first period, so short runs print nothing."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.tty = sys.stderr.isatty()
        self.start = self.last = time.monotonic()
        self.shown = False

    def tick(self, sim: Sim) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        line = (f"avm: step {sim.steps:,}, simulated t={sim.net.now}, "
                f"{len(sim.net.pending):,} batches queued, {now - self.start:.0f}s")
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown and self.tty:
            sys.stderr.write("\n")


def _chosen_states(sim: Sim, names: list[str] | None) -> list[str]:
    """The machines whose states to show: ``--state`` ones (checked), else all."""
    if not names:
        return sorted(sim.net.names)
    missing = [n for n in names if n not in sim.net.names]
    if missing:
        raise UserError(f"--state {missing[0]}: no machine of that name at the end of the run; "
                        f"machines: {', '.join(sorted(sim.net.names)) or 'none'}")
    return list(dict.fromkeys(names))


def _print_chosen(sim: Sim, names: list[str], out: Any) -> None:
    for n in names:
        m = sim.machine(n)
        status = "" if m.status == "running" else f", {m.status}"
        print(f"{n} ({m.host}{status}): {show(m.state)}", file=out)


def _print_violation(args: argparse.Namespace, res: _Result, err: Any) -> None:
    e = res.violation
    assert e is not None
    print(f"avm: invariant {e.name!r} failed at step {res.sim.steps} (seed {res.sim.seed}): "
          f"{e.detail}", file=err)
    print(f"reproduce with:\n  {_reproduce(args, res.sim.steps, res.sim.seed)}", file=err)
    if args.debug:
        traceback.print_exception(e, file=err)


def _end_text(res: _Result, args: argparse.Namespace) -> str:
    sim = res.sim
    if res.end == "quiescent":
        return "quiescent"
    if res.end == "idle":
        return ("idle: nothing can run, but batches are waiting "
                f"({len(sim.net.pending)} queued, for a suspended machine?)")
    if res.end == "steps":
        return f"stopped after {sim.steps} steps as asked (--until {args.until}), still busy"
    return f"still busy after {sim.steps} steps (raise --steps to go on)"


def _json_doc(args: argparse.Namespace, res: _Result, names: list[str]) -> dict[str, Any]:
    sim = res.sim
    v = res.violation
    return {
        "seed": sim.seed,
        "steps": sim.steps,
        "now": sim.net.now,
        "end": {"busy": "still busy", "steps": "steps reached"}.get(res.end, res.end),
        "exit": _exit_code(res),
        "until": args.until,
        "hosts": sorted(sim.net.hosts),
        "faults": args.faults or "none",
        "stats": dict(sorted(sim.stats().items())),
        "faults_injected": {k: res.tally.counts.get(k, 0) for k in _FAULT_NAMES},
        "invariants": len(sim._invariants),
        "violation": None if v is None else {
            "name": v.name, "step": sim.steps, "detail": v.detail,
            "reproduce": _reproduce(args, sim.steps, sim.seed)},
        "states": {n: _json_machine(sim, n) for n in names},
    }


def _json_machine(sim: Sim, name: str) -> dict[str, Any]:
    m = sim.machine(name)
    return {"host": m.host, "status": m.status, "behavior": m.behavior,
            "state": to_json(m.state)}


_FAULT_NAMES = ("lost", "duplicated", "corrupted", "crashes", "partitions")


# ---------------------------------------------------------------------------------------
# avm sim --seeds: many runs
# ---------------------------------------------------------------------------------------


def _sweep(args: argparse.Namespace, build: Callable[[Sim], Any], where: str, name: str,
           hosts: tuple[str, ...]) -> int:
    seeds = args.seeds
    rows: list[dict[str, Any]] = []
    bar = _Bar(len(seeds))
    try:
        for i, seed in enumerate(seeds):
            try:
                res = _run(args, build, where, name, hosts, seed, None)
                if args.state:
                    _chosen_states(res.sim, args.state)
            except UserError as e:
                bar.done()
                return _fail(args, UserError(f"seed {seed}: {e}", e.cause))
            rows.append(_row(args, res))
            bar.update(i + 1)
    finally:
        bar.done()
    out = sys.stdout
    if args.json:
        json.dump({"seeds": len(rows), "until": args.until, "runs": rows}, out, indent=1)
        out.write("\n")
    else:
        _print_table(args, rows, out)
    codes = {r["exit"] for r in rows}
    return (EXIT_VIOLATION if EXIT_VIOLATION in codes else EXIT_BUSY if EXIT_BUSY in codes
            else EXIT_OK)


def _row(args: argparse.Namespace, res: _Result) -> dict[str, Any]:
    sim = res.sim
    st = sim.stats()
    v = res.violation
    row: dict[str, Any] = {
        "seed": sim.seed, "steps": sim.steps, "now": sim.net.now,
        "end": "violation" if v is not None else
        {"busy": "still busy", "steps": "steps reached"}.get(res.end, res.end),
        "exit": _exit_code(res),
        "ok": st.get("batch.ok", 0), "failed": st.get("batch.failed", 0),
        "violation": None if v is None else {
            "name": v.name, "detail": v.detail,
            "reproduce": _reproduce(args, sim.steps, sim.seed)},
    }
    if args.state:
        row["states"] = {n: to_json(sim.state(n)) for n in dict.fromkeys(args.state)}
    return row


class _Bar:
    """Progress of a sweep on stderr: a bar on a terminal, else a line per tenth."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.every = max(1, total // 10)
        self.shown = False

    def update(self, n: int) -> None:
        if self.tty:
            width = 30
            filled = width * n // self.total
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {n}/{self.total} seeds")
        elif n % self.every == 0 or n == self.total:
            sys.stderr.write(f"avm: {n}/{self.total} seeds done\n")
        else:
            return
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown and self.tty:
            sys.stderr.write("\n")
            self.shown = False


def _print_table(args: argparse.Namespace, rows: list[dict[str, Any]], out: Any) -> None:
    ends: dict[str, list[int]] = {}
    for r in rows:
        ends.setdefault(r["end"], []).append(r["seed"])
    seeds = [r["seed"] for r in rows]
    span = (f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1))
            else ",".join(map(str, seeds[:5])) + (",..." if len(seeds) > 5 else ""))
    print(f"{len(rows)} seeds ({span}), until {args.until}:", file=out)
    print(f"  {'end':<14} {'runs':>6}  seeds", file=out)
    for end in ("quiescent", "idle", "steps reached", "still busy", "violation"):
        got = ends.get(end)
        if got:
            shown = ", ".join(map(str, got[:8])) + (", ..." if len(got) > 8 else "")
            print(f"  {end:<14} {len(got):>6}  {shown}", file=out)
    for key, label in (("steps", "steps"), ("now", "simulated time"), ("ok", "batches ok"),
                       ("failed", "batches failed")):
        vals = sorted(r[key] for r in rows)
        print(f"  {label}: min {vals[0]}, median {vals[len(vals) // 2]}, max {vals[-1]}",
              file=out)
    bad = [r for r in rows if r["exit"] != EXIT_OK]
    if bad:
        print("not finished as asked:", file=out)
    for r in bad[:20]:
        v = r["violation"]
        if v is not None:
            print(f"  seed {r['seed']}: invariant {v['name']!r} failed at step {r['steps']}: "
                  f"{v['detail']}\n    reproduce with: {v['reproduce']}", file=out)
        else:
            print(f"  seed {r['seed']}: {r['end']} after {r['steps']} steps", file=out)
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more (--json lists every run)", file=out)


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


def _print_summary(res: _Result, args: argparse.Namespace, out: Any) -> None:
    sim, tally = res.sim, res.tally
    st = sim.stats()
    drops = sum(v for k, v in st.items() if k.startswith("drop."))
    faults = ", ".join(f"{tally.counts.get(k, 0)} {k}" for k in _FAULT_NAMES)
    print(f"seed {sim.seed}: {sim.steps} steps, simulated time t={sim.net.now}, "
          f"{_end_text(res, args)}", file=out)
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
