"""The CI entry point and the README's commands are valid shell (a syntax error there stops
every CI run before a single test)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", [".ci/run", "scripts/test", "scripts/demo"])
def test_the_scripts_parse(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
