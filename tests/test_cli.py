"""submit, status, retry and check-config, as a user runs them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, Folders, cli, make_image

Start = Callable[..., Daemon]


def test_submit_then_run_publishes_with_the_given_settings(folders: Folders, start: Start,
                                                            tmp_path: Path) -> None:
    image = make_image(tmp_path / "holiday photo.jpg", fmt="JPEG")
    result = cli("submit", str(image), "--prompt", "waves at dusk", "--set", "num_frames=4",
                 "--set", "backend_options={motion: pan-left}", "--config", str(folders.config), check=True)
    assert result.stdout.strip() == str(folders.inbox / "holiday photo.jpg")
    assert folders.files("inbox") == ["holiday photo.jpg", "holiday photo.yaml"]  # no temporaries left
    # The same image again: a free name, never an overwrite of the queued job.
    again = cli("submit", str(image), "--config", str(folders.config), check=True)
    assert again.stdout.strip() == str(folders.inbox / "holiday photo-1.jpg")
    assert start(folders.config, "--once").wait() == 0
    meta = folders.metadata("holiday photo")
    assert meta["prompt"] == "waves at dusk" and meta["parameters"]["num_frames"] == 4
    assert meta["generation"]["motion"] == "pan-left"
    assert (folders.outbox / "holiday photo-1.mp4").exists()


def test_submit_refuses_bad_settings_before_writing_anything(folders: Folders, tmp_path: Path) -> None:
    image = make_image(tmp_path / "a.png")
    result = cli("submit", str(image), "--set", "num_frames=0", "--config", str(folders.config))
    assert result.returncode == 2 and "num_frames" in result.stderr
    result = cli("submit", str(image), "--set", "flavour=mint", "--config", str(folders.config))
    assert result.returncode == 2 and "flavour: unknown key" in result.stderr
    result = cli("submit", str(tmp_path / "a.gif"), "--config", str(folders.config))
    assert result.returncode == 2
    assert folders.files("inbox") == []


def test_status_counts_every_folder(folders: Folders, start: Start) -> None:
    make_image(folders.inbox / "ok.png")
    (folders.inbox / "bad.png").write_bytes(b"nope")
    assert start(folders.config, "--once").wait() == 3
    make_image(folders.inbox / "queued.png")
    make_image(folders.inbox / "sub" / "queued2.webp", fmt="WEBP")
    (folders.inbox / ".DS_Store").write_bytes(b"x")
    job = folders.work / "testhost" / "20260101T000000Z-abcdef01"
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({
        "job_id": "20260101T000000Z-abcdef01", "worker_id": "testhost", "stage": "claimed", "key": "busy",
        "inputs": ["busy.png"], "claimed_at": "2026-01-01T00:00:00+00:00"}))
    result = json.loads(cli("status", "--json", "--config", str(folders.config), check=True).stdout)
    assert result["counts"] == {"queued": 2, "in_progress": 1, "done": 1, "failed": 1, "workers_alive": 0}
    assert result["queued"] == ["queued.png", "sub/queued2.webp"]
    assert result["in_progress"][0]["job"] == "busy" and result["in_progress"][0]["stage"] == "claimed"
    assert result["failed"][0]["name"] == "bad" and result["failed"][0]["stage"] == "load"
    text = cli("status", "--config", str(folders.config), check=True).stdout
    assert "queued       2" in text and "bad  [load]" in text


def test_retry_moves_failed_jobs_back_into_the_inbox(folders: Folders, start: Start) -> None:
    (folders.inbox / "a.png").write_bytes(b"nope")
    (folders.inbox / "a.yaml").write_text("num_frames: 4\n")
    (folders.inbox / "b.png").write_bytes(b"nope")
    (folders.inbox / "sub").mkdir()
    (folders.inbox / "sub" / "c.png").write_bytes(b"nope")
    assert start(folders.config, "--once").wait() == 3
    assert cli("retry", "nothing-like-it", "--config", str(folders.config)).returncode == 2
    moved = cli("retry", "a", "--config", str(folders.config), check=True).stdout.split("\n")
    assert moved[:2] == [str(folders.inbox / "a.yaml"), str(folders.inbox / "a.png")]  # sidecar first
    assert folders.files("inbox") == ["a.png", "a.yaml"]
    make_image(folders.inbox / "a.png")  # the user fixes the image meanwhile
    cli("retry", "--all", "--config", str(folders.config), check=True)
    assert folders.files("inbox") == ["a.png", "a.yaml", "b.png", "sub/c.png"]
    assert folders.files("failed") == []
    (folders.inbox / "b.png").unlink()
    (folders.inbox / "sub" / "c.png").unlink()
    assert start(folders.config, "--once").wait() == 0
    assert (folders.outbox / "a.json").exists()


def test_check_config(folders: Folders, tmp_path: Path) -> None:
    ok = cli("check-config", str(folders.config))
    assert ok.returncode == 0 and "configuration OK" in ok.stderr
    assert json.loads(ok.stdout)["inbox"] == str(folders.inbox)
    bad = tmp_path / "bad.toml"
    bad.write_text(folders.config.read_text() + "settle_s_typo = 3\n")
    result = cli("check-config", str(bad))
    assert result.returncode == 2 and "settle_s_typo: unknown key" in result.stderr
