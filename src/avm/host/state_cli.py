"""``avm state get|edit|audit``: a running host's machine states from the command line.

Over the host's HTTP control API (:mod:`avm.host.client`), found as ``avm machine``
finds it: ``--store STORE`` (its token file ``STORE.http``), ``--token-file FILE``, or
``--url URL --token TOKEN``. Reading takes the read token; an edit takes the admin token
and is one audited transaction through the value rules (docs/host.md, "State edits").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from ..core.errors import UsageError
from .cli_host import connect_args, host_arguments
from .valuepath import parse_path

__all__ = ["add_parser", "run", "split_assignment"]

EPILOG = """paths: balance, accounts.ann.limit, log[2] (or log.2), ["a b"], [b"key"];
$ or nothing is the whole state. Values are Python literals: 5, "text", (1, 2),
{"k": 1}, None; cap("machine") or cap("machine", context) is a capability.

examples:
  avm state get counter --store app.avm
  avm state get bank --path accounts.ann --json --store app.avm
  avm state edit counter --set n=5 --store app.avm
  avm state edit bank --set 'accounts.ann.limit=100' --expect 'accounts.ann.limit=50' --store app.avm
  avm state edit counter --value '{"n": 0}' --who ann --store app.avm
  avm state audit counter --store app.avm"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "state", help="read or edit a running host's machine states (audited)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Read a machine's committed state, or a part of it; edit it as one "
                    "transaction through the value rules, recorded in the host's audit.")
    ss = p.add_subparsers(dest="state_command", metavar="ACTION", required=True)

    def conn(q: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return host_arguments(q, "a token (default: the file's read token for get "
                              "and audit, its admin token for edit)")

    q = conn(ss.add_parser("get", help="print a machine's committed state (or a part)"))
    q.add_argument("name", help="the machine's name")
    q.add_argument("--path", default="", help="a part of the state, e.g. accounts.ann")
    q = conn(ss.add_parser("edit", help="change a machine's state: one audited transaction"))
    q.add_argument("name", help="the machine's name")
    q.add_argument("--set", action="append", default=[], metavar="PATH=LITERAL",
                   help="set the part at PATH (repeatable; applied in order)")
    q.add_argument("--value", metavar="LITERAL", help="the whole new state (before --set)")
    q.add_argument("--expect", action="append", default=[], metavar="PATH=LITERAL",
                   help="refuse (changing nothing) unless the part at PATH still is LITERAL")
    q.add_argument("--who", default="cli", help="the editor's name, for the audit")
    q = conn(ss.add_parser("audit", help="who edited states, when, and what"))
    q.add_argument("name", nargs="?", help="one machine (default: all)")
    q.add_argument("--limit", type=int, default=20, help="rows (default 20)")


def split_assignment(text: str) -> tuple[str, str]:
    """``"a.b=5"`` -> ``("a.b", "5")``: at the first ``=`` whose left side is a path (a
    key written as a literal in brackets may hold ``=`` itself)."""
    i = text.find("=")
    while i >= 0:
        try:
            parse_path(text[:i])
        except UsageError:
            i = text.find("=", i + 1)
            continue
        return text[:i], text[i + 1:]
    raise UsageError(f"expected PATH=LITERAL, e.g. n=5 or accounts.ann.limit=100; got {text!r}")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:

    cmd = args.state_command
    sets = [split_assignment(s) for s in getattr(args, "set", [])]
    expects = [split_assignment(s) for s in getattr(args, "expect", [])]
    if cmd == "edit" and not sets and args.value is None:
        print("avm: nothing to change: give --set PATH=LITERAL or --value LITERAL",
              file=sys.stderr)
        return 2
    async with connect_args(args, admin=cmd == "edit") as c:
        if cmd == "get":
            if args.path:
                got = await c.state_at(args.name, args.path)
                print(json.dumps(got["value"], indent=2) if args.json else got["text"])
            else:
                st = await c.state(args.name)
                print(json.dumps(st["state"], indent=2) if args.json else st["text"])
            return 0
        if cmd == "edit":
            e = await c.edit_state(args.name, value=args.value, set=sets, expect=expects,
                                   who=args.who)
            if args.json:
                print(json.dumps(e, indent=2))
                return 0
            for ch in e["changes"]:
                print(f"{args.name} {ch['path']}: {json.dumps(ch['before'])} -> "
                      f"{json.dumps(ch['after'])}")
            print("committed (audited)")
            return 0
        page = await c.audit(args.name, limit=args.limit)
        if args.json:
            print(json.dumps(page, indent=2))
            return 0
        for r in page["rows"]:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["at"] / 1000))
            print(f"#{r['id']} {stamp} {r['who']} {r['machine']}: {r['detail']}")
        return 0
