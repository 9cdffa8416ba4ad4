"""Post-process: frames → H.264/yuv420p MP4 (one encode, raw RGB piped into ffmpeg) and a poster JPEG.

The outputs are written into the job's out/ folder under fixed names, so no user-chosen name ever
reaches an ffmpeg command line; publishing gives them their public names.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python
from PIL import Image

from i2v_watcher.backends import Frames
from i2v_watcher.cancel import Cancel
from i2v_watcher.config import EncodeSettings
from i2v_watcher.errors import JobError
from i2v_watcher.ffmpeg import FFmpeg, child_env

STDERR_LINES = 20


@dataclass(frozen=True)
class Output:
    """A staged file in the job's out/ folder and the suffix it gets in the outbox."""

    file: str
    suffix: str


def encode_command(frames: Frames, target: Path, binary: FFmpeg, encode: EncodeSettings) -> list[str]:
    stream = ffmpeg_python.input(
        "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{frames.width}x{frames.height}",
        framerate=frames.fps,
    ).output(
        str(target), vcodec="libx264", pix_fmt="yuv420p", crf=encode.crf, preset=encode.preset,
        movflags="+faststart", f="mp4",
    ).global_args("-nostdin", "-hide_banner", "-loglevel", "error").overwrite_output()
    return list(ffmpeg_python.compile(stream, cmd=binary.path))


def run_ffmpeg(command: list[str], stdin: bytes, cancel: Cancel) -> None:
    """Run ffmpeg with the frames on stdin; stop it when the daemon aborts; its stderr on failure."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=child_env())
    payload: bytes | None = stdin
    try:
        while True:
            try:
                _, stderr = process.communicate(payload, timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                payload = None  # communicate() keeps feeding what it had not written yet
                cancel.check()
    except BaseException:
        process.kill()
        process.wait()
        raise
    if process.returncode != 0:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-STDERR_LINES:]
        raise JobError(
            f"ffmpeg failed with exit code {process.returncode}: " + (" | ".join(tail) or "(no output)"),
            stage="postprocess", hint="command: " + " ".join(command))


def postprocess(frames: Frames, out_dir: Path, binary: FFmpeg, encode: EncodeSettings,
                cancel: Cancel) -> tuple[list[Output], dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    clip = out_dir / "clip.mp4"
    command = encode_command(frames, clip, binary, encode)
    run_ffmpeg(command, frames.pixels.tobytes(), cancel)
    poster = out_dir / "poster.jpg"
    Image.fromarray(frames.pixels[0]).save(poster, "JPEG", quality=encode.poster_quality)
    info: dict[str, Any] = {
        "preset": "default", "ffmpeg_command": command, "ffmpeg_version": binary.version,
        "video": {"codec": "h264", "pix_fmt": "yuv420p", "width": frames.width, "height": frames.height,
                  "frames": frames.count, "fps": frames.fps, "crf": encode.crf, "preset": encode.preset},
        "poster": {"frame": 0},
    }
    return [Output("clip.mp4", ".mp4"), Output("poster.jpg", ".jpg")], info
