"""Post-process: the generated frames, piped once into one ffmpeg run that feeds every requested preset
(split, each branch through its filter steps into its one encode), plus the poster JPEG.

Outputs are written into the job's out/ folder under fixed names, so no user-chosen name ever reaches
an ffmpeg command line; publishing gives them their public names.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ffmpeg as ffmpeg_python
import numpy as np
from PIL import Image

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import FfmpegStalled, JobError, OutputInvalid, StartupError
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.spec import JobParams
from i2v_watcher.media.ffmpeg import EncodeProgress, FFmpeg, child_env
from i2v_watcher.steps import Clip, OutputStep, Step, dump_step, step_class
from i2v_watcher.steps.encode import HARDWARE
from i2v_watcher.steps.presets import SHIPPED_PRESETS

STDERR_LINES = 20
PR_SET_PDEATHSIG = 1
FORBIDDEN = "/\\:;,=[]'\""  # path and ffmpeg filter-graph syntax: never in an override's value
Chain = tuple[str, list[Step]]  # a preset's name and its steps, overrides applied


@dataclass(frozen=True)
class Output:
    """A staged file in the job's out/ folder and the suffix it gets in the outbox."""

    file: str
    suffix: str


def build_chains(settings: Settings, params: JobParams) -> list[Chain]:
    """The presets a job asked for, with its allow-listed overrides applied and validated."""
    unknown = [p for p in params.postprocess if p not in settings.presets]
    if unknown:
        raise JobError(f"unknown post-processing preset(s) {', '.join(unknown)}", stage="sidecar",
                       hint=f"presets: {', '.join(settings.presets)}")
    overrides = check_overrides(settings, params.postprocess_overrides)
    chains = []
    for name in params.postprocess:
        steps = settings.presets[name].chain()
        chains.append((name, [apply_override(s, overrides.get(s.name, {})) for s in steps]))
    used = {step.name for _, steps in chains for step in steps}
    for step in overrides.keys() - used:
        # An override that changes nothing is a mistake the user wants to hear about now.
        raise JobError(f"postprocess_overrides.{step}: none of the chosen presets "
                       f"({', '.join(params.postprocess)}) has a {step} step", stage="sidecar",
                       hint="choose a preset with that step, or remove the override")
    return chains


