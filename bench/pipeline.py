"""Throughput of the pipelined stages against strictly serial ones, side by side in one run, on jobs
whose generation and post-processing cost about the same: a backend that blocks like a GPU (it sleeps,
releasing the CPU, as a CUDA call does) and the vertical 1080x1920 preset (ffmpeg on the CPU); in
`run` (the folder daemon) and in Celery mode (`run` dispatching, one `worker` running the jobs).

    python bench/pipeline.py [--jobs 8] [--repeat 2] [--quick]

In `run` mode both runs are `run --once` over the same batch. From the serial run's log, each job's
generation time (claim to `generated`) and finishing time (`generated` to `published`) give the ideal
two-stage pipeline's makespan on those very stage times; the pipelined run's makespan (first claim to
last publish) is compared with it (target: within 10 %) and with the serial one (the speed-up). The
backend's blocking time is first calibrated to this machine's finishing time, so the stages match.
On a shared, noisy machine the two runs' stage times differ: run it on a quiet one.

In Celery mode a real redis-server, `run` and one `worker` (the blocking backend of tests/plugins:
its "GPU" blocks inside a C call), once with pipeline_depth = 1 and once with 2. Each job's stage
seconds are its metadata's `timings_s` (work only: load + generate, postprocess + publish); the
stages' seconds over the wall time (the worker's first take to its last publish) are compared with
the ideal two-stage pipeline's on those very stage times (target: at least 90 % of it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
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

from faults.celery_helpers import RedisServer  # noqa: E402

from conftest import daemon_env, make_image, write_toml  # noqa: E402

QUICK = (3, 1, 8)  # jobs, repeats, frames of `--quick`
TITLE = "Pipelined stages: generation overlapped with post-processing and publishing"
TARGET = ("pipelined makespan within 10 % of the ideal two-stage pipeline (efficiency ≥ 0.90), in `run` "
          "and in Celery mode")


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


def drop_jobs(root: Path, jobs: int, options: str) -> None:
    for index in range(jobs):
        make_image(root / "inbox" / f"job{index:03d}.png", (512, 512), seed=index)
        (root / "inbox" / f"job{index:03d}.yaml").write_text(
            f"postprocess: [vertical-1080x1920]\nbackend_options: {{{options}}}\n")


def settings(root: Path, depth: int, frames: int, **more: object) -> dict[str, object]:
    return {**{n: str(root / n) for n in ("inbox", "outbox", "failed", "done", "work")},
            "scratch": str(root / "scratch"), "settle_s": 0.0, "sidecar_grace_s": 0.0, "log_format": "json",
            "pipeline_depth": depth, "defaults": {"num_frames": frames, "resolution": "256p", "fps": 8.0},
            **more}


def one_run(jobs: int, depth: int, gpu_s: float, frames: int) -> list[dict[str, Any]]:
    """The daemon's JSON log of one `run --once` over `jobs` fresh jobs."""
    root = Path(tempfile.mkdtemp(prefix="i2v-bench-pipeline-"))
    try:
        drop_jobs(root, jobs, f"delay_s: {gpu_s / frames:.4f}")
        config = root / "config.toml"
        write_toml(config, settings(root, depth, frames, worker_id="bench", backend="slow",
                                    plugins=["slow_backend"]))
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


