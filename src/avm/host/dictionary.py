"""The dictionary: versioned, branching Python source of behaviors (DESIGN section 10).

    "bind each machine's step function to a dictionary that people edit while the
    machines run" (the seed)

A *word* is a named piece of Python source: a behavior (its source defines ``behavior``,
an :class:`avm.Behavior` or a step function) or a helper that other words import with
``use("name")``. Every change is a *version* (author, time, message, the source and its
SHA-256); versions are never rewritten or deleted. A *branch* maps each word to its
head version; branches fork from each other and merge back, three-way per word, where
the base is the newest version both sides descend from. Tags name versions.

Why versions per word rather than commits of the whole dictionary: machines bind to one
word each, so what matters to a running machine is the history of its word, and two
people editing different words never conflict. What Git would call a merge conflict is
the same here: both sides changed the same word since their common base, to different
sources. It is reported (:class:`MergeConflict`, with base, ours and theirs) and never
resolved silently: a merge with a conflict changes nothing unless the caller passes the
resolution. A concurrent edit is caught the same way: :meth:`Dictionary.edit` takes the
head the editor started from and refuses (:class:`EditConflict`) if the word moved since.

The words live in SQLite tables (prefix ``dict_``) in the host's store file, through
their own connection, so ``avm store backup`` and ``check`` cover them; the dictionary
keeps its own schema version (``dict_meta``) and never touches the host's tables.
Source that does not compile is refused with the compiler's message, line and column,
and nothing is stored.
"""

from __future__ import annotations

import difflib
import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import AvmError, UnknownName, UsageError

__all__ = [
    "Dictionary",
    "Recipe",
    "Version",
    "DictionaryError",
    "CompileError",
    "EditConflict",
    "MergeConflict",
    "Conflict",
    "MAIN",
    "SOURCE_BYTES_MAX",
]

