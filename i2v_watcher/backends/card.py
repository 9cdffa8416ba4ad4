"""What a model was made for, from its model card: the one shape every diffusion backend declares it in.

A job gets the card's num_frames, fps, steps and guidance_scale for each field that neither its sidecar
nor the config's [defaults] table sets; `resolution: auto` picks the largest of the card's `sizes` that
the GPU's memory holds; `doctor` and the docs read the weights' memory by dtype from `params_b`."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # weights' memory by dtype (weights_gb).
    params_b: float
    # (short side, GPU memory in GiB that side needs) for `resolution: auto`, largest first; the first
    # that fits the GPU is chosen, the last when none does (and the OOM ladder does the rest).
    sizes: tuple[tuple[int, float], ...] = ()
    source: str = ""  # where these figures come from
    extra: dict[str, object] = field(default_factory=dict)  # model-specific facts for the metadata

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    def weights_gb(self, dtype: str) -> float:
        """The weights alone in GB (10^9 bytes) in `dtype` ("bfloat16", "float16", "float32")."""
        return round(self.params_b * DTYPE_BYTES.get(dtype, 2), 1)

    def auto_side(self, gpu_gib: float | None) -> tuple[int, str]:
        """The short side `resolution: auto` picks on a GPU of `gpu_gib` (None: no GPU), and why."""
        sizes = self.sizes or ((self.short_side, 0.0),)
        if gpu_gib is None:
            side = sizes[-1][0]
            return side, f"no CUDA device: {side}p, the smallest {self.label} is made at"
        for side, needs in sizes:
            if gpu_gib >= needs:
                return side, f"GPU has {gpu_gib:.1f} GiB: {side}p ({self.label} needs about {needs:g} GiB)"
        side, needs = sizes[-1]
        return side, (f"GPU has {gpu_gib:.1f} GiB, under the {needs:g} GiB {self.label} needs at {side}p: "
                      f"{side}p all the same (the OOM ladder and offload take over)")
