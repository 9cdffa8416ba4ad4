"""GPU benchmark: every diffusion backend's model at its real architecture size with random weights (timing
does not depend on the weights), through its real diffusers pipeline, at its default size and at 480p
where the model is made larger: a few denoising steps timed and the per-step time extrapolated to the
model card's schedule, the VAE decode timed, peak VRAM; within 8 minutes on one H100. Run it alone with
`python bench/gpu_models.py` (a table on stdout, the figures in gpu_models.json) or in the suite with
`python -m bench --only gpu_models`.

    python bench/gpu_models.py [--only NAME ...] [--steps 2] [--max-seconds 480] [--no-480p]
                               [--json PATH] [--tiny]

Each model is built from its published component configs (bench/real_configs.py says where each comes
from) on the meta device, then every weight is created on the GPU in bfloat16 (the modules diffusers
keeps in float32 stay so), never on the host: Wan 2.2 A14B is two 14 B transformers. Text encoders are
not built: the pipeline gets random prompt embeddings of the shape they produce, so they are neither
timed nor in the peak VRAM; image encoders are built at their real size.

Timing: the scheduler's `step` is wrapped to synchronise CUDA and stamp the end of each denoising step.
The first step also holds the image's encoding and warm-up; the later steps' median is the per-step
time; from the last step to the pipeline's return is the VAE decode (and the frames' copy to the host; LTX-2's
audio VAE and vocoder too).
"extrapolated s" = first step + per-step x (the card's steps - 1) + decode. A model that does not fit in
the time left (`--max-seconds`, 8 minutes by default, for one H100) is stopped after its current step
and reported; one whose weights exceed the GPU's memory is skipped with the reason. `--only` takes a
backend (`wan-i2v`: all three Wans) or a model (`wan2.2-ti2v-5b`). Without a CUDA GPU it exits 0 saying
why; `--tiny` runs the same path on the CPU with the tiny configs of tests/tiny_models.py (the tests use
it to prove the plumbing; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import itertools
import json
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from bench.real_configs import CASES, PENDING, PROMPT_TOKENS, Case, Part  # noqa: E402
from bench.report import table  # noqa: E402

TITLE = "Every diffusion backend at its real size on the GPU (random weights, bfloat16)"
COLUMNS = ("backend", "model", "size", "frames", "params B", "weights GiB", "steps timed", "first step s",
           "s/step", "default steps", "extrapolated s", "VAE decode s", "peak GiB", "note")


class OutOfTime(Exception):
    """The benchmark's time is spent: the case stops after the step it is on."""


@dataclass
class Target:
    device: str  # "cuda" or "cpu" (--tiny)
    dtype: torch.dtype
    deadline: float  # time.monotonic() after which a running case stops
    steps: int
    tiny_dir: Path | None = None  # where --tiny builds its folders

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


class DoesNotFit(Exception):
    """The weights alone exceed the GPU's memory: the case is skipped before anything is allocated."""


