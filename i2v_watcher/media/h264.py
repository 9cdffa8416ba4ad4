"""One picture through H.264 and back: the compression LTX-2 saw on the first frames it was trained with.

LTX-2's reference pipelines (and diffusers' LTX2ImageToVideoPipeline, with PyAV) re-encode the input image
as a one-frame H.264 video at a CRF before conditioning on it, so a clean still looks like the video frames
the model learned from. The ffmpeg every job already encodes with does the same here: no second copy of
ffmpeg's libraries (PyAV ships its own) for one picture a job."""

from __future__ import annotations

import subprocess

import numpy as np

from i2v_watcher.errors import JobError
from i2v_watcher.media.ffmpeg import child_env

TIMEOUT_S = 60.0  # one small picture: seconds at most, even on a busy host
HINT = "set backend_options.image_crf = 0 to condition on the image as it is"


def h264_roundtrip(pixels: np.ndarray, crf: int, ffmpeg: str) -> np.ndarray:
    """uint8 RGB (height, width, 3) → the same picture encoded as one H.264 frame at `crf` (yuv420p,
    libx264's veryfast preset, as the reference code does) and decoded again. Odd sides lose their last
    row or column (4:2:0 needs even ones)."""
    height, width = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2
    raw = np.ascontiguousarray(pixels[:height, :width, :3], dtype=np.uint8).tobytes()
    encode = [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
              "-s", f"{width}x{height}", "-r", "1", "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
              "-crf", str(crf), "-pix_fmt", "yuv420p", "-f", "h264", "-"]
    decode = [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "h264", "-i", "-", "-frames:v", "1",
              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    stream = _run(encode, raw)
    picture = _run(decode, stream)
    if len(picture) != len(raw):
        raise JobError(f"ffmpeg gave {len(picture)} bytes for a {width}x{height} picture re-encoded as H.264",
                       stage="generate", hint=HINT)
    return np.frombuffer(picture, dtype=np.uint8).reshape(height, width, 3).copy()


def _run(command: list[str], data: bytes) -> bytes:
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=TIMEOUT_S, check=True,
                              env=child_env())
    except subprocess.CalledProcessError as exc:
        tail = exc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise JobError(f"ffmpeg could not re-encode the input image as H.264: {tail}", stage="generate",
                       hint=HINT) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JobError(f"ffmpeg could not re-encode the input image as H.264: {exc}", stage="generate",
                       hint=HINT) from exc
    return done.stdout
