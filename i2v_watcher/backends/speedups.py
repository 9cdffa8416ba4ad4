"""The `[diffusion]` speed-ups that diffusers offers, each checked and applied once at load, so that a
setting the model or the machine cannot honour is a start-up error, never a failed job: a caching hook
on the denoiser (and a count of the block computations it skipped, for each job's metadata), regional
or whole-model compile, the attention backend, float8 weights through torchao, and group offload.

torch and diffusers are imported inside the functions: the core install (preview backend) has neither."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from i2v_watcher.config.models import DiffusionSettings
from i2v_watcher.config.speed import (
    CacheSettings,
    FasterCache,
    FirstBlockCache,
    MagCache,
    PyramidAttentionBroadcast,
    TaylorSeerCache,
)
from i2v_watcher.errors import StartupError

log = structlog.get_logger("i2v_watcher.speedups")

# Which backends' denoisers each cache kind attaches to in diffusers 0.42.1, found by installing each on
# the tiny models (tests/test_speedups.py checks some). first-block and mag hook the top-level block list
# and need its blocks in diffusers' TransformerBlockRegistry (Wan, LTX 0.9, CogVideoX, HunyuanVideo; not
# LTX-2's) and at least two of them; taylorseer hooks attention modules whose names end in `attn` (Wan's,
# CogVideoX's and LTX 0.9's are `attn1`/`attn2`: nothing to hook); faster and pab hook the attention
# modules of the block lists and read the pipeline's current timestep (I2VGen-XL's and SVD's have none;
# neither has caching hooks at all: they are UNets).
REGISTERED = ("wan-i2v", "ltx-video", "cogvideox-i2v", "hunyuan-i2v")
CACHE_MODELS: dict[str, tuple[str, ...]] = {
    "first-block": REGISTERED, "mag": REGISTERED, "taylorseer": ("hunyuan-i2v", "ltx2"),
    "faster": ("wan-i2v", "cogvideox-i2v", "hunyuan-i2v"), "pab": (*REGISTERED, "ltx2"),
}
NEEDS_TIMESTEP = ("faster", "pab")
# FasterCache's frequency split reads latents in this layout; LTX's token sequence (BSC) it cannot.
FASTER_FORMATS = {"CogVideoXTransformer3DModel": "BFCHW", "LTXVideoTransformer3DModel": None,
                  "LTX2VideoTransformer3DModel": None}
DEFAULT_ATTENTION = "sdpa"  # ours: leave diffusers' default (PyTorch's scaled-dot-product attention)
FLOAT8_CAPABILITY = (8, 9)  # Ada Lovelace and newer: float8 matrix products


# ---- attention ------------------------------------------------------------------------------------
def attention_backends() -> list[str]:
    """The attention backends diffusers can run here: its own availability check passed (the package is
    installed, recent enough), and none that downloads kernels from the hub (`*_hub`)."""
    dispatch: Any = importlib.import_module("diffusers.models.attention_dispatch")

    usable = [DEFAULT_ATTENTION]
    for backend in dispatch.AttentionBackendName:
        if backend.value.endswith("_hub"):
            continue
        try:
            dispatch._check_attention_backend_requirements(backend)
        except (RuntimeError, ImportError, ValueError):
            continue
        usable.append(backend.value)
    return usable


def check_attention_backend(name: str) -> None:
    usable = attention_backends()
    if name.lower() in usable:
        return
    why = ("kernels downloaded from the hub at run time are not used (nothing is fetched while jobs run)"
           if name.lower().endswith("_hub") else "not available with the torch and diffusers installed here")
    raise StartupError(f"[diffusion] attention_backend = {name!r}: {why}; "
                       f"available here: {', '.join(usable)}")


# ---- float8 ---------------------------------------------------------------------------------------
def check_float8(options: DiffusionSettings) -> None:
    """float8 weights need torchao and a GPU of compute capability 8.9 or newer."""
    import torch

    setting = '[diffusion] quantize = "float8"'
    if not options.device.startswith("cuda"):
        raise StartupError(f"{setting} needs a CUDA GPU with float8 support (compute capability 8.9 or "
                           f"newer: Ada, Hopper, Blackwell); device is {options.device!r}. "
                           'Set quantize = "none"')
    index = int(options.device.partition(":")[2] or 0)
    capability = torch.cuda.get_device_capability(index)
    if capability < FLOAT8_CAPABILITY:
        raise StartupError(f"{setting} needs compute capability 8.9 or newer; {options.device} "
                           f"({torch.cuda.get_device_name(index)}) has {capability[0]}.{capability[1]}. "
                           "Set quantize = \"none\"")
    if importlib.util.find_spec("torchao") is None:
        raise StartupError(f"{setting} needs torchao: pip install 'i2v-watcher[speed]'")


def quantization(options: DiffusionSettings, denoiser: str) -> Any | None:
    """diffusers' pipeline-level quantization for the denoiser (and a second expert, Wan 2.2's
    `transformer_2`); None: the weights load as they are."""
    if options.quantize == "none":
        return None
    check_float8(options)
    diffusers: Any = importlib.import_module("diffusers")
    torchao: Any = importlib.import_module("torchao.quantization")  # a config object: strings raise in 0.42
    weights = diffusers.TorchAoConfig(torchao.Float8DynamicActivationFloat8WeightConfig())
    experts = (denoiser, f"{denoiser}_2")
    return diffusers.PipelineQuantizationConfig(quant_mapping=dict.fromkeys(experts, weights))


# ---- group offload --------------------------------------------------------------------------------
GROUP_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


def enable_offload(pipe: Any, how: str, device: Any, blocks: int) -> None:
    """CPU offload: "model" (one component on the device at a time), "sequential" (layer by layer) or
    "group" (each component's blocks come onto the device `blocks` at a time and go back to the CPU after;
    on a GPU the next group is copied on a side stream while the current one runs)."""
    import torch

    if how == "model":
        pipe.enable_model_cpu_offload(device=device)
        return
    if how == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
        return
    pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                              offload_type="block_level", num_blocks_per_group=blocks,
                              use_stream=torch.device(device).type == "cuda")


def remove_offload(pipe: Any, device: Any) -> None:
    """Undo enable_offload (diffusers has no call for group offload: its hooks are dropped from every
    module) and move the pipeline back onto `device`."""
    import torch

    pipe.remove_all_hooks()
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            registry = getattr(module, "_diffusers_hook", None)
            for name in GROUP_HOOKS:
                if registry is not None and registry.get_hook(name) is not None:
                    registry.remove_hook(name, recurse=False)
    pipe.to(device)


# ---- compile ---------------------------------------------------------------------------------------
def compile_denoiser(denoiser: Any, how: bool | str) -> str | None:
    """torch.compile the denoiser: "regional" compiles its repeated blocks once each (quick, one graph
    reused by every block) where it declares them (`_repeated_blocks`), else falls back to the whole
    model. Static shapes: each new size compiles once. Never `fullgraph`: the caching hooks leave the
    graph on purpose (their decisions are `torch.compiler.disable`d). Returns what was compiled."""
    if how is False:
        return None
    if how == "regional":
        if getattr(denoiser, "_repeated_blocks", None):
            denoiser.compile_repeated_blocks(fullgraph=False, dynamic=False)
            return "regional"
        log.info("regional compile is not supported by this denoiser (no _repeated_blocks): compiling the "
                 "whole model instead", denoiser=type(denoiser).__name__)
    denoiser.compile(fullgraph=False, dynamic=False)
    return "whole"


# ---- caching ---------------------------------------------------------------------------------------
def cache_config(cache: CacheSettings, pipe: Any, denoiser: Any) -> Any:
    """diffusers' config object for the `[diffusion] cache` table."""
    diffusers: Any = importlib.import_module("diffusers")

    def timestep() -> Any:
        return pipe.current_timestep

    if isinstance(cache, FirstBlockCache):
        return diffusers.FirstBlockCacheConfig(threshold=cache.threshold)
    if isinstance(cache, MagCache):
        return diffusers.MagCacheConfig(
            threshold=cache.threshold, mag_ratios=list(cache.mag_ratios),
            num_inference_steps=len(cache.mag_ratios), max_skip_steps=cache.max_skip_steps,
            retention_ratio=cache.retention_ratio)
    if isinstance(cache, TaylorSeerCache):
        return diffusers.TaylorSeerCacheConfig(cache_interval=cache.cache_interval, max_order=cache.max_order,
                                               disable_cache_before_step=cache.disable_cache_before_step)
    if isinstance(cache, FasterCache):
        # Most pipelines here run the conditional and unconditional passes as two calls: the
        # unconditional-branch approximation (which splits one batched call) stays off.
        return diffusers.FasterCacheConfig(
            spatial_attention_block_skip_range=cache.block_skip_range, current_timestep_callback=timestep,
            tensor_format=FASTER_FORMATS.get(type(denoiser).__name__, "BCFHW"), is_guidance_distilled=True)
    assert isinstance(cache, PyramidAttentionBroadcast)
    return diffusers.PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=cache.block_skip_range, current_timestep_callback=timestep)


