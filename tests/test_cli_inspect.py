"""``avm sim`` inspection (issue 6, item 7): --state, --json, --seeds, --until, exit 3,
progress lines, and invariants that see the previous network."""

from __future__ import annotations

import json
import textwrap

import pytest

from avm.cli import EXIT_BUSY, main
from avm.core.caps import address_text

APP = '''
import avm
from avm.core.network import state_of

HOSTS = ("h0", "h1")

counter = avm.Behavior("counter")


@counter.init
def start(_state, total):
    return [], avm.Map(total=total, blob=b"\\x00\\xff", big=tuple(range(200)), me=None,
                       token=avm.Linear("gold"), **{"$odd": 1.5})


@counter.signal("self")
def learn(state, me):
    return [], state.set("me", me("main"))


@counter.on("add")
def add(state, n):
    return [], state.set("total", state["total"] + n)


def build(sim):
    sim.spawn("counter", counter, 0, host="h1")
    for n in range(1, 6):
        sim.send(sim.cap("counter"), ("add", n))

    @sim.invariant
    def never_down(prev, net):       # sees the network before and after each step
        if "counter" not in prev.names or state_of(prev, "counter") is None:
            return True
        return state_of(net, "counter")["total"] >= state_of(prev, "counter")["total"]


def build_suspended(sim):
    build(sim)
    sim.run()
    sim.suspend("counter")
    sim.send(sim.cap("counter"), ("add", 1))


def build_down(sim):                 # the total goes down once, at seeds 3 and 7 only
    build(sim)
    if sim.seed in (3, 7):
        sim.send(sim.cap("counter"), ("add", -100))


def build_forever(sim):              # a machine that keeps itself busy
    loop = avm.Behavior("loop")

    @loop.signal("self")
    def go(_state, me):
        return [(me("go"), "spin")], me("go")

    @loop.on("spin")
    def spin(cap):
        return [(cap, "spin")], cap

    sim.spawn("loop", loop, None)
'''


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "inspect_app.py"
    path.write_text(textwrap.dedent(APP))
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_state_prints_one_machine_whole(capsys, app):
    code, out, _ = run(capsys, "sim", app, "--quiet", "--state", "counter")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("counter (h1): "))
    assert "199" in line and line.endswith("'total': 15})")  # whole, not cut at 300 chars
    code, out, _ = run(capsys, "sim", app)
    cut = next(ln for ln in out.splitlines() if ln.startswith("  counter (h1): "))
    assert cut.endswith("...") and "'total': 15" not in cut  # without --state: cut short


def test_state_of_an_unknown_machine_is_a_usage_error(capsys, app):
    code, _, err = run(capsys, "sim", app, "--state", "nobody")
    assert code == 2 and "--state nobody" in err and "machines: counter" in err


def test_json_is_one_document_with_whole_values(capsys, app):
    code, out, _ = run(capsys, "sim", app, "--json", "--seed", "2")
    assert code == 0
    doc = json.loads(out)
    assert (doc["seed"], doc["end"], doc["exit"], doc["violation"]) == (2, "quiescent", 0, None)
    st = doc["states"]["counter"]
    assert st["host"] == "h1" and st["behavior"] == "counter"
    state = st["state"]
    # A key starting with "$" makes the map a tagged list of pairs.
    pairs = dict((k, v) for k, v in state["$map"])
    assert pairs["total"] == 15 and pairs["big"] == list(range(200))
    assert pairs["blob"] == {"$bytes": "00ff"} and pairs["$odd"] == 1.5
    assert pairs["token"] == {"$linear": "gold"}
    cap = pairs["me"]["$capability"]
    assert set(cap) == {"address", "kind", "priority"}  # opaque: no sealed bytes
    assert len(cap["address"]) == len(address_text(bytes(32)))
    assert any("quiescent" in line for line in doc["trace"])
    code, out, _ = run(capsys, "sim", app, "--json", "--quiet", "--state", "counter")
    doc = json.loads(out)
    assert "trace" not in doc and list(doc["states"]) == ["counter"]


def test_json_rendering_is_the_same_in_every_run(capsys, app):
    a = run(capsys, "sim", app, "--json", "--seed", "4", "--faults", "loss=0.2")[1]
    b = run(capsys, "sim", app, "--json", "--seed", "4", "--faults", "loss=0.2")[1]
    assert a == b


