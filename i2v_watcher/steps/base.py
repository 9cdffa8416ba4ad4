"""The post-processing step contract. A step is a small pydantic model (its parameters, validated) that
adds ffmpeg filters to a stream built with ffmpeg-python; an output step ends a preset's chain in a file.
Steps never take raw ffmpeg arguments: every value is typed and checked, and no parameter is a path."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# The colour names ffmpeg understands, lower-cased (it compares them case-insensitively), from
# `ffmpeg -hide_banner -colors` of imageio-ffmpeg's ffmpeg 9.0.2. Checked here, a typo fails when the
# sidecar or config is read, not in ffmpeg after the generation was paid for.
FFMPEG_COLOR_NAMES = frozenset({
    "aliceblue", "antiquewhite", "aqua", "aquamarine", "azure", "beige", "bisque", "black", "blanchedalmond",
    "blue", "blueviolet", "brown", "burlywood", "cadetblue", "chartreuse", "chocolate", "coral",
    "cornflowerblue", "cornsilk", "crimson", "cyan", "darkblue", "darkcyan", "darkgoldenrod", "darkgray",
    "darkgreen", "darkkhaki", "darkmagenta", "darkolivegreen", "darkorange", "darkorchid", "darkred",
    "darksalmon", "darkseagreen", "darkslateblue", "darkslategray", "darkturquoise", "darkviolet", "deeppink",
    "deepskyblue", "dimgray", "dodgerblue", "firebrick", "floralwhite", "forestgreen", "fuchsia", "gainsboro",
    "ghostwhite", "gold", "goldenrod", "gray", "green", "greenyellow", "honeydew", "hotpink", "indianred",
    "indigo", "ivory", "khaki", "lavender", "lavenderblush", "lawngreen", "lemonchiffon", "lightblue",
    "lightcoral", "lightcyan", "lightgoldenrodyellow", "lightgreen", "lightgrey", "lightpink", "lightsalmon",
    "lightseagreen", "lightskyblue", "lightslategray", "lightsteelblue", "lightyellow", "lime", "limegreen",
    "linen", "magenta", "maroon", "mediumaquamarine", "mediumblue", "mediumorchid", "mediumpurple",
    "mediumseagreen", "mediumslateblue", "mediumspringgreen", "mediumturquoise", "mediumvioletred",
    "midnightblue", "mintcream", "mistyrose", "moccasin", "navajowhite", "navy", "oldlace", "olive",
    "olivedrab", "orange", "orangered", "orchid", "palegoldenrod", "palegreen", "paleturquoise",
    "palevioletred", "papayawhip", "peachpuff", "peru", "pink", "plum", "powderblue", "purple", "red",
    "rosybrown", "royalblue", "saddlebrown", "salmon", "sandybrown", "seagreen", "seashell", "sienna",
    "silver", "skyblue", "slateblue", "slategray", "snow", "springgreen", "steelblue", "tan", "teal",
    "thistle", "tomato", "turquoise", "violet", "wheat", "white", "whitesmoke", "yellow", "yellowgreen"
})
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


def check_color(value: str) -> str:
    """`#rrggbb` or an ffmpeg colour name: never a path, a filter or an option."""
    if _HEX_COLOR.fullmatch(value) or value.lower() in FFMPEG_COLOR_NAMES:
        return value
    raise ValueError(f"unknown colour {value!r}: use #rrggbb or an ffmpeg colour name such as black, white, "
                     "navy")


Color = Annotated[str, AfterValidator(check_color)]


def round_half_up(value: float) -> int:
    """How ffmpeg's fps filter rounds a frame count (22.5 → 23); Python's round() would give 22, and
    the count is what every output is checked against before it is published."""
    return math.floor(value + 0.5)


@dataclass(frozen=True)
class Clip:
    """What the stream is at one point of the chain, so steps can compute durations and sizes."""

    width: int
    height: int
    frames: int
    fps: float

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    @property
    def pixel_frames(self) -> int:
        """Frames times pixels: what an encode or a buffer of this clip costs."""
        return self.frames * self.width * self.height

    def but(self, **changes: Any) -> Clip:
        return replace(self, **changes)


@dataclass(frozen=True)
class Held:
    """Frames a step keeps in memory at once (a filter that must see the last frame before it can pass
    the first on), and why, in words for a report: `for its palette`."""

    clip: Clip
    why: str


class Step(BaseModel):
    """A filter step: `apply` returns the stream with its filters added and the clip it makes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    filters: ClassVar[tuple[str, ...]] = ()  # the ffmpeg filters it uses, probed at start-up
    audio_filters: ClassVar[tuple[str, ...]] = ()  # those it adds to a soundtrack, probed too
    # Seconds of encode time allowed per million pixels of each frame this step makes: the default
    # max_encode_s is a base plus these (measured on 2 cores, with a wide margin: see media/cost.py).
    seconds_per_megapixel_frame: ClassVar[float] = 0.05

    def encoders(self) -> set[str]:
        return set()

    def audio_encoders(self) -> set[str]:
        """The encoders of the soundtrack it writes, probed at start-up as its `encoders` are."""
        return set()

    def plan(self, clip: Clip) -> Clip:
        """The clip this step makes of `clip` (size, frames, rate), computed without ffmpeg. `apply`
        returns it, and the cost bounds (media/cost.py) check it before generation: one rule for both."""
        return clip

    def holds(self, clip: Clip) -> Held | None:
        """The frames this step keeps in memory at once when given `clip`; None when it streams."""
        return None

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        raise NotImplementedError

    def apply_audio(self, audio: Any, clip: Clip) -> Any:
        """The soundtrack (an ffmpeg-python audio stream) through this step, given the clip `apply`
        gets: it must last what `plan(clip)` lasts, so sound and picture stay together. Default: a step
        that keeps the clip's duration (size, crop, frame rate, interpolation) leaves the sound alone."""
        return audio


