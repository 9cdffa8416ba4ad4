"""A test plugin that replaces the `wan-i2v` backend with the real one plus a trace: every forward pass
of each Wan transformer (`transformer`, and Wan 2.2 A14B's low-noise `transformer_2`) is logged with its
timestep and the guidance the pipeline applies to it, so a test sees which expert ran at which denoising
step, guided how. Everything else is the real backend,
loading the real pipeline."""

from __future__ import annotations

from functools import partial
from typing import Any

import structlog

from i2v_watcher.backends import register
from i2v_watcher.backends.wan_i2v import WanImageToVideoBackend

log = structlog.get_logger("i2v_watcher.test.wan_expert_trace")


def _traced(pipe: Any, expert: str, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    guidance = pipe._guidance_scale if expert == "transformer" else pipe._guidance_scale_2
    log.info("expert ran", expert=expert, timestep=float(kwargs["timestep"].flatten().max()),
             guidance=float(guidance))


@register
class TracedWan(WanImageToVideoBackend):
    def load(self) -> None:
        super().load()
        for expert in ("transformer", "transformer_2"):
            module = getattr(self.pipe, expert)
            if module is not None:
                module.register_forward_pre_hook(partial(_traced, self.pipe, expert), with_kwargs=True)
