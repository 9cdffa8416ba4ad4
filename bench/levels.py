"""CPU benchmark: the quality levels side by side. For each diffusion backend, the shipped draft, standard
and final levels: their denoiser work at the real model's size, planned (passes x frames x pixels, the
draft/final ratio that must stay at most 1/5), and each level run on that backend's tiny random-weight
model (tests/tiny_models.py) on the CPU, where the denoiser passes are counted by the real hooks (the
metadata's `generation.denoiser_passes`) and the wall time is measured, one level after the other in one
process after a warm-up run (the faster of two runs each; `--quick`: one). Run it alone with
`python bench/levels.py [--only BACKEND ...] [--quick]`, or in the suite with `python -m bench --only
levels`.

The tiny runs keep each level's steps and guidance (`--quick`: a fifth of the steps) and scale its frames
(1/8) and short side (1/16) down alike, so the passes are the real level's; their pixels are the tiny
model's sizes, rounded to its multiples, so the tiny work ratio is near, not equal to, the planned one.
A tiny model's wall time also holds fixed costs that a real model's denoiser dwarfs (its text encoder,
its VAE, the pipeline's own set-up), so the tiny wall ratio stays above the work ratio; on a busy
machine it is noisy too: compare the levels on an idle one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from bench.report import table  # noqa: E402
from i2v_watcher import backends  # noqa: E402
from i2v_watcher.backends.diffusion import DiffusersBackend  # noqa: E402
from i2v_watcher.backends.levels import MAX_DRAFT_SHARE, level_params, planned_work, short_side  # noqa: E402
from i2v_watcher.config.settings import Settings  # noqa: E402
from i2v_watcher.job.spec import QUALITY_LEVELS  # noqa: E402

TITLE = "Quality levels: denoiser work planned at the real size, and counted and timed on tiny models (CPU)"
TARGET = "every backend's draft costs at most 1/5 of its final in planned denoiser work"
FRAME_SCALE, SIDE_SCALE = 8, 16  # the tiny runs' frames and short side, against the level's
IMAGE = (96, 64)  # the tiny runs' input (3:2)


def builders() -> dict[str, Callable[[Path], Path]]:
    """Each diffusion backend's tiny model builder (tests/tiny_models.py)."""
    import tiny_models as tiny

    return {"i2vgen-xl": tiny.build_i2vgen_xl, "svd": tiny.build_svd, "wan-i2v": tiny.build_wan_i2v,
            "ltx-video": tiny.build_ltx_video, "ltx2": tiny.build_ltx2,
            "cogvideox-i2v": lambda target: tiny.build_cogvideox_i2v(target, patch_size_t=2),
            "hunyuan-i2v": tiny.build_hunyuan_i2v}


def tiny_levels(backend: DiffusersBackend, settings: Settings, quick: bool) -> dict[str, dict[str, Any]]:
    """Each level scaled down for the tiny model: the same steps (quick: a fifth) and guidance, frames
    and short side divided alike."""
    out = {}
    for level in QUALITY_LEVELS:
        params = level_params(backend, level, settings.quality)
        out[level] = {"steps": max(1, round(params.steps / 5)) if quick else params.steps,
                      "guidance_scale": params.guidance_scale,
                      "num_frames": max(1, round(params.num_frames / FRAME_SCALE)),
                      "resolution": f"{max(8, round(short_side(backend, params) / SIDE_SCALE))}p"}
    return out


def measure(name: str, folder: Path, quick: bool) -> list[dict[str, Any]]:
    """The three levels on one backend's tiny model: planned at the real size, counted and timed tiny."""
    from PIL import Image

    settings = Settings(inbox="/nonexistent/i", outbox="/nonexistent/o", failed="/nonexistent/f",
                        done="/nonexistent/d", work="/nonexistent/w", models={name: {"model": str(folder)}},
                        diffusion={"device": "cpu", "dtype": "float32"})
    backend = backends.get(name)(settings)
    assert isinstance(backend, DiffusersBackend)
    real = {level: planned_work(backend, level_params(backend, level, settings.quality))
            for level in QUALITY_LEVELS}
    backend.load()
    small = tiny_levels(backend, settings, quick)
    image = Image.new("RGB", IMAGE, (120, 80, 40))
    warm_up = level_params(backend, "draft", settings.quality, small)
    backend.generate(image, warm_up, lambda done, total: None)
    rows = []
    for level in QUALITY_LEVELS:
        params = level_params(backend, level, settings.quality, small)
        seconds = float("inf")
        for _ in range(1 if quick else 2):  # the faster of two runs: the machine's noise is one-sided
            started = time.perf_counter()
            frames = backend.generate(image, params, lambda done, total: None)
            seconds = min(seconds, time.perf_counter() - started)
        got = frames.details
        rows.append({"backend": name, "level": level, **real[level],
                     "tiny steps": params.steps,
                     "tiny passes planned": backend.planned_passes(params),
                     "tiny passes counted": got["denoiser_passes"], "tiny frames": got["num_frames"],
                     "tiny size": f"{got['width']}x{got['height']}",
                     "tiny work": got["denoiser_passes"] * got["num_frames"] * got["width"] * got["height"],
                     "tiny wall s": round(seconds, 3)})
    draft, final = rows[0], rows[-1]
    for row in rows:
        row["work / final"] = round(row["work"] / final["work"], 4)
        row["tiny work / final"] = round(row["tiny work"] / final["tiny work"], 4)
        row["tiny wall / final"] = round(row["tiny wall s"] / final["tiny wall s"], 4)
        row["target met"] = draft["work"] <= MAX_DRAFT_SHARE * final["work"]
    return rows


def run(quick: bool = False, only: list[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    backends.discover([])
    chosen = only or list(builders())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="i2v-levels-") as tmp:
        for name in chosen:
            folder = builders()[name](Path(tmp) / name)
            rows += measure(name, folder, quick)
    return TITLE, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/levels.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(builders()), metavar="BACKEND",
                        help="run only this backend (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a fifth of each level's steps")
    args = parser.parse_args(argv)
    title, rows = run(quick=args.quick, only=args.only)
    print(f"{title}\n\n{table(rows)}")
    return 0 if all(row["target met"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
