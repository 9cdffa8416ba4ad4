"""What a model was made for, from its model card: the one shape every diffusion backend declares it in.

A job gets the card's num_frames, fps, steps, guidance_scale and resolution for each field that neither
its sidecar nor the config's [defaults] table sets; `resolution: auto` picks the largest of the card's
`sizes` that the GPU's memory holds; `doctor` and the docs read the weights' memory by dtype from
`params_b`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Bytes a parameter takes in each dtype the config can name.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8": 1}


@dataclass(frozen=True)
class ModelCard:
    """One checkpoint family's published defaults. The job's own fields decide what runs; these are
    what it was trained for, recorded in the metadata (`model_card`)."""

    name: str  # a short id recorded in the metadata: "wan2.2-i2v-a14b"
    label: str  # for people: "Wan 2.2 I2V-A14B"
    hub_id: str  # the diffusers-format weights: `hf download <hub_id>`
    width: int  # the native size, landscape
    height: int
    num_frames: int
    fps: float
    steps: int
    guidance_scale: float
    # Parameters of every component together (denoiser(s), text encoder(s), VAE), in billions: the
    # weights' memory by dtype (weights_gb). None: not counted (never guessed).
    params_b: float | None = None
    # (short side, GPU memory in GiB above which that side is chosen) for `resolution: auto`, largest
    # first, the last with 0: the first the GPU has more memory than is chosen. Empty: the native side.
    sizes: tuple[tuple[int, float], ...] = ()
    # What a job gets when neither its sidecar nor [defaults] names a resolution: auto (by the GPU).
    resolution: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict, hash=False)  # model-specific, for the metadata

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    def defaults(self) -> dict[str, Any]:
        """The job fields this card gives a job that leaves them out (and [defaults] does not set)."""
        return {"num_frames": self.num_frames, "fps": self.fps, "steps": self.steps,
                "guidance_scale": self.guidance_scale, "resolution": self.resolution}

    def weights_gb(self, dtype: str) -> float | None:
        """The weights alone in GB (10^9 bytes) in `dtype` ("bfloat16", "float16", "float32")."""
        return None if self.params_b is None else round(self.params_b * DTYPE_BYTES.get(dtype, 2), 1)

    def auto_side(self, gpu_gib: float | None) -> tuple[int, str]:
        """The short side `resolution: auto` picks on a GPU of `gpu_gib` GiB (None: no GPU), and why."""
        sizes = self.sizes or ((self.short_side, 0.0),)
        if gpu_gib is None:
            side = sizes[-1][0]
            return side, f"no CUDA device: {side}p, the smallest size of {self.label}"
        side, needs = next(((s, n) for s, n in sizes if gpu_gib > n), sizes[-1])
        more = f" (over {needs:g} GiB)" if needs else ""
        return side, f"GPU has {gpu_gib:.1f} GiB: {self.label} at {side}p{more}"

    def record(self) -> dict[str, Any]:
        """What the metadata says of the model that ran (`generation.model_card`)."""
        return {"name": self.name, "label": self.label, "hub_id": self.hub_id,
                "native_size": [self.width, self.height], "num_frames": self.num_frames, "fps": self.fps,
                "steps": self.steps, "guidance_scale": self.guidance_scale, **self.extra}


# I2VGen-XL as the original WebUI ran it (its defaults, the project's reference parameters): 16 frames at
# 8 fps, 50 steps, guidance 9.0, 512p; its `auto` rule from the GPU's total memory: ≤12 GB 512p, ≤18 GB
# 768p, else 1024p. The native size is diffusers' I2VGenXLPipeline default (1280x704). Also the rule of
# `resolution: auto` for a backend without a card of its own (a plugin). Parameters counted from the
# published configs (bench/real_configs.py), both CLIP encoders included.
WEBUI_CARD = ModelCard(
    name="i2vgen-xl", label="I2VGen-XL", hub_id="ali-vilab/i2vgen-xl", width=1280, height=704, num_frames=16,
    fps=8.0, steps=50, guidance_scale=9.0, params_b=2.5, sizes=((1024, 18.0), (768, 12.0), (512, 0.0)),
    resolution="512p")