def torch_tensor(values: list[float]) -> Any:
    import torch

    return torch.tensor(values)


def _hooks(module: Any) -> set[tuple[int, str]]:
    return {(id(sub), name) for sub in module.modules()
            for name in getattr(getattr(sub, "_diffusers_hook", None), "hooks", {})}


def install_cache(backend: str, pipe: Any, denoisers: Iterable[Any], cache: CacheSettings) -> CacheCounter:
    """The cache hook on each denoiser, with a counter of what it skipped; a StartupError naming the
    setting and the backends that support it where the model's blocks are not ones the hook knows."""
    counter = CacheCounter(cache)
    for denoiser in denoisers:
        model = type(denoiser).__name__
        why = _cache_refused(cache, pipe, denoiser)
        if why is None:
            before = _hooks(denoiser)
            try:
                denoiser.enable_cache(cache_config(cache, pipe, denoiser))
            except (AttributeError, IndexError, ValueError, TypeError) as exc:
                raise _refusal(backend, cache, f"{model}: {exc}") from exc
            added = _hooks(denoiser) - before
            if added:
                counter.watch(denoiser, added)
                continue
            denoiser.disable_cache()
            why = f"no block of {model} takes the hook"
        raise _refusal(backend, cache, why)
    return counter


def check_swapped_caches(cache: CacheSettings | None, swapped: Iterable[str]) -> None:
    """At start-up, before any load: a cache on a swap backend (loaded only when a job needs it) that
    CACHE_MODELS says cannot take it. A plugin's backend, not in the table, is checked when it loads."""
    known = {name for names in CACHE_MODELS.values() for name in names} | {"i2vgen-xl", "svd"}
    for name in swapped:
        if cache is not None and name in known and name not in CACHE_MODELS[cache.kind]:
            raise _refusal(name, cache, "its blocks do not take this hook (it is in swap_backends)")


