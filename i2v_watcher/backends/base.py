"""The backend contract: load once at start-up, then turn an image and a job's parameters into frames."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError

from i2v_watcher.config import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.spec import JobParams, describe_validation_error

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def backend_options(model: type[OptionsT], params: JobParams) -> OptionsT:
    """Validate the sidecar's `backend_options` against a backend's own strict model."""
    try:
        return model.model_validate(params.backend_options)
    except ValidationError as exc:
        message = describe_validation_error(exc, "backend_options")
        raise JobError(message, stage="generate") from exc

# Called after every unit of work (a frame, a denoising step) with (done, total). It raises
# JobCancelled when the daemon is stopping, so backends need no cancellation logic of their own.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Frames:
    """Generated video: uint8 RGB frames of shape (count, height, width, 3) and their frame rate."""

    pixels: np.ndarray
    fps: float
    details: dict[str, Any]  # what the backend used and recorded (size, model id, …) for the metadata

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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def load(self) -> None:
        """Load the model once; raise StartupError with a hint when it cannot be loaded."""

    @abstractmethod
    def generate(self, image: Image.Image, params: JobParams, progress: Progress) -> Frames:
        """Generate the frames of one job; raise JobError for what the job asked that cannot work."""

    def unavailable(self) -> str | None:
        """Why this backend could not load here (no GPU, no weights), or None; used by `backend = auto`."""
        return None

    def versions(self) -> dict[str, str]:
        """Library versions that decide the output, recorded in every job's metadata."""
        return {}
