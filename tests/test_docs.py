"""The docs run: every fenced block of README.md and docs/*.md is executed or checked.

A small fence parser reads each file; what happens to a block depends on its label:

- ``python``: executed. The blocks of one file run in order in one namespace, like a
  doctest session, with the repository as the working folder and ``tempfile`` pointed
  at a fresh folder. ``<!-- fresh-namespace -->`` before a block starts a new namespace.
  A block that starts with ``>>>`` is a session: each result must be what it shows.
  ``<!-- script -->`` runs a block as a program of its own (``__name__ == "__main__"``)
  in a fresh Python process, for code that starts processes (``isolation="workers"``).
- ``sh``, ``bash``, ``console`` (``$ `` prompts; other lines are output): every ``avm``
  command line is parsed by the real argument parser, and ``avm sim ...``,
  ``avm ... --help`` and ``avm version`` are run in-process (exit status 0 unless
  ``<!-- exit: N -->`` precedes the block). Every ``python`` script or ``examples/``
  file named must exist.
- ``text`` (diagrams, layouts, synopses): not code, nothing to run. With
  ``<!-- output -->`` before it, the block is what the preceding block prints, compared
  as a doctest would (``...`` matches anything). With ``<!-- layout -->``, it is a tree
  of the repository's folders and files (``name/`` and ``name.py`` first on a line,
  nested by indentation), and every one it names must exist.

Every fence needs a label, so a snippet cannot dodge the test by having none. A block
that cannot run is marked ``<!-- not-run: why -->`` just before its fence; the test
counts such skips per file and fails when a file skips more than ``SKIP_BUDGET`` says.
Inline ``avm ... --option`` spans in the prose must name real commands.

Claims in the docs are asserts in the docs (``assert sim.state("counter") == 5``), so
a drift between the code and its documentation fails here.

``python tests/test_docs.py`` prints, per file, how many blocks ran and how many were
skipped."""

from __future__ import annotations

import argparse
import contextlib
import doctest
import io
import re
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: How many blocks each file may mark ``<!-- not-run: ... -->``. A file that is not
#: listed may skip none: its snippets must run (or be labelled ``text`` if they are not
#: code). Raise a number only with a reason written in the doc beside the marker.
SKIP_BUDGET: dict[str, int] = {
    "README.md": 0,
    "docs/batches.md": 0,
    "docs/capabilities.md": 0,
    "docs/commons.md": 0,
    "docs/design.md": 0,
    "docs/dictionary.md": 0,
    "docs/fault-model.md": 0,
    "docs/host.md": 0,
    "docs/machines.md": 0,
    "docs/naming.md": 0,
    "docs/network.md": 0,
    "docs/performance.md": 0,
    "docs/simulation.md": 0,
    "docs/testing.md": 0,
    "docs/values.md": 0,
}

PYTHON = {"python", "py", "python3", "pycon"}
SHELL = {"sh", "bash", "shell", "console"}
TEXT = {"text", "txt", "plain", "output"}
KNOWN_MARKS = {"not-run", "fresh-namespace", "output", "exit", "script", "layout"}

HOW_TO_MARK = (
    "Every fenced block in README.md and docs/*.md is run by tests/test_docs.py. Make it "
    "run (claims as asserts), label a block that is not code ```text, or, if it really "
    "cannot run, put `<!-- not-run: the reason -->` on the line before its fence and "
    "raise that file's entry in SKIP_BUDGET in tests/test_docs.py.")


