"""The ffmpeg graph of a job's post-processing: the generated frames, piped once into one ffmpeg run that
feeds every requested preset (split, each branch through its filter steps into its one encode), plus the
poster JPEG; then every output is checked.

Outputs are written into the job's out/ folder under fixed names, so no user-chosen name ever reaches
an ffmpeg command line; publishing gives them their public names.

A clip with a soundtrack (media.soundtrack) has it as a second input, read from its WAV file: fitted to
the frames' length, split once per output that carries sound (an encode that keeps it: not a GIF, a
WebP, a poster, or a preset with `audio = false`), through each step beside the picture
(Step.apply_audio) and fitted again to the output's length, so sound and picture end together.
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
from i2v_watcher.errors import OutputInvalid
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.media.chains import Chain
from i2v_watcher.media.cost import encode_limit_s
from i2v_watcher.media.ffmpeg import EncodeProgress, FFmpeg
from i2v_watcher.media.process import run_ffmpeg
from i2v_watcher.media.soundtrack import Soundtrack
from i2v_watcher.media.verify import verify_still, verify_video
from i2v_watcher.steps import Clip, OutputStep, dump_step
from i2v_watcher.steps.base import fit_audio
from i2v_watcher.steps.encode import AUDIO_BITRATE

AUDIO_SLACK_S = 0.05  # how far an output's sound may end from its picture: a frame at 20 fps


@dataclass(frozen=True)
class Output:
    """A staged file in the job's out/ folder and the suffix it gets in the outbox."""

    file: str
    suffix: str


def graph(pixels: np.ndarray, fps: float, out_dir: Path, chains: list[Chain],
          soundtrack: Soundtrack | None = None) -> tuple[Any, list[Output], list[dict[str, Any]]]:
    """The ffmpeg-python graph: one raw input, split once per preset, one output per preset; the
    soundtrack's input, split once per output that carries it."""
    count, height, width = pixels.shape[:3]
    source = ffmpeg_python.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                                 framerate=fps).video
    split = source.split() if len(chains) > 1 else None
    branches = [source] if split is None else [split[i] for i in range(len(chains))]
    voiced = [soundtrack is not None and _last(steps).carries_audio() for _, steps in chains]
    sounds = _sound_branches(soundtrack, count / fps, sum(voiced))
    streams, outputs, described = [], [], []
    for index, ((name, steps), stream) in enumerate(zip(chains, branches, strict=True)):
        clip = Clip(width=width, height=height, frames=count, fps=fps)
        audio = sounds.pop() if voiced[index] else None
        for step in steps[:-1]:
            if audio is not None:
                audio = step.apply_audio(audio, clip)
            stream, clip = step.apply(stream, clip)
        last = _last(steps)
        staged = f"{index}-{name}{last.extension()}"
        audio = None if audio is None else fit_audio(audio, clip.duration)
        streams.append(last.output(stream, clip, out_dir / staged, audio))
        # The first preset's video keeps the plain <name>.<ext>; every other output is named after
        # its preset, and stills never take <name>.jpg, the poster's name.
        plain = index == 0 and last.extension() in (".mp4", ".webm")
        outputs.append(Output(staged, last.extension() if plain else f".{name}{last.extension()}"))
        described.append({"preset": name, "steps": [dump_step(s) for s in steps], **last.describe(clip)})
        if soundtrack is not None:  # filled in with what the file holds once it is checked
            described[-1]["audio"] = None if audio is None else {"bitrate": AUDIO_BITRATE}
    return ffmpeg_python.merge_outputs(*streams), outputs, described


def _last(steps: list[Any]) -> OutputStep:
    last = steps[-1]
    assert isinstance(last, OutputStep)
    return last


def _sound_branches(soundtrack: Soundtrack | None, seconds: float, count: int) -> list[Any]:
    """The soundtrack's input fitted to the frames' length (a model's sound may run a little longer
    or shorter), once for each of `count` outputs."""
    if soundtrack is None or count == 0:
        return []
    sound = fit_audio(ffmpeg_python.input(str(soundtrack.path)).audio, seconds)
    if count == 1:
        return [sound]
    split = sound.asplit()
    return [split[i] for i in range(count)]


def postprocess(pixels: np.ndarray, fps: float, out_dir: Path, binary: FFmpeg, chains: list[Chain],
                settings: Settings, checkpoint: Checkpoint, soundtrack: Soundtrack | None = None
                ) -> tuple[list[Output], dict[str, Any]]:
    """Encode every preset into out_dir (a folder of this attempt's own, so an encoder left over from
    a killed daemon never writes into what is published), then check that each output decodes, with
    its sound where it should have it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    merged, outputs, described = graph(pixels, fps, out_dir, chains, soundtrack)
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
        wanted = description.get("audio")
        sound = verify_video(binary, out_dir / output.file, description.get("frames"), checkpoint,
                             settings.ffmpeg_stall_s, audio=wanted is not None)
        if sound is not None and wanted is not None:
            description["audio"] = _heard(output.file, sound, wanted, description)
    verify_still(out_dir / "poster.jpg")
    info = {"presets": [name for name, _ in chains], "outputs": described, "ffmpeg_command": command,
            "ffmpeg_version": binary.version, "poster": {"frame": 0}}
    return [*outputs, Output("poster.jpg", ".jpg")], info


def _heard(name: str, sound: dict[str, Any], wanted: dict[str, Any], described: dict[str, Any]
           ) -> dict[str, Any]:
    """An output's sound as its file holds it, which must last what its picture lasts."""
    seconds = described["frames"] / described["fps"]
    if abs(sound["duration_s"] - seconds) > AUDIO_SLACK_S:
        raise OutputInvalid(f"{name}: its sound lasts {sound['duration_s']:g} s, its picture {seconds:g} s")
    return {"codec": sound["codec"], **wanted, **{k: v for k, v in sound.items() if k != "codec"}}
