"""docs/capabilities.md is executable: each Python block runs on its own, as written.

The revocation section documents the real signatures of ``avm.patterns`` (a triple from
``Grants.issue``, ``forwarder_caps``, ``membrane_args``...); a block that drifts from
the code fails here. Every public name of the module must be mentioned in the doc."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from avm.core import patterns

DOC = (Path(__file__).resolve().parent.parent / "docs" / "capabilities.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", DOC, re.S)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_block_runs_on_its_own(i):
    exec(compile(BLOCKS[i], f"docs/capabilities.md python block {i}", "exec"), {})


def test_every_public_pattern_is_documented():
    assert len(BLOCKS) >= 8
    missing = [n for n in patterns.__all__ if f"`{n}" not in DOC and f" {n}(" not in DOC
               and f"{n}," not in DOC]
    assert missing == []
