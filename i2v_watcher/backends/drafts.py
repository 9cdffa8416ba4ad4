"""What would make a backend's shipped draft level fast (a distilled LoRA, a distilled checkpoint) and
the one start-up warning while its [models.<name>] table names none: the shipped draft level then runs
fewer steps of the base model, and the warning names the setting to fill in. A draft level the config
defines itself is what the user chose: no warning."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import structlog

from i2v_watcher.config.quality import is_shipped

if TYPE_CHECKING:
    from i2v_watcher.backends.diffusion import DiffusersBackend
    from i2v_watcher.config.models import ModelSettings

log = structlog.get_logger("i2v_watcher.drafts")


class DraftHint(ABC):
    """A file that would make a backend's draft level fast, as the start-up warning suggests it."""

    what: str  # e.g. "a 4-step distilled LoRA (lightx2v's)"

    @abstractmethod
    def setting(self, backend: str) -> str:
        """The setting to fill in, as the config would hold it (`[models.<name>] key = ...`)."""

    @abstractmethod
    def served(self, source: ModelSettings) -> bool:
        """The backend's [models.<name>] table already makes its draft level fast."""


def draft_fallback(backend: DiffusersBackend) -> str | None:
    """While the shipped draft level runs a model that a distilled file would make faster and the
    model's table names none: the warning that says what draft runs now and which setting to fill in."""
    hint = backend.draft_hint
    draft = backend.settings.quality.get("draft")
    if hint is None or draft is None or not is_shipped("draft", draft) or hint.served(backend.source):
        return None
    steps = draft.for_backend(backend.name).get("steps")
    runs = f"{steps} steps of the base model" if steps else "the base model"
    return f"the draft level runs {runs}; {hint.what} in {hint.setting(backend.name)} makes it faster"


def warn_draft_fallback(backend: DiffusersBackend) -> None:
    """draft_fallback's warning, at the backend's first load only (a swap back says nothing again)."""
    warning = draft_fallback(backend) if backend.loads == 0 else None
    if warning is not None:
        log.warning(warning, backend=backend.name)
