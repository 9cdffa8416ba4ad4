"""A burst of 10,000 files in the inbox: a scan grows with the number of files, not with its square,
and what the watcher keeps per file is small and bounded."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.service.bootstrap import prepare_folders


def settings_for(root: Path) -> Settings:
    values = {name: str(root / name) for name in ("inbox", "outbox", "failed", "done", "work")}
    settings = Settings(**values, create_inbox=True, settle_s=0.0, sidecar_grace_s=0.0, worker_id="w")
    prepare_folders(settings)
    return settings


def burst(inbox: Path, count: int) -> None:
    for index in range(count):
        folder = inbox / f"batch{index % 20:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"img{index:05d}.png").write_bytes(b"\x89PNG not really")
        if index % 2:
            (folder / f"img{index:05d}.yaml").write_text("num_frames: 4\n")


def timed_scan(inbox: Inbox) -> tuple[float, int]:
    started = time.perf_counter()
    scan = inbox.scan()
    return time.perf_counter() - started, len(scan.ready)


def test_a_burst_of_ten_thousand_files_scans_in_linear_time_and_bounded_memory(tmp_path: Path) -> None:
    small, large = settings_for(tmp_path / "small"), settings_for(tmp_path / "large")
    burst(small.inbox, 2_500)
    burst(large.inbox, 10_000)
    timings = {}
    for name, settings in (("small", small), ("large", large)):
        inbox = Inbox(settings)
        inbox.scan()  # the first scan sees every file for the first time
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        best, ready = min(timed_scan(inbox) for _ in range(3))
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        tracemalloc.stop()
        timings[name] = best
        files = 2_500 if name == "small" else 10_000
        assert ready == files, (name, ready)  # every image a job; each with or without its sidecar
        # Rescanning keeps no more than it had: no growth per scan beyond a few bytes a file.
        assert grown < 200 * files, (name, grown)
    # Four times the files: linear would take 4x, quadratic 16x; allow a noisy machine room.
    assert timings["large"] < 8 * timings["small"], timings
