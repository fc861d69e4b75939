"""Twenty host processes on this machine form a network through the DHT alone (each
joins through host 0 only, and no routing record is handed over: every peer is found by
a lookup) and deliver a workload
around the ring with 0 anomalies (issue 8). ``bench/soak_hosts.py`` runs it long."""

from __future__ import annotations

import os

from avm.host import multicheck as mc

HOSTS = int(os.environ.get("AVM_MULTIHOST_HOSTS", "20"))


def test_twenty_hosts_find_each_other_through_the_dht_and_lose_nothing(tmp_path):
    o = mc.Options(str(tmp_path), HOSTS, mc.free_ports(HOSTS), learn_records=False,
                   join_all=False, pace_seconds=0.01)
    result, figures = mc.run(o, 0, 0, census_start=False, min_sent=10, progress=print)
    report = result.report
    print(report)
    print(figures)
    report.assert_ok()
    assert len(report.pairs) == HOSTS
    assert all(p.committed >= 10 and p.applied == p.committed for p in report.pairs)
    # each host learned of others beyond host 0 through Kademlia's lookups
    assert all(c > 1 for c in figures.contacts), figures.contacts
    assert result.forged_applied == 0 and result.dropped_unseal == result.forged_sent
    assert figures.censuses == (HOSTS,)  # one ball per host, none lost or copied
    assert result.bounces > HOSTS
