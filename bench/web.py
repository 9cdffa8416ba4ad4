"""What the web dashboard costs as the shared folders grow: the gallery page over an outbox of a few
clips and of thousands, `/api/status` over an empty inbox, one holding a queue and NAS litter, and the
large outbox, and `/metrics` over both outboxes, each the first request after the dashboard starts
(cold) and the requests after it (warm), side by side in one run.

    python bench/web.py [--quick]

Everything runs in this process: `starlette.testclient.TestClient(create_app(settings))` over
temporary folders, so the time is the dashboard's own (routing, the folder walks, the metadata files,
the template), not a network's. The outbox is what the daemon publishes: per clip a metadata file
(`<name>.json`, about 1.4 KB, with the keys the daemon writes) and its `.mp4` and `.jpg` (small dummy
files: their bytes are never read by a page), spread over 4 sub-folders. The inbox holds jobs as
`submit` writes them (an image and its sidecar) and litter that `ignore_patterns` skips (AppleDouble
`._*` twins, `*.tmp`), over 20 folders; settle_s is 0, so every job is ready at once and stays so.

Cold is the first request of a freshly created app: every metadata file is read (and the page's
template compiled), over an OS page cache that is already warm (the files were just written). Warm is
the median of the later requests. The gallery is not cached by time, only by file identity (inode,
size, mtime): a warm page walks the outbox again (names and lstat only) and reads no metadata file,
which the "metadata read" column counts. The board's snapshot (queue, workers, failures) is kept for
0.5 s, so the warm `/api/status` and `/metrics` requests are 0.6 s apart: each one walks the inbox
again (the scan cache makes an unchanged file one lstat) and the outbox too (status counts the
published clips, metrics exports them). The cases run in interleaved rounds; a cold figure is the
median over the rounds, each with a new app.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import structlog  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from i2v_watcher.config.settings import Settings  # noqa: E402
from i2v_watcher.web.app import create_app  # noqa: E402
from i2v_watcher.web.board import REFRESH_S  # noqa: E402
from i2v_watcher.web.gallery import Gallery  # noqa: E402

FOLDERS = ("inbox", "outbox", "failed", "done", "work")
TITLE = "Web dashboard: cost per request as the folders grow"
SMALL_OUTBOX = 100
GALLERY_RATIO = 50.0  # a warm page of LARGE clips against one of SMALL_OUTBOX: linear in names at worst
LIMIT_S = 0.5  # a warm gallery page and a /metrics scrape over the large outbox, on this machine
STATUS_RATIO = 3.0  # a warm /api/status over the grown inbox against an empty one
TARGET = (f"warm, a gallery page of the large outbox costs at most {GALLERY_RATIO:.0f}x a page of "
          f"{SMALL_OUTBOX} clips and reads no metadata file again; a warm gallery page and /metrics "
          f"over it take under {LIMIT_S} s; a warm /api/status over the grown inbox costs at most "
          f"{STATUS_RATIO:.0f}x an empty inbox's (both over an outbox of {SMALL_OUTBOX} clips)")


def meets_target(rows: list[dict[str, Any]]) -> bool:
    """The warm ratios against GALLERY_RATIO and STATUS_RATIO, the warm large-outbox times against
    LIMIT_S, and no metadata file read by a warm request."""
    gallery = [r for r in rows if r["request"] == "GET /gallery"]
    status = [r for r in rows if r["request"] == "GET /api/status"
              and str(r["folders"]).endswith(f"outbox {SMALL_OUTBOX} clips")]  # the inbox's cost
    metrics = [r for r in rows if r["request"] == "GET /metrics"]
    if not gallery or not status or not metrics:
        return False
    no_reread = all(str(r["metadata read (cold / warm)"]).endswith("/ 0") for r in rows)
    return (no_reread and ratio(gallery[-1]) <= GALLERY_RATIO
            and all(float(r["warm ms"]) / 1000 < LIMIT_S for r in (gallery[-1], metrics[-1]))
            and max(ratio(r) for r in status) <= STATUS_RATIO)


def ratio(row: dict[str, Any]) -> float:
    return float(str(row["warm ratio"]).split("x")[0])


# The folders


def metadata(index: int, name: str, rel: str) -> dict[str, Any]:
    """What the daemon writes beside a clip (run/metadata.py, run/publish.py), with made-up values."""
    stamp = f"2026-11-{1 + index // 86400 % 28:02d}T{index // 3600 % 24:02d}:{index // 60 % 60:02d}:" \
            f"{index % 60:02d}+00:00"
    files = [f"{rel}{name}{suffix}" for suffix in (".mp4", ".jpg", ".json")]
    return {
        "job_id": f"{index:08x}-bench-{index * 7919 % 10**8:08d}",
        "input": {"path": f"{rel}{name}.png", "image": f"{name}.png", "sidecar": f"{name}.yaml",
                  "sha256": f"{index:064x}", "bytes": 812_345 + index, "width": 1024, "height": 576},
        "prompt": f"a {('red fox', 'grey cat', 'paper boat', 'city at night')[index % 4]} number {index}, "
                  "slow camera pan, golden hour, film grain",
        "negative_prompt": "blurry, low quality, watermark",
        "seed": 1000 + index,
        "backend": "i2vgen-xl",
        "model": "ali-vilab/i2vgen-xl",
        "parameters": {"prompt": "(above)", "negative_prompt": "(above)", "num_frames": 16, "fps": 8.0,
                       "resolution": "576p", "num_inference_steps": 50, "guidance_scale": 9.0,
                       "decode_chunk_size": 4, "seed": 1000 + index, "postprocess": ["web-720p"]},
        "requested": {"num_frames": 16, "postprocess": ["web-720p"]},
        "notes": [],
        "generation": {"frames": 16, "width": 1024, "height": 576, "dtype": "float16"},
        "timings_s": {"load": 0.412, "generate": 38.871, "postprocess": 2.304, "publish": 0.051},
        "versions": {"torch": "2.5.1", "diffusers": "0.31.0", "ffmpeg": "7.1"},
        "worker_id": f"gpu-{index % 3}",
        "claimed_at": stamp,
        "postprocess": {"presets": ["web-720p"], "outputs": [{"preset": "web-720p", "frames": 16}]},
        "name": name,
        "files": files,
        "published_at": stamp,
        "attempts": 1,
        "takeovers": [],
    }


def make_root(clips: int, jobs: int = 0, litter: int = 0) -> tuple[Path, Settings]:
    root = Path(tempfile.mkdtemp(prefix="i2v-bench-web-"))
    for name in FOLDERS:
        (root / name).mkdir()
    outbox, dummy = root / "outbox", os.urandom(256)
    for index in range(clips):
        folder = f"team{index % 4}"
        (outbox / folder).mkdir(exist_ok=True)
        name = f"clip{index:05d}"
        (outbox / folder / f"{name}.json").write_text(json.dumps(metadata(index, name, f"{folder}/")))
        for suffix in (".mp4", ".jpg"):
            (outbox / folder / f"{name}{suffix}").write_bytes(dummy)
    inbox, image = root / "inbox", tiny_png()
    for index in range(jobs):
        folder = inbox / f"shoot{index % 20:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"job{index:05d}.yaml").write_bytes(b"num_frames: 4\n")
        (folder / f"job{index:05d}.png").write_bytes(image)
    for index in range(litter):  # every name skipped by the default ignore_patterns
        folder = inbox / f"shoot{index % 20:02d}"
        folder.mkdir(exist_ok=True)
        name = f"._IMG_{index:05d}.jpg" if index % 2 else f"IMG_{index:05d}.jpg.tmp"
        (folder / name).write_bytes(b"litter")
    settings = Settings(**{name: str(root / name) for name in FOLDERS}, settle_s=0.0, sidecar_grace_s=0.0)
    return root, settings


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buffer, "PNG")
    return buffer.getvalue()


# The measurements


class Reads:
    """How many metadata files the gallery reads (its `Gallery._read`, wrapped while the benchmark runs)."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[Reads]:
        real = Gallery._read

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        Gallery._read = counted  # type: ignore[method-assign]
        try:
            yield self
        finally:
            Gallery._read = real  # type: ignore[method-assign]


