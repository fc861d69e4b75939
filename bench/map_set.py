"""Cost of one ``Map`` update with its checks and size bounds, beside the bare persistent map.

    python bench/map_set.py

``Map.set`` validates the value, keeps the substructural index, the depth bound and the
size bounds (docs/values.md, "The total size"); ``immutables.Map.set`` is the same
persistent map with none of that: the ratio is what the checks cost. ``run_batch`` per
message is a whole step of a map-counter machine with every step-boundary check.
"""

from __future__ import annotations

import timeit

import immutables

from avm import Map
from avm.core.machine import Message, run_batch


def best_ns(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e9


def main() -> None:
    n = 10_000
    m = Map((f"k{i}", i) for i in range(n))
    bare = immutables.Map((f"k{i}", i) for i in range(n))
    tup = (1, "ab", 2.5)
    rows = [
        ("set an int", best_ns(lambda: m.set("k5", 7), 100_000),
         best_ns(lambda: bare.set("k5", 7), 100_000)),
        ("set a 3-atom tuple", best_ns(lambda: m.set("k5", tup), 100_000),
         best_ns(lambda: bare.set("k5", tup), 100_000)),
        ("set a new key", best_ns(lambda: m.set("new", 7), 100_000),
         best_ns(lambda: bare.set("new", 7), 100_000)),
        ("delete a key", best_ns(lambda: m.delete("k5"), 100_000),
         best_ns(lambda: bare.delete("k5"), 100_000)),
    ]

    def step(msg, s):
        return (), s.set("k5", s["k5"] + 1)

    msgs = [Message("in", ("x",)) for _ in range(1000)]
    per_msg = best_ns(lambda: run_batch(step, m, msgs), 20) / len(msgs)
    print(f"{'operation (10,000-entry map)':32} {'avm Map':>10} {'immutables':>11} {'ratio':>7}")
    for name, ours, theirs in rows:
        print(f"{name:32} {ours:8.0f}ns {theirs:9.0f}ns {ours / theirs:6.1f}x")
    print(f"{'run_batch, one map update/msg':32} {per_msg:8.0f}ns")


if __name__ == "__main__":
    main()
