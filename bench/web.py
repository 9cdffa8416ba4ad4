"""What the web dashboard costs as the shared folders grow, side by side in one run:

- the first index of an outbox of 100 clips and of 100,000 (a new host's dashboard or `status`: one
  walk that reads every metadata file into the local catalog), in seconds of wall and CPU time;
- each request over both outboxes: the gallery's first page, a search (`/gallery?q=fox`, a quarter of
  the clips match), `/api/status` and `/metrics`; the first request of a new dashboard over an index
  already built (cold), the later ones (warm: nothing changed, 0.6 s apart, so each looks at the
  event logs again), and one right after a clip was published (its metadata written and its event
  appended: the index changed, so every count is computed again);
- `/api/status` over an inbox that holds a queue and NAS litter, against an empty inbox;
- an idle dashboard over the large outbox: a real `i2v-watcher web` process with one overview tab
  open (`/live` every second) and Prometheus scraping `/metrics` every 15 s, its CPU time over the
  window from /proc, plus its reconciling walk (every `catalog_rescan_s`) spread over that interval.

    python bench/web.py [--quick]

The requests run in this process: `starlette.testclient.TestClient(create_app(settings))` over
temporary folders, so the time is the dashboard's own (routing, the index, the template), not a
network's. The outbox is what the daemon publishes: per clip a metadata file (`<name>.json`, about
1.4 KB, with the keys the daemon writes) and its `.mp4` and `.jpg` (links to one small file: their
bytes are never read by a page), spread over 4 sub-folders. The inbox holds jobs as `submit` writes
them (an image and its sidecar) and litter that `ignore_patterns` skips (AppleDouble `._*` twins,
`*.tmp`), over 20 folders; settle_s is 0, so every job is ready at once and stays so. The cases run
in interleaved rounds, each round with a new app over the same index.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
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

from i2v_watcher.catalog import events  # noqa: E402
from i2v_watcher.catalog import index as catalog_index  # noqa: E402
from i2v_watcher.catalog.index import Catalog  # noqa: E402
from i2v_watcher.config.settings import Settings  # noqa: E402
from i2v_watcher.web.app import create_app  # noqa: E402
from i2v_watcher.web.board import REFRESH_S  # noqa: E402

FOLDERS = ("inbox", "outbox", "failed", "done", "work")
TITLE = "Web dashboard: cost per request as the folders grow"
SMALL_OUTBOX = 100
LARGE_OUTBOX = 100_000
REQUESTS = {"GET /gallery": "/gallery", "search": "/gallery?q=fox", "GET /api/status": "/api/status",
            "GET /metrics": "/metrics"}
RATIO = 2.0  # warm, over the large outbox against the small one, each request
INDEX_LIMIT_S = 60.0  # the first index of the large outbox, on this machine
IDLE_LIMIT = 1.0  # % of one core, an idle dashboard over the large outbox
STATUS_RATIO = 3.0  # a warm /api/status over the grown inbox against an empty one
TARGET = (f"warm, the gallery page, a search, /api/status and /metrics over the large outbox each cost at "
          f"most {RATIO:.0f}x the same request over {SMALL_OUTBOX} clips and read no metadata file; an "
          f"idle dashboard over it uses under {IDLE_LIMIT:.0f} % of a core; its first index takes under "
          f"{INDEX_LIMIT_S:.0f} s; a warm /api/status over the grown inbox costs at most "
          f"{STATUS_RATIO:.0f}x an empty inbox's")


def meets_target(rows: list[dict[str, Any]]) -> bool:
    """Each request's warm ratio (large outbox) against RATIO, no metadata file read by a request over
    a built index, the idle CPU against IDLE_LIMIT, the first index against INDEX_LIMIT_S, and the
    inbox rows against STATUS_RATIO."""
    by_outbox = [r for r in rows if r["request"] in REQUESTS and "inbox" not in str(r["folders"])]
    inbox = [r for r in rows if "inbox" in str(r["folders"])]
    index = [r for r in rows if r["request"] == "first index"]
    idle = [r for r in rows if r["request"] == "idle dashboard"]
    if len(by_outbox) != 2 * len(REQUESTS) or not inbox or not index or not idle:
        return False
    return (all(ratio(r) <= RATIO and str(r["metadata read"]) == "0" for r in by_outbox)
            and all(ratio(r) <= STATUS_RATIO for r in inbox)
            and float(str(index[-1]["cold ms"])) / 1000 < INDEX_LIMIT_S
            and float(str(idle[0]["CPU % of a core"])) < IDLE_LIMIT)


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
        "quality": quality(index),
    }


def quality(index: int) -> dict[str, Any]:
    """The quality gate's record (run/gate.py) as every clip has it: one in 4 with a symptom."""
    symptoms = [("no_motion", "flicker", "drift", "blur")[index // 4 % 4]] if index % 4 == 3 else []
    scores = {"motion": 0.7, "frozen": 0.0, "flicker": 0.12, "black": 0.0, "drift": 0.02, "sharpness": 0.9}
    return {"scores": scores, "symptoms": symptoms, "verdict": "warn" if symptoms else "pass",
            "details": {"working_size": [256, 144], "motion_threshold_px": 2.0},
            "attempts": [{"seed": 1000 + index, "changes": {}, "scores": scores, "symptoms": symptoms,
                          "verdict": "warn" if symptoms else "pass"}]}


def make_root(clips: int, jobs: int = 0, litter: int = 0) -> tuple[Path, Settings]:
    root = Path(tempfile.mkdtemp(prefix="i2v-bench-web-"))
    for name in FOLDERS:
        (root / name).mkdir()
    dummy = root / "dummy"
    dummy.write_bytes(os.urandom(256))
    for index in range(clips):
        add_clip(root / "outbox", index, dummy)
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
    settings = Settings(**{name: str(root / name) for name in FOLDERS}, settle_s=0.0, sidecar_grace_s=0.0,
                        catalog_path=str(root / "catalog.sqlite"))
    return root, settings


def add_clip(outbox: Path, index: int, dummy: Path) -> str:
    """A clip as the daemon publishes it (the metadata written last); its metadata file, relative."""
    folder = f"team{index % 4}"
    (outbox / folder).mkdir(exist_ok=True)
    name = f"clip{index:06d}"
    source = dummy.with_name(f"{dummy.name}{index // 20_000}")  # a file has at most 65,000 links
    if not source.exists():
        shutil.copyfile(dummy, source)
    for suffix in (".mp4", ".jpg"):
        os.link(source, outbox / folder / f"{name}{suffix}")
    (outbox / folder / f"{name}.json").write_text(json.dumps(metadata(index, name, f"{folder}/")))
    return f"{folder}/{name}.json"


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buffer, "PNG")
    return buffer.getvalue()


# The measurements


class Reads:
    """How many metadata files the catalog reads (catalog.index's read_metadata, wrapped while the
    benchmark runs)."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[Reads]:
        real = getattr(catalog_index, "read_metadata")  # noqa: B009

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        setattr(catalog_index, "read_metadata", counted)  # noqa: B010 (not exported: mypy)
        try:
            yield self
        finally:
            setattr(catalog_index, "read_metadata", real)  # noqa: B010


def first_index(settings: Settings) -> tuple[float, float]:
    """Wall and CPU seconds of a new catalog's first walk of the outbox (the index file removed)."""
    assert settings.catalog_path is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.catalog_path}{suffix}").unlink(missing_ok=True)
    catalog = Catalog(settings)
    wall, cpu = time.perf_counter(), time.process_time()
    catalog.reconcile()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    catalog.close()
    return wall, cpu


