"""A seed replays the same run in a fresh process, whatever Python's hash salt is.

Python salts str and bytes hashes per process, so anything that iterates hash order
(a Map, a set of channels) would make traces differ between processes; the simulator and
Map iteration must not depend on it. This test fails if either does.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import hashlib
    from avm import Behavior, Map, Sim, format_event

    fan = Behavior("fan")

    @fan.on("peers")
    def peers(state, table):
        return [], table

    @fan.on("tick")
    def tick(state, n):
        # One message per map entry: the order of the outputs is the map's order.
        return [(cap, ("got", name, n)) for name, cap in state.items()], state

    sink = Behavior("sink")

    @sink.on("got")
    def got(state, name, n):
        return [], (*state, (name, n))

    sim = Sim(seed=5, hosts=("a", "b", "c"), faults="loss=0.1,dup=0.1,delay=1-9")
    names = [f"m{i}" for i in range(8)]
    for i, name in enumerate(names):
        sim.spawn(name, sink, (), host="abc"[i % 3])
    sim.spawn("fan", fan, None, host="a")
    sim.send(sim.cap("fan"), ("peers", Map({n: sim.cap(n) for n in names})))
    for n in range(5):
        sim.send(sim.cap("fan"), ("tick", n))
    sim.run()
    text = "\\n".join(format_event(sim.net, e) for e in sim.trace)
    print(hashlib.sha256(text.encode()).hexdigest(), len(sim.trace))
""")


def run_with_hash_seed(seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    return out.stdout.strip()


def test_same_seed_same_trace_across_processes():
    results = {run_with_hash_seed(s) for s in ("0", "1", "2", "12345")}
    assert len(results) == 1, results
