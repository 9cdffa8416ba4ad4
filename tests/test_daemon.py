"""The user's story, end to end: `i2v-watcher run` as a real process on real folders, real ffmpeg."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from conftest import Daemon, Folders, decode, make_image, wait_for
from i2v_watcher.fs.mounts import filesystem_type

Start = Callable[..., Daemon]


def test_drop_images_get_videos(folders: Folders, start: Start) -> None:
    make_image(folders.inbox / "a.png", (96, 72))
    (folders.inbox / "a.yaml").write_text("prompt: a calm lake\nnum_frames: 10\nfps: 12\nseed: 5\n")
    # A phone photo: upper-case suffix, stored sideways with an EXIF orientation tag.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    make_image(folders.inbox / "IMG_0001.JPG", (96, 72), fmt="JPEG", exif=exif)
    make_image(folders.inbox / "sub" / "dir" / "c.webp", (72, 72), fmt="WEBP")
    (folders.inbox / "sub" / "dir" / "c.yml").write_text("num_frames: 4\n")

    daemon = start(folders.config, "--once")
    assert daemon.wait() == 0, daemon.log

    clip = decode(folders.outbox / "a.mp4")
    assert (clip.frames, clip.width, clip.height, clip.fps) == (10, 86, 64, 12.0)
    assert clip.codec == "h264" and clip.pix_fmt.startswith("yuv420p")
    with Image.open(folders.outbox / "a.jpg") as poster:
        assert poster.size == (86, 64) and poster.format == "JPEG"
    meta = folders.metadata("a")
    assert meta["prompt"] == "a calm lake" and meta["seed"] == 5 and meta["backend"] == "preview"
    assert meta["parameters"]["num_frames"] == 10 and meta["parameters"]["fps"] == 12.0
    assert meta["requested"] == {"prompt": "a calm lake", "num_frames": 10, "fps": 12, "seed": 5}
    assert meta["files"] == ["a.mp4", "a.jpg", "a.json"]
    assert len(meta["input"]["sha256"]) == 64 and meta["input"]["sidecar"] == "a.yaml"
    assert set(meta["timings_s"]) >= {"load", "generate", "postprocess"}
    assert meta["versions"]["ffmpeg"].startswith("ffmpeg version") and meta["job_id"]
    assert meta["postprocess"]["ffmpeg_command"][-1] == "-y"

    phone = decode(folders.outbox / "IMG_0001.mp4")
    assert (phone.width, phone.height, phone.frames) == (64, 86, 6)  # upright: EXIF applied

    nested = decode(folders.outbox / "sub" / "dir" / "c.mp4")
    assert (nested.frames, nested.width, nested.height) == (4, 64, 64)
    assert folders.metadata("sub/dir/c")["files"] == ["sub/dir/c.mp4", "sub/dir/c.jpg", "sub/dir/c.json"]

    assert folders.files("inbox") == []
    assert folders.files("done") == ["IMG_0001.JPG", "a.png", "a.yaml", "sub/dir/c.webp", "sub/dir/c.yml"]
    assert folders.files("work") == [] and folders.files("failed") == []
    lines = daemon.events()
    job_lines = [e for e in lines if e.get("job") == "a"]
    assert job_lines and all(e["job_id"] == meta["job_id"] for e in job_lines)
    assert any(e["event"] == "progress" for e in job_lines)


def test_live_daemon_takes_new_files_and_a_late_sidecar(folders: Folders, start: Start) -> None:
    folders.write_config(sidecar_grace_s=1.5)
    daemon = start(folders.config)
    daemon.read_until("watching")
    make_image(folders.inbox / "late.png")
    time.sleep(0.5)  # the image is complete; its sidecar comes later, within sidecar_grace_s
    (folders.inbox / "late.yaml").write_text("num_frames: 3\nprompt: late\n")
    wait_for(lambda: (folders.outbox / "late.json").exists(), what="late.json")
    assert decode(folders.outbox / "late.mp4").frames == 3
    assert folders.metadata("late")["prompt"] == "late"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_a_slowly_written_file_is_not_taken_early(folders: Folders, start: Start, tmp_path: Path) -> None:
    folders.write_config(settle_s=1.0)
    source = make_image(tmp_path / "big.png", (320, 240), seed=3).read_bytes()
    (folders.inbox / "slow.yaml").write_text("num_frames: 3\n")
    daemon = start(folders.config)
    claimed_early: list[bool] = []

    def write_slowly() -> None:
        with open(folders.inbox / "slow.png", "wb") as handle:
            for start_at in range(0, len(source), len(source) // 10 + 1):
                handle.write(source[start_at:start_at + len(source) // 10 + 1])
                handle.flush()
                time.sleep(0.3)  # a slow NAS client: pauses shorter than settle_s
                claimed_early.append(bool(folders.jobs_in_work()))

    writer = threading.Thread(target=write_slowly)
    writer.start()
    writer.join()
    assert not any(claimed_early)
    wait_for(lambda: (folders.outbox / "slow.json").exists(), what="slow.json")
    # The metadata marks the outbox complete; the inputs move to done/ just after it.
    wait_for(lambda: (folders.done / "slow.png").exists(), what="done/slow.png")
    assert folders.files("failed") == []
    assert (folders.done / "slow.png").read_bytes() == source
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_name_clashes_in_the_outbox_never_overwrite(folders: Folders, start: Start) -> None:
    folders.outbox.mkdir()
    (folders.outbox / "a.mp4").write_bytes(b"somebody else's clip")
    make_image(folders.inbox / "a.png")
    make_image(folders.inbox / "b.png")
    (folders.inbox / "b.yaml").write_text("output_name: a\n")  # asks for the same name as a.png
    assert start(folders.config, "--once").wait() == 0
    assert (folders.outbox / "a.mp4").read_bytes() == b"somebody else's clip"
    outputs = folders.files("outbox")
    assert outputs == ["a-1.jpg", "a-1.json", "a-1.mp4", "a-2.jpg", "a-2.json", "a-2.mp4", "a.mp4"]
    assert {folders.metadata("a-1")["input"]["image"], folders.metadata("a-2")["input"]["image"]} == \
        {"a.png", "b.png"}


def test_output_template_and_keep_inputs_in_the_outbox(folders: Folders, start: Start) -> None:
    folders.write_config(output_template="video_{date}_{time}_{seed}", keep_inputs="outbox")
    make_image(folders.inbox / "x.png")
    (folders.inbox / "x.yaml").write_text("seed: 99\n")
    assert start(folders.config, "--once").wait() == 0
    (meta_file,) = folders.outbox.glob("*.json")
    meta = json.loads(meta_file.read_text())
    name = meta["name"]
    assert name.startswith("video_") and name.endswith("_99") and len(name.split("_")[1]) == 8
    assert meta["files"] == [f"{name}.mp4", f"{name}.jpg", f"{name}.source.png", f"{name}.source.yaml",
                             f"{name}.json"]
    assert sorted(folders.files("outbox")) == sorted(meta["files"])
    assert folders.files("done") == [] and folders.files("inbox") == []


def test_keep_inputs_delete(folders: Folders, start: Start) -> None:
    folders.write_config(keep_inputs="delete")
    make_image(folders.inbox / "x.png")
    assert start(folders.config, "--once").wait() == 0
    assert folders.files("outbox") == ["x.jpg", "x.json", "x.mp4"]
    assert folders.files("done") == [] and folders.files("inbox") == [] and folders.files("work") == []


def test_once_exit_codes(folders: Folders, start: Start) -> None:
    assert start(folders.config, "--once").wait() == 0  # an empty inbox is drained at once
    make_image(folders.inbox / "good.png")
    (folders.inbox / "broken.png").write_bytes(b"not an image")
    assert start(folders.config, "--once").wait() == 3
    assert (folders.outbox / "good.json").exists() and (folders.failed / "broken.error.json").exists()


def test_startup_errors_exit_2_with_a_hint(folders: Folders, start: Start) -> None:
    folders.inbox.rmdir()
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 2
    assert "does not exist" in daemon.log and "create_inbox" in daemon.log
    folders.inbox.mkdir()
    folders.write_config(ffmpeg_path="/nonexistent/ffmpeg")
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 2 and "imageio-ffmpeg" in daemon.log
    folders.settings.pop("ffmpeg_path")
    folders.write_config(backend="no-such-model")
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 2 and "unknown backend 'no-such-model'" in daemon.log


def test_inbox_that_vanishes_pauses_the_daemon_and_resumes(folders: Folders, start: Start) -> None:
    daemon = start(folders.config)
    make_image(folders.inbox / "first.png")
    wait_for(lambda: (folders.outbox / "first.json").exists(), what="first.json")
    aside = folders.inbox.with_name("unmounted")
    folders.inbox.rename(aside)  # the share goes away
    time.sleep(1.0)
    make_image(aside / "second.png")
    aside.rename(folders.inbox)  # and comes back, with a new job in it
    wait_for(lambda: (folders.outbox / "second.json").exists(), what="second.json")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    events = [e["event"] for e in daemon.events()]
    assert "inbox unavailable: paused until it is back" in events and "inbox is back: resuming" in events
    assert folders.files("failed") == []


def test_polling_mode_for_network_shares(folders: Folders, start: Start) -> None:
    folders.write_config(watch_mode="poll", poll_interval_s=0.2)
    daemon = start(folders.config)
    assert daemon.read_until("watch mode configured")["mode"] == "poll"
    make_image(folders.inbox / "polled.png")
    wait_for(lambda: (folders.outbox / "polled.json").exists(), what="polled.json")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_work_on_another_filesystem_than_the_inbox_is_refused(folders: Folders, start: Start,
                                                              tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or filesystem_type(shm) == filesystem_type(folders.inbox):
        pytest.skip("needs /dev/shm on a filesystem other than the temporary folder's")
    work = shm / f"i2v-test-{tmp_path.name}"
    folders.write_config(work=str(work))
    try:
        daemon = start(folders.config, "--once")
        assert daemon.wait() == 2
        assert "not on the same filesystem as the inbox" in daemon.log
    finally:
        shutil.rmtree(work, ignore_errors=True)
