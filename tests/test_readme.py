"""The README is executable: its Python tour runs, and its commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

INSTALL_AND_RUN = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/avm demo"
INSTALL_AND_TEST = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest")


def test_the_tour_runs_as_written(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)
    assert "quiescent" in capsys.readouterr().out


def test_the_two_commands_are_there_and_ci_uses_the_same_tests():
    shell = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert shell[0].strip() == INSTALL_AND_RUN
    assert shell[1].strip() == INSTALL_AND_TEST
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest\n" in ci
    assert "pip install --quiet -e '.[test]'" in ci


def test_every_linked_doc_exists_or_is_announced():
    # docs/testing.md and docs/fault-model.md are written alongside the test kit.
    pending = {"docs/testing.md", "docs/fault-model.md"}
    for link in re.findall(r"\]\((docs/[^)]+)\)", README):
        assert (ROOT / link).exists() or link in pending, link