class Publisher:
    """Publishes one more clip into an outbox as a worker does: its files, then an event in the log."""

    def __init__(self, root: Path, settings: Settings, first: int) -> None:
        self.root, self.settings, self.next = root, settings, first

    def __call__(self) -> None:
        rel = add_clip(self.settings.outbox, self.next, self.root / "dummy")
        self.next += 1
        events.append(self.settings, "published", writer="bench", path=rel)


def requests(settings: Settings, url: str, warm: int, after: int, pause: float, reads: Reads,
             publish: Publisher) -> tuple[float, list[float], list[float], int]:
    """A new app's first request, `warm` more and `after` more each right after a publish (`pause`
    seconds apart): seconds each, and the metadata files read by all but those after a publish."""
    # web_listen's default: the Host it answers to
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8080") as client:
        def timed() -> float:
            started = time.perf_counter()
            response = client.get(url)
            spent = time.perf_counter() - started
            assert response.status_code == 200, (url, response.status_code, response.text[:300])
            return spent

        before = reads.count
        cold = timed()
        times, published = [], []
        for _ in range(warm):
            time.sleep(pause)
            times.append(timed())
        read = reads.count - before
        for _ in range(after):
            time.sleep(pause)
            publish()
            published.append(timed())
        return cold, times, published, read


