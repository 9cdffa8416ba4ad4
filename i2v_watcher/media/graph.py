"""The ffmpeg graph of a job's post-processing: the generated frames, piped once into one ffmpeg run that
feeds every requested preset (split, each branch through its filter steps into its one encode), plus the
poster JPEG; then every output is checked.

Outputs are written into the job's out/ folder under fixed names, so no user-chosen name ever reaches
an ffmpeg command line; publishing gives them their public names.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python
import numpy as np
from PIL import Image

from i2v_watcher.config.settings import Settings
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.media.chains import Chain
from i2v_watcher.media.cost import encode_limit_s
from i2v_watcher.media.ffmpeg import EncodeProgress, FFmpeg
from i2v_watcher.media.process import run_ffmpeg
from i2v_watcher.media.verify import verify_still, verify_video
from i2v_watcher.steps import Clip, OutputStep, dump_step


@dataclass(frozen=True)
class Output:
    """A staged file in the job's out/ folder and the suffix it gets in the outbox."""

    file: str
    suffix: str


def graph(pixels: np.ndarray, fps: float, out_dir: Path, chains: list[Chain]) \
        -> tuple[Any, list[Output], list[dict[str, Any]]]:
    """The ffmpeg-python graph: one raw input, split once per preset, one output per preset."""
    count, height, width = pixels.shape[:3]
    source = ffmpeg_python.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                                 framerate=fps).video
    split = source.split() if len(chains) > 1 else None
    branches = [source] if split is None else [split[i] for i in range(len(chains))]
    streams, outputs, described = [], [], []
    for index, ((name, steps), stream) in enumerate(zip(chains, branches, strict=True)):
        clip = Clip(width=width, height=height, frames=count, fps=fps)
        for step in steps[:-1]:
            stream, clip = step.apply(stream, clip)
        last = steps[-1]
        assert isinstance(last, OutputStep)
        staged = f"{index}-{name}{last.extension()}"
        streams.append(last.output(stream, clip, out_dir / staged))
        # The first preset's video keeps the plain <name>.<ext>; every other output is named after
        # its preset, and stills never take <name>.jpg, the poster's name.
        plain = index == 0 and last.extension() in (".mp4", ".webm")
        outputs.append(Output(staged, last.extension() if plain else f".{name}{last.extension()}"))
        described.append({"preset": name, "steps": [dump_step(s) for s in steps], **last.describe(clip)})
    return ffmpeg_python.merge_outputs(*streams), outputs, described


def postprocess(pixels: np.ndarray, fps: float, out_dir: Path, binary: FFmpeg, chains: list[Chain],
                settings: Settings, checkpoint: Checkpoint) -> tuple[list[Output], dict[str, Any]]:
    """Encode every preset into out_dir (a folder of this attempt's own, so an encoder left over from
    a killed daemon never writes into what is published), then check that each output decodes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    merged, outputs, described = graph(pixels, fps, out_dir, chains)
    command = list(ffmpeg_python.compile(
        merged.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
                           "-progress", "pipe:1").overwrite_output(), cmd=binary.path))
    # The poster is encoded while ffmpeg works: it needs a core, not ffmpeg's output.
    poster = threading.Thread(target=lambda: Image.fromarray(pixels[0]).save(
        out_dir / "poster.jpg", "JPEG", quality=settings.poster_quality))
    poster.start()
    try:
        frames = memoryview(np.ascontiguousarray(pixels).data).cast("B")  # no copy of a large clip
        total = described[0].get("frames") or len(pixels)  # ffmpeg counts the first output's frames
        source = Clip(width=pixels.shape[2], height=pixels.shape[1], frames=len(pixels), fps=fps)
        run_ffmpeg(command, frames, checkpoint, settings.ffmpeg_stall_s,
                   report=EncodeProgress(total, settings.progress_log_s),
                   limit_s=encode_limit_s(settings.max_encode_s, chains, source))
    finally:
        poster.join()
    for output, description in zip(outputs, described, strict=True):
        verify_video(binary, out_dir / output.file, description.get("frames"), checkpoint,
                     settings.ffmpeg_stall_s)
    verify_still(out_dir / "poster.jpg")
    info = {"presets": [name for name, _ in chains], "outputs": described, "ffmpeg_command": command,
            "ffmpeg_version": binary.version, "poster": {"frame": 0}}
    return [*outputs, Output("poster.jpg", ".jpg")], info
