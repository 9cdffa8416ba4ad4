"""The quality gate's cost: scoring a clip (i2v_watcher.judge) against encoding it, side by side in one
run, on the same frames: 16 frames of 512x512 at 8 fps with smooth motion like a model's (the preview
backend's zoom over a photo-like picture, bench/postprocess.py), the input image being its first frame.

    python bench/judge.py [--quick] [--runs 7]

- score: `judge.score(frames, image, fps)`: every score (flow at a 256-pixel short side).
- encode: the daemon's post-processing of the same frames with the vertical-1080x1920 preset (one
  ffmpeg run: scale+pad to 1080x1920, fps 30, libx264 crf 23 preset fast, and the check of the output).
Wall time is the median of the runs, interleaved; CPU s is the processor time each used (its threads
and its ffmpeg children). The target is on CPU time: on a shared machine it is the steadier figure (the
scoring runs in the finishing stage beside other work, so what it takes from the machine is its cost).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.postprocess import FPS, FRAMES, H, W, interleaved, workspace
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.spec import JobDefaults, JobSpec, resolve
from i2v_watcher.judge import score
from i2v_watcher.media.chains import build_chains
from i2v_watcher.media.ffmpeg import find_ffmpeg
from i2v_watcher.media.graph import postprocess

TITLE = "Quality gate: scoring a clip against its vertical 1080x1920 encode"
TARGET = "scoring costs at most 10 % of the encode's CPU time"
SHARE = 0.10
RUNS, QUICK_RUNS = 7, 3


def run(quick: bool = False, runs: int | None = None) -> tuple[str, list[dict[str, object]]]:
    runs = runs or (QUICK_RUNS if quick else RUNS)
    binary = find_ffmpeg(None)[0]
    with workspace() as (root, settings, pixels):
        image = pixels[0].copy()
        params = resolve(JobSpec(postprocess="vertical-1080x1920"), JobDefaults(), backend="preview", seed=1)
        chains = build_chains(settings, params)
        found: dict[str, object] = {}

        def encode() -> None:
            postprocess(pixels, FPS, root / "out", binary, chains, settings, Checkpoint())

        def judge() -> None:
            found["judgement"] = score(pixels, image, FPS)

        contenders: dict[str, Callable[[], object]] = {"score": judge, "encode (vertical-1080x1920)": encode}
        times, cpu = interleaved(contenders, runs)
    encode_s = statistics.median(times["encode (vertical-1080x1920)"])
    encode_cpu = statistics.median(cpu["encode (vertical-1080x1920)"])
    rows: list[dict[str, object]] = [
        {"what": name, "median s": round(statistics.median(times[name]), 3),
         "min s": round(min(times[name]), 3),
         "share of the encode": f"{statistics.median(times[name]) / encode_s:.1%}",
         "CPU s": round(statistics.median(cpu[name]), 3),
         "CPU share of the encode": f"{statistics.median(cpu[name]) / encode_cpu:.1%}"}
        for name in contenders]
    title = (f"{TITLE} ({FRAMES} frames of {W}x{H} at {FPS} fps; medians of {runs} interleaved runs; "
             f"symptoms found: {getattr(found['judgement'], 'symptoms', None)})")
    return title, rows


def meets_target(rows: list[dict[str, object]]) -> bool:
    by_name = {str(row["what"]): row for row in rows}
    return float(str(by_name["score"]["CPU share of the encode"]).rstrip("%")) / 100 <= SHARE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    parser.add_argument("--runs", type=int)
    args = parser.parse_args(argv)
    from bench.report import table

    title, rows = run(args.quick, args.runs)
    print(f"{title}\n\n{table(rows)}\n\ntarget: {TARGET}: {'met' if meets_target(rows) else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