class DocFormatError(Exception):
    """A doc's fences or markers cannot be read: it says where and what to write."""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its label, its text and the markers before it."""

    path: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marks: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARK = re.compile(r"^\s*<!--\s*(?P<name>[a-z-]+)\s*(?::\s*(?P<arg>.*?))?\s*-->\s*$")


def parse_fences(text: str, path: str = "<doc>") -> list[Block]:
    """The fenced blocks of a markdown text, in order, with the markers just before each.

    Markers are HTML comments ``<!-- name -->`` or ``<!-- name: argument -->`` on the
    lines right above a fence (blank lines between are allowed). A fence may be indented
    (inside a list item); the indent is removed from its lines. An unclosed fence or an
    unknown marker raises :class:`DocFormatError`."""
    lines = text.split("\n")
    blocks: list[Block] = []
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _FENCE.match(line)
        if m is None:
            mark = _MARK.match(line)
            if mark and mark["name"] in KNOWN_MARKS:
                pending[mark["name"]] = (mark["arg"] or "").strip()
            elif mark and mark["name"].startswith(("not-", "no-", "skip", "fresh", "exit")):
                raise DocFormatError(f"{path}:{i + 1}: unknown marker {line.strip()!r}; "
                                     f"known: {sorted(KNOWN_MARKS)}")
            elif line.strip():
                pending = {}
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        info = m["info"].strip()
        if fence[0] == "`" and "`" in info:  # an inline code span, not a fence
            i += 1
            continue
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) \
                    and not close["info"].strip():
                break
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        else:
            raise DocFormatError(f"{path}:{start + 1}: the fence opened here is never closed")
        blocks.append(Block(path, start + 1, info.split()[0].lower() if info else "",
                            "\n".join(body) + "\n", pending))
        pending = {}
        i += 1
    return blocks


# ---------------------------------------------------------------------------------------
# Shell blocks: find the avm command lines
# ---------------------------------------------------------------------------------------

_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}
_REDIRECTS = {">", ">>", "<", "2>", "2>&1", ">&"}


def shell_commands(block: Block) -> list[list[str]]:
    """The simple commands of a shell block, each as its words (comments removed).

    In a ``console`` block only lines after a ``$ `` prompt are commands. Lines ending
    in a backslash continue on the next line."""
    joined: list[str] = []
    carry = None  # the command so far, while its lines end in a backslash
    for ln in block.text.split("\n"):
        if carry is None and block.lang == "console":
            if not ln.strip().startswith("$ "):
                continue  # output
            ln = ln.strip()[2:]
        if ln.rstrip().endswith("\\"):
            carry = (carry or "") + ln.rstrip()[:-1] + " "
            continue
        joined.append((carry or "") + ln)
        carry = None
    commands: list[list[str]] = []
    for ln in joined:
        if not ln.strip():
            continue
        lex = shlex.shlex(ln, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        cur: list[str] = []
        skip_next = False
        for tok in lex:
            if skip_next:
                skip_next = False
                continue
            if tok in _OPERATORS:
                if cur:
                    commands.append(cur)
                cur = []
            elif tok in _REDIRECTS:
                skip_next = tok != "2>&1"
            else:
                cur.append(tok)
        if cur:
            commands.append(cur)
    return commands


def avm_argv(words: list[str]) -> list[str] | None:
    """The avm arguments of one command (``avm X``, ``.venv/bin/avm X``, ``python -m avm
    X``), or None when the command is not avm."""
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value cmd
        words = words[1:]
    if not words:
        return None
    if Path(words[0]).name == "avm":
        return words[1:]
    if re.match(r"^(.*/)?python(3(\.\d+)?)?$", words[0]) and words[1:3] == ["-m", "avm"]:
        return words[3:]
    return None


def scripts_named(words: list[str]) -> list[str]:
    """Repository files a command names: ``python path.py`` and ``examples/...`` paths."""
    named = []
    for w in words[1:]:
        if w.endswith(".py") and not w.startswith("-") and "XXXX" not in w:
            named.append(w.split(":")[0])
    return named


def _parser() -> argparse.ArgumentParser:
    from avm.cli import build_parser

    return build_parser()


def check_parses(argv: list[str]) -> None:
    """Parse ``argv`` with the avm command's own parser, without running anything.

    argparse reports a usage error by printing and exiting; that becomes an assertion
    naming the arguments and argparse's complaint."""
    parser = _parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            if e.code not in (0, None):  # --help and --version exit 0
                raise AssertionError(
                    f"`avm {shlex.join(argv)}` does not parse: {err.getvalue().strip()}"
                ) from None


def command_path_exists(words: list[str]) -> str | None:
    """For an inline ``avm a b ...`` span: None if the leading words that look like
    subcommands name a real command, else what is wrong."""
    parser: argparse.ArgumentParser = _parser()
    for w in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return None
        if not re.fullmatch(r"[a-z][a-z-]*", w):  # an option or argument: the path ends
            return None
        choices = subs[0].choices
        if w not in choices:
            return f"`{w}` is not a command here; the commands are {sorted(choices)}"
        parser = choices[w]
    return None


def runs_in_process(argv: list[str]) -> bool:
    """Commands quick and safe to run from the test: the simulator, help, version."""
    if any("XXXX" in a for a in argv):
        return False
    return bool(argv) and (argv[0] in ("sim", "version") or "--help" in argv or "-h" in argv)


