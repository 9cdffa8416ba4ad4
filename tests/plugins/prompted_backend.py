"""A test plugin (loaded through the `plugins` setting): the preview backend as a prompt-driven model, so
that a daemon test runs a job that needs a prompt (its clip is the preview's camera move; the prompt is
what the metadata records)."""

from __future__ import annotations

from typing import ClassVar

from i2v_watcher.backends import register
from i2v_watcher.backends.preview import PreviewBackend


@register
class PromptedBackend(PreviewBackend):
    name = "prompted"
    honours: ClassVar[frozenset[str]] = PreviewBackend.honours | {"prompt", "negative_prompt"}
    ignores: ClassVar[frozenset[str]] = PreviewBackend.ignores - {"prompt", "negative_prompt"}
