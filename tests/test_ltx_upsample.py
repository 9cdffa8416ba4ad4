"""The `ltx-video` backend's distilled checkpoints told from the model folder, and its latent upsampler:
a tiny random-weight LTX-Video folder and a tiny LTXLatentUpsamplerModel, built in code and saved with
save_pretrained, served by a real daemon through the real from_pretrained path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from i2v_watcher.backends.ltx_video import DISTILLED_TIMESTEPS, LtxVideoBackend, model_name
from i2v_watcher.config.models import check_model_tables
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.job.spec import JobDefaults, JobParams, JobSpec, resolve
from tiny_models import build_ltx_upsampler, build_ltx_video

SMALL = {"num_frames": 9, "steps": 2, "resolution": "64p", "fps": 8.0}


@pytest.fixture(scope="module")
def distilled_ltx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny LTX-Video saved under a distilled checkpoint's name, and a tiny upsampler for it."""
    root = tmp_path_factory.mktemp("models")
    ltx = build_ltx_video(root / "LTX-Video-0.9.7-distilled")
    return {"ltx-video": ltx, "upsampler": build_ltx_upsampler(root / "ltxv-spatial-upscaler", ltx)}


def backend(tmp_path: Path, **model: object) -> LtxVideoBackend:
    dirs = {name: tmp_path / name for name in ("inbox", "outbox", "failed", "done", "work")}
    return LtxVideoBackend(Settings(**dirs, models={"ltx-video": model},  # type: ignore[arg-type]
                                    diffusion={"device": "cpu"}, defaults=SMALL))


def params(**options: object) -> JobParams:
    spec = JobSpec.model_validate({"prompt": "a fox", "seed": 7, "backend_options": options})
    return resolve(spec, JobDefaults(**SMALL), backend="ltx-video", seed=1)


def test_distilled_is_told_by_the_name_then_the_config_then_the_job(tmp_path: Path) -> None:
    cached = "/hf/hub/models--Lightricks--LTX-Video-0.9.8-13B-distilled/snapshots/0123abcd"
    assert model_name(cached) == "LTX-Video-0.9.8-13B-distilled"
    assert model_name("Lightricks/LTX-Video-0.9.7-dev") == "LTX-Video-0.9.7-dev"
    assert backend(tmp_path, model=cached).distilled(params()) == (
        True, "model name", "the model's name 'LTX-Video-0.9.8-13B-distilled' says distilled")
    dev = backend(tmp_path, model="Lightricks/LTX-Video-0.9.7-dev")
    assert dev.distilled(params())[:2] == (False, "model name")
    assert dev.distilled(params(distilled=True)) == (True, "job", "backend_options.distilled: true")
    renamed = backend(tmp_path, model="/models/ltx-fast", distilled=True)
    assert renamed.distilled(params()) == (True, "config", "[models.ltx-video] distilled")
    assert renamed.distilled(params(distilled=False))[:2] == (False, "job")


def test_upsample_without_an_upsampler_is_refused_in_words(tmp_path: Path) -> None:
    with pytest.raises(JobError) as caught:  # refused before any model is needed
        backend(tmp_path, model="Lightricks/LTX-Video-0.9.7-dev").planned(96, 72, params(upsample=True))
    assert "upsample: true needs the latent upsampler" in caught.value.message
    assert "[models.ltx-video] upsampler" in caught.value.message
    assert "ltxv-spatial-upscaler-0.9.7" in (caught.value.hint or "")


def test_the_ltx_only_model_keys_are_refused_on_another_backends_table(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("inbox", "outbox", "failed", "done", "work")}
    tables = {"wan-i2v": {"model": "/m/wan", "upsampler": "/m/up"}}
    settings = Settings(**dirs, models=tables)  # type: ignore[arg-type]
    with pytest.raises(StartupError, match=r"\[models.wan-i2v\] upsampler: only \[models.ltx-video\] has it"):
        check_model_tables(settings, ["wan-i2v", "ltx-video"], ["wan-i2v", "ltx-video"])


def test_distilled_detected_and_the_upsampler_loaded_and_run_from_their_folders(
        tmp_path: Path, distilled_ltx: dict[str, Path]) -> None:
    """The real backend loads both folders with from_pretrained (as a daemon does at start-up) and
    makes clips in two passes: the size asked, both passes recorded, same seed → same frames."""
    misnamed = backend(tmp_path, model=str(distilled_ltx["ltx-video"]), upsampler="up/sam/pler")
    assert "upsampler 'up/sam/pler' is no directory and no hub id" in (misnamed.unavailable() or "")
    folder = str(distilled_ltx["ltx-video"])
    uncached = backend(tmp_path, model=folder, upsampler="Lightricks/no-such-upscaler")
    assert uncached.unavailable() == ("the ltx-video upsampler 'Lightricks/no-such-upscaler' is not in the "
                                      "Hugging Face cache (`hf download Lightricks/no-such-upscaler`)")
    ltx = backend(tmp_path, model=str(distilled_ltx["ltx-video"]), upsampler=str(distilled_ltx["upsampler"]))
    assert ltx.unavailable() is None
    ltx.load()
    image = Image.open(make_image(tmp_path / "in.png", (96, 72), seed=3)).convert("RGB")
    # Nothing asked: the folder's name says distilled; the metadata says so, and why.
    notes: dict[str, object] = {}
    ltx.plan(image.size, params(), notes)
    assert notes["distilled"] == {"distilled": True, "decided_by": "model name",
                                  "why": "the model's name 'LTX-Video-0.9.7-distilled' says distilled"}
    assert notes["schedule"] == {"distilled": True, "timesteps": list(DISTILLED_TIMESTEPS), "steps": 8,
                                 "guidance_scale": 1.0}
    job = params(upsample=True, distilled=False)
    steps: list[tuple[int, int]] = []
    first = ltx.generate(image, job, lambda done, total: steps.append((done, total)))
    again = ltx.generate(image, job, lambda done, total: None)
    assert first.pixels.shape == (9, 64, 96, 3)  # 9 frames asked, 96x72 at 64p: made at 128x64, resized
    assert np.array_equal(first.pixels, again.pixels)  # same seed, same two passes
    assert first.details["distilled"]["decided_by"] == "job" and "schedule" not in first.details
    assert first.details["upsample"] == {
        "upsampler": str(distilled_ltx["upsampler"]),
        "first_pass": {"width": 64, "height": 32, "steps": 2},  # 2/3 of 96x64, sides of 32
        "second_pass": {"width": 128, "height": 64, "steps": 4, "num_inference_steps": 10,
                        "denoise_strength": 0.4},
        "adain_factor": 0.0, "tone_map_compression_ratio": 0.0}
    assert [done for done, _ in steps[:6]] == [1, 2, 3, 4, 5, 6]  # both passes' steps, counted as one
    assert {total for _, total in steps} == {6}