def idle_cpu(settings: Settings, seconds: float) -> tuple[float, float]:
    """An idle dashboard: a real `web` process over an index already built, one overview tab polling
    `/live` every second over a kept-alive connection, as a browser does, and a scrape of `/metrics`
    every 15 s: its CPU seconds over `seconds` of
    wall time (from /proc, after a warm-up), and the CPU seconds of one reconciling walk (nothing
    changed), which it makes every catalog_rescan_s."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Path(str(settings.catalog_path)).with_name("web.toml")
    config.write_text("".join(f'{k} = "{getattr(settings, k)}"\n' for k in (*FOLDERS, "catalog_path"))
                      + 'log_format = "json"\nlog_level = "warning"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    env.update(I2V_WEB_LISTEN=f"127.0.0.1:{port}", PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, "-m", "i2v_watcher", "web", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    try:
        connection = [http.client.HTTPConnection("127.0.0.1", port, timeout=30)]

        def get(path: str) -> None:
            """As a browser tab asks: over one kept-alive connection, opened again when it is closed."""
            for attempt in (1, 2):
                try:
                    connection[0].request("GET", path)
                    response = connection[0].getresponse()
                    response.read()
                    if response.status != 200:
                        raise OSError(f"{path}: {response.status}")
                    return
                except (OSError, http.client.HTTPException):
                    connection[0].close()
                    connection[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    if attempt == 2:
                        raise

        deadline = time.monotonic() + 60
        while True:
            try:
                get("/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the web process did not start") from None
                time.sleep(0.2)
        for path in ("/", "/live", "/metrics"):  # warm-up: the templates, the index opened
            get(path)
        ticks = os.sysconf("SC_CLK_TCK")
        start_cpu, started, tick = cpu_ticks(server.pid), time.monotonic(), 0
        while time.monotonic() - started < seconds:
            get("/live")
            if tick % 15 == 0:
                get("/metrics")
            tick += 1
            time.sleep(max(0.0, started + tick - time.monotonic()))
        cpu = (cpu_ticks(server.pid) - start_cpu) / ticks
        wall = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    catalog = Catalog(settings)
    walk = time.process_time()
    catalog.reconcile()
    walk = time.process_time() - walk
    catalog.close()
    return cpu / wall, walk


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(quick: bool = False) -> tuple[str, list[dict[str, object]]]:
    large = 2_000 if quick else LARGE_OUTBOX
    jobs, litter = (50, 500) if quick else (200, 2_000)
    rounds, warm, after, idle_s = (2, 4, 2, 8.0) if quick else (3, 7, 3, 60.0)
    pause = REFRESH_S + 0.1
    inboxes = {"empty": (0, 0), f"{jobs} queued jobs + {litter:,} non-job files": (jobs, litter)}
    roots: list[Path] = []
    logging_was = structlog.get_config()
    # The inbox logs each ignored name at debug level: not into the table printed on stdout.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    reads = Reads()
    rows: list[dict[str, object]] = []
    try:
        outboxes: dict[int, tuple[Path, Settings]] = {}
        for clips in (SMALL_OUTBOX, large):
            outboxes[clips] = make_root(clips)
            roots.append(outboxes[clips][0])
        for clips, (_, settings) in outboxes.items():
            wall, cpu = first_index(settings)
            rows.append({"request": "first index", "folders": f"outbox {clips:,} clips",
                         "cold ms": f"{wall * 1000:.0f}", "warm ms": f"CPU {cpu * 1000:.0f}",
                         "warm ratio": "",
                         "after a publish ms": "", "metadata read": clips, "n": "1"})
        status = {}
        for label, (queued, files) in inboxes.items():
            root, status[label] = make_root(SMALL_OUTBOX, queued, files)
            roots.append(root)
            first_index(status[label])
        publishers = {id(s): Publisher(root, s, 10**7) for root, s in [*outboxes.values(),
                      *((r, s) for r, s in zip(roots[2:], status.values(), strict=True))]}
        cases: list[tuple[str, str, Settings, int]] = []
        for request in REQUESTS:
            cases += [(request, f"outbox {n:,} clips", s, after) for n, (_, s) in outboxes.items()]
        cases += [("GET /api/status", f"inbox {label}, outbox {SMALL_OUTBOX} clips", s, 0)
                  for label, s in status.items()]
        found: dict[int, list[tuple[float, list[float], list[float], int]]] = {}
        with reads.counting():
            for _ in range(rounds):  # interleaved: a drift in the machine's load hits every case alike
                for index, (request, _, settings, n_after) in enumerate(cases):
                    found.setdefault(index, []).append(requests(
                        settings, REQUESTS[request], warm, n_after, pause, reads, publishers[id(settings)]))
        small: dict[str, float] = {}
        for index, (request, folders, _, _) in enumerate(cases):
            results = found[index]
            hot = statistics.median(t for r in results for t in r[1])
            key = request + ("/inbox" if "inbox" in folders else "")
            small.setdefault(key, hot)  # the first case of each request is its small one
            published = [t for r in results for t in r[2]]
            rows.append({"request": request, "folders": folders,
                         "cold ms": f"{statistics.median(r[0] for r in results) * 1000:.1f}",
                         "warm ms": f"{hot * 1000:.1f}", "warm ratio": f"{hot / small[key]:.2f}x",
                         "after a publish ms": f"{statistics.median(published) * 1000:.1f}" if published
                         else "", "metadata read": max(r[3] for r in results),
                         "n": f"{len(results)} cold, {sum(len(r[1]) for r in results)} warm, "
                              f"{len(published)} after"})
        busy, walk = idle_cpu(outboxes[large][1], idle_s)
        rescan = Settings.model_fields["catalog_rescan_s"].default
        rows.append({"request": "idle dashboard", "folders": f"outbox {large:,} clips",
                     "cold ms": "", "warm ms": "", "warm ratio": "", "after a publish ms": "",
                     "metadata read": "", "n": f"{idle_s:.0f} s",
                     "CPU % of a core": f"{100 * (busy + walk / rescan):.2f}",
                     "how": f"/live every 1 s + /metrics every 15 s: {100 * busy:.2f} %; a reconciling walk "
                            f"({walk:.2f} CPU s) every {rescan:.0f} s: {100 * walk / rescan:.2f} %"})
    finally:
        structlog.configure(**logging_was)
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    return (f"{TITLE} (in-process TestClient, {os.cpu_count()} CPU cores, web_page_size "
            f"{Settings.model_fields['web_page_size'].default}, medians over {rounds} interleaved rounds; "
            f"warm ratio: against the same request over {SMALL_OUTBOX} clips)", rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller outbox and inbox, fewer requests")
    args = parser.parse_args(argv)
    from bench.report import table

    title, rows = run(quick=args.quick)
    print(f"{title}\n\n{table(rows)}\n\ntarget: {TARGET}: {'met' if meets_target(rows) else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
