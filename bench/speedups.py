"""First Block Cache on the CPU: denoiser passes, block computations and wall time per clip, with and
without `[diffusion] cache = {kind = "first-block", threshold = ...}`, side by side in one run.

    python bench/speedups.py [--quick] [--steps N] [--repeat R]

The model is tests/tiny_models.py's Wan 2.1 image-to-video pipeline with a deeper transformer (8 wider blocks
instead of 2, so that the cache has blocks to skip), random weights, loaded through the wan-i2v
backend's real path (`from_pretrained`, `apply_options`) and run through its `generate()`: a 128x64
image, 128x64 clips of 5 frames, guidance on (two denoiser passes a step). Each setting loads the model
once and makes the same seeded clip `repeat` times; the table has the median wall time. The counts come
from the job's own metadata (`generation.speedups.cache`) and a counter on the denoiser's forward.
Random weights say nothing about the quality the cache keeps: the frames' mean absolute difference from
the uncached clip is in the table only to show that the cache changed the computation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TITLE = "First Block Cache on the CPU: denoiser work and wall time per clip (tiny Wan 2.1, 8 blocks)"
TARGET = "First Block Cache skips block computations, and the clip takes less wall time than without it"
BLOCKS = 8
# Wider blocks than the tests' (24 wide, 32 ffn), so that the blocks, not the fixed costs (the text and
# image encoders, the VAE, the scheduler), are most of a step, as in a real model.
WIDER = {"num_attention_heads": 4, "attention_head_dim": 32, "ffn_dim": 512}
THRESHOLDS = (0.1, 0.3)


# Run alone (python bench/speedups.py): the repository and the tests' tiny builders on the path.
for _path in (Path(__file__).resolve().parent.parent / "tests", Path(__file__).resolve().parent.parent):
    sys.path.insert(0, str(_path))

from bench.report import table  # noqa: E402


def build(folder: Path) -> Path:
    """tests/tiny_models.py's tiny Wan 2.1 I2V, its transformer rebuilt with BLOCKS blocks."""
    import torch
    from diffusers import WanTransformer3DModel

    import tiny_models

    target = tiny_models.build_wan_i2v(folder / "wan")
    shallow = WanTransformer3DModel.from_pretrained(target / "transformer")
    torch.manual_seed(1)
    deeper = {**shallow.config, "num_layers": BLOCKS, **WIDER}
    WanTransformer3DModel.from_config(deeper).save_pretrained(target / "transformer")
    return target


class Contender:
    """One setting: the wan-i2v backend loaded once with it, and a counter on its denoiser's forward."""

    def __init__(self, model: Path, root: Path, cache: dict[str, Any] | None, steps: int,
                 resolution: str) -> None:
        from i2v_watcher import backends
        from i2v_watcher.config.settings import Settings
        from i2v_watcher.job.spec import JobSpec, resolve

        self.cache, self.times, self.passes = cache, [], 0
        diffusion: dict[str, Any] = {"device": "cpu", **({"cache": cache} if cache else {})}
        defaults = {"num_frames": 4, "steps": steps, "resolution": resolution, "fps": 8.0}
        settings = Settings(inbox=root / "in", outbox=root / "out", failed=root / "failed",
                            done=root / "done", work=root / "work", diffusion=diffusion, defaults=defaults,  # type: ignore[arg-type]
                            models={"wan-i2v": {"model": str(model)}})  # type: ignore[dict-item]
        backends.discover([])
        self.backend = backends.get("wan-i2v")(settings)
        self.backend.load()
        self.backend.pipe.transformer.register_forward_pre_hook(self._pass)
        self.blocks = len(self.backend.pipe.transformer.blocks)
        spec = JobSpec.model_validate({"prompt": "a red fox", "guidance_scale": 4.0})
        self.params = resolve(spec, settings.defaults, backend="wan-i2v", seed=3)
        self.frames: Any = None

    def _pass(self, *_: object) -> None:
        self.passes += 1

    def clip(self) -> None:
        from PIL import Image

        self.passes = 0
        started = time.perf_counter()
        self.frames = self.backend.generate(Image.new("RGB", (128, 64), (150, 90, 40)), self.params,
                                            lambda done, total: None)
        self.times.append(time.perf_counter() - started)

    def row(self) -> dict[str, Any]:
        counted = self.frames.details["speedups"]["cache"]
        # No cache: every block runs in every pass.
        counted = counted or {"computed": self.passes * self.blocks, "skipped": 0}
        cache = self.cache
        return {"cache": "none" if cache is None else f"{cache['kind']} {cache['threshold']}",
                "denoiser passes": self.passes, "block computations": counted["computed"],
                "blocks skipped": counted["skipped"], "wall s": round(statistics.median(self.times), 3)}


def run(quick: bool = False, steps: int | None = None, repeat: int | None = None,
        thresholds: tuple[float, ...] = THRESHOLDS,
        resolution: str = "64p", model: Path | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Every setting loaded first, then the clips in turn (run after run), so that a busy machine slows
    them alike. `model`: a wan-i2v folder instead of the one built here (the tests pass their tiny one)."""
    import numpy as np

    steps = steps or (6 if quick else 20)
    repeat = repeat or (1 if quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = model or build(root)
        caches = (None, *({"kind": "first-block", "threshold": t} for t in thresholds))
        contenders = [Contender(model, root, cache, steps, resolution) for cache in caches]
        for _ in range(repeat):
            for contender in contenders:
                contender.clip()
    rows, base = [], contenders[0].frames.pixels
    for contender in contenders:
        row = contender.row()
        difference = np.abs(contender.frames.pixels.astype(int) - base.astype(int)).mean()
        row["mean abs. difference from uncached (levels)"] = round(float(difference), 2)
        row["speed-up x"] = round(contenders[0].row()["wall s"] / row["wall s"], 2)
        rows.append(row)
    return f"{TITLE}; {steps} steps, median of {repeat}, the settings in turn", rows


def meets_target(rows: list[dict[str, Any]]) -> bool:
    cached = rows[1:]
    skipped = all(r["blocks skipped"] > 0 for r in cached)
    return skipped and min(r["wall s"] for r in cached) < rows[0]["wall s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--repeat", type=int)
    args = parser.parse_args(argv)
    title, rows = run(args.quick, args.steps, args.repeat)
    print(f"{title}\n\n{table(rows)}\n\ntarget: {TARGET}: {'met' if meets_target(rows) else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
