"""docs/host.md is executable: its Python blocks run and print what they say."""

from __future__ import annotations

import re
from pathlib import Path

DOC = (Path(__file__).resolve().parent.parent / "docs" / "host.md").read_text()


def test_the_host_doc_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC, re.S)
    assert blocks
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/host.md python block {i}", "exec"), {})
    assert capsys.readouterr().out.split("\n")[:3] == ["('count', 2)", "('count', 3)", "3"]