def skeleton(part: Part) -> torch.nn.Module:
    """The component on the meta device: its shapes, no weights (buffers, computed at init, are real)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model: torch.nn.Module = (part.cls.from_config(part.config) if isinstance(part.config, dict)
                                  else part.cls(part.config))
    return model


def materialise(model: torch.nn.Module, target: Target) -> torch.nn.Module:
    """The component with random weights where it runs, never on the host: each parameter made on the
    target in its dtype (float32 for the modules its class keeps in float32, as diffusers' from_pretrained
    does); the buffers are moved there."""
    from accelerate.utils import set_module_tensor_to_device

    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in list(model.named_parameters()):
        dtype = torch.float32 if keep & set(name.split(".")) else target.dtype
        value = torch.empty(param.shape, dtype=dtype, device=target.device)
        if param.ndim > 1:
            value.normal_(0.0, 0.02)
        else:  # norms' scales 1, biases 0: activations stay in range
            value.fill_(1.0 if name.endswith("weight") else 0.0)
        set_module_tensor_to_device(model, name, target.device, value=value, dtype=dtype)
    return model.to(target.device).eval().requires_grad_(False)


def tiny_spec(case: Case, folder: Path) -> dict[str, Any]:
    """The tiny build's components as the same parts: its configs, rebuilt by `materialise`."""
    import diffusers

    import tiny_models

    builders: dict[str, Callable[[Path], Path]] = {  # the published checkpoints' layouts
        "build_cogvideox_i2v": functools.partial(tiny_models.build_cogvideox_i2v, patch_size_t=2),
        "build_hunyuan_i2v": functools.partial(tiny_models.build_hunyuan_i2v,
                                               image_condition="token_replace")}
    path = builders.get(case.tiny, getattr(tiny_models, case.tiny))(folder / case.name)
    pipe = getattr(diffusers, case.pipeline).from_pretrained(path)
    spec: dict[str, Any] = {}
    for name, component in pipe.components.items():
        if name in case.text_parts:
            spec[name] = None
        elif isinstance(component, torch.nn.Module):
            config = component.config
            spec[name] = Part(type(component), dict(config) if isinstance(config, dict) else config)
        else:
            spec[name] = component
    spec.update({key: pipe.config[key] for key in ("boundary_ratio", "expand_timesteps")
                 if key in pipe.config})
    return spec


def build(case: Case, target: Target, row: dict[str, Any]) -> Any:
    """The pipeline with random weights on the target; its parameter count (denoisers, VAE, image
    encoder; no text encoder) goes in the row."""
    import diffusers

    spec = tiny_spec(case, target.tiny_dir) if target.tiny_dir else case.real()
    models = {name: skeleton(value) for name, value in spec.items() if isinstance(value, Part)}
    params = sum(p.numel() for model in models.values() for p in model.parameters())
    row["params B"] = float(f"{params / 1e9:.3g}")
    if target.device.startswith("cuda"):
        weights, memory = params * target.dtype.itemsize, torch.cuda.get_device_properties(0).total_memory
        if weights > memory:
            raise DoesNotFit(f"skipped: its weights ({weights / 2**30:.1f} GiB) exceed the GPU's "
                             f"{memory / 2**30:.1f} GiB")
    built = {**spec, **{name: materialise(model, target) for name, model in models.items()}}
    pipe = getattr(diffusers, case.pipeline)(**built)
    pipe.set_progress_bar_config(disable=True)
    if case.vae_tiling:
        pipe.vae.enable_tiling()
    return pipe


def prompt_inputs(case: Case, pipe: Any, target: Target) -> dict[str, Any]:
    """Random prompt embeddings of the shape the skipped text encoders give, widths from the denoiser."""
    if case.backend == "svd":
        return {}  # no prompt
    config = pipe.unet.config if case.backend == "i2vgen-xl" else pipe.transformer.config
    if case.backend == "ltx2":  # every Gemma layer's hidden states, stacked: what the connectors take
        width = pipe.connectors.config["caption_channels"] * pipe.connectors.config["text_proj_in_factor"]
    else:
        width = config[{"i2vgen-xl": "cross_attention_dim", "wan-i2v": "text_dim",
                        "ltx-video": "caption_channels", "cogvideox-i2v": "text_embed_dim",
                        "hunyuan-i2v": "text_embed_dim"}[case.backend]]
    tokens = PROMPT_TOKENS[case.backend]
    noise = torch.Generator("cpu").manual_seed(0)

    def embeds(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=noise).to(target.device, target.dtype)

    inputs = {"prompt_embeds": embeds(1, tokens, width), "negative_prompt_embeds": embeds(1, tokens, width)}
    if case.backend in ("ltx-video", "hunyuan-i2v", "ltx2"):
        mask = torch.ones(1, tokens, dtype=torch.long, device=target.device)
        inputs.update(prompt_attention_mask=mask, negative_prompt_attention_mask=mask)
    if case.backend == "hunyuan-i2v":
        inputs.update(pooled_prompt_embeds=embeds(1, config["pooled_projection_dim"]),
                      negative_pooled_prompt_embeds=embeds(1, config["pooled_projection_dim"]))
    return inputs


