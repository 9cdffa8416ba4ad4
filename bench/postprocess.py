"""Post-processing benchmark: the daemon's one-pass vertical chain against the original WebUI's flows,
in one run, on the same frames (16 frames of 512x512 at 8 fps, smooth motion like a model's).

    python bench/postprocess.py [--runs 7]

Flows (all start from the frames in memory; wall time is the median of --runs):
- ours: what the daemon does after generating: keep the raw frames in the work dir, then ONE ffmpeg run
  (vertical-1080x1920: scale+pad, fps 30, libx264 crf 23 preset fast) and the poster. One encode.
- webui-pipeline (its documented pipeline, three encodes): the WebUI's MP4 (libx264 defaults: crf 23,
  preset medium, yuv420p, 8 fps); ffmpeg scale+pad to 1080x1920 (x264 defaults again); ffmpeg
  re-encode with libx264 crf 23 preset fast at 30 fps.
- webui-batch (its batch script, two encodes): the WebUI's MP4, then one re-encode that scales, pads
  and encodes (crf 23, fast, 30 fps).
Quality: PSNR against the raw frames put through the same scale/pad/fps losslessly; and file size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.cancel import Cancel
from i2v_watcher.config import Settings
from i2v_watcher.ffmpeg import FFmpeg, find_ffmpeg
from i2v_watcher.pipeline import save_frames
from i2v_watcher.postprocess import build_chains, postprocess
from i2v_watcher.spec import JobDefaults, JobSpec, resolve

FIT = "scale=1080:1920:force_original_aspect_ratio=decrease,pad=1080:1920:(ow-iw)/2:(oh-ih)/2,setsar=1"
W, H, FRAMES, FPS = 512, 512, 16, 8


def model_like_frames(settings: Settings) -> np.ndarray:
    """Smooth frames with smooth motion: the preview backend's camera move over a photo-like image."""
    y, x = np.mgrid[0:1024, 0:1024].astype(np.float32)
    photo = np.stack([128 + 90 * np.sin(x / 97 + y / 151), 128 + 80 * np.cos(y / 83 - x / 211),
                      110 + 70 * np.sin((x + y) / 127)], axis=-1)
    image = Image.fromarray(photo.clip(0, 255).astype(np.uint8))
    params = resolve(JobSpec(num_frames=FRAMES, fps=FPS, resolution=f"{W}p", seed=3,
                             backend_options={"motion": "zoom-in", "zoom": 1.3}),
                     JobDefaults(), backend="preview", seed=3)
    return PreviewBackend(settings).generate(image, params, lambda d, t: None).pixels


def ffmpeg(binary: FFmpeg, args: list[str], stdin: bytes | None = None) -> bytes:
    return subprocess.run([binary.path, "-hide_banner", "-loglevel", "error", "-y", *args], input=stdin,
                          capture_output=True, check=True).stdout


def raw_input() -> list[str]:
    return ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-framerate", str(FPS), "-i", "pipe:"]


def webui_mp4(binary: FFmpeg, pixels: np.ndarray, target: Path) -> None:
    ffmpeg(binary, [*raw_input(), "-c:v", "libx264", "-crf", "23", "-preset", "medium", "-pix_fmt",
                    "yuv420p", str(target)], pixels.tobytes())


def flows(binary: FFmpeg, settings: Settings, pixels: np.ndarray, work: Path) \
        -> dict[str, Callable[[], Path]]:
    params = resolve(JobSpec(postprocess="vertical-1080x1920"), JobDefaults(), backend="preview", seed=1)
    chains = build_chains(settings, params)

    def ours() -> Path:
        job = work / "ours"
        job.mkdir(exist_ok=True)
        save_frames(job / "frames.npy", pixels)  # the daemon keeps the raw frames until publishing
        outputs, _ = postprocess(pixels, FPS, job / "out", binary, chains, settings, Cancel())
        return job / "out" / outputs[0].file

    def pipeline() -> Path:
        webui_mp4(binary, pixels, work / "p1.mp4")
        ffmpeg(binary, ["-i", str(work / "p1.mp4"), "-vf", FIT, "-c:v", "libx264", str(work / "p2.mp4")])
        ffmpeg(binary, ["-i", str(work / "p2.mp4"), "-r", "30", "-c:v", "libx264", "-crf", "23", "-preset",
                        "fast", "-pix_fmt", "yuv420p", str(work / "p3.mp4")])
        return work / "p3.mp4"

    def batch() -> Path:
        webui_mp4(binary, pixels, work / "b1.mp4")
        ffmpeg(binary, ["-i", str(work / "b1.mp4"), "-vf", FIT, "-r", "30", "-c:v", "libx264", "-crf", "23",
                        "-preset", "fast", "-pix_fmt", "yuv420p", str(work / "b2.mp4")])
        return work / "b2.mp4"

    return {"ours (1 encode)": ours, "webui-pipeline (3 encodes)": pipeline, "webui-batch (2 encodes)": batch}


def decode(binary: FFmpeg, source: list[str]) -> np.ndarray:
    data = ffmpeg(binary, [*source, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"])
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 1920, 1080, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    count = min(len(a), len(b))
    mse = float(np.mean((a[:count].astype(np.float32) - b[:count].astype(np.float32)) ** 2))
    return round(10 * np.log10(255**2 / mse), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    binary = find_ffmpeg(None)[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(**{n: str(root / n) for n in ("inbox", "outbox", "failed", "done", "work")})
        pixels = model_like_frames(settings)
        reference = np.frombuffer(ffmpeg(binary, [*raw_input(), "-vf", f"{FIT},fps=30", "-f", "rawvideo",
                                                  "-pix_fmt", "rgb24", "pipe:"], pixels.tobytes()),
                                  dtype=np.uint8).reshape(-1, 1920, 1080, 3)
        results = {}
        contenders = flows(binary, settings, pixels, root)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.runs):  # interleaved, so load on the machine hits every flow alike
            for name, run in contenders.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
        for name, run in contenders.items():
            output = run()
            frames = decode(binary, ["-i", str(output)])
            results[name] = {"median_s": round(statistics.median(times[name]), 3),
                             "psnr_db": psnr(frames, reference), "frames": len(frames),
                             "bytes": output.stat().st_size}
    ours, pipeline, batch = (results[n] for n in contenders)
    report = {"frames": f"{FRAMES} x {W}x{H} at {FPS} fps", "reference_frames": len(reference),
              "runs": args.runs, "flows": results,
              "speedup_vs_pipeline": round(pipeline["median_s"] / ours["median_s"], 2),
              "speedup_vs_batch": round(batch["median_s"] / ours["median_s"], 2)}
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
