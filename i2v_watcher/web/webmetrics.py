"""The web process's `/metrics`: folder-level gauges for the whole deployment, computed at scrape
time from the same snapshot the pages show (each daemon's own metrics are on its `metrics_port`)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from i2v_watcher.web.board import Board
from i2v_watcher.web.gallery import Gallery


class FolderMetrics(Collector):
    def __init__(self, board: Board, gallery: Gallery) -> None:
        self.board = board
        self.gallery = gallery

    def collect(self) -> Iterator[Metric]:
        snap = self.board.snapshot()
        yield GaugeMetricFamily("i2v_queued_jobs", "Jobs in the inbox, ready or waiting", len(snap.queue))
        yield GaugeMetricFamily("i2v_in_progress_jobs", "Jobs claimed by a worker and not finished",
                                len(snap.in_progress))
        yield GaugeMetricFamily("i2v_failed_jobs", "Failed jobs with a report in failed/", len(snap.failed))
        yield GaugeMetricFamily("i2v_published_clips", "Published clips in the outbox",
                                len(self.gallery.clips()))
        age = GaugeMetricFamily("i2v_worker_heartbeat_age_seconds",
                                "Seconds since the worker's heartbeat counter last moved, on the web "
                                "process's clock", labels=["worker_id"])
        up = GaugeMetricFamily("i2v_worker_up", "1 while the worker's heartbeat moves, 0 when stale or "
                               "stopped", labels=["worker_id"])
        for worker in snap.workers:
            if worker.get("heartbeat_age_s") is not None:
                age.add_metric([worker["worker_id"]], float(worker["heartbeat_age_s"]))
            up.add_metric([worker["worker_id"]], 1.0 if worker["state"] == "alive" else 0.0)
        yield age
        yield up
