"""The code style gates run with the tests: ruff and mypy (strict) must stay clean."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "ruff", "check", "i2v_watcher", "tests", "bench"],
    [sys.executable, "-m", "mypy"],
])
def test_clean(command: list[str]) -> None:
    if shutil.which(command[2]) is None and subprocess.run(
            [sys.executable, "-m", command[2], "--version"], capture_output=True).returncode != 0:
        pytest.fail(f"{command[2]} is not installed: install the test extra (pip install -e '.[test]')")
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
