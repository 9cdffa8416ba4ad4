"""The web process's /metrics: folder-level gauges for the whole deployment, scraped as Prometheus would,
over the folders of a real daemon."""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from conftest import Daemon, Folders, make_image, wait_for
from web.conftest import WebServer

FOLDER_GAUGES = ("i2v_queued_jobs", "i2v_in_progress_jobs", "i2v_failed_jobs", "i2v_published_clips")


def scrape(server: WebServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) → value."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def worker(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, (("worker_id", "testhost"),)


def test_folder_and_worker_gauges(folders: Folders, start: Callable[..., Daemon],
                                  web: Callable[..., WebServer]) -> None:
    daemon = start(folders.config)
    wait_for(lambda: (folders.work / "testhost" / "heartbeat.json").exists(), 30, "the daemon's heartbeat")
    server = web()

    before = wait_for(lambda: (m := scrape(server)).get(worker("i2v_worker_up")) == 1.0 and m, 30,
                      "i2v_worker_up{worker_id=testhost} to be 1")
    for name in FOLDER_GAUGES:
        assert (name, ()) in before, (name, sorted(before))
    assert before[worker("i2v_worker_heartbeat_age_seconds")] >= 0
    assert before[("i2v_queued_jobs", ())] == 0

    for index in range(2):
        make_image(folders.inbox / f"good-{index}.png", seed=index)
    (folders.inbox / "bad.png").write_bytes(b"not an image at all\n" * 30)
    wait_for(lambda: len([f for f in folders.files("outbox") if f.endswith(".json")]) == 2
             and "bad.error.json" in folders.files("failed"), 60, "two clips and one failure")

    def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        now = scrape(server)
        done = (now[("i2v_published_clips", ())] == before[("i2v_published_clips", ())] + 2
                and now[("i2v_failed_jobs", ())] == before[("i2v_failed_jobs", ())] + 1
                and now[("i2v_queued_jobs", ())] == 0 and now[("i2v_in_progress_jobs", ())] == 0)
        return now if done else None
    after = wait_for(settled, 30, "the gauges to count 2 more clips, 1 more failure and an empty queue")
    assert after[worker("i2v_worker_up")] == 1.0

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, daemon.log
    stopped = wait_for(lambda: (m := scrape(server)).get(worker("i2v_worker_up")) == 0.0 and m, 30,
                       "i2v_worker_up{worker_id=testhost} to be 0 after the daemon stopped")
    assert stopped[("i2v_published_clips", ())] == after[("i2v_published_clips", ())]
