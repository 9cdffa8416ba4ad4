"""A daemon whose start fails after it took its worker folder leaves no ghost worker: `status` (and so
the dashboard and `i2v_worker_up`, which share its survey) lists no worker it never ran."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

from conftest import Daemon, Folders, cli, daemon_env

Start = Callable[..., Daemon]


def workers(folders: Folders) -> list[dict[str, Any]]:
    result = cli("status", "--config", str(folders.config), "--json", check=True)
    found: list[dict[str, Any]] = json.loads(result.stdout)["workers"]
    return found


def test_a_start_that_fails_after_the_lock_leaves_no_ghost(folders: Folders, start: Start) -> None:
    folders.write_config(plugins=["no_such_plugin_module"], worker_id="failed")  # imported after the lock
    result = cli("run", "--config", str(folders.config), env=daemon_env())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no_such_plugin_module" in result.stdout + result.stderr
    assert not (folders.work / "failed").exists()

    # Cut short while it loads its model: shown while it starts; neither start leaves a worker behind.
    folders.write_config(backend="slow-load", plugins=["slow_load"], worker_id="testhost")
    daemon = start(folders.config, SLOW_LOAD_S="60")
    daemon.read_until("ffmpeg found")
    assert [(w["worker_id"], w["state"]) for w in workers(folders)] == [("testhost", "unknown")]
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
    assert not (folders.work / "testhost").exists() and workers(folders) == []
