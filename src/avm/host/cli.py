"""The host's commands of ``avm``: ``avm store backup|check``, ``avm host run``, ``avm demo``.

Kept apart from :mod:`avm.cli` (the simulator's commands), which only registers them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..core.errors import AvmError
from .store import StoreError, backup, check

__all__ = ["add_parsers", "run"]

COMMANDS = ("store", "host", "demo")


def add_parsers(sub: argparse._SubParsersAction) -> None:
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

    d = sub.add_parser(
        "demo", help="start a host with the example applications and clients", formatter_class=fmt,
        description=("Start a host on an embedded store with the example applications "
                     "running and clients sending them work; prints what to type."),
        epilog="examples:\n  avm demo\n  avm demo --dir ./demo --seconds 10")
    d.add_argument("--dir", default=None, help="folder of the store (default: a new temporary one)")
    d.add_argument("--seconds", type=float, default=None, help="stop after this long")


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
            from .demo import host_run

            asyncio.run(host_run(args.store, args.app, args.seconds, args.durability))
            return 0
        if args.command == "demo":
            from .demo import demo

            asyncio.run(demo(args.dir, args.seconds))
            return 0
    except (StoreError, AvmError) as e:
        print(f"avm: {e}", file=sys.stderr)
        return 2
    raise AssertionError(f"unknown host command {args.command!r}")