def celery_run(jobs: int, depth: int, gpu_s: float, frames: int) -> tuple[float, list[tuple[float, float]]]:
    """One batch through a real redis-server, `run` and one `worker`: the wall time (the worker's first
    take to its last publish) and each job's (generation, finishing) work seconds, in the order taken."""
    root = Path(tempfile.mkdtemp(prefix="i2v-bench-celery-"))
    redis = RedisServer(root / "redis")
    redis.start()
    started: list[subprocess.Popen[str]] = []
    try:
        drop_jobs(root, jobs, f"delay_s: 0, block_s: {gpu_s / frames:.4f}")
        celery = settings(root, depth, frames, coordination="celery", broker_url=redis.url,
                          backend="blocking", plugins=["blocking_backend"])
        for name, command in (("w1", "worker"), ("disp", "run")):
            write_toml(root / f"{name}.toml", {**celery, "worker_id": name})
            started.append(subprocess.Popen(
                [sys.executable, "-m", "i2v_watcher", command, "--config", str(root / f"{name}.toml")],
                stdout=subprocess.DEVNULL, stderr=(root / f"{name}.log").open("w"), text=True,
                env=daemon_env(), cwd=REPO))
        deadline = time.monotonic() + 120 + jobs * 4 * gpu_s
        while len(list((root / "outbox").glob("*.json"))) < jobs:
            if time.monotonic() > deadline or any(p.poll() is not None for p in started):
                raise SystemExit(f"celery, depth {depth}: not every job published\n"
                                 f"{(root / 'w1.log').read_text()[-3000:]}")
            time.sleep(0.2)
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            process.wait(timeout=120)
        events = _events((root / "w1.log").read_text())
        taken = [e for e in events if e["event"] == "took job from the queue"]
        wall = max(_at(e) for e in events if e["event"] == "published") - min(_at(e) for e in taken)
        times = []
        for event in taken:
            done = json.loads((root / "outbox" / f"{event['job']}.json").read_text())["timings_s"]
            times.append((done["load"] + done["generate"], done["postprocess"] + done["publish"]))
        return wall, times
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
        redis.kill()
        shutil.rmtree(root, ignore_errors=True)


def run_mode(jobs: int, repeat: int, frames: int, gpu_s: float) -> dict[str, object]:
    serial_s, piped_s, ideal_s = [], [], []
    for _ in range(repeat):  # interleaved: a drift in the machine's speed hits both
        serial = one_run(jobs, 1, gpu_s, frames)
        piped = one_run(jobs, 2, gpu_s, frames)
        serial_s.append(makespan(serial))
        piped_s.append(makespan(piped))
        ideal_s.append(ideal_makespan(stage_times(serial)))
    return row("run", stage_times(serial), *(statistics.median(v) for v in (serial_s, piped_s, ideal_s)))


def celery_mode(jobs: int, repeat: int, frames: int, gpu_s: float) -> dict[str, object]:
    serial_s, piped_s, ideal_s = [], [], []
    for _ in range(repeat):
        serial_s.append(celery_run(jobs, 1, gpu_s, frames)[0])
        wall, times = celery_run(jobs, 2, gpu_s, frames)
        piped_s.append(wall)
        ideal_s.append(ideal_makespan(times))
    return row("celery worker", times, *(statistics.median(v) for v in (serial_s, piped_s, ideal_s)))


def row(mode: str, times: list[tuple[float, float]], serial: float, piped: float, ideal: float
        ) -> dict[str, object]:
    """One mode's line: its stages' seconds over the wall time, against the ideal pipeline's."""
    work = sum(g + f for g, f in times)
    return {
        "mode": mode,
        "jobs": len(times),
        "generation s/job": round(statistics.mean(g for g, _ in times), 2),
        "finishing s/job": round(statistics.mean(f for _, f in times), 2),
        "serial s": round(serial, 2),
        "pipelined s": round(piped, 2),
        "ideal pipeline s": round(ideal, 2),
        "stages s / wall": f"{work / piped:.2f}x",
        "ideal stages s / wall": f"{work / ideal:.2f}x",
        "speed-up": f"{serial / piped:.2f}x",
        "efficiency": round(ideal / piped, 3),
        "target met": ideal / piped >= 0.9,
    }


def run(quick: bool = False, jobs: int = 8, repeat: int = 2) -> tuple[str, list[dict[str, object]]]:
    jobs, repeat, frames = QUICK if quick else (jobs, repeat, 16)
    # Calibrate: the "GPU" blocks as long as this machine takes to finish a job, so the stages match.
    gpu_s = statistics.median(f for _, f in stage_times(one_run(2, 1, 0.0, frames)))
    return TITLE, [run_mode(jobs, repeat, frames, gpu_s), celery_mode(jobs, repeat, frames, gpu_s)]


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
