"""``avm demo`` and ``avm host run`` (avm.host.demo)."""

from __future__ import annotations

from avm.cli import main

APP = '''
import avm

tally = avm.Behavior("tally")


@tally.on("add")
def add(n, k):
    return [], n + k


def build(sim):
    sim.spawn("tally", tally, 0)
    sim.send(sim.cap("tally"), ("add", 5))
'''


def test_demo_runs_and_comes_back_from_its_store(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path), "--seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "created" in out and "avm store check" in out
    assert "HTTP control API: http://127.0.0.1:" in out and "avm machine ls" in out
    assert "bank total 250 (always 250)" in out
    assert main(["demo", "--dir", str(tmp_path), "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "reopened" in out and "bank total 250 (always 250)" in out
    assert main(["store", "check", str(tmp_path / "demo.avm")]) == 0


def test_host_run_builds_an_app_once(tmp_path, capsys):
    app = tmp_path / "app.py"
    app.write_text(APP)
    store = tmp_path / "app.avm"
    args = ["host", "run", "--store", str(store), "--app", str(app), "--seconds", "0.1"]
    assert main(args) == 0
    assert "1 machines" in capsys.readouterr().out
    assert main(args) == 0  # reopened: not built twice
    assert "1 machines" in capsys.readouterr().out
    import asyncio

    import avm.host
    from avm.host.apps import behaviors_of, load_module

    async def state():
        async with avm.host.open(store, behaviors=behaviors_of([load_module(str(app))])) as h:
            return await h.state("tally")

    assert asyncio.run(state()) == 5
    assert main(["host", "run", "--store", str(store), "--app", str(tmp_path / "nope.py")]) == 2


def test_host_run_with_isolated_workers_runs_steps_from_an_app_file(tmp_path, capsys):
    """``--isolation workers``: a step defined in an ``--app FILE.py`` (not importable by
    name in a fresh interpreter) still runs, in a worker."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    store = tmp_path / "app.avm"
    args = ["host", "run", "--store", str(store), "--app", str(app), "--seconds", "0.1",
            "--isolation", "workers", "--no-http", "--log", "off"]
    assert main(args) == 0
    assert "steps workers" in capsys.readouterr().out
    import asyncio

    import avm.host
    from avm.host.apps import behaviors_of, load_module

    async def state():
        async with avm.host.open(store, behaviors=behaviors_of([load_module(str(app))]),
                                 isolation="workers") as h:
            for _ in range(500):  # the build's batch may still be queued: wait for it
                if await h.state("tally") == 5:
                    break
                await asyncio.sleep(0.01)
            failures = h._rt.counters["failures"]
            return await h.state("tally"), failures, h._pool.counters["batches"]

    got, failures, batches = asyncio.run(state())
    assert (got, failures) == (5, 0)
