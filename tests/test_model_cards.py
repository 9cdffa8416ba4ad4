"""Each model's card: the defaults a job gets from it, and the size `resolution: auto` picks for it."""

from __future__ import annotations

import pytest

from i2v_watcher.backends import discover, get, with_models
from i2v_watcher.backends.base import card_defaults
from i2v_watcher.backends.capacity import auto_short_side
from i2v_watcher.backends.card import WEBUI_CARD, ModelCard
from i2v_watcher.config.models import DEFAULT_MODELS
from i2v_watcher.job.spec import JobDefaults, JobSpec, resolve

discover()
CARD = ModelCard(name="m", label="Model M", hub_id="org/m", width=1280, height=720, num_frames=81, fps=16.0,
                 steps=40, guidance_scale=3.5, params_b=10.5, sizes=((720, 100.0), (480, 0.0)))


def test_every_diffusion_backend_declares_the_card_of_its_default_model() -> None:
    for name in with_models():
        card = get(name).card
        assert card is not None, name
        assert card.hub_id == DEFAULT_MODELS[name].model, name  # `hf download` fetches what loads by default
        assert card.resolution == "auto" or card is WEBUI_CARD, name


def test_a_job_takes_each_field_from_its_sidecar_then_defaults_set_in_config_then_the_card() -> None:
    configured = JobDefaults.model_validate({"num_frames": 24})  # the config's [defaults] sets only this
    spec = JobSpec.model_validate({"steps": 8})
    params = resolve(spec, configured, backend="m", seed=1, model_defaults=CARD.defaults())
    assert (params.steps, params.num_frames) == (8, 24)  # the sidecar's; [defaults]' own
    assert (params.fps, params.guidance_scale, params.resolution) == (16.0, 3.5, "auto")  # the card's
    assert params.from_model == {"fps", "guidance_scale", "resolution"}
    plain = resolve(spec, configured, backend="m", seed=1)  # no card (preview, a plugin): built-ins
    assert (plain.fps, plain.guidance_scale, plain.resolution, plain.from_model) == (8.0, 9.0, "512p", set())


def test_i2vgen_xl_keeps_the_original_webui_defaults() -> None:
    params = resolve(JobSpec(), JobDefaults(), backend="i2vgen-xl", seed=1,
                     model_defaults=card_defaults(get("i2vgen-xl")))
    assert (params.num_frames, params.fps, params.steps, params.guidance_scale, params.resolution) == (
        16, 8.0, 50, 9.0, "512p")


@pytest.mark.parametrize(("gpu", "side"), [(None, 480), (24.0, 480), (99.9, 480), (100.5, 720), (141.0, 720)])
def test_auto_picks_the_largest_size_the_gpu_memory_holds(gpu: float | None, side: int) -> None:
    chosen, reason = CARD.auto_side(gpu)
    assert chosen == side and "Model M" in reason


def test_auto_keeps_the_webui_rule_for_i2vgen_xl() -> None:
    picks = [WEBUI_CARD.auto_side(gib)[0] for gib in (8.0, 12.0, 12.5, 18.0, 24.0, 80.0)]
    assert picks == [512, 512, 768, 768, 1024, 1024]  # ≤12 GB 512p, ≤18 GB 768p, else 1024p
    assert auto_short_side("cpu", get("wan-i2v").card or WEBUI_CARD)[0] == 480  # Wan 2.1 480P, not 512


def test_the_weights_memory_by_dtype_or_none_when_not_counted() -> None:
    assert (CARD.weights_gb("bfloat16"), CARD.weights_gb("float32")) == (21.0, 42.0)
    assert WEBUI_CARD.weights_gb("float16") == 5.0
    assert ModelCard(name="x", label="X", hub_id="o/x", width=64, height=64, num_frames=1, fps=1.0, steps=1,
                     guidance_scale=1.0).weights_gb("bfloat16") is None  # not counted: never guessed
