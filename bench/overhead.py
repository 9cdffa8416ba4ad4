"""The daemon's overhead: N jobs through `python -m i2v_watcher run --once` against a bare loop that does
the same generation and encode in one process, on the same tiny I2VGen-XL pipeline on the CPU, side by
side in one run (the contenders in turn, run after run).

    python bench/overhead.py [--quick] [--jobs N] [--repeat R]

Both sides are whole processes started the same way, each loading the model once (imports and the
model load are in "including start-up" for both, and in neither for "steady state"), torch on one
CPU thread in both (OMP_NUM_THREADS=1, see THREADS):
- daemon: a config with backend "i2vgen-xl" on the CPU, num_frames 4, steps 2, 64p, the `archive`
  preset, settle_s 0; N images waiting in the inbox. Its steady state runs from the first `claimed` to
  the last `published` in its JSON log. One job at a time (pipeline_depth 1: the daemon's own cost,
  which the target is about) and, except with --quick, as shipped (pipeline_depth 2: one job's encode
  and publish overlap the next one's generation, which the bare loop does not do).
- bare: `I2VGenXLPipeline.from_pretrained` once, then per job: open the image, resize it as the backend
  does, the pipeline called as the backend calls it (prompt embeddings computed outside it, as
  transformers 5 needs), frames to uint8, one ffmpeg run through a pipe with the `archive` preset's
  options (libx264 crf 12 preset slow, yuv420p, faststart). Its steady state runs from the first job's
  start to the last job's end.
What the daemon does besides (claiming, its job state on disk with fsync, the kept frames, checking
every output, the poster and the metadata, publishing) is the overhead measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

TITLE = "Daemon overhead: N jobs through the daemon against a bare generate-and-encode loop"
TARGET = "the daemon one job at a time ≤ 1.05x the bare loop (the median job)"
LIMIT = 1.05
PROMPT = "a red fox in the snow"
FRAMES, STEPS, SIDE, FPS, GUIDANCE, DECODE_CHUNK = 4, 2, 64, 8, 9.0, 4
ARCHIVE = ["-c:v", "libx264", "-crf", "12", "-preset", "slow", "-pix_fmt", "yuv420p", "-movflags",
           "+faststart"]
FOLDERS = ("inbox", "outbox", "failed", "done", "work")
# torch's CPU threads in every contender. One: on a shared machine, a job's time with two OpenMP
# threads on two busy cores varied threefold from job to job (each parallel region waits for its
# slowest thread), drowning the daemon's own cost; with one it is steady.
THREADS = "1"


# ---- the bare loop (runs in its own process: `overhead.py --bare MODEL IMAGES OUT`) -------------------
def bare(model: Path, images: Path, out: Path) -> None:
    import numpy as np
    import torch
    from diffusers import I2VGenXLPipeline
    from imageio_ffmpeg import get_ffmpeg_exe
    from PIL import Image

    ffmpeg = get_ffmpeg_exe()
    pipe = I2VGenXLPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)

    def embeds(text: str) -> Any:  # clip_skip 1: the penultimate hidden state, then the final norm
        tokens = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        hidden = pipe.text_encoder(tokens.input_ids, output_hidden_states=True)
        encoder = getattr(pipe.text_encoder, "text_model", pipe.text_encoder)
        return encoder.final_layer_norm(hidden[-1][-2])

    started = time.monotonic()
    jobs = []
    for index, path in enumerate(sorted(images.iterdir())):
        job_started = time.monotonic()
        with Image.open(path) as opened:
            image = opened.convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
        with torch.inference_mode():
            torch.manual_seed(index)
            output = pipe(image=image, prompt_embeds=embeds(PROMPT), negative_prompt_embeds=embeds(""),
                          height=SIDE, width=SIDE, num_frames=FRAMES, target_fps=FPS,
                          num_inference_steps=STEPS, guidance_scale=GUIDANCE, decode_chunk_size=DECODE_CHUNK,
                          generator=torch.Generator("cpu").manual_seed(index), output_type="np")
        pixels = (np.clip(np.asarray(output.frames[0]), 0, 1) * 255).round().astype(np.uint8)
        generated = time.monotonic()
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt",
                        "rgb24", "-s", f"{SIDE}x{SIDE}", "-framerate", str(FPS), "-i", "pipe:", *ARCHIVE,
                        str(out / f"{path.stem}.mp4")], input=pixels.tobytes(), check=True)
        jobs.append({"job": time.monotonic() - job_started, "generate": generated - job_started})
    print(json.dumps({"steady_s": time.monotonic() - started, "jobs": jobs}))


# ---- the benchmark -----------------------------------------------------------------------------------
def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def env() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    environment.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
                       TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS)
    return environment


def setup(root: Path, model: Path, jobs: int, depth: int) -> Path:
    from conftest import make_image, write_toml

    for index in range(jobs):
        make_image(root / "images" / f"job{index:03d}.png", (SIDE, SIDE), seed=index)
    config = root / f"i2v-depth{depth}.toml"
    write_toml(config, {
        **{name: str(root / name) for name in FOLDERS}, "backend": "i2vgen-xl", "settle_s": 0.0,
        "sidecar_grace_s": 0.0, "log_format": "json", "worker_id": "bench", "pipeline_depth": depth,
        "diffusion": {"device": "cpu"}, "models": {"i2vgen-xl": {"model": str(model)}},
        "defaults": {"prompt": PROMPT, "num_frames": FRAMES, "steps": STEPS, "resolution": f"{SIDE}p",
                     "fps": float(FPS), "guidance_scale": GUIDANCE, "postprocess": "archive"}})
    return config


def daemon_once(root: Path, config: Path, jobs: int) -> dict[str, float]:
    for name in FOLDERS:
        shutil.rmtree(root / name, ignore_errors=True)
    shutil.copytree(root / "images", root / "inbox")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "i2v_watcher", "run", "--once", "--config", str(config)],
                            capture_output=True, text=True, env=env(), cwd=REPO)
    wall = time.monotonic() - started
    events = []
    for line in result.stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    claimed = {e["job"]: stamp(e) for e in events if e.get("event") == "claimed"}
    published = {e["job"]: stamp(e) for e in events if e.get("event") == "published"}
    generate = [float(e["seconds"]) for e in events if e.get("event") == "generated"]
    if result.returncode != 0 or len(published) != jobs:
        raise RuntimeError(f"the daemon exited {result.returncode} with {len(published)}/{jobs} published:\n"
                           + result.stderr[-3000:])
    return {"wall": wall, "steady": max(published.values()) - min(claimed.values()),
            "job": statistics.median(published[job] - claimed[job] for job in published),
            "generate": statistics.median(generate)}


def bare_once(root: Path, model: Path, jobs: int) -> dict[str, float]:
    out = root / "bare-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    started = time.monotonic()
    result = subprocess.run([sys.executable, __file__, "--bare", str(model), str(root / "images"), str(out)],
                            capture_output=True, text=True, env=env(), cwd=REPO)
    wall = time.monotonic() - started
    if result.returncode != 0 or len(list(out.glob("*.mp4"))) != jobs:
        raise RuntimeError(f"the bare loop exited {result.returncode}:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.splitlines()[-1])
    return {"wall": wall, "steady": float(report["steady_s"]),
            "job": statistics.median(job["job"] for job in report["jobs"]),
            "generate": statistics.median(job["generate"] for job in report["jobs"])}


BARE = "bare loop"
SERIAL = "daemon, one job at a time (pipeline_depth 1)"
PIPELINED = "daemon as shipped (pipeline_depth 2)"


def run(quick: bool = False, jobs: int | None = None, repeat: int | None = None) \
        -> tuple[str, list[dict[str, object]]]:
    from tiny_models import build_i2vgen_xl

    jobs = jobs or (8 if quick else 12)
    repeat = repeat or (1 if quick else 3)
    root = Path(tempfile.mkdtemp(prefix="i2v-bench-overhead-"))
    try:
        model = build_i2vgen_xl(root / "model" / "i2vgen-xl")
        configs = {SERIAL: setup(root, model, jobs, 1)}
        if not quick:  # the shipped pipeline overlaps jobs: for information, beside the target's pair
            configs[PIPELINED] = setup(root, model, jobs, 2)
        runs: dict[str, list[dict[str, float]]] = {BARE: [], **{name: [] for name in configs}}
        for _ in range(repeat):  # in turn, so a drift in the machine's speed hits all alike
            runs[BARE].append(bare_once(root, model, jobs))
            for name, config in configs.items():
                runs[name].append(daemon_once(root, config, jobs))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows: list[dict[str, object]] = []
    for measure, key in (("including start-up", "wall"), ("steady state", "steady"),
                         ("one job, median", "job")):
        base = statistics.median(run[key] for run in runs[BARE])
        for name, measured in runs.items():
            if key == "job" and name == PIPELINED:
                continue  # overlapped jobs: a job's own span is not what it costs
            seconds = statistics.median(run[key] for run in measured)
            per_job = seconds if key == "job" else seconds / jobs
            generate = statistics.median(run["generate"] for run in measured)
            rows.append({"measure": measure, "contender": name, "seconds": round(seconds, 2),
                         "s/job": round(per_job, 3), "vs bare loop": f"{seconds / base:.3f}x",
                         "generation s/job (median)": round(generate, 3)})
    title = (f"{TITLE} ({jobs} jobs of {FRAMES} frames, {STEPS} steps, {SIDE}x{SIDE} on the CPU, archive "
             f"preset, torch on {THREADS} thread; medians of {repeat} run(s) each, in turn; {os.cpu_count()} "
             "CPU cores). Including "
             "start-up: process start to exit (imports and the model load in every contender). Steady "
             "state: the daemon's first claim to its last publish (its JSON log); the bare loop's first "
             "job's start to its last job's end. One job, median: the median job's claim to publish; "
             "the bare loop's job start to end: the steadiest figure on a shared machine, where the "
             "generation time of a job varies most")
    return title, rows


def meets_target(rows: list[dict[str, object]]) -> bool:
    """The daemon's own cost, without the overlap its pipeline adds: one job at a time."""
    serial = next(row for row in rows if row["measure"] == "one job, median" and row["contender"] == SERIAL)
    return float(str(serial["vs bare loop"]).rstrip("x")) <= LIMIT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="8 jobs, one run each of the bare loop and the daemon one job at a time")
    parser.add_argument("--jobs", type=int, help="jobs per run (8 with --quick, else 12)")
    parser.add_argument("--repeat", type=int, help="runs of each contender (1 with --quick, else 3)")
    parser.add_argument("--bare", nargs=3, type=Path, metavar=("MODEL", "IMAGES", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare:
        bare(*args.bare)
        return 0
    from bench.report import table

    title, rows = run(args.quick, args.jobs, args.repeat)
    print(f"{title}\n\n{table(rows)}\n\ntarget: {TARGET}: {'met' if meets_target(rows) else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
