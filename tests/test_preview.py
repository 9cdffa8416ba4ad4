"""The preview backend: real, smooth camera motion, deterministic for a seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from i2v_watcher.backends.preview import PreviewBackend, output_size
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobCancelled, JobError
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.spec import JobDefaults, JobSpec, resolve


@pytest.fixture
def backend(tmp_path: Path) -> PreviewBackend:
    settings = Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")})
    b = PreviewBackend(settings)
    b.load()
    return b


@pytest.fixture
def image(tmp_path: Path) -> Image.Image:
    return Image.open(make_image(tmp_path / "in.png", (160, 120))).convert("RGB")


def run(backend: PreviewBackend, image: Image.Image, seed: int, **spec: Any) -> np.ndarray:
    params = resolve(JobSpec(**spec), JobDefaults(num_frames=8, resolution="64p"), backend="preview",
                     seed=seed)
    calls: list[tuple[int, int]] = []
    frames = backend.generate(image, params, lambda d, t: calls.append((d, t)))
    assert calls == [(i, params.num_frames) for i in range(1, params.num_frames + 1)]
    return frames.pixels


def test_frames_have_the_requested_count_and_size(backend: PreviewBackend, image: Image.Image) -> None:
    pixels = run(backend, image, 1, num_frames=12)
    assert pixels.shape == (12, 64, 86, 3) and pixels.dtype == np.uint8  # 160x120 → short side 64


def test_same_seed_same_frames_different_seed_different(backend: PreviewBackend,
                                                        image: Image.Image) -> None:
    a, b, c = run(backend, image, 7), run(backend, image, 7), run(backend, image, 8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_frames_move_smoothly_and_are_not_copies_of_the_input(backend: PreviewBackend,
                                                              image: Image.Image) -> None:
    pixels = run(backend, image, 3, num_frames=10, backend_options={"motion": "zoom-in", "zoom": 1.5})
    steps = [float(np.abs(pixels[i + 1].astype(int) - pixels[i].astype(int)).mean()) for i in range(9)]
    assert all(step > 0 for step in steps), steps  # every frame differs from the one before
    assert max(steps) < 40  # and no jump: a camera move, not a cut
    # eased: the camera starts and ends slower than it moves in the middle
    assert steps[0] < steps[4] and steps[-1] < steps[4]
    still = np.asarray(image.resize((86, 64)))
    assert np.abs(pixels[-1].astype(int) - still.astype(int)).mean() > 5


@pytest.mark.parametrize("motion", ["zoom-in", "zoom-out", "pan-left", "pan-right", "pan-up", "pan-down"])
def test_every_motion_renders(backend: PreviewBackend, image: Image.Image, motion: str) -> None:
    pixels = run(backend, image, 0, backend_options={"motion": motion})
    assert not np.array_equal(pixels[0], pixels[-1])


def test_bad_backend_options_are_job_errors(backend: PreviewBackend, image: Image.Image) -> None:
    with pytest.raises(JobError, match="motion"):
        run(backend, image, 0, backend_options={"motion": "spin"})
    with pytest.raises(JobError, match="unknown key"):
        run(backend, image, 0, backend_options={"speed": 2})


def test_output_size_keeps_aspect_and_is_even() -> None:
    assert output_size(1920, 1080, "512p") == (910, 512)
    assert output_size(1080, 1920, "64p") == (64, 114)
    assert output_size(333, 333, "auto") == (512, 512)
    with pytest.raises(JobError, match="aspect ratio"):
        output_size(5000, 100, "512p")


def test_progress_callback_can_cancel(backend: PreviewBackend, image: Image.Image) -> None:
    checkpoint = Checkpoint()
    checkpoint.request_stop(0)
    checkpoint.request_stop(0)
    params = resolve(JobSpec(), JobDefaults(num_frames=8, resolution="64p"), backend="preview", seed=1)
    with pytest.raises(JobCancelled):
        backend.generate(image, params, lambda d, t: checkpoint.check())


def test_a_preload_is_nothing_and_generate_works_without_one(backend: PreviewBackend,
                                                             image: Image.Image) -> None:
    """The preview has no CPU-side work worth doing ahead: preload() returns None, as the base does."""
    from i2v_watcher.run.generate import generate

    params = resolve(JobSpec(), JobDefaults(num_frames=4, resolution="64p"), backend="preview", seed=2)
    assert backend.preload(image, params) is None
    alone = backend.generate(image, params, lambda d, t: None)
    frames = generate(backend, image, params, Checkpoint(), 60.0, preloaded=backend.preload(image, params))
    assert np.array_equal(frames.pixels, alone.pixels)
    assert np.array_equal(backend.generate(image, params, lambda d, t: None, preloaded=None).pixels,
                          alone.pixels)
