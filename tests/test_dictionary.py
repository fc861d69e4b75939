"""The dictionary (issue 9 item 1): versions, branches, three-way merges, tags, and source
that runs. Every refusal changes nothing; no edit is ever lost, concurrent ones included."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import avm
from avm.core.errors import UnknownName, UsageError
from avm.host.dictionary import (
    MAIN,
    CompileError,
    Dictionary,
    EditConflict,
    MergeConflict,
)

COUNTER = '''
import avm
step = use("step").SIZE
behavior = avm.Behavior("counter")

@behavior.init
def _init(state, args):
    return [], 0

@behavior.on("tick")
def _tick(n):
    return [], n + step
'''

STEP1 = "SIZE = 1\n"
STEP2 = "SIZE = 2\n"


def fresh(tmp_path, name="d.avm") -> Dictionary:
    ticks = itertools.count(1_700_000_000)
    return Dictionary(tmp_path / name, clock=lambda: float(next(ticks)))


def test_versions_history_and_diff(tmp_path):
    d = fresh(tmp_path)
    v1 = d.edit(MAIN, "greet", "x = 1\n", author="ann", message="first")
    v2 = d.edit(MAIN, "greet", "x = 2\n", author="bob", message="second")
    assert d.edit(MAIN, "greet", "x = 2\n").id == v2.id  # no empty version
    assert [v.id for v in d.history(MAIN, "greet")] == [v2.id, v1.id]
    assert (v2.parent, v2.author, v2.message) == (v1.id, "bob", "second")
    assert v2.sha256 != v1.sha256 and len(v2.sha256) == 64 and v2.at > v1.at
    assert "-x = 1\n+x = 2\n" in d.diff(v1.id, v2.id)
    assert d.words(MAIN) == {"greet": v2.id}


def test_source_that_does_not_compile_is_refused_with_the_compilers_message(tmp_path):
    d = fresh(tmp_path)
    good = d.edit(MAIN, "w", "x = 1\n")
    with pytest.raises(CompileError) as e:
        d.edit(MAIN, "w", "def f(:\n    pass\n")
    assert "line 1" in str(e.value) and e.value.lineno == 1 and "def f(:" in str(e.value)
    assert d.head(MAIN, "w").id == good.id and len(d.history(MAIN, "w")) == 1
    for bad in (b"x = 1", None, "x = '\0'"):
        with pytest.raises((UsageError, avm.core.errors.AvmError)):
            d.edit(MAIN, "w", bad)
    with pytest.raises(UsageError):
        d.edit(MAIN, "no spaces", "x = 1\n")
    assert d.head(MAIN, "w").id == good.id


def test_an_edit_from_a_stale_head_is_a_conflict_not_a_loss(tmp_path):
    d = fresh(tmp_path)
    v1 = d.edit(MAIN, "w", "x = 1\n", expect=None)
    with pytest.raises(EditConflict):
        d.edit(MAIN, "w", "x = 0\n", expect=None)  # "new" but it exists
    mine = d.edit(MAIN, "w", "x = 2\n", expect=v1.id)
    with pytest.raises(EditConflict, match="someone else changed it"):
        d.edit(MAIN, "w", "x = 3\n", expect=v1.id)  # the other editor read v1 too
    assert d.head(MAIN, "w").id == mine.id


def test_concurrent_editors_on_two_connections_lose_nothing(tmp_path):
    path = tmp_path / "d.avm"
    Dictionary(path).edit(MAIN, "log", "lines = ()\n")
    n_threads, per = 4, 10

    def editor(k: int) -> None:
        d = Dictionary(path)
        for j in range(per):
            while True:
                head = d.head(MAIN, "log")
                src = head.source.replace(")", f"'{k}-{j}', )", 1)
                try:
                    d.edit(MAIN, "log", src, expect=head.id, author=f"e{k}")
                    break
                except EditConflict:
                    continue  # someone else was first: read again, redo
        d.close()

    threads = [threading.Thread(target=editor, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = Dictionary(path).source(MAIN, "log")
    ns: dict = {}
    exec(final, ns)
    assert sorted(ns["lines"]) == sorted(f"{k}-{j}" for k in range(n_threads) for j in range(per))
    assert len(Dictionary(path).history(MAIN, "log", limit=1000)) == 1 + n_threads * per


def test_branches_fork_and_merge_three_way(tmp_path):
    d = fresh(tmp_path)
    d.edit(MAIN, "a", "a = 1\n")
    d.edit(MAIN, "b", "b = 1\n")
    d.branch("dev")
    d.edit("dev", "a", "a = 2\n")  # only dev changes a
    d.edit(MAIN, "b", "b = 2\n")  # only main changes b
    d.edit("dev", "c", "c = 1\n")  # a new word on dev
    made = d.merge("dev", MAIN)
    assert {v.word for v in made} == {"a", "c"}
    assert d.source(MAIN, "a") == "a = 2\n" and d.source(MAIN, "b") == "b = 2\n"
    assert d.source(MAIN, "c") == "c = 1\n" and d.source("dev", "b") == "b = 1\n"
    assert d.merge("dev", MAIN) == []  # nothing new


def test_a_merge_conflict_is_reported_and_changes_nothing_until_resolved(tmp_path):
    d = fresh(tmp_path)
    d.edit(MAIN, "w", "x = 1\n")
    d.edit(MAIN, "v", "v = 1\n")
    d.branch("dev")
    d.edit(MAIN, "w", "x = 2\n")
    d.edit("dev", "w", "x = 3\n")
    d.edit("dev", "v", "v = 2\n")  # not a conflict, but nothing merges while one remains
    before = (d.words(MAIN), d.words("dev"))
    with pytest.raises(MergeConflict) as e:
        d.merge("dev", MAIN)
    (c,) = e.value.conflicts
    assert (c.word, c.base, c.ours, c.theirs) == ("w", "x = 1\n", "x = 2\n", "x = 3\n")
    assert (d.words(MAIN), d.words("dev")) == before
    made = d.merge("dev", MAIN, resolve={"w": "x = 5\n"})
    merged = d.head(MAIN, "w")
    assert merged.source == "x = 5\n" and merged.merged == d.head("dev", "w").id
    assert d.source(MAIN, "v") == "v = 2\n" and len(made) == 2
    d.merge(MAIN, "dev")  # dev's head is an ancestor of the merge: a fast-forward
    assert d.head("dev", "w").id == merged.id
    d.edit("dev", "w", "x = 6\n")  # the base of the next merge is the merge version
    d.merge("dev", MAIN)
    assert d.source(MAIN, "w") == "x = 6\n"
    d.edit("dev", "w", "x = 7\n")
    d.edit(MAIN, "w", "x = 8\n")
    with pytest.raises(MergeConflict) as e:  # both moved again since that base
        d.merge("dev", MAIN)
    assert e.value.conflicts[0].base == "x = 6\n"


def test_tags_name_versions_and_never_move(tmp_path):
    d = fresh(tmp_path)
    v = d.edit(MAIN, "w", "x = 1\n")
    d.tag("v1.0", v.id)
    d.edit(MAIN, "w", "x = 2\n")
    assert d.tagged("v1.0").source == "x = 1\n"
    with pytest.raises(avm.core.errors.AvmError, match="never move"):
        d.tag("v1.0", d.head(MAIN, "w").id)
    with pytest.raises(UnknownName):
        d.tagged("nope")


def test_a_behavior_word_loads_with_its_helpers_and_runs(tmp_path):
    d = fresh(tmp_path)
    d.edit(MAIN, "step", STEP1)
    d.edit(MAIN, "counter", COUNTER)
    b1 = d.load(MAIN, "counter")
    sim = avm.Sim(seed=1)
    sim.spawn("c", b1)
    for _ in range(3):
        sim.send(sim.cap("c"), ("tick",))
    sim.run()
    assert sim.state("c") == 3
    d.edit(MAIN, "step", STEP2)  # a helper changed: the next load counts by two
    sim2 = avm.Sim(seed=1)
    sim2.spawn("c", d.load(MAIN, "counter"))
    sim2.send(sim2.cap("c"), ("tick",))
    sim2.run()
    assert sim2.state("c") == 2
    old = d.history(MAIN, "counter")[-1].id
    assert d.load(MAIN, "counter", version=old).name == "counter"


def test_loading_refuses_cycles_and_words_without_a_behavior(tmp_path):
    d = fresh(tmp_path)
    d.edit(MAIN, "a", "x = use('b')\n")
    d.edit(MAIN, "b", "y = use('a')\n")
    with pytest.raises(avm.core.errors.AvmError, match="cycle"):
        d.load(MAIN, "a")
    d.edit(MAIN, "plain", "x = 1\n")
    with pytest.raises(avm.core.errors.AvmError, match="defines no `behavior`"):
        d.load(MAIN, "plain")
    d.edit(MAIN, "raises", "raise RuntimeError('no')\nbehavior = 1\n")
    with pytest.raises(avm.core.errors.AvmError, match="failed to load: RuntimeError"):
        d.load(MAIN, "raises")


OPS = st.lists(st.tuples(st.sampled_from(["main", "dev"]), st.sampled_from("wxyz"),
                         st.integers(0, 3)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("wxyz"), st.integers(0, 3)), max_size=4), OPS)
def test_merge_follows_the_three_way_rule_for_every_word(tmp_path_factory, before, ops):
    d = fresh(tmp_path_factory.mktemp("m"))
    for w, k in before:
        d.edit(MAIN, w, f"v = {k}\n")
    d.branch("dev")
    at_fork = d.words(MAIN)  # word -> head version when dev forked
    for branch, w, k in ops:
        d.edit(branch, w, f"v = {k} # {branch}\n" if k else f"v = {k}\n")
    ours0 = {w: d.source(MAIN, w) for w in d.words(MAIN)}
    theirs = {w: d.source("dev", w) for w in d.words("dev")}
    moved_ours = {w for w in ours0 if d.head(MAIN, w).id != at_fork.get(w)}
    moved_theirs = {w for w in theirs if d.head("dev", w).id != at_fork.get(w)}
    expect_conflict = {w for w in moved_ours & moved_theirs if ours0[w] != theirs[w]}
    try:
        d.merge("dev", MAIN)
    except MergeConflict as e:
        assert {c.word for c in e.conflicts} == expect_conflict and expect_conflict
        assert {w: d.source(MAIN, w) for w in d.words(MAIN)} == ours0  # nothing changed
        return
    assert not expect_conflict
    after = {w: d.source(MAIN, w) for w in d.words(MAIN)}
    for w in set(ours0) | set(theirs):
        if w in moved_theirs and w not in moved_ours:
            assert after[w] == theirs[w]
        elif w in ours0:
            assert after[w] == ours0[w]


def test_the_docs_example_runs(capsys):
    import pathlib
    import re

    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "dictionary.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, "docs/dictionary.md", "exec"), {})
    out = capsys.readouterr().out
    assert "step 'SIZE = 2\\n' 'SIZE = 3\\n' 'SIZE = 4\\n'" in out
    assert "3 peek [('$.n', 2, 4)] [('n', 4)]\nMap({'n': 2})" in out  # the peek block
