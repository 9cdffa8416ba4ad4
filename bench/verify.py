"""Checking an output before it is published: the daemon's check (every packet read and parsed, the count,
the first keyframe decoded, any error fails) against the full decode it replaced (the decoded frame
count), side by side: what each catches on damaged copies of one clip, and what each costs.

    python bench/verify.py [--quick]

The clip is what the daemon makes of 16 model-like frames of 512x512 with vertical-1080x1920 (60 frames
of 1080x1920, H.264). Each damage is made on a copy of it, after the encoder finished, as a dying disk or
a killed writer would leave it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.postprocess import FPS, model_like_frames
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError, OutputInvalid
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.spec import JobDefaults, JobSpec, resolve
from i2v_watcher.media.chains import build_chains
from i2v_watcher.media.ffmpeg import FFmpeg, find_ffmpeg
from i2v_watcher.media.graph import postprocess
from i2v_watcher.media.process import run_ffmpeg
from i2v_watcher.media.verify import verify_video

TITLE = "Output check: what the daemon's check and a full decode catch, and what they cost"
TARGET = "the check catches every damage the full decode catches, and costs less"


def full_decode(binary: FFmpeg, path: Path, frames: int) -> None:
    """The check the daemon used before: decode every frame; fail on an ffmpeg error or a wrong count."""
    command = [binary.path, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-progress",
               "pipe:1", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"]
    lines: list[str] = []
    try:
        run_ffmpeg(command, b"", Checkpoint(), 60, progress=lines)
    except JobError as exc:
        raise OutputInvalid(exc.message) from exc
    counted = [int(line.split("=", 1)[1]) for line in lines if line.startswith("frame=")]
    if (counted[-1] if counted else 0) != frames:
        raise OutputInvalid(f"decodes to {counted[-1] if counted else 0} frames")


def daemon_check(binary: FFmpeg, path: Path, frames: int) -> None:
    verify_video(binary, path, frames, Checkpoint(), 60)


def mdat_start(path: Path) -> int:
    """Where the first frame's bytes begin: after the mdat box header (top-level boxes walked)."""
    data = path.read_bytes()
    offset = 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8]
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[offset + 8:offset + 16], "big"), 16
        if kind == b"mdat":
            return offset + header
        offset += size
    raise ValueError(f"{path} has no mdat box")


def overwrite(at: Callable[[int, int], int], data: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with open(path, "r+b") as handle:
            handle.seek(at(mdat_start(path), path.stat().st_size))
            handle.write(data)
    return damage


def truncate(at: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with open(path, "r+b") as handle:
            handle.truncate(at(path.stat().st_size))
    return damage


DAMAGES: dict[str, Callable[[Path], None]] = {
    "none (the clip as encoded)": lambda path: None,
    "cut to its first 2000 bytes": truncate(lambda size: 2000),
    "its last 300 bytes cut": truncate(lambda size: size - 300),
    "4 KB zeroed mid-file": overwrite(lambda start, size: size // 2, bytes(4096)),
    "3 KB of noise mid-file": overwrite(lambda start, size: size // 2, bytes(range(256)) * 12),
    "4 bytes changed in the keyframe": overwrite(lambda start, size: start + 3000, b"\x55" * 4),
    "8 bytes changed inside a later frame": overwrite(lambda start, size: size // 2 + 700, b"\xff" * 8),
}


def outcome(check: Callable[[FFmpeg, Path, int], None], binary: FFmpeg, path: Path, frames: int) -> str:
    try:
        check(binary, path, frames)
    except OutputInvalid:
        return "caught"
    return "passed"


def run(quick: bool = False, runs: int | None = None) -> tuple[str, list[dict[str, object]]]:
    runs = runs or (5 if quick else 15)
    binary = find_ffmpeg(None)[0]
    checks = {"full decode (before)": full_decode, "the daemon's check (now)": daemon_check}
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(**{n: str(root / n) for n in ("inbox", "outbox", "failed", "done", "work")})
        params = resolve(JobSpec(postprocess="vertical-1080x1920"), JobDefaults(), backend="preview", seed=1)
        outputs, info = postprocess(model_like_frames(settings), FPS, root / "out", binary,
                                    build_chains(settings, params), settings, Checkpoint())
        clip, frames = root / "out" / outputs[0].file, int(info["outputs"][0]["frames"])
        size = clip.stat().st_size
        for name, damage in DAMAGES.items():
            copy = root / "damaged.mp4"
            shutil.copyfile(clip, copy)
            damage(copy)
            rows.append({"damage": name, **{check: outcome(fn, binary, copy, frames)
                                            for check, fn in checks.items()}})
        times: dict[str, list[float]] = {name: [] for name in checks}
        for _ in range(runs):  # interleaved
            for name, check in checks.items():
                started = time.perf_counter()
                check(binary, clip, frames)
                times[name].append(time.perf_counter() - started)
    rows.append({"damage": f"seconds per check (median of {runs})",
                 **{name: f"{statistics.median(spent):.3f}" for name, spent in times.items()}})
    return f"{TITLE} ({frames} frames of 1080x1920, {size} bytes)", rows


def meets_target(rows: list[dict[str, object]]) -> bool:
    before, now = "full decode (before)", "the daemon's check (now)"
    damaged = rows[1:-1]
    catches_all = all(row[now] == "caught" for row in damaged if row[before] == "caught")
    clean = rows[0][before] == rows[0][now] == "passed"
    return catches_all and clean and float(str(rows[-1][now])) < float(str(rows[-1][before]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 timed runs instead of 15")
    args = parser.parse_args(argv)
    from bench.report import table

    title, rows = run(args.quick)
    print(f"{title}\n\n{table(rows)}\n\ntarget: {TARGET}: {'met' if meets_target(rows) else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
