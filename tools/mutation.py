#!/usr/bin/env python3
"""Mutation testing of the pure core with mutmut: how many deliberate bugs does the suite miss?

    .venv/bin/python tools/mutation.py                           # all of src/avm/core
    .venv/bin/python tools/mutation.py src/avm/core/schedule.py  # one module first
    .venv/bin/python tools/mutation.py --tests "tests/test_rules.py tests/test_machine.py" ...

Install the tool with ``pip install -e '.[mutation]'``. Not part of CI: a run over the whole
core takes long (every mutant runs the tests that reach the mutated function).

The run works on a *copy* of the working tree in a temporary directory, so it never
rewrites a file under ``src/`` (mutmut 3 already mutates a copy under ``mutants/``; the
extra copy also keeps ``mutants/`` and its caches out of the project, and lets several
people edit the tree while a run goes on). The copy includes uncommitted changes;
``--rev HEAD`` measures a commit instead. mutmut's own progress goes to ``--log``.

The test selection (``--tests``, default :data:`FAST_TESTS`) leaves out the tests that
start fresh Python processes (slow, and they import the editable install rather than the
copy) and the long multi-seed fault tiers, and caps Hypothesis at ``--examples`` examples per
test; mutmut runs, for each mutant, only the selected tests that reached the mutated
function. mutmut needs the selected tests to pass before it mutates anything.

Prints the counts (mutants, killed, survived, no tests, timeouts, ...) and the surviving
fraction, ``(survived + no tests) / mutants checked``: a mutant that no test reaches
survives too. ``--report FILE`` writes the diff of every survivor, to read and then either
kill with a test or explain. Exit status 0 whatever the score (1 only if mutmut itself
failed): this measures, it does not gate.

Figures so far (2 cores, about 0.4 mutants/s): schedule.py had 35 of 86 mutants surviving
(40.7%) before issue 5 and 15 of 92 (16.3%) after; patterns.py 11 of 177 (6.2%); the whole
core is about 6,100 mutants, some 4 hours.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent

#: Tests run against every mutant: the unit and property tests of the core, without the
#: fresh-process determinism tests and the long many-seed tiers.
FAST_TESTS = (
    "tests/ --ignore=tests/test_process_determinism.py "
    "-k 'not fresh_process and not subprocess and not many_seeds and not across_processes "
    "and not pulls_in_no_event_loop'"
)

#: Never copied: version control, the virtualenv, caches and earlier mutmut output.
SKIP = {".git", ".venv", "mutants", "build", "dist", ".pytest_cache", ".hypothesis",
        ".ruff_cache", ".mypy_cache", "__pycache__"}
#: mutmut copies these into mutants/ itself; everything else top-level goes in also_copy
#: (tests read examples/, docs/, bench/, README.md, .ci/ and more).
MUTMUT_COPIES = {"src", "tests", "pyproject.toml", "setup.cfg"}


def copy_tree(dest: Path, rev: str | None = None) -> None:
    """Copy the project into ``dest``: the working tree (uncommitted changes included), or
    commit ``rev``."""
    if rev is not None:
        archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT,
                                 check=True, stdout=subprocess.PIPE).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    ignore = shutil.ignore_patterns(*SKIP, "*.pyc", "*.egg-info")
    for src in ROOT.iterdir():
        if src.name in SKIP or src.name.endswith(".egg-info"):
            continue
        if src.is_dir():
            shutil.copytree(src, dest / src.name, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(src, dest / src.name)


def configure(work: Path, modules: list[str], tests: str, examples: int = 0) -> None:
    """Write the ``[tool.mutmut]`` table of the copy's pyproject.toml for this run.

    ``examples`` > 0 also caps the examples of every Hypothesis test in the copy (a profile
    loaded at the end of the copy's conftest.py): a mutant runs many property tests, and a
    few examples each find most bugs the full count finds.
    """
    import shlex

    if examples > 0:
        with (work / "tests" / "conftest.py").open("a") as f:
            f.write(
                "\n\n# added by tools/mutation.py (in the temporary copy only)\n"
                "from hypothesis import settings as _mutation_settings\n\n"
                "_mutation_settings.register_profile(\n"
                f"    'mutation', deadline=None, max_examples={examples}, print_blob=False)\n"
                "_mutation_settings.load_profile('mutation')\n")

    pyproject = work / "pyproject.toml"
    text = pyproject.read_text("utf-8")
    # drop any [tool.mutmut] table of the project: this run's settings replace it
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    table = [
        "[tool.mutmut]",
        'source_paths = ["src/"]',
        "only_mutate = " + json.dumps(modules),
        "pytest_add_cli_args = " + json.dumps(["-p", "no:cacheprovider", "-q"]),
        "pytest_add_cli_args_test_selection = " + json.dumps(shlex.split(tests)),
        "also_copy = " + json.dumps(sorted(
            p.name + ("/" if p.is_dir() else "") for p in work.iterdir()
            if p.name not in MUTMUT_COPIES and p.name not in SKIP)),
        "mutate_only_covered_lines = false",
        "use_git_change_detection = false",
        "",
    ]
    pyproject.write_text(text.rstrip() + "\n\n" + "\n".join(table), "utf-8")


def mutmut(work: Path, *args: str, capture: bool = False, log: IO | None = None,
           ) -> subprocess.CompletedProcess:
    """Run the mutmut next to this Python in ``work``; capture or log its output."""
    exe = Path(sys.executable).with_name("mutmut")
    cmd = [str(exe) if exe.exists() else "mutmut", *args]
    # No PYTHONPATH: mutmut puts mutants/src first on sys.path itself, and a PYTHONPATH entry
    # for a directory that does not exist yet would be cached as empty for the whole run.
    # A test that starts a fresh Python imports the editable install (the working tree),
    # not the copy: that is why FAST_TESTS leaves such tests out.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    out = subprocess.PIPE if capture else log
    return subprocess.run(cmd, cwd=work, env=env, text=True, stdout=out,
                          stderr=subprocess.STDOUT if out is not None else None)


def survivors(work: Path) -> list[tuple[str, str]]:
    out = mutmut(work, "results", capture=True).stdout
    found = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m and m.group(2).strip() != "killed":
            found.append((m.group(1), m.group(2).strip()))
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", default=["src/avm/core/*"],
                    help="files or globs to mutate (default: src/avm/core/*)")
    ap.add_argument("--tests", default=FAST_TESTS, help="pytest arguments selecting the tests")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--examples", type=int, default=20,
                    help="Hypothesis examples per property test (0: the suite's own setting)")
    ap.add_argument("--report", type=Path, help="write each survivor's diff to this file")
    ap.add_argument("--rev", help="mutate this commit (git archive) instead of the working tree")
    ap.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "avm-mutation.log",
                    help="where mutmut's progress goes (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)

    modules = [m if m.endswith((".py", "*")) else m.rstrip("/") + "/*" for m in args.modules]
    work = Path(tempfile.mkdtemp(prefix="avm-mutation-"))
    started = time.monotonic()
    try:
        copy_tree(work, args.rev)
        configure(work, modules, args.tests, args.examples)
        print(f"mutating {' '.join(modules)} of {args.rev or 'the working tree'} in {work}; "
              f"progress in {args.log}", flush=True)
        with args.log.open("w") as log:
            run = mutmut(work, "run", "--max-children", str(args.jobs), log=log)
        if run.returncode != 0:
            tail = re.sub(r"[^\n]*\r", "", args.log.read_text(errors="replace"))[-3000:]
            print(f"mutmut run exited with {run.returncode}:\n{tail}", file=sys.stderr)
            return 1
        mutmut(work, "export-cicd-stats", capture=True)
        stats_file = work / "mutants" / "mutmut-cicd-stats.json"
        if not stats_file.exists():
            print("no results: mutmut did not finish", file=sys.stderr)
            return 1
        s = json.loads(stats_file.read_text())
        alive = survivors(work)
        if args.report:
            with args.report.open("w") as f:
                for name, _status in alive:
                    f.write(mutmut(work, "show", name, capture=True).stdout + "\n")
        tested = sum(s[k] for k in ("killed", "survived", "no_tests", "timeout", "suspicious",
                                    "segfault"))
        unchecked = s["total"] - s["skipped"] - tested
        surviving = s["survived"] + s["no_tests"]
        elapsed = time.monotonic() - started
        print()
        print(f"modules:   {' '.join(modules)}")
        print(f"mutants:   {s['total']}  (skipped {s['skipped']}, not checked {unchecked})")
        print(f"killed:    {s['killed']}  (+ timeout {s['timeout']}, suspicious {s['suspicious']}, "
              f"segfault {s['segfault']})")
        print(f"survived:  {s['survived']}  (+ no tests {s['no_tests']})")
        if tested:
            print(f"surviving fraction: {surviving}/{tested} = {surviving / tested:.1%}")
        print(f"time:      {elapsed:.0f} s")
        for name, status in alive:
            print(f"  {status:10} {name}")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
