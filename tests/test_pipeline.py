"""One job through the stages in-process: storage errors retried with backoff, retention."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import make_image
from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.config.settings import Settings
from i2v_watcher.fs.atomic import read_json
from i2v_watcher.inbox.watch import Candidate
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.state import Job
from i2v_watcher.media.ffmpeg import find_ffmpeg
from i2v_watcher.run import publish as publish_module
from i2v_watcher.run.pipeline import Pipeline
from i2v_watcher.service.bootstrap import prepare_folders
from i2v_watcher.service.retention import prune
from i2v_watcher.work.claim import claim
from i2v_watcher.work.store import WorkStore


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")},
                 create_inbox=True, worker_id="w", transient_retries=3, retry_backoff_s=0.01,
                 retry_backoff_max_s=0.02, defaults={"num_frames": 3, "resolution": "64p"})
    prepare_folders(s)
    return s


def job_for(settings: Settings, name: str = "a") -> Job:
    image = make_image(settings.inbox / f"{name}.png")
    job = claim(settings, WorkStore(settings), Candidate(key=name, image=image, mtime=image.stat().st_mtime))
    assert job is not None
    return job


def pipeline(settings: Settings) -> Pipeline:
    binary, _ = find_ffmpeg(None)
    return Pipeline(settings, {"preview": PreviewBackend(settings)}, binary, Checkpoint(), "preview")


def flaky(monkeypatch: pytest.MonkeyPatch, failures: int, code: int = errno.ENOSPC) -> list[Any]:
    calls: list[Any] = []
    real = publish_module.copy_atomic

    def copy(source: Path, final: Path, **kwargs: Any) -> None:
        calls.append(final)
        if len(calls) <= failures:
            raise OSError(code, os.strerror(code), str(final))
        real(source, final, **kwargs)

    monkeypatch.setattr(publish_module, "copy_atomic", copy)
    return calls


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT])
def test_an_outbox_that_cannot_be_written_keeps_the_job_until_it_can(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    calls = flaky(monkeypatch, failures=2, code=code)
    job = job_for(settings)
    steps = pipeline(settings)
    # An operator's problem, not the job's: kept in the work folder, nothing in failed/, no attempt spent.
    assert steps.run(job) == "held" and steps.run(Job.load(job.dir)) == "held"
    assert list(settings.failed.iterdir()) == [] and (job.dir / "job.json").exists()
    assert Job.load(job.dir).state.stage == "publishing" and not Job.load(job.dir).state.running
    assert steps.run(Job.load(job.dir)) == "published"
    assert len(calls) == 4  # two refused, then the clip and the poster
    assert sorted(p.name for p in settings.outbox.iterdir()) == ["a.jpg", "a.json", "a.mp4"]


def fail_writing_generated(monkeypatch: pytest.MonkeyPatch, code: int) -> list[Path]:
    """The work folder refuses the write that ends the generate stage (the job's state)."""
    real = Job.advance
    calls: list[Path] = []

    def refused(job: Job, stage: Any, **changes: Any) -> None:
        if stage == "generated":
            calls.append(job.dir)
            raise OSError(code, os.strerror(code), str(job.dir / "job.json"))
        real(job, stage, **changes)

    monkeypatch.setattr(Job, "advance", refused)
    return calls


def test_storage_in_the_work_folder_that_keeps_failing_fails_the_job_and_counts_across_restarts(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_writing_generated(monkeypatch, errno.ENOSPC)
    job = job_for(settings)
    job.advance("claimed", attempts=2)  # retries spent before a restart are not forgotten
    assert pipeline(settings).run(job) == "failed"
    report = read_json(settings.failed / "a.error.json")
    assert report["attempts"] == 3 and "storage kept failing" in report["message"]
    assert report["error_class"] == "OSError" and (settings.failed / "a.png").exists()
    assert list(settings.outbox.glob("*.mp4")) == [] and list(settings.worker_dir.iterdir()) == []


def test_a_non_transient_error_is_not_retried(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fail_writing_generated(monkeypatch, errno.EINVAL)
    assert pipeline(settings).run(job_for(settings)) == "failed"
    assert len(calls) == 1
    assert read_json(settings.failed / "a.error.json")["attempts"] == 0


def test_retention_prunes_done_and_failed_only_when_set(settings: Settings) -> None:
    for folder in (settings.done, settings.failed, settings.outbox):
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        (folder / "sub" / "old.png").write_bytes(b"x")
    assert prune(settings) == 0
    short = settings.model_copy(update={"retention_days": 0.1 / 86400})
    time.sleep(0.2)
    (settings.done / "fresh.png").write_bytes(b"x")
    assert prune(short) == 2
    assert not (settings.done / "sub").exists() and not (settings.failed / "sub").exists()
    assert (settings.done / "fresh.png").exists() and (settings.outbox / "sub" / "old.png").exists()


def test_job_ids_sort_in_claim_order_within_a_second() -> None:
    """Recovery resumes leftovers in id order; a pipelined daemon claims two jobs within a second."""
    from i2v_watcher.job.state import new_job_id

    ids = []
    for _ in range(50):
        ids.append(new_job_id())
        time.sleep(0.000_01)  # ids made in the same microsecond may come in either order
    assert ids == sorted(ids)
