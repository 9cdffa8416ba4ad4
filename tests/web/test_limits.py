"""The dashboard's limits that need no server: which byte ranges it serves, and the open-files limit it
needs for web_max_connections. The same limits against a real server: tests/faults/test_web_limits.py."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Folders
from i2v_watcher.config.settings import load_settings
from i2v_watcher.errors import StartupError
from i2v_watcher.web import server as http_server
from i2v_watcher.web.files import Unsatisfiable, byte_range

HUGE = "9" * 5000  # Python refuses to convert a string this long to an int at all


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=10-19", (10, 10)), ("bytes=90-", (90, 10)), ("bytes=-5", (95, 5)), ("bytes=0-999", (0, 100)),
    ("bytes=0-", (0, 100)), (f"bytes=0-{HUGE}", (0, 100)), (f"bytes=-{HUGE}", (0, 100)),
    ("bytes=0-1,5-6", None), ("items=0-5", None), ("bytes=-", None), ("bytes=\u0661-\u0662", None),
    ("bytes=100-", Unsatisfiable), ("bytes=-0", Unsatisfiable), ("bytes=20-10", Unsatisfiable),
    (f"bytes={HUGE}-", Unsatisfiable), (f"bytes={HUGE}-{HUGE}", Unsatisfiable),
])
def test_byte_ranges_of_a_100_byte_file(header: str, expected: Any) -> None:
    """(start, length); None: the whole file (not served as a range); Unsatisfiable: a 416."""
    if expected is Unsatisfiable:
        with pytest.raises(Unsatisfiable):
            byte_range(header, 100)
    else:
        assert byte_range(header, 100) == expected


def test_the_open_files_limit_is_raised_to_fit_the_connections_or_the_start_is_refused(
        monkeypatch: pytest.MonkeyPatch, folders: Folders) -> None:
    settings = load_settings(folders.write_config(web_max_connections=1000))
    limits = {"now": (256, 4096)}
    monkeypatch.setattr(http_server.resource, "getrlimit", lambda _: limits["now"])
    monkeypatch.setattr(http_server.resource, "setrlimit", lambda _, new: limits.update(now=new))
    http_server.ensure_descriptors(settings)
    assert limits["now"] == (1000 + http_server.SPARE_DESCRIPTORS, 4096)
    limits["now"] = (256, 512)
    with pytest.raises(StartupError, match="web_max_connections = 1000 needs 1384 open files"):
        http_server.ensure_descriptors(settings)
