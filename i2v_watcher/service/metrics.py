"""The daemon's own Prometheus metrics on http://metrics_address:metrics_port/metrics (`metrics_port`;
off unless set): what this worker did (jobs by outcome, seconds per stage, OOM-ladder rungs, peak GPU
memory, the quality gate's verdicts and symptoms) and what it is doing now (the progress of each busy
stage, read from the activity at scrape time). The folder-level numbers (queue length, failed jobs,
every worker's heartbeat, the outbox's clips by verdict) come from the web process (`i2v-watcher web`);
docs/monitoring.md lists both, with alert rules.

A registry of its own, not prometheus_client's global one: nothing a library registers there leaks in.
Recording never raises: a metric must never stop a job or the daemon's loop (it reads the job's typed
metadata, and checks the shape of what a backend plugin recorded). Serving is bounded: a few connections
at once, each closed after a deadline (metrics_http.py), so no client can exhaust the daemon's
descriptors or threads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from threading import Thread

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from i2v_watcher import __version__
from i2v_watcher.catalog.judged import VERDICTS, judged
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.job.checkpoint import Activity
from i2v_watcher.job.records import JobMetadata
from i2v_watcher.judge.score import SYMPTOMS
from i2v_watcher.service.metrics_http import BoundedWSGIServer, start_server
from i2v_watcher.work.swap import Swapped

OUTCOMES = ("published", "failed")  # the settled outcomes that are counted (a requeue is not one)
STAGES = ("load", "generate", "postprocess", "publish")  # the keys of the metadata's timings_s
# 0.05 s (a publish on a local disk) to 30 min (a long clip on a slow GPU); above: +Inf.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
UNKNOWN = "unknown"  # the backend of a job that failed before its metadata named one
About = Callable[[], Mapping[str, str]]  # the backend and model the service runs (Notifier.about)
log = structlog.get_logger("i2v_watcher.service.metrics")


class LiveCollector:
    """Read at every scrape: which worker this is, and how far each busy stage is with its job."""

    def __init__(self, worker_id: str, activity: Activity, about: About) -> None:
        self.worker_id = worker_id
        self.activity = activity
        self.about = about

    def collect(self) -> Iterable[Metric]:
        about = self.about()
        info = GaugeMetricFamily("i2v_worker_info", "This worker: its id, default backend, model and "
                                 "i2v-watcher version (always 1)", labels=["worker_id", "backend", "model",
                                                                          "version"])
        info.add_metric([self.worker_id, about.get("backend", ""), about.get("model", ""), __version__], 1)
        progress = GaugeMetricFamily(
            "i2v_job_progress", "How far each busy stage is with its job, 0 to 1 (done / total of its "
            "units: denoising steps, frames); a series exists only while the stage works on the job",
            labels=["worker_id", "stage", "job"])
        seen: set[tuple[str, str]] = set()
        for part in self.activity.busy():
            job, stage, done, total = part.job or part.job_id, part.stage or "", part.done, part.total
            if job is None or (stage, job) in seen:  # finished meanwhile, or one job shown once per stage
                continue
            seen.add((stage, job))
            progress.add_metric([self.worker_id, stage, job], min(1.0, done / total) if total > 0 else 0.0)
        return [info, progress]


class DaemonMetrics:
    def __init__(self, settings: Settings, activity: Activity, about: About) -> None:
        self.settings = settings
        self.about = about
        self.registry = CollectorRegistry()
        registry = self.registry
        self.jobs = Counter("i2v_jobs_total", "Jobs this worker finished, by backend and outcome "
                            "(published, failed)", ["backend", "outcome"], registry=registry)
        self.stage_seconds = Histogram("i2v_stage_seconds", "Seconds per stage (load, generate, "
                                       "postprocess, publish) of the jobs this worker published", ["stage"],
                                       buckets=BUCKETS, registry=registry)
        self.oom_rungs = Counter("i2v_oom_rungs_total", "Jobs that stepped down the OOM ladder, by the "
                                 "rung they finished on (1 = one step down)", ["backend", "rung"],
                                 registry=registry)
        self.verdicts = Counter("i2v_clip_verdicts_total", "Clips this worker published, by backend and "
                                "the quality gate's verdict (pass, warn, fail)", ["backend", "verdict"],
                                registry=registry)
        self.symptoms = Counter("i2v_clip_symptoms_total", "Clips this worker published with each symptom "
                                "the quality gate found, by backend", ["backend", "symptom"],
                                registry=registry)
        self.gpu_peak = Gauge("i2v_gpu_peak_memory_bytes", "Peak GPU memory PyTorch allocated while the "
                              "last job generated, per device", ["device"], registry=registry)
        self.swaps = Counter("i2v_model_swaps_total", "Model swaps of this worker (swap_backends), by the "
                             "backend swapped in and the result (loaded, failed)", ["backend", "result"],
                             registry=registry)
        self.swap_seconds = Histogram("i2v_model_swap_seconds", "Seconds per model swap, by part (unload, "
                                      "load)", ["part"], buckets=BUCKETS, registry=registry)
        registry.register(LiveCollector(settings.worker_id, activity, about))
        self._server: BoundedWSGIServer | None = None
        self._thread: Thread | None = None

    def start(self) -> None:
        port, address = self.settings.metrics_port, self.settings.metrics_address
        assert port is not None
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series (process-wide)
        try:
            self._server, self._thread = start_server(address, port, self.registry)
        except OSError as exc:  # the port is taken, or the address is not this host's (or no address)
            raise StartupError(
                f"cannot serve metrics on {address} port {port} (metrics_port = {port}, metrics_address = "
                f"{address!r}): {exc.strerror or exc}. Choose a free metrics_port (each daemon or worker "
                "on a host needs its own, e.g. I2V_METRICS_PORT in its environment), an address of this "
                "host, or unset metrics_port") from exc
        host = f"[{address}]" if ":" in address else address
        log.info("serving metrics", url=f"http://{host}:{port}/metrics")

    def ready(self) -> None:
        """Start-up is done: the job counters of the default backend and the stage histograms exist from
        now on, at 0, so that rate() and increase() see the first job (a series that appears at 1
        counts nothing)."""
        default = self.about().get("backend") or UNKNOWN
        for backend, outcome in {(default, "published"), (default, "failed"), (UNKNOWN, "failed")}:
            self.jobs.labels(backend, outcome)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for verdict in VERDICTS:
            self.verdicts.labels(default, verdict)
        for symptom in SYMPTOMS:
            self.symptoms.labels(default, symptom)

    def settled(self, metadata: JobMetadata | None, outcome: str) -> None:
        """A job's outcome: counted when published or failed; its stage times and the gate's verdict
        and symptoms (published only), OOM rung and GPU peak from its metadata, where it has them (none:
        it failed before generating)."""
        if outcome not in OUTCOMES:
            return
        backend = metadata.backend if metadata is not None and metadata.backend else UNKNOWN
        self.jobs.labels(backend, outcome).inc()
        if metadata is None:
            return
        if outcome == "published":
            for stage in STAGES:
                if stage in metadata.timings_s:
                    self.stage_seconds.labels(stage).observe(metadata.timings_s[stage])
            judgement = judged(metadata.quality)
            if judgement is not None:  # judged by the gate (a clip it did not judge is not counted)
                self.verdicts.labels(backend, judgement.verdict).inc()
                for symptom in judgement.symptoms:
                    self.symptoms.labels(backend, symptom).inc()
        # The backend's own record (a plugin's may lack these or give them another shape).
        rung = metadata.generation.get("oom_rung")
        if isinstance(rung, int) and rung > 0:
            self.oom_rungs.labels(backend, str(rung)).inc()
        peaks = metadata.generation.get("gpu_peak_memory_bytes")
        for device, peak in (peaks.items() if isinstance(peaks, dict) else ()):
            if isinstance(peak, int | float):
                self.gpu_peak.labels(str(device)).set(peak)

    def swapped(self, swap: Swapped) -> None:
        """A model swap (work.swap), from the generation stage's thread: counted, its parts timed."""
        self.swaps.labels(swap.after, "failed" if swap.error else "loaded").inc()
        self.swap_seconds.labels("unload").observe(swap.unload_s)
        self.swap_seconds.labels("load").observe(swap.load_s)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def serve_metrics(settings: Settings, activity: Activity, about: About) -> DaemonMetrics | None:
    """The metrics server, started; None when `metrics_port` is unset. StartupError when it cannot."""
    if settings.metrics_port is None:
        return None
    metrics = DaemonMetrics(settings, activity, about)
    metrics.start()
    return metrics