def run_avm(argv: list[str]) -> tuple[int, str]:
    """Run the avm command in-process; returns its exit status and what it printed."""
    from avm.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main(argv)
    return status, out.getvalue()


# ---------------------------------------------------------------------------------------
# Running one file
# ---------------------------------------------------------------------------------------

@dataclass
class Outcome:
    ran: int = 0
    skipped: int = 0
    text: int = 0
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _fail(block: Block, what: str) -> AssertionError:
    return AssertionError(f"{block.where}: {what}\n--- the block ---\n{block.text}")


def run_python(block: Block, namespace: dict) -> str:
    """Execute one python block in ``namespace``; returns what it printed."""
    source = "\n" * block.line + block.text  # line numbers in tracebacks are the doc's
    out = io.StringIO()
    try:
        code = compile(source, block.path, "exec", dont_inherit=True)
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
    except Exception:
        tb = traceback.format_exc(limit=-4)
        raise _fail(block, f"the python block failed:\n{tb}"
                           f"--- it printed ---\n{out.getvalue()}") from None
    return out.getvalue()


def run_script(block: Block, tmp: Path) -> str:
    """Run one python block as a script in a fresh process; returns what it printed."""
    import os
    import subprocess

    script = tmp / f"doc_{Path(block.path).stem}_{block.line}.py"
    script.write_text("\n" * block.line + block.text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120)
    if done.returncode != 0:
        raise _fail(block, f"the script exited with status {done.returncode}:\n"
                           f"{done.stderr[-3000:]}--- it printed ---\n{done.stdout[-2000:]}")
    return done.stdout


def run_session(block: Block, namespace: dict) -> str:
    """Run a ``>>>`` session as a reader would type it: each expression's repr, or the
    exception as ``Name: message`` (a doctest ``Traceback`` header is optional), must be
    what the block shows (``...`` matches anything)."""
    checker = doctest.OutputChecker()
    printed = []
    for ex in doctest.DocTestParser().get_examples(block.text):
        where = f"{block.path}:{block.line + 1 + ex.lineno}"
        out = io.StringIO()
        got_exc = None
        try:
            with contextlib.redirect_stdout(out):
                try:
                    code = compile(ex.source, where, "eval", dont_inherit=True)
                except SyntaxError:
                    exec(compile(ex.source, where, "exec", dont_inherit=True), namespace)
                else:
                    value = eval(code, namespace)
                    if value is not None:
                        print(repr(value))
        except Exception as e:
            got_exc = e
        got = out.getvalue()
        want = ex.want
        if got_exc is not None:
            got += f"{type(got_exc).__name__}: {got_exc}\n"
            if ex.exc_msg is not None:  # doctest form: compare the last line only
                want = f"{ex.exc_msg}"
                got = f"{type(got_exc).__name__}: {got_exc}\n"
                if not want.startswith(type(got_exc).__name__):
                    got = f"{type(got_exc).__module__}.{got}"
        if not checker.check_output(want, got, doctest.ELLIPSIS):
            tb = "".join(traceback.format_exception(got_exc, limit=-3)) if got_exc else ""
            raise _fail(block, f"at {where}, `{ex.source.strip()}` gave something else:\n"
                        + checker.output_difference(doctest.Example(ex.source, want), got,
                                                    doctest.ELLIPSIS) + tb)
        printed.append(got)
    return "".join(printed)


def run_shell(block: Block) -> str:
    """Check (and where safe, run) the avm commands of a shell block; returns output."""
    printed = []
    expect = int(block.marks.get("exit", "0") or 0)
    for words in shell_commands(block):
        for script in scripts_named(words):
            if not (ROOT / script).exists():
                raise _fail(block, f"`{shlex.join(words)}` names {script}, which does not exist")
        argv = avm_argv(words)
        if argv is None:
            continue
        check_parses(argv)
        if runs_in_process(argv):
            status, out = run_avm(argv)
            if status != expect:
                raise _fail(block, f"`avm {shlex.join(argv)}` exited with status {status}, "
                                   f"not {expect}; it printed:\n{out[-2000:]}")
            printed.append(out)
    return "".join(printed)


