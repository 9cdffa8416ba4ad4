"""How fast the daemon notices work, and what a full inbox costs each job: the time from a job landing in
the inbox to its claim (inotify and polling, an empty inbox and one holding non-job files), and the time
per job with a backlog queued against a short queue, side by side in one run, with the daemon's peak
memory.

    python bench/latency.py [--quick]

A job lands as `i2v-watcher submit` writes it: the sidecar, then the image, each under a hidden
temporary name renamed into place. Latency is the daemon's own `claimed` log timestamp minus the clock
read just after the image's rename (one machine, one clock). The non-job files are NAS litter that
`ignore_patterns` skips (AppleDouble `._*` twins, `*.tmp`), spread over 20 folders. Per-job time is the
interval between consecutive claims over the first jobs of the queue (the queue stays long while it is
measured), and the CPU seconds the daemon process itself spent per job (its ffmpeg children not
counted): on a shared machine the CPU figure is the steadier one, and scanning is CPU in the daemon.
Jobs are tiny: the preview backend, 64p, 4 frames, the default preset. settle_s is 0.2 s, so that the
daemon's own reaction is what is measured; polling runs at poll_interval_s = 0.5 s. The cases run in
interleaved rounds. The last rows time one `Inbox.scan()` in this process over the backlog and the
litter: the first scan, a full walk again, and a scan narrowed to the watcher's news with nothing
changed (where the inbox supports it).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import itertools
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this tree's i2v_watcher for the in-process rows

import structlog  # noqa: E402

from conftest import daemon_env, make_image, write_toml  # noqa: E402

FOLDERS = ("inbox", "outbox", "failed", "done", "work")
SETTLE_S = 0.2
POLL_S = 0.5
TITLE = "Inbox latency and backlog cost"
TARGET = ("a long queue or 10,000 non-job files cost each job at most 1.5x the daemon CPU of a short "
          "queue, and slow the claim of a new job by at most 1.5x")
LIMIT = 1.5


def meets_target(rows: list[dict[str, Any]]) -> bool:
    """The ratios in the rows against LIMIT: CPU per job (wall time on a shared machine is noise), and
    landing-to-claim latency with the litter against an empty inbox."""
    ratios = []
    for row in rows:
        ratio = str(row.get("ratio", ""))
        if row.get("measure") == "wall per job":
            ratios.append(float(ratio.split(", ")[1].split("x")[0]))
        elif row.get("measure") == "landing to claim":
            ratios.append(float(ratio.split("x")[0]))
    return bool(ratios) and max(ratios) <= LIMIT


class DaemonRun:
    """`i2v-watcher run` as a subprocess: its JSON log lines as they come (with their own timestamps),
    and its peak resident memory (VmHWM) sampled from /proc until it exits."""

    def __init__(self, config: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "i2v_watcher", "run", "--config", str(config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=daemon_env(), cwd=REPO)
        self.events: list[dict[str, Any]] = []
        self.peak_kib = 0
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                if event.get("event") == "claimed":
                    event["daemon_cpu_s"] = self.cpu_s()  # the daemon's own, not its ffmpeg children's
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.process.pid}/status")
        while self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            time.sleep(0.1)

    def cpu_s(self) -> float:
        """User + system seconds of the daemon process itself so far (0 once it is gone)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_for(self, event: str, timeout: float = 120, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for found in self.events[seen:]:
                    if found.get("event") == event and all(found.get(k) == v for k, v in fields.items()):
                        return found
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise RuntimeError(f"no {event!r} {fields} from the daemon; last lines:\n"
                                       + "\n".join(json.dumps(e) for e in self.events[-15:]))
                self._cond.wait(min(left, 0.5))

    def count(self, event: str) -> int:
        with self._cond:
            return sum(e.get("event") == event for e in self.events)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)

    @property
    def peak_mib(self) -> float:
        return round(self.peak_kib / 1024, 1)


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def make_root(mode: str, litter: int) -> tuple[Path, Path]:
    root = Path(tempfile.mkdtemp(prefix="i2v-bench-latency-"))
    settings: dict[str, Any] = {name: str(root / name) for name in FOLDERS}
    settings.update(watch_mode=mode, poll_interval_s=POLL_S, settle_s=SETTLE_S, sidecar_grace_s=SETTLE_S,
                    log_format="json", worker_id="bench",
                    defaults={"num_frames": 4, "resolution": "64p", "fps": 8.0})
    (root / "inbox").mkdir()
    config = root / "i2v.toml"
    write_toml(config, settings)
    for index in range(litter):  # every name skipped by the default ignore_patterns
        folder = root / "inbox" / f"shoot{index % 20:02d}"
        folder.mkdir(exist_ok=True)
        name = f"._IMG_{index:05d}.jpg" if index % 2 else f"IMG_{index:05d}.jpg.tmp"
        (folder / name).write_bytes(b"litter")
    return root, config