def requests(settings: Settings, url: str, warm: int, pause: float, reads: Reads) \
        -> tuple[float, list[float], int, int]:
    """A new app's first request and `warm` more (`pause` seconds apart): seconds each, and the
    metadata files read by the first and by all the others."""
    with TestClient(create_app(settings)) as client:
        def timed() -> float:
            started = time.perf_counter()
            response = client.get(url)
            spent = time.perf_counter() - started
            assert response.status_code == 200, (url, response.status_code, response.text[:300])
            return spent

        before = reads.count
        cold = timed()
        cold_reads, before = reads.count - before, reads.count
        times = []
        for _ in range(warm):
            time.sleep(pause)
            times.append(timed())
        return cold, times, cold_reads, reads.count - before


def run(quick: bool = False) -> tuple[str, list[dict[str, object]]]:
    large = 1_000 if quick else 5_000
    jobs, litter = (50, 500) if quick else (200, 2_000)
    rounds, warm, warm_paused = (2, 5, 3) if quick else (3, 9, 5)
    pause = REFRESH_S + 0.1
    inboxes = {"empty": (0, 0), f"{litter:,} non-job files": (0, litter), f"{jobs} queued jobs": (jobs, 0),
               f"{jobs} queued jobs + {litter:,} non-job files": (jobs, litter)}
    roots: list[Path] = []
    logging_was = structlog.get_config()
    # The inbox logs each ignored name at debug level: not into the table printed on stdout.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    reads = Reads()
    try:
        outboxes = {}
        for clips in (SMALL_OUTBOX, large):
            root, outboxes[clips] = make_root(clips)
            roots.append(root)
        status = {}
        for label, (queued, files) in inboxes.items():
            root, status[label] = make_root(SMALL_OUTBOX, queued, files)
            roots.append(root)
        cases: list[tuple[str, str, Settings, int, float]] = []
        cases += [("GET /gallery", f"outbox {n:,} clips", s, warm, 0.0) for n, s in outboxes.items()]
        cases += [("GET /api/status", f"inbox {label}, outbox {SMALL_OUTBOX} clips", s, warm_paused, pause)
                  for label, s in status.items()]
        # The board's snapshot is kept for 0.5 s; the count of published clips walks the outbox each time.
        cases.append(("GET /api/status", f"inbox empty, outbox {large:,} clips", outboxes[large], warm_paused,
                      pause))
        cases += [("GET /metrics", f"outbox {n:,} clips, inbox empty", s, warm_paused, pause)
                  for n, s in outboxes.items()]
        found: dict[int, list[tuple[float, list[float], int, int]]] = {}
        with reads.counting():
            for _ in range(rounds):  # interleaved: a drift in the machine's load hits every case alike
                for index, (request, _, settings, n, wait) in enumerate(cases):
                    url = request.split()[1]
                    found.setdefault(index, []).append(requests(settings, url, n, wait, reads))
    finally:
        structlog.configure(**logging_was)
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)

    rows: list[dict[str, object]] = []
    small: dict[str, float] = {}
    for index, (request, folders, *_) in enumerate(cases):
        results = found[index]
        cold = statistics.median(r[0] for r in results)
        hot = statistics.median(t for r in results for t in r[1])
        small.setdefault(request, hot)  # the first case of each request is its small one
        cold_reads = max(r[2] for r in results)
        warm_reads = max(r[3] for r in results)
        rows.append({"request": request, "folders": folders, "cold ms": f"{cold * 1000:.1f}",
                     "warm ms": f"{hot * 1000:.1f}", "warm ratio": f"{hot / small[request]:.2f}x",
                     "metadata read (cold / warm)": f"{cold_reads} / {warm_reads}",
                     "n": f"{len(results)} cold, {sum(len(r[1]) for r in results)} warm"})
    return (f"{TITLE} (in-process TestClient, {os.cpu_count()} CPU cores, web_page_size "
            f"{Settings.model_fields['web_page_size'].default}, medians over {rounds} interleaved rounds; "
            f"warm ratio: against the first row of the same request)", rows)


def profile(quick: bool) -> str:
    """cProfile of 5 warm gallery pages over the large outbox: where a warm page's time goes. The
    handler is called in this thread (the TestClient runs the app in another, out of cProfile's sight),
    the first call warming the gallery's cache and the template."""
    import cProfile
    import pstats

    from starlette.requests import Request

    root, settings = make_root(1_000 if quick else 5_000)
    try:
        app = create_app(settings)
        handler = next(r.endpoint for r in app.routes if getattr(r, "path", None) == "/gallery")
        scope = {"type": "http", "method": "GET", "path": "/gallery", "query_string": b"", "headers": [],
                 "scheme": "http", "server": ("testserver", 80), "app": app, "router": app.router}
        handler(Request(scope))
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5):
            handler(Request(scope))
        profiler.disable()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    out.write("\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller outbox and inbox, fewer requests")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of 5 warm gallery pages over the large outbox")
    args = parser.parse_args(argv)
    from bench.report import table

    title, rows = run(quick=args.quick)
    print(f"{title}\n\n{table(rows)}\n\ntarget: {TARGET}: {'met' if meets_target(rows) else 'NOT met'}")
    if args.profile:
        print(profile(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
