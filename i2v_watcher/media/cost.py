"""What a job's post-processing will cost, known before anything is generated, and the bounds on it.

The memory budget counts the frames a backend generates; what the presets' chains make of them can be
far more: 2 frames at fps 0.01 are a 200 s clip, which a 30 fps preset turns into 6,000 frames of
1080x1920, and the GIF palette keeps every frame of its preview in memory. Each step declares what it
makes of a clip (`Step.plan`), what it holds in memory (`Step.holds`) and the encode time it is allowed
(`Step.seconds_per_megapixel_frame`), in its own module under i2v_watcher/steps/; this module only adds
them up along each chain and compares them with the settings. A job over any bound is refused before
generation, with what would fit.

A soundtrack (media.soundtrack) lasts what the picture lasts at every step (Step.apply_audio keeps it
to `plan`'s duration), so the duration bound is its bound too; what its steps hold (a loop's copies,
a boomerang's reversal) is at most an output's length of samples, 384 kB a second at 48 kHz stereo,
small next to the frames, and not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.media.chains import Chain
from i2v_watcher.steps import Clip, Step
from i2v_watcher.steps.base import Held

BYTES_HELD_PER_PIXEL = 4  # a held frame is RGBA/BGRA at most (the palette filters' format)
MB = 1_000_000  # as memory_budget_mb counts
MEGAPIXEL = 1_000_000
ENCODE_BASE_S = 60.0  # the default max_encode_s before the steps' allowances: start-up, a busy host
MAX_FPS = 120.0  # a sidecar's fps is at most this (job.spec.Fps)


@dataclass(frozen=True)
class ChainCost:
    """One preset's chain applied to the generated clip: the clip each step makes (with the step's
    name; the last is the output), what its steps hold in memory, and the seconds of encode time its
    steps are allowed."""

    name: str
    made: list[tuple[str, Clip]]
    held: list[tuple[str, Held]]
    encode_s: float

    @property
    def output(self) -> Clip:
        return self.made[-1][1]

    def largest(self, measure: Callable[[Clip], float]) -> tuple[Clip, str]:
        """The largest clip the chain makes by `measure`, and where: '' at the output, else ` at its
        <step> step` (a poster after a 120 fps step outputs 1 frame, but ffmpeg makes all the others)."""
        last = len(self.made) - 1
        index = max(range(last, -1, -1), key=lambda i: measure(self.made[i][1]))  # the output on a tie
        step, clip = self.made[index]
        return clip, "" if index == last else f" at its {step} step"


def chain_cost(name: str, steps: list[Step], source: Clip) -> ChainCost:
    clip, encode_s = source, 0.0
    made: list[tuple[str, Clip]] = []
    held: list[tuple[str, Held]] = []
    for step in steps:
        if (holds := step.holds(clip)) is not None:
            held.append((step.name, holds))
        clip = step.plan(clip)
        made.append((step.name, clip))
        encode_s += step.seconds_per_megapixel_frame * clip.pixel_frames / MEGAPIXEL
    return ChainCost(name, made, held, encode_s)


def encode_limit_s(configured: float | None, chains: list[Chain], source: Clip) -> float:
    """The wall-clock limit of the one ffmpeg run that makes every output: max_encode_s, or (unset) a
    base plus what each step of each chain is allowed for the frames it makes."""
    if configured is not None:
        return configured
    return ENCODE_BASE_S + sum(chain_cost(name, steps, source).encode_s for name, steps in chains)


def over_bounds(settings: Settings, chains: list[Chain], source: Clip) -> list[str]:
    """Each bound the job goes over, in words: the figure and the limit. Frames and duration are
    bounded per preset, at whichever of its steps makes the most; pixel-frames (the encode's work) for
    all the presets together, which one ffmpeg run makes; what a step holds, per step."""
    found, sizes, total = [], [], 0
    for name, steps in chains:
        try:
            cost = chain_cost(name, steps, source)
        except OverflowError:  # fps 5e-324: a clip too long for its frames to be counted
            found.append(f"preset {name!r} would make {_clip(math.inf)}, over max_output_duration_s "
                         f"({settings.max_output_duration_s:g})")
            continue
        longest, where = cost.largest(lambda clip: clip.duration)
        if longest.duration > settings.max_output_duration_s:
            found.append(f"preset {name!r} would make {_clip(longest.duration)}{where}, over "
                         f"max_output_duration_s ({settings.max_output_duration_s:g})")
        most, where = cost.largest(lambda clip: clip.frames)
        if most.frames > settings.max_output_frames:
            found.append(f"preset {name!r} would {'make' if where else 'output'} {most.frames:,} frames"
                         f"{where}, over max_output_frames ({settings.max_output_frames:,})")
        big, where = cost.largest(lambda clip: clip.pixel_frames)
        total += big.pixel_frames
        sizes.append(f"preset {name!r} ({big.frames:,} frames of {big.width}x{big.height}{where})")
        for step, held in cost.held:
            size, clip = held.clip.pixel_frames * BYTES_HELD_PER_PIXEL, held.clip
            if size > settings.max_step_buffer_mb * MB:
                found.append(f"preset {name!r}: its {step} step would hold {clip.frames:,} frames of "
                             f"{clip.width}x{clip.height} in memory {held.why}, {size / MB:,.0f} MB, "
                             f"over max_step_buffer_mb ({settings.max_step_buffer_mb:,})")
    if total > settings.max_output_pixel_frames:
        found.append(f"{' and '.join(sizes)} would be {total:,} pixel-frames, over max_output_pixel_frames "
                     f"({settings.max_output_pixel_frames:,})")
    return found


def _clip(duration: float) -> str:
    return f"a {duration:.4g} s clip" if math.isfinite(duration) else "a clip too long to count"


def check_cost(settings: Settings, chains: list[Chain], source: Clip) -> None:
    """Refuse, before generation, a job whose chains would go over any bound: one JobError (stage
    sidecar) naming each bound, the job's figure and the limit, with what would fit as its hint."""
    over = over_bounds(settings, chains, source)
    if not over:
        return
    made = (f"{source.frames} frames of {source.width}x{source.height} at fps {source.fps:g}, "
            f"{_clip(source.duration)}")
    raise JobError(f"this job's post-processing is over its bounds ({made}): " + "; ".join(over),
                   stage="sidecar", hint=what_fits(settings, chains, source), problems=over)


def what_fits(settings: Settings, chains: list[Chain], source: Clip) -> str:
    """The least fps and the most frames (each with the rest of the job unchanged) that fit."""
    def fits(clip: Clip) -> bool:
        return not over_bounds(settings, chains, clip)

    options = []
    fps = _least(lambda value: fits(source.but(fps=value)), source.fps, MAX_FPS)
    if fps is not None:
        options.append(f"fps at least {fps:g}")
    frames = _most_frames(lambda count: fits(source.but(frames=count)), source.frames)
    if frames is not None:
        options.append(f"num_frames at most {frames}")
    if not options:
        return ("fits: none of fps and num_frames alone; choose a lower resolution or presets with smaller "
                "outputs, or ask the operator to raise the bounds named")
    return "fits: " + ", or ".join(options)


def _least(fits: Callable[[float], bool], low: float, high: float) -> float | None:
    """The least value in (low, high] that fits, rounded up to two significant digits; every cost
    only falls as the value grows (a faster clip is shorter). None when even `high` does not fit."""
    if not fits(high):
        return None
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    digits = 1 - math.floor(math.log10(high))
    rounded = min(math.ceil(high * 10**digits) / 10**digits, MAX_FPS)
    return rounded if fits(rounded) else high


def _most_frames(fits: Callable[[int], bool], frames: int) -> int | None:
    """The most frames below `frames` that fit (every cost grows with them); None when one does not."""
    if frames <= 1 or not fits(1):
        return None
    low, high = 1, frames - 1  # low fits
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low