def land(inbox: Path, name: str, image: bytes) -> float:
    """One job as `submit` writes it: the sidecar, then the image, each complete under a hidden name
    and renamed in. The clock is read right after the image's rename: the job exists from then on."""
    for suffix, data in ((".yaml", b"num_frames: 4\n"), (".png", image)):
        temp = inbox / f".{name}{suffix}.bench.part"
        temp.write_bytes(data)
        os.rename(temp, inbox / f"{name}{suffix}")
    return time.time()


def tiny_png(root: Path) -> bytes:
    path = make_image(root / "tiny.png", (64, 48))
    data = path.read_bytes()
    path.unlink()
    return data


def latency(mode: str, litter: int, landings: int) -> dict[str, Any]:
    root, config = make_root(mode, litter)
    image = tiny_png(root)
    daemon = DaemonRun(config)
    try:
        daemon.wait_for("watching")
        time.sleep(0.5)  # the first scan, and the observer's first snapshot, are done
        waits = []
        for index in range(landings):
            landed = land(root / "inbox", f"job{index:03d}", image)
            claimed = daemon.wait_for("claimed", job=f"job{index:03d}")
            waits.append(stamp(claimed) - landed)
            daemon.wait_for("published", job=f"job{index:03d}")
            time.sleep(0.3)  # idle again: the next job lands on a waiting daemon
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {"seconds": statistics.median(waits), "peak": daemon.peak_mib, "n": landings}


def per_job(queued: int, litter: int, measured: int) -> dict[str, Any]:
    """Claim-to-claim interval over the first `measured` jobs of a queue of `queued`."""
    root, config = make_root("inotify", litter)
    image = tiny_png(root)
    for index in range(queued):
        (root / "inbox" / f"job{index:05d}.yaml").write_bytes(b"num_frames: 4\n")
        (root / "inbox" / f"job{index:05d}.png").write_bytes(image)
    daemon = DaemonRun(config)
    try:
        deadline = time.monotonic() + 600
        while daemon.count("published") <= measured and daemon.process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    claims: dict[str, tuple[float, float]] = {}
    works = []
    for event in daemon.events:
        if event.get("event") == "claimed":
            claims[event["job"]] = (stamp(event), event["daemon_cpu_s"])
        elif event.get("event") == "published" and event.get("job") in claims:
            works.append(stamp(event) - claims[event["job"]][0])
    points = sorted(claims.values())[: measured + 1]
    intervals = [b[0] - a[0] for a, b in itertools.pairwise(points)]
    return {"seconds": statistics.median(intervals), "work": statistics.median(works[:measured]),
            "cpu": (points[-1][1] - points[0][1]) / (len(points) - 1), "peak": daemon.peak_mib,
            "n": len(intervals)}


