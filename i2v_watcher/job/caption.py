"""A job's caption, kept in its state once made (run.prompting), so that a restart, a resume or a
re-generation never captions the image again."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CaptionRecord(BaseModel):
    """What the captioner wrote for the job's image, the prompt made of it, by which model, in how long."""

    model_config = ConfigDict(extra="allow")

    text: str
    prompt: str
    model: str = ""
    seconds: float = 0.0
