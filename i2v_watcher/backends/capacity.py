"""What this machine offers a diffusion backend, asked before anything is loaded (by `backend = "auto"`,
the resolution "auto", and `doctor`): whether the `diffusion` extra is installed, and which resolution
its GPU's memory allows."""

from __future__ import annotations

import importlib.util

DIFFUSION_EXTRA = ("torch", "diffusers", "transformers", "huggingface_hub")


def missing_extra() -> str | None:
    """The first package of the `diffusion` extra that cannot be imported, or None."""
    for name in DIFFUSION_EXTRA:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a broken install counts as missing
            return name
    return None


def auto_short_side(device: str) -> tuple[int, str]:
    """The original WebUI's rule from the GPU's total memory: ≤12 GB 512p, ≤18 GB 768p, else 1024p."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return 512, f"no CUDA device ({device}): 512p"
    total = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
    side = 512 if total <= 12 else 768 if total <= 18 else 1024
    return side, f"GPU has {total:.1f} GiB: {side}p (≤12 GiB 512p, ≤18 GiB 768p, else 1024p)"
