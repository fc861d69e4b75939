"""The README's commands are the ones CI runs, and its links lead somewhere.

Its Python tour and its `avm` command lines are run by tests/test_docs.py."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

INSTALL_AND_RUN = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/avm demo"
INSTALL_AND_TEST = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest")


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
