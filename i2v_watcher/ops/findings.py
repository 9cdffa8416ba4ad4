"""The shape of `doctor`'s findings, shared by its checks (doctor.py, model_check.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from i2v_watcher.config.settings import Settings

Status = Literal["ok", "info", "warning", "error", "skipped"]
RANK: dict[Status, int] = {"skipped": 0, "ok": 0, "info": 1, "warning": 2, "error": 3}
INSTALL_EXTRA = "pip install 'i2v-watcher[diffusion]' (a GPU server keeps its own CUDA build of torch)"


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "message": self.message, "fix": self.fix,
                **self.data}


@dataclass
class Context:
    settings: Settings | None  # None: the config is invalid, and what depends on it is skipped
    # Each diffusion backend the config would load, and how blocking a problem with it is: "error" when
    # named, "warning" for backend = auto's candidate (the daemon falls back to the preview).
    diffusion: dict[str, Status] = field(default_factory=dict)

    def level(self, cuda: bool = False) -> Status:
        """How serious a missing diffusion library (or, with cuda, a missing GPU) is for this config."""
        if cuda and self.settings is not None and self.settings.diffusion.device == "cpu":
            return "info"
        return max(self.diffusion.values(), key=RANK.__getitem__, default="info")
