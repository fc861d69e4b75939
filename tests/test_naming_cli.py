"""``avm name``: keygen, serve, publish, resolve, as separate processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avm.cli import main

SRC = str(Path(__file__).resolve().parent.parent / "src")


def avm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-m", "avm", "name", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture
def dht_node():
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-m", "avm", "name", "serve"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = proc.stdout.readline()  # blocks until the node has bound its port
        assert line.startswith("listening on 127.0.0.1:"), (line, proc.stderr.read())
        yield line.split()[-1]
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_publish_then_resolve_through_a_served_node(tmp_path, dht_node):
    key = tmp_path / "host.key"
    made = avm("keygen", str(key))
    assert made.returncode == 0, made.stderr
    address = made.stdout.strip()
    assert len(address) == 52 and oct(key.stat().st_mode & 0o777) == "0o600"
    assert avm("keygen", str(key)).returncode == 2  # never overwrites a key

    pub = avm("publish", "--key", str(key), "--endpoint", "127.0.0.1:7400",
              "--endpoint", "[::1]:7400", "--join", dht_node)
    assert pub.returncode == 0, pub.stderr
    assert pub.stdout.startswith(address) and "at 1 DHT nodes" in pub.stdout

    got = avm("resolve", address, "--join", dht_node, "--json")
    assert got.returncode == 0, got.stderr
    rec = json.loads(got.stdout)
    assert rec["address"] == address and rec["endpoints"] == ["127.0.0.1:7400", "[::1]:7400"]

    other = avm("keygen", str(tmp_path / "other.key")).stdout.strip()
    missing = avm("resolve", other, "--join", dht_node)
    assert missing.returncode == 1 and "no valid record" in missing.stderr


def test_bad_arguments_are_refused_clearly(tmp_path, capsys):
    assert main(["name", "resolve", "not-an-address", "--join", "127.0.0.1:9"]) == 2
    assert "not an address" in capsys.readouterr().err
    assert main(["name", "publish", "--key", "k", "--endpoint", "localhost:1",
                 "--join", "127.0.0.1:9"]) == 2  # argparse: not an IP literal
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 5)
    assert main(["name", "publish", "--key", str(short), "--endpoint", "127.0.0.1:1",
                 "--join", "127.0.0.1:9"]) == 2
    assert "at least 32 bytes" in capsys.readouterr().err
