"""The web process's `/metrics`: folder-level gauges for the whole deployment, computed at scrape
time from the same snapshot the pages show (each daemon's own metrics are on its `metrics_port`)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
        yield GaugeMetricFamily("i2v_published_clips", "Published clips in the outbox",
                                len(self.gallery.clips()))
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