def fit_audio(audio: Any, seconds: float) -> Any:
    """The soundtrack cut or padded with silence to exactly `seconds`: a model's sound may be a little
    longer or shorter than its frames, and a step's frame count is rounded; the output's audio lasts
    what its video lasts."""
    return audio.filter("apad", whole_dur=f"{seconds:.6f}").filter("atrim", end=f"{seconds:.6f}")


class OutputStep(Step):
    """The last step of a preset: writes the stream to one file."""

    def extension(self) -> str:
        raise NotImplementedError

    def carries_audio(self) -> bool:
        """Whether its file takes the soundtrack of a clip that has one (GIF, WebP, a JPEG cannot)."""
        return False

    def output(self, stream: Any, clip: Clip, target: Path, audio: Any = None) -> Any:
        """The output node writing `stream` (and `audio`, given only where carries_audio()) to target."""
        raise NotImplementedError

    def describe(self, clip: Clip) -> dict[str, Any]:
        """What the output holds, for the metadata."""
        return {"width": clip.width, "height": clip.height, "frames": clip.frames, "fps": clip.fps}


class AnimatedPreview(OutputStep):
    """A small looping preview (GIF, WebP): the clip resampled to `fps` and scaled to `width`."""

    filters: ClassVar[tuple[str, ...]] = ("fps", "scale")
    seconds_per_megapixel_frame: ClassVar[float] = 1.0

    fps: float = Field(default=12, gt=0, le=50)
    width: int = Field(default=480, ge=16, le=1920, multiple_of=2)

    def scaled(self, stream: Any) -> Any:
        return stream.filter("fps", fps=self.fps).filter("scale", self.width, -2, flags="lanczos")

    def plan(self, clip: Clip) -> Clip:
        # scale's -2: the height that keeps the aspect ratio, rounded to an even number.
        height = max(2, 2 * round_half_up(clip.height * self.width / clip.width / 2))
        return clip.but(width=self.width, height=height, fps=self.fps,
                        frames=max(1, round_half_up(clip.duration * self.fps)))

    def describe(self, clip: Clip) -> dict[str, Any]:
        return {"width": self.width, "fps": self.fps}
