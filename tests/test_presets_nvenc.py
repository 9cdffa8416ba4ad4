"""The shipped NVENC presets: they validate, they never stop a daemon that does not use them, and where
NVENC cannot run (no NVIDIA GPU, as on CI) a job that asks for one fails early, saying why. On a
machine with a GPU the last test encodes with one for real."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg
import pytest

from conftest import Daemon, Folders, decode, make_image
from i2v_watcher.cli import main
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.media.ffmpeg import FFmpeg, find_ffmpeg
from i2v_watcher.media.probes import check_presets, presets_in_use, trial_encode
from i2v_watcher.steps import parse_step
from i2v_watcher.steps.encode import Encode
from i2v_watcher.steps.presets import SHIPPED_PRESETS, Preset

Start = Callable[..., Daemon]
NVENC = ("vertical-1080x1920-nvenc", "square-1080-nvenc", "landscape-1920x1080-nvenc")


@pytest.fixture(scope="module")
def binary() -> FFmpeg:
    return find_ffmpeg(None)[0]


@pytest.fixture(scope="module")
def nvenc_works(binary: FFmpeg) -> bool:
    return trial_encode(binary, "h264_nvenc") is None


def settings(tmp_path: Path, **changes: object) -> Settings:
    return Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")},
                    **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NVENC)
def test_each_nvenc_preset_is_its_cpu_twin_with_the_encoder_swapped(name: str) -> None:
    nvenc, twin = SHIPPED_PRESETS[name].chain(), SHIPPED_PRESETS[name.removesuffix("-nvenc")].chain()
    assert nvenc[:-1] == twin[:-1]  # the same fit, pad and frame rate
    encode = nvenc[-1]
    assert isinstance(encode, Encode)
    assert (encode.codec, encode.preset, encode.crf, encode.pix_fmt) == ("h264_nvenc", "p4", 23, "yuv420p")
    assert encode.encoders() == {"h264_nvenc"} and encode.extension() == ".mp4"


def test_nvenc_options_are_checked_when_the_config_is_read() -> None:
    for bad, said in (({"preset": "fast"}, "p1, p2"), ({"crf": 0}, "cq 0"), ({"crf": 52}, "above 51")):
        with pytest.raises(ValueError, match=said):
            parse_step({"step": "encode", "codec": "h264_nvenc", "preset": "p4", **bad})
    parse_step({"step": "encode", "codec": "hevc_nvenc", "preset": "p7", "crf": 30})


def test_shipped_presets_the_config_does_not_use_never_stop_start_up(tmp_path: Path, binary: FFmpeg,
                                                                     nvenc_works: bool) -> None:
    plain = settings(tmp_path)
    assert not set(NVENC) & set(presets_in_use(plain))
    assert check_presets(plain, binary) == []  # nothing tried for presets nobody uses
    # Used by the defaults, or (re)defined by the config: start-up vouches for it.
    as_default = settings(tmp_path, defaults={"postprocess": ["archive", "vertical-1080x1920-nvenc"]})
    own = settings(tmp_path, presets={"nv": Preset(steps=SHIPPED_PRESETS["square-1080-nvenc"].steps)})
    assert "vertical-1080x1920-nvenc" in presets_in_use(as_default) and "nv" in presets_in_use(own)
    for used in (as_default, own):
        if nvenc_works:
            assert check_presets(used, binary) == ["h264_nvenc: trial encode ok"]
        else:
            with pytest.raises(StartupError, match=r"h264_nvenc encoder cannot run here .*NVIDIA GPU"):
                check_presets(used, binary)


def test_a_job_asking_for_nvenc_without_a_gpu_fails_before_generation(
        folders: Folders, start: Start, nvenc_works: bool) -> None:
    if nvenc_works:
        pytest.skip("NVENC runs here")
    make_image(folders.inbox / "gpu.png")
    (folders.inbox / "gpu.yaml").write_text("postprocess: vertical-1080x1920-nvenc\n")
    make_image(folders.inbox / "cpu.png", seed=2)
    (folders.inbox / "cpu.yaml").write_text("postprocess: vertical-1080x1920\nnum_frames: 4\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3, daemon.log  # started, ran both jobs, one failed
    report = folders.report("gpu")
    assert report["stage"] == "sidecar", report
    assert "vertical-1080x1920-nvenc" in report["message"] and "h264_nvenc encoder cannot run here" in \
        report["message"] and "NVIDIA GPU" in report["message"], report
    assert decode(folders.outbox / "cpu.mp4").width == 1080


def test_doctor_says_the_nvenc_presets_are_unavailable_without_blocking(
        folders: Folders, capsys: pytest.CaptureFixture[str], nvenc_works: bool) -> None:
    config = folders.write_config(ffmpeg_path=imageio_ffmpeg.get_ffmpeg_exe())
    code = main(["doctor", "--config", str(config), "--json"])
    report = json.loads(capsys.readouterr().out)
    presets = [f for f in report["findings"] if f["check"] == "presets"]
    assert code == 0 and report["ok"] and presets[-1]["status"] == "ok", presets
    if nvenc_works:
        assert [f["status"] for f in presets] == ["ok"]
    else:
        [info] = [f for f in presets if f["status"] == "info"]
        assert info["presets"] == list(NVENC) and "h264_nvenc" in info["message"] and info["fix"]


def test_a_clip_through_an_nvenc_preset(folders: Folders, start: Start, nvenc_works: bool) -> None:
    if not nvenc_works:
        pytest.skip("needs an NVIDIA GPU with NVENC (the trial encode fails here)")
    make_image(folders.inbox / "nv.png")
    (folders.inbox / "nv.yaml").write_text("postprocess: vertical-1080x1920-nvenc\n")
    assert start(folders.config, "--once").wait() == 0
    clip = decode(folders.outbox / "nv.mp4")
    assert (clip.width, clip.height, clip.fps, clip.codec) == (1080, 1920, 30.0, "h264")
