"""``avm host run --listen --join``: identity kept 0600, the address the same across
restarts, hosts joining the DHT through each other, routing records published and
republished, and a host with no DHT still working alone (issue 8, item 7)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from avm.core.errors import UsageError
from avm.host.identity import SEED_BYTES, identity_path, load_or_create
from avm.host.multicheck import free_ports

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}
WAIT_SECONDS = 120.0  # generous: the whole suite shares two cores


class Proc:
    """A child ``avm`` process whose output lines are read as they come."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "avm", *args], cwd=cwd, env=ENV,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, text: str, timeout: float = WAIT_SECONDS) -> str:
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r}; saw {self.seen}") from None
            if line == "":
                raise AssertionError(f"exited ({self.p.wait()}) before {text!r}; saw {self.seen}")
            self.seen.append(line)
            if text in line:
                return line

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=30)


def host(tmp: Path, name: str, port: int, *more: str) -> Proc:
    return Proc("host", "run", "--store", f"{name}.avm", "--listen", f"127.0.0.1:{port}",
                "--no-http", "--log", "off", *more, cwd=tmp)


def address_of(line: str) -> str:
    return line.split("address ")[1].split()[0]


def resolve(tmp: Path, address: str, join: int) -> dict | None:
    r = subprocess.run([sys.executable, "-m", "avm", "name", "resolve", address, "--join",
                        f"127.0.0.1:{join}", "--json"], cwd=tmp, env=ENV, text=True,
                       capture_output=True, timeout=WAIT_SECONDS)
    if r.returncode == 1:
        return None
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def until(cond, timeout: float = WAIT_SECONDS):
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_identity_file_is_made_once_0600_and_refused_when_others_can_read_it(tmp_path):
    path = identity_path(tmp_path / "h.avm")
    a, created = load_or_create(path)
    assert created and path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_bytes()) == SEED_BYTES
    b, again = load_or_create(path)
    assert not again and a.address == b.address  # the same address across restarts
    other, _ = load_or_create(tmp_path / "other.identity")
    assert other.address != a.address  # drawn from the OS random source
    os.chmod(path, 0o644)
    with pytest.raises(UsageError, match="0600"):
        load_or_create(path)
    short = tmp_path / "short.identity"
    short.write_bytes(b"x" * 5)
    os.chmod(short, 0o600)
    with pytest.raises(UsageError, match="exactly 32 bytes"):
        load_or_create(short)
    assert short.read_bytes() == b"x" * 5  # refused, never replaced


def test_three_hosts_join_publish_and_republish_and_keep_their_address(tmp_path):
    p0, p1, p2 = free_ports(3)
    procs = []
    try:
        first = host(tmp_path, "a", p0, "--ttl", "8")
        procs.append(first)
        addr_a = address_of(first.wait_for("address"))
        first.wait_for("serving")
        b = host(tmp_path, "b", p1, "--join", f"127.0.0.1:{p0}", "--ttl", "8")
        c = host(tmp_path, "c", p2, "--join", f"127.0.0.1:{p1}", "--ttl", "8")
        procs += [b, c]
        addr_b, addr_c = address_of(b.wait_for("address")), address_of(c.wait_for("address"))
        assert len({addr_a, addr_b, addr_c}) == 3
        # each host's record is found through any other host's DHT node
        rec_b = until(lambda: resolve(tmp_path, addr_b, p2))
        assert rec_b["endpoints"] == [f"127.0.0.1:{p1}"] and rec_b["host"] is None
        rec_c = until(lambda: resolve(tmp_path, addr_c, p0))
        assert rec_c["endpoints"] == [f"127.0.0.1:{p2}"]
        # republished before expiry: a later record with the same sequence, issued later
        later = until(lambda: (r := resolve(tmp_path, addr_b, p0)) and r["issued_ms"] > rec_b["issued_ms"] and r)
        assert later["seq"] == rec_b["seq"] and later["expires_ms"] > rec_b["expires_ms"]
        # b restarts on another port: same address, found at its new endpoint
        b.stop()
        (p3,) = free_ports(1)
        b2 = host(tmp_path, "b", p3, "--join", f"127.0.0.1:{p0}", "--ttl", "8")
        procs.append(b2)
        assert address_of(b2.wait_for("address")) == addr_b
        moved = until(lambda: (r := resolve(tmp_path, addr_b, p2)) and r["endpoints"] == [f"127.0.0.1:{p3}"] and r)
        assert moved["seq"] > rec_b["seq"]
    finally:
        for p in procs:
            p.stop()


def test_a_host_alone_runs_with_or_without_a_dht(tmp_path):
    (port,) = free_ports(1)
    alone = host(tmp_path, "solo", port, "--no-dht", "--seconds", "0.5")
    try:
        assert "DHT on UDP off" in alone.wait_for("listening on")
        alone.wait_for("serving")
        assert alone.p.wait(timeout=WAIT_SECONDS) == 0
    finally:
        alone.stop()
    first = host(tmp_path, "first", 0, "--seconds", "0.5")  # the first host of a DHT
    try:
        first.wait_for("serving")
        assert first.p.wait(timeout=WAIT_SECONDS) == 0
    finally:
        first.stop()
    bad = subprocess.run([sys.executable, "-m", "avm", "host", "run", "--store", "x.avm",
                          "--join", "127.0.0.1:1"], cwd=tmp_path, env=ENV, text=True,
                         capture_output=True, timeout=WAIT_SECONDS)
    assert bad.returncode == 2 and "need --listen" in bad.stderr
    assert not (tmp_path / "x.avm").exists()  # refused before anything was made
