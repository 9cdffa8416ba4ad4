"""Throughput of the pipelined daemon against the strictly serial one, side by side in one run, on jobs
whose generation and post-processing cost about the same: a backend that blocks like a GPU (it sleeps,
releasing the CPU, as a CUDA call does) and the vertical 1080x1920 preset (ffmpeg on the CPU).

    python bench/pipeline.py [--jobs 8] [--repeat 2] [--quick]

Both runs are `run --once` over the same batch. From the serial run's log, each job's generation time
(claim to `generated`) and finishing time (`generated` to `published`) give the ideal two-stage
pipeline's makespan on those very stage times; the pipelined run's makespan (first claim to last
publish) is compared with it (target: within 10 %) and with the serial one (the speed-up). The
backend's blocking time is first calibrated to this machine's finishing time, so the stages match.
On a shared, noisy machine the two runs' stage times differ: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import daemon_env, make_image, write_toml  # noqa: E402

TITLE = "Pipelined stages: generation overlapped with post-processing and publishing"
TARGET = "pipelined makespan within 10 % of the ideal two-stage pipeline (efficiency ≥ 0.90)"


def _events(log: str) -> list[dict[str, Any]]:
    found = []
    for line in log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def one_run(jobs: int, depth: int, gpu_s: float, frames: int) -> list[dict[str, Any]]:
    """The daemon's JSON log of one `run --once` over `jobs` fresh jobs."""
    root = Path(tempfile.mkdtemp(prefix="i2v-bench-pipeline-"))
    try:
        inbox = root / "inbox"
        for index in range(jobs):
            make_image(inbox / f"job{index:03d}.png", (512, 512), seed=index)
            (inbox / f"job{index:03d}.yaml").write_text(
                f"postprocess: [vertical-1080x1920]\nbackend_options: {{delay_s: {gpu_s / frames:.4f}}}\n")
        config = root / "config.toml"
        write_toml(config, {**{n: str(root / n) for n in ("inbox", "outbox", "failed", "done", "work")},
                            "scratch": str(root / "scratch"), "settle_s": 0.0, "sidecar_grace_s": 0.0,
                            "log_format": "json", "worker_id": "bench", "backend": "slow",
                            "plugins": ["slow_backend"], "pipeline_depth": depth,
                            "defaults": {"num_frames": frames, "resolution": "256p", "fps": 8.0}})
        run = subprocess.run([sys.executable, "-m", "i2v_watcher", "run", "--once", "--config", str(config)],
                             capture_output=True, text=True, env=daemon_env(), cwd=REPO, check=False)
        published = len(list((root / "outbox").glob("*.json")))
        if run.returncode != 0 or published != jobs:
            raise SystemExit(f"depth {depth}: exit {run.returncode}, {published}/{jobs} published\n"
                             f"{run.stderr[-3000:]}")
        return _events(run.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def makespan(events: list[dict[str, Any]]) -> float:
    claims = [_at(e) for e in events if e["event"] == "claimed"]
    return max(_at(e) for e in events if e["event"] == "published") - min(claims)


def stage_times(serial: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each job's (generation, finishing) seconds in the serial run, in claim order."""
    times = []
    for claim in (e for e in serial if e["event"] == "claimed"):
        job = claim["job"]
        generated = next(_at(e) for e in serial if e["event"] == "generated" and e.get("job") == job)
        published = next(_at(e) for e in serial if e["event"] == "published" and e.get("job") == job)
        times.append((generated - _at(claim), published - generated))
    return times


def ideal_makespan(times: list[tuple[float, float]]) -> float:
    """A two-stage pipeline with a hand-off: a job generates once the one before it has generated, and
    is finished once it is generated and the finisher is free."""
    generated = finished = 0.0
    for generate, finish in times:
        generated += generate
        finished = max(finished, generated) + finish
    return finished


def run(quick: bool = False, jobs: int = 8, repeat: int = 2) -> tuple[str, list[dict[str, object]]]:
    jobs, repeat, frames = (4, 1, 8) if quick else (jobs, repeat, 16)
    # Calibrate: the "GPU" blocks as long as this machine takes to finish a job, so the stages match.
    gpu_s = statistics.median(f for _, f in stage_times(one_run(2, 1, 0.0, frames)))
    serial_s, piped_s, ideal_s = [], [], []
    for _ in range(repeat):  # interleaved: a drift in the machine's speed hits both
        serial = one_run(jobs, 1, gpu_s, frames)
        piped = one_run(jobs, 2, gpu_s, frames)
        serial_s.append(makespan(serial))
        piped_s.append(makespan(piped))
        ideal_s.append(ideal_makespan(stage_times(serial)))
    times = stage_times(serial)
    serial_m, piped_m, ideal_m = (statistics.median(v) for v in (serial_s, piped_s, ideal_s))
    rows: list[dict[str, object]] = [{
        "jobs": jobs,
        "generation s/job": round(statistics.mean(g for g, _ in times), 2),
        "finishing s/job": round(statistics.mean(f for _, f in times), 2),
        "serial s": round(serial_m, 2),
        "pipelined s": round(piped_m, 2),
        "ideal pipeline s": round(ideal_m, 2),
        "speed-up": f"{serial_m / piped_m:.2f}x",
        "ideal speed-up": f"{serial_m / ideal_m:.2f}x",
        "efficiency": round(ideal_m / piped_m, 3),
        "target met": ideal_m / piped_m >= 0.9,
    }]
    return TITLE, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from bench.report import table

    title, rows = run(args.quick, args.jobs, args.repeat)
    print(f"{title}\n\n{table(rows)}\n\nTarget: {TARGET}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
