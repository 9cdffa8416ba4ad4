"""A job's state file when two threads change the state at once (the pipelined daemon's preload and
its generation): every change is on disk in the end, whatever the order of the writes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from i2v_watcher.fs.atomic import read_json
from i2v_watcher.job import state as job_module
from i2v_watcher.job.state import STATE_FILE, Job, JobState, new_job_id


def test_a_slow_write_of_an_older_state_never_lands_after_a_newer_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    job = Job(folder, JobState(job_id=new_job_id(), worker_id="w", stage="claimed", key="a", inputs=["a.png"],
                               running=True))
    real = job_module.write_json_atomic
    first_write_started = threading.Event()

    def slow_first(path: Path, payload: dict[str, Any], **kwargs: Any) -> None:
        if payload.get("seed") == 7 and not first_write_started.is_set():
            first_write_started.set()
            time.sleep(0.3)  # the preload's write is slow (a share): the other thread changes meanwhile
        real(path, payload, **kwargs)

    monkeypatch.setattr(job_module, "write_json_atomic", slow_first)
    preload = threading.Thread(target=lambda: job.advance("claimed", seed=7))
    preload.start()
    assert first_write_started.wait(5)
    job.advance("claimed", deaths=1)  # the generation thread counts the death of the last process
    preload.join()
    state = read_json(folder / STATE_FILE)
    assert (state["seed"], state["deaths"], state["running"]) == (7, 1, True)