def scan_costs(jobs: int, litter: int, repeat: int) -> dict[str, float | None]:
    """One `Inbox.scan()` in this process: the first (everything new), a repeated full walk, and one
    narrowed to the watcher's news (nothing changed) where the inbox supports it."""
    from i2v_watcher.config.settings import Settings
    from i2v_watcher.inbox.watch import Inbox

    root, _ = make_root("inotify", litter)
    logging_was = structlog.get_config()
    # The inbox logs each ignored name at debug level: not into the table printed on stdout.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        image = tiny_png(root)
        for index in range(jobs):
            folder = root / "inbox" / f"shoot{index % 20:02d}"
            folder.mkdir(exist_ok=True)
            (folder / f"job{index:05d}.yaml").write_bytes(b"num_frames: 4\n")
            (folder / f"job{index:05d}.png").write_bytes(image)
        inbox = Inbox(Settings(**{n: str(root / n) for n in FOLDERS}, settle_s=0.0, sidecar_grace_s=0.0))

        def timed(*args: Any) -> float:
            started = time.perf_counter()
            assert len(inbox.scan(*args).ready) == jobs
            return time.perf_counter() - started

        first = timed()
        full = statistics.median(timed() for _ in range(repeat))
        narrowed = statistics.median(timed(set()) for _ in range(4 * repeat)) \
            if "changes" in inspect.signature(inbox.scan).parameters else None
    finally:
        structlog.configure(**logging_was)
        shutil.rmtree(root, ignore_errors=True)
    return {"first": first, "full": full, "narrowed": narrowed}


def run(quick: bool = False) -> tuple[str, list[dict[str, object]]]:
    litter = 2_000 if quick else 10_000
    backlog, short = (200, 10) if quick else (2_000, 20)
    landings, measured, rounds = (2, 6, 1) if quick else (6, 30, 3)
    waits: dict[tuple[str, int], list[dict[str, Any]]] = {}
    jobs: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for _ in range(rounds):  # interleaved: a drift in the machine's load hits every case alike
        for mode in ("inotify", "poll"):
            for files in (0, litter):
                waits.setdefault((mode, files), []).append(latency(mode, files, landings))
        for queued, files in ((short, 0), (backlog, 0), (short, litter)):
            jobs.setdefault((queued, files), []).append(per_job(queued, files, min(measured, queued - 1)))

    def median(results: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in results)

    rows: list[dict[str, object]] = []
    for mode in ("inotify", "poll"):
        empty = median(waits[mode, 0], "seconds")
        for files, inbox in ((0, "empty"), (litter, f"{litter:,} non-job files")):
            found = waits[mode, files]
            rows.append({"measure": "landing to claim", "watch": mode, "inbox": inbox,
                         "seconds": round(median(found, "seconds"), 3), "daemon CPU s/job": "",
                         "ratio": f"{median(found, 'seconds') / empty:.2f}x vs empty",
                         "peak RSS MiB": max(r["peak"] for r in found), "n": sum(r["n"] for r in found)})
    base = jobs[short, 0]
    for (queued, files), label in (((short, 0), f"{short} jobs queued"),
                                   ((backlog, 0), f"{backlog:,} jobs queued"),
                                   ((short, litter), f"{short} jobs + {litter:,} non-job files")):
        found = jobs[queued, files]
        rows.append({"measure": "wall per job", "watch": "inotify", "inbox": label,
                     "seconds": round(median(found, "seconds"), 3),
                     "daemon CPU s/job": round(median(found, "cpu"), 3),
                     "ratio": f"{median(found, 'seconds') / median(base, 'seconds'):.2f}x wall, "
                              f"{median(found, 'cpu') / median(base, 'cpu'):.2f}x CPU vs {short} queued",
                     "peak RSS MiB": max(r["peak"] for r in found), "n": sum(r["n"] for r in found)})
    costs = scan_costs(backlog, litter, 3 if quick else 5)
    label = f"{backlog:,} jobs + {litter:,} non-job files"
    for name, seconds in (("first scan", costs["first"]), ("full walk again", costs["full"]),
                          ("narrowed to events", costs["narrowed"])):
        rows.append({"measure": f"one scan, in-process: {name}", "watch": "", "inbox": label,
                     "seconds": "n/a" if seconds is None else round(seconds, 4), "daemon CPU s/job": "",
                     "ratio": "" if seconds is None else f"{seconds / costs['first']:.3f}x vs first scan",
                     "peak RSS MiB": "", "n": ""})
    return (f"{TITLE} ({os.cpu_count()} CPU cores, settle_s {SETTLE_S}, medians of {rounds} interleaved "
            f"round{'s' if rounds > 1 else ''})", rows)


def markdown(title: str, rows: list[dict[str, object]]) -> str:
    columns = list(rows[0]) if rows else []
    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smaller inboxes and fewer jobs (under a minute)")
    args = parser.parse_args(argv)
    title, rows = run(quick=args.quick)
    print(markdown(title, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
