"""Conservation soak: the network-wide census of linear and relevant values (P8).

    python bench/soak_census.py                  # 2,000 seeds, the larger workload
    python bench/soak_census.py --seeds 200      # quicker
    python bench/soak_census.py --out docs/reports/soak-census.txt

For each seed: the ``juggler`` workload of ``tests/test_trust_conserve.py`` on three
simulated hosts -- machines that pass linear coins and relevant badges to each other, to
a machine that fails, a stopped machine, an unknown address, ``null``, ``time``,
``reflect``, malformed commons requests and ``feedback`` with linear tags, failing some of
their own steps -- with every fault kind on (loss, duplication, corruption, delay and so
reordering, host crashes, partitions) and a retry budget small enough to be spent; one
juggler is stopped half-way; then heal and run to quiescence. The census
(``avm.testing.watch_census``) is checked after every step: the linear items of the
whole network (states, inboxes, the wire and outboxes, returned values, dead letters)
change only by what enters from outside, what committed steps make, and what ``null``
consumes; no relevant value disappears. Any violation stops the run with its seed.
CI runs 1,000 seeds of a smaller version (``test_census_holds_across_1000_seeds...``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_workload():
    path = ROOT / "tests" / "test_trust_conserve.py"
    spec = importlib.util.spec_from_file_location("conserve_workload", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=2_000, help="seeds (default 2,000)")
    p.add_argument("--first", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--steps", type=int, default=40, help="steps per phase with faults on")
    p.add_argument("--jugglers", type=int, default=4)
    p.add_argument("--coins", type=int, default=3, help="linear coins per juggler")
    p.add_argument("--go", type=int, default=6, help="rounds each juggler plays")
    p.add_argument("--out", type=Path, help="also write the report to this file")
    args = p.parse_args(argv)
    w = load_workload()
    from avm.testing import check_census

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"avm conservation soak: seeds {args.first}..{args.first + args.seeds - 1}, "
        f"{args.jugglers} jugglers x {args.coins} coins, {args.go} rounds, "
        f"{args.steps} steps per faulty phase, 3 hosts")
    say(f"faults: {w.CENSUS_FAULTS}; retry_max={w.CENSUS_CONFIG.retry_max}")
    t0 = time.perf_counter()
    kinds: Counter = Counter()
    totals: Counter = Counter()
    for seed in range(args.first, args.first + args.seeds):
        try:
            sim, k = w.census_seed(seed, args.steps, jugglers=args.jugglers,
                                   coins_each=args.coins, go=args.go)
        except Exception as e:  # an InvariantViolation names the seed and the step
            say(f"VIOLATION at seed {seed}: {type(e).__name__}: {e}")
            return 1
        kinds.update(k)
        r = check_census(sim)
        totals["steps"] += sim.steps
        totals["events"] += len(sim.trace)
        totals["ticks"] += sim.net.now
        totals["census checks"] += r.steps
        totals["linear at start"] += r.start
        totals["linear injected"] += r.injected
        totals["linear made by steps"] += r.created
        totals["linear nulled"] += r.nulled
        totals["linear at the end"] += r.census.linear
        totals["of which dead letters"] += r.census.places["dead letters"]
        totals["violations"] += r.violations
    secs = time.perf_counter() - t0
    say()
    for key in ("steps", "events", "ticks", "census checks", "linear at start", "linear injected",
                "linear made by steps", "linear nulled", "linear at the end",
                "of which dead letters", "violations"):
        say(f"  {key:<24} {totals[key]:>12,}")
    say()
    say("what happened (all seeds):")
    for key in w.CENSUS_KINDS:
        say(f"  {key:<24} {kinds[key]:>12,}")
    missing = [k for k in w.CENSUS_KINDS if not kinds[k]]
    say()
    say(f"{args.seeds:,} seeds in {secs:.1f} s: {totals['violations']} violations"
        + (f"; NEVER HAPPENED: {missing}" if missing else "; every fault kind fired"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0 if totals["violations"] == 0 and not missing else 1


if __name__ == "__main__":
    raise SystemExit(main())
