"""The hunyuan-i2v backend on tiny random-weight HunyuanVideo-I2V pipelines built in code (a Llava text
encoder with the real prompt template's layout), saved with save_pretrained and loaded back through the
real from_pretrained path: by a real daemon for the 33-channel layout, in-process for the 16-channel one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_diffusion import CPU, SMALL_STEPS, Start, ignore, job, rgb, serve_seeded_jobs, use

from conftest import Folders, decode, make_image
from i2v_watcher.backends.diffusion import DiffusersBackend
from tiny_models import build_hunyuan_i2v


@pytest.fixture(scope="module")
def tiny_hunyuan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"hunyuan-i2v": build_hunyuan_i2v(tmp_path_factory.mktemp("models") / "hunyuan-i2v")}


def test_hunyuan_i2v_end_to_end_gives_the_frames_asked_for_and_is_reproducible(
        folders: Folders, tiny_hunyuan: dict[str, Path], start: Start) -> None:
    """The 33-channel layout drops 4 decoded frames: asked 4 frames (rounded to 5), the job gets 5. Its
    guidance is classifier-free, against the negative prompt."""
    use(folders, tiny_hunyuan, "hunyuan-i2v")
    sidecar = "num_frames: 4\nresolution: 32p\n"
    make_image(folders.inbox / "negative.png", (96, 72), seed=3)  # as job a, with a negative prompt
    negative = f"prompt: a red fox\nseed: 7\nnegative_prompt: blurry\n{sidecar}"
    (folders.inbox / "negative.yaml").write_text(negative)
    daemon, (a, b, c) = serve_seeded_jobs(folders, start, "hunyuan-i2v", sidecar)
    assert (a.frames, a.width, a.height) == (5, 48, 32)  # 96x72 at 32p, sides multiples of 16
    assert np.array_equal(a.pixels, b.pixels) and not np.array_equal(a.pixels, c.pixels)
    assert not np.array_equal(a.pixels, decode(folders.outbox / "negative.mp4").pixels)
    meta = folders.metadata("a")
    assert meta["backend"] == "hunyuan-i2v" and meta["model"] == str(tiny_hunyuan["hunyuan-i2v"])
    generation = meta["generation"]
    assert generation["asked"] == {"resolution": "32p", "num_frames": 4} and generation["num_frames"] == 5
    assert generation["pipeline_dropped_frames"] == 4
    # No guidance_scale in the sidecar or [defaults]: the model card's (6), recorded as such.
    assert generation["guidance"] == {"kind": "classifier-free", "scale": 6.0, "negative_prompt_used": True}
    assert meta["parameters"]["guidance_scale"] == 6.0 and meta["parameters"]["steps"] == 2
    assert "guidance_scale" in generation["model_card"]["defaults_used"]
    assert generation["model_card"]["name"] == "hunyuanvideo-i2v"
    progress = [(e["done"], e["total"]) for e in daemon.events() if e["event"] == "progress"
                and e.get("job") == "a"]
    assert progress[:2] == [(1, 2), (2, 2)], progress  # each denoising step


def test_the_guidance_distilled_layout_takes_guidance_scale_as_its_embedded_guidance(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The 16-channel layout returns every frame it decodes and has a guidance embedding: the job's
    guidance_scale changes the clip, its negative_prompt does not (no second pass)."""
    from i2v_watcher import backends
    from i2v_watcher.config.settings import Settings

    model = build_hunyuan_i2v(tmp_path_factory.mktemp("models") / "hunyuan-16ch", "token_replace")
    settings = Settings(inbox=tmp_path / "in", outbox=tmp_path / "out", failed=tmp_path / "failed",
                        done=tmp_path / "done", work=tmp_path / "work", diffusion=CPU,  # type: ignore[arg-type]
                        defaults=SMALL_STEPS, models={"hunyuan-i2v": {"model": str(model)}})
    backends.discover([])
    backend = backends.get("hunyuan-i2v")(settings)
    assert isinstance(backend, DiffusersBackend)
    backend.load()
    image = rgb(make_image(tmp_path / "x.png", (48, 32), seed=3))
    base = job(backend, num_frames=5, resolution="32p", guidance_scale=6.0)
    frames = backend.generate(image, base, ignore)
    assert (frames.count, frames.width, frames.height) == (5, 48, 32)
    assert frames.details["pipeline_dropped_frames"] == 0
    assert frames.details["guidance"] == {"kind": "embedded", "scale": 6.0, "negative_prompt_used": False}
    other_negative = backend.generate(image, base.model_copy(update={"negative_prompt": "sharp"}), ignore)
    assert np.array_equal(frames.pixels, other_negative.pixels)
    weaker = backend.generate(image, base.model_copy(update={"guidance_scale": 1.0}), ignore)
    assert not np.array_equal(frames.pixels, weaker.pixels)
