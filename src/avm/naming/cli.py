"""``avm name``: run a DHT node, publish a routing record, resolve an address.

    avm name keygen host.key                       # 32 random bytes, mode 0600
    avm name serve --listen 127.0.0.1:7300         # a DHT node, until interrupted
    avm name publish --key host.key --endpoint 127.0.0.1:7400 --join 127.0.0.1:7300
    avm name resolve ADDRESS --join 127.0.0.1:7300

``publish`` and ``resolve`` run a short-lived DHT node of their own (on a free loopback
port) that joins through ``--join``; ``publish --stay`` keeps it running and republishes.
Registered by :mod:`avm.cli`; see docs/naming.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from ..core.caps import IdentityKey, address_text, parse_address
from ..core.errors import AvmError
from .records import check_endpoint, split_endpoint

__all__ = ["add_parser", "run", "COMMAND"]

COMMAND = "name"
KEY_BYTES_MIN = 32

_EPILOG = """\
examples:
  avm name keygen host.key
  avm name serve --listen 127.0.0.1:7300
  avm name publish --key host.key --endpoint 127.0.0.1:7400 --join 127.0.0.1:7300
  avm name resolve ADDRESS --join 127.0.0.1:7300 --json
"""


def _hostport(text: str) -> tuple[str, int]:
    try:
        return split_endpoint(text)
    except AvmError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _endpoint(text: str) -> str:
    why = check_endpoint(text)
    if why is not None:
        raise argparse.ArgumentTypeError(why)
    return text


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        COMMAND, help="naming: DHT node, publish and resolve routing records",
        formatter_class=fmt, epilog=_EPILOG,
        description="Signed routing records (address -> endpoints) over a Kademlia DHT on "
                    "UDP. See docs/naming.md.")
    ns = p.add_subparsers(dest="name_command", metavar="ACTION", required=True)
    k = ns.add_parser("keygen", help="write a new identity key seed (32 random bytes)")
    k.add_argument("path", type=Path, help="the key file to create (must not exist)")
    s = ns.add_parser("serve", help="run a DHT node until interrupted")
    s.add_argument("--listen", type=_hostport, default=("127.0.0.1", 0), metavar="IP:PORT",
                   help="UDP address to bind (default 127.0.0.1, any free port)")
    s.add_argument("--join", type=_hostport, action="append", default=[], metavar="IP:PORT",
                   help="a node of the DHT to join through (repeatable)")
    pub = ns.add_parser("publish", help="sign and publish this key's routing record")
    pub.add_argument("--key", type=Path, required=True, help="the key file (avm name keygen)")
    pub.add_argument("--endpoint", type=_endpoint, action="append", required=True,
                     metavar="IP:PORT", help="an endpoint that reaches this host (repeatable)")
    pub.add_argument("--join", type=_hostport, action="append", required=True,
                     metavar="IP:PORT", help="a node of the DHT (repeatable)")
    pub.add_argument("--ttl", type=float, default=3600.0, metavar="SECONDS",
                     help="how long the record lives (default 3600)")
    pub.add_argument("--stay", action="store_true",
                     help="keep running and republish every ttl/3 until interrupted")
    r = ns.add_parser("resolve", help="look an address up and verify its record")
    r.add_argument("address", help="the address (base32 text, as avm prints it)")
    r.add_argument("--join", type=_hostport, action="append", required=True,
                   metavar="IP:PORT", help="a node of the DHT (repeatable)")
    r.add_argument("--json", action="store_true", help="print the record as JSON")


def _read_key(path: Path) -> IdentityKey:
    data = path.read_bytes()
    if len(data) < KEY_BYTES_MIN:
        raise AvmError(f"{path}: a key file holds at least {KEY_BYTES_MIN} bytes")
    return IdentityKey.from_seed(data)


async def _node(join: list[tuple[str, int]], listen: tuple[str, int] = ("127.0.0.1", 0)):
    from .dht import DhtNode

    node = DhtNode()
    await node.listen(*listen)
    if join and await node.bootstrap(join) == 0:
        node.stop()
        raise AvmError(f"no DHT node answered at {', '.join(f'{h}:{p}' for h, p in join)}")
    return node


async def _serve(args: argparse.Namespace) -> int:
    node = await _node(args.join, args.listen)
    host, port = node.address
    print(f"listening on {host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        node.stop()
    return 0


async def _publish(args: argparse.Namespace) -> int:
    from .resolver import Naming

    key = _read_key(args.key)
    node = await _node(args.join)
    try:
        naming = Naming(key, args.endpoint, dht=node, ttl_seconds=args.ttl)
        if args.stay:
            naming.start()
            print(f"publishing {address_text(naming.address)} every "
                  f"{naming.republish_seconds:g} s", flush=True)
            await asyncio.Event().wait()
        rec = await naming.publish()
        print(f"{address_text(rec.address)} published (seq {rec.seq}) at "
              f"{naming.last_stored} DHT nodes")
    finally:
        node.stop()
    return 0


async def _resolve(args: argparse.Namespace) -> int:
    from .resolver import Naming

    address = parse_address(args.address)
    node = await _node(args.join)
    try:
        rec = await Naming(IdentityKey.from_seed(os.urandom(32)), dht=node).resolve(address)
    finally:
        node.stop()
    if rec is None:
        print(f"avm name: no valid record for {args.address}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"address": address_text(rec.address), "endpoints": list(rec.endpoints),
                          "host": None if rec.host is None else address_text(rec.host),
                          "seq": rec.seq, "issued_ms": rec.issued_ms,
                          "expires_ms": rec.expires_ms}))
    else:
        via = "" if rec.host is None else f" via host {address_text(rec.host)}"
        print(f"{' '.join(rec.endpoints)}{via} (seq {rec.seq}, expires {rec.expires_ms} ms)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``avm name ACTION``: 0 on success, 1 when nothing resolves, 2 on errors."""
    try:
        if args.name_command == "keygen":
            fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(KEY_BYTES_MIN))
            print(address_text(_address(args.path)))
            return 0
        action = {"serve": _serve, "publish": _publish, "resolve": _resolve}[args.name_command]
        return asyncio.run(action(args))
    except (AvmError, OSError) as e:
        print(f"avm name: {e}", file=sys.stderr)
        return 2


def _address(path: Path) -> bytes:
    from ..core.caps import address_of

    return address_of(_read_key(path).resource())
