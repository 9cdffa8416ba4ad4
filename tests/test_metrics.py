"""The daemon's own Prometheus metrics (`metrics_port`): a real daemon scraped over HTTP, off by default,
a port in use refused at start-up; the recording from a job's metadata, unit by unit."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Daemon, Folders, make_image, wait_for
from i2v_watcher import __version__
from i2v_watcher.config.settings import Settings
from i2v_watcher.job.checkpoint import Activity
from i2v_watcher.job.records import JobMetadata
from i2v_watcher.run.generate import gpu_peaks, reset_gpu_peaks
from i2v_watcher.service.metrics import STAGES, DaemonMetrics

Start = Callable[..., Daemon]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SLOW = {"backend": "slow", "plugins": ["slow_backend"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tcp_sockets(pid: int) -> list[tuple[str, int]]:
    """(state in hex, local port) of each TCP socket the process holds ("0A": listening)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    found.append((fields[3], int(fields[1].rsplit(":", 1)[1], 16)))
    return found


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape_until(port: int, check: Callable[[Samples], object], what: str) -> Samples:
    seen: list[Samples] = []

    def ready() -> object:
        seen.append(scrape(port))
        return check(seen[-1])

    wait_for(ready, what=what)
    return seen[-1]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of the samples of this name whose labels include these; None when there is none."""
    found = [v for (n, have), v in samples.items() if n == name and set(labels.items()) <= have]
    return sum(found) if found else None


def jobs(samples: Samples, outcome: str) -> float:
    return value(samples, "i2v_jobs_total", outcome=outcome) or 0.0


def test_a_real_daemon_counts_its_jobs_stages_and_progress(folders: Folders, start: Start) -> None:
    port = free_port()
    folders.write_config(metrics_port=port, **SLOW)
    daemon = start(folders.config)
    daemon.read_until("watching")
    before = scrape_until(port, lambda s: value(s, "i2v_jobs_total") is not None, "the job counters, at 0")
    assert jobs(before, "published") == 0 and jobs(before, "failed") == 0
    assert value(before, "i2v_worker_info", worker_id="testhost", backend="slow", version=__version__) == 1
    assert value(before, "i2v_job_progress") is None  # idle: no series
    assert [p for state, p in tcp_sockets(daemon.process.pid) if state == "0A"] == [port]

    (folders.inbox / "bad.png").write_bytes(b"not an image at all")
    make_image(folders.inbox / "good.png")
    (folders.inbox / "good.yaml").write_text("num_frames: 6\nbackend_options: {delay_s: 0.3}\n")

    during = scrape_until(port, lambda s: value(s, "i2v_job_progress", job="good", stage="generate"),
                          "the progress of the generating job")
    progress = value(during, "i2v_job_progress", worker_id="testhost", job="good", stage="generate")
    assert progress is not None and 0 < progress <= 1
    after = scrape_until(port, lambda s: jobs(s, "published") == 1 and jobs(s, "failed") == 1,
                         "both jobs counted")
    assert value(after, "i2v_jobs_total", backend="slow", outcome="published") == 1
    assert value(after, "i2v_jobs_total", backend="unknown", outcome="failed") == 1  # failed unread
    for stage in STAGES:
        assert value(after, "i2v_stage_seconds_count", stage=stage) == 1, stage
        assert value(after, "i2v_stage_seconds_bucket", stage=stage, le="+Inf") == 1, stage
    generate_s = value(after, "i2v_stage_seconds_sum", stage="generate")
    assert generate_s is not None and generate_s >= 1.0  # the slow backend: 6 frames, 0.3 s each
    assert value(after, "i2v_job_progress") is None  # idle again
    assert value(after, "i2v_oom_rungs_total") is None  # the preview backends have no OOM ladder
    assert value(after, "i2v_gpu_peak_memory_bytes") is None  # no torch in this daemon
    assert not any(name.endswith("_created") for name, _ in after)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log
    assert any(e["event"] == "serving metrics" for e in daemon.events())


def test_metrics_are_off_by_default(folders: Folders, start: Start) -> None:
    daemon = start(folders.config)
    daemon.read_until("watching")
    assert tcp_sockets(daemon.process.pid) == []  # no port, not even a client socket
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert not any(e["event"] == "serving metrics" for e in daemon.events())


def test_a_port_in_use_or_a_foreign_address_exits_2_naming_the_setting(folders: Folders,
                                                                       start: Start) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        folders.write_config(metrics_port=port)
        daemon = start(folders.config, "--once")
        assert daemon.wait() == 2, daemon.log
    error = next(e for e in daemon.events() if e["event"] == "cannot start")["error"]
    assert f"metrics_port = {port}" in error and "Address already in use" in error, error
    assert folders.files("work") == []  # refused before it took the worker's lease or any job
    folders.write_config(metrics_port=free_port(), metrics_address="192.0.2.1")  # TEST-NET-1: not ours
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 2, daemon.log
    assert "metrics_address = '192.0.2.1'" in daemon.log


@pytest.fixture
def metrics(folders: Folders) -> Iterator[tuple[DaemonMetrics, Activity]]:
    settings = Settings(**folders.settings)
    activity = Activity()
    yield DaemonMetrics(settings, activity, lambda: {"backend": "i2vgen-xl", "model": "m"}), activity


def test_recording_from_a_jobs_metadata(metrics: tuple[DaemonMetrics, Activity]) -> None:
    daemon_metrics, activity = metrics
    get = daemon_metrics.registry.get_sample_value
    daemon_metrics.ready()
    assert get("i2v_jobs_total", {"backend": "i2vgen-xl", "outcome": "failed"}) == 0
    published = JobMetadata(
        job_id="20260101T000000Z-0123abcd", backend="i2vgen-xl",
        timings_s={"load": 0.01, "generate": 42.0, "postprocess": 2.0},
        generation={"oom_rung": 2, "gpu_peak_memory_bytes": {"cuda:0": 7 * 2**30}})
    daemon_metrics.settled(published, "published")
    daemon_metrics.settled(published.model_copy(update={"generation": {"oom_rung": 0}}), "failed")
    daemon_metrics.settled(None, "failed")  # failed before its generation recorded any metadata
    daemon_metrics.settled(published, "requeued")  # not an outcome that counts
    # What a backend plugin recorded, in a shape of its own: never raised.
    daemon_metrics.settled(JobMetadata(job_id="x", backend="x", generation={
        "oom_rung": "two", "gpu_peak_memory_bytes": [1]}), "published")
    assert get("i2v_jobs_total", {"backend": "i2vgen-xl", "outcome": "published"}) == 1
    assert get("i2v_jobs_total", {"backend": "i2vgen-xl", "outcome": "failed"}) == 1
    assert get("i2v_jobs_total", {"backend": "unknown", "outcome": "failed"}) == 1
    assert get("i2v_oom_rungs_total", {"backend": "i2vgen-xl", "rung": "2"}) == 1
    assert get("i2v_oom_rungs_total", {"backend": "i2vgen-xl", "rung": "0"}) is None  # no step down
    assert get("i2v_gpu_peak_memory_bytes", {"device": "cuda:0"}) == 7 * 2**30
    assert get("i2v_stage_seconds_count", {"stage": "generate"}) == 1  # published jobs only
    assert get("i2v_stage_seconds_bucket", {"stage": "generate", "le": "30.0"}) == 0
    assert get("i2v_stage_seconds_bucket", {"stage": "generate", "le": "60.0"}) == 1
    assert get("i2v_stage_seconds_count", {"stage": "publish"}) == 0  # a timing it does not have

    activity.working_on("0123abcd", "holiday/IMG_1", "generate")
    activity.progress(3, 4)
    info = {"worker_id": "testhost", "backend": "i2vgen-xl", "model": "m", "version": __version__}
    assert get("i2v_worker_info", info) == 1
    assert get("i2v_job_progress", {"worker_id": "testhost", "stage": "generate",
                                    "job": "holiday/IMG_1"}) == 0.75
    activity.working_on(None)
    assert get("i2v_job_progress", {"worker_id": "testhost", "stage": "generate",
                                    "job": "holiday/IMG_1"}) is None


def test_verdicts_and_symptoms_of_published_clips(metrics: tuple[DaemonMetrics, Activity]) -> None:
    daemon_metrics, _ = metrics
    get = daemon_metrics.registry.get_sample_value
    daemon_metrics.ready()  # every verdict and symptom of the default backend, at 0 from the start
    assert get("i2v_clip_verdicts_total", {"backend": "i2vgen-xl", "verdict": "warn"}) == 0
    assert get("i2v_clip_symptoms_total", {"backend": "i2vgen-xl", "symptom": "blur"}) == 0

    def judged(verdict: object, symptoms: object, backend: str = "wan-i2v") -> JobMetadata:
        return JobMetadata(job_id="j", backend=backend, quality={
            "scores": {}, "symptoms": symptoms, "verdict": verdict, "attempts": [{}, {}]})

    daemon_metrics.settled(judged("fail", ["no_motion", "flicker"]), "published")
    daemon_metrics.settled(judged("warn", ["flicker"]), "published")
    daemon_metrics.settled(judged("pass", []), "published")
    daemon_metrics.settled(judged("fail", ["drift"]), "failed")  # the gate's "fail": not a clip
    daemon_metrics.settled(JobMetadata(job_id="old", backend="wan-i2v"), "published")  # not judged
    daemon_metrics.settled(judged("great", ["flicker"]), "published")  # not the gate's: not counted
    daemon_metrics.settled(judged("fail", "flicker"), "published")  # its verdict, not the string
    assert get("i2v_clip_verdicts_total", {"backend": "wan-i2v", "verdict": "fail"}) == 2
    assert get("i2v_clip_verdicts_total", {"backend": "wan-i2v", "verdict": "warn"}) == 1
    assert get("i2v_clip_verdicts_total", {"backend": "wan-i2v", "verdict": "pass"}) == 1
    assert get("i2v_clip_symptoms_total", {"backend": "wan-i2v", "symptom": "flicker"}) == 2
    assert get("i2v_clip_symptoms_total", {"backend": "wan-i2v", "symptom": "no_motion"}) == 1
    assert get("i2v_clip_symptoms_total", {"backend": "wan-i2v", "symptom": "drift"}) is None
    assert get("i2v_jobs_total", {"backend": "wan-i2v", "outcome": "published"}) == 6


def test_gpu_peaks_only_from_a_torch_that_initialised_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert gpu_peaks() == {}  # no torch imported: none, and torch is not imported for it
    assert "torch" not in sys.modules
    peaks = {0: 5, 1: 0}
    cuda = SimpleNamespace(initialised=False, device_count=lambda: 2,
                           max_memory_allocated=lambda i: peaks[i],
                           reset_peak_memory_stats=lambda i: peaks.__setitem__(i, 0))
    cuda.is_initialized = lambda: cuda.initialised
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    assert gpu_peaks() == {}  # a CPU-only run: CUDA never initialised, never touched
    cuda.initialised = True
    assert gpu_peaks() == {"cuda:0": 5}  # an unused device is left out
    reset_gpu_peaks()
    assert gpu_peaks() == {}
