"""Three host processes on 127.0.0.1 exchange batches through fault proxies while they
are killed with kill -9 at random, again and again; the shared checker then finds
nothing lost, duplicated, reordered or made up, duplicates were refused, no forged
capability applied, and the linear census never changed (issue 8, "what must be true").

The workload is :mod:`avm.host.multicheck` (a ring: host i forwards to host i+1, and
linear balls circle the ring). The seed is printed so that the kill points replay;
``AVM_MULTIHOST_KILLS`` sets the number of kills (``bench/soak_hosts.py`` runs long).
"""

from __future__ import annotations

import os
import random

from avm.host import multicheck as mc

KILLS = int(os.environ.get("AVM_MULTIHOST_KILLS", "30"))
CHAOS = "drop=0.005,duplicate=0.005,reorder=0.005,truncate=0.003,corrupt=0.003,delay=0-0.002"


def test_three_hosts_under_faults_and_kill_minus_9_keep_every_promise(tmp_path):
    seed = random.randrange(1 << 30)
    print(f"multi-host kill test seed {seed}")
    o = mc.Options(str(tmp_path), 3, mc.free_ports(3), chaos=CHAOS)
    result, figures = mc.run(o, KILLS, seed, census_every=15)
    report = result.report
    print(report)
    print(figures)
    assert figures.kills == KILLS
    report.assert_ok(refused_min=1)  # P1-P4: 0 lost, duplicated, reordered, phantoms
    assert report.total("committed") == report.total("applied") > 0
    assert all(p.committed > 0 for p in report.pairs), "every host's batches crossed"
    assert figures.duplicates > 0  # replayed batches were refused, never applied
    assert result.forged_sent > 0 and result.forged_applied == 0  # P7 across hosts
    assert result.dropped_unseal == result.forged_sent  # each forgery refused, at its receiver
    assert set(figures.censuses) == {o.n} and len(figures.censuses) >= 3  # P8: n balls
    assert result.dead_letters == 0  # no value stuck anywhere
    assert result.bounces > o.n  # the balls did cross hosts
