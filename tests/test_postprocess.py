"""The post-processing chain: every step, every shipped preset, the allow-list, ffmpeg failures and
hangs. Every output is decoded and checked."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import Daemon, Folders, decode, make_image
from i2v_watcher.config.settings import Preset, Settings
from i2v_watcher.errors import FfmpegStalled, JobError, StartupError
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.spec import JobDefaults, JobSpec, resolve
from i2v_watcher.media.chains import build_chains
from i2v_watcher.media.ffmpeg import FFmpeg, find_ffmpeg
from i2v_watcher.media.graph import postprocess
from i2v_watcher.media.probes import check_presets
from i2v_watcher.media.process import run_ffmpeg
from i2v_watcher.steps import dump_step

FPS = 8.0
Start = Callable[..., Daemon]


@pytest.fixture(scope="module")
def binary() -> FFmpeg:
    return find_ffmpeg(None)[0]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")},
                    presets=CUSTOM)


def frames(count: int = 16, width: int = 64, height: int = 48) -> np.ndarray:
    """Bright, smoothly moving content (a model's frames are smooth), never black at the edges."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    clip = [np.stack([150 + 60 * np.sin(x / 9 + t / 3), 150 + 60 * np.cos(y / 7 + t / 4),
                      np.full_like(x, 120 + 4 * t)], axis=-1) for t in range(count)]
    return np.stack(clip).clip(0, 255).astype(np.uint8)


def encode(**options: Any) -> dict[str, Any]:
    return {"step": "encode", "codec": "libx264", "crf": 18, "preset": "veryfast", **options}


CUSTOM = {
    "crop": Preset(steps=[{"step": "crop", "width": 32, "height": 32}, encode()]),
    "fps": Preset(steps=[{"step": "fps", "fps": 24}, encode()]),
    "interpolate": Preset(steps=[{"step": "interpolate", "fps": 24}, encode()]),
    "fade": Preset(steps=[{"step": "fade", "in_s": 0.5, "out_s": 0.5}, encode()]),
    "loop": Preset(steps=[{"step": "loop", "count": 3}, encode()]),
    "boomerang": Preset(steps=[{"step": "loop", "count": 1, "boomerang": True}, encode()]),
    "speed": Preset(steps=[{"step": "speed", "factor": 2.0}, encode()]),
    "x265": Preset(steps=[encode(codec="libx265", crf=28, preset="ultrafast")]),
    "vp9": Preset(steps=[encode(codec="libvpx-vp9", crf=40)]),
    "yuv444": Preset(steps=[encode(pix_fmt="yuv444p", max_bitrate="2M")]),
    "still": Preset(steps=[{"step": "poster", "frame": 10}]),
    "padded-red": Preset(steps=[{"step": "scale_pad", "width": 96, "height": 128, "color": "#ff0000"},
                                encode(crf=10)]),
}


def run(settings: Settings, binary: FFmpeg, tmp_path: Path, presets: list[str],
        pixels: np.ndarray | None = None, overrides: dict[str, Any] | None = None) \
        -> tuple[dict[str, Path], dict[str, Any]]:
    spec = JobSpec(postprocess=presets, postprocess_overrides=overrides or {})
    params = resolve(spec, JobDefaults(), backend="preview", seed=1)
    out = tmp_path / "out"
    outputs, info = postprocess(frames() if pixels is None else pixels, FPS, out, binary,
                                build_chains(settings, params), settings, Checkpoint())
    return {o.suffix: out / o.file for o in outputs}, info


