"""The host's commands of ``avm``: ``avm store backup|check``, ``avm host run``, ``avm demo``,
``avm machine ls|state|send|ask|suspend|resume|step|stop|restart|destroy``, ``avm dict ...``,
``avm state get|edit|audit``.

Kept apart from :mod:`avm.cli` (the simulator's commands), which only registers them.
``avm machine`` talks to a running host through its HTTP control API
(:mod:`avm.host.client`), with the address and token from ``--url``/``--token`` or the
host's token file (``--store STORE`` reads ``STORE.http``; ``--token-file FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import contextlib
import json
import sys
from collections.abc import Iterator

from ..core.errors import AvmError, UsageError
from .cli_host import connect_args, host_arguments
from .store import StoreError, backup, check

__all__ = ["add_parsers", "run"]

COMMANDS = ("store", "host", "demo", "machine", "dict", "state")

_CONTENT_HELP = ("the message as a Python literal: '(\"add\", 1)', '\"get\"', "
                 "'{\"k\": 1}'; cap(\"machine\", context) is a capability to a machine")
_MACHINE_EPILOG = """\
The host must run with its HTTP API (avm host run --store STORE, avm demo). Messages and
contexts are Python literals (tuples, str, numbers, bytes, None, {...} maps);
cap("name") or cap("name", context) is a capability to the host's machine "name".

