"""Throughput of several daemons on one inbox (coordination through the shared folders): the same
batch of preview jobs through 1, 2 and 4 `run --once` workers, side by side in one run, as jobs per
minute and as a ratio against one worker.

    python bench/workers.py [--jobs 40] [--workers 1 2 4] [--repeat 3]

Each job is a 256x192 image through the preview backend (64p, 8 frames) and the archive preset: about
as much encode as generation, so the figures show the coordination's cost and the machine's cores,
not a model's. Medians of --repeat runs.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import daemon_env, make_image, write_toml  # noqa: E402


def one_run(jobs: int, workers: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="i2v-bench-workers-"))
    try:
        inbox = root / "inbox"
        for index in range(jobs):
            make_image(inbox / f"job{index:03d}.png", (256, 192), seed=index)
        base = {name: str(root / name) for name in ("inbox", "outbox", "failed", "done", "work")}
        base.update(settle_s=0.0, sidecar_grace_s=0.0, log_format="json",
                    defaults={"num_frames": 8, "resolution": "64p"})
        configs = []
        for worker in range(workers):
            config = root / f"w{worker}.toml"
            write_toml(config, {**base, "worker_id": f"w{worker}"})
            configs.append(config)
        started = time.monotonic()
        processes = [subprocess.Popen([sys.executable, "-m", "i2v_watcher", "run", "--once", "--config",
                                       str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env=daemon_env(), cwd=REPO) for config in configs]
        codes = [p.wait() for p in processes]
        elapsed = time.monotonic() - started
        published = len(list((root / "outbox").glob("*.json")))
        if codes != [0] * workers or published != jobs:
            raise SystemExit(f"{workers} workers: exit codes {codes}, {published}/{jobs} published")
        return elapsed
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    times: dict[int, list[float]] = {n: [] for n in args.workers}
    for _ in range(args.repeat):
        for workers in args.workers:  # interleaved, so a drift in the machine's speed hits every count
            times[workers].append(one_run(args.jobs, workers))
    base = statistics.median(times[args.workers[0]])
    print(f"{args.jobs} preview jobs, {os.cpu_count()} CPU cores, medians of {args.repeat} runs")
    print("| workers | wall time | jobs per minute | speed-up |")
    print("|---|---|---|---|")
    rows = []
    for workers in args.workers:
        median = statistics.median(times[workers])
        rows.append({"workers": workers, "seconds": round(median, 2), "speedup": round(base / median, 2),
                     "jobs_per_minute": round(60 * args.jobs / median, 1)})
        print(f"| {workers} | {median:.2f} s | {60 * args.jobs / median:.1f} | {base / median:.2f}x |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
