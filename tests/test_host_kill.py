"""kill -9 a host under load, again and again: nothing acknowledged is lost, nothing is
applied twice or out of order, and the linear census stays constant (TESTING.md, kill tier).

Children come from a forkserver that has imported avm already, so a restart costs a
fork, not an interpreter start. Every wait is on a message from the child (with a
generous bound for a stuck child), never a sleep. The seed is printed to reproduce the
kill points.
"""

from __future__ import annotations

import multiprocessing
import os
import random

from avm.host import loadcheck

KILLS = int(os.environ.get("AVM_KILLS", "50"))
WAIT_SECONDS_MAX = 60.0


def _ctx():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["avm.host.loadcheck"])
    return ctx


def _start(ctx, path, mode):
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=loadcheck.child, args=(str(path), child, mode), daemon=True)
    p.start()
    child.close()
    return p, parent


def _recv(conn):
    assert conn.poll(WAIT_SECONDS_MAX), "the child host said nothing"
    return conn.recv()


def test_kill_minus_9_loses_nothing(tmp_path):
    seed = random.randrange(1 << 30)
    print(f"kill test seed {seed}")
    rng = random.Random(seed)
    ctx = _ctx()
    path = tmp_path / "kill.avm"
    p, conn = _start(ctx, path, "setup")
    assert _recv(conn) == ("ready", 1)
    p.join(WAIT_SECONDS_MAX)
    acked: list[int] = []
    censuses: list[int] = []
    for _ in range(KILLS):
        p, conn = _start(ctx, path, "load")
        kind, linear = _recv(conn)
        assert kind == "start"
        censuses.append(linear)
        for _ in range(rng.randint(0, 6)):  # a random moment: after 0..6 acknowledgements
            kind, k = _recv(conn)
            acked.append(k)
        p.kill()
        p.join(WAIT_SECONDS_MAX)
        assert p.exitcode == -9
        try:
            while conn.poll(0):  # acknowledgements sent before it died count too
                kind, k = conn.recv()
                acked.append(k)
        except EOFError:
            pass
        conn.close()
    p, conn = _start(ctx, path, "check")
    kind, seen, committed, linear = _recv(conn)
    p.join(WAIT_SECONDS_MAX)
    censuses.append(linear)
    figures = loadcheck.check(seen, committed, acked)
    print(f"kills {KILLS}, acknowledged {len(acked)}: {figures}, census {set(censuses)}")
    assert acked == sorted(set(acked)), "the client was acknowledged twice or out of order"
    assert figures["lost"] == figures["duplicated"] == figures["reordered"] == 0, figures
    assert figures["phantoms"] == figures["acked_not_committed"] == figures["violations"] == 0
    assert list(seen) == list(range(1, committed + 1))
    assert set(censuses) == {1}, "the linear ball was copied or lost"
    assert len(acked) > 0
