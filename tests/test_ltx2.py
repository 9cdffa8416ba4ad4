"""The `ltx2` backend: a tiny random-weight LTX-2 folder, built in code and saved with save_pretrained, loaded
through the backend's real load(): frames of the planned count and size with a soundtrack as long as the
clip, reproducible by seed, the OOM ladder, and one job served by a real daemon."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_diffusion import CPU, SMALL_STEPS, ignore, job, rgb, use

from conftest import Daemon, Folders, decode, make_image
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.ltx2 import DISTILLED_SIGMAS, Ltx2Backend, fitted_audio
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.job.spec import JobParams
from tiny_models import build_ltx2

Start = Callable[..., Daemon]
SHORT = {"max_sequence_length": 32}  # prompts of 32 tokens, not 1024: the test's seconds


@pytest.fixture(scope="module")
def tiny_ltx2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ltx2(tmp_path_factory.mktemp("models") / "ltx2")


def loaded(folder: Path, root: Path, cls: type[Ltx2Backend] = Ltx2Backend,
           **diffusion: object) -> Ltx2Backend:
    settings = Settings(inbox=root / "in", outbox=root / "out", failed=root / "failed", done=root / "done",
                        work=root / "work", diffusion={**CPU, **diffusion}, defaults=SMALL_STEPS,  # type: ignore[arg-type]
                        models={"ltx2": {"model": str(folder)}})
    backend = cls(settings)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def backend(tiny_ltx2: Path, tmp_path_factory: pytest.TempPathFactory) -> Ltx2Backend:
    return loaded(tiny_ltx2, tmp_path_factory.mktemp("dirs"))


def test_frames_and_soundtrack_are_planned_reproducible_by_seed_and_recorded(
        backend: Ltx2Backend, tmp_path: Path) -> None:
    image = rgb(make_image(tmp_path / "x.png", (96, 72), seed=3))
    steps: list[tuple[int, int]] = []
    spec = {"num_frames": 5, "backend_options": SHORT}
    a = backend.generate(image, job(backend, seed=7, **spec), lambda d, t: steps.append((d, t)))
    b = backend.generate(image, job(backend, seed=7, **spec), ignore)
    c = backend.generate(image, job(backend, seed=8, **spec), ignore)
    # 5 frames asked: 8k+1 (diffusers would make one); 96x72 at 64p: sides of 32, at least 64.
    assert (a.count, a.width, a.height) == (9, 96, 64) and a.fps == 8.0
    assert a.audio is not None and b.audio is not None and c.audio is not None
    assert (a.audio.rate, a.audio.channels, a.audio.samples.dtype) == (16000, 2, np.float32)
    assert a.audio.samples.shape[1] == 9 / 8 * 16000 and np.abs(a.audio.samples).max() <= 1.0
    assert np.abs(a.audio.samples).max() > 0  # a sound, not silence
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.audio.samples, b.audio.samples)
    assert not np.array_equal(a.pixels, c.pixels) and not np.array_equal(a.audio.samples, c.audio.samples)
    assert a.details["asked"] == {"resolution": "64p", "num_frames": 5} and a.details["num_frames"] == 9
    assert a.details["audio"] == {"sample_rate": 16000, "channels": 2, "duration_s": 1.125}
    assert a.details["ltx2"] == {"generation": "2.0", "image_crf": 33}  # re-encoded as it was trained
    assert a.details["model"] == backend.model_id and "schedule" not in a.details
    assert [s for s in steps if s[0] < s[1]] == [(1, 2)] and steps[-1] == (2, 2)  # each denoising step
    # The image as it is (image_crf 0) conditions differently; a distilled schedule runs its own sigmas.
    as_is = {"num_frames": 5, "backend_options": {**SHORT, "image_crf": 0}}
    raw = backend.generate(image, job(backend, seed=7, **as_is), ignore)
    assert raw.details["ltx2"]["image_crf"] == 0 and not np.array_equal(raw.pixels, a.pixels)
    distilled = job(backend, seed=7, num_frames=5, backend_options={"distilled": True})
    assert backend.plan((96, 72), distilled, notes := {}) and notes["schedule"] == {
        "distilled": True, "sigmas": list(DISTILLED_SIGMAS), "steps": 8, "guidance_scale": 1.0}
    assert backend.arguments(distilled, Plan(96, 64, 9))["sigmas"] == list(DISTILLED_SIGMAS)
    # LTX-2.0 gets its own STG block and the legacy cross-attention timestep; 2.3+ diffusers' defaults.
    legacy = backend.arguments(job(backend), Plan(96, 64, 9))
    assert (legacy["use_cross_timestep"], legacy["spatio_temporal_guidance_blocks"]) == (False, [29])
    backend.pipe.transformer.prompt_modulation = True  # as LTX-2.3's config (cross_attn_mod) makes it
    try:
        assert backend.generation() == "2.3+"
        assert not {"use_cross_timestep", "spatio_temporal_guidance_blocks"} & set(
            backend.arguments(job(backend), Plan(96, 64, 9)))
    finally:
        backend.pipe.transformer.prompt_modulation = False


class _OutOfMemoryAtNineFrames(Ltx2Backend):
    """Out of GPU memory (injected) for any clip longer than one latent frame."""

    def call(self, image: Image.Image, params: JobParams, plan: Plan, generator: Any,
             extra: dict[str, Any]) -> Any:
        if plan.num_frames > 9:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return super().call(image, params, plan, generator, extra)


def test_the_oom_ladder_shortens_the_clip_and_its_soundtrack_with_it(
        tiny_ltx2: Path, tmp_path: Path) -> None:
    backend = loaded(tiny_ltx2, tmp_path, _OutOfMemoryAtNineFrames, oom_ladder=[{"num_frames": 0.5}])
    frames = backend.generate(rgb(make_image(tmp_path / "x.png", (96, 72), seed=3)),
                              job(backend, num_frames=17, backend_options=SHORT), ignore)
    assert frames.details["oom_rung"] == 1 and frames.count == 9
    assert [t["num_frames"] for t in frames.details["oom_ladder_tried"]] == [17, 9]
    assert frames.audio is not None and frames.audio.duration_s == 9 / 8


def test_a_soundtrack_is_fitted_to_the_clip_and_one_that_misses_it_fails_the_job() -> None:
    wave = torch.linspace(-2.0, 2.0, 2 * 15800).reshape(2, 15800)  # 20 ms short of one second
    audio = fitted_audio(wave, 16000, 1.0)
    assert audio.samples.shape == (2, 16000) and audio.samples.max() == 1.0
    assert not audio.samples[:, -200:].any()  # silence where the model's sound ended
    assert fitted_audio(torch.zeros(2, 16100), 16000, 1.0).samples.shape == (2, 16000)
    with pytest.raises(JobError, match=r"lasts 0\.500 s for a clip of 1\.000 s"):
        fitted_audio(torch.zeros(2, 8000), 16000, 1.0)
    with pytest.raises(JobError, match="NaN audio"):
        fitted_audio(torch.full((2, 16000), float("nan")), 16000, 1.0)


def test_the_input_is_re_encoded_as_one_h264_frame_and_frame_counts_are_8k_plus_1(tmp_path: Path) -> None:
    from i2v_watcher.media.ffmpeg import find_ffmpeg
    from i2v_watcher.media.h264 import h264_roundtrip

    picture = np.asarray(rgb(make_image(tmp_path / "x.png", (97, 64), seed=3)))
    ffmpeg = find_ffmpeg(None)[0].path
    coarse, fine = (h264_roundtrip(picture, crf, ffmpeg) for crf in (33, 18))
    assert coarse.shape == fine.shape == (64, 96, 3)  # 4:2:0 needs even sides: the odd column goes
    errors = [np.abs(out.astype(int) - picture[:, :96]).mean() for out in (coarse, fine)]
    assert 0 < errors[1] < errors[0] < 8  # the same picture, coarser at the higher CRF
    dirs = {name: tmp_path / name for name in ("inbox", "outbox", "failed", "done", "work")}
    backend = Ltx2Backend(Settings(**dirs))  # type: ignore[arg-type]
    assert [backend.fit_frames(n) for n in (1, 5, 8, 12, 13, 121)] == [9, 9, 9, 9, 17, 121]


def test_a_daemon_serves_an_ltx2_job_and_records_its_soundtrack(
        folders: Folders, tiny_ltx2: Path, start: Start) -> None:
    use(folders, {"ltx2": tiny_ltx2}, "ltx2")
    make_image(folders.inbox / "a.png", (96, 72), seed=3)
    (folders.inbox / "a.yaml").write_text("prompt: a red fox barking\nseed: 7\nnum_frames: 9\n"
                                             "backend_options: {max_sequence_length: 32}\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 0, daemon.log
    assert [e["backend"] for e in daemon.events() if e["event"] == "backend loaded"] == ["ltx2"]
    video = decode(folders.outbox / "a.mp4")
    assert (video.frames, video.width, video.height) == (9, 96, 64)
    meta = folders.metadata("a")
    assert meta["backend"] == "ltx2" and meta["model"] == str(tiny_ltx2)
    assert meta["generation"]["audio"] == {"sample_rate": 16000, "channels": 2, "duration_s": 1.125}
    # The soundtrack went through the chain into the published MP4: AAC at 128 kb/s, the clip's length.
    (output,) = meta["postprocess"]["outputs"]
    assert output["audio"]["codec"] == "aac" and output["audio"]["channels"] == 2, output
    assert abs(output["audio"]["duration_s"] - 1.125) < 0.05, output
