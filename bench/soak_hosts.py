"""A long run of host processes under faults and kill -9, with progress output.

    python bench/soak_hosts.py                          # 3 hosts, 300 kills, faults on
    python bench/soak_hosts.py --hosts 20 --kills 0 --seconds 120 --no-chaos
    python bench/soak_hosts.py --hosts 5 --kills 1000 --census-every 50 --seed 7

The workload of ``tests/test_multihost_ring.py`` (``avm.host.multicheck``): host i's
machines forward batches to host i+1 and linear balls circle the ring; every link runs
through a fault proxy; random hosts are killed with kill -9 and restarted. At the end
the clients stop, everything drains, the hosts are stopped and their stores read: the
shared checker's report (P1-P4), forged capabilities applied (P7) and the census of the
whole system (P8), taken also every ``--census-every`` kills with all hosts stopped.
Exit status 1 if any promise was broken.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from avm.host import multicheck as mc  # noqa: E402

CHAOS = "drop=0.005,duplicate=0.005,reorder=0.005,truncate=0.003,corrupt=0.003,delay=0-0.002"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--kills", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=0.0, help="run at least this long")
    ap.add_argument("--census-every", type=int, default=25)
    ap.add_argument("--chaos", default=CHAOS, help="the fault proxy's spec")
    ap.add_argument("--no-chaos", action="store_true")
    ap.add_argument("--dht-only", action="store_true",
                    help="join through host 0 only and hand over no records")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    seed = random.randrange(1 << 30) if args.seed is None else args.seed
    chaos = None if args.no_chaos else args.chaos
    print(f"soak: {args.hosts} hosts, {args.kills} kills, chaos {chaos or 'off'}, seed {seed}",
          flush=True)
    t0 = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {text}", flush=True)

    with tempfile.TemporaryDirectory(prefix="avm-soak-") as d:
        o = mc.Options(d, args.hosts, mc.free_ports(args.hosts), chaos=chaos,
                       learn_records=not args.dht_only, join_all=not args.dht_only)
        result, figures = mc.run(o, args.kills, seed, progress=progress,
                                 census_every=args.census_every, seconds=args.seconds)
    r = result.report
    print(r)
    print(f"kills {figures.kills}, restarts {figures.restarts}, duplicates refused "
          f"{figures.duplicates}, forged sent {result.forged_sent} / applied "
          f"{result.forged_applied} / refused {result.dropped_unseal}, censuses "
          f"{sorted(set(figures.censuses))} (want [{args.hosts}]), ball bounces "
          f"{result.bounces}, {figures.seconds:.1f} s")
    ok = (r.ok and result.forged_applied == 0 and set(figures.censuses) == {args.hosts}
          and r.total("committed") == r.total("applied"))
    print("OK" if ok else "PROMISES BROKEN")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
