"""A clip's soundtrack on its way to ffmpeg: the sound a model generates with its frames (LTX-2) is kept
as a WAV file in the job's work folder, from generation until the job is done, and ffmpeg reads it as a
second input beside the frames on stdin. A restart that resumes an encode finds it there; the frames'
resume copy is in the scratch folder (work.store.Scratch)."""

from __future__ import annotations

import numbers
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from i2v_watcher.fs.atomic import write_durably

PCM_MAX = 32767  # 16-bit PCM: what AAC at 128 kb/s gets, with room to spare
CHANNELS = {"mono": 1, "stereo": 2}  # ffmpeg's names of the layouts a soundtrack may have
MAX_CHANNELS = 2
RATES = (8000, 192000)  # sample rates a soundtrack may have (ffmpeg resamples to what its codec takes)


@dataclass(frozen=True)
class Soundtrack:
    """A job's sound as the encode reads it: its WAV file and what the model made."""

    path: Path
    rate: int
    channels: int
    duration_s: float

    def record(self) -> dict[str, Any]:
        """For the metadata: what the source clip's sound is."""
        return {"rate": self.rate, "channels": self.channels, "duration_s": round(self.duration_s, 3)}


def audio_problem(samples: object, rate: object) -> str | None:
    """What is wrong with a backend's sound, in words; None when it can be encoded. Audio promises
    float32 at an int rate; float64 samples and a NumPy integer rate (what a pipeline's tensors give)
    are taken as well."""
    if not isinstance(samples, np.ndarray) or samples.dtype.kind != "f" or samples.ndim != 2:
        shape = getattr(samples, "shape", None), getattr(samples, "dtype", type(samples).__name__)
        return f"the backend returned sound of shape and type {shape}, not (channels, samples) float32"
    if not 1 <= samples.shape[0] <= MAX_CHANNELS or samples.shape[1] < 1:
        return f"the backend returned sound of {samples.shape[0]} channels and {samples.shape[1]} samples, " \
               f"not 1 to {MAX_CHANNELS} channels of at least one sample"
    if not isinstance(rate, numbers.Integral) or not RATES[0] <= int(rate) <= RATES[1]:
        return f"the backend returned sound at {rate!r} samples a second, not {RATES[0]} to {RATES[1]}"
    if not np.isfinite(samples).all():
        return "the backend returned sound with samples that are not numbers (NaN or infinite)"
    return None


def write_wav(target: Path, samples: np.ndarray, rate: int) -> Soundtrack:
    """The sound as 16-bit PCM WAV (samples clipped to [-1, 1]), whole or absent after a crash."""
    pcm = (np.clip(samples, -1.0, 1.0) * PCM_MAX).round().astype("<i2").T  # interleaved: frame by frame

    def fill(handle: Any) -> None:
        with wave.open(handle, "wb") as wav:
            wav.setnchannels(samples.shape[0])
            wav.setsampwidth(2)
            wav.setframerate(int(rate))
            wav.writeframes(np.ascontiguousarray(pcm).tobytes())

    write_durably(target, fill)
    return Soundtrack(target, int(rate), int(samples.shape[0]), samples.shape[1] / rate)


def read_soundtrack(path: Path) -> Soundtrack | None:
    """The soundtrack kept at `path`; None when it is missing or not a whole WAV file."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, count = wav.getframerate(), wav.getnchannels(), wav.getnframes()
    except (OSError, EOFError, wave.Error):
        return None
    if rate <= 0 or count <= 0 or path.stat().st_size < 44 + count * channels * 2:
        return None
    return Soundtrack(path, rate, channels, count / rate)
