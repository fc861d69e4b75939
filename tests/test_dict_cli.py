"""``avm dict``: the dictionary from the command line; refusals exit non-zero and change
nothing."""

from __future__ import annotations

import sqlite3

from avm.cli import main
from avm.host.dictionary import Dictionary


def test_edit_log_branch_merge_conflict_and_resolve(tmp_path, capsys):
    store = tmp_path / "s.avm"
    sqlite3.connect(store).close()
    a, b, c = (tmp_path / n for n in ("a.py", "b.py", "c.py"))
    a.write_text("x = 1\n")
    b.write_text("x = 2\n")
    c.write_text("x = 3\n")
    s = ["--store", str(store)]
    assert main(["dict", "edit", "w", str(a), *s, "-m", "first"]) == 0
    assert main(["dict", "edit", "w", str(b), *s, "--expect", "1"]) == 0
    assert main(["dict", "edit", "w", str(c), *s, "--expect", "1"]) == 2  # stale: refused
    assert "someone else changed it" in capsys.readouterr().err
    (tmp_path / "bad.py").write_text("def f(:\n")
    assert main(["dict", "edit", "w", str(tmp_path / "bad.py"), *s]) == 2
    assert "line 1" in capsys.readouterr().err
    assert Dictionary(store).source("main", "w") == "x = 2\n"
    assert main(["dict", "log", "w", *s]) == 0
    out = capsys.readouterr().out
    assert out.index("@2") < out.index("@1") and "first" in out
    assert main(["dict", "diff", "1", "2", *s]) == 0
    assert "-x = 1\n+x = 2\n" in capsys.readouterr().out
    assert main(["dict", "branch", "dev", *s]) == 0
    assert main(["dict", "edit", "w", str(c), *s, "--branch", "dev"]) == 0
    assert main(["dict", "edit", "w", str(a), *s]) == 0
    capsys.readouterr()
    assert main(["dict", "merge", "dev", *s]) == 1  # a conflict: reported, nothing merged
    err = capsys.readouterr().err
    assert "conflict in w" in err and "x = 3" in err and "x = 1" in err
    assert Dictionary(store).source("main", "w") == "x = 1\n"
    assert main(["dict", "merge", "dev", *s, "--resolve", f"w={b}"]) == 0
    assert Dictionary(store).source("main", "w") == "x = 2\n"
    assert "merged dev into main: w@" in capsys.readouterr().out
    assert main(["dict", "show", "w", *s, "--version", "1"]) == 0
    assert capsys.readouterr().out == "x = 1\n"
    assert main(["dict", "tag", "v1", "1", *s]) == 0
    assert main(["dict", "tag", "v1", "2", *s]) == 2  # tags never move


def test_a_missing_store_says_what_to_do(tmp_path, capsys):
    assert main(["dict", "ls", "--store", str(tmp_path / "none.avm")]) == 2
    assert "avm host run --store" in capsys.readouterr().err
    assert not (tmp_path / "none.avm").exists()
