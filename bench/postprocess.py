"""Post-processing: the daemon's one-pass vertical chain against the original WebUI's flows, side by side
in one run, on the same frames (16 frames of 512x512 at 8 fps, smooth motion like a model's).

    python bench/postprocess.py [--quick] [--runs 7]

Flows (all start from the frames in memory; wall time is the median of the runs, interleaved):
- ours: what the daemon does after generating: keep the raw frames in the work dir, then ONE ffmpeg run
  (vertical-1080x1920: scale+pad, fps 30, libx264 crf 23 preset fast), the poster, and the check of
  the output before it may be published. One encode.
- ours, NVENC (only where the h264_nvenc trial encode works): the same with vertical-1080x1920-nvenc.
- webui-pipeline (its documented pipeline, three encodes): the WebUI's MP4 (libx264 defaults: crf 23,
  preset medium, yuv420p, 8 fps); ffmpeg scale+pad to 1080x1920 (x264 defaults again); ffmpeg
  re-encode with libx264 crf 23 preset fast at 30 fps.
- webui-batch (its batch script, two encodes): the WebUI's MP4, then one re-encode that scales, pads
  and encodes (crf 23, fast, 30 fps).
Quality: PSNR against the raw frames put through the same scale/pad/fps losslessly; and file size.
CPU s is the processor time each flow used (its ffmpeg runs and, for ours, the daemon's own threads):
steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.config.settings import Settings
from i2v_watcher.fs.atomic import write_durably
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.spec import JobDefaults, JobSpec, resolve
from i2v_watcher.media.chains import build_chains
from i2v_watcher.media.ffmpeg import FFmpeg, find_ffmpeg
from i2v_watcher.media.graph import postprocess
from i2v_watcher.media.probes import trial_encode

FIT = "scale=1080:1920:force_original_aspect_ratio=decrease,pad=1080:1920:(ow-iw)/2:(oh-ih)/2,setsar=1"
W, H, FRAMES, FPS = 512, 512, 16, 8
TITLE = "Post-processing: the daemon's one-pass chain against the original WebUI's flows"
TARGET = "ours ≥ 1.15x faster than webui-batch (2 encodes), PSNR no lower"
SPEEDUP = 1.15
RUNS, QUICK_RUNS = 7, 3


@contextlib.contextmanager
def workspace() -> Iterator[tuple[Path, Settings, np.ndarray]]:
    """A temporary folder, settings whose folders lie in it, and the model-like frames."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(**{n: str(root / n) for n in ("inbox", "outbox", "failed", "done", "work")})
        yield root, settings, model_like_frames(settings)


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
        -> dict[str, tuple[int, Callable[[], Path]]]:
    """name: (encodes, run)."""

    def daemon(preset: str) -> Callable[[], Path]:
        params = resolve(JobSpec(postprocess=preset), JobDefaults(), backend="preview", seed=1)
        chains = build_chains(settings, params)

        def ours() -> Path:
            job = work / preset
            job.mkdir(exist_ok=True)
            # the daemon keeps the raw frames until publishing (work.store.Scratch)
            write_durably(job / "frames.npy", lambda handle: np.save(handle, pixels))
            outputs, _ = postprocess(pixels, FPS, job / "out", binary, chains, settings, Checkpoint())
            return job / "out" / outputs[0].file

        return ours

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

    found = {"ours (1 encode)": (1, daemon("vertical-1080x1920"))}
    if trial_encode(binary, "h264_nvenc") is None:
        found["ours, NVENC (1 encode)"] = (1, daemon("vertical-1080x1920-nvenc"))
    found.update({"webui-pipeline (3 encodes)": (3, pipeline), "webui-batch (2 encodes)": (2, batch)})
    return found


def cpu_seconds() -> float:
    """User and system time of this process (its threads) and of its finished children (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def decode(binary: FFmpeg, source: list[str]) -> np.ndarray:
    data = ffmpeg(binary, [*source, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"])
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 1920, 1080, 3)


def interleaved(contenders: dict[str, Callable[[], object]], runs: int
                ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each contender's wall and CPU seconds over `runs` runs, after a warm-up (the page cache, the first
    run of each binary), interleaved so that load on the machine hits every one alike."""
    for flow in contenders.values():
        flow()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, flow in contenders.items():
            started, used = time.perf_counter(), cpu_seconds()
            flow()
            times[name].append(time.perf_counter() - started)
            cpu[name].append(cpu_seconds() - used)
    return times, cpu


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    count = min(len(a), len(b))
    mse = float(np.mean((a[:count].astype(np.float32) - b[:count].astype(np.float32)) ** 2))
    return round(10 * np.log10(255**2 / mse), 2)


def run(quick: bool = False, runs: int | None = None) -> tuple[str, list[dict[str, object]]]:
    runs = runs or (QUICK_RUNS if quick else RUNS)
    binary = find_ffmpeg(None)[0]
    with workspace() as (root, settings, pixels):
        reference = np.frombuffer(ffmpeg(binary, [*raw_input(), "-vf", f"{FIT},fps=30", "-f", "rawvideo",
                                                  "-pix_fmt", "rgb24", "pipe:"], pixels.tobytes()),
                                  dtype=np.uint8).reshape(-1, 1920, 1080, 3)
        contenders = flows(binary, settings, pixels, root)
        times, cpu = interleaved({name: flow for name, (_, flow) in contenders.items()}, runs)
        ours = statistics.median(times["ours (1 encode)"])
        ours_cpu = statistics.median(cpu["ours (1 encode)"])
        rows: list[dict[str, object]] = []
        for name, (encodes, flow) in contenders.items():
            output = flow()
            frames = decode(binary, ["-i", str(output)])
            median = statistics.median(times[name])
            rows.append({"flow": name, "encodes": encodes, "median s": round(median, 3),
                         "min s": round(min(times[name]), 3), "ours is faster by": f"{median / ours:.2f}x",
                         "CPU s": round(statistics.median(cpu[name]), 3),
                         "ours uses less CPU by": f"{statistics.median(cpu[name]) / ours_cpu:.2f}x",
                         "PSNR dB": psnr(frames, reference), "bytes": output.stat().st_size,
                         "frames": len(frames)})
    title = (f"{TITLE} ({FRAMES} frames of {W}x{H} at {FPS} fps to 1080x1920 at 30 fps, "
             f"{len(reference)} frames; medians of {runs} interleaved runs)")
    return title, rows


def meets_target(rows: list[dict[str, object]]) -> bool:
    by_flow = {str(row["flow"]): row for row in rows}
    ours, batch = by_flow["ours (1 encode)"], by_flow["webui-batch (2 encodes)"]
    faster = float(str(batch["ours is faster by"]).rstrip("x")) >= SPEEDUP
    return faster and float(str(ours["PSNR dB"])) >= float(str(batch["PSNR dB"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    from bench.report import table

    title, rows = run(args.quick, args.runs)
    print(f"{title}\n\n{table(rows)}\n\ntarget: {TARGET}: {'met' if meets_target(rows) else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
