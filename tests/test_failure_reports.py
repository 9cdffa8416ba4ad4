"""The words of a failure report, in-process: no Python traceback for the user (it goes to the log), an
internal error said as one, and a lone sidecar told what became of its image. And the detour names
that keep a job's folder in failed/ or done/ clear of a user's file."""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath

import pytest
import structlog
from test_pipeline import job_for, pipeline, settings

from conftest import make_image
from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.config.settings import Settings
from i2v_watcher.fs.atomic import NAME_MAX, read_json
from i2v_watcher.fs.detours import detour_name, detour_subdir, is_detour
from i2v_watcher.inbox.watch import Candidate, Inbox
from i2v_watcher.work.claim import claim
from i2v_watcher.work.store import WorkStore

__all__ = ["settings"]  # the fixture, shared with test_pipeline
LONE = "a sidecar without an image: no a.png/.jpg/.jpeg/.webp arrived within 600 s"


def lone_sidecar(settings: Settings, name: str = "a") -> Path:
    """The watcher's verdict on a sidecar whose image never came (or came first): a job to report."""
    sidecar = settings.inbox / f"{name}.yaml"
    sidecar.write_text("prompt: slow waves\n")
    job = claim(settings, WorkStore(settings), Candidate(key=name, sidecar=sidecar, problem=LONE))
    assert job is not None and pipeline(settings).run(job) == "failed"
    return settings.failed / f"{name}.error.json"


def test_a_typo_in_a_sidecar_is_reported_in_words_without_a_traceback(settings: Settings) -> None:
    job = job_for(settings)
    (job.input_dir / "a.yaml").write_text("num_frame: 4\n")
    job.advance("claimed", inputs=["a.png", "a.yaml"], sidecar="a.yaml")
    structlog.reset_defaults()
    with structlog.testing.capture_logs() as logged:
        assert pipeline(settings).run(job) == "failed"
    report = read_json(settings.failed / "a.error.json")
    assert "num_frame" in report["message"] and report["stage"] == "sidecar"
    assert "Traceback" not in str(report) and report["traceback"].startswith("none: the message says")
    failed = next(e for e in logged if e["event"] == "failed")
    assert "exception" not in failed and "num_frame" in failed["error"]


def test_an_internal_error_says_so_and_its_traceback_goes_to_the_log(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise KeyError("frames")

    monkeypatch.setattr(PreviewBackend, "generate", broken)
    job = job_for(settings)
    structlog.reset_defaults()
    with structlog.testing.capture_logs() as logged:
        assert pipeline(settings).run(job) == "failed"
    report = read_json(settings.failed / "a.error.json")
    assert report["message"] == "unexpected error: KeyError: 'frames'"
    assert "internal error" in report["hint"] and job.id in report["hint"] and "Traceback" not in str(report)
    assert job.id in report["traceback"] and "in the log of worker w" in report["traceback"]
    failed = next(e for e in logged if e["event"] == "failed")
    assert "Traceback (most recent call last)" in failed["exception"] and "in broken" in failed["exception"]


def test_a_lone_sidecar_says_its_image_was_already_published_with_the_defaults(settings: Settings) -> None:
    assert pipeline(settings).run(job_for(settings)) == "published"
    report = read_json(lone_sidecar(settings))
    assert report["message"].startswith(LONE)
    assert "its image a.png was already made into a video with the defaults" in report["message"]
    assert "outbox/a.mp4" in report["message"] and "done/./" not in report["message"]
    assert "original is in done/" in report["message"] and "beside the sidecar" in report["hint"]


def test_a_sidecar_that_came_while_its_image_was_made_says_so(settings: Settings) -> None:
    image_job = job_for(settings)  # claimed with the defaults, still in the work folder
    report = read_json(lone_sidecar(settings))
    assert f"being made into a video with the defaults now (job id {image_job.id})" in report["message"]


def test_a_lone_sidecar_whose_image_failed_with_the_defaults_points_to_that_report(
        settings: Settings) -> None:
    job = job_for(settings)
    job.input("a.png").write_bytes(b"not an image")
    assert pipeline(settings).run(job) == "failed"
    (settings.failed / "a.error.json").rename(settings.failed / "a-0.error.json")  # found by its input
    report = read_json(lone_sidecar(settings))
    assert "its image was taken before this sidecar came, with the defaults, and failed: see " \
        "failed/a-0.error.json" in report["message"]


def test_a_lone_sidecar_without_a_trace_of_its_image_keeps_the_plain_words(settings: Settings) -> None:
    make_image(settings.outbox / "b.png")  # another job's files say nothing about this one
    report = read_json(lone_sidecar(settings))
    assert report["message"] == LONE and report["hint"] == ""


def test_detour_names_fit_and_are_recognised(tmp_path: Path) -> None:
    long = "é" * 127  # 254 bytes
    assert len(os.fsencode(detour_name(long, "12"))) <= NAME_MAX and is_detour(long, detour_name(long, "12"))
    assert is_detour("proj-x", "proj-x-3") and is_detour("a", "a-20261207T051636Z-6d509cc3")
    assert not is_detour("proj", "other-1") and not is_detour("proj", "proj-") and is_detour("p", "p")
    (tmp_path / "a").write_text("a user's file")
    (tmp_path / "a-1").symlink_to(tmp_path / "nowhere")
    assert detour_subdir(tmp_path, PurePosixPath("a/b"), "job") == PurePosixPath("a-2/b")
    assert (tmp_path / "a-2" / "b").is_dir() and not (tmp_path / "nowhere").exists()


def test_a_link_left_in_the_inbox_is_remembered_through_a_detoured_report(
        settings: Settings, tmp_path: Path) -> None:
    (settings.inbox / "projX").mkdir()
    (settings.inbox / "projX" / "evil.png").symlink_to(tmp_path / "secret.png")
    (settings.failed / "projX").write_text("an earlier failed file without a suffix")
    (settings.failed / "projX-1").mkdir()  # where the link's report went (failed/ on another filesystem)
    (settings.failed / "projX-1" / "evil.error.json").write_text('{"left_in_inbox": {"evil.png": "link"}}')
    inbox = Inbox(settings.model_copy(update={"settle_s": 0.0, "rescan_s": 0.05}))
    inbox.scan()
    time.sleep(0.05)
    assert inbox.scan().ready == []  # not taken again and reported again at every rescan
    (settings.failed / "projX-1" / "evil.error.json").unlink()
    time.sleep(0.05)
    assert [c.key for c in inbox.scan().ready] == ["projX/evil"]
