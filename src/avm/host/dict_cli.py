"""``avm dict ...``: the dictionary of a store, from the command line (docs/dictionary.md).

These commands open the store file's dictionary directly (its own SQLite connection;
safe while a host runs the store). Binding a running host's machines to words goes
through the host (``host.live`` in Python, or its HTTP routes). ``avm dict peek`` asks the
running host over its HTTP API (admin token: a peek runs code), as ``avm machine`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from .cli_host import connect_args, host_arguments
from .dictionary import MAIN, Dictionary, MergeConflict

__all__ = ["add_parser", "run"]

EPILOG = """examples:
  avm dict ls --store app.avm
  avm dict edit counter counter.py --store app.avm --author ann -m "count by two"
  avm dict show counter --store app.avm
  avm dict log counter --store app.avm
  avm dict branch dev --store app.avm
  avm dict merge dev --into main --store app.avm
  avm dict diff 3 7 --store app.avm
  avm dict tag v1 7 --store app.avm
  avm dict peek counter counter2.py --store app.avm      (a dry run on the running host)
  avm dict peek counter --version 7 --last 5 --store app.avm
  avm dict bind c counter --store app.avm                 (c follows counter's head)
  avm dict bind c counter --version 7 --store app.avm     (c pinned to version 7)
  avm dict rollback c --store app.avm                     (c runs what it ran before)"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dict", help="the versioned dictionary of behaviors in a store",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Read and change the dictionary of words (Python source of behaviors) "
                    "kept in a host's store: every change a version, branches that fork "
                    "and merge three-way, conflicts reported, never resolved silently.")
    ds = p.add_subparsers(dest="dict_command", metavar="ACTION", required=True)

    def store(q: argparse.ArgumentParser) -> argparse.ArgumentParser:
        q.add_argument("--store", required=True, help="the store file")
        return q

    store(ds.add_parser("ls", help="words and their head versions")).add_argument(
        "--branch", default=MAIN)
    store(ds.add_parser("branches", help="the branches"))
    q = store(ds.add_parser("show", help="print a word's source"))
    q.add_argument("word")
    q.add_argument("--branch", default=MAIN)
    q.add_argument("--version", type=int, help="a version id instead of the head")
    q = store(ds.add_parser("log", help="a word's versions, newest first"))
    q.add_argument("word")
    q.add_argument("--branch", default=MAIN)
    q.add_argument("--limit", type=int, default=20)
    q = store(ds.add_parser("edit", help="a new version of a word from a file (- for stdin)"))
    q.add_argument("word")
    q.add_argument("file", help="the Python source; - reads standard input")
    q.add_argument("--branch", default=MAIN)
    q.add_argument("--author", default="cli")
    q.add_argument("-m", "--message", default="")
    q.add_argument("--expect", type=int, help="refuse unless the head is this version "
                   "(another editor's change is a conflict, not lost)")
    q = store(ds.add_parser("branch", help="fork a branch"))
    q.add_argument("name")
    q.add_argument("--from", dest="from_branch", default=MAIN)
    q = store(ds.add_parser("merge", help="merge a branch into another, three-way per word"))
    q.add_argument("source")
    q.add_argument("--into", default=MAIN)
    q.add_argument("--author", default="cli")
    q.add_argument("--resolve", action="append", default=[], metavar="WORD=FILE",
                   help="the source to keep for a conflicting word")
    q = store(ds.add_parser("diff", help="a unified diff between two versions"))
    q.add_argument("a", type=int)
    q.add_argument("b", type=int)
    q = store(ds.add_parser("tag", help="name a version (tags never move)"))
    q.add_argument("name")
    q.add_argument("version", type=int)
    def host(q: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return host_arguments(q, "the admin token (default: the token file's)")

    q = host(ds.add_parser(
        "bind", help="run a word on a machine of the running host, from its next batch",
        description="Bind a machine of the running host to a word: it runs the word's head "
                    "from its next batch on, with its state kept, and follows new versions "
                    "(or, with --version, stays pinned to that one). A version that does "
                    "not compile or load is refused before the machine is touched. Needs "
                    "the admin token."))
    q.add_argument("machine", help="the machine's name")
    q.add_argument("word", help="the dictionary word")
    q.add_argument("--branch", default=MAIN)
    q.add_argument("--version", type=int, help="pin this version id (default: follow the head)")
    q = host(ds.add_parser(
        "rollback", help="undo a machine's last rebind, in one action",
        description="The machine runs the behavior it ran before its last rebind, pinned. "
                    "Needs the admin token."))
    q.add_argument("machine", help="the machine's name")
    q = ds.add_parser(
        "peek", help="dry run: replay a machine's recent batches with new code, commit nothing",
        description="Replay the newest batches of a machine bound to a word against source "
                    "text (FILE) or a stored version, on the running host, and show per batch "
                    "how the state and outputs would differ. Nothing is committed. Needs the "
                    "admin token (a peek runs code, where the machine's batches run).")
    q.add_argument("machine", help="the machine's name")
    q.add_argument("file", nargs="?", help="the new source (- for stdin); or --version")
    q.add_argument("--version", type=int, help="a version id of the dictionary instead")
    q.add_argument("--word", help="the word the source is a version of (default: the bound one)")
    q.add_argument("--branch", help="the branch use() reads (default: the binding's)")
    q.add_argument("--last", type=int, default=10, help="batches to replay (default 10)")
    host(q)


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text()


def run(args: argparse.Namespace) -> int:
    """One ``avm dict`` command; errors raise AvmError (the caller prints them)."""
    if args.dict_command == "peek":
        return asyncio.run(_peek(args))
    if args.dict_command in ("bind", "rollback"):
        return asyncio.run(_rebind(args))
    if not Path(args.store).exists():
        print(f"avm: no store at {args.store}; create one with avm host run --store "
              f"{args.store}", file=sys.stderr)
        return 2
    cmd = args.dict_command
    with Dictionary(args.store) as d:
        if cmd == "ls":
            for word, vid in d.words(args.branch).items():
                v = d.version(vid)
                print(f"{word:30} @{vid:<6} {v.author:12} {time.strftime('%Y-%m-%d %H:%M', time.gmtime(v.at))}  {v.message}")
        elif cmd == "branches":
            for b in d.branches():
                print(b)
        elif cmd == "show":
            v = d.version(args.version) if args.version else d.head(args.branch, args.word)
            sys.stdout.write(v.source)
        elif cmd == "log":
            for v in d.history(args.branch, args.word, args.limit):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.at))
                merged = f" (merge of @{v.merged})" if v.merged else ""
                print(f"@{v.id} {when} {v.author}: {v.message or '-'}{merged}  sha256 {v.sha256[:12]}")
        elif cmd == "edit":
            v = d.edit(args.branch, args.word, _read(args.file), author=args.author,
                       message=args.message,
                       expect=args.expect if args.expect is not None else False)
            print(f"{args.word} on {args.branch}: version @{v.id}")
        elif cmd == "branch":
            d.branch(args.name, from_branch=args.from_branch)
            print(f"branch {args.name} forked from {args.from_branch}")
        elif cmd == "merge":
            resolve: dict[str, str | None] = {}
            for item in args.resolve:
                word, sep, path = item.partition("=")
                if not sep:
                    print(f"avm: --resolve takes WORD=FILE, got {item!r}", file=sys.stderr)
                    return 2
                resolve[word] = _read(path)
            try:
                made = d.merge(args.source, args.into, author=args.author, resolve=resolve)
            except MergeConflict as e:
                print(f"avm: {e}", file=sys.stderr)
                for c in e.conflicts:
                    print(f"conflict in {c.word}:", file=sys.stderr)
                    for label, src in (("base", c.base), (args.into, c.ours), (args.source, c.theirs)):
                        print(f"--- {label}\n{src if src is not None else '(absent)'}", file=sys.stderr)
                return 1
            print(f"merged {args.source} into {args.into}: "
                  + (", ".join(f"{v.word}@{v.id}" for v in made) or "nothing new"))
        elif cmd == "diff":
            sys.stdout.write(d.diff(args.a, args.b))
        elif cmd == "tag":
            d.tag(args.name, args.version)
            print(f"tag {args.name} -> @{args.version}")
    return 0


