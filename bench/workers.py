"""Fleet throughput: 1, 2 and 4 daemons on one inbox, side by side in one run, as jobs per minute and as
a ratio against one worker; in folder mode (`run` daemons coordinating through the shared folders:
claims, leases, heartbeats) and in Celery mode (a real redis-server, one `run` dispatching, `worker`s).

    python bench/workers.py [--jobs 40] [--workers 1 2 4] [--gpu-s 2] [--quick]

Each job is a 256x192 image through the slow backend of tests/plugins (a "GPU" that sleeps `--gpu-s`
per job, releasing the CPU as a CUDA call does) and a light chain: 8 frames at 256p, the archive
preset. The daemons start first and are ready (their start-up is not timed); the batch then lands in
the inbox at once, and the wall time runs from that drop to the last publish. N workers can at best
be N times one; what they lose is the coordination's cost and the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from faults.celery_helpers import RedisServer  # noqa: E402

from conftest import daemon_env, make_image, write_toml  # noqa: E402

FULL = (40, (1, 2, 4), 2.0)  # jobs, worker counts, "GPU" seconds per job
QUICK = (4, (1, 2, 4), 0.25)
FRAMES = 8
TITLE = "Fleet throughput: N daemons on one inbox, jobs per minute against one worker"
TARGET = "4 workers ≥ 3.6x one worker's jobs per minute, in folder and in Celery mode"
READY = {"run": '"watching"', "worker": '"consuming"'}  # the JSON log line of a process ready for jobs
MODES = {"folders": "run (folders)", "celery": "celery workers"}


def settings(root: Path, **more: object) -> dict[str, object]:
    return {**{n: str(root / n) for n in ("inbox", "outbox", "failed", "done", "work")},
            "scratch": str(root / "scratch"), "settle_s": 0.0, "sidecar_grace_s": 0.0, "log_format": "json",
            "backend": "slow", "plugins": ["slow_backend"],
            "defaults": {"num_frames": FRAMES, "resolution": "256p", "postprocess": "archive"}, **more}


def stage_jobs(root: Path, jobs: int, gpu_s: float) -> Path:
    """The batch, written beside the inbox (on its file system) so that it lands in one rename each."""
    staging = root / "staging"
    for index in range(jobs):
        make_image(staging / f"job{index:03d}.png", (256, 192), seed=index)
        (staging / f"job{index:03d}.yaml").write_text(f"backend_options: {{delay_s: {gpu_s / FRAMES:.4f}}}\n")
    return staging


@contextmanager
def processes(root: Path, commands: list[tuple[str, str]], base: dict[str, object]
              ) -> Iterator[list[subprocess.Popen[bytes]]]:
    """(worker id, command) daemons started and ready; stopped (SIGTERM, then SIGKILL) on the way out."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in commands:
            write_toml(root / f"{name}.toml", {**base, "worker_id": name})
            with (root / f"{name}.log").open("wb") as log:
                started.append(subprocess.Popen(
                    [sys.executable, "-m", "i2v_watcher", command, "--config", str(root / f"{name}.toml")],
                    stdout=subprocess.DEVNULL, stderr=log, env=daemon_env(), cwd=REPO))
        deadline = time.monotonic() + 120
        for (name, command), process in zip(commands, started, strict=True):
            while READY[command] not in (root / f"{name}.log").read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{name} ({command}) never got ready:\n"
                                     f"{(root / f'{name}.log').read_text()[-3000:]}")
                time.sleep(0.1)
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def one_run(mode: str, jobs: int, workers: int, gpu_s: float) -> tuple[float, str]:
    """Seconds from the batch's drop into the inbox to its last publish, and how many jobs each
    worker published (from the metadata's worker_id, most first)."""
    root = Path(tempfile.mkdtemp(prefix=f"i2v-bench-workers-{mode}-"))
    redis = RedisServer(root / "redis") if mode == "celery" else None
    try:
        staging = stage_jobs(root, jobs, gpu_s)
        (root / "inbox").mkdir()
        if redis is None:
            base, commands = settings(root), [(f"w{n}", "run") for n in range(workers)]
        else:
            redis.start()
            base = settings(root, coordination="celery", broker_url=redis.url)
            commands = [(f"w{n}", "worker") for n in range(workers)] + [("dispatcher", "run")]
        with processes(root, commands, base) as started:
            dropped = time.monotonic()
            for path in sorted(staging.iterdir(), key=lambda p: (p.stem, p.suffix != ".yaml")):
                path.rename(root / "inbox" / path.name)  # the sidecar first: the image is the job
            deadline = dropped + 120 + 3 * jobs * gpu_s
            while len(list((root / "outbox").glob("*.json"))) < jobs:
                failed = list((root / "failed").glob("*"))
                if failed or time.monotonic() > deadline or any(p.poll() is not None for p in started):
                    logs = "\n".join((root / f"{name}.log").read_text()[-2000:] for name, _ in commands)
                    raise SystemExit(f"{mode}, {workers} workers: not every job published "
                                     f"(failed: {[p.name for p in failed]})\n{logs}")
                time.sleep(0.05)
            seconds = time.monotonic() - dropped
        published = Counter(json.loads(path.read_text()).get("worker_id")
                            for path in (root / "outbox").glob("*.json"))
        return seconds, "/".join(str(n) for _, n in published.most_common())
    finally:
        if redis is not None:
            redis.kill()
        shutil.rmtree(root, ignore_errors=True)


def run(quick: bool = False, jobs: int | None = None, counts: tuple[int, ...] | None = None,
        gpu_s: float | None = None) -> tuple[str, list[dict[str, object]]]:
    default_jobs, default_counts, default_gpu = QUICK if quick else FULL
    jobs, counts, gpu_s = jobs or default_jobs, counts or default_counts, gpu_s or default_gpu
    rows: list[dict[str, object]] = []
    for mode, label in MODES.items():
        base = None
        for workers in counts:
            seconds, spread = one_run(mode, jobs, workers, gpu_s)
            base = base or seconds
            rows.append({"mode": label, "workers": workers, "jobs": jobs, "GPU s/job": gpu_s,
                         "wall s": round(seconds, 2), "jobs per minute": round(60 * jobs / seconds, 1),
                         "vs 1 worker": f"{base / seconds:.2f}x",
                         "GPU busy": f"{jobs * gpu_s / (workers * seconds):.0%}", "jobs per worker": spread})
    return TITLE, rows


def meets_target(rows: list[dict[str, object]]) -> bool:
    fours = [row for row in rows if row["workers"] == 4]
    return bool(fours) and all(float(str(row["vs 1 worker"]).rstrip("x")) >= 3.6 for row in fours)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--workers", type=int, nargs="+")
    parser.add_argument("--gpu-s", type=float)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from bench.report import table

    title, rows = run(args.quick, args.jobs, tuple(args.workers) if args.workers else None, args.gpu_s)
    print(f"{title} ({os.cpu_count()} CPU cores)\n\n{table(rows)}\n\nTarget: {TARGET}: "
          f"{'met' if meets_target(rows) else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
