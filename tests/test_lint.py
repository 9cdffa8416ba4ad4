"""The code style gates run with the tests: ruff and mypy (strict) must stay clean."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("tool", [["ruff", "check", "."], ["mypy"]])
def test_clean(tool: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *tool], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