examples:
  avm machine ls --store app.avm
  avm machine state counter --store app.avm
  avm machine send counter '("add", 1)' --context '"main"' --store app.avm
  avm machine ask counter '"get"' --context '"main"' --store app.avm
  avm machine suspend counter --store app.avm
  avm machine step counter --store app.avm      # one batch of the suspended machine
  avm machine ls --url http://127.0.0.1:8080 --token TOKEN
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from .dict_cli import add_parser as add_dict
    from .state_cli import add_parser as add_state

    add_dict(sub)
    add_state(sub)
    fmt = argparse.RawDescriptionHelpFormatter
    store = sub.add_parser(
        "store", help="back up or check a host's store", formatter_class=fmt,
        description="Operate on a host's embedded store (an SQLite file and its .keys file).",
        epilog="examples:\n  avm store check host.avm\n  avm store backup host.avm copy.avm")
    ss = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    b = ss.add_parser("backup", help="copy a store with SQLite's online backup (safe while it runs)")
    b.add_argument("path", help="the store file")
    b.add_argument("dest", help="where to write the copy (must not exist)")
    c = ss.add_parser("check", help="SQLite integrity check, and decode every state and batch")
    c.add_argument("path", help="the store file")

    host = sub.add_parser(
        "host", help="run a durable host on a store", formatter_class=fmt,
        description="Run a host: its machines, from an embedded store, until Ctrl-C.",
        epilog="example:\n  avm host run --store app.avm --app examples/counter.py")
    hs = host.add_subparsers(dest="host_command", metavar="ACTION", required=True)
    r = hs.add_parser("run", help="serve a store (building each --app the first time)")
    r.add_argument("--store", required=True, help="the store file (created if missing)")
    r.add_argument("--app", action="append", default=[], metavar="MODULE",
                   help="a module (file.py or dotted.name) with behaviors and build(sim); repeatable")
    r.add_argument("--durability", choices=("full", "normal"), default="full",
                   help="full: fsync every commit (default); normal: survives kill -9 only")
    r.add_argument("--seconds", type=float, default=None, help="stop after this long")
    r.add_argument("--http", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="serve the HTTP control API here (default 127.0.0.1:0, any free port); "
                        "address and tokens go to STORE.http (mode 0600)")
    r.add_argument("--no-http", action="store_true", help="do not serve the HTTP API")
    r.add_argument("--isolation", choices=("inline", "workers"), default="inline",
                   help="inline: steps run in the host's process (default; one owner's code); "
                        "workers: one worker process per trust domain (code of several owners)")
    r.add_argument("--log", default="-", metavar="FILE",
                   help="JSON log lines to FILE (default -: stderr; 'off' for none)")
    g = r.add_argument_group("network (docs/network.md: several hosts)")
    g.add_argument("--listen", type=_hostport, default=None, metavar="IP:PORT",
                   help="accept peers here (TLS over TCP) and run a DHT node on the same "
                        "UDP port; port 0: any free one. Without it the host is alone")
    g.add_argument("--join", type=_hostport, action="append", default=[], metavar="IP:PORT",
                   help="another host's --listen address: join the DHT through it (repeatable)")
    g.add_argument("--identity", default=None, metavar="FILE",
                   help="the host's identity key (created 0600 if missing; default STORE.identity): "
                        "the host's address stays the same as long as this file does")
    g.add_argument("--ttl", type=float, default=3600.0, metavar="SECONDS",
                   help="how long the routing record lives; republished every ttl/3 (default 3600)")
    g.add_argument("--no-dht", action="store_true",
                   help="no DHT node: peers are only those that dial in")
    g.add_argument("--chaos", default=None, metavar="SPEC",
                   help="publish a fault proxy in front of the listener, e.g. "
                        "'drop=0.01,delay=0.001-0.005,seed=3' (avm.wire.faults; tests only)")

    d = sub.add_parser(
        "demo", help="start a host with the example applications and clients", formatter_class=fmt,
        description=("Start a host on an embedded store with the example applications "
                     "running and clients sending them work; prints what to type."),
        epilog="examples:\n  avm demo\n  avm demo --dir ./demo --seconds 10\n  avm demo --hosts 3")
    d.add_argument("--dir", default=None, help="folder of the store (default: a new temporary one)")
    d.add_argument("--seconds", type=float, default=None, help="stop after this long")
    d.add_argument("--http", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="serve the HTTP control API here (default 127.0.0.1:0, any free port)")
    d.add_argument("--log", default="off", metavar="FILE",
                   help="JSON log lines to FILE (- for stderr; default off)")
    d.add_argument("--hosts", type=int, default=1, metavar="N",
                   help="spread the examples over N host processes that talk over TLS and "
                        "find each other through the DHT (default 1: one host)")
    d.add_argument("--role", type=int, default=None, help=argparse.SUPPRESS)  # a child of --hosts

    m = sub.add_parser(
        "machine", help="list, read, message and control the machines of a running host",
        formatter_class=fmt, epilog=_MACHINE_EPILOG,
        description="Act on a running host's machines through its HTTP control API.")
    ms = m.add_subparsers(dest="machine_command", metavar="ACTION", required=True)

    def conn(q: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return host_arguments(q, "a token (default: the admin token of the file; "
                              "the read token suffices for ls and state)")

    conn(ms.add_parser("ls", help="list machines with their statistics"))
    conn(ms.add_parser("state", help="print a machine's committed state")).add_argument(
        "name", help="the machine's name")
    for verb, helptext in (("send", "send one message (returns once queued durably)"),
                           ("ask", "send a request with a reply capability appended; "
                                   "print the answer")):
        p = conn(ms.add_parser(verb, help=helptext))
        p.add_argument("name", help="the machine's name")
        p.add_argument("content", help=_CONTENT_HELP)
        p.add_argument("--context", default="None",
                       help="the context of the capability used, a Python literal (default None)")
        if verb == "ask":
            p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    for verb, helptext in (("suspend", "stop running its batches; what arrives is queued"),
                           ("resume", "run it again, its queue first"),
                           ("step", "run exactly one batch of a suspended machine"),
                           ("stop", "stop it: batches to it are dropped"),
                           ("restart", "run it again and send it (\"restart\", None)"),
                           ("destroy", "remove it, its state and its keys")):
        conn(ms.add_parser(verb, help=helptext)).add_argument("name", help="the machine's name")
    mv = conn(ms.add_parser("move", help="move it with its state, keys and queues to a peer "
                            "host (the host forwards to it afterwards)"))
    mv.add_argument("name", help="the machine's name")
    mv.add_argument("--to", required=True, metavar="HOST",
                    help="the peer host, by the name this host knows it by (--join)")
    mv.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait (the move goes on after that; default 60)")


def _hostport(text: str) -> tuple[str, int]:
    """``IP:PORT`` (``[IPv6]:PORT``) with a literal IP; port 0 means any free one."""
    import ipaddress

    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(host)
        n = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not IP:PORT (a literal IP)") from None
    if not sep or not 0 <= n <= 65535 or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: the port is a number in 0-65535")
    return str(ip), n


def run(args: argparse.Namespace) -> int:
    """Run a host command; 0 on success, 1 when a check finds problems, 2 on errors."""
    try:
        if args.command == "store" and args.store_command == "backup":
            backup(args.path, args.dest)
            print(f"backed up {args.path} to {args.dest} (and {args.dest}.keys)")
            return 0
        if args.command == "store" and args.store_command == "check":
            r = check(args.path)
            print(f"{r.path}: schema version {r.schema_version}, {r.machines} machines, "
                  f"{r.queued} queued batches, integrity {r.integrity}")
            for p in r.problems:
                print(f"problem: {p}")
            print("ok" if r.ok else f"{len(r.problems)} problem(s) found")
            return 0 if r.ok else 1
        if args.command == "host" and args.host_command == "run":
            from .demo import NetOptions, host_run

            net = None
            if args.listen is not None:
                net = NetOptions(args.listen, tuple(args.join), args.identity, args.ttl,
                                 not args.no_dht, args.chaos)
            elif args.join or args.identity or args.chaos:
                raise UsageError("--join, --identity and --chaos need --listen")
            with _logging(args.log):
                asyncio.run(host_run(args.store, args.app, args.seconds, args.durability,
                                     http=None if args.no_http else args.http,
                                     isolation=args.isolation, net=net))
            return 0
        if args.command == "demo":
            from .demo import demo

            with _logging(args.log):
                if args.role is not None or args.hosts > 1:
                    from .demo_hosts import demo_hosts, demo_role

                    if args.role is None:
                        asyncio.run(demo_hosts(args.hosts, args.dir, args.seconds))
                    elif args.dir is None:
                        raise UsageError("--role needs --dir")
                    else:
                        asyncio.run(demo_role(args.role, args.hosts, args.dir, args.seconds,
                                              http=args.http))
                else:
                    asyncio.run(demo(args.dir, args.seconds, http=args.http))
            return 0
        if args.command == "machine":
            return asyncio.run(_machine(args))
        if args.command == "state":
            from .state_cli import run as run_state

            return run_state(args)
        if args.command == "dict":
            from .dict_cli import run as run_dict

            return run_dict(args)
    except (StoreError, AvmError) as e:
        print(f"avm: {e}", file=sys.stderr)
        return 2
    raise AssertionError(f"unknown host command {args.command!r}")


@contextlib.contextmanager
def _logging(where: str) -> Iterator[None]:
    """JSON log lines to ``where`` (``-``: stderr, ``off``: none) while the host runs."""
    from .metrics import json_logger, log

    if where == "off":
        yield
        return
    stream = sys.stderr if where == "-" else builtins.open(where, "a", buffering=1)  # noqa: SIM115
    handler = json_logger(stream)
    try:
        yield
    finally:
        log.removeHandler(handler)
        if stream is not sys.stderr:
            stream.close()


async def _machine(args: argparse.Namespace) -> int:
    read_only = args.machine_command in ("ls", "state")
    async with connect_args(args, admin=not read_only) as c:
        cmd = args.machine_command
        if cmd == "ls":
            rows = await c.machines()
            if args.json:
                print(json.dumps(rows, indent=2))
                return 0
            cols = ("name", "behavior", "status", "batches", "failures", "queued")
            table = [cols] + [tuple(str(r[k]) for k in cols) for r in rows]
            widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
            for row in table:
                print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
            return 0
        if cmd == "state":
            st = await c.state(args.name)
            print(json.dumps(st["state"], indent=2) if args.json else st["text"])
            return 0
        if cmd == "send":
            seq = await c.send(args.name, args.content, context=args.context, client="cli")
            print(json.dumps({"seq": seq}) if args.json else f"sent (batch {seq}, committed)")
            return 0
        if cmd == "ask":
            a = await c.ask(args.name, args.content, context=args.context,
                            timeout=args.timeout, client="cli")
            print(json.dumps(a["answer"], indent=2) if args.json else a["text"])
            return 0
        if cmd == "move":
            r = await c.move(args.name, args.to, timeout=args.timeout)
            print(json.dumps(r) if args.json else
                  f"{args.name}: moved to {r['to']} ({r['destination'][:16]}...); "
                  f"this host forwards to it")
            return 0
        if cmd == "step":
            r = await c.step(args.name)
            print(json.dumps(r) if args.json else
                  f"{args.name}: ran batch {r['seq']} from {r['sender']} "
                  + (f"({r['steps']} messages, committed)" if r["ok"] else
                     f"(failed: {r['rule']}: {r['detail']})")
                  + f"; {r['status']}, {r['queued']} queued")
            return 0
        status = await getattr(c, cmd)(args.name)
        print(json.dumps({"name": args.name, "status": status}) if args.json
              else f"{args.name}: {status}")
        return 0