def test_shipped_presets_from_one_generation_in_one_ffmpeg_run(tmp_path: Path, binary: FFmpeg) -> None:
    settings = Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")})
    names = ["archive", "vertical-1080x1920", "square-1080", "landscape-1920x1080", "gif-preview",
             "webp-preview"]
    files, info = run(settings, binary, tmp_path, names)
    command = info["ffmpeg_command"]
    assert command.count("-i") == 1 and command[command.index("-i") + 1] == "pipe:"
    assert sorted(files) == sorted([".mp4", ".vertical-1080x1920.mp4", ".square-1080.mp4",
                                    ".landscape-1920x1080.mp4", ".gif-preview.gif", ".webp-preview.webp",
                                    ".jpg"])
    archive = decode(files[".mp4"])
    assert (archive.width, archive.height, archive.frames, archive.fps) == (64, 48, 16, 8.0)
    for suffix, size in ((".vertical-1080x1920.mp4", (1080, 1920)), (".square-1080.mp4", (1080, 1080)),
                         (".landscape-1920x1080.mp4", (1920, 1080))):
        clip = decode(files[suffix])
        assert (clip.width, clip.height) == size and clip.fps == 30.0 and clip.frames == 60, suffix
        assert clip.codec == "h264" and clip.pix_fmt.startswith("yuv420p")
        first = clip.pixels[0].astype(int)
        for corner in (first[0, 0], first[-1, -1]) if size != (1080, 1080) else ():
            assert corner.max() < 20, (suffix, corner)  # black padding
        assert first[size[1] // 2, size[0] // 2].min() > 60  # the picture in the middle
    with Image.open(files[".gif-preview.gif"]) as gif:
        assert gif.size == (480, 360) and gif.n_frames == 24  # 2 s at 12 fps
    with Image.open(files[".webp-preview.webp"]) as webp:
        assert webp.size == (480, 360)
        total_ms = 0
        for index in range(webp.n_frames):  # the encoder merges repeated frames into longer ones
            webp.seek(index)
            webp.load()
            total_ms += webp.info["duration"]
        assert abs(total_ms - 2000) <= 100
    with Image.open(files[".jpg"]) as poster:
        assert poster.size == (64, 48)


@pytest.mark.parametrize("preset,check", [
    ("crop", lambda v: (v.width, v.height, v.frames) == (32, 32, 16)),
    ("fps", lambda v: (v.fps, v.frames) == (24.0, 48)),
    ("interpolate", lambda v: (v.fps, v.frames) == (24.0, 48)),
    ("loop", lambda v: v.frames == 48),
    ("boomerang", lambda v: v.frames == 32),
    ("speed", lambda v: (v.frames, v.fps) == (8, 8.0)),
    ("x265", lambda v: v.codec == "hevc" and v.frames == 16),
    ("vp9", lambda v: v.codec == "vp9" and v.frames == 16),
    ("yuv444", lambda v: v.pix_fmt.startswith("yuv444p")),
])
def test_each_step(settings: Settings, binary: FFmpeg, tmp_path: Path, preset: str, check: Any) -> None:
    files, info = run(settings, binary, tmp_path, [preset])
    (clip_file,) = [path for suffix, path in files.items() if suffix != ".jpg"]
    assert check(decode(clip_file)), (preset, decode(clip_file))
    # Recorded for the metadata in full, defaults included: enough to run the same chain again.
    assert info["outputs"][0]["steps"] == [dump_step(step) for step in CUSTOM[preset].chain()]
    assert info["outputs"][0]["steps"][0]["step"] == CUSTOM[preset].steps[0]["step"]


def test_interpolation_makes_new_frames_not_copies(settings: Settings, binary: FFmpeg,
                                                   tmp_path: Path) -> None:
    fps_files, _ = run(settings, binary, tmp_path / "a", ["fps"])
    mci_files, _ = run(settings, binary, tmp_path / "b", ["interpolate"])
    repeated = decode(next(p for s, p in fps_files.items() if s != ".jpg")).pixels.astype(int)
    smooth = decode(next(p for s, p in mci_files.items() if s != ".jpg")).pixels.astype(int)
    still_pairs = sum(np.abs(repeated[i + 1] - repeated[i]).mean() < 0.5 for i in range(47))
    assert still_pairs >= 24  # plain fps repeats each frame three times (32 pairs, less coding noise)
    assert sum(np.abs(smooth[i + 1] - smooth[i]).mean() < 0.5 for i in range(47)) < still_pairs / 2


def test_fade_and_boomerang_content(settings: Settings, binary: FFmpeg, tmp_path: Path) -> None:
    faded = decode(run(settings, binary, tmp_path / "f", ["fade"])[0][".mp4"]).pixels
    assert faded[0].mean() < 15 and faded[-1].mean() < 15 and faded[8].mean() > 100
    boom = decode(run(settings, binary, tmp_path / "b", ["boomerang"])[0][".mp4"]).pixels.astype(int)
    assert np.abs(boom[0] - boom[-1]).mean() < 6 and np.abs(boom[15] - boom[16]).mean() < 6


def test_poster_step_and_padding_colour(settings: Settings, binary: FFmpeg, tmp_path: Path) -> None:
    pixels = frames()
    files, _ = run(settings, binary, tmp_path, ["padded-red", "still"], pixels)
    with Image.open(files[".still.jpg"]) as still:
        assert np.abs(np.asarray(still).astype(int) - pixels[10]).mean() < 8
        assert np.abs(np.asarray(still).astype(int) - pixels[0]).mean() > 8
    padded = decode(files[".mp4"])
    assert (padded.width, padded.height) == (96, 128)
    for y, x in ((0, 0), (127, 95), (0, 95), (127, 0)):
        r, g, b = padded.pixels[0][y, x]
        assert r > 220 and g < 40 and b < 40, (y, x, r, g, b)


def test_overrides_only_on_the_allow_list(settings: Settings, binary: FFmpeg, tmp_path: Path) -> None:
    _, info = run(settings, binary, tmp_path, ["yuv444"], overrides={"encode": {"crf": 35}})
    assert info["outputs"][0]["crf"] == 35 and info["outputs"][0]["steps"][0]["crf"] == 35
    params = resolve(JobSpec(postprocess=["fade"]), JobDefaults(), backend="preview", seed=1)
    for overrides, phrase in [
        ({"encode": {"codec": "libx265"}}, "cannot be overridden"),
        ({"encode": {"extra_args": "-i /etc/passwd"}}, "cannot be overridden"),
        ({"movie": {"filename": "/etc/passwd"}}, "cannot be overridden"),
        ({"drawtext": {"textfile": "/etc/passwd"}}, "cannot be overridden"),
        ({"scale_pad": {"color": "black:movie=/etc/passwd"}}, "no paths, filters or ffmpeg options"),
        ({"fade": {"color": "../../etc/passwd"}}, "no paths"),
        ({"fade": {"color": "-y"}}, "no paths"),
        ({"fade": {"in_s": "1; rm -rf /"}}, "no paths"),
        ({"encode": {"crf": "23 -y"}}, "crf"),
        ({"encode": {"crf": [1, 2]}}, "plain value"),
        ({"encode": "crf=1"}, "mapping"),
        ({"encode": {"crf": 99}}, "crf"),
    ]:
        with pytest.raises(JobError) as caught:
            build_chains(settings, params.model_copy(update={"postprocess_overrides": overrides}))
        assert phrase in caught.value.message, (overrides, caught.value.message)
        assert caught.value.stage == "sidecar"


def test_unknown_preset_is_refused(settings: Settings) -> None:
    params = resolve(JobSpec(postprocess=["archive", "nope"]), JobDefaults(), backend="preview", seed=1)
    with pytest.raises(JobError, match="unknown post-processing preset"):
        build_chains(settings, params)


def test_presets_are_checked_against_the_binary_at_startup(settings: Settings, binary: FFmpeg) -> None:
    no_minterpolate = FFmpeg(binary.path, binary.version, binary.encoders,
                             binary.filters - {"minterpolate"})
    with pytest.raises(StartupError, match="no 'minterpolate' filter"):
        check_presets(settings, no_minterpolate)
    nvenc = settings.model_copy(update={"presets": {"hw": Preset(steps=[encode(codec="h264_nvenc",
                                                                                 preset="p4")])}})
    try:
        notes = check_presets(nvenc, binary)
    except StartupError as exc:  # no NVIDIA GPU: the one-frame trial encode fails, and says so
        assert "h264_nvenc encoder cannot run here" in str(exc)
    else:
        assert notes == ["h264_nvenc: trial encode ok"]
    assert check_presets(settings, binary) == []


def test_ffmpeg_failure_reports_its_stderr_and_command(binary: FFmpeg, tmp_path: Path) -> None:
    command = [binary.path, "-hide_banner", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "8x8", "-i", "pipe:",
               "-c:v", "no_such_encoder", str(tmp_path / "x.mp4")]
    with pytest.raises(JobError) as caught:
        run_ffmpeg(command, bytes(8 * 8 * 3), Checkpoint(), stall_s=30)
    assert "no_such_encoder" in caught.value.message and "exit code" in caught.value.message
    assert caught.value.hint.startswith("command: ") and "no_such_encoder" in caught.value.hint


def test_a_silent_ffmpeg_is_killed_as_hung_but_a_slow_one_is_not(binary: FFmpeg, tmp_path: Path) -> None:
    silent = [sys.executable, "-c", "import time; time.sleep(60)"]
    started = __import__("time").monotonic()
    with pytest.raises(FfmpegStalled, match="no progress for 1 s"):
        run_ffmpeg(silent, b"", Checkpoint(), stall_s=1.0)
    assert __import__("time").monotonic() - started < 10
    slow = [binary.path, "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1", "-re",
            "-f", "lavfi", "-i", "color=c=red:s=64x64:d=2.5", "-f", "null", "-"]
    run_ffmpeg(slow, b"", Checkpoint(), stall_s=1.5)  # 2.5 s of work, reporting all along: not hung


def test_one_generation_many_outputs_through_the_daemon(folders: Folders, start: Start) -> None:
    make_image(folders.inbox / "multi.png", (96, 72))
    (folders.inbox / "multi.yaml").write_text(
        "postprocess: [archive, vertical-1080x1920, gif-preview]\n"
        "postprocess_overrides: {encode: {crf: 30}, scale_pad: {color: white}}\n")
    make_image(folders.inbox / "poke.png", (96, 72))
    (folders.inbox / "poke.yaml").write_text(
        "postprocess_overrides: {scale_pad: {color: 'black:movie=/etc/passwd'}}\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3, daemon.log
    meta = folders.metadata("multi")
    assert meta["files"] == ["multi.mp4", "multi.vertical-1080x1920.mp4", "multi.gif-preview.gif",
                             "multi.jpg", "multi.json"]
    assert sorted(folders.files("outbox")) == sorted(meta["files"])
    vertical = decode(folders.outbox / "multi.vertical-1080x1920.mp4")
    assert (vertical.width, vertical.height, vertical.fps) == (1080, 1920, 30.0)
    assert vertical.pixels[0][0, 0].min() > 230  # the overridden white padding
    assert [o["crf"] for o in meta["postprocess"]["outputs"][:2]] == [30, 30]
    command = meta["postprocess"]["ffmpeg_command"]
    assert command.count("-i") == 1 and meta["postprocess"]["presets"] == [
        "archive", "vertical-1080x1920", "gif-preview"]
    report = folders.report("poke")
    assert report["stage"] == "sidecar" and "no paths, filters or ffmpeg options" in report["message"]
    assert not any(e.get("job") == "poke" and e["event"] == "progress" for e in daemon.events())


def crash_one_job_at(folders: Folders, start: Start, point: str) -> Path:
    """One slow job, 4 frames, seed 5, its daemon killed at a crash point: the job's folder."""
    folders.write_config(backend="slow", plugins=["slow_backend"])
    make_image(folders.inbox / "a.png")
    (folders.inbox / "a.yaml").write_text("num_frames: 4\nseed: 5\nbackend_options: {delay_s: 0.05}\n")
    assert start(folders.config, "--once", I2V_CRASH_AT=point).wait() == -9
    (job,) = folders.jobs_in_work()
    return job


def test_a_crash_after_generation_resumes_at_post_processing(folders: Folders, start: Start) -> None:
    job = crash_one_job_at(folders, start, "pipeline.after_scratch")
    scratch = Path(folders.settings["scratch"]) / "testhost"
    assert [p.name for p in scratch.iterdir()] == [f"{job.name}.frames.npy"]  # the local resume copy
    resumed = start(folders.config, "--once")
    assert resumed.wait() == 0
    assert not any(e["event"] == "progress" for e in resumed.events())  # not generated again
    assert decode(folders.outbox / "a.mp4").frames == 4 and folders.files("work") == []
    assert list(scratch.iterdir()) == []


def test_frames_lost_with_the_host_are_generated_again(folders: Folders, start: Start) -> None:
    """Killed after generation but before the resume copy exists (as a host crash loses it): the
    next start generates the job again, once, and publishes it once."""
    job = crash_one_job_at(folders, start, "pipeline.after_generate")
    assert json.loads((job / "job.json").read_text())["stage"] == "generated"
    resumed = start(folders.config, "--once")
    assert resumed.wait() == 0, resumed.log
    assert any("frames are gone" in e["event"] for e in resumed.events())
    assert [e["done"] for e in resumed.events() if e["event"] == "progress"][-1] == 4  # generated again
    assert decode(folders.outbox / "a.mp4").frames == 4 and folders.files("work") == []
    assert folders.metadata("a")["seed"] == 5
