"""The ``avm`` command: help texts, running networks, failures and their exit codes.

Most tests call ``main([...])`` in-process and read the output with ``capsys``; one runs
``python -m avm --help`` as a real subprocess. The networks under test are small modules
written into ``tmp_path`` so the tests do not depend on the examples; the shipped
examples get their own smoke tests, skipped while a file is missing.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avm import __version__
from avm.cli import main, split_target

ROOT = Path(__file__).resolve().parent.parent

# A relay on h0 forwards ("forward", n) to a counter on h1, so batches cross hosts and
# faults have something to act on.
APP = '''
import avm

HOSTS = ("h0", "h1")

counter = avm.Behavior("counter")


@counter.init
def start(_state, total):
    return [], avm.Map(total=total, count=0, last=None)


@counter.on("add")
def add(state, n):
    return [], state.update(total=state["total"] + n, count=state["count"] + 1, last=n)


def total(sim):
    state = sim.state("counter")
    return 0 if state is None else state["total"]


relay = avm.Behavior("relay")


@relay.on("forward")
def forward(target, n):
    return [(target, ("add", n))], target


def build(sim):
    hosts = sorted(sim.net.hosts)
    sim.spawn("counter", counter, 0, host=hosts[-1])
    sim.spawn("relay", relay, sim.cap("counter", "add"), host=hosts[0])
    for n in range(1, 6):
        sim.send(sim.cap("relay"), ("forward", n))


def build_small(sim):
    build(sim)
    sim.invariant(lambda s: total(s) < 6, "counter stays below 6")


def build_crash(sim):
    raise RuntimeError("the build went wrong")


def build_bad_invariant(sim):
    build(sim)

    def explodes(s):
        raise KeyError("missing")

    sim.invariant(explodes)
'''


@pytest.fixture
def isolated(monkeypatch):
    """Undo what loading user modules does to sys.path and sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    keep = (sys.prefix, sys.base_prefix, str(ROOT / "src"))
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if not file.startswith(keep):  # a user module the test loaded
            del sys.modules[name]


@pytest.fixture
def app(tmp_path, isolated) -> str:
    path = tmp_path / "relay_app.py"
    path.write_text(textwrap.dedent(APP))
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- help ------------------------------------------------------------------------------