def test_stopping_while_busy_exits_3_and_says_so(capsys, app):
    code, out, err = run(capsys, "sim", f"{app}:build_forever", "--steps", "50", "--quiet")
    assert code == EXIT_BUSY == 3
    assert "still busy after 50 steps" in out and "quiescent" not in out
    assert "exit status 3" in err
    code, out, _ = run(capsys, "sim", f"{app}:build_forever", "--steps", "50", "--json")
    assert code == 3 and json.loads(out)["end"] == "still busy"


def test_until_steps_stops_there_and_is_not_an_error(capsys, app):
    code, out, _ = run(capsys, "sim", f"{app}:build_forever", "--until", "40", "--quiet")
    assert code == 0
    assert "seed 0: 40 steps" in out and "as asked (--until 40)" in out


def test_until_idle_accepts_waiting_work_but_quiescent_does_not(capsys, app):
    code, out, err = run(capsys, "sim", f"{app}:build_suspended", "--quiet")
    assert code == 3
    assert "idle: nothing can run, but batches are waiting" in out
    assert "quiescent" not in out  # idle is never called quiescent
    code, out, _ = run(capsys, "sim", f"{app}:build_suspended", "--quiet", "--until", "idle")
    assert code == 0 and "idle: nothing can run" in out
    code, out, _ = run(capsys, "sim", f"{app}:build_suspended")
    trace_end = [ln for ln in out.splitlines() if ln.startswith("t=")][-1]
    assert "idle" in trace_end and "quiescent" not in trace_end


@pytest.mark.parametrize("bad", ["soon", "-3"])
def test_until_refuses_what_it_does_not_know(capsys, app, bad):
    code, _, err = run(capsys, "sim", app, "--until", bad)
    assert code == 2 and "--until" in err


def test_seeds_sweep_prints_a_table_and_a_line_per_tenth(capsys, app):
    code, out, err = run(capsys, "sim", app, "--seeds", "0-19", "--faults", "loss=0.2")
    assert code == 0
    assert out.startswith("20 seeds (0-19), until quiescent:")
    assert "quiescent          20" in out and "steps: min" in out
    assert err.count("seeds done") == 10 and "20/20 seeds done" in err  # not a tty


def test_seeds_sweep_names_failing_seeds_and_how_to_reproduce_them(capsys, app):
    code, out, _ = run(capsys, "sim", f"{app}:build_down", "--seeds", "0-9")
    assert code == 1
    assert "violation           2  3, 7" in out
    assert "seed 3: invariant 'never_down' failed" in out
    line = next(ln for ln in out.splitlines() if "reproduce with:" in ln and "--seed 7" in ln)
    argv = line.split("reproduce with: ", 1)[1].split()[1:]
    code, _, err = run(capsys, *argv, "--quiet")
    assert code == 1 and "never_down" in err


def test_seeds_sweep_as_json_and_busy_runs(capsys, app):
    code, out, _ = run(capsys, "sim", f"{app}:build_forever", "--seeds", "1,5,2",
                       "--steps", "30", "--json")
    assert code == 3
    doc = json.loads(out)
    assert [r["seed"] for r in doc["runs"]] == [1, 5, 2]
    assert {r["end"] for r in doc["runs"]} == {"still busy"}


@pytest.mark.parametrize("bad", ["x", "5-2", "1,,2", "-1"])
def test_seeds_spec_errors(capsys, app, bad):
    code, _, err = run(capsys, "sim", app, "--seeds", bad)
    assert code == 2 and "--seeds" in err


def test_a_long_run_prints_progress_lines_on_stderr(capsys, app):
    code, out, err = run(capsys, "sim", f"{app}:build_forever", "--until", "200", "--quiet",
                         "--progress", "1e-9")
    assert code == 0
    lines = [ln for ln in err.splitlines() if ln.startswith("avm: step ")]
    assert len(lines) > 10 and "batches queued" in lines[0]
    assert "avm: step" not in out
    code, out, err = run(capsys, "sim", f"{app}:build_forever", "--until", "200", "--quiet")
    assert "avm: step" not in err  # the default period is seconds: a short run shows none
