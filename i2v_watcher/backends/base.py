"""The backend contract: load once at start-up, then turn an image and a job's parameters into frames."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError

from i2v_watcher.backends.card import ModelCard
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.explain.core import Problem
from i2v_watcher.explain.job import Written, explain_errors, problems_error
from i2v_watcher.job.spec import JobParams

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def backend_options(model: type[OptionsT], params: JobParams) -> OptionsT:
    """Validate the sidecar's `backend_options` against a backend's own strict model; a JobError with
    every problem in plain words (options_problems)."""
    try:
        return model.model_validate(params.backend_options)
    except ValidationError as exc:
        raise problems_error(_explained(model, exc), "backend_options") from exc


def options_problems(model: type[BaseModel], options: dict[str, Any], written: Written | None = None
                     ) -> list[Problem]:
    """Every problem of a job's `backend_options` for this model, in plain words (none: they are valid):
    `backend_options.motion must be one of zoom-in, …`, `backend_options.moton: unknown key, did you
    mean motion?`."""
    try:
        model.model_validate(options)
    except ValidationError as exc:
        return _explained(model, exc, written)
    return []


def _explained(model: type[BaseModel], exc: ValidationError, written: Written | None = None) -> list[Problem]:
    return explain_errors(exc, model=model, at=("backend_options",), written=written,
                          keys="backend_options keys")

def card_defaults(backend: Backend | type[Backend] | None) -> dict[str, Any]:
    """The job fields a backend's model card gives a job (a backend class: its default model's card)."""
    if backend is None:
        return {}
    card = backend.card if isinstance(backend, type) else backend.model_card()
    return {} if card is None else card.defaults()


MAX_ASPECT = 4.0


def check_aspect(width: int, height: int, max_aspect: float) -> None:
    """Both sides are bounded: a 2000x100 strip at 512p would be planned 10240 pixels long."""
    if max(width, height) / min(width, height) > max_aspect:
        raise JobError(f"the image's aspect ratio {width}x{height} is more extreme than {max_aspect:g}:1",
                       stage="load", hint="crop the image closer to the shape of a video (16:9 to 9:16)")


def output_size(width: int, height: int, resolution: str, auto_short_side: int = 512) -> tuple[int, int]:
    """Keep the input's aspect ratio with the requested short side; both sides even (yuv420p)."""
    check_aspect(width, height, MAX_ASPECT)
    short = auto_short_side if resolution == "auto" else int(resolution.rstrip("p"))
    scale = short / min(width, height)
    return 2 * round(width * scale / 2), 2 * round(height * scale / 2)


@dataclass(frozen=True)
class Planned:
    """What a backend will make of a job, known before any generation: checked against the budget."""

    width: int
    height: int
    frames: int


# Called after every unit of work (a frame, a denoising step) with (done, total). It raises
# JobCancelled when the daemon is stopping, so backends need no cancellation logic of their own.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Audio:
    """A soundtrack generated with the clip (LTX-2): float32 samples in [-1, 1] of shape (channels,
    samples) at `rate` samples a second."""

    samples: np.ndarray
    rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return int(self.samples.shape[1]) / self.rate


@dataclass(frozen=True)
class Frames:
    """Generated video: uint8 RGB frames of shape (count, height, width, 3), their frame rate, and the
    soundtrack where the model makes one."""

    pixels: np.ndarray
    fps: float
    details: dict[str, Any]  # what the backend used and recorded (size, model id, …) for the metadata
    audio: Audio | None = None

    @property
    def count(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[2])


class Backend(ABC):
    """One model family. Subclasses are registered by name with `@register` in their own module."""

    name: ClassVar[str]
    model_id: ClassVar[str] = ""
    # The job fields this backend honours; a sidecar that sets another one explicitly is refused.
    honours: ClassVar[frozenset[str]] = frozenset()
    # Fields it accepts but cannot use (a prompt sent to an image-only model): noted in the metadata.
    ignores: ClassVar[frozenset[str]] = frozenset()
    # Whether it loads weights named by a [models.<name>] table of the config.
    uses_model: ClassVar[bool] = False
    # The strict model of its `backend_options`, validated before any generation (None: takes none).
    options_model: ClassVar[type[BaseModel] | None] = None
    # The most extreme aspect ratio it accepts: beyond it a model makes nothing useful.
    max_aspect: ClassVar[float] = MAX_ASPECT
    # Host memory per pixel of the clip (frames x height x width) while generating: for the budget.
    host_bytes_per_pixel: ClassVar[int] = 6
    # What its default model was made for (its defaults for a job, `resolution: auto`); None: no model
    # card, the config's [defaults] alone. model_card() is the loaded model's, where one backend serves
    # several (Wan 2.1/2.2, CogVideoX 1.0/1.5).
    card: ClassVar[ModelCard | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def load(self) -> None:
        """Load the model once; raise StartupError with a hint when it cannot be loaded."""

    def preload(self, image: Image.Image, params: JobParams) -> object | None:
        """CPU-side work for a job that can run while another job generates (resize, prompt encoding);
        its result is passed to generate() as `preloaded`. Default: nothing.

        It runs on another thread than generate(), so it must not change the backend or its model."""
        return None

    @abstractmethod
    def generate(self, image: Image.Image, params: JobParams, progress: Progress,
                 preloaded: object | None = None) -> Frames:
        """Generate the frames of one job; raise JobError for what the job asked that cannot work.
        `preloaded` is what preload() returned for this job (None: nothing, or no preload)."""

    def options(self, params: JobParams) -> Any:
        """The job's validated `backend_options` (None for a backend that takes none)."""
        return None if self.options_model is None else backend_options(self.options_model, params)

    def planned(self, width: int, height: int, params: JobParams) -> Planned:
        """The size and frame count this backend will generate for an image of width x height."""
        out_width, out_height = output_size(width, height, params.resolution)
        return Planned(out_width, out_height, params.num_frames)

    @classmethod
    def known_cards(cls) -> tuple[ModelCard, ...]:
        """Every model this backend tells apart and serves (the docs' table of model cards)."""
        return () if cls.card is None else (cls.card,)

    def model_card(self) -> ModelCard | None:
        """The card of the model this backend has loaded (before load(): its default model's)."""
        return self.card

    def unavailable(self) -> str | None:
        """Why this backend could not load here (no GPU, no weights), or None; used by `backend = auto`."""
        return None

    def versions(self) -> dict[str, str]:
        """Library versions that decide the output, recorded in every job's metadata."""
        return {}
