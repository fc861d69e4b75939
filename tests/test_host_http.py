"""The HTTP control API of a host (avm.host.http), its client, metrics and the CLI on it.

Every server here listens on 127.0.0.1 on a port the OS picks; nothing sleeps: tests wait
for conditions (a line printed, a file written).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import avm
import avm.host
from avm import Map
from avm.cli import main
from avm.host import client as hc
from avm.host import http as hh
from avm.host.literal import parse_value, to_json

ROOT = Path(__file__).resolve().parents[1]

keeper = avm.Behavior("http.keeper")


@keeper.init
def _init(state, args):
    return [], Map({"n": 0, "peer": None, "restarts": 0})


@keeper.on("add")
def _add(state, n):
    return [], state.set("n", state["n"] + n)


@keeper.on("get")
def _get(state, reply):
    return [(reply, ("n", state["n"]))], state


@keeper.on("keep")
def _keep(state, peer):
    return [], state.set("peer", peer)


@keeper.on("boom")
def _boom(state):
    raise ValueError("boom")


@keeper.signal("restart")
def _restart(state, info):
    return [], state.set("restarts", state["restarts"] + 1)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _with_api(tmp_path, fn, durability="normal"):
    store = tmp_path / "h.avm"
    async with avm.host.open(store, behaviors=[keeper], durability=durability) as h:
        if not h.machines():
            await h.spawn("k", keeper, None)
            await h.spawn("other", keeper, None)
            h.live.dictionary.edit("main", "w", "x = 1\n")
        await h.idle()
        async with hh.serve(h, token_file=hh.token_file_for(store)) as api:
            return await fn(h, api)


def _routes(doc):
    """(method, path) of every operation in an OpenAPI document."""
    return sorted((m.upper(), p) for p, ops in doc["paths"].items() for m in ops)


def _path(p):
    return p.replace("{name}", "k").replace("{word}", "w")


def test_openapi_document_lists_every_route(tmp_path):
    async def go(h, api):
        async with httpx.AsyncClient(base_url=api.url) as c:
            r = await c.get("/openapi.json")
            assert r.status_code == 200
            doc = json.loads(r.text)
        served = {(m, r.path) for r in api.app.routes for m in getattr(r, "methods", ())
                  if r.path not in ("/openapi.json",) and m != "HEAD"}
        return doc, served

    doc, served = run(_with_api(tmp_path, go))
    assert doc["openapi"].startswith("3.")
    assert set(_routes(doc)) == served
    expected = {("GET", "/machines"), ("GET", "/machines/{name}"),
                ("GET", "/machines/{name}/state"), ("POST", "/machines/{name}/send"),
                ("POST", "/machines/{name}/ask"), ("GET", "/failures"), ("GET", "/drops"),
                ("GET", "/history"), ("GET", "/stats"), ("GET", "/metrics")} | {
        ("POST", f"/machines/{{name}}/{a}")
        for a in ("suspend", "resume", "stop", "restart", "destroy")}
    assert expected <= set(_routes(doc))
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_every_mutating_route_refuses_no_token_a_wrong_one_and_the_read_token(tmp_path):
    async def go(h, api):
        async with httpx.AsyncClient(base_url=api.url) as c:
            doc = (await c.get("/openapi.json")).json()
            posts = [p for m, p in _routes(doc) if m != "GET"]
            assert len(posts) >= 7
            before = (h.network.machines, await h.state("k"))
            body = {"content": '("add", 1)', "info": "None"}
            seen = {}
            for p in posts:
                for label, headers in (("none", {}),
                                       ("wrong", {"Authorization": "Bearer " + "0" * 64}),
                                       ("near", {"Authorization": "Bearer " + api.tokens.admin[:-1] + "x"}),
                                       ("read", {"Authorization": "Bearer " + api.tokens.read})):
                    r = await c.post(_path(p), json=body, headers=headers)
                    seen[(p, label)] = r.status_code
                    assert "detail" in r.json()
            await h.flush()
            after = (h.network.machines, await h.state("k"))
        return posts, seen, before, after

    posts, seen, before, after = run(_with_api(tmp_path, go))
    for p in posts:
        assert seen[(p, "none")] == 401, p
        assert seen[(p, "wrong")] == 401, p
        assert seen[(p, "near")] == 401, p
        assert seen[(p, "read")] == 403, p
    assert after == before  # nothing changed


def test_read_routes_work_with_the_read_token_and_need_one(tmp_path):
    async def go(h, api):
        out = {}
        async with httpx.AsyncClient(base_url=api.url) as c:
            doc = (await c.get("/openapi.json")).json()
            # "/" is the web page: public (it holds no data; it asks for a token)
            gets = [p for m, p in _routes(doc) if m == "GET" and p != "/"]
            for p in gets:
                q = "?limit=1" if p == "/events" else ""  # else an endless stream
                ok = await c.get(_path(p) + q, headers={"Authorization": "Bearer " + api.tokens.read})
                none = await c.get(_path(p))
                wrong = await c.get(_path(p), headers={"Authorization": "Bearer " + "1" * 64})
                assert wrong.status_code == 401, p
                out[p] = (ok.status_code, none.status_code)
        return out

    out = run(_with_api(tmp_path, go))
    assert len(out) >= 8
    for p, (ok, none) in out.items():
        assert ok == 200, p
        assert none == 401, p


def test_token_file_is_private_and_holds_fresh_tokens(tmp_path):
    path = tmp_path / "h.avm.http"

    async def go(h, api):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        return mode, json.loads(path.read_text()), api.tokens, api.url

    mode, data, tokens, url = run(_with_api(tmp_path, go))
    assert mode == 0o600
    assert data["url"] == url and url.startswith("http://127.0.0.1:")
    assert data["admin"] == tokens.admin and data["read"] == tokens.read
    assert len(bytes.fromhex(tokens.admin)) == 32 and tokens.admin != tokens.read
    assert not path.exists()  # removed when the API stops
    _, data2, tokens2, _ = run(_with_api(tmp_path, go))
    assert tokens2.admin != tokens.admin  # drawn again at every start


def test_send_ask_state_round_trip_through_the_client(tmp_path):
    async def go(h, api):
        async with hc.connect(token_file=api.token_file) as c:
            assert [m["name"] for m in await c.machines()] == ["k", "other"]
            assert [m["name"] for m in await c.machines(prefix="o")] == ["other"]
            assert [m["name"] for m in await c.machines(limit=1)] == ["k"]
            with pytest.raises(hc.HostError) as hidden:
                await c.state(avm.host.REPLIES)  # the host's own machine is not listed
            assert hidden.value.status == 404
            seqs = [await c.send("k", f'("add", {n})') for n in (1, 2, 3)]
            answer = await c.ask("k", '"get"')
            await c.send("k", '("keep", cap("other", ("secret", 42)))')
            st_ = await c.state("k")
            info = await c.machine("k")
        async with hc.connect(token_file=api.token_file, admin=False) as r:
            with pytest.raises(hc.HostError) as denied:
                await r.send("k", '("add", 1)')
        return seqs, answer, st_, info, denied.value

    seqs, answer, st_, info, denied = run(_with_api(tmp_path, go))
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert answer["answer"] == ["n", 6] and answer["text"] == "('n', 6)"
    assert st_["state"]["n"] == 6
    assert st_["state"]["peer"] == {"$cap": "other"}  # opaque: the context is not shown
    assert "secret" not in json.dumps(st_) and "42" not in json.dumps(st_["state"])
    assert info["batches"] >= 5 and info["failures"] == 0
    assert denied.status == 403 and "admin token" in denied.detail


def test_bad_requests_are_refused_clearly_and_change_nothing(tmp_path):
    async def go(h, api):
        errs = {}
        async with hc.connect(token_file=api.token_file) as c:
            before = h.network
            for label, call in (
                    ("list", c.send("k", '["add", 1]')),
                    ("syntax", c.send("k", '("add", ')),
                    ("eval", c.send("k", '__import__("os").system("true")')),
                    ("unknown", c.send("nobody", '("add", 1)')),
                    ("ask-int", c.ask("k", "5")),
                    ("ask-fails", c.ask("k", '("boom",)', timeout=10)),
                    ("state-unknown", c.state("nobody"))):
                with pytest.raises(hc.HostError) as e:
                    await call
                errs[label] = e.value
            unchanged = h.network.machines == before.machines
        return errs, unchanged

    errs, unchanged = run(_with_api(tmp_path, go))
    assert errs["list"].status == 400 and "tuple" in errs["list"].detail
    assert errs["syntax"].status == 400 and "Python literal" in errs["syntax"].detail
    assert errs["eval"].status == 400
    assert errs["unknown"].status == 404 and "nobody" in errs["unknown"].detail
    assert errs["ask-int"].status == 400
    assert errs["ask-fails"].status == 422 and "failed" in errs["ask-fails"].detail
    assert errs["state-unknown"].status == 404
    assert unchanged  # only ask-fails ran a batch, and it failed: states are the same


def test_process_control_and_logs_through_the_client(tmp_path):
    async def go(h, api):
        async with hc.connect(token_file=api.token_file) as c:
            assert await c.suspend("k") == "suspended"
            await c.send("k", '("add", 5)')
            await h.idle()
            queued = (await c.machine("k"))["queued"]
            st_suspended = (await c.state("k"))["state"]["n"]
            assert await c.resume("k") == "running"
            after = (await c.ask("k", '"get"'))["answer"]
            assert await c.restart("k") == "running"
            await h.idle()
            restarts = (await c.state("k"))["state"]["restarts"]
            await c.send("k", '("boom",)')
            await h.idle()
            failures = await c.failures()
            history = await c.history(limit=3)
            assert await c.stop("other") == "stopped"
            await c.send("other", '("add", 1)')
            await h.idle()
            drops = await c.drops()
            assert await c.destroy("other") == "destroyed"
            names = [m["name"] for m in await c.machines()]
        return queued, st_suspended, after, restarts, failures, history, drops, names

    queued, st_s, after, restarts, failures, history, drops, names = run(_with_api(tmp_path, go))
    assert queued == 1 and st_s == 0 and after == ["n", 5]
    assert restarts == 1
    assert failures and failures[0]["dest"] == "k" and failures[0]["rule"] == "exception"
    assert len(history) == 3 and all("ok" in r for r in history)
    assert drops and drops[0]["dest"] == "other"
    assert names == ["k"]


def _samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_counters_increase(tmp_path):
    async def go(h, api):
        async with hc.connect(token_file=api.token_file, admin=False) as r, \
                hc.connect(token_file=api.token_file) as c:
            first = await r.metrics()
            for n in range(5):
                await c.send("k", f'("add", {n})')
            await c.send("k", '("boom",)')
            await c.ask("k", '"get"')
            await h.idle()
            second = await r.metrics()
        return first, second

    first, second = run(_with_api(tmp_path, go, durability="full"))
    a, b = _samples(first), _samples(second)
    for name in ("avm_batches_total", "avm_batch_failures_total", "avm_drops_total",
                 "avm_interrupts_total", "avm_commits_total", "avm_queued_batches"):
        assert (name, ()) in b, name
    assert b[("avm_batches_total", ())] >= a[("avm_batches_total", ())] + 7
    assert b[("avm_batch_failures_total", ())] == a[("avm_batch_failures_total", ())] + 1
    assert b[("avm_commits_total", ())] > a[("avm_commits_total", ())]
    assert b[("avm_commit_latency_seconds_count", ())] > a[("avm_commit_latency_seconds_count", ())]
    assert b[("avm_commit_latency_seconds_bucket", (("le", "+Inf"),))] == \
        b[("avm_commit_latency_seconds_count", ())]
    assert b[("avm_group_commit_size_count", ())] >= 1
    assert b[("avm_up", ())] == 1
    fams = {f.name: f.type for f in text_string_to_metric_families(second)}
    assert fams["avm_batches"] == "counter"  # the parser strips _total from counters
    assert fams["avm_commit_latency_seconds"] == "histogram"
    for f in text_string_to_metric_families(second):
        assert f.name.startswith("avm_")


def test_json_logs_record_start_stop_and_failures(tmp_path):
    import io

    from avm.host.metrics import json_logger, log

    buf = io.StringIO()
    handler = json_logger(buf)

    async def go(h, api):
        async with hc.connect(token_file=api.token_file) as c:
            await c.send("k", '("boom",)')
            await h.idle()

    try:
        run(_with_api(tmp_path, go))
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    events = [d["event"] for d in lines]
    assert events[0] == "host.start" and events[-1] == "host.stop"
    assert "http.start" in events and "batch.failed" in events
    failed = next(d for d in lines if d["event"] == "batch.failed")
    assert failed["machine"] == "k" and failed["rule"] == "exception" and failed["level"] == "info"


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
                    | st.binary(max_size=8),
                    lambda kids: st.tuples(kids, kids) | st.lists(kids, max_size=3).map(tuple),
                    max_leaves=12))
def test_literal_text_reads_back_what_repr_writes(v):
    assert parse_value(repr(v)) == v
    json.dumps(to_json(v))  # always JSON


# -- the CLI on a live host ------------------------------------------------------------


class _HostThread:
    """A host with its HTTP API on an event loop of its own thread (the CLI runs its own)."""

    def __init__(self, tmp_path):
        self.store = tmp_path / "cli.avm"
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        async def go():
            self.loop = asyncio.get_running_loop()
            self.stop = asyncio.Event()
            async with avm.host.open(self.store, behaviors=[keeper], durability="normal") as h:
                await h.spawn("k", keeper, None)
                async with hh.serve(h, token_file=hh.token_file_for(self.store)):
                    self.ready.set()
                    await self.stop.wait()

        try:
            asyncio.run(go())
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e
            self.ready.set()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(30)
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


def test_machine_commands_against_a_live_host(tmp_path, capsys):
    with _HostThread(tmp_path) as ht:
        s = ["--store", str(ht.store)]
        assert main(["machine", "send", "k", '("add", 4)', *s]) == 0
        assert "sent" in capsys.readouterr().out
        assert main(["machine", "ask", "k", '"get"', *s]) == 0
        assert capsys.readouterr().out.strip() == "('n', 4)"
        assert main(["machine", "ls", *s]) == 0
        out = capsys.readouterr().out
        assert re.search(r"^k\s+http\.keeper\s+running\s+\d+\s+0\s+0$", out, re.M), out
        assert main(["machine", "state", "k", "--json", *s]) == 0
        assert json.loads(capsys.readouterr().out)["n"] == 4
        assert main(["machine", "suspend", "k", *s]) == 0
        assert capsys.readouterr().out.strip() == "k: suspended"
        assert main(["machine", "resume", "k", *s]) == 0
        assert main(["machine", "stop", "k", *s]) == 0
        assert capsys.readouterr().out.strip().endswith("k: stopped")
        data = json.loads(hh.token_file_for(ht.store).read_text())
        url = ["--url", data["url"]]
        assert main(["machine", "ls", *url, "--token", data["read"]]) == 0  # read token suffices
        capsys.readouterr()
        assert main(["machine", "resume", "k", *url, "--token", data["read"]]) == 2
        assert "admin token" in capsys.readouterr().err
        assert main(["machine", "send", "k", '["add"]', *s]) == 2
        assert "tuple" in capsys.readouterr().err
    assert main(["machine", "ls", "--store", str(ht.store)]) == 2  # the host has stopped
    err = capsys.readouterr().err
    assert "no token file" in err and "avm host run" in err


def test_machine_help_and_missing_address(capsys):
    assert main(["machine", "--help"]) == 0
    out = capsys.readouterr().out
    assert "ls" in out and "ask" in out and "cap(" in out
    assert main(["machine", "ls"]) == 2
    assert "--token-file" in capsys.readouterr().err
    assert main(["machine", "ls", "--url", "http://127.0.0.1:1", "--token", "x"]) == 2
    assert "cannot reach the host" in capsys.readouterr().err


APP = '''
import avm

tally = avm.Behavior("tally")


@tally.on("add")
def add(n, k):
    return [], n + k


@tally.on("get")
def get(n, reply):
    return [(reply, n)], n


def build(sim):
    sim.spawn("tally", tally, 0)
'''


def test_host_run_serves_the_http_api_until_ctrl_c(tmp_path, capsys):
    app = tmp_path / "app.py"
    app.write_text(APP)
    store = tmp_path / "app.avm"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.Popen([sys.executable, "-m", "avm", "host", "run", "--store", str(store),
                          "--app", str(app), "--http", "127.0.0.1:0", "--log", "off"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=tmp_path)
    try:
        lines = []
        for line in p.stdout:  # wait for the line that says the API is up
            lines.append(line)
            if "avm machine ls" in line:
                break
        text = "".join(lines)
        assert "HTTP control API: http://127.0.0.1:" in text, text + p.stderr.read()
        assert str(hh.token_file_for(store)) in text
        capsys.readouterr()
        assert main(["machine", "send", "tally", '("add", 3)', "--store", str(store)]) == 0
        assert main(["machine", "ask", "tally", '"get"', "--store", str(store)]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "3"
    finally:
        p.send_signal(signal.SIGINT)
        rc = p.wait(60)
    assert rc == 0, p.stderr.read()
    assert not hh.token_file_for(store).exists()
