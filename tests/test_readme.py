"""The README's quick start runs as printed."""
import os
import re

import pytest

pytestmark = pytest.mark.full

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_start_runs(capsys):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(code) == 1 and len(code[0].splitlines()) <= 20
    exec(compile(code[0], "README quick start", "exec"), {})
    assert "kernel_cosine" in capsys.readouterr().out
