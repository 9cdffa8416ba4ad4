"""A generated soundtrack through a real daemon: a backend plugin (tests/plugins/sine_backend.py) returns
its frames with a sine tone, as LTX-2 does; the daemon is killed after generation and resumes the encode
from what it kept (the frames' copy in scratch, the sound in the job's folder), and publishes the sound in
the MP4 only, at the clip's length, recorded in the metadata."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from conftest import Daemon, Folders, make_image

RATE = 24000  # the plugin's
CLIP_S = 1.0  # 8 frames at 8 fps; the plugin's sound lasts 1.1 s
Start = Callable[..., Daemon]


def streams(path: Path) -> str:
    """What ffmpeg says the file holds (`Stream #0:1: Audio: aac …`): no ffprobe here."""
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                            capture_output=True, text=True)
    return result.stderr


def sound_seconds(path: Path) -> float:
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i",
                             str(path), "-map", "0:a", "-ac", "1", "-f", "f32le", "-"],
                            capture_output=True, check=True)
    return len(np.frombuffer(result.stdout, dtype="<f4")) / RATE


def test_the_soundtrack_is_kept_across_a_crash_and_published_in_the_mp4_only(folders: Folders,
                                                                            start: Start) -> None:
    presets = {"silent": {"steps": [{"step": "encode", "codec": "libx264", "preset": "ultrafast",
                                     "audio": False}]},
               "gif": {"steps": [{"step": "gif", "width": 64}]},
               "webp": {"steps": [{"step": "webp", "width": 64}]}}
    folders.write_config(backend="sine", plugins=["sine_backend"], presets=presets)
    make_image(folders.inbox / "a.png")
    (folders.inbox / "a.yaml").write_text("num_frames: 8\nseed: 3\n"
                                          "postprocess: [archive, gif, webp, silent]\n")
    assert start(folders.config, "--once", I2V_CRASH_AT="pipeline.after_scratch").wait() == -9
    (job,) = folders.jobs_in_work()
    assert (job / "soundtrack.wav").stat().st_size == 44 + round(1.1 * RATE) * 2 * 2  # 16-bit stereo
    resumed = start(folders.config, "--once")
    assert resumed.wait() == 0, resumed.log
    assert not any(e["event"] == "progress" for e in resumed.events())  # encoded, not generated again

    meta = folders.metadata("a")
    assert meta["files"] == ["a.mp4", "a.gif.gif", "a.webp.webp", "a.silent.mp4", "a.jpg", "a.json"]
    assert meta["audio"] == {"rate": RATE, "channels": 2, "duration_s": 1.1}  # as the model made it
    outputs = {o["preset"]: o.get("audio") for o in meta["postprocess"]["outputs"]}
    assert outputs == {"archive": {"codec": "aac", "bitrate": "128k", "rate": RATE, "channels": 2,
                                   "duration_s": CLIP_S},
                       "gif": None, "webp": None, "silent": None}
    assert "Audio: aac" in streams(folders.outbox / "a.mp4")
    assert sound_seconds(folders.outbox / "a.mp4") == pytest.approx(CLIP_S, abs=0.025)  # cut to the clip
    for name in ("a.gif.gif", "a.webp.webp", "a.silent.mp4"):
        held = streams(folders.outbox / name)
        assert "Stream #0:0" in held and "Audio:" not in held, held
    assert folders.files("work") == []  # the sound went with the job's folder