def check_layout(block: Block) -> None:
    """Every folder (``name/``) and file (``name.py``) a layout tree names exists."""
    stack: list[tuple[int, Path]] = []
    missing = []
    for line in block.text.split("\n"):
        m = re.match(r"^( *)(\S+)", line)
        if not m or not (m[2].endswith("/") or m[2].endswith(".py")):
            continue  # a description continued on the next line
        indent = len(m[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (stack[-1][1] if stack else ROOT) / m[2]
        if not path.exists():
            missing.append(str(path.relative_to(ROOT)))
        if m[2].endswith("/"):
            stack.append((indent, path))
    if missing:
        raise _fail(block, f"the layout names what does not exist: {missing}")


def check_output(block: Block, want: str, got: str | None) -> None:
    if got is None:
        raise _fail(block, "an <!-- output --> block must follow a python or shell block")
    checker = doctest.OutputChecker()
    if not checker.check_output(want, got, doctest.ELLIPSIS):
        raise _fail(block, "the block before this one printed something else:\n"
                           + checker.output_difference(doctest.Example("", want), got,
                                                       doctest.ELLIPSIS))


def run_file(path: str) -> Outcome:
    """Run every block of one doc, in order; raises AssertionError at the first failure."""
    t0 = time.perf_counter()
    text = (ROOT / path).read_text()
    outcome = Outcome()
    namespace: dict = {"__name__": f"docs.{Path(path).stem}"}
    last_output: str | None = None
    for block in parse_fences(text, path):
        if "not-run" in block.marks:
            if not block.marks["not-run"]:
                raise _fail(block, "<!-- not-run: ... --> needs a reason after the colon")
            outcome.skipped += 1
            outcome.reasons.append(f"{block.where}: {block.marks['not-run']}")
            last_output = None
            continue
        if block.lang in TEXT or "output" in block.marks:
            outcome.text += 1
            if "output" in block.marks:
                check_output(block, block.text, last_output)
            if "layout" in block.marks:
                check_layout(block)
            last_output = None
            continue
        if block.lang in PYTHON:
            if "fresh-namespace" in block.marks:
                namespace = {"__name__": f"docs.{Path(path).stem}"}
            if "script" in block.marks:
                last_output = run_script(block, Path(tempfile.mkdtemp()))
            elif block.lang == "pycon" or block.text.lstrip().startswith(">>>"):
                last_output = run_session(block, namespace)
            else:
                last_output = run_python(block, namespace)
        elif block.lang in SHELL:
            last_output = run_shell(block)
        else:
            raise _fail(block, f"a fence labelled {block.lang!r} is neither python, shell "
                               f"nor text. {HOW_TO_MARK}")
        outcome.ran += 1
    check_inline_commands(path, text)
    outcome.seconds = time.perf_counter() - t0
    return outcome


_INLINE = re.compile(r"`((?:\S*/)?avm [a-z][^`]*)`")


def check_inline_commands(path: str, text: str) -> None:
    """Every inline ``avm ...`` span given with options names real (sub)commands."""
    in_fence = False
    for n, line in enumerate(text.split("\n"), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for span in _INLINE.findall(line):
            words = span.split()[1:]
            if not any(w.startswith("-") for w in words):
                continue  # a command named in prose (perhaps one still to come)
            problem = command_path_exists([w for w in words if w != "..."])
            assert problem is None, f"{path}:{n}: `{span}`: {problem}"


_SPAN = re.compile(r"(`+).+?\1")
_LINK = re.compile(r"\]\(([^()\s]+)\)")
_PATH = re.compile(r"^(?:python3? )?((?:src|tests|examples|bench|tools|docs)/[^\s:`\[]+)")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines outside fences, numbered from 1."""
    out, fence = [], None
    for n, line in enumerate(text.split("\n"), 1):
        m = _FENCE.match(line)
        if m and (fence is None or (m["fence"][0] == fence[0] and len(m["fence"]) >= len(fence)
                                    and not m["info"].strip())):
            if fence is None and m["fence"][0] == "`" and "`" in m["info"]:
                out.append((n, line))
                continue
            fence = m["fence"] if fence is None else None
            continue
        if fence is None:
            out.append((n, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to ``-``."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"\]\([^)]*\)", "", text).replace("[", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a markdown text: its headings' slugs and explicit ``id``s."""
    found = set(re.findall(r"""<a\s+(?:id|name)=["']([^"']+)["']""", text))
    for _n, line in prose_lines(text):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            found.add(slug(m[1]))
    return found


def check_links_and_paths(path: str, text: str) -> list[str]:
    """Relative links lead to files (and their anchors), and files the prose names in
    code spans (``src/...``, ``tests/...``, ``python bench/x.py``) exist."""
    problems = []
    here = (ROOT / path).parent
    for n, line in prose_lines(text):
        for m in _SPAN.finditer(line):
            named = _PATH.match(m[0].strip("`").strip())
            if named and not any(c in named[1] for c in "*{}<>") and not (ROOT / named[1]).exists():
                problems.append(f"{path}:{n}: `{named[1]}` does not exist")
        for target in _LINK.findall(_SPAN.sub("", line)):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            dest = (here / file) if file else ROOT / path
            if file and not dest.exists():
                problems.append(f"{path}:{n}: the link ({target}) leads nowhere")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(
                    dest.read_text() if file else text):
                problems.append(f"{path}:{n}: the link ({target}): {dest.name} has no "
                                f"heading or id {anchor!r}")
    return problems


def doc_files() -> list[str]:
    return ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))


# ---------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------

@pytest.fixture
def docs_env(monkeypatch, tmp_path):
    """The repository as working folder, temporary files under tmp_path."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["docs"])
    yield


@pytest.mark.parametrize("path", doc_files())
def test_the_doc_runs(path, docs_env):
    try:
        outcome = run_file(path)
    except (AssertionError, DocFormatError) as e:
        new = "" if path in SKIP_BUDGET else f"({path} is new to tests/test_docs.py.) "
        raise AssertionError(f"{e}\n{new}{HOW_TO_MARK}") from None
    budget = SKIP_BUDGET.get(path, 0)
    if outcome.skipped > budget:
        listed = "" if path in SKIP_BUDGET else (
            f"{path} is new to tests/test_docs.py, so it may skip no block. ")
        raise AssertionError(
            f"{path} skips {outcome.skipped} block(s), more than the {budget} recorded in "
            f"SKIP_BUDGET: {outcome.reasons}. {listed}{HOW_TO_MARK}")
    print(f"{path}: {outcome.ran} ran, {outcome.skipped} skipped, {outcome.text} text")


@pytest.mark.parametrize("path", doc_files())
def test_links_lead_somewhere_and_named_files_exist(path):
    assert check_links_and_paths(path, (ROOT / path).read_text()) == []


def test_a_broken_link_a_missing_anchor_and_a_missing_file_are_found():
    text = ("[a](docs/nope.md), [b](docs/testing.md#nope), `src/avm/nope.py`, "
            "`python bench/nope.py --x`; fine: [c](docs/testing.md#conservation-the-census), "
            "[d](#a-title), [e](https://example.org), `tests/test_docs.py`\n\n## A title\n"
            "```python\n[f](nowhere.md)\n```\n")
    assert [p.split(": ", 1)[1] for p in check_links_and_paths("README.md", text)] == [
        "`src/avm/nope.py` does not exist", "`bench/nope.py` does not exist",
        "the link (docs/nope.md) leads nowhere",
        "the link (docs/testing.md#nope): testing.md has no heading or id 'nope'"]
    assert slug("Nothing vanishes: returned values and `dead` letters") == (
        "nothing-vanishes-returned-values-and-dead-letters")


def test_every_doc_has_a_budget_entry_or_none_to_spend():
    # A stale entry (a file renamed or gone) would hide nothing, but say so.
    missing = [p for p in SKIP_BUDGET if not (ROOT / p).exists()]
    assert missing == [], f"SKIP_BUDGET lists files that are gone: {missing}"


# --- the parser itself ---

def test_fences_markers_and_indents_are_read():
    doc = (
        "intro\n\n<!-- not-run: needs a network -->\n\n```python\nx = 1\n```\n\n"
        "  ```sh\n  avm sim a.py  # hi\n  ```\n"
        "<!-- output -->\n````text\n```\nliteral\n````\n"
        "text ```python inline``` text\n")
    blocks = parse_fences(doc, "d.md")
    assert [(b.line, b.lang, b.text, b.marks) for b in blocks] == [
        (5, "python", "x = 1\n", {"not-run": "needs a network"}),
        (9, "sh", "avm sim a.py  # hi\n", {}),
        (13, "text", "```\nliteral\n", {"output": ""}),
    ]
    assert shell_commands(blocks[1]) == [["avm", "sim", "a.py"]]


def test_a_marker_is_forgotten_after_prose():
    blocks = parse_fences("<!-- fresh-namespace -->\nsome words\n```python\npass\n```\n")
    assert blocks[0].marks == {}


def test_unclosed_fences_and_unknown_markers_are_refused():
    with pytest.raises(DocFormatError, match="never closed"):
        parse_fences("```python\nx = 1\n", "d.md")
    with pytest.raises(DocFormatError, match="unknown marker"):
        parse_fences("<!-- skip-this -->\n```python\nx = 1\n```\n", "d.md")


def test_shell_commands_split_on_operators_and_find_avm():
    block = Block("d.md", 1, "console",
                  "$ python3 -m venv .venv && .venv/bin/avm demo --dir d > log\n"
                  "output line\n$ python -m avm sim x.py \\\n  --seed 3 | head\n")
    commands = shell_commands(block)
    assert commands == [["python3", "-m", "venv", ".venv"], [".venv/bin/avm", "demo", "--dir", "d"],
                        ["python", "-m", "avm", "sim", "x.py", "--seed", "3"], ["head"]]
    assert [avm_argv(c) for c in commands] == [
        None, ["demo", "--dir", "d"], ["sim", "x.py", "--seed", "3"], None]


def test_a_command_that_does_not_parse_fails():
    check_parses(["sim", "examples/bank.py", "--seed", "3"])
    with pytest.raises(AssertionError, match="does not parse"):
        check_parses(["sim", "examples/bank.py", "--seed", "minus-one"])
    assert command_path_exists(["machine", "ls"]) is None
    assert "not a command" in command_path_exists(["machine", "list"])


def test_a_failing_block_and_a_wrong_output_name_their_line(tmp_path):
    bad = parse_fences("\n```python\nassert 1 + 1 == 3\n```\n", "d.md")[0]
    with pytest.raises(AssertionError, match=r"d\.md:2: the python block failed"):
        run_python(bad, {})
    block = parse_fences("<!-- output -->\n```text\n3\n```\n", "d.md")[0]
    check_output(block, "3\n", "3\n")
    check_output(parse_fences("<!-- output -->\n```text\nt=... ok\n```\n")[0],
                 "t=... ok\n", "t=5 ok\n")
    with pytest.raises(AssertionError, match="printed something else"):
        check_output(block, "3\n", "4\n")


def test_a_layout_names_only_what_exists():
    good = parse_fences("<!-- layout -->\n```text\nsrc/avm/\n  core/    the core\n"
                        "    sim.py  Sim,\n            continued.py? no: a description\n"
                        "  cli.py\ntests/\n```\n", "d.md")[0]
    check_layout(good)
    bad = parse_fences("<!-- layout -->\n```text\nsrc/avm/\n  core/\n    gone.py\n"
                       "  sim.py   not in src/avm but in core\n```\n", "d.md")[0]
    with pytest.raises(AssertionError, match=r"\['src/avm/core/gone.py', 'src/avm/sim.py'\]"):
        check_layout(bad)


def test_a_session_compares_results_and_exceptions():
    ok = parse_fences("```python\n>>> x = 1\n>>> x + 1\n2\n>>> int('x')\n"
                      "ValueError: invalid literal for int() with base 10: 'x'\n```\n")[0]
    assert run_session(ok, {}) == "2\nValueError: invalid literal for int() with base 10: 'x'\n"
    for want in ("3", "TypeError: ..."):
        bad = parse_fences(f"```python\n>>> 1 + 1\n{want}\n```\n", "d.md")[0]
        with pytest.raises(AssertionError, match="gave something else"):
            run_session(bad, {})


def test_a_script_block_runs_as_its_own_program(tmp_path):
    block = parse_fences("<!-- script -->\n```python\nprint(__name__)\n```\n", "d.md")[0]
    assert block.marks == {"script": ""}
    assert run_script(block, tmp_path) == "__main__\n"
    bad = parse_fences("```python\nraise SystemExit(4)\n```\n", "d.md")[0]
    with pytest.raises(AssertionError, match="status 4"):
        run_script(bad, tmp_path)


def main() -> int:
    """Print the table: per file, blocks run, skipped (with reasons), and seconds."""
    import os

    os.chdir(ROOT)
    tempfile.tempdir = tempfile.mkdtemp(prefix="avm-docs-")
    status = 0
    for path in doc_files():
        try:
            o = run_file(path)
            print(f"{path:28} {o.ran:3} ran {o.skipped:3} skipped {o.text:3} text "
                  f"{o.seconds:6.2f} s  (budget {SKIP_BUDGET.get(path, 0)})")
            for r in o.reasons:
                print(f"    not run: {r}")
        except (AssertionError, DocFormatError) as e:
            status = 1
            print(f"{path:28} FAILED: {str(e).splitlines()[0]}")
    return status


if __name__ == "__main__":
    sys.exit(main())