MAIN = "main"
#: A word's source is at most this many bytes of UTF-8.
SOURCE_BYTES_MAX = 1 << 20
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
NAME_MAX = 100
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dict_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dict_versions (
  id INTEGER PRIMARY KEY, word TEXT NOT NULL, parent INTEGER, merged INTEGER,
  source TEXT NOT NULL, sha256 TEXT NOT NULL, author TEXT NOT NULL, at REAL NOT NULL,
  message TEXT NOT NULL, branch TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS dict_versions_word ON dict_versions (word, id);
CREATE TABLE IF NOT EXISTS dict_heads (branch TEXT NOT NULL, word TEXT NOT NULL,
  version INTEGER NOT NULL, PRIMARY KEY (branch, word)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dict_branches (name TEXT PRIMARY KEY, parent TEXT,
  at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dict_tags (name TEXT PRIMARY KEY, version INTEGER NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dict_bindings (machine TEXT PRIMARY KEY, branch TEXT NOT NULL,
  word TEXT NOT NULL, follow INTEGER NOT NULL, current TEXT NOT NULL, previous TEXT)
  WITHOUT ROWID;
"""


class DictionaryError(AvmError):
    """A dictionary operation was refused; nothing was changed."""


class CompileError(DictionaryError):
    """The source does not compile; the message is the compiler's, with line and column."""

    def __init__(self, word: str, err: SyntaxError) -> None:
        where = f"line {err.lineno}" + (f", column {err.offset}" if err.offset else "")
        text = (err.text or "").rstrip("\n")
        super().__init__(f"{word}: {err.msg} ({where})" + (f"\n    {text}" if text else ""))
        self.lineno = err.lineno
        self.offset = err.offset
        self.msg = err.msg


class EditConflict(DictionaryError):
    """The word changed since the editor read it: merge their change, then edit again."""


@dataclass(frozen=True)
class Conflict:
    """One word that both sides of a merge changed differently since their base."""

    word: str
    base: str | None
    ours: str | None
    theirs: str | None


class MergeConflict(DictionaryError):
    def __init__(self, source: str, target: str, conflicts: list[Conflict]) -> None:
        words = ", ".join(c.word for c in conflicts)
        super().__init__(
            f"merging {source} into {target}: {len(conflicts)} word(s) changed on both sides "
            f"({words}); nothing was merged. Pass resolve={{word: source}} for each, or "
            "edit one side to match and merge again")
        self.conflicts = conflicts


@dataclass(frozen=True)
class Version:
    id: int
    word: str
    parent: int | None
    merged: int | None  # the other parent of a merge version
    source: str
    sha256: str
    author: str
    at: float
    message: str
    branch: str


def _check_name(kind: str, name: Any) -> str:
    if type(name) is not str or not name or len(name) > NAME_MAX or not set(name) <= NAME_CHARS:
        raise UsageError(f"a {kind} name is 1 to {NAME_MAX} letters, digits, '_', '.' or "
                         f"'-'; got {name!r}")
    return name


def _sha(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def check_source(word: str, source: Any) -> str:
    """Refuse what is not compilable Python text within the size limit (CompileError)."""
    if type(source) is not str:
        raise UsageError(f"the source of {word} must be text, not {type(source).__name__}")
    if len(source.encode("utf-8", "surrogatepass")) > SOURCE_BYTES_MAX:
        raise DictionaryError(f"{word}: the source exceeds {SOURCE_BYTES_MAX} bytes")
    try:
        compile(source, f"<dictionary {word}>", "exec", dont_inherit=True)
    except SyntaxError as e:
        raise CompileError(word, e) from None
    except ValueError as e:  # a NUL byte
        raise DictionaryError(f"{word}: {e}") from None
    return source


class Dictionary:
    """The words of one store; see the module docstring.

    ``clock`` gives the time recorded with each version (tests pass a fake one).
    """

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            with self._tx() as db:
                row = db.execute("SELECT value FROM dict_meta WHERE key='schema'").fetchone()
                if row is None:
                    db.execute("INSERT INTO dict_meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                elif row[0] > SCHEMA_VERSION:
                    raise DictionaryError(f"the dictionary in {self.path} has schema {row[0]}, "
                                          "newer than this avm: upgrade avm")
                if db.execute("SELECT 1 FROM dict_branches WHERE name=?", (MAIN,)).fetchone() is None:
                    db.execute("INSERT INTO dict_branches VALUES (?, NULL, ?)", (MAIN, self.clock()))
        except sqlite3.Error as e:
            raise DictionaryError(f"cannot open the dictionary in {self.path}: {e}") from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Dictionary:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------------
    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")  # one writer: read-check-write is atomic
            return self.db

        def __exit__(self, et: Any, e: Any, tb: Any) -> None:
            self.db.execute("COMMIT" if et is None else "ROLLBACK")

    def _tx(self) -> Dictionary._Tx:
        return Dictionary._Tx(self._db)

    # -- reading ------------------------------------------------------------------------
    def branches(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM dict_branches ORDER BY name")]

    def words(self, branch: str = MAIN) -> dict[str, int]:
        """Word -> head version id on ``branch``."""
        self._branch(branch)
        return dict(self._db.execute(
            "SELECT word, version FROM dict_heads WHERE branch=? ORDER BY word", (branch,)))

    def head(self, branch: str, word: str) -> Version:
        row = self._db.execute("SELECT version FROM dict_heads WHERE branch=? AND word=?",
                               (self._branch(branch), word)).fetchone()
        if row is None:
            raise UnknownName(f"no word {word!r} on branch {branch!r}")
        return self.version(row[0])

    def source(self, branch: str, word: str) -> str:
        return self.head(branch, word).source

    def version(self, vid: int) -> Version:
        row = self._db.execute(
            "SELECT id, word, parent, merged, source, sha256, author, at, message, branch "
            "FROM dict_versions WHERE id=?", (vid,)).fetchone()
        if row is None:
            raise UnknownName(f"no version {vid}")
        return Version(*row)

    def history(self, branch: str, word: str, limit: int = 100) -> list[Version]:
        """The versions of ``word`` that its head on ``branch`` descends from, newest first
        (following first parents, as ``git log --first-parent`` does)."""
        out: list[Version] = []
        v: Version | None = self.head(branch, word)
        while v is not None and len(out) < limit:
            out.append(v)
            v = self.version(v.parent) if v.parent is not None else None
        return out

    def diff(self, a: int, b: int) -> str:
        """A unified diff from version ``a`` to version ``b``."""
        va, vb = self.version(a), self.version(b)
        return "".join(difflib.unified_diff(
            va.source.splitlines(keepends=True), vb.source.splitlines(keepends=True),
            f"{va.word}@{a}", f"{vb.word}@{b}"))

    # -- changing -----------------------------------------------------------------------
    def edit(self, branch: str, word: str, source: str, *, author: str = "unknown",
             message: str = "", expect: int | None | bool = False) -> Version:
        """A new version of ``word`` on ``branch`` (a new word if it has none).

        ``expect``: the head version the editor started from (``None``: the word must be
        new). If the word moved since, :class:`EditConflict` and nothing changes; the
        default (``False``) edits whatever the head is.
        """
        _check_name("word", word)
        check_source(word, source)
        with self._tx() as db:
            self._branch(branch)
            row = db.execute("SELECT version FROM dict_heads WHERE branch=? AND word=?",
                             (branch, word)).fetchone()
            cur = row[0] if row else None
            if expect is not False and expect != cur:
                raise EditConflict(
                    f"{word} on {branch} is at version {cur}, not {expect}: someone else "
                    "changed it; read the new version, merge your change into it, and "
                    "edit again")
            if cur is not None and self.version(cur).source == source:
                return self.version(cur)  # nothing changed: no empty version
            return self._new_version(db, branch, word, cur, None, source, author, message)

    def _new_version(self, db: sqlite3.Connection, branch: str, word: str, parent: int | None,
                     merged: int | None, source: str, author: str, message: str) -> Version:
        cur = db.execute(
            "INSERT INTO dict_versions (word, parent, merged, source, sha256, author, at, "
            "message, branch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (word, parent, merged, source, _sha(source), str(author), self.clock(),
             str(message), branch))
        vid = cur.lastrowid
        assert vid is not None
        db.execute("INSERT OR REPLACE INTO dict_heads VALUES (?, ?, ?)", (branch, word, vid))
        return self.version(vid)

    def branch(self, name: str, *, from_branch: str = MAIN) -> None:
        """Fork ``name`` from ``from_branch``: the same heads, from now on apart."""
        _check_name("branch", name)
        with self._tx() as db:
            self._branch(from_branch)
            if db.execute("SELECT 1 FROM dict_branches WHERE name=?", (name,)).fetchone():
                raise DictionaryError(f"branch {name!r} exists")
            db.execute("INSERT INTO dict_branches VALUES (?, ?, ?)", (name, from_branch, self.clock()))
            db.execute("INSERT INTO dict_heads SELECT ?, word, version FROM dict_heads "
                       "WHERE branch=?", (name, from_branch))

    def tag(self, name: str, version: int) -> None:
        _check_name("tag", name)
        self.version(version)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM dict_tags WHERE name=?", (name,)).fetchone():
                raise DictionaryError(f"tag {name!r} exists; tags never move")
            db.execute("INSERT INTO dict_tags VALUES (?, ?)", (name, version))

    def tagged(self, name: str) -> Version:
        row = self._db.execute("SELECT version FROM dict_tags WHERE name=?", (name,)).fetchone()
        if row is None:
            raise UnknownName(f"no tag {name!r}")
        return self.version(row[0])

    def tags(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, version FROM dict_tags ORDER BY name"))

    def merge(self, source: str, target: str = MAIN, *, author: str = "unknown",
              message: str = "", resolve: dict[str, str | None] | None = None) -> list[Version]:
        """Bring ``source``'s changes into ``target``, three-way per word.

        For each word of ``source``: unchanged there since the base, nothing; new there,
        or unchanged on ``target``, ``target`` takes ``source``'s version (its head moves,
        as a fast-forward); changed on both to the same text, nothing; changed on both
        differently, a conflict. Words only ``target`` has stay. Any conflict without a
        ``resolve`` entry (word -> the source to keep, ``None`` to remove the word)
        raises :class:`MergeConflict` and changes nothing. Returns the new versions.
        """
        resolve = dict(resolve or {})
        for w, src in resolve.items():
            if src is not None:
                check_source(w, src)
        with self._tx() as db:
            self._branch(source)
            self._branch(target)
            theirs = dict(db.execute("SELECT word, version FROM dict_heads WHERE branch=?", (source,)))
            ours = dict(db.execute("SELECT word, version FROM dict_heads WHERE branch=?", (target,)))
            forward: list[tuple[str, int]] = []  # ours did not move: take theirs as is
            plan: list[tuple[str, int | None, int, str | None]] = []  # resolved conflicts
            conflicts: list[Conflict] = []
            for word in sorted(theirs):
                t, o = theirs[word], ours.get(word)
                if t == o:
                    continue
                if o is None:
                    forward.append((word, t))  # a word new on their side
                    continue
                base = self._base(t, o)
                if base == t:
                    continue  # only ours moved
                if base == o:
                    forward.append((word, t))
                    continue
                src_t, src_o = self.version(t).source, self.version(o).source
                if src_t == src_o:
                    continue
                if word in resolve:
                    plan.append((word, o, t, resolve[word]))
                    continue
                src_b = self.version(base).source if base is not None else None
                conflicts.append(Conflict(word, src_b, src_o, src_t))
            if conflicts:
                raise MergeConflict(source, target, conflicts)
            made = []
            for word, t in forward:
                db.execute("INSERT OR REPLACE INTO dict_heads VALUES (?, ?, ?)", (target, word, t))
                made.append(self.version(t))
            for word, o, t, src in plan:
                if src is None:
                    db.execute("DELETE FROM dict_heads WHERE branch=? AND word=?", (target, word))
                    continue
                made.append(self._new_version(
                    db, target, word, o, t, src, author,
                    message or f"merge {source} into {target}"))
            return made

    def _ancestors(self, vid: int | None) -> dict[int, int]:
        """Every version ``vid`` descends from (both parents), with its distance."""
        out: dict[int, int] = {}
        frontier = [(vid, 0)] if vid is not None else []
        while frontier:
            v, d = frontier.pop()
            if v in out and out[v] <= d:
                continue
            out[v] = d
            row = self._db.execute("SELECT parent, merged FROM dict_versions WHERE id=?",
                                   (v,)).fetchone()
            for p in row:
                if p is not None:
                    frontier.append((p, d + 1))
        return out

    def _base(self, a: int | None, b: int | None) -> int | None:
        """The newest version both descend from (None: no common history)."""
        if a is None or b is None:
            return None
        common = set(self._ancestors(a)) & set(self._ancestors(b))
        return max(common) if common else None

    def _branch(self, name: str) -> str:
        if self._db.execute("SELECT 1 FROM dict_branches WHERE name=?", (name,)).fetchone() is None:
            raise UnknownName(f"no branch {name!r}; branches: {', '.join(self.branches())}")
        return name

    # -- bindings (which machine runs which word; kept for the host, see host.live) -----
    def bindings(self) -> dict[str, tuple[str, str, bool, str, str | None]]:
        """machine name -> (branch, word, follows the head, behavior name, previous one)."""
        return {m: (b, w, bool(f), c, p) for m, b, w, f, c, p in self._db.execute(
            "SELECT machine, branch, word, follow, current, previous FROM dict_bindings")}

    def set_binding(self, machine: str, branch: str, word: str, follow: bool, current: str,
                    previous: str | None) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO dict_bindings VALUES (?, ?, ?, ?, ?, ?)",
                       (machine, branch, word, int(follow), current, previous))

    # -- loading ------------------------------------------------------------------------
    def load(self, branch: str, word: str, *, version: int | None = None) -> Any:
        """Run a word's source and return what it defines as ``behavior``.

        The source sees ``use(name)``: the namespace of another word on the same branch
        (run once per load), so helpers can be shared; a cycle of ``use`` is refused.
        """
        return self.recipe(branch, word, version=version).load()

    def recipe(self, branch: str, word: str, *, version: int | None = None) -> Recipe:
        """Everything needed to load the word elsewhere, without this store: its
        version's source and the head source of every other word on the branch (what
        ``use`` may ask for). Isolated workers load dictionary code from this, so the
        code runs in the worker and never in the host."""
        v = self.version(version) if version is not None else self.head(branch, word)
        if v.word != word:
            raise UsageError(f"version {v.id} is of word {v.word!r}, not {word!r}")
        others = tuple((w, self.version(vid).source) for w, vid in self.words(branch).items()
                       if w != word)
        return Recipe(branch, word, v.id, v.source, others)

    def recipe_source(self, branch: str, word: str, source: str) -> Recipe:
        """The Recipe of ``source`` as if it were a new version of ``word`` on ``branch``
        (version 0: nothing is stored), for a dry run (``host.live.peek``). Source that
        does not compile raises :class:`CompileError` with the compiler's message; it is
        only compiled here, never run."""
        source = check_source(_check_name("word", word), source)
        others = tuple((w, self.version(vid).source) for w, vid in self.words(branch).items()
                       if w != word)
        return Recipe(branch, word, 0, source, others)

    def load_source(self, branch: str, word: str, source: str) -> Any:
        """Run ``source`` as a version of ``word`` on ``branch`` (its ``use()`` reaches the
        branch's words) and return its ``behavior``, storing nothing."""
        return self.recipe_source(branch, word, source).load()


@dataclass(frozen=True)
class Recipe:
    """A dictionary word as plain text: picklable, loadable in another process."""

    branch: str
    word: str
    version: int
    source: str
    helpers: tuple[tuple[str, str], ...]

    def load(self) -> Any:
        """Run the word's source (with ``use`` over the helpers) and return its
        ``behavior``; DictionaryError says why it cannot."""
        helpers = dict(self.helpers)
        branch = self.branch
        loading: dict[str, dict | None] = {}

        def run(w: str, src: str) -> dict:
            if w in loading:
                done = loading[w]
                if done is None:
                    raise DictionaryError(f"{w} uses itself (a cycle of use)")
                return done
            loading[w] = None
            ns: dict[str, Any] = {"__name__": f"avm_dictionary.{w}", "use": use}
            try:
                exec(compile(src, f"<dictionary {branch}/{w}>", "exec", dont_inherit=True), ns)
            except DictionaryError:
                raise
            except Exception as e:
                raise DictionaryError(f"{w} failed to load: {type(e).__name__}: {e}") from e
            loading[w] = ns
            return ns

        def use(name: str) -> Any:
            if name == self.word:
                return _Namespace(run(name, self.source))
            if name not in helpers:
                raise UnknownName(f"no word {name!r} on branch {branch!r}")
            return _Namespace(run(name, helpers[name]))

        ns = run(self.word, self.source)
        if "behavior" not in ns:
            raise DictionaryError(f"{self.word} defines no `behavior`; a behavior word ends "
                                  "with `behavior = avm.Behavior(...)` or a step function")
        return ns["behavior"]


class _Namespace:
    """What ``use(name)`` returns: attribute access to a helper word's globals."""

    def __init__(self, ns: dict) -> None:
        self.__dict__.update({k: v for k, v in ns.items() if not k.startswith("__")})
