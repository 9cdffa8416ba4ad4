"""The post-processing step contract. A step is a small pydantic model (its parameters, validated) that
adds ffmpeg filters to a stream built with ffmpeg-python; an output step ends a preset's chain in a file.
Steps never take raw ffmpeg arguments: every value is typed and checked, and no parameter is a path."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

COLOR_PATTERN = r"^(#[0-9a-fA-F]{6}|[a-zA-Z]{3,20})$"  # "black", "#1e1e1e": never a path or an option


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

    def but(self, **changes: Any) -> Clip:
        return replace(self, **changes)


class Step(BaseModel):
    """A filter step: `apply` returns the stream with its filters added and the clip it makes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    filters: ClassVar[tuple[str, ...]] = ()  # the ffmpeg filters it uses, probed at start-up

    def encoders(self) -> set[str]:
        return set()

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        raise NotImplementedError


class OutputStep(Step):
    """The last step of a preset: writes the stream to one file."""

    def extension(self) -> str:
        raise NotImplementedError

    def output(self, stream: Any, clip: Clip, target: Path) -> Any:
        raise NotImplementedError

    def describe(self, clip: Clip) -> dict[str, Any]:
        """What the output holds, for the metadata."""
        return {"width": clip.width, "height": clip.height, "frames": clip.frames, "fps": clip.fps}


class AnimatedPreview(OutputStep):
    """A small looping preview (GIF, WebP): the clip resampled to `fps` and scaled to `width`."""

    filters: ClassVar[tuple[str, ...]] = ("fps", "scale")

    fps: float = Field(default=12, gt=0, le=50)
    width: int = Field(default=480, ge=16, le=1920, multiple_of=2)

    def scaled(self, stream: Any) -> Any:
        return stream.filter("fps", fps=self.fps).filter("scale", self.width, -2, flags="lanczos")

    def describe(self, clip: Clip) -> dict[str, Any]:
        return {"width": self.width, "fps": self.fps}
