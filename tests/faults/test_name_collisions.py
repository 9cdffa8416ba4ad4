"""Names that collide in failed/, done/ and the outbox: something that is not a folder (a file, a link, a
dangling link, a FIFO) under the name of a job's folder, put there by an earlier failed job or by a
user. Each such job ends with its report readable in failed/ and nothing left in work/: never held
there as if the folder were an operator's outage."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from conftest import Folders, make_image
from i2v_watcher.config.settings import load_settings
from i2v_watcher.ops.retry import retry

from .conftest import Spawn

BAD_SIDECAR = "num_frame: 4\n"  # a typo: the job fails at its sidecar, before any generation


def report_in(folder: Path, stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / f"{stem}.error.json").read_text())
    return data


def failing_job(folder: Path, stem: str) -> None:
    make_image(folder / f"{stem}.png")
    (folder / f"{stem}.yaml").write_text(BAD_SIDECAR)


def test_a_file_link_or_fifo_under_a_job_folders_name_never_keeps_the_job_in_work(
        folders: Folders, spawn: Spawn, tmp_path: Path) -> None:
    folders.write_config(keep_inputs="done")
    inbox, failed = folders.inbox, folders.failed
    # The case: a suffix-less file goes to failed/projX first...
    (inbox / "projX").write_text("not a job")
    (inbox / "old.error.json").write_text('{"message": "a report moved back into the inbox"}')
    first = spawn(folders.config, "--once")
    assert first.wait() == 3, first.log  # a job failed
    assert (failed / "projX").is_file() and report_in(failed, "projX")["stage"] == "watch"
    # An input named like a report never lies in failed/ under a report's name.
    assert sorted(p.name for p in failed.glob("*.error.json")) == ["old.error.json-1.error.json",
                                                                   "projX.error.json"]
    assert report_in(failed, "old.error.json-1")["files"] == ["old.error.json-1"]
    # ...then a job of the folder inbox/projX/ fails; and users put other things in the way.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (failed / "link").symlink_to(elsewhere)
    (failed / "dangling").symlink_to(tmp_path / "nothing")
    os.mkfifo(failed / "fifo")
    (failed / "deep").mkdir()
    (failed / "deep" / "er").write_text("a user's file")
    for rel in ("projX", "link", "dangling", "fifo", "deep/er"):
        (inbox / rel).mkdir(parents=True)
        failing_job(inbox / rel, "shot")
    (folders.done / "kept").write_text("a user's file")  # a published job's originals detour too
    make_image(inbox / "kept" / "good.png")
    folders.outbox.mkdir(exist_ok=True)
    (folders.outbox / "blocked").symlink_to(elsewhere)  # the outbox: the job fails, reported
    make_image(inbox / "blocked" / "clip.png")

    daemon = spawn(folders.config, "--once")
    assert daemon.wait() == 3, daemon.log
    assert folders.files("work") == [], daemon.log
    for rel, detour in (("projX", "projX-1"), ("link", "link-1"), ("dangling", "dangling-1"),
                        ("fifo", "fifo-1"), ("deep/er", "deep/er-1")):
        report = report_in(failed / detour, "shot")
        assert report["stage"] == "sidecar" and "num_frame" in report["message"], (rel, report)
        assert report["input"] == f"{rel}/shot" and sorted(report["files"]) == ["shot.png", "shot.yaml"]
        assert f"failed/{detour}/" in report["hint"] and f"failed/{rel} is" in report["hint"], report
    assert "a symbolic link" in report_in(failed / "link-1", "shot")["hint"]
    assert "a FIFO" in report_in(failed / "fifo-1", "shot")["hint"]
    assert (folders.outbox / "kept" / "good.mp4").is_file()
    assert (folders.done / "kept-1" / "good.png").is_file()
    blocked = report_in(failed / "blocked", "clip")
    assert blocked["stage"] == "publish" and "outbox/blocked is a symbolic link" in blocked["message"]
    assert list(elsewhere.iterdir()) == [] and (folders.failed / "fifo").is_fifo()
    assert "cannot write a destination folder" not in daemon.log

    # retry puts a detoured job back where it came from, not into a folder named after the detour.
    settings = load_settings(folders.config)
    moved = retry(settings, failed / "projX-1" / "shot.error.json")
    assert sorted(p.relative_to(inbox).as_posix() for p in moved) == ["projX/shot.png", "projX/shot.yaml"]
