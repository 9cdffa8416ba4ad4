"""The [caption] table: an image captioner that writes the prompt of a job that has none (run.prompting),
and the template that turns its caption into a motion prompt."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# What a template may name: the caption, and the caption's first sentence with its full stop dropped.
TEMPLATE_FIELDS = ("caption", "subject")
DEFAULT_TEMPLATE = ("{subject}, moving naturally and smoothly, with gentle lifelike motion; the camera "
                    "slowly pushes in; cinematic, slow motion.")


class CaptionSettings(BaseModel):
    """Off unless `model` is set: then loaded once at start-up, resident beside the video model."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # A local folder, or a hub id in the Hugging Face cache, of an image-text-to-text model (Florence-2,
    # BLIP, SmolVLM, ...) that transformers' AutoProcessor and AutoModelForImageTextToText load.
    model: str | None = Field(default=None, min_length=1)
    device: str | None = Field(default=None, pattern=r"^(cuda(:\d+)?|cpu)$")  # unset: [diffusion] device
    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = None  # unset: [diffusion] dtype
    max_new_tokens: int = Field(default=60, ge=1, le=512)
    # The text the captioner is asked with; unset: the model family's own (Florence-2: <DETAILED_CAPTION>,
    # BLIP: none, a chat model: a request for one sentence). "" asks with no text.
    task: str | None = Field(default=None, max_length=1000)
    template: str = Field(default=DEFAULT_TEMPLATE, min_length=1, max_length=2000)

    @field_validator("template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:  # an unmatched brace
            raise ValueError(f"not a valid template: {exc}") from exc
        unknown = sorted(names - set(TEMPLATE_FIELDS))
        if unknown:
            raise ValueError(f"unknown placeholder {{{unknown[0]}}}; a template may use "
                             + ", ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS))
        if not names:
            raise ValueError("the template uses neither {caption} nor {subject}: every job would get the "
                             "same prompt")
        return value