def clock(pipe: Any, target: Target) -> list[float]:
    """Wrap the scheduler's step: each call's end, CUDA synchronised, is stamped in the returned list;
    past the deadline the pipeline stops there. The wrapper is a method bound to the scheduler, so a copy the
    pipeline makes (LTX-2 steps its audio with a deepcopy) steps itself, unstamped. (wraps: pipelines read
    step's signature.)"""
    ends: list[float] = []
    scheduler = pipe.scheduler
    original = type(scheduler).step

    @functools.wraps(original)
    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        if self is not scheduler:
            return out
        target.sync()
        ends.append(time.perf_counter())
        if time.monotonic() > target.deadline:
            raise OutOfTime
        return out

    scheduler.step = types.MethodType(step, scheduler)
    return ends


def head(case: Case) -> dict[str, Any]:
    return {"backend": case.backend, "model": case.label, "size": f"{case.width}x{case.height}"}


def measure(case: Case, target: Target) -> dict[str, Any]:
    """One case's row; what went wrong (out of memory, out of time, a failure) is in its note."""
    from PIL import Image

    row: dict[str, Any] = {**head(case), "frames": case.frames, "steps timed": target.steps,
                           "default steps": case.steps}
    cuda = target.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    pipe = None
    try:
        pipe = build(case, target, row)
        if cuda:
            row["weights GiB"] = round(torch.cuda.memory_allocated() / 2**30, 1)
        arguments = {"image": Image.new("RGB", (case.width, case.height), (90, 140, 200)),
                     "height": case.height, "width": case.width, "num_frames": case.frames,
                     "num_inference_steps": target.steps, "output_type": "np",
                     "generator": torch.Generator("cpu").manual_seed(0), **prompt_inputs(case, pipe, target),
                     **case.call}
        if case.backend == "svd":
            arguments["max_guidance_scale"] = case.guidance
        else:
            arguments["guidance_scale"] = case.guidance
        ends = clock(pipe, target)
        target.sync()
        started = time.perf_counter()
        try:
            pipe(**arguments)
            target.sync()
            row["VAE decode s"] = round(time.perf_counter() - ends[-1], 2)
        finally:
            row.update(timings(case, started, ends, row.get("VAE decode s")))
    except DoesNotFit as exc:
        row["note"] = str(exc)
    except OutOfTime:
        row["note"] = "stopped: the benchmark's time was spent (--max-seconds)"
    except torch.cuda.OutOfMemoryError:
        row["note"] = f"out of GPU memory ({torch.cuda.max_memory_allocated() / 2**30:.1f} GiB at peak)"
    except Exception as exc:  # one model failing must not lose the others' figures
        row["note"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
    finally:
        if cuda:
            row["peak GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        del pipe
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return {column: row[column] for column in COLUMNS if column in row}


def timings(case: Case, started: float, ends: list[float], decode: float | None) -> dict[str, Any]:
    if not ends:
        return {}
    later = [b - a for a, b in itertools.pairwise(ends)]
    first = ends[0] - started
    per_step = statistics.median(later) if later else first  # one step timed: it holds the warm-up too
    out = {"first step s": round(first, 2), "s/step": round(per_step, 2)}
    if decode is not None:
        out["extrapolated s"] = round(first + per_step * (case.steps - 1) + decode, 1)
    return out


def cases(only: list[str] | None, with_480p: bool) -> tuple[list[Case], list[str]]:
    """The cases to run, every model's default size first (a spent budget then costs the 480p runs),
    and the reasons for the names that have none."""
    chosen = [case for case in CASES if not only or case.backend in only or case.name in only]
    sized = chosen + [replace(case, width=w, height=h) for case in chosen if with_480p
                      for w, h in case.more_sizes]
    known = {case.backend for case in CASES} | {case.name for case in CASES}
    notes = [f"{name}: {PENDING[name]}" for name in (only or PENDING) if name in PENDING]
    notes += [f"{name}: no such backend or model (known: {', '.join(sorted(known))})"
              for name in only or () if name not in known and name not in PENDING]
    return sized, notes


@dataclass(frozen=True)
class Options:
    steps: int = 2  # the second step is the per-step time; a third costs a 720p model 30 s or so
    max_seconds: float = 480.0
    only: list[str] | None = None
    with_480p: bool = True
    tiny: bool = False


def unavailable() -> str | None:
    return None if torch.cuda.is_available() else "it needs an NVIDIA GPU with CUDA (torch sees none)"


def quiet() -> None:
    """No progress bars or per-call warnings between the rows."""
    import diffusers
    import transformers

    for library in (diffusers.utils.logging, transformers.utils.logging):
        library.disable_progress_bar()
        library.set_verbosity_error()


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads set to `count` for the run, then restored (None: left as they are). --tiny takes
    one: its tensors gain nothing from more, and on a busy machine the threads wait on each other (one
    thread ran the tiny LTX-2 call 15x faster than two on 2 shared cores)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_all(options: Options, say: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.monotonic()
    quiet()
    # A case stops at a step past the deadline, and its decode still runs: keep a margin for it.
    deadline = started + options.max_seconds - min(60.0, options.max_seconds / 8)
    chosen, notes = cases(options.only, options.with_480p and not options.tiny)
    for note in notes:
        say(f"skipped {note}")
    with tempfile.TemporaryDirectory() as tmp, cpu_threads(1 if options.tiny else None):
        target = Target("cpu" if options.tiny else "cuda", torch.float32 if options.tiny else torch.bfloat16,
                        deadline, options.steps, Path(tmp) if options.tiny else None)
        rows = []
        for case in chosen:
            if options.tiny:  # the tiny builds' sizes: their smallest side, 9 frames
                case = replace(case, width=case.tiny_side, height=case.tiny_side, frames=9)
            if time.monotonic() > target.deadline:
                rows.append({**head(case), "note": "skipped: the benchmark's time was spent (--max-seconds)"})
                continue
            say(f"{case.label} {case.width}x{case.height}, {case.frames} frames ...")
            rows.append(measure(case, target))
            say(f"  {rows[-1]}")
    device = ("CPU (--tiny: tiny configs, figures mean nothing)" if options.tiny
              else torch.cuda.get_device_name())
    return {"device": device, "torch": torch.__version__, "dtype": str(target.dtype).removeprefix("torch."),
            "steps": options.steps, "max_seconds": options.max_seconds, "notes": notes, "rows": rows,
            "seconds": round(time.monotonic() - started, 1)}


def run(quick: bool = False) -> tuple[str, list[dict[str, object]]]:
    """For `python -m bench`: every model at its default size (and 480p unless quick)."""
    report = run_all(Options(with_480p=not quick))
    title = f"{TITLE} ({report['device']}, torch {report['torch']}, {report['steps']} steps timed)"
    return title, report["rows"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="a backend or a model (repeatable)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps timed per model (2 or more)")
    parser.add_argument("--max-seconds", type=float, default=480.0, help="the whole run's budget")
    parser.add_argument("--no-480p", dest="with_480p", action="store_false", help="default sizes only")
    parser.add_argument("--json", type=Path, default=Path("gpu_models.json"), help="where the JSON goes")
    parser.add_argument("--tiny", action="store_true", help="the tiny configs on the CPU: the plumbing only")
    args = parser.parse_args(argv)
    reason = None if args.tiny else unavailable()
    if reason:
        print(f"gpu_models: not run: {reason}")
        return 0
    report = run_all(Options(steps=max(args.steps, 1), max_seconds=args.max_seconds, only=args.only,
                             with_480p=args.with_480p, tiny=args.tiny))
    print(f"\n{TITLE}: {report['device']}, torch {report['torch']}, {report['dtype']}, "
          f"{report['steps']} steps timed, {report['seconds']} s in all\n\n{table(report['rows'])}")
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
