"""Long run of the containment fuzz (issue 5, item 10; promise P9).

    python bench/fuzz_containment.py --count 5000

Runs the plan checker of ``tests/test_trust_contain.py`` (``check_plan``, the body of
``test_fuzz_odd_values_and_exceptions_never_halt_the_network``) with ``--count``
examples instead of CI's 120: odd values (mutable containers, objects
whose ``__str__``/``__repr__``/``__eq__``/``__hash__``/``__bool__`` raise, subclasses of
our types, sealers, NaN, -0.0, huge ints, malformed capabilities) and odd exceptions
(``SystemExit``, ``GeneratorExit``, ``RecursionError``, exceptions that cannot be
printed) thrown through ``Sim.submit``, a step's outputs, state and result, and commons
requests. Every example checks that the network keeps running, that a later batch still
applies, and that a snapshot taken with the bad message queued runs too. Prints the
number of examples and the time taken; exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_trust_contain as t  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="examples to run")
    args = ap.parse_args()
    fuzz = settings(max_examples=args.count, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))(given(plan=t.PLANS)(t.check_plan))
    start = time.perf_counter()
    fuzz()
    dt = time.perf_counter() - start
    print(f"containment fuzz: {args.count} examples, 0 halts, 0 internal errors, {dt:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
