"""The [diffusion] speed-ups on tiny random-weight models on the CPU, through the real loading path: the
cache hook installed and its skipped block computations counted into the job's metadata, a model whose
blocks a cache does not know refused at load, the attention backend checked against what is installed,
regional compile chosen where the model declares repeated blocks, float8 refused without a float8 GPU,
and group offload as an OOM rung (onload and offload both on the CPU here)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from i2v_watcher import backends
from i2v_watcher.backends.attempt import PassCounter
from i2v_watcher.backends.diffusion import DiffusersBackend
from i2v_watcher.backends.speedups import (
    CACHE_MODELS,
    GROUP_HOOKS,
    attention_backends,
    check_attention_backend,
    check_swapped_caches,
    compile_denoiser,
    install_cache,
)
from i2v_watcher.config.models import DiffusionSettings, OomRung
from i2v_watcher.config.settings import Settings
from i2v_watcher.config.speed import CACHE_KINDS, FirstBlockCache
from i2v_watcher.errors import StartupError
from i2v_watcher.job.spec import JobParams, JobSpec, resolve
from tiny_models import _wan_transformer, build_svd, build_wan_i2v

TINY = {"num_frames": 4, "steps": 2, "resolution": "32p", "fps": 8.0}  # 2:1 images: 64x32 clips
Load = Callable[..., DiffusersBackend]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("speedups")
    return {"root": root, "wan-i2v": build_wan_i2v(root / "wan")}


@pytest.fixture(scope="module")
def load(folders: dict[str, Path]) -> Load:
    def _load(name: str = "wan-i2v", **diffusion: Any) -> DiffusersBackend:
        root = folders["root"]
        settings = Settings(inbox=root / "in", outbox=root / "out", failed=root / "failed",
                            done=root / "done", work=root / "work", diffusion={"device": "cpu", **diffusion},  # type: ignore[arg-type]
                            defaults=TINY,  # type: ignore[arg-type]
                            models={name: {"model": str(folders[name])}})  # type: ignore[dict-item]
        backends.discover([])
        backend = backends.get(name)(settings)
        assert isinstance(backend, DiffusersBackend)
        backend.load()
        return backend
    return _load


def job(backend: DiffusersBackend, seed: int = 5, quality: str = "standard") -> JobParams:
    return resolve(JobSpec.model_validate({"prompt": "a red fox", "guidance_scale": 4.0, "quality": quality}),
                   backend.settings.defaults, backend=backend.name, seed=seed)


IMAGE = Image.new("RGB", (128, 64), (150, 90, 40))


def test_first_block_cache_skips_blocks_and_the_job_records_how_many(load: Load) -> None:
    backend = load(cache={"kind": "first-block", "threshold": 1.0})
    frames = backend.generate(IMAGE, job(backend), lambda done, total: None)
    speedups = frames.details["speedups"]
    cache = speedups["cache"]
    assert cache["kind"] == "first-block" and cache["threshold"] == 1.0
    # Tiny Wan has two blocks (the head block that decides, the tail that is skipped); 2 steps with
    # guidance: the prompt's and the negative prompt's pass each step, two block calls each. The first
    # step computes everything; at threshold 1 the second skips the tail block in both passes.
    assert cache["hooked_modules"] == 2 and cache["calls"] == 2 * 2 * 2
    assert cache["skipped"] == 2 and cache["computed"] == 6
    assert speedups["compile"] is None and speedups["offload"] == "none" and speedups["quantize"] == "none"

    # Group offload as an OOM rung, on a pipeline that has a cache hook too: the same frames (the cache
    # starts clean each job, its counts too), and afterwards no offload hook is left behind.
    backend.settings.diffusion.oom_ladder[:] = [OomRung(offload="group")]
    first = backend.plan(IMAGE.size, job(backend), {})
    [rung] = backend.ladder(IMAGE, first)
    assert rung.offload == "group"
    pixels, _ = backend._attempt(IMAGE, job(backend), rung, lambda done, total: None, None, PassCounter())
    assert np.array_equal(pixels, frames.pixels) and backend.speedups.record()["cache"] == cache
    modules = list(backend.pipe.transformer.modules()) + list(backend.pipe.vae.modules())
    assert not [m for m in modules if any(getattr(m, "_diffusers_hook", None) and
                                          m._diffusers_hook.get_hook(h) for h in GROUP_HOOKS)]
    assert backend.pipe.transformer.device.type == "cpu"

    # Which cache kinds take on Wan's transformer is what CACHE_MODELS says.
    transformer = backend.pipe.transformer
    transformer.disable_cache()
    for kind in CACHE_KINDS:
        settings: dict[str, Any] = {"kind": kind}
        if kind == "mag":
            settings["mag_ratios"] = [1.0, 0.9]
        cache_settings = DiffusionSettings.model_validate({"cache": settings}).cache
        assert cache_settings is not None
        if "wan-i2v" in CACHE_MODELS[kind]:
            install_cache("wan-i2v", backend.pipe, [transformer], cache_settings)
            transformer.disable_cache()
        else:
            with pytest.raises(StartupError, match=f'cache kind = "{kind}" does not work with the wan-i2v'):
                install_cache("wan-i2v", backend.pipe, [transformer], cache_settings)


def test_each_quality_level_runs_with_its_own_threshold_on_the_same_resident_hooks(load: Load) -> None:
    backend = load(cache={"kind": "first-block", "threshold": 0.001, "levels": {"draft": 1.0}})
    hooks = backend.pipe.transformer

    def cache(quality: str) -> dict[str, Any]:
        frames = backend.generate(IMAGE, job(backend, quality=quality), lambda done, total: None)
        assert backend.pipe.transformer is hooks  # nothing was reinstalled or reloaded
        counted: dict[str, Any] = frames.details["speedups"]["cache"]
        return counted

    # Same 2 steps with guidance (8 block calls, see above): the draft at 1.0 skips the tail block in
    # both passes of the second step, the final at the table's 0.001 skips nothing; and back again.
    draft, final = cache("draft"), cache("final")
    assert draft["threshold"] == 1.0 and draft["skipped"] == 2 and draft["calls"] == 8
    assert final["threshold"] == 0.001 and final["skipped"] == 0 and final["calls"] == 8
    assert "levels" not in draft and cache("draft") == draft

    # MagCache reads its threshold from its config on every call: the error its ratios predict for the
    # second step (|1 - 0.9| = 0.1) is under the draft's 0.2 and over the table's 0.06.
    hooks.disable_cache()
    settings = DiffusionSettings.model_validate({"cache": {
        "kind": "mag", "mag_ratios": [1.0, 0.9], "retention_ratio": 0, "levels": {"draft": 0.2}}}).cache
    assert settings is not None
    backend.speedups.cache = install_cache("wan-i2v", backend.pipe, [hooks], settings)
    draft, final = cache("draft"), cache("final")
    assert (draft["threshold"], final["threshold"]) == (0.2, 0.06)
    assert draft["skipped"] > final["skipped"] == 0


def test_a_model_whose_blocks_the_cache_does_not_know_is_refused_at_load(load: Load,
                                                                          folders: dict[str, Path]) -> None:
    folders["svd"] = build_svd(folders["root"] / "svd")
    with pytest.raises(StartupError) as refused:
        load("svd", cache={"kind": "first-block", "threshold": 0.1})
    message = str(refused.value)
    assert '[diffusion] cache kind = "first-block" does not work with the svd model' in message
    assert "Backends it works with: wan-i2v, ltx-video, cogvideox-i2v, hunyuan-i2v" in message
    with pytest.raises(StartupError, match=r"denoiser \(UNetSpatioTemporalConditionModel\) takes no caching"):
        load("svd", cache={"kind": "pab"})


def test_cache_tables_are_strict() -> None:
    with pytest.raises(ValueError, match="kind"):
        DiffusionSettings.model_validate({"cache": {"kind": "tea", "threshold": 0.1}})
    with pytest.raises(ValueError, match="cache_interval"):  # a knob of another kind
        DiffusionSettings.model_validate({"cache": {"kind": "first-block", "cache_interval": 3}})
    with pytest.raises(ValueError, match="mag_ratios"):  # MagCache has no ratios of its own for video
        DiffusionSettings.model_validate({"cache": {"kind": "mag", "threshold": 0.1}})
    with pytest.raises(ValueError, match="threshold"):
        DiffusionSettings.model_validate({"cache": {"kind": "first-block", "threshold": 0}})
    # A threshold per quality level: level names only (a misspelt one is told the closest), the same
    # range as `threshold`, and only on the kinds a threshold drives.
    with pytest.raises(ValueError, match=r"levels\.drat\.\[key\]\n.*did you mean draft\?"):
        DiffusionSettings.model_validate({"cache": {"kind": "first-block", "levels": {"drat": 0.2}}})
    for wrong in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"levels\.draft\n"):
            DiffusionSettings.model_validate({"cache": {"kind": "mag", "mag_ratios": [1.0, 0.9],
                                                        "levels": {"draft": wrong}}})
    with pytest.raises(ValueError, match="levels"):
        DiffusionSettings.model_validate({"cache": {"kind": "pab", "levels": {"draft": 0.2}}})
    cache = DiffusionSettings.model_validate({"cache": {"kind": "first-block", "threshold": 0.1,
                                                        "levels": {"draft": 0.3}}}).cache
    assert isinstance(cache, FirstBlockCache)
    assert [cache.threshold_for(level) for level in ("draft", "standard", "final")] == [0.3, 0.1, 0.1]


def test_the_attention_backend_is_one_installed_here() -> None:
    usable = attention_backends()
    assert "sdpa" in usable and "_native_math" in usable and not [b for b in usable if b.endswith("_hub")]
    check_attention_backend("_native_math")
    with pytest.raises(StartupError) as hub:
        check_attention_backend("flash_hub")
    assert "downloaded from the hub" in str(hub.value) and "available here: sdpa," in str(hub.value)
    from diffusers.models.attention_dispatch import AttentionBackendName

    # One diffusers knows but this machine cannot run (NPU attention, at least, on the test machines).
    missing = next(b.value for b in AttentionBackendName
                   if b.value not in usable and not b.value.endswith("_hub"))
    with pytest.raises(StartupError, match=rf"'{missing}': not available .* available here: sdpa, "):
        check_attention_backend(missing)
    with pytest.raises(StartupError, match="'nonsense': not available"):
        check_attention_backend("nonsense")


def test_regional_compile_where_the_model_repeats_blocks_else_the_whole_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the choice: torch.compile on the CPU takes over a minute even for the tiny Wan (measured: 70 s
    # for the first clip with compile = "regional"), so Module.compile records what it was asked to compile.
    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(type(self).__name__))
    wan = _wan_transformer(36, 16, image_dim=4)
    assert compile_denoiser(wan, "regional") == "regional"
    assert compiled == ["WanTransformerBlock"] * len(wan.blocks)  # each block, not the whole model
    compiled.clear()
    assert compile_denoiser(torch.nn.Linear(2, 2), "regional") == "whole"  # no _repeated_blocks
    assert compile_denoiser(wan, True) == "whole" and compiled == ["Linear", "WanTransformer3DModel"]
    assert compile_denoiser(wan, False) is None and len(compiled) == 2
    assert DiffusionSettings.model_validate({"compile": "regional"}).compile == "regional"
    assert DiffusionSettings.model_validate({"compile": True}).compile is True
    with pytest.raises(ValueError, match="compile"):
        DiffusionSettings.model_validate({"compile": "everything"})


def test_float8_is_refused_on_the_cpu_before_the_weights_load(load: Load) -> None:
    with pytest.raises(StartupError, match=r'quantize = "float8" needs a CUDA GPU with float8 support '
                                           r"\(compute capability 8.9"):
        load(quantize="float8")


def test_the_benchmark_counts_the_skipped_blocks_beside_the_wall_time(folders: dict[str, Path]) -> None:
    bench = importlib.import_module("bench.speedups")
    title, rows = bench.run(steps=2, repeat=1, thresholds=(1.0,), resolution="32p", model=folders["wan-i2v"])
    plain, cached = rows
    assert "First Block Cache" in title and cached["cache"] == "first-block 1.0"
    assert plain["denoiser passes"] == cached["denoiser passes"] == 2 * 2  # guidance: two passes a step
    assert plain["block computations"] == 4 * 2 and plain["blocks skipped"] == 0  # the tiny Wan: 2 blocks
    assert cached["blocks skipped"] == 2  # the tail block, in the second step's two passes
    assert cached["block computations"] + cached["blocks skipped"] == plain["block computations"]
    assert plain["wall s"] > 0 and cached["wall s"] > 0 and "speed-up x" in cached


def test_compile_happens_at_start_up_on_a_warm_up_clip_while_systemd_waits(
        load: Load, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from i2v_watcher.service.bootstrap import load_backends

    backend = load()
    clips: list[tuple[tuple[int, int], int, int]] = []

    def generate(image: Image.Image, params: JobParams, progress: Any, preloaded: Any = None) -> None:
        clips.append((image.size, params.steps, params.num_frames))
    monkeypatch.setattr(backend, "generate", generate)
    backend.warm_up()
    assert clips == []  # compile off: nothing to warm up
    backend.settings.diffusion.compile = "regional"
    backend.warm_up()
    assert clips == [((1280, 720), 2, TINY["num_frames"])]  # a 16:9 image at the default plan, 2 steps

    told: list[str] = []
    monkeypatch.setattr(type(backend), "load", lambda self: told.append("load"))
    monkeypatch.setattr(type(backend), "warm_up", lambda self: told.append("warm-up"))
    root = folders["root"]
    settings = Settings(inbox=root / "in", outbox=root / "out", failed=root / "failed", done=root / "done",
                        work=root / "work", backend="wan-i2v",
                        diffusion={"device": "cpu", "compile": "regional"},  # type: ignore[arg-type]
                        models={"wan-i2v": {"model": str(folders["wan-i2v"])}})  # type: ignore[dict-item]
    load_backends(settings, lambda seconds, doing: told.append(doing))
    assert told == [f"loading the wan-i2v backend ({folders['wan-i2v']})", "load",
                    "compiling the wan-i2v denoiser on a warm-up clip", "warm-up"]


def test_a_swap_backend_that_cannot_take_the_cache_is_refused_at_start_up() -> None:
    """Swapped models load only when a job needs them: the cache is checked against the table first."""
    first_block = DiffusionSettings.model_validate({"cache": {"kind": "first-block"}}).cache
    check_swapped_caches(first_block, ["wan-i2v", "hunyuan-i2v", "a-plugin-model"])
    check_swapped_caches(None, ["svd"])
    with pytest.raises(StartupError, match='cache kind = "first-block" does not work with the ltx2 model'):
        check_swapped_caches(first_block, ["wan-i2v", "ltx2"])