def check_overrides(settings: Settings, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Only allow-listed steps and fields, plain scalar values, never a path or an ffmpeg option."""
    checked: dict[str, dict[str, Any]] = {}
    for step, fields in overrides.items():
        allowed = settings.postprocess_overridable.get(step)
        if allowed is None:
            raise JobError(f"postprocess_overrides: step {step!r} cannot be overridden", stage="sidecar",
                           hint=f"overridable: {_describe(settings.postprocess_overridable)}")
        if not isinstance(fields, dict):
            raise JobError(f"postprocess_overrides.{step} must be a mapping of field: value",
                           stage="sidecar")
        for field, value in fields.items():
            if field not in allowed:
                raise JobError(f"postprocess_overrides: {step}.{field} cannot be overridden",
                               stage="sidecar",
                               hint=f"overridable: {_describe(settings.postprocess_overridable)}")
            if not isinstance(value, (int, float, str, bool)):
                raise JobError(f"postprocess_overrides: {step}.{field} must be a plain value",
                               stage="sidecar")
            if isinstance(value, str) and (any(c in FORBIDDEN for c in value) or value[:1] in "-."):
                raise JobError(f"postprocess_overrides: {step}.{field} = {value!r} is refused: no paths, "
                               "filters or ffmpeg options in a sidecar", stage="sidecar")
        checked[step] = dict(fields)
    return checked


def apply_override(step: Step, changes: dict[str, Any]) -> Step:
    if not changes:
        return step
    try:
        return step_class(step.name).model_validate({**step.model_dump(), **changes}, strict=True)
    except ValueError as exc:
        raise JobError(f"postprocess_overrides.{step.name}: {exc}", stage="sidecar") from exc


def _describe(allow: dict[str, list[str]]) -> str:
    return "; ".join(f"{step}: {', '.join(fields)}" for step, fields in allow.items())


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
        run_ffmpeg(command, frames, checkpoint, settings.ffmpeg_stall_s,
                   report=EncodeProgress(total, settings.progress_log_s))
    finally:
        poster.join()
    for output, description in zip(outputs, described, strict=True):
        verify_video(binary, out_dir / output.file, description.get("frames"), checkpoint,
                     settings.ffmpeg_stall_s)
    verify_still(out_dir / "poster.jpg")
    info = {"presets": [name for name, _ in chains], "outputs": described, "ffmpeg_command": command,
            "ffmpeg_version": binary.version, "poster": {"frame": 0}}
    return [*outputs, Output("poster.jpg", ".jpg")], info


def verify_video(binary: FFmpeg, path: Path, frames: int | None, checkpoint: Checkpoint,
                 stall_s: float) -> None:
    """Check a finished output before it is published: a clip cut short or damaged (a dying disk, an
    encoder killed with its exit status lost) must never be published as complete.

    One ffmpeg run reads the whole file without decoding it all: the container must open, every
    frame's packet must be there in full (a packet past the end of the file is an error) and not
    empty, the codec's parser walks every packet (broken NAL framing is an error), the packets must be
    exactly the expected number (one a frame; None: at least one), and the first keyframe must decode.
    Any error ffmpeg reports fails the check, not only its exit status.

    This replaced a full decode that checked the decoded frame count and the exit status alone, at a
    fraction of its cost (for a 1080x1920 clip the full decode was about a tenth of the
    post-processing time). On damaged copies of a clip (bench/verify.py) it failed every one the full
    decode failed, and damage in the keyframe that the decoder had concealed (the full decode counted
    every frame and passed it). Bytes changed inside a frame without breaking its NAL framing can pass
    both: the decoder conceals them without an error."""
    if path.suffix == ".webp":  # ffmpeg cannot decode animated WebP; Pillow can
        verify_still(path)
        return
    # Output 1 copies every packet into a framecrc listing on stdout (a line a packet: its size and
    # checksum, the bytes all read; the lines are the progress points too); output 2 decodes the first
    # keyframe (-skip_frame nokey: the other frames are not even decoded).
    command = [binary.path, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-xerror",
               "-skip_frame", "nokey", "-i", str(path),
               "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-",
               "-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"]
    lines: list[str] = []
    errors: list[str] = []
    try:
        run_ffmpeg(command, b"", checkpoint, stall_s, progress=lines, errors=errors)
    except JobError as exc:
        raise OutputInvalid(f"{path.name} does not decode: {exc.message}") from exc
    if errors:
        raise OutputInvalid(f"{path.name} does not decode cleanly: " + " | ".join(errors[-3:]))
    # A packet's line: stream, dts, pts, duration, size, checksum ("#" lines are the header).
    sizes = [int(line.split(",")[4]) for line in lines if line[:1].isdigit()]
    packets = sum(size > 0 for size in sizes)
    if packets < 1 or (frames is not None and len(sizes) != frames) or packets != len(sizes):
        raise OutputInvalid(f"{path.name} decodes to {packets} frames, not {frames or 'at least 1'}")


def verify_still(path: Path) -> None:
    """An image file (the poster, an animated WebP): every frame must decode."""
    try:
        with Image.open(path) as image:
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise OutputInvalid(f"{path.name} does not decode: {exc}") from exc


@functools.cache
def _pdeathsig_wrapper() -> tuple[str, ...]:
    """`setpriv --pdeathsig KILL --` where util-linux has it (2.33 and later): it sets what
    _die_with_parent sets, then execs ffmpeg. Without a preexec_fn Python starts the child with vfork
    instead of forking the whole daemon: measured here, 17-21 ms a start against 53 ms with torch
    imported and 157 ms with 2 GB resident, twice a job. Its one difference: no check that the daemon
    is still there once the signal is set; an ffmpeg orphaned in that moment finds its stdin closed
    and ends, in an output folder no later attempt publishes."""
    found = shutil.which("setpriv")
    if found is None:
        return ()
    try:
        usage = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (found, "--pdeathsig", "KILL", "--") if "--pdeathsig" in usage else ()


def _die_with_parent() -> None:
    """In the child, before ffmpeg starts: the kernel kills it when the daemon dies (kill -9 too), so
    an orphaned encoder never goes on writing into a job that a restarted daemon runs again."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        os._exit(126)
    if os.getppid() == 1:  # the daemon died before prctl took effect
        os._exit(126)


def run_ffmpeg(command: list[str], stdin: bytes | memoryview, checkpoint: Checkpoint, stall_s: float,
               progress: list[str] | None = None, errors: list[str] | None = None,
               report: Callable[[dict[str, str]], None] | None = None) -> None:
    """Run ffmpeg with the frames on stdin. It runs in its own session, so a Ctrl-C or a service stop
    reaches the daemon (which decides) and not ffmpeg; it is killed when the daemon aborts or when its
    progress output stops for `stall_s` (slow is fine, silent is hung); its stderr tail on failure.
    `progress` receives its progress lines, `errors` its stderr lines (the first 100), `report` (called
    on this thread) each block of `-progress` lines as a dict, the last one included."""
    wrapper = _pdeathsig_wrapper()
    process = subprocess.Popen([*wrapper, *command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=child_env(), start_new_session=True,
                               preexec_fn=None if wrapper else _die_with_parent)
    assert process.stdin and process.stdout and process.stderr
    last_progress = [time.monotonic()]
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)

    def feed(pipe: IO[bytes]) -> None:
        # When ffmpeg stops reading early, its exit code and stderr say why.
        with contextlib.suppress(BrokenPipeError, ValueError):
            pipe.write(stdin)
        with contextlib.suppress(BrokenPipeError):
            pipe.close()

    blocks: list[dict[str, str]] = []  # the latest complete -progress block, for `report`

    def watch_progress(pipe: IO[bytes]) -> None:
        block: dict[str, str] = {}
        for line in pipe:  # ffmpeg's progress lines are the daemon's progress points while it encodes
            last_progress[0] = time.monotonic()
            checkpoint.activity.touch()
            text = line.decode("ascii", "replace").strip()
            if progress is not None:
                progress.append(text)
            key, _, value = text.partition("=")
            block[key] = value
            if key == "progress":  # a block's last line
                blocks[:], block = [block], {}

    def keep_tail(pipe: IO[bytes]) -> None:
        for line in pipe:
            text = line.decode("utf-8", "replace").rstrip()
            tail.append(text)
            if errors is not None and text and len(errors) < 100:
                errors.append(text)

    exited = threading.Event()

    def wait() -> None:
        process.wait()
        exited.set()  # wakes the loop below the moment ffmpeg exits (Popen.wait(timeout) would poll)

    threads = [threading.Thread(target=fn, args=(pipe,), daemon=True) for fn, pipe in
               ((feed, process.stdin), (watch_progress, process.stdout), (keep_tail, process.stderr))]
    threads.append(threading.Thread(target=wait, daemon=True))
    for thread in threads:
        thread.start()
    reported: dict[str, str] | None = None

    def report_latest() -> None:
        nonlocal reported
        latest = blocks[-1] if blocks else None
        if report is not None and latest is not None and latest is not reported:
            reported = latest
            report(latest)

    try:
        while not exited.wait(0.05):
            checkpoint.poll()
            report_latest()
            if time.monotonic() - last_progress[0] > stall_s:
                raise FfmpegStalled(f"ffmpeg made no progress for {stall_s:g} s and was stopped (hung)")
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        for thread in threads:
            thread.join(timeout=5)
    report_latest()  # the end
    if process.returncode != 0:
        raise JobError(
            f"ffmpeg failed with exit code {process.returncode}: " + (" | ".join(tail) or "(no output)"),
            stage="postprocess", hint="command: " + " ".join(command))


def check_presets(settings: Settings, binary: FFmpeg) -> list[str]:
    """At start-up, not hours later in a job: every preset the config uses (its own [presets], and those
    defaults.postprocess names) must find its filters and encoders, and a hardware encoder must pass a
    one-frame trial encode (a static ffmpeg lists NVENC without a GPU). Shipped presets the config does
    not use cannot stop the daemon: what this ffmpeg lacks for them is a note, and their hardware
    encoders are tried when a job asks for one (it then fails at its sidecar stage, saying why).
    Returns notes for the log; raises StartupError listing every problem."""
    tried: dict[str, str | None] = {}
    used = presets_in_use(settings)
    problems = chain_problems([(name, settings.presets[name].chain()) for name in used], binary, tried)
    notes = [f"{encoder}: trial encode ok" for encoder, error in tried.items() if error is None]
    for name, preset in settings.presets.items():
        if name not in used:
            notes += [f"{problem} (a shipped preset this config does not use: only a job asking for it "
                      "fails)" for problem in chain_problems([(name, preset.chain())], binary, None)]
    if problems:
        raise StartupError("post-processing presets cannot run with this ffmpeg: " + "; ".join(problems))
    return notes


def presets_in_use(settings: Settings) -> list[str]:
    """The presets start-up vouches for: those the config defines or redefines, and those
    defaults.postprocess names. The other shipped presets (the NVENC ones, say) are offered, not used."""
    return [name for name, preset in settings.presets.items()
            if name in settings.defaults.presets or SHIPPED_PRESETS.get(name) != preset]


def chain_problems(chains: list[Chain], binary: FFmpeg, tried: dict[str, str | None] | None) -> list[str]:
    """What in these chains this ffmpeg cannot run: missing filters and encoders, and hardware
    encoders whose trial encode (remembered in `tried`; None: not tried) failed."""
    problems = []
    for name, steps in chains:
        for step in steps:
            for missing in sorted(set(step.filters) - binary.filters):
                problems.append(f"preset {name!r}: ffmpeg has no {missing!r} filter (step {step.name})")
            for encoder in sorted(step.encoders()):
                if encoder not in binary.encoders:
                    problems.append(f"preset {name!r}: ffmpeg has no {encoder!r} encoder")
                elif encoder in HARDWARE and tried is not None:
                    if encoder not in tried:
                        tried[encoder] = trial_encode(binary, encoder)
                    if tried[encoder]:
                        problems.append(f"preset {name!r}: the {encoder} encoder cannot run here "
                                        f"({tried[encoder]}); it needs an NVIDIA GPU and driver visible "
                                        "to the service")
    return problems


def trial_encode(binary: FFmpeg, encoder: str) -> str | None:
    """Encode one black frame with `encoder`; None when it works, else the reason."""
    command = [binary.path, "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
               "color=c=black:s=256x256:d=0.04", "-frames:v", "1", "-c:v", encoder, "-f", "null", "-"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=child_env())
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if result.returncode == 0:
        return None
    return _first_reason(result.stderr, encoder) or f"exit code {result.returncode}"


def _first_reason(stderr: str, encoder: str) -> str:
    """The encoder's own first complaint ("Cannot load libcuda.so.1", "No capable devices found"),
    not ffmpeg's generic lines that follow it; else the last lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    own = [line.split("] ", 1)[-1] for line in lines if line.startswith(f"[{encoder} @")]
    return own[0] if own else " | ".join(lines[-3:])
