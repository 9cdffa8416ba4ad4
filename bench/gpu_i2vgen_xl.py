"""GPU benchmark: the real-size I2VGen-XL architecture (random weights; timing does not depend on them)
on a 512x512 input, 16 frames, 50 steps — time per clip for a first and a second (warm) job and peak
VRAM, the plain pipeline (float16, prompt embeddings computed as the backend does) against the daemon's
own backend with its settings, on a machine with an NVIDIA GPU.

    python bench/gpu_i2vgen_xl.py [--steps 50] [--frames 16] [--size 512] [--compile] [--quick]

In the suite (`python -m bench`) it runs where torch sees a CUDA GPU; `--quick` takes 10 steps.

Component sizes: the UNet is I2VGenXLUNet's defaults (1.42 B parameters, as published); the VAE is
Stable Diffusion's AutoencoderKL (128/256/512/512); the text tower OpenCLIP ViT-H/14's (width 1024, 24
layers); the image tower CLIP ViT-H/14's (width 1280, 32 layers, patch 14, 224 px, projection 1024).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_real_size(target: Path) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLPipeline, I2VGenXLUNet
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from tiny_models import _clip_tokenizer

    torch.manual_seed(0)
    tokenizer = _clip_tokenizer(target.with_name(f"{target.name}-vocab"))
    unet = I2VGenXLUNet()
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                        num_attention_heads=16, num_hidden_layers=24, hidden_act="gelu",
                                        projection_dim=1024, max_position_embeddings=77))
    image = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
        patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu"))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)
    pipe = I2VGenXLPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, image_encoder=image,
                            feature_extractor=CLIPImageProcessor(crop_size=224, size=224), unet=unet,
                            scheduler=scheduler)
    pipe.to(torch.float16).save_pretrained(target)
    return target


def timed(run: Any) -> dict[str, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return {"seconds": round(time.perf_counter() - started, 2),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def plain(model: Path, image: Image.Image, args: Options) -> list[dict[str, float]]:
    from diffusers import I2VGenXLPipeline

    from i2v_watcher.backends.i2vgen_xl import encode_prompt

    pipe = I2VGenXLPipeline.from_pretrained(model, torch_dtype=torch.float16).to("cuda")
    pipe.set_progress_bar_config(disable=True)

    def job() -> None:
        pipe(image=image, prompt_embeds=encode_prompt(pipe, "a fox", pipe.device),
             negative_prompt_embeds=encode_prompt(pipe, "", pipe.device), height=args.size, width=args.size,
             num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=9.0, target_fps=8,
             generator=torch.Generator("cpu").manual_seed(0), output_type="np")

    results = [timed(job), timed(job)]
    pipe.to("cpu")  # give the GPU back to the next contender
    torch.cuda.empty_cache()
    return results


def ours(model: Path, image: Image.Image, args: Options) -> list[dict[str, float]]:
    from i2v_watcher.backends.i2vgen_xl import I2VGenXLBackend
    from i2v_watcher.config.settings import Settings
    from i2v_watcher.job.spec import JobDefaults, JobSpec, resolve

    root = Path(tempfile.mkdtemp())
    settings = Settings(**{n: str(root / n) for n in ("inbox", "outbox", "failed", "done", "work")},
                        backend="i2vgen-xl", models={"i2vgen-xl": {"model": str(model)}},
                        diffusion={"device": "cuda", "compile": args.compile})
    backend = I2VGenXLBackend(settings)
    backend.load()
    params = resolve(JobSpec(prompt="a fox", num_frames=args.frames, steps=args.steps,
                             resolution=f"{args.size}p"), JobDefaults(), backend="i2vgen-xl", seed=0)
    return [timed(lambda: backend.generate(image, params, lambda d, t: None)) for _ in range(2)]


@dataclass(frozen=True)
class Options:
    steps: int = 50
    frames: int = 16
    size: int = 512
    compile: bool = False


TITLE = "I2VGen-XL at its real size on the GPU: the plain pipeline (float16) against the daemon's backend"


def unavailable() -> str | None:
    return None if torch.cuda.is_available() else "it needs an NVIDIA GPU with CUDA (torch sees none)"


def measure(args: Options) -> dict[str, Any]:
    image = Image.new("RGB", (args.size, args.size), (90, 140, 200))
    with tempfile.TemporaryDirectory() as tmp:
        model = build_real_size(Path(tmp) / "i2vgen-xl")
        report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                                  "size": args.size, "frames": args.frames, "steps": args.steps,
                                  "compile": args.compile, "plain_fp16": plain(model, image, args),
                                  "ours": ours(model, image, args)}
    report["warm_speedup"] = round(report["plain_fp16"][1]["seconds"] / report["ours"][1]["seconds"], 2)
    return report


def run(quick: bool = False) -> tuple[str, list[dict[str, object]]]:
    args = Options(steps=10 if quick else 50)
    report = measure(args)
    rows: list[dict[str, object]] = []
    for name, key in (("plain pipeline, float16", "plain_fp16"), ("the daemon's backend", "ours")):
        for job, result in zip(("first", "second (warm)"), report[key], strict=True):
            rows.append({"contender": name, "job": job, "seconds": result["seconds"],
                         "peak GiB": result["peak_gib"],
                         "warm speed-up of ours": f"{report['warm_speedup']:.2f}x" if key == "ours" and
                         job.startswith("second") else ""})
    return (f"{TITLE} ({report['gpu']}, torch {report['torch']}: {args.size}x{args.size}, "
            f"{args.frames} frames, {args.steps} steps; backend settings: defaults)"), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10 steps")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        sys.exit(reason)
    report = measure(Options(steps=10 if args.quick else args.steps, frames=args.frames, size=args.size,
                             compile=args.compile))
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
