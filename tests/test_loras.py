"""LoRAs from local files ([models.<name>] loras) on the tiny random-weight Wan models, loaded through
the backend's real load path: a LoRA built in code with peft (random, non-zero lora_B) and saved in
diffusers' format with the pipeline class's save_lora_weights. In-process: a loaded backend's jobs of
each quality level, their frames and their metadata entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from test_diffusion import CPU, Start, ignore, rgb, use

from conftest import Folders, decode, make_image
from i2v_watcher import backends
from i2v_watcher.backends.base import card_defaults
from i2v_watcher.backends.diffusion import DiffusersBackend
from i2v_watcher.backends.drafts import draft_fallback
from i2v_watcher.backends.loras import load_loras, read_loras
from i2v_watcher.config.loras import model_loras, with_loras
from i2v_watcher.config.quality import levels_for
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.job.spec import JobParams, JobSpec, resolve
from tiny_models import build_wan22_a14b, build_wan_i2v

# Explicit fields win over every level, so each level's job has the same size, frames and steps here:
# only which LoRAs run differs.
TINY = {"prompt": "a boat", "num_frames": 4, "steps": 1, "resolution": "32p", "guidance_scale": 1.0}
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def save_lora(model: Path, target: Path, *, seed: int = 1, modules: list[str] | None = None) -> Path:
    """A rank-4 LoRA for the model's transformer (both Wan experts share its shape), random weights."""
    import torch
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(model / "transformer"))
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=modules or TARGETS,
                                       init_lora_weights=False))  # lora_B random: it changes the output
    WanImageToVideoPipeline.save_lora_weights(target, transformer_lora_layers=get_peft_model_state_dict(
        transformer))
    return target


@pytest.fixture(scope="module")
def wan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wan_i2v(tmp_path_factory.mktemp("models") / "wan-i2v")


