"""The public API is pinned, typed, and covers what the docs use (issue 5, item 15).

* ``avm.__all__`` equals the list below: adding or removing a public name is a decision,
  made here on purpose, not an accident of an import.
* every name in it exists, and nothing public is left out of it (every public attribute
  of the package, every error class, every name the docs write ``avm.X`` or import
  ``from avm``).
* the docs' and examples' references (``avm.X.Y``, ``from avm... import ...``) all resolve.
* the package ships ``py.typed`` (PEP 561), and the build includes it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import tomllib
import types
from pathlib import Path

import pytest

import avm
from avm.core import errors

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: The public API of ``import avm``, sorted. Change it here and in src/avm/__init__.py.
PUBLIC_API = [
    "AFFINE",
    "ANY",
    "Affine",
    "AskError",
    "AskFailed",
    "AskTimeout",
    "AvmError",
    "BatchResult",
    "Behavior",
    "Capability",
    "CapabilityError",
    "CodecError",
    "Config",
    "Failure",
    "Faults",
    "Fraction",
    "IdentityKey",
    "InvariantViolation",
    "LINEAR",
    "Limits",
    "Linear",
    "Map",
    "Message",
    "Network",
    "REPLY",
    "RELEVANT",
    "Relevant",
    "RunReport",
    "SIGNAL",
    "Sealed",
    "Sealer",
    "Self",
    "SignalError",
    "Sim",
    "StepContractError",
    "SubstructuralError",
    "UNRESTRICTED",
    "UnknownName",
    "UnsealError",
    "Unsealer",
    "UsageError",
    "ValueLimitError",
    "ValueRuleError",
    "address_of",
    "address_text",
    "ask",
    "asking",
    "check_size",
    "check_value",
    "decode",
    "encode",
    "events",
    "format_event",
    "inner_state",
    "nest",
    "parse_faults",
    "patterns",
    "pending_asks",
    "record",
    "replace_fields",
    "run_batch",
    "sealer_pair",
    "value_hash",
    "verify_identity",
    "verify_signature",
]

#: Names the docs use bare (``address_of(resource)``), which a reader will look for in avm.
DOCUMENTED_BARE = ("address_of", "verify_identity", "verify_signature")

#: Submodules that are reached as modules (``avm.testing``), not exported as names.
SUBMODULES = {"core", "testing", "cli", "host", "naming", "wire"}


def test_all_is_pinned():
    assert sorted(avm.__all__) == sorted(PUBLIC_API)
    assert len(set(avm.__all__)) == len(avm.__all__), "a name is listed twice"


def test_every_listed_name_exists_and_star_import_gives_exactly_them():
    missing = [n for n in avm.__all__ if not hasattr(avm, n)]
    assert missing == []
    ns: dict = {}
    exec("from avm import *", ns)
    assert {n for n in ns if n != "__builtins__"} == set(avm.__all__)


def test_nothing_public_is_missing():
    public = {
        n for n, v in vars(avm).items()
        if not n.startswith("_")
        and not (isinstance(v, types.ModuleType) and n in SUBMODULES)
        and not (isinstance(v, types.ModuleType) and n != "patterns"
                 and not v.__name__.startswith("avm"))  # e.g. a stray `import sys`
    }
    assert public - set(avm.__all__) == set(), "public in avm but not in __all__"
    # every error class the core raises on purpose can be caught as avm.<Name>
    error_classes = {
        n for n, v in vars(errors).items()
        if inspect.isclass(v) and issubclass(v, errors.AvmError) and v.__module__ == errors.__name__
    }
    assert error_classes - set(avm.__all__) == set()
    for n in error_classes:
        assert getattr(avm, n) is getattr(errors, n)


@pytest.mark.parametrize("name", DOCUMENTED_BARE)
def test_names_the_docs_use_bare_are_exported(name):
    assert any(f"`{name}(" in p.read_text() for p in DOCS), f"{name} is no longer documented"
    assert name in avm.__all__


def test_exports_are_the_core_objects_not_copies():
    from avm.core import caps, patterns, sim, values

    assert avm.patterns is patterns
    assert avm.address_of is caps.address_of
    assert avm.RunReport is sim.RunReport
    assert avm.replace_fields is values.replace_fields
    assert avm.Fraction is values.Fraction


# -- the docs' references ------------------------------------------------------------------


def _resolve(dotted: str) -> object:
    """The object ``avm.a.b.c`` names: import the longest module prefix, then getattr."""
    parts = dotted.split(".")
    obj: object = None
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        rest = parts[i:]
        break
    else:  # pragma: no cover - "avm" itself always imports
        raise AssertionError(dotted)
    for p in rest:
        obj = getattr(obj, p)  # AttributeError names what is missing
    return obj


_REF = re.compile(r"(?<![\w/.:-])avm((?:\.[A-Za-z_]\w*)+)")
_FROM = re.compile(
    r"^[ \t]*from[ \t]+(avm(?:\.\w+)*)[ \t]+import[ \t]+(?:\(([\w\s,]+)\)|([\w \t,]+))", re.M)


def _doc_references() -> list[tuple[str, str]]:
    """(where, dotted name) for every avm reference in the docs and examples."""
    refs = []
    for path in DOCS:
        text = path.read_text()
        where = path.relative_to(ROOT).as_posix()
        for m in _REF.finditer(text):
            refs.append((where, "avm" + m.group(1)))
        for m in _FROM.finditer(text):
            for name in (m.group(2) or m.group(3)).split(","):
                if name.strip():
                    refs.append((where, f"{m.group(1)}.{name.strip()}"))
    for path in EXAMPLES:
        where = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "avm":
                refs += [(where, f"{node.module}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Attribute):
                chain = []
                cur: ast.AST = node
                while isinstance(cur, ast.Attribute):
                    chain.append(cur.attr)
                    cur = cur.value
                if isinstance(cur, ast.Name) and cur.id == "avm":
                    refs.append((where, ".".join(["avm", *reversed(chain)])))
        for m in _REF.finditer(ast.get_docstring(tree) or ""):
            refs.append((where, "avm" + m.group(1)))
    return refs


def test_every_avm_reference_in_the_docs_and_examples_resolves():
    refs = _doc_references()
    assert len(refs) > 50  # the scan found the docs
    bad = []
    for where, dotted in refs:
        try:
            _resolve(dotted)
        except (AttributeError, ImportError) as e:
            bad.append(f"{where}: {dotted} ({e})")
    assert bad == []


def test_the_docs_use_names_from_the_public_api():
    # a doc that writes avm.X for a top-level name should find X in __all__, not only as
    # an attribute that happens to be imported there
    top = {dotted.split(".")[1] for _, dotted in _doc_references() if dotted.count(".") >= 1}
    assert top - set(avm.__all__) - SUBMODULES == set()


def test_the_reference_scan_catches_a_missing_name():
    with pytest.raises(AttributeError):
        _resolve("avm.no_such_name")
    with pytest.raises(AttributeError):
        _resolve("avm.core.patterns.NoSuchPattern")
    assert _resolve("avm.core.caps.siv_sealer_pair") is not None


# -- typing --------------------------------------------------------------------------------


def test_py_typed_ships_with_the_package():
    marker = Path(avm.__file__).with_name("py.typed")
    assert marker.is_file()
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = conf["tool"]["setuptools"].get("package-data", {})
    assert "py.typed" in data.get("avm", []), "py.typed must be package data of avm"


def test_the_mutation_extra_and_script_are_there():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extra = conf["project"]["optional-dependencies"]["mutation"]
    assert any(d.startswith("mutmut") for d in extra)
    assert (ROOT / "tools" / "mutation.py").is_file()
