"""Post-processing presets: a named chain of steps in the config (`[presets.<name>]`), and the ones that
ship with the daemon (the original WebUI's recipes among them, and NVENC variants of them for GPU
servers: see docs/nvenc.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from i2v_watcher.steps.base import Step


class Preset(BaseModel):
    """A named post-processing chain: filter steps, then one output step (see i2v_watcher/steps/)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: list[dict[str, Any]]

    @field_validator("steps")
    @classmethod
    def _valid_chain(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from i2v_watcher.steps import parse_chain

        parse_chain(value)
        return value

    def chain(self) -> list[Step]:
        from i2v_watcher.steps import parse_chain

        return parse_chain(self.steps)


def _encode(**options: Any) -> dict[str, Any]:
    return {"step": "encode", "codec": "libx264", **options}


def _nvenc() -> dict[str, Any]:
    """NVIDIA's hardware H.264 encoder: constant quality (cq 23, VBR without a bitrate target), p4 (its
    medium). Equal numbers are not equal quality across encoders: docs/nvenc.md says how to compare."""
    return _encode(codec="h264_nvenc", crf=23, preset="p4")


def _fit(width: int, height: int, encode: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The original WebUI's recipe: fit and pad, 30 fps, libx264 crf 23 preset fast."""
    return [{"step": "scale_pad", "width": width, "height": height, "color": "black"},
            {"step": "fps", "fps": 30}, encode or _encode(crf=23, preset="fast")]


SHIPPED_PRESETS = {
    "archive": Preset(steps=[_encode(crf=12, preset="slow")]),  # lossless-ish master, native size/fps
    "vertical-1080x1920": Preset(steps=_fit(1080, 1920)),
    "square-1080": Preset(steps=_fit(1080, 1080)),
    "landscape-1920x1080": Preset(steps=_fit(1920, 1080)),
    "gif-preview": Preset(steps=[{"step": "gif", "fps": 12, "width": 480}]),
    "webp-preview": Preset(steps=[{"step": "webp", "fps": 12, "width": 480, "quality": 75}]),
    # The same fits, encoded by the GPU's NVENC engine. Offered everywhere, usable where an NVIDIA GPU
    # and driver are visible: start-up trial-encodes them only when the config uses them (defaults or
    # its own [presets]); otherwise a job that asks for one here fails at its sidecar stage, saying why.
    "vertical-1080x1920-nvenc": Preset(steps=_fit(1080, 1920, _nvenc())),
    "square-1080-nvenc": Preset(steps=_fit(1080, 1080, _nvenc())),
    "landscape-1920x1080-nvenc": Preset(steps=_fit(1920, 1080, _nvenc())),
}
# The step fields a sidecar may override (postprocess_overrides); everything else is the config's.
DEFAULT_OVERRIDABLE = {"encode": ["crf"], "fade": ["in_s", "out_s", "color"], "scale_pad": ["color"],
                       "poster": ["frame"], "loop": ["count", "boomerang"], "speed": ["factor"]}