@pytest.fixture(scope="module")
def lora(wan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding pytorch_lora_weights.safetensors, as save_lora_weights writes it."""
    return save_lora(wan, tmp_path_factory.mktemp("loras") / "fast")


@pytest.fixture(scope="module")
def plain(wan: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[DiffusersBackend, list[Any]]:
    """The tiny Wan with no LoRA configured, loaded once, and what its load logged."""
    with structlog.testing.capture_logs() as logs:
        backend = loaded(tmp_path_factory.mktemp("plain"), wan)
    return backend, logs


def backend_with(tmp_path: Path, model: Path, loras: list[dict[str, Any]] | None = None,
                 **config: Any) -> DiffusersBackend:
    table: dict[str, Any] = {"model": str(model)}
    if loras is not None:
        table["loras"] = loras
    settings = Settings(inbox=tmp_path / "in", outbox=tmp_path / "out", failed=tmp_path / "failed",
                        done=tmp_path / "done", work=tmp_path / "work", diffusion=CPU,  # type: ignore[arg-type]
                        models={"wan-i2v": table}, **config)
    backends.discover([])
    backend = backends.get("wan-i2v")(settings)
    assert isinstance(backend, DiffusersBackend)
    return backend


def loaded(tmp_path: Path, model: Path, loras: list[dict[str, Any]] | None = None) -> DiffusersBackend:
    backend = backend_with(tmp_path, model, loras)
    backend.load()
    return backend


def resolved(backend: DiffusersBackend, spec: JobSpec) -> JobParams:
    """A job as the daemon resolves it: its sidecar, its level's fields (the LoRAs' among them), the
    model card."""
    settings, name = backend.settings, backend.name
    levels = with_loras(levels_for(settings.quality, name), model_loras(settings, name))
    return resolve(spec, settings.defaults, backend=name, seed=5, model_defaults=card_defaults(backend),
                   levels=levels)


def params(backend: DiffusersBackend, quality: str, **fields: Any) -> JobParams:
    return resolved(backend, JobSpec.model_validate({**TINY, "quality": quality, **fields}))


def clip(backend: DiffusersBackend, quality: str, tmp_path: Path,
         **fields: Any) -> tuple[np.ndarray, dict[str, Any]]:
    frames = backend.generate(rgb(make_image(tmp_path / "in.png", (32, 32), seed=3)),
                              params(backend, quality, **fields), ignore)
    return frames.pixels, frames.details


def test_a_level_s_lora_is_switched_per_job_and_off_is_exactly_the_model_without_it(
        tmp_path: Path, wan: Path, lora: Path, plain: tuple[DiffusersBackend, list[Any]]) -> None:
    base, details = clip(plain[0], "final", tmp_path)
    assert "loras" not in details  # a model without LoRAs: its metadata as before
    both = loaded(tmp_path, wan, [{"path": str(lora), "levels": ["draft"]},
                                  {"path": str(lora), "scale": 0.0, "levels": ["standard"]}])
    draft, draft_details = clip(both, "draft", tmp_path)
    assert not np.array_equal(draft, base)  # the LoRA changes the clip
    assert draft_details["loras"] == [{"path": str(lora), "adapter": "lora0_pytorch_lora_weights",
                                       "scale": 1.0, "into": "transformer", "mode": "switched"}]
    scale_0, scale_0_details = clip(both, "standard", tmp_path)
    assert np.array_equal(scale_0, base)  # at scale 0 it changes nothing
    assert [entry["scale"] for entry in scale_0_details["loras"]] == [0.0]
    final, final_details = clip(both, "final", tmp_path)
    assert np.array_equal(final, base) and final_details["loras"] == []  # off: as if never loaded
    again, _ = clip(both, "draft", tmp_path)
    assert np.array_equal(again, draft)  # switched back on for the next draft


def test_a_lora_of_every_level_is_fused_at_load_and_said_so(
        tmp_path: Path, wan: Path, lora: Path, plain: tuple[DiffusersBackend, list[Any]]) -> None:
    import torch
    from safetensors.torch import load_file

    with structlog.testing.capture_logs() as logs:
        fused = loaded(tmp_path, wan, [{"path": str(lora), "scale": 0.5}])
    assert [e["path"] for e in logs if e["event"].startswith("LoRA fused")] == [str(lora)]
    assert fused.pipe.get_list_adapters() == {}  # no adapter left to switch: it is in the weights
    weights = load_file(lora / "pytorch_lora_weights.safetensors")
    down, up = (weights[f"transformer.blocks.0.attn1.to_q.lora_{ab}.weight"] for ab in "AB")
    base = plain[0].pipe.transformer.blocks[0].attn1.to_q.weight
    to_q = fused.pipe.transformer.blocks[0].attn1.to_q.weight
    assert torch.allclose(to_q, base + 0.5 * up @ down, atol=1e-6)
    assert fused.loras.use(fused.pipe, "draft") == {"loras": [{
        "path": str(lora), "adapter": "lora0_pytorch_lora_weights", "scale": 0.5, "into": "transformer",
        "mode": "fused"}]}


def test_into_transformer_2_loads_into_wan22_a14b_s_second_expert(
        tmp_path: Path, wan: Path, lora: Path, plain: tuple[DiffusersBackend, list[Any]],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    a14b = build_wan22_a14b(tmp_path_factory.mktemp("models") / "a14b")
    backend = loaded(tmp_path, a14b, [{"path": str(lora), "into": "transformer_2", "levels": ["draft"]}])
    assert backend.pipe.get_list_adapters() == {"transformer_2": ["lora0_pytorch_lora_weights"]}
    # 2 steps: the high-noise expert runs the first, the low-noise one (with the LoRA) the second.
    draft, details = clip(backend, "draft", tmp_path, steps=2)
    final, _ = clip(backend, "final", tmp_path, steps=2)
    assert not np.array_equal(draft, final) and details["loras"][0]["into"] == "transformer_2"
    wan21 = backend_with(tmp_path, wan, [{"path": str(lora), "into": "transformer_2", "levels": ["draft"]}])
    with pytest.raises(StartupError, match=r"\[models.wan-i2v\] loras\[0\] into = 'transformer_2': the "
                                           r"wan-i2v model has no transformer_2"):
        load_loras("wan-i2v", plain[0].pipe, read_loras(wan21))  # as load() would, with Wan 2.1 loaded


def test_a_missing_unreadable_or_foreign_lora_is_a_start_up_error_naming_the_setting(
        tmp_path: Path, wan: Path, lora: Path) -> None:
    missing = backend_with(tmp_path, wan, [{"path": str(tmp_path / "nowhere.safetensors")}])
    with pytest.raises(StartupError, match=r"\[models.wan-i2v\] loras\[0\] path: .*nowhere.* does not exist"):
        missing.load()
    assert missing.pipe is None  # refused before the model's weights were read
    (tmp_path / "junk.safetensors").write_text("not tensors")
    junk = [{"path": str(lora)}, {"path": str(tmp_path / "junk.safetensors")}]
    with pytest.raises(StartupError, match=r"loras\[1\] path: .*junk.safetensors is not a safetensors file"):
        backend_with(tmp_path, wan, junk).load()
    foreign = save_lora(wan, tmp_path / "foreign", modules=["linear_1"])  # then renamed out of the model
    weights = foreign / "pytorch_lora_weights.safetensors"
    from safetensors.torch import load_file, save_file

    save_file({k.replace("condition_embedder", "some_other_net"): v for k, v in load_file(weights).items()},
              weights)
    with pytest.raises(StartupError, match=r"loras\[0\] path: .* is no LoRA for the wan-i2v model's "
                                           r"transformer: .*not found in the base model"):
        loaded(tmp_path, wan, [{"path": str(foreign)}])


def test_a_lora_s_job_fields_join_its_levels_and_the_sidecar_still_wins(tmp_path: Path, wan: Path) -> None:
    backend = backend_with(tmp_path, wan, [{"path": "fast.safetensors", "levels": ["draft"], "steps": 4,
                                            "guidance_scale": 1.0}])
    draft = resolved(backend, JobSpec(quality="draft"))
    assert (draft.steps, draft.guidance_scale, draft.resolution) == (4, 1.0, "480p")  # the level's size
    assert {"steps", "guidance_scale"} <= draft.from_level
    final = resolved(backend, JobSpec(quality="final"))
    assert (final.steps, final.guidance_scale) == (40, 5.0)  # the shipped final's, untouched
    own = resolved(backend, JobSpec(quality="draft", steps=6))
    assert own.steps == 6 and own.guidance_scale == 1.0


def test_the_shipped_draft_without_a_lora_warns_once_naming_the_setting(
        tmp_path: Path, wan: Path, plain: tuple[DiffusersBackend, list[Any]]) -> None:
    backend, logs = plain
    warning = draft_fallback(backend)
    assert warning == (
        "the draft level runs 10 steps of the base model; a 4-step distilled LoRA (e.g. lightx2v's; Wan 2.2 "
        'A14B: one for each expert, the second with into = "transformer_2") in [models.wan-i2v] loras = '
        '[{path = "...", levels = ["draft"], steps = 4, guidance_scale = 1.0}] makes it faster')
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [warning]  # said at its load
    with structlog.testing.capture_logs() as again:
        assert read_loras(backend) == []  # a reload (a swap back) does not say it again
    assert again == []
    assert draft_fallback(backend_with(tmp_path, wan, [{"path": "x", "levels": ["draft", "final"]}])) is None
    own_draft = backend_with(tmp_path, wan, quality={"draft": {"steps": 6}})
    assert draft_fallback(own_draft) is None  # the user's own draft level is what they chose


def test_a_daemon_runs_a_draft_with_its_lora_and_the_final_without_on_one_model(
        folders: Folders, wan: Path, lora: Path, start: Start) -> None:
    """A real daemon: the draft level's LoRA carries its steps and guidance (2, without guidance: 2
    denoiser passes); the final is the model as published (guidance 5: 4 passes for its 2 steps)."""
    entry = {"path": str(lora), "levels": ["draft"], "steps": 2, "guidance_scale": 1.0}
    use(folders, {"wan-i2v": wan}, "wan-i2v")
    folders.write_config(models={"wan-i2v": {"model": str(wan), "loras": [entry]}})
    small = "prompt: a boat\nnum_frames: 4\nresolution: 32p\nseed: 7\n"
    for name, sidecar in (("draft", "quality: draft\n"), ("final", "quality: final\nsteps: 2\n")):
        make_image(folders.inbox / f"{name}.png", (32, 32), seed=3)
        (folders.inbox / f"{name}.yaml").write_text(small + sidecar)
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 0, daemon.log
    # A draft is published as <name>.draft (draft_name_template).
    draft, final = folders.metadata("draft.draft"), folders.metadata("final")
    assert draft["generation"]["loras"] == [{"path": str(lora), "adapter": "lora0_pytorch_lora_weights",
                                             "scale": 1.0, "into": "transformer", "mode": "switched"}]
    assert draft["quality_set"]["steps"] == 2 and draft["quality_set"]["guidance_scale"] == 1.0
    assert draft["generation"]["denoiser_passes"] == 2
    assert final["generation"]["loras"] == [] and final["generation"]["denoiser_passes"] == 4
    events = daemon.events()
    assert [e["event"] for e in events if e["event"].startswith("LoRA")] == [
        "LoRA loaded, switched on for the jobs of its quality levels"]
    assert not [e for e in events if e["event"].startswith("the draft level runs")]  # a draft LoRA is set
    drafted, finished = decode(folders.outbox / "draft.draft.mp4"), decode(folders.outbox / "final.mp4")
    assert drafted.frames == finished.frames == 5
