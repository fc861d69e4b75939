"""The layering is tested (STYLE 10, DESIGN section 12): ``avm.core`` is pure.

Every module under ``src/avm/core`` is parsed (not imported) and must not import I/O or
nondeterminism, nor any ``avm`` module outside ``avm.core``; clock, randomness and keys
are arguments. Third-party libraries the core is built on (cbor2, immutables,
cryptography) are allowed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "src" / "avm" / "core"

# Top-level module names the core may not import: I/O, processes, threads, clocks,
# randomness, the file system, the network, and dynamic imports that would hide any of
# these from this test.
FORBIDDEN_MODULES = frozenset(
    {
        # network and event loops
        "socket",
        "ssl",
        "asyncio",
        "select",
        "selectors",
        "socketserver",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "imaplib",
        "poplib",
        "xmlrpc",
        "webbrowser",
        "trio",
        "anyio",
        "requests",
        "httpx",
        "aiohttp",
        "websockets",
        # storage and the file system
        "sqlite3",
        "dbm",
        "shelve",
        "pickle",
        "marshal",
        "io",
        "os",
        "pathlib",
        "shutil",
        "tempfile",
        "glob",
        "fileinput",
        "mmap",
        "fcntl",
        "zipfile",
        "tarfile",
        # processes, threads, signals
        "subprocess",
        "multiprocessing",
        "threading",
        "_thread",
        "concurrent",
        "signal",
        "pty",
        "sched",
        "queue",
        # clocks and randomness
        "time",
        "datetime",
        "calendar",
        "zoneinfo",
        "random",
        "secrets",
        "uuid",
        # output, and ways around this check
        "logging",
        "builtins",
        "importlib",
        "ctypes",
        "code",
        "pdb",
    }
)

# Module-qualified attributes that read the clock or the OS's randomness, flagged even
# if the module got in some other way.
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        ("time", "time"),
        ("time", "time_ns"),
        ("time", "monotonic"),
        ("time", "perf_counter"),
        ("time", "sleep"),
        ("os", "urandom"),
        ("os", "getrandom"),
        ("os", "environ"),
        ("datetime", "now"),
        ("datetime", "utcnow"),
        ("datetime", "today"),
        ("date", "today"),
    }
)
# Bare names that would be a clock, randomness or I/O if they resolved to anything:
# the built-ins that do I/O, and the usual names of the forbidden modules and functions.
FORBIDDEN_BUILTINS = frozenset(
    {"open", "print", "input", "__import__", "breakpoint", "exec", "eval", "compile"}
)
SUSPICIOUS_NAMES = frozenset(
    {"random", "time", "secrets", "urandom", "datetime", "perf_counter", "monotonic", "time_ns"}
)


def core_modules() -> list[Path]:
    mods = sorted(CORE.rglob("*.py"))
    assert mods, f"no modules found under {CORE}"
    return mods


def _package_of(path: Path) -> list[str]:
    rel = path.relative_to(CORE.parents[1]).with_suffix("")
    parts = list(rel.parts)
    # a module's package is its parent; a package's __init__ is its own package
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the module binds anywhere (assignments, parameters, defs, imports...)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of everything a module imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(package):
                    out.append((node.lineno, "." * node.level + (node.module or "")))
                    continue
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # ``from avm import machine`` imports avm.machine: check each name too
            for alias in node.names:
                if alias.name != "*":
                    out.append((node.lineno, f"{mod}.{alias.name}"))
    return out


def _core_only(mod: str) -> bool:
    return mod == "avm.core" or mod.startswith("avm.core.")


def import_violations(path: Path) -> list[str]:
    bad = []
    for line, mod in imported_modules(path):
        top = mod.split(".")[0]
        if mod.startswith("."):
            bad.append(f"{path.name}:{line}: relative import {mod!r} climbs out of the package")
        elif top in FORBIDDEN_MODULES:
            bad.append(f"{path.name}:{line}: imports {mod!r} (I/O or nondeterminism)")
        elif top == "avm" and not _core_only(mod):
            bad.append(f"{path.name}:{line}: imports {mod!r}, outside avm.core")
    return bad


def reference_violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    bound = _bound_names(tree)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in FORBIDDEN_ATTRIBUTES:
                bad.append(f"{path.name}:{node.lineno}: uses {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id in FORBIDDEN_BUILTINS and node.id not in bound:
                bad.append(f"{path.name}:{node.lineno}: uses built-in {node.id}()")
            elif node.id in SUSPICIOUS_NAMES and node.id not in bound:
                bad.append(f"{path.name}:{node.lineno}: refers to {node.id!r}")
    return bad


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path):
    assert import_violations(path) == []


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_reads_no_clock_or_randomness(path):
    assert reference_violations(path) == []


# The checker itself must be able to fail: feed it modules that break each rule.

_BAD_SOURCES = {
    "import asyncio": "asyncio",
    "import os.path": "os.path",
    "from time import time as now": "time",
    "from datetime import datetime": "datetime",
    "import random": "random",
    "import socket, json": "socket",
    "from pathlib import Path": "pathlib",
    "def f():\n    import sqlite3": "sqlite3",
    "from avm import host": "avm.host",
    "import avm.cli": "avm.cli",
    "from avm.sim import network": "avm.sim",
    "from .. import cli": "avm.cli",
    "from ..host import run": "avm.host",
    "from ... import anything": "climbs out",
    "from urllib.request import urlopen": "urllib",
    "import importlib": "importlib",
}


@pytest.mark.parametrize("src, word", list(_BAD_SOURCES.items()))
def test_import_checker_catches(tmp_path, monkeypatch, src, word):
    fake_core = tmp_path / "src" / "avm" / "core"
    fake_core.mkdir(parents=True)
    mod = fake_core / "bad.py"
    mod.write_text(src + "\n")
    monkeypatch.setattr(sys.modules[__name__], "CORE", fake_core)
    found = import_violations(mod)
    assert found and word in " ".join(found)


@pytest.mark.parametrize(
    "src",
    [
        "import cbor2",
        "from . import values",
        "from .values import Map",
        "from avm.core.errors import CodecError",
        "from .sub import x",
        "import hashlib",
        "from fractions import Fraction",
        "from __future__ import annotations",
    ],
)
def test_import_checker_allows(tmp_path, monkeypatch, src):
    fake_core = tmp_path / "src" / "avm" / "core"
    fake_core.mkdir(parents=True)
    mod = fake_core / "ok.py"
    mod.write_text(src + "\n")
    monkeypatch.setattr(sys.modules[__name__], "CORE", fake_core)
    assert import_violations(mod) == []


@pytest.mark.parametrize(
    "src, bad",
    [
        ("x = time.time()", True),
        ("x = time.monotonic()", True),
        ("x = os.urandom(8)", True),
        ("x = datetime.now()", True),
        ("x = random()", True),
        ("def f():\n    return random.random()", True),
        ("print('hi')", True),
        ("with open('f') as f:\n    pass", True),
        ("__import__('time')", True),
        ("def f(random):\n    return random.next()", False),
        ("def f(rng):\n    return rng.next()", False),
        ("print = None\nprint", False),
        ("s = 'time.time() and random'", False),
    ],
)
def test_reference_checker(tmp_path, src, bad):
    mod = tmp_path / "m.py"
    mod.write_text(src + "\n")
    assert bool(reference_violations(mod)) == bad


def test_importing_core_pulls_in_no_event_loop():
    """Bonus check on the real import graph: the core does not bring in asyncio or
    threads, even through the libraries it uses."""
    mods = sorted(
        "avm.core" + ("" if p.stem == "__init__" else "." + p.stem) for p in CORE.glob("*.py")
    )
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in mods)
        + "bad = [m for m in ('asyncio', 'socket', 'sqlite3', 'subprocess', "
        "'multiprocessing', 'selectors', 'trio') if m in sys.modules]\n" + "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
