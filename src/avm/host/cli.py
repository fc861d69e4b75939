"""The host's commands of ``avm``: ``avm store backup|check``, ``avm host run``, ``avm demo``.

Kept apart from :mod:`avm.cli` (the simulator's commands), which only registers them.
"""

from __future__ import annotations

import argparse
import sys

from .store import StoreError, backup, check

__all__ = ["add_parsers", "run"]

COMMANDS = ("store",)


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
    except StoreError as e:
        print(f"avm: {e}", file=sys.stderr)
        return 2
    raise AssertionError(f"unknown host command {args.command!r}")
