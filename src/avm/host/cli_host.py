"""The "which host" options every CLI command on a running host shares, and the client
they open: one definition, so ``avm machine``, ``avm state`` and ``avm dict`` find a host
(and its tokens) the same way."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import Client

__all__ = ["host_arguments", "connect_args"]


def host_arguments(p: argparse.ArgumentParser, token_help: str) -> argparse.ArgumentParser:
    """Add ``--store``, ``--token-file``, ``--url``, ``--token`` and ``--json`` to ``p``."""
    g = p.add_argument_group("which host")
    g.add_argument("--store", help="the host's store: reads its token file STORE.http")
    g.add_argument("--token-file", help="the token file written by avm host run")
    g.add_argument("--url", help="the API's address, e.g. http://127.0.0.1:8080")
    g.add_argument("--token", help=token_help)
    g.add_argument("--json", action="store_true", help="print the host's JSON answer")
    return p


def connect_args(args: argparse.Namespace, *, admin: bool = True) -> Client:
    """The client for the host those options name (``async with``)."""
    from .client import connect
    from .http import token_file_for

    token_file = args.token_file or (token_file_for(args.store) if args.store else None)
    return connect(args.url, args.token, token_file=token_file, admin=admin)
