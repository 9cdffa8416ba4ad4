"""A prompt for an image that has none: a job whose prompt is empty (no sidecar, `prompt:` blank, no
[defaults] prompt) on a prompt-driven backend gets one from the resident captioner ([caption]), turned
into a motion prompt by a fixed template in the spirit of Wan's prompt extension: the subject, a
plausible motion, a camera move and "slow motion". The caption is made once and kept in the job's
state; the metadata records where the prompt came from (`prompt_source`) and the caption."""

from __future__ import annotations

import re
import time

import structlog
from PIL import Image

from i2v_watcher.backends import Backend
from i2v_watcher.backends.caption import Captioner
from i2v_watcher.errors import JobError
from i2v_watcher.job.caption import CaptionRecord
from i2v_watcher.job.spec import JobParams
from i2v_watcher.job.state import Job

log = structlog.get_logger("i2v_watcher.run.prompting")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def subject_of(caption: str) -> str:
    """The caption's first sentence (with words in it), without its full stop: the template's {subject}."""
    for sentence in SENTENCE_END.split(caption.strip()):
        words = sentence.strip().rstrip(".!?").strip()
        if any(character.isalnum() for character in words):
            return words
    return caption.strip()


def motion_prompt(caption: str, template: str) -> str:
    """The prompt a caption makes through the template ({caption}: the whole text, {subject}: its first
    sentence); a caption is plain text from a model, so its braces are never read as placeholders."""
    return " ".join(template.format(caption=caption.strip(), subject=subject_of(caption)).split())


def wants_caption(params: JobParams, backend: Backend) -> bool:
    """No prompt, on a backend that reads one (preview and svd ignore prompts: nothing to write)."""
    return not params.prompt.strip() and "prompt" in backend.honours


def prompt_source(job: Job, params: JobParams) -> str:
    """Where the job's prompt came from: `caption`, the `sidecar`, or the `defaults` (the config's
    [defaults], a quality level or the model card)."""
    if job.state.caption is not None and params.prompt == job.state.caption.prompt:
        return "caption"
    return "sidecar" if "prompt" in params.explicit else "defaults"


class Prompter:
    """The resident captioner (None: [caption] is off) and the template its captions go through."""

    def __init__(self, captioner: Captioner | None, template: str) -> None:
        self.captioner = captioner
        self.template = template

    def prompted(self, job: Job, params: JobParams, backend: Backend, image: Image.Image) -> JobParams:
        """The job's parameters with a prompt written from its image where it needs one; the caption
        made once and kept in the job's state. A captioner that fails fails the job, not the daemon."""
        if self.captioner is None or not wants_caption(params, backend):
            return params
        record = job.state.caption
        if record is None:
            record = self._caption(image)
            job.advance(job.state.stage, caption=record)
        return params.model_copy(update={"prompt": record.prompt})

    def _caption(self, image: Image.Image) -> CaptionRecord:
        assert self.captioner is not None
        started = time.monotonic()
        hint = ("give the job a prompt in its sidecar (prompt: ...), or check the [caption] model with "
                "`i2v-watcher doctor`")
        try:
            text = self.captioner.caption(image)
        except Exception as exc:  # whatever the model raises is this job's failure, never the daemon's
            raise JobError(f"the captioner ({self.captioner.model_id}) failed on this image: "
                           f"{type(exc).__name__}: {exc}", stage="caption", hint=hint) from exc
        if not any(character.isalnum() for character in text):
            raise JobError(f"the captioner ({self.captioner.model_id}) wrote no words for this image "
                           f"({text!r})", stage="caption", hint=hint)
        seconds = round(time.monotonic() - started, 3)
        prompt = motion_prompt(text, self.template)
        log.info("captioned", caption=text, prompt=prompt, seconds=seconds)
        return CaptionRecord(text=text, prompt=prompt, model=self.captioner.model_id, seconds=seconds)