def test_main_help_lists_commands_with_examples(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "Abstract Virtual Machines" in out
    for word in ("sim", "version", "examples:", "avm sim examples/bank.py --seed 1"):
        assert word in out


def test_sim_help_explains_target_hosts_faults_and_exit_codes(capsys):
    code, out, _ = run(capsys, "sim", "--help")
    assert code == 0
    for word in ("TARGET", "build(sim)", "HOSTS", "--seed", "--steps", "--faults", "--quiet",
                 "--debug", "loss=P", "delay=A-B", "examples:", "exit status"):
        assert word in out, word


def test_version_help_and_version(capsys):
    code, out, _ = run(capsys, "version", "--help")
    assert code == 0 and "avm version" in out
    code, out, _ = run(capsys, "version")
    assert code == 0 and out.startswith(f"avm {__version__}")
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"avm {__version__}"


def test_no_command_prints_help_and_fails(capsys):
    code, _, err = run(capsys)
    assert code == 2
    assert "usage: avm" in err


def test_python_m_avm_help_in_a_subprocess():
    r = subprocess.run([sys.executable, "-m", "avm", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: avm")
    assert "sim" in r.stdout


# -- running ---------------------------------------------------------------------------


def test_sim_prints_trace_final_states_and_summary(capsys, app):
    code, out, err = run(capsys, "sim", app, "--seed", "1")
    assert code == 0, err
    assert out.startswith(f"# avm sim {app} --seed 1")
    assert "spawn counter on h1" in out
    assert "counter <- relay" in out  # a batch crossed from h0 to h1
    assert "quiescent" in out
    assert "final states:" in out
    assert "counter (h1): Map({'last': 5, 'count': 5, 'total': 15})" in out
    assert "seed 1:" in out and "invariants: 0 checked" in out


def test_quiet_prints_only_the_summary(capsys, app):
    code, out, _ = run(capsys, "sim", app, "--seed", "4", "--quiet", "--faults", "all")
    assert code == 0
    assert "final states" not in out and "spawn" not in out
    lines = out.splitlines()
    assert lines[0].startswith("seed 4: ") and lines[0].endswith("quiescent")
    assert any(line.startswith("batches: ") and " ok, 0 failed" in line for line in lines)
    assert any(line.startswith("drops: 0") for line in lines)
    assert any(line.startswith("faults injected: ") for line in lines)
    assert any(line.startswith("delivery: ") for line in lines)


def test_same_seed_same_output(capsys, app):
    args = ("sim", app, "--seed", "11", "--faults", "loss=0.2,dup=0.2,delay=1-30")
    first = run(capsys, *args)
    second = run(capsys, *args)
    assert first == second
    assert first[0] == 0
    assert "refused-duplicate" in first[1] or "lost" in first[1]  # faults really acted


def test_same_seed_same_output_in_fresh_processes(app):
    # Python randomises str hashes per process, and with them the iteration order of
    # Maps: the printed trace and states must not depend on it.
    outs = []
    for hashseed in ("1", "2"):
        r = subprocess.run(
            [sys.executable, "-m", "avm", "sim", app, "--seed", "3", "--faults", "all"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONHASHSEED": hashseed})
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1]
    assert "'total': 15" in outs[0]


def test_steps_limit_stops_early_and_says_so(capsys, app):
    code, out, err = run(capsys, "sim", app, "--steps", "3", "--quiet")
    assert code == 3  # documented: the run stopped while still busy
    assert "seed 0: 3 steps" in out and "still busy" in out
    assert "exit status 3" in err


def test_hosts_option_overrides_module_hosts(capsys, app):
    code, out, _ = run(capsys, "sim", app, "--hosts", "a,b,c")
    assert code == 0
    assert "# hosts: a, b, c" in out
    assert "counter (c): Map(" in out and "relay (a)" in out


def test_named_build_function(capsys, app):
    code, out, _ = run(capsys, "sim", f"{app}:build", "--quiet")
    assert code == 0 and "quiescent" in out


def test_dotted_module_target(capsys, tmp_path, isolated, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text(textwrap.dedent(APP))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "sim", "mypkg.app", "--quiet")
    assert code == 0, err
    assert "quiescent" in out


def test_faults_on_one_host_are_reported_as_inert(capsys, app):
    code, _, err = run(capsys, "sim", app, "--hosts", "solo", "--faults", "all", "--quiet")
    assert code == 0
    assert "one host" in err and "--hosts" in err


def test_split_target():
    assert split_target("examples/bank.py") == ("examples/bank.py", "build")
    assert split_target("examples/bank.py:build_small") == ("examples/bank.py", "build_small")
    assert split_target("pkg.mod:main") == ("pkg.mod", "main")
    assert split_target(r"C:\x\bank.py") == (r"C:\x\bank.py", "build")


# -- invariant violations --------------------------------------------------------------


def test_invariant_violation_exits_1_with_seed_and_reproducing_command(capsys, app):
    code, out, err = run(capsys, "sim", f"{app}:build_small", "--seed", "5",
                         "--faults", "delay=1-9")
    assert code == 1
    assert "invariant 'counter stays below 6' failed at step" in err
    assert "(seed 5)" in err
    command = err.split("reproduce with:\n", 1)[1].strip()
    argv = shlex.split(command)
    assert argv[:2] == ["avm", "sim"]
    assert argv[2] == f"{app}:build_small"
    assert argv[argv.index("--seed") + 1] == "5"
    assert argv[argv.index("--faults") + 1] == "delay=1-9"
    step = int(argv[argv.index("--steps") + 1])
    assert f"failed at step {step} " in err
    assert "final states" not in out

    # The printed command reproduces the failure exactly, at the same step...
    again = run(capsys, *argv[1:])
    assert again[0] == 1
    assert again[1:] == (out.replace("--steps 10000", f"--steps {step}"), err)
    # ...and one step fewer runs clean (and stops while still busy: status 3).
    fewer = argv[1:]
    fewer[fewer.index("--steps") + 1] = str(step - 1)
    assert run(capsys, *fewer)[0] == 3


def test_quiet_violation_still_shows_the_failing_step(capsys, app):
    code, out, err = run(capsys, "sim", f"{app}:build_small", "--quiet")
    assert code == 1
    assert "counter <- relay" in out
    assert "reproduce with:" in err


def test_invariant_that_raises_is_a_violation(capsys, app):
    code, _, err = run(capsys, "sim", f"{app}:build_bad_invariant", "--seed", "2")
    assert code == 1
    assert "invariant 'explodes' failed at step 1 (seed 2): KeyError" in err
    assert "--seed 2 --steps 1" in err


# -- user errors -----------------------------------------------------------------------


def test_missing_file_is_a_clear_error(capsys, tmp_path, isolated):
    code, out, err = run(capsys, "sim", str(tmp_path / "nope.py"))
    assert code == 2
    assert "no such file" in err and "nope.py" in err
    assert "Traceback" not in err and out == ""


def test_missing_module_is_a_clear_error(capsys, isolated):
    code, _, err = run(capsys, "sim", "no_such_pkg.app")
    assert code == 2
    assert "no module named 'no_such_pkg.app'" in err
    assert "Traceback" not in err


def test_not_a_target_at_all(capsys, isolated):
    code, _, err = run(capsys, "sim", "what is this")
    assert code == 2 and "neither a Python file nor a module name" in err


def test_missing_build_function_names_what_exists(capsys, app):
    code, _, err = run(capsys, "sim", f"{app}:nope")
    assert code == 2
    assert "has no function 'nope'" in err
    assert "build_small" in err  # lists what the module does define


def test_exception_in_build_no_traceback_unless_debug(capsys, app):
    code, _, err = run(capsys, "sim", f"{app}:build_crash")
    assert code == 2
    assert "RuntimeError: the build went wrong" in err
    assert "relay_app.py:" in err and "in build_crash" in err  # where, in one line
    assert "Traceback" not in err and "--debug" in err
    code, _, err = run(capsys, "sim", f"{app}:build_crash", "--debug")
    assert code == 2 and "Traceback" in err


def test_import_error_in_user_module(capsys, tmp_path, isolated):
    bad = tmp_path / "broken_app.py"
    bad.write_text("import avm\nx = 1 / 0\n")
    code, _, err = run(capsys, "sim", str(bad))
    assert code == 2
    assert "ZeroDivisionError" in err and "broken_app.py:2" in err
    assert "Traceback" not in err

    bad.write_text("def build(sim)\n    pass\n")
    code, _, err = run(capsys, "sim", str(bad))
    assert code == 2 and "syntax error" in err and "line 1" in err


def test_bad_hosts_value(capsys, tmp_path, isolated):
    bad = tmp_path / "hosts_app.py"
    bad.write_text("HOSTS = 'h0'\ndef build(sim):\n    pass\n")
    code, _, err = run(capsys, "sim", str(bad))
    assert code == 2 and "HOSTS must be" in err
    code, _, err = run(capsys, "sim", str(bad), "--hosts", "a,,b")
    assert code == 2 and "--hosts" in err


@pytest.mark.parametrize("spec, why", [
    ("loss=2", "probabilities are in [0, 1]"),
    ("bogus=0.1", "unknown fault 'bogus'"),
    ("delay=9-1", "ranges are A-B"),
    ("loss", "needs a value"),
])
def test_bad_faults_spec_is_a_clear_usage_error(capsys, app, spec, why):
    code, out, err = run(capsys, "sim", app, "--faults", spec)
    assert code == 2
    assert "argument --faults" in err and why in err
    assert out == ""


def test_bad_seed_is_a_usage_error(capsys, app):
    code, _, err = run(capsys, "sim", app, "--seed", "-1")
    assert code == 2 and "--seed" in err


# -- the shipped examples --------------------------------------------------------------


@pytest.mark.parametrize("name", ["counter", "bank"])
def test_shipped_example_runs(capsys, isolated, name):
    path = ROOT / "examples" / f"{name}.py"
    if not path.exists():
        pytest.skip(f"examples/{name}.py is not written yet")
    code, out, err = run(capsys, "sim", str(path), "--seed", "1")
    assert code == 0, err
    assert "final states:" in out and "quiescent" in out
    code, out, err = run(capsys, "sim", str(path), "--seed", "1", "--faults", "all", "--quiet")
    assert code == 0, err
    assert "none failed" in out
