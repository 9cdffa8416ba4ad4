"""Find the ffmpeg binary (setting, PATH, then the one imageio-ffmpeg ships), learn what it can do, and
read what it says while it encodes."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from i2v_watcher.errors import StartupError
from i2v_watcher.logs import ProgressLog

HINT = ("install one: `pip install imageio-ffmpeg` (ships a static ffmpeg), or `apt-get install ffmpeg`, "
        "or set ffmpeg_path in the config")
REQUIRED_ENCODERS = ("libx264",)


@dataclass(frozen=True)
class FFmpeg:
    path: str
    version: str
    encoders: frozenset[str]
    filters: frozenset[str]


def child_env() -> dict[str, str]:
    """The environment for ffmpeg: without systemd's notify/watchdog variables, which are ours alone."""
    return {k: v for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "I2V_CRASH_AT")}


def _candidate(configured: Path | None) -> tuple[str, str]:
    if configured is not None:
        if not os.access(configured, os.X_OK) or configured.is_dir():
            raise StartupError(f"ffmpeg_path {configured} is not an executable file; {HINT}")
        return str(configured), "ffmpeg_path setting"
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path, "PATH"
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe()), "imageio-ffmpeg"
    except (ImportError, RuntimeError) as exc:
        raise StartupError(f"no ffmpeg found (not on PATH, imageio-ffmpeg: {exc}); {HINT}") from exc


def find_ffmpeg(configured: Path | None) -> tuple[FFmpeg, str]:
    """The usable ffmpeg and where it came from; a StartupError with a hint when there is none."""
    path, origin = _candidate(configured)

    def ask(*args: str) -> str:
        try:
            return subprocess.run([path, "-hide_banner", *args], capture_output=True, text=True,
                                  timeout=30, check=True, env=child_env()).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise StartupError(f"ffmpeg at {path} ({origin}) does not run: {exc}; {HINT}") from exc

    version = (ask("-version").splitlines() or ["unknown"])[0]
    encoders = frozenset(
        line.split()[1] for line in ask("-encoders").splitlines()
        if len(line.split()) > 1 and len(line.split()[0]) == 6 and line.split()[0][0] in "VAS"
    )
    filters = frozenset(
        line.split()[1] for line in ask("-filters").splitlines()
        if len(line.split()) > 2 and "->" in line.split()[2])
    missing = [name for name in REQUIRED_ENCODERS if name not in encoders]
    if missing:
        raise StartupError(f"ffmpeg at {path} ({origin}) lacks the encoder(s) {', '.join(missing)}; {HINT}")
    return FFmpeg(path=path, version=version, encoders=encoders, filters=filters), origin


class EncodeProgress:
    """ffmpeg's `-progress` blocks (`frame=`, `fps=`, `speed=`, … ending in `progress=continue` or
    `progress=end`) as `encoding` log lines like generation's `progress` lines: at most one every
    `interval_s` (progress_log_s), and the last one."""

    def __init__(self, frames: int, interval_s: float) -> None:
        self.frames = frames
        self._log = ProgressLog("postprocess", interval_s, event="encoding")

    def __call__(self, block: Mapping[str, str]) -> None:
        frame, last = _number(block.get("frame")), block.get("progress") == "end"
        if frame is None or not (frame or last):  # nothing encoded yet: not worth a line
            return
        more = {key: value for key, value in (("fps", _number(block.get("fps"))),
                                              ("speed", _number(block.get("speed", "").rstrip("x"))))
                if value}  # "N/A" or 0 at the start, 0 fps for a short encode
        self._log(int(frame), self.frames, last=last, **more)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None
