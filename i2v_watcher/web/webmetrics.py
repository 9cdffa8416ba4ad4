"""The web process's `/metrics`: folder-level gauges for the whole deployment, computed at scrape
time from the same snapshot the pages show (each daemon's own metrics are on its `metrics_port`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from i2v_watcher.catalog.judged import VERDICTS
from i2v_watcher.judge.score import SYMPTOMS
from i2v_watcher.service.metrics import UNKNOWN
from i2v_watcher.web.board import Board
from i2v_watcher.web.gallery import Gallery
from i2v_watcher.work.liveness import STATES


class FolderMetrics(Collector):
    def __init__(self, board: Board, gallery: Gallery) -> None:
        self.board = board
        self.gallery = gallery

    def collect(self) -> Iterator[Metric]:
        snap = self.board.snapshot()
        yield GaugeMetricFamily("i2v_queued_jobs", "Jobs in the inbox that a daemon will take or waits for, "
                                "as `status` counts them", len(snap.queue))
        yield GaugeMetricFamily("i2v_in_progress_jobs", "Jobs claimed by a worker and not finished",
                                len(snap.in_progress))
        yield GaugeMetricFamily("i2v_failed_jobs", "Failed jobs with a report in failed/", len(snap.failed))
        catalog = self.gallery.fresh()
        yield GaugeMetricFamily("i2v_published_clips", "Published clips in the outbox", catalog.count())
        yield from judged_clips(catalog.tally())
        age = GaugeMetricFamily("i2v_worker_heartbeat_age_seconds",
                                "Seconds since the worker's last heartbeat, on the share's clock",
                                labels=["worker_id"])
        up = GaugeMetricFamily("i2v_worker_up", "1 while the worker is alive or late, 0 when stale, "
                               "stopped, dead or unknown", labels=["worker_id"])
        state = GaugeMetricFamily("i2v_worker_state", "1 for the worker's liveness as `status` says it "
                                  "(alive, late, stale, stopped, dead, unknown), 0 for the others",
                                  labels=["worker_id", "state"])
        for worker in snap.workers:
            if worker.heartbeat_age_s is not None:
                age.add_metric([worker.worker_id], worker.heartbeat_age_s)
            up.add_metric([worker.worker_id], 1.0 if worker.up else 0.0)
            for name in STATES:
                state.add_metric([worker.worker_id, name], 1.0 if worker.state == name else 0.0)
        yield age
        yield up
        yield state


def judged_clips(tallies: dict[str, tuple[Counter[str], Counter[str]]]) -> Iterator[Metric]:
    """The outbox's clips by the quality gate's verdict and by symptom, per backend (the catalog's
    tally): every verdict and symptom of a backend with a judged clip has a series (0 included), so
    that ratios need no `or vector(0)`; a clip the gate did not judge is in neither."""
    by_verdict = GaugeMetricFamily("i2v_published_clip_verdicts", "Published clips in the outbox by "
                                   "backend and the quality gate's verdict (pass, warn, fail)",
                                   labels=["backend", "verdict"])
    by_symptom = GaugeMetricFamily("i2v_published_clip_symptoms", "Published clips in the outbox with "
                                   "each symptom the quality gate found, by backend",
                                   labels=["backend", "symptom"])
    labelled: dict[str, tuple[Counter[str], Counter[str]]] = {}
    for backend, (verdicts, symptoms) in tallies.items():  # a clip that names no backend: "unknown"
        counts = labelled.setdefault(backend or UNKNOWN, (Counter(), Counter()))
        counts[0].update(verdicts)
        counts[1].update(symptoms)
    for backend, (verdicts, symptoms) in sorted(labelled.items()):
        for verdict in VERDICTS:
            by_verdict.add_metric([backend, verdict], verdicts[verdict])
        for symptom in SYMPTOMS:
            by_symptom.add_metric([backend, symptom], symptoms[symptom])
    yield by_verdict
    yield by_symptom
