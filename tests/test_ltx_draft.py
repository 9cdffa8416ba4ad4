"""[models.ltx-video] draft_model on the tiny random-weight LTX-Video, loaded through the backend's real
load path: a second transformer of the same architecture (other random weights) that the draft level's
jobs run with on the distilled schedule, while the other levels run the base one on the same resident
backend; the start-up refusals, and the warning while the shipped draft level has no draft model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from test_diffusion import CPU, Start, ignore, rgb, use

from conftest import Folders, make_image
from i2v_watcher.backends.base import Progress
from i2v_watcher.backends.drafts import draft_fallback
from i2v_watcher.backends.ltx_video import DISTILLED_TIMESTEPS, LtxVideoBackend
from i2v_watcher.config.models import check_model_tables
from i2v_watcher.config.quality import levels_for
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.job.spec import JobSpec, resolve
from tiny_models import build_ltx_draft, build_ltx_video

# Explicit fields win over every level: the draft and final jobs differ only in their level.
TINY = {"prompt": "a red fox", "num_frames": 9, "steps": 2, "resolution": "64p", "seed": 7}
WARNING = ("the draft level runs 10 steps of the base model; a distilled checkpoint's folder (e.g. "
           "Lightricks/LTX-Video-0.9.7-distilled for a 2B model; its 8 timesteps without guidance) in "
           '[models.ltx-video] draft_model = "..." makes it faster')


@pytest.fixture(scope="module")
def ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ltx_video(tmp_path_factory.mktemp("models") / "ltx-video")


@pytest.fixture(scope="module")
def draft(ltx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ltx_draft(tmp_path_factory.mktemp("models") / "ltx-video-distilled", ltx)


def backend_for(tmp_path: Path, table: dict[str, Any], **config: Any) -> LtxVideoBackend:
    settings = Settings(inbox=tmp_path / "in", outbox=tmp_path / "out", failed=tmp_path / "failed",
                        done=tmp_path / "done", work=tmp_path / "work",
                        diffusion={**CPU, **config.pop("diffusion", {})},  # type: ignore[arg-type]
                        models={"ltx-video": table}, **config)
    return LtxVideoBackend(settings)


@pytest.fixture(scope="module")
def with_draft(ltx: Path, draft: Path, tmp_path_factory: pytest.TempPathFactory) -> LtxVideoBackend:
    backend = backend_for(tmp_path_factory.mktemp("drafted"), {"model": str(ltx), "draft_model": str(draft)})
    backend.load()
    return backend


def clip(backend: LtxVideoBackend, quality: str, image: Path, progress: Progress = ignore,
         **fields: Any) -> tuple[np.ndarray, Any]:
    spec = JobSpec.model_validate({**TINY, "quality": quality, **fields})
    params = resolve(spec, backend.settings.defaults, backend=backend.name, seed=5,
                     levels=levels_for(backend.settings.quality, backend.name))
    frames = backend.generate(rgb(image), params, progress)
    return frames.pixels, frames.details


def test_a_draft_job_runs_the_draft_transformer_and_the_next_final_the_base_one_as_before(
        tmp_path: Path, ltx: Path, draft: Path, with_draft: LtxVideoBackend) -> None:
    image = make_image(tmp_path / "in.png", (96, 72), seed=3)
    base = with_draft.pipe.transformer
    before, before_details = clip(with_draft, "final", image)
    drafted, details = clip(with_draft, "draft", image)
    after, after_details = clip(with_draft, "final", image)
    assert np.array_equal(before, after) and with_draft.pipe.transformer is base
    assert details["transformer"] == {"transformer": "draft", "path": str(draft),
                                      "why": "quality draft: [models.ltx-video] draft_model"}
    assert after_details["transformer"] == before_details["transformer"] == {
        "transformer": "base", "path": str(ltx),
        "why": "quality final: [models.ltx-video] draft_model serves the draft level only"}
    # The distilled schedule: 8 timesteps at guidance 1, one pass each; the final's 2 steps with CFG.
    assert details["distilled"]["distilled"] and details["distilled"]["decided_by"] == "draft_model"
    assert details["schedule"]["timesteps"] == list(DISTILLED_TIMESTEPS)
    assert details["denoiser_passes"] == len(DISTILLED_TIMESTEPS) == 8
    assert after_details["denoiser_passes"] == 4 and "schedule" not in after_details
    # What the docs' table and bench/levels.py plan is what ran.
    planned = [with_draft.planned_passes(resolve(JobSpec.model_validate({**TINY, "quality": level}),
                                                 with_draft.settings.defaults, backend=with_draft.name,
                                                 seed=5, levels=levels_for(with_draft.settings.quality,
                                                                           with_draft.name)))
               for level in ("draft", "final")]
    assert planned == [details["denoiser_passes"], after_details["denoiser_passes"]]
    assert details["speedups"]["compile"] is None and "draft transformer" in details["speedups"]["note"]
    # The same schedule on the base transformer (a final that asks for it) makes another clip.
    base_distilled, _ = clip(with_draft, "final", image, backend_options={"distilled": True})
    assert not np.array_equal(drafted, base_distilled)
    # A draft job may still ask for the base model.
    _, own = clip(with_draft, "draft", image, backend_options={"distilled": False})
    assert own["transformer"]["transformer"] == "base" and own["denoiser_passes"] == 4


def test_a_draft_job_that_fails_midway_puts_the_base_transformer_back(
        tmp_path: Path, with_draft: LtxVideoBackend) -> None:
    image = make_image(tmp_path / "in.png", (96, 72), seed=3)
    base = with_draft.pipe.transformer
    before, _ = clip(with_draft, "final", image)

    def stop(done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("stopped at step 2")

    with pytest.raises(RuntimeError, match="stopped at step 2"):
        clip(with_draft, "draft", image, progress=stop)
    assert with_draft.pipe.transformer is base
    assert np.array_equal(clip(with_draft, "final", image)[0], before)


def test_a_draft_model_of_another_architecture_is_refused_at_start_up(
        tmp_path: Path, ltx: Path) -> None:
    bigger = build_ltx_draft(tmp_path / "13b-distilled", ltx, num_layers=2)
    backend = backend_for(tmp_path, {"model": str(ltx), "draft_model": str(bigger)})
    with pytest.raises(StartupError, match=r"draft_model = .*not the architecture of \[models.ltx-video\] "
                                           r"model: num_layers 2 \(the model's: 1\)"):
        backend.load()


def test_a_missing_draft_model_or_an_offloaded_pipeline_is_refused_before_the_weights_load(
        tmp_path: Path, ltx: Path, draft: Path) -> None:
    missing = backend_for(tmp_path, {"model": str(ltx), "draft_model": str(tmp_path / "nowhere")})
    with pytest.raises(StartupError, match=r"no diffusers LTX-Video folder holding transformer/config\.json"):
        missing.load()
    assert missing.pipe is None and "transformer/config.json" in str(missing.unavailable())
    offloaded = backend_for(tmp_path, {"model": str(ltx), "draft_model": str(draft)},
                            diffusion={"offload": "model"})
    with pytest.raises(StartupError, match=r'cannot run with \[diffusion\] offload = "model"'):
        offloaded.load()
    assert offloaded.pipe is None
    wan = Settings.model_validate({**offloaded.settings.model_dump(exclude={"models"}),
                                   "models": {"wan-i2v": {"model": "x", "draft_model": "y"}}})
    with pytest.raises(StartupError, match=r"\[models.wan-i2v\] draft_model: only \[models.ltx-video\]"):
        check_model_tables(wan, ["wan-i2v", "ltx-video"], ["wan-i2v", "ltx-video"])


def test_the_shipped_draft_without_a_draft_model_warns_once_at_start_up(
        tmp_path: Path, ltx: Path, draft: Path, with_draft: LtxVideoBackend) -> None:
    plain = backend_for(tmp_path, {"model": str(ltx)})
    with structlog.testing.capture_logs() as logs:
        plain.load()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [WARNING]
    image = make_image(tmp_path / "in.png", (96, 72), seed=3)
    final, details = clip(plain, "final", image)
    assert "transformer" not in details  # without draft_model: the metadata as before
    assert np.array_equal(final, clip(with_draft, "final", image)[0])  # the base model, untouched
    assert draft_fallback(with_draft) is None
    assert draft_fallback(backend_for(tmp_path, {"model": str(ltx), "distilled": True})) is None
    assert draft_fallback(backend_for(tmp_path, {"model": "/models/LTX-Video-0.9.7-distilled"})) is None
    own_draft = backend_for(tmp_path, {"model": str(ltx)}, quality={"draft": {"steps": 6}})
    assert draft_fallback(own_draft) is None  # the user's own draft level is what they chose


@pytest.mark.slow
def test_a_daemon_publishes_a_draft_of_the_draft_model_and_a_final_of_the_base_one(
        folders: Folders, ltx: Path, draft: Path, start: Start) -> None:
    """A real daemon with draft_model in its config file: the draft is published under its draft name
    and its metadata names the draft transformer; the final's, the base one; no start-up warning."""
    use(folders, {"ltx-video": ltx}, "ltx-video")
    folders.write_config(models={"ltx-video": {"model": str(ltx), "draft_model": str(draft)}})
    small = "prompt: a red fox\nnum_frames: 9\nresolution: 64p\nsteps: 2\nseed: 7\n"
    for name in ("draft", "final"):
        make_image(folders.inbox / f"{name}.png", (96, 72), seed=3)
        (folders.inbox / f"{name}.yaml").write_text(f"{small}quality: {name}\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 0, daemon.log
    drafted, final = folders.metadata("draft.draft")["generation"], folders.metadata("final")["generation"]
    assert drafted["transformer"]["transformer"] == "draft" and drafted["denoiser_passes"] == 8
    assert final["transformer"]["transformer"] == "base" and final["denoiser_passes"] == 4
    assert not [e for e in daemon.events() if e["event"].startswith("the draft level runs")]
