"""What a job's post-processing costs, known before generation: each step's arithmetic (frames, size,
rate, what it holds in memory), every shipped preset against the bounds, the hint that says what would
fit, and max_encode_s stopping an encode that runs too long."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python
import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.media.chains import Chain
from i2v_watcher.media.cost import ENCODE_BASE_S, chain_cost, check_cost, encode_limit_s
from i2v_watcher.media.ffmpeg import find_ffmpeg
from i2v_watcher.media.graph import postprocess
from i2v_watcher.ops.submit import check_submission
from i2v_watcher.steps import Clip, OutputStep, available, parse_chain, parse_step

CLIP = Clip(width=1024, height=576, frames=16, fps=8.0)  # a default job (16 frames, 8 fps) at 576p


def settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")},
                    **changes)


def chains(config: Settings, *names: str) -> list[Chain]:
    return [(name, config.presets[name].chain()) for name in names]


@pytest.mark.parametrize("raw,made", [
    ({"step": "fps", "fps": 30}, CLIP.but(frames=60, fps=30)),
    ({"step": "interpolate", "fps": 24}, CLIP.but(frames=48, fps=24)),
    ({"step": "speed", "factor": 0.5}, CLIP.but(frames=32)),
    ({"step": "loop", "count": 3}, CLIP.but(frames=48)),
    ({"step": "loop", "count": 3, "boomerang": True}, CLIP.but(frames=96)),
    ({"step": "crop", "width": 512, "height": 256}, CLIP.but(width=512, height=256)),
    ({"step": "scale_pad", "width": 1080, "height": 1920}, CLIP.but(width=1080, height=1920)),
    ({"step": "fade"}, CLIP),
    ({"step": "encode"}, CLIP),
    ({"step": "poster", "frame": 3}, CLIP.but(frames=1)),
    ({"step": "gif", "fps": 12, "width": 480}, Clip(width=480, height=270, frames=24, fps=12)),
    ({"step": "webp", "fps": 10, "width": 320}, Clip(width=320, height=180, frames=20, fps=10)),
])
def test_each_step_says_what_it_makes_of_a_clip(raw: dict[str, Any], made: Clip) -> None:
    assert parse_step(raw).plan(CLIP) == made


def test_the_steps_that_keep_frames_in_memory_say_how_many() -> None:
    held = parse_step({"step": "gif", "fps": 12, "width": 480}).holds(CLIP)
    assert held is not None and held.clip == Clip(480, 270, 24, 12) and "palette" in held.why
    looped = parse_step({"step": "loop", "count": 3, "boomerang": True}).holds(CLIP)
    assert looped is not None and looped.clip.frames == 32  # the boomeranged clip, kept to repeat
    reversed_ = parse_step({"step": "loop", "count": 1, "boomerang": True}).holds(CLIP)
    assert reversed_ is not None and reversed_.clip == CLIP and "backwards" in reversed_.why
    assert parse_step({"step": "loop", "count": 1}).holds(CLIP) is None
    for streaming in ({"step": "fps", "fps": 30}, {"step": "scale_pad", "width": 64, "height": 64},
                      {"step": "encode"}, {"step": "webp"}):
        assert parse_step(streaming).holds(CLIP) is None


def test_a_chain_adds_its_steps_up() -> None:
    steps = parse_chain([{"step": "fps", "fps": 30}, {"step": "loop", "count": 2},
                         {"step": "scale_pad", "width": 1080, "height": 1920}, {"step": "encode"}])
    cost = chain_cost("custom", steps, CLIP)
    assert cost.output == Clip(1080, 1920, 120, 30)
    assert [(step, held.clip.frames) for step, held in cost.held] == [("loop", 60)]


def test_every_shipped_preset_takes_a_default_job_and_a_long_one(tmp_path: Path) -> None:
    config = settings(tmp_path)
    for source in (CLIP, Clip(64, 64, 1, 120.0)):
        check_cost(config, chains(config, *config.presets), source)  # all of them at once
    for name in config.presets:  # 64 s of 1024x1024, each preset alone
        check_cost(config, chains(config, name), Clip(1024, 1024, 512, 8.0))
    three = chains(config, "archive", "vertical-1080x1920", "gif-preview")
    check_cost(config, three, Clip(1024, 576, 512, 8.0))


def test_vertical_at_fps_0_01_is_refused_naming_the_bound_and_what_fits(tmp_path: Path) -> None:
    config = settings(tmp_path)
    vertical = chains(config, "vertical-1080x1920")
    source = Clip(512, 512, 2, 0.01)
    with pytest.raises(JobError) as caught:
        check_cost(config, vertical, source)
    error = caught.value
    assert error.stage == "sidecar"
    assert ("preset 'vertical-1080x1920' would output 6,000 frames, over max_output_frames (3,600)"
            in error.problems)
    assert any("12,441,600,000 pixel-frames, over max_output_pixel_frames" in p for p in error.problems)
    assert "2 frames of 512x512 at fps 0.01, a 200 s clip" in error.message
    # What the hint says fits does fit, and a little less does not.
    found = re.search(r"fps at least ([\d.]+), or num_frames at most (\d+)", error.hint)
    assert found, error.hint
    fps, frames = float(found[1]), int(found[2])
    check_cost(config, vertical, source.but(fps=fps))
    check_cost(config, vertical, source.but(frames=frames))
    with pytest.raises(JobError):
        check_cost(config, vertical, source.but(fps=fps * 0.9))


def test_a_clip_too_long_to_count_is_refused_not_an_overflow(tmp_path: Path) -> None:
    config = settings(tmp_path)
    with pytest.raises(JobError) as caught:
        check_cost(config, chains(config, "archive", "vertical-1080x1920"), Clip(64, 64, 2, 5e-324))
    assert caught.value.problems == [
        f"preset {name!r} would make a clip too long to count, over max_output_duration_s (600)"
        for name in ("archive", "vertical-1080x1920")]
    assert caught.value.hint == "fits: fps at least 0.017"


def test_the_gif_palette_is_bounded_by_what_it_holds(tmp_path: Path) -> None:
    config = settings(tmp_path)
    gif = chains(config, "gif-preview")
    with pytest.raises(JobError) as caught:
        check_cost(config, gif, Clip(512, 512, 2, 0.005))
    held = [p for p in caught.value.problems if "max_step_buffer_mb" in p]
    assert held == ["preset 'gif-preview': its gif step would hold 4,800 frames of 480x480 in memory for its "
                    "palette (every frame is kept until the palette is made), 4,424 MB, over "
                    "max_step_buffer_mb (2,048)"]
    # Under a lower frame bound the palette is still its own bound: a long clip of small frames.
    roomy = settings(tmp_path, max_output_frames=10**6, max_output_duration_s=86400, max_step_buffer_mb=100)
    with pytest.raises(JobError, match="max_step_buffer_mb") as caught:
        check_cost(roomy, gif, Clip(512, 512, 16, 0.1))
    assert [p for p in caught.value.problems if "max_step_buffer_mb" not in p] == []


def test_duration_is_a_bound_of_its_own(tmp_path: Path) -> None:
    config = settings(tmp_path, max_output_duration_s=10)
    with pytest.raises(JobError) as caught:
        check_cost(config, chains(config, "archive"), Clip(512, 512, 16, 1.0))
    assert caught.value.problems == [
        "preset 'archive' would make a 16 s clip, over max_output_duration_s (10)"]
    assert "fps at least 1.6" in caught.value.hint and "num_frames at most 10" in caught.value.hint


def test_the_default_encode_limit_grows_with_the_outputs(tmp_path: Path) -> None:
    config = settings(tmp_path)
    vertical = chains(config, "vertical-1080x1920")
    default = encode_limit_s(None, vertical, CLIP)
    # 60 frames of 1080x1920 at 1 s per megapixel-frame, plus the scaling and rate steps' allowance.
    assert 60 * 2.0736 + ENCODE_BASE_S < default < 60 * 2.0736 * 1.2 + ENCODE_BASE_S
    assert encode_limit_s(None, vertical, CLIP.but(frames=160)) > 2 * default - ENCODE_BASE_S
    assert encode_limit_s(None, vertical + chains(config, "gif-preview"), CLIP) > default
    assert encode_limit_s(42.0, vertical, CLIP) == 42.0


def test_max_encode_s_stops_an_encode_that_runs_too_long(tmp_path: Path) -> None:
    config = settings(tmp_path, max_encode_s=0.05, presets={
        "smooth": {"steps": [{"step": "interpolate", "fps": 60}, {"step": "encode", "preset": "slow"}]}})
    binary = find_ffmpeg(None)[0]
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (48, 256, 256, 3), dtype=np.uint8)  # noise: motion search works hard
    started = time.monotonic()
    with pytest.raises(JobError) as caught:
        postprocess(pixels, 8.0, tmp_path / "out", binary, chains(config, "smooth"), config, Checkpoint())
    assert time.monotonic() - started < 10
    error = caught.value
    assert error.stage == "postprocess"
    assert error.message == "the encode took longer than its limit of 0.05 s (max_encode_s) and was stopped"
    assert "raise max_encode_s" in error.hint


def test_submit_refuses_what_the_daemon_would_before_writing_anything(tmp_path: Path) -> None:
    config = settings(tmp_path)
    image = make_image(tmp_path / "photo.png", size=(96, 72))
    with pytest.raises(StartupError) as caught:
        check_submission(config, {"fps": 0.01, "num_frames": 2, "postprocess": "vertical-1080x1920"}, image)
    assert "over max_output_frames (3,600)" in str(caught.value)
    assert "fps at least" in str(caught.value)
    check_submission(config, {"postprocess": "vertical-1080x1920"}, image)  # the defaults fit


def test_a_chain_is_bounded_where_it_makes_the_most_not_only_at_its_output(tmp_path: Path) -> None:
    # A still after a 120 fps step outputs one frame, but ffmpeg makes 24,000 on the way.
    still = [{"step": "fps", "fps": 120}, {"step": "poster"}]
    config = settings(tmp_path, presets={"still": {"steps": still}})
    with pytest.raises(JobError) as caught:
        check_cost(config, chains(config, "still"), Clip(512, 512, 2, 0.01))
    assert "preset 'still' would make 24,000 frames at its fps step, over max_output_frames (3,600)" \
        in caught.value.problems


def test_pixel_frames_count_every_output_of_the_one_encode(tmp_path: Path) -> None:
    config = settings(tmp_path, max_output_pixel_frames=145_000_000)
    source = Clip(512, 512, 32, 8.0)  # 4 s: 120 frames of 1080x1080 (140 M), 32 of 512x512 (8.4 M)
    check_cost(config, chains(config, "square-1080"), source)
    with pytest.raises(JobError) as caught:
        check_cost(config, chains(config, "square-1080", "archive"), source)
    assert caught.value.problems == [
        "preset 'square-1080' (120 frames of 1080x1080) and preset 'archive' (32 frames of 512x512) would be "
        "148,356,608 pixel-frames, over max_output_pixel_frames (145,000,000)"]


# A sample of every registered step: a step added without one fails below, so its cost is checked.
SAMPLES: dict[str, dict[str, Any]] = {
    "crop": {"width": 32, "height": 32}, "fps": {"fps": 30}, "interpolate": {"fps": 24},
    "loop": {"count": 3, "boomerang": True}, "speed": {"factor": 0.5}, "fade": {},
    "scale_pad": {"width": 64, "height": 64}, "encode": {}, "poster": {}, "gif": {}, "webp": {},
}


def test_every_step_returns_the_clip_its_plan_says(tmp_path: Path) -> None:
    assert sorted(SAMPLES) == available()
    for name, fields in SAMPLES.items():
        step = parse_step({"step": name, **fields})
        if not isinstance(step, OutputStep):
            _, made = step.apply(ffmpeg_python.input("pipe:").video, CLIP)
            assert made == step.plan(CLIP), name


def test_a_preview_is_as_high_as_ffmpeg_makes_it(tmp_path: Path) -> None:
    config = settings(tmp_path)
    pixels = np.zeros((4, 64, 86, 3), np.uint8)  # 480 wide: 357.2 high, made 358 by scale's -2
    outputs, _ = postprocess(pixels, 8.0, tmp_path / "out", find_ffmpeg(None)[0],
                             chains(config, "webp-preview"), config, Checkpoint())
    planned = parse_step({"step": "webp"}).plan(Clip(86, 64, 4, 8.0))
    with Image.open(tmp_path / "out" / outputs[0].file) as made:
        assert made.size == (planned.width, planned.height) == (480, 358)