def _cache_refused(cache: CacheSettings, pipe: Any, denoiser: Any) -> str | None:
    """Why the cache cannot go on this denoiser, where that shows before trying; None: try it."""
    model = type(denoiser).__name__
    if not hasattr(denoiser, "enable_cache"):
        return f"its denoiser ({model}) takes no caching hook"
    if cache.kind in NEEDS_TIMESTEP and not hasattr(type(pipe), "current_timestep"):
        return f"its pipeline ({type(pipe).__name__}) tells no current timestep"
    if cache.kind == "faster" and FASTER_FORMATS.get(model, "") is None:
        return f"FasterCache cannot read {model}'s latents"
    return None


def _refusal(backend: str, cache: CacheSettings, why: str) -> StartupError:
    works = ", ".join(CACHE_MODELS[cache.kind])
    return StartupError(f'[diffusion] cache kind = "{cache.kind}" does not work with the {backend} model: '
                        f"{why}. Backends it works with: {works}; remove the cache or pick another kind")


class CacheCounter:
    """How often the hooked modules were called and how often they really computed: the hook replaces a
    module's forward and calls the original one only when it computes (`fn_ref.original_forward`)."""

    def __init__(self, cache: CacheSettings) -> None:
        self.cache = cache
        self.denoisers: list[Any] = []
        self.modules = 0
        self.calls = 0
        self.computed = 0
        # What diffusers reads the threshold from while a job runs: MagCache's hooks share the
        # denoiser's config object; First Block Cache's head hook keeps its own copy.
        self.holders: list[Any] = []
        self.threshold: float | None = None

    def watch(self, denoiser: Any, added: set[tuple[int, str]]) -> None:
        self.denoisers.append(denoiser)
        if isinstance(self.cache, FirstBlockCache | MagCache):
            self.holders.append(denoiser._cache_config)
        for module in denoiser.modules():
            registry: Any = getattr(module, "_diffusers_hook", None)
            names = [name for name in getattr(registry, "hooks", {}) if (id(module), name) in added]
            hooks = [registry.get_hook(name) for name in names]
            if isinstance(self.cache, FirstBlockCache):
                self.holders += [hook for hook in hooks if hasattr(hook, "threshold")]
            hooks = [hook for hook in hooks if hasattr(getattr(hook, "fn_ref", None), "original_forward")]
            if not hooks:
                continue
            self.modules += 1
            module.register_forward_pre_hook(self._called)
            for hook in hooks:
                hook.fn_ref.original_forward = self._counting(hook.fn_ref.original_forward)

    def _called(self, *_: object) -> None:
        self.calls += 1

    def _counting(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        def computed(*args: Any, **kwargs: Any) -> Any:
            self.computed += 1
            return forward(*args, **kwargs)
        return computed

    def before_job(self, steps: int, level: str | None = None) -> None:
        """A clean cache for the next job (a failed one leaves its state behind), counters at zero,
        the threshold of the job's quality level on the resident hooks, and MagCache's ratios spread
        over this job's steps (it indexes them by step)."""
        from diffusers.hooks.mag_cache import nearest_interp

        if isinstance(self.cache, FirstBlockCache | MagCache):
            self.threshold = self.cache.threshold_for(level)
            for holder in self.holders:
                holder.threshold = self.threshold
        for denoiser in self.denoisers:
            denoiser._reset_stateful_cache()
            config = denoiser._cache_config
            if isinstance(self.cache, MagCache) and config.num_inference_steps != steps:
                config.mag_ratios = nearest_interp(torch_tensor(self.cache.mag_ratios), steps)
                config.num_inference_steps = steps
        self.calls = self.computed = 0

    def record(self) -> dict[str, Any]:
        """The cache's settings (the threshold: the one the job ran with, its level's or the table's),
        and what it skipped in the job since the last before_job()."""
        settings = {"kind": self.cache.kind, **self.cache.model_dump(exclude={"levels"})}
        if self.threshold is not None:
            settings["threshold"] = self.threshold
        return {**settings, "hooked_modules": self.modules, "calls": self.calls,
                "computed": self.computed, "skipped": self.calls - self.computed}


@dataclass
class Speedups:
    """What apply_options() applied, for each job's metadata (`generation.speedups`)."""

    compile: str | None = None  # "regional", "whole" or None
    attention_backend: str = DEFAULT_ATTENTION
    quantize: str = "none"
    offload: str = "none"
    cache: CacheCounter | None = None

    def before_job(self, steps: int, level: str | None = None) -> None:
        if self.cache is not None:
            self.cache.before_job(steps, level)

    def record(self) -> dict[str, Any]:
        return {"compile": self.compile, "attention_backend": self.attention_backend,
                "quantize": self.quantize, "offload": self.offload,
                "cache": None if self.cache is None else self.cache.record()}