async def _rebind(args: argparse.Namespace) -> int:

    async with connect_args(args) as c:
        if args.dict_command == "bind":
            r = await c.bind(args.machine, args.word, branch=args.branch, version=args.version)
        else:
            r = await c.rollback(args.machine)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{r['name']} runs {r['behavior']} from its next batch")
    return 0


async def _peek(args: argparse.Namespace) -> int:

    if (args.file is None) == (args.version is None):
        print("avm: give the new source FILE, or --version ID (not both)", file=sys.stderr)
        return 2
    source = _read(args.file) if args.file is not None else None
    async with connect_args(args) as c:
        r = await c.peek(args.machine, source=source, version=args.version, word=args.word,
                         branch=args.branch, last=args.last)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"peek {r['name']} with {r['code']}: {r['replayed']} batches replayed, "
          f"{r['differ']} differ")
    if r.get("note"):
        print(r["note"])
    for b in r["batches"]:
        line = f"  #{b['seq']} from {b['from']}: {'equal' if b['equal'] else 'differs'}"
        if not b["peek"]["ok"]:
            line += f"; the new version fails: {b['peek']['failure']}"
        elif not b["committed"]["ok"]:
            line += f"; it had failed: {b['committed']['failure']}"
        print(line)
        for what in ("state", "outputs"):
            for ch in b["changes"][what]:
                print(f"    {what} {ch['path']}: {json.dumps(ch['committed'])} -> "
                      f"{json.dumps(ch['peek'])}")
        if b["changes"]["cut"]:
            print("    (more changes not shown)")
    return 0
