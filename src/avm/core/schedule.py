"""Scheduling policy pieces: hybrid logical clocks, a pure PRNG, batch scores (rule 6).

    "Every batch gets a timestamp (a hybrid logical clock) when created. Among ready
    batches the scheduler prefers the earliest timestamp, weighted by priority, and no
    ready batch waits forever (aging). The order is deterministic given the same seed and
    inputs."

Everything here is a pure function of its arguments: the clock reading and the random
state are passed in and handed back, never read from the environment.
"""

from __future__ import annotations

__all__ = [
    "hlc_now",
    "hlc_recv",
    "rng_next",
    "rng_float",
    "rng_int",
    "score",
    "PRIORITY_TICKS",
]

_MASK64 = (1 << 64) - 1

#: How far (in clock ticks) priority 1 moves a batch ahead of priority 0. It also bounds
#: how long priority can delay a batch: a batch of priority -1 created at time t runs
#: before any batch of priority 1 created after ``t + 2 * PRIORITY_TICKS``. That bound is
#: the aging guarantee: every ready batch's score is fixed while new batches' scores
#: grow with the clock, so no ready batch waits forever.
PRIORITY_TICKS = 1000


# ---------------------------------------------------------------------------------------
# Hybrid logical clock: (physical, logical), compared as tuples.
# ---------------------------------------------------------------------------------------


def hlc_now(last: tuple[int, int], physical: int) -> tuple[int, int]:
    """The timestamp of a local event, strictly after ``last``."""
    lp, ll = last
    if physical > lp:
        return (physical, 0)
    return (lp, ll + 1)


def hlc_recv(last: tuple[int, int], remote: tuple[int, int], physical: int) -> tuple[int, int]:
    """The clock after receiving a message stamped ``remote``: after both."""
    lp, ll = last
    rp, rl = remote
    p = max(lp, rp, physical)
    if p == lp == rp:
        return (p, max(ll, rl) + 1)
    if p == lp:
        return (p, ll + 1)
    if p == rp:
        return (p, rl + 1)
    return (p, 0)


# ---------------------------------------------------------------------------------------
# SplitMix64: a small pure PRNG whose whole state is one integer.
#
# For fault-injection decisions only (loss, delay, crashes, partitions): one 64-bit
# output reveals the whole state, so it must never make keys or answer `random`; those
# come from keyed SHAKE-256 streams (avm.core.keys).
# ---------------------------------------------------------------------------------------


def rng_next(state: int) -> tuple[int, int]:
    """(64-bit output, next state)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31), state


def rng_float(state: int) -> tuple[float, int]:
    """A float in [0, 1)."""
    x, state = rng_next(state)
    return (x >> 11) / float(1 << 53), state


def rng_int(state: int, lo: int, hi: int) -> tuple[int, int]:
    """An int in [lo, hi] inclusive."""
    x, state = rng_next(state)
    return lo + x % (hi - lo + 1), state


# ---------------------------------------------------------------------------------------
# Batch scores
# ---------------------------------------------------------------------------------------


def score(ts: tuple[int, int], priority: float) -> tuple[float, int, int]:
    """Smaller runs first: the timestamp moved earlier by priority, then the raw timestamp.

    Ties after that are broken by the caller with a stable key (the channel), so the
    choice is a total order and therefore deterministic.

    ``priority`` is clamped to [-1, 1] (NaN counts as 0): whatever a batch claims, it
    moves at most ``PRIORITY_TICKS`` ahead, so the aging bound holds (rule 6).
    """
    if not -1.0 <= priority <= 1.0:
        priority = 1.0 if priority > 1.0 else -1.0 if priority < -1.0 else 0.0
    return (ts[0] - PRIORITY_TICKS * priority, ts[0], ts[1])
